// P-h tampered or substituted model, at the install: the manifest comes from the hub with the token and
// is verified (pinned key, freshness, rollback); the model host gets no credential; only https is
// fetched; a final name never holds unverified bytes; a partial of another manifest entry is not resumed;
// a file changed in place after install is refused before load. Real hub, real TLS, real files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { existsSync, readFileSync, statSync, watch } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_PATH } from '../../src/authority/manifest-fetch.js';
import { findModel, verifyManifest } from '../../src/core/manifest.js';
import { generateManifestKeyPair, encodeManifestKey, parseTrustedKeys } from '../../src/core/manifest-format.js';
import { download } from '../../src/runtime/download.js';
import { checkInstalledModel, pullModel } from '../../src/runtime/manager/install.js';
import { startCompanionHub } from '../helpers/companion-hub.js';
import { MIB, SMALL, hostGets, listTree, milestones, startDownloadHub } from '../helpers/download-hub.js';
import { verifiedModel } from '../helpers/download-verified.js';
import { envelopeBytes, signValue, payload } from '../helpers/manifest-fixtures.js';

/** Header names the download adapter may send to the model host (undici adds host and connection). */
const ALLOWED_HEADERS = new Set(['host', 'connection', 'user-agent', 'accept-encoding', 'accept', 'range', 'if-range']);

test('P-h the model host never receives an Authorization header or a cookie during a signed-in pull (with a resume)', async (t) => {
  const ch = await startCompanionHub(t, { extraModels: [SMALL] });
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  const manifest = await authority.fetchManifest();
  const model = findModel(manifest, SMALL.id);
  const modelsDir = join(ch.dir, 'models');
  ch.hub.setMisbehaviour({ cutAfterBytes: MIB + 1 });
  await assert.rejects(pullModel({ model, manifestVersion: manifest.version, modelsDir, dispatcher: ch.agent }), {
    code: 'ERR_DOWNLOAD_NETWORK',
  });
  ch.hub.setMisbehaviour({});
  await pullModel({ model, manifestVersion: manifest.version, modelsDir, dispatcher: ch.agent });
  await checkInstalledModel(modelsDir);

  const requests = ch.hub.modelHostRequests();
  assert.equal(requests.length, 2);
  assert.deepEqual(
    requests.map((r) => r.range),
    [null, `bytes=${MIB + 1}-`],
  );
  for (const request of requests) {
    assert.equal(request.hadAuthorization, false);
    assert.equal(request.hadCookie, false);
    for (const name of request.headerNames) assert.ok(ALLOWED_HEADERS.has(name), `unexpected header ${name}`);
  }
});

test('P-h fetchManifest() refuses a manifest signed by a key that is not pinned', async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority({ manifestKeys: encodeManifestKey(generateManifestKeyPair().publicKey) });
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  await assert.rejects(authority.fetchManifest(), { code: 'ERR_MANIFEST_UNKNOWN_KEY' });
});

test('P-h fetchManifest() refuses an expired manifest (the companion clock is past its expiresAt)', async (t) => {
  const ch = await startCompanionHub(t, { manifestTtlSeconds: 1 });
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  // The same keychain, a clock 90 s ahead: past the manifest's 1 s lifetime plus the 60 s skew allowance,
  // still inside the access token's 300 s (so no refresh is needed to ask for it).
  const skewed = ch.authority({ now: () => Date.now() + 90_000, keychainInstance: authority.keychain });
  await assert.rejects(skewed.fetchManifest(), { code: 'ERR_MANIFEST_EXPIRED' });
});

test('P-h fetchManifest() refuses a rolled-back manifest and keeps the higher version it saw', async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  const versionFile = join(ch.dir, 'manifest-version.json');
  const higher = JSON.stringify({ version: ch.hub.manifestVersion + 1 });
  await writeFile(versionFile, higher);
  await assert.rejects(authority.fetchManifest(), { code: 'ERR_MANIFEST_ROLLBACK' });
  assert.equal(await readFile(versionFile, 'utf8'), higher);
});

