// P-h tampered or substituted model, at the install: the manifest comes from the hub with the token and
// is verified (pinned key, freshness, rollback); the model host gets no credential; only https is
// fetched; a final name never holds unverified bytes; a partial of another manifest entry is not resumed;
// a file changed in place after install is refused before load. Real hub, real TLS, real files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { existsSync, readFileSync, watch } from 'node:fs';
import { mkdir, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { findModel, verifyManifest } from '../../src/core/manifest.js';
import { generateManifestKeyPair, encodeManifestKey, parseTrustedKeys } from '../../src/core/manifest-format.js';
import { download } from '../../src/runtime/download.js';
import { checkInstalledModel, pullModel } from '../../src/shell/install.js';
import { startCompanionHub } from '../helpers/companion-hub.js';
import { MIB, SMALL, hostGets, listTree, milestones, startDownloadHub } from '../helpers/download-hub.js';
import { signValue, payload } from '../helpers/manifest-fixtures.js';

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
  await assert.rejects(pullModel({ model, manifestVersion: manifest.version, modelsDir, dispatcher: ch.agent }), { code: 'ERR_DOWNLOAD_NETWORK' });
  ch.hub.setMisbehaviour({});
  await pullModel({ model, manifestVersion: manifest.version, modelsDir, dispatcher: ch.agent });
  await checkInstalledModel(modelsDir);

  const requests = ch.hub.modelHostRequests();
  assert.equal(requests.length, 2);
  assert.deepEqual(requests.map((r) => r.range), [null, `bytes=${MIB + 1}-`]);
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

test('P-h a model URL pointing at http is refused by the manifest core, by pullModel and by the download adapter', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const httpUrl = model.url.replace(/^https:/, 'http:');
  // The manifest core: a correctly signed manifest naming an http URL.
  const key = generateManifestKeyPair();
  const envelope = signValue(payload({ models: [{ id: 'm', name: 'M', url: httpUrl, size: 1, sha256: 'a'.repeat(64) }] }), key.privateKey);
  assert.throws(() => verifyManifest(envelope, { trustedKeys: parseTrustedKeys(encodeManifestKey(key.publicKey)), expectedIssuer: 'https://hub.test', now: Date.UTC(2031, 0, 2, 3, 4, 5) }), { code: 'ERR_MANIFEST_MODEL_URL' });
  // The orchestrator and the adapter, each on its own.
  const run = await dh.pull({ ...model, url: httpUrl });
  assert.equal(run.error?.code, 'ERR_MANIFEST_MODEL_URL');
  await assert.rejects(download(httpUrl, { dispatcher: dh.agent, onChunk: () => undefined }), { code: 'ERR_DOWNLOAD_NOT_HTTPS' });
  const withCredentials = model.url.replace('https://', 'https://user:secret@');
  await assert.rejects(download(withCredentials, { dispatcher: dh.agent, onChunk: () => undefined }), { code: 'ERR_DOWNLOAD_NOT_HTTPS' });
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
      seen.push(createHash('sha256').update(readFileSync(join(dh.modelsDir, finalName))).digest('hex'));
    } catch {
      seen.push('gone');
    }
  });
  t.after(() => watcher.close());

  for (const misbehaviour of [{ flipByteAt: randomInt(0, model.size) }, { cutAfterBytes: randomInt(1, model.size) }, { contentLengthDelta: -1 }]) {
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
  const replaced = { ...model, sha256: createHash('sha256').update('another model').digest('hex') };
  const run = await dh.pull(replaced);
  assert.equal(run.error?.code, 'ERR_INTEGRITY_DIGEST');
  assert.deepEqual(milestones(run), []);
  assert.deepEqual(hostGets(dh.hub, model).map((r) => r.range), [null, null]);
  assert.deepEqual(await listTree(dh.modelsDir), ['.partial']);
});

test('P-h a model file changed in place with its mtime put back is refused before load (ctime, then the digest)', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  assert.equal((await dh.pull(model)).error, null);
  const path = join(dh.modelsDir, `${model.id}.gguf`);
  const before = await stat(path);
  const handle = await open(path, 'r+');
  await handle.write(Buffer.from('backdoor'), 0, 8, randomInt(0, model.size - 8));
  await handle.close();
  await utimes(path, before.atime, before.mtime);
  await assert.rejects(checkInstalledModel(dh.modelsDir), { code: 'ERR_MODEL_CHANGED' });
});
