// The hub with a data directory: private files, keys and CA kept across restarts, grants that survive a
// restart (a refresh token issued before works after), a lock against a second hub, and no bearer token
// value at rest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as oauth from 'oauth4webapi';
import { Agent } from 'undici';
import { startHub } from '../../src/hub/index.js';
import { discover, fetchManifest, signIn, startTestHub, withAgent } from '../helpers/hub.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'companion-hub-data-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'hub');
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...listFiles(path));
    else out.push(path);
  }
  return out;
}

test('startHub() with dataDir writes only owner-only files in a 0700 folder, CA included', async (t) => {
  const dataDir = tempDir(t);
  const hub = await startTestHub(t, { dataDir });
  await signIn(hub);
  assert.equal(statSync(dataDir).mode & 0o777, 0o700);
  assert.equal(hub.caPath, join(dataDir, 'ca.pem'));
  assert.equal(readFileSync(hub.caPath, 'utf8'), hub.caPem);
  const files = listFiles(dataDir);
  for (const name of [
    'ca.pem',
    'ca-key.pem',
    'manifest-signing-key.pem',
    'oidc-jwks.json',
    'cookie-keys.json',
    'dev-login.json',
    'hub.lock',
    'manifest-state.json',
  ]) {
    assert.ok(files.includes(join(dataDir, name)), name);
  }
  for (const file of files) assert.equal(statSync(file).mode & 0o077, 0, `${file} is owner-only`);
});

test('a restarted hub keeps its CA, manifest key, dev login and grants: an old refresh token still works', async (t) => {
  const dataDir = tempDir(t);
  const first = await startHub({ dataDir });
  const agent1 = new Agent({ connect: { ca: first.caPem } });
  let signedIn: Awaited<ReturnType<typeof signIn>>;
  try {
    signedIn = await signIn(withAgent(first, agent1));
  } finally {
    await agent1.close();
    await first.close();
  }

  const second = await startTestHub(t, { dataDir });
  assert.equal(second.caPem, first.caPem);
  assert.equal(second.manifestKey, first.manifestKey);
  assert.equal(second.user, first.user);
  assert.equal(second.password, first.password);
  assert.ok(second.manifestVersion >= first.manifestVersion, 'the manifest version never goes down');
  assert.notEqual(second.hubCertPem, first.hubCertPem, 'server certificates are fresh per start');

  // The issuer names the new port; the grant is found by the token, so the refresh works there.
  const as = await discover(second);
  const client: oauth.Client = { client_id: second.clientId };
  const refreshed = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, oauth.None(), signedIn.tokens.refresh_token!, second.oauthOptions),
  );
  assert.equal((await fetchManifest(second, refreshed.access_token)).status, 200);
  // And the rotation persisted too: the old one is now a reused token, which revokes the grant.
  await assert.rejects(
    async () =>
      oauth.processRefreshTokenResponse(
        as,
        client,
        await oauth.refreshTokenGrantRequest(
          as,
          client,
          oauth.None(),
          signedIn.tokens.refresh_token!,
          second.oauthOptions,
        ),
      ),
    (error) => error instanceof oauth.ResponseBodyError && error.error === 'invalid_grant',
  );
});

test('a restart on the same ports keeps the issuer and the manifest version (same content, same version)', async (t) => {
  const dataDir = tempDir(t);
  const first = await startHub({ dataDir });
  const port = Number(new URL(first.issuer).port);
  const modelHostPort = Number(new URL(first.modelHostUrl).port);
  const version = first.manifestVersion;
  await first.close();
  const second = await startTestHub(t, { dataDir, port, modelHostPort });
  assert.equal(second.issuer, first.issuer);
  assert.equal(second.manifestVersion, version, 'same content, same version');
});

test('the data directory holds no access token, refresh token or code value', async (t) => {
  const dataDir = tempDir(t);
  const hub = await startTestHub(t, { dataDir });
  const { tokens } = await signIn(hub);
  await hub.close();
  const everything = listFiles(dataDir)
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  assert.ok(!everything.includes(tokens.access_token));
  assert.ok(!everything.includes(tokens.refresh_token!));
});

test('a second hub on the same data directory is refused with ERR_LOCKED_BY_OTHER; a stale lock is taken over', async (t) => {
  const dataDir = tempDir(t);
  await startTestHub(t, { dataDir });
  await assert.rejects(startHub({ dataDir }), (error: { code?: string }) => error.code === 'ERR_LOCKED_BY_OTHER');

  const other = tempDir(t);
  const hub = await startTestHub(t, { dataDir: other });
  await hub.close();
  // A lock left by a process that is gone (pid 2^22+ is above Linux's pid_max default).
  writeFileSync(join(other, 'hub.lock'), '4194999\n', { mode: 0o600 });
  const again = await startTestHub(t, { dataDir: other });
  assert.equal(again.caPem, hub.caPem);
});

test('startHub() refuses bad options with a TypeError coded ERR_INVALID_ARG_VALUE', async () => {
  for (const options of [
    { port: -1 },
    { port: 70000 },
    { scopes: ['openid', 'admin'] },
    { accessTokenTtlSeconds: 0 },
    { extraModels: [{ id: 'Bad Id', size: 1, seed: 1 }] },
    { extraModels: [{ id: 'tiny-demo', size: 1, seed: 1 }] },
  ]) {
    await assert.rejects(
      startHub(options),
      (error: { code?: string }) => error instanceof TypeError && error.code === 'ERR_INVALID_ARG_VALUE',
      JSON.stringify(options),
    );
  }
});

test('startHub() on a port in use fails with ERR_BIND_FAILED and leaves nothing running', async (t) => {
  const first = await startTestHub(t);
  const port = Number(new URL(first.issuer).port);
  await assert.rejects(startHub({ port }), (error: { code?: string }) => error.code === 'ERR_BIND_FAILED');
  const dataDir = tempDir(t);
  await assert.rejects(startHub({ port, dataDir }), (error: { code?: string }) => error.code === 'ERR_BIND_FAILED');
  // The failed start released its data directory lock.
  const again = await startTestHub(t, { dataDir });
  assert.ok(again.issuer);
});