test('P-h fetchManifest() refuses an older manifest after it accepted a newer one (the version it accepted is kept by the authority itself)', async (t) => {
  const ch = await startCompanionHub(t);
  // An on-path replay: the hub still checks the access token, but the bytes that come back are a
  // manifest signed by the pinned key at a version the test chooses (as an attacker replaying an
  // older, validly signed and still fresh manifest would).
  const key = generateManifestKeyPair();
  let servedVersion = 0;
  const replay: typeof globalThis.fetch = async (input, init) => {
    const response = await ch.fetch(input, init);
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.pathname !== MANIFEST_PATH || response.status !== 200) return response;
    await response.arrayBuffer();
    const nowSeconds = Math.floor(Date.now() / 1000);
    const body = envelopeBytes(
      signValue(
        payload({
          issuer: ch.hub.issuer,
          version: servedVersion,
          issuedAt: nowSeconds - 10,
          expiresAt: nowSeconds + 3600,
        }),
        key.privateKey,
      ),
    );
    return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
  };
  const versionFile = join(ch.dir, 'manifest-version.json');
  const options = { fetch: replay, manifestKeys: encodeManifestKey(key.publicKey), manifestVersionFile: versionFile };
  const first = ch.authority(options);
  await first.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  assert.equal(existsSync(versionFile), false, 'nothing was accepted yet');

  servedVersion = 41;
  assert.equal((await first.fetchManifest()).version, 41);
  servedVersion = 42;
  assert.equal((await first.fetchManifest()).version, 42);
  // A later run (a new authority over the same data, same keychain): the accepted 42 still holds.
  const later = ch.authority({ ...options, keychainInstance: first.keychain });
  servedVersion = 41;
  await assert.rejects(later.fetchManifest(), { code: 'ERR_MANIFEST_ROLLBACK' });
  await assert.rejects(first.fetchManifest(), { code: 'ERR_MANIFEST_ROLLBACK' });
  // The same version again is not a rollback.
  servedVersion = 42;
  assert.equal((await later.fetchManifest()).version, 42);
  assert.equal(existsSync(versionFile), true, 'the accepted version is kept on disk by the authority');
});

test('P-h a model URL pointing at http is refused by the manifest core, by pullModel and by the download adapter', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const httpUrl = model.url.replace(/^https:/, 'http:');
  // The manifest core: a correctly signed manifest naming an http URL.
  const key = generateManifestKeyPair();
  const envelope = signValue(
    payload({ models: [{ id: 'm', name: 'M', url: httpUrl, size: 1, sha256: 'a'.repeat(64) }] }),
    key.privateKey,
  );
  assert.throws(
    () =>
      verifyManifest(envelope, {
        trustedKeys: parseTrustedKeys(encodeManifestKey(key.publicKey)),
        expectedIssuer: 'https://hub.test',
        now: Date.UTC(2031, 0, 2, 3, 4, 5),
      }),
    { code: 'ERR_MANIFEST_MODEL_URL' },
  );
  // The orchestrator takes only an entry the manifest core verified: a look-alike (a copy of a verified
  // entry with the URL swapped) is refused before anything is asked or written.
  await assert.rejects(
    pullModel({ model: { ...model, url: httpUrl }, manifestVersion: 1, modelsDir: dh.modelsDir, dispatcher: dh.agent }),
    { code: 'ERR_INVALID_ARG_TYPE' },
  );
  assert.throws(() => verifiedModel({ ...model, url: httpUrl }), { code: 'ERR_MANIFEST_MODEL_URL' });
  // The adapter, on its own.
  await assert.rejects(download(httpUrl, { dispatcher: dh.agent, onChunk: () => undefined }), {
    code: 'ERR_DOWNLOAD_NOT_HTTPS',
  });
  const withCredentials = model.url.replace('https://', 'https://user:secret@');
  await assert.rejects(download(withCredentials, { dispatcher: dh.agent, onChunk: () => undefined }), {
    code: 'ERR_DOWNLOAD_NOT_HTTPS',
  });
  assert.equal(dh.hub.modelHostRequests().length, 0, 'nothing reached the model host');
  assert.equal(existsSync(dh.modelsDir), false, 'the orchestrator refused before touching the disk');
});

