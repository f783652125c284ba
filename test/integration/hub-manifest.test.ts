// The hub's signed manifest endpoint over real TLS: bearer token with the manifest scope required,
// an Ed25519 envelope that verifies with node:crypto against the printed key, models that match the bytes
// the model host serves, and no token ever sent to the model host.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as oauth from 'oauth4webapi';
import {
  MANIFEST_PURPOSE,
  fromBase64Url,
  keyIdOf,
  type ManifestEnvelope,
  type ManifestPayload,
} from '../../src/core/manifest-format.js';
import { fetchManifest, sha256Hex, signIn, startTestHub, type TestHub } from '../helpers/hub.js';

let hub: TestHub;
const teardown: (() => Promise<void> | void)[] = [];

before(async () => {
  hub = await startTestHub(
    { after: (fn) => teardown.push(fn) },
    {
      manifestTtlSeconds: 600,
      extraModels: [{ id: 'synthetic-small', size: 3 * 1024 * 1024 + 7, seed: 42, contextLength: 512 }],
    },
  );
});
after(async () => {
  for (const fn of teardown.reverse()) await fn();
});

function publicKeyOf(text: string) {
  const raw = Buffer.from(text.slice('ed25519:'.length), 'base64url');
  return {
    raw,
    key: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' }),
  };
}

test('the manifest endpoint answers 401 with a Bearer challenge when no token is sent', async () => {
  const response = await fetchManifest(hub);
  assert.equal(response.status, 401);
  const challenge = response.headers.get('www-authenticate') ?? '';
  assert.match(challenge, /^Bearer /);
  assert.match(challenge, /scope="companion:manifest"/);
  assert.doesNotMatch(challenge, /error=/);
  await response.body?.cancel();
});

test('the manifest endpoint answers 401 invalid_token for an unknown token', async () => {
  const response = await fetchManifest(hub, 'x'.repeat(43));
  assert.equal(response.status, 401);
  assert.match(response.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  await response.body?.cancel();
});

test('the manifest endpoint answers 400 for a malformed Authorization header or a token in the query', async () => {
  const basic = await hub.fetch(new URL('/api/v1/companion/manifest', hub.issuer), {
    headers: { authorization: 'Basic Zm9vOmJhcg==' },
  });
  assert.equal(basic.status, 400);
  assert.match(basic.headers.get('www-authenticate') ?? '', /error="invalid_request"/);
  await basic.body?.cancel();
  const { tokens } = await signIn(hub);
  const query = await hub.fetch(new URL(`/api/v1/companion/manifest?access_token=${tokens.access_token}`, hub.issuer));
  assert.equal(query.status, 400);
  await query.body?.cancel();
});

test('a token without the companion:manifest scope gets 403 insufficient_scope', async () => {
  const { tokens } = await signIn(hub, { scope: 'openid offline_access' });
  assert.ok(!(tokens.scope ?? '').includes('companion:manifest'));
  const response = await fetchManifest(hub, tokens.access_token);
  assert.equal(response.status, 403);
  assert.match(response.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/);
  assert.match(response.headers.get('www-authenticate') ?? '', /scope="companion:manifest"/);
  await response.body?.cancel();
});

test('the manifest is an Ed25519 envelope that verifies against the printed key, with the issuer, fresh times and models', async () => {
  const { tokens } = await signIn(hub);
  const response = await fetchManifest(hub, tokens.access_token);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(response.headers.get('cache-control'), 'no-store');
  const envelope = (await response.json()) as ManifestEnvelope;
  assert.deepEqual(Object.keys(envelope).sort(), ['keyId', 'payload', 'signature']);

  const { raw, key } = publicKeyOf(hub.manifestKey);
  assert.equal(envelope.keyId, keyIdOf(raw));
  const payloadBytes = fromBase64Url(envelope.payload, 'payload');
  assert.ok(
    verify(null, payloadBytes, key, fromBase64Url(envelope.signature, 'signature')),
    'signature verifies over the exact payload bytes',
  );
  const tampered = Buffer.from(payloadBytes);
  tampered[10] = tampered[10]! ^ 1;
  assert.ok(!verify(null, tampered, key, fromBase64Url(envelope.signature, 'signature')));

  const payload = JSON.parse(payloadBytes.toString('utf8')) as ManifestPayload;
  assert.equal(payload.issuer, hub.issuer);
  assert.equal(payload.purpose, MANIFEST_PURPOSE);
  assert.equal(payload.version, hub.manifestVersion);
  assert.ok(Number.isSafeInteger(payload.issuedAt) && Math.abs(payload.issuedAt - Date.now() / 1000) < 60);
  assert.equal(payload.expiresAt - payload.issuedAt, 600);
  assert.deepEqual(payload.models, hub.models);
  assert.deepEqual(
    payload.models.map((m) => m.id),
    ['tiny-demo', 'synthetic-small'],
  );
  for (const model of payload.models) {
    const url = new URL(model.url);
    assert.equal(url.protocol, 'https:');
    assert.equal(url.origin, hub.modelHostUrl);
    assert.notEqual(url.origin, new URL(hub.issuer).origin, 'the model host is a separate origin');
    assert.match(model.sha256, /^[0-9a-f]{64}$/);
  }
  assert.deepEqual(payload.models[1]!.runtime, { contextLength: 512 });
});

test('every model in the manifest is served with exactly its size and sha256, and the model host never sees a token or cookie', async () => {
  const { tokens } = await signIn(hub);
  const envelope = (await (await fetchManifest(hub, tokens.access_token)).json()) as ManifestEnvelope;
  const payload = JSON.parse(fromBase64Url(envelope.payload, 'payload').toString('utf8')) as ManifestPayload;
  const before = hub.modelHostRequests().length;
  for (const model of payload.models) {
    const response = await hub.fetch(model.url);
    assert.equal(response.status, 200);
    const bytes = Buffer.from(await response.arrayBuffer());
    assert.equal(bytes.length, model.size);
    assert.equal(sha256Hex(bytes), model.sha256);
  }
  const seen = hub.modelHostRequests();
  assert.equal(seen.length - before, payload.models.length);
  for (const request of seen) {
    assert.equal(request.hadAuthorization, false);
    assert.equal(request.hadCookie, false);
    assert.ok(!request.headerNames.includes('authorization'));
  }
});

test('the demo model is a GGUF file', async () => {
  const response = await hub.fetch(hub.models[0]!.url, { headers: { range: 'bytes=0-3' } });
  assert.equal(response.status, 206);
  assert.equal(Buffer.from(await response.arrayBuffer()).toString('latin1'), 'GGUF');
});

test('the manifest is re-signed on every request with a fresh issuedAt and the same version', async () => {
  const { tokens } = await signIn(hub);
  const read = async () =>
    JSON.parse(
      fromBase64Url(
        ((await (await fetchManifest(hub, tokens.access_token)).json()) as ManifestEnvelope).payload,
        'payload',
      ).toString('utf8'),
    ) as ManifestPayload;
  const first = await read();
  const second = await read();
  assert.equal(first.version, second.version);
  assert.ok(second.issuedAt >= first.issuedAt);
});

test('an expired access token gets 401 invalid_token', async (t) => {
  const shortLived = await startTestHub(t, { accessTokenTtlSeconds: 1 });
  const { tokens } = await signIn(shortLived);
  assert.equal(tokens.expires_in, 1);
  assert.equal((await fetchManifest(shortLived, tokens.access_token)).status, 200);
  await sleep(2100);
  const response = await fetchManifest(shortLived, tokens.access_token);
  assert.equal(response.status, 401);
  assert.match(response.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  await response.body?.cancel();
});

test('a refresh gives an access token that reads the manifest again', async () => {
  const { as, client, tokens } = await signIn(hub);
  const refreshed = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token!, hub.oauthOptions),
  );
  assert.equal((await fetchManifest(hub, refreshed.access_token)).status, 200);
});