test('P-h the final name never holds unverified bytes (the models folder watched during bad and good pulls)', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const finalName = `${model.id}.gguf`;
  await mkdir(dh.modelsDir, { recursive: true, mode: 0o700 });
  // Every time the final name shows up, hash what it holds right then.
  const seen: string[] = [];
  const watcher = watch(dh.modelsDir, (_event, name) => {
    if (name !== finalName) return;
    try {
      seen.push(
        createHash('sha256')
          .update(readFileSync(join(dh.modelsDir, finalName)))
          .digest('hex'),
      );
    } catch {
      seen.push('gone');
    }
  });
  t.after(() => watcher.close());

  for (const misbehaviour of [
    { flipByteAt: randomInt(0, model.size) },
    { cutAfterBytes: randomInt(1, model.size) },
    { contentLengthDelta: -1 },
  ]) {
    dh.hub.setMisbehaviour(misbehaviour);
    const run = await dh.pull(model);
    assert.ok(run.error !== null, JSON.stringify(misbehaviour));
    assert.equal(existsSync(join(dh.modelsDir, finalName)), false);
    await rm(join(dh.modelsDir, '.partial'), { recursive: true, force: true });
  }
  dh.hub.setMisbehaviour({});
  assert.equal((await dh.pull(model)).error, null);
  // Let the watcher deliver what it saw (bounded), then: the final name only ever held the right bytes.
  for (let i = 0; i < 50 && seen.length === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(seen.length >= 1, 'the promote was observed');
  assert.deepEqual([...new Set(seen.filter((s) => s !== 'gone'))], [model.sha256]);
});

test('P-h a partial left by another manifest entry (other digest) is not resumed', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  dh.hub.setMisbehaviour({ cutAfterBytes: MIB });
  assert.equal((await dh.pull(model)).error?.code, 'ERR_DOWNLOAD_NETWORK');
  dh.hub.setMisbehaviour({});
  // The manifest now names other bytes for the same id and URL: the old partial must not count.
  const replaced = verifiedModel({ ...model, sha256: createHash('sha256').update('another model').digest('hex') });
  const run = await dh.pull(replaced);
  assert.equal(run.error?.code, 'ERR_INTEGRITY_DIGEST');
  assert.deepEqual(milestones(run), []);
  assert.deepEqual(
    hostGets(dh.hub, model).map((r) => r.range),
    [null, null],
  );
  assert.deepEqual(await listTree(dh.modelsDir), ['.partial']);
});

test('P-h a model file changed in place with its mtime put back to the nanosecond is refused before load (only ctime differs)', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  assert.equal((await dh.pull(model)).error, null);
  const path = join(dh.modelsDir, `${model.id}.gguf`);
  const before = statSync(path, { bigint: true });
  // Same length, other bytes: the size check cannot see it.
  const offset = randomInt(0, model.size - 8);
  const handle = await open(path, 'r+');
  const original = Buffer.alloc(8);
  await handle.read(original, 0, 8, offset);
  await handle.write(Buffer.from(original.map((b) => b ^ 0xff)), 0, 8, offset);
  await handle.close();
  // Put mtime back exactly (fs.utimes takes a double of seconds: it cannot carry nanoseconds).
  const seconds = before.mtimeNs / 1_000_000_000n;
  const nanos = (before.mtimeNs % 1_000_000_000n).toString().padStart(9, '0');
  execFileSync('touch', ['-m', '-d', `@${seconds}.${nanos}`, path]);
  const after = statSync(path, { bigint: true });
  assert.equal(after.mtimeNs, before.mtimeNs, 'mtime is back to the nanosecond');
  assert.equal(after.size, before.size);
  assert.equal(after.ino, before.ino);
  assert.notEqual(after.ctimeNs, before.ctimeNs, 'only ctime tells');
  await assert.rejects(checkInstalledModel(dh.modelsDir), { code: 'ERR_MODEL_CHANGED' });
});

for (const hashOn of ['worker', 'main'] as const) {
  test(`P-h pullModel() (hashing on the ${hashOn} thread) refuses substituted bytes of the right size with ERR_INTEGRITY_DIGEST and never promotes them`, async (t) => {
    const dh = await startDownloadHub(t);
    const model = dh.model(SMALL.id);
    const finalPath = join(dh.modelsDir, `${model.id}.gguf`);
    let finalSeen = false;
    dh.hub.setMisbehaviour({ flipByteAt: randomInt(0, model.size) });
    const run = await dh.pull(model, {
      hashOn,
      onEvent: () => {
        if (existsSync(finalPath)) finalSeen = true;
      },
    });
    assert.equal(run.error?.code, 'ERR_INTEGRITY_DIGEST');
    assert.equal(run.installed, null);
    assert.deepEqual(milestones(run), []);
    assert.equal(finalSeen, false);
    assert.equal(existsSync(finalPath), false, 'the final name does not exist');
    assert.equal(existsSync(join(dh.modelsDir, 'installed.json')), false, 'no installed record');
    await assert.rejects(checkInstalledModel(dh.modelsDir), { code: 'ERR_MODEL_NOT_INSTALLED' });
  });
}
