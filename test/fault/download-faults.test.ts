// Faults of a verified pull against the reference hub's misbehaving model host over real TLS: a flipped
// byte, a short and a long file, a stall, a redirect to http, a wrong CA, a full disk (injected at the
// write boundary, and a real tiny tmpfs), a kill mid-download, and a model file changed after install.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTlsAgent } from '../../src/common/tls.js';
import { createHubTls } from '../../src/hub/ca.js';
import { checkInstalledModel, readInstalled } from '../../src/runtime/manager/install.js';
import { exited, jsonLines, spawnDownloadChild } from '../helpers/download-child.js';
import {
  MIB,
  SMALL,
  hostGets,
  listTree,
  milestones,
  startDownloadHub,
  type DownloadHub,
} from '../helpers/download-hub.js';

/** Asserts that nothing but an empty .partial folder is left: no final file, no record, no temp file. */
async function assertNothingInstalled(dh: DownloadHub): Promise<void> {
  assert.deepEqual(await listTree(dh.modelsDir), ['.partial']);
}

test('pullModel() refuses a flipped byte with ERR_INTEGRITY_DIGEST and removes the temp file', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  dh.hub.setMisbehaviour({ flipByteAt: randomInt(0, model.size) });
  const run = await dh.pull(model);
  assert.equal(run.error?.code, 'ERR_INTEGRITY_DIGEST');
  assert.deepEqual(milestones(run), []);
  await assertNothingInstalled(dh);
});

for (const [delta, code] of [
  [-100, 'ERR_INTEGRITY_SIZE_UNDER'],
  [100, 'ERR_INTEGRITY_SIZE_OVER'],
] as const) {
  test(`pullModel() refuses a ${delta < 0 ? 'short' : 'long'} file with ${code} before writing it`, async (t) => {
    const dh = await startDownloadHub(t);
    dh.hub.setMisbehaviour({ contentLengthDelta: delta });
    const run = await dh.pull(SMALL.id);
    assert.equal(run.error?.code, code);
    await assertNothingInstalled(dh);
  });
}

test('pullModel() fails a stalled host with ERR_DOWNLOAD_STALLED, keeps the partial, and resumes', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  dh.hub.setMisbehaviour({ stallAfterBytes: MIB + 5 });
  const run = await dh.pull(model, { dispatcher: dh.agentWith({ bodyTimeoutMs: 300 }) });
  assert.equal(run.error?.code, 'ERR_DOWNLOAD_STALLED');
  assert.equal(existsSync(join(dh.modelsDir, `${model.id}.gguf`)), false);
  dh.hub.setMisbehaviour({});
  const again = await dh.pull(model);
  assert.equal(again.error, null);
  assert.deepEqual(milestones(again)[0], { event: 'resume', model: model.id, offset: MIB + 5 });
});

test('pullModel() refuses a redirect to http with ERR_DOWNLOAD_NOT_HTTPS and never asks over http', async (t) => {
  const dh = await startDownloadHub(t);
  dh.hub.setMisbehaviour({ redirectToHttp: true });
  const run = await dh.pull(SMALL.id);
  assert.equal(run.error?.code, 'ERR_DOWNLOAD_NOT_HTTPS');
  // One request: the https one that answered the redirect (an http request would fail TLS on that port).
  assert.equal(hostGets(dh.hub, dh.model(SMALL.id)).length, 1);
  await assertNothingInstalled(dh);
});

test('pullModel() fails with ERR_DOWNLOAD_TLS when the model host is signed by a CA that is not trusted', async (t) => {
  const dh = await startDownloadHub(t);
  const other = await createHubTls();
  const agent = createTlsAgent({ extraCas: [other.ca.certPem] });
  t.after(() => agent.close());
  const run = await dh.pull(SMALL.id, { dispatcher: agent });
  assert.equal(run.error?.code, 'ERR_DOWNLOAD_TLS');
  assert.equal(hostGets(dh.hub, dh.model(SMALL.id)).length, 0, 'no request got through');
  await assertNothingInstalled(dh);
});

// The write faults are injected into the sink's writes, on the worker thread that production uses.
test('pullModel() fails with ERR_DISK_SPACE when a write hits ENOSPC mid-way, leaving no file behind', async (t) => {
  const dh = await startDownloadHub(t);
  const run = await dh.pull(SMALL.id, { writeFault: { afterBatches: 1, error: 'ENOSPC' } });
  assert.equal(run.error?.code, 'ERR_DISK_SPACE');
  // Mid-way: the first 1 MiB batch was written, the failure came with a later one.
  assert.ok(run.events.some((e) => e.event === 'progress' && e.bytes > MIB));
  await assertNothingInstalled(dh);
});

test('pullModel() fails with ERR_DISK_SPACE when a write reports 0 bytes written (a short write), leaving no file behind', async (t) => {
  const dh = await startDownloadHub(t);
  const run = await dh.pull(SMALL.id, { writeFault: { afterBatches: 2, error: 'short' } });
  assert.equal(run.error?.code, 'ERR_DISK_SPACE');
  assert.ok(run.events.some((e) => e.event === 'progress' && e.bytes > 2 * MIB));
  await assertNothingInstalled(dh);
});

test('pullModel() fails with ERR_DISK_WRITE on another write error, leaving no file behind', async (t) => {
  const dh = await startDownloadHub(t);
  const run = await dh.pull(SMALL.id, { writeFault: { afterBatches: 0, error: 'EIO' } });
  assert.equal(run.error?.code, 'ERR_DISK_WRITE');
  assert.deepEqual((run.error as { detail?: unknown }).detail, { cause: 'EIO' });
  await assertNothingInstalled(dh);
});

test('pullModel() with the sink on the main thread (hashOn: main) maps a write fault the same way', async (t) => {
  const dh = await startDownloadHub(t);
  const run = await dh.pull(SMALL.id, { hashOn: 'main', writeFault: { afterBatches: 1, error: 'EDQUOT' } });
  assert.equal(run.error?.code, 'ERR_DISK_SPACE');
  await assertNothingInstalled(dh);
});

// A real small file system: a tmpfs mounted in a private mount namespace of the child (root only).
const tmpfsProbe = await (async () => {
  const dir = await mkdtemp(join(tmpdir(), 'companion-tmpfs-probe-'));
  const result = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$0"', dir], {
    stdio: 'ignore',
    timeout: 5000,
  });
  await rm(dir, { recursive: true, force: true });
  return result.status === 0;
})();
const tmpfsSkip = tmpfsProbe
  ? {}
  : { skip: 'needs root and unshare -m to mount a tmpfs (the injected ENOSPC test above covers the same path)' };

async function pullOnTmpfs(
  dh: DownloadHub,
  sizeKiB: number,
  fill: boolean,
): Promise<{ error?: unknown; tree?: unknown; events: Record<string, unknown>[] }> {
  const mount = join(dh.dir, 'tmpfs');
  await mkdir(mount, { recursive: true });
  const wrap = [
    'unshare',
    '-m',
    'sh',
    '-c',
    `mount -t tmpfs -o size=${sizeKiB}k,mode=0700 tmpfs "${mount}" && exec "$0" "$@"`,
  ];
  const modelsDir = join(mount, 'models');
  const child = spawnDownloadChild(
    'pull',
    {
      model: dh.model(SMALL.id),
      modelsDir,
      caPem: dh.hub.caPem,
      progressMs: 0,
      reportTree: true,
      ...(fill ? { fillDiskAt: join(mount, 'filler') } : {}),
    },
    wrap,
  );
  const lines: Record<string, unknown>[] = [];
  jsonLines(child, (line) => lines.push(line));
  await exited(child, 30_000);
  return {
    error: lines.find((l) => 'error' in l)?.error,
    tree: lines.find((l) => 'tree' in l)?.tree,
    events: lines.filter((l) => 'event' in l),
  };
}

test(
  'pullModel() on a real file system that fills up mid-way fails with ERR_DISK_SPACE and leaves no file',
  tmpfsSkip,
  async (t) => {
    const dh = await startDownloadHub(t);
    // Room for the model at the start (the up-front check passes), then a filler takes it all.
    const result = await pullOnTmpfs(dh, 8 * 1024, true);
    assert.equal(result.error, 'ERR_DISK_SPACE');
    assert.deepEqual(
      (result.tree as { path: string }[]).map((e) => e.path),
      ['.partial'],
      'no final file, no temp file',
    );
    assert.ok(result.events.some((e) => e.event === 'progress'));
  },
);

test(
  'pullModel() checks free space first: a 1 MiB file system refuses a 3 MiB model before any request',
  tmpfsSkip,
  async (t) => {
    const dh = await startDownloadHub(t);
    const result = await pullOnTmpfs(dh, 1024, false);
    assert.equal(result.error, 'ERR_DISK_SPACE');
    assert.deepEqual(result.events, []);
    assert.equal(hostGets(dh.hub, dh.model(SMALL.id)).length, 0);
  },
);

test('a pull killed mid-download (SIGKILL) leaves no final file, and the next pull resumes and verifies', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  // The host stops sending after 2 MiB + 9 bytes and holds the connection: the kill lands mid-stream.
  dh.hub.setMisbehaviour({ stallAfterBytes: 2 * MIB + 9 });
  const child = spawnDownloadChild('pull', { model, modelsDir: dh.modelsDir, caPem: dh.hub.caPem, progressMs: 0 });
  t.after(() => child.kill('SIGKILL'));
  const partial = join(dh.modelsDir, '.partial', `${model.id}.gguf.part`);
  // Wait (bounded) until the two full batches before the stall are on disk, then kill.
  const deadline = Date.now() + 15_000;
  while (((await stat(partial).catch(() => null))?.size ?? 0) < 2 * MIB) {
    assert.ok(Date.now() < deadline, 'the child never wrote 2 MiB');
    await sleep(20);
  }
  child.kill('SIGKILL');
  const exit = await exited(child);
  assert.equal(exit.signal, 'SIGKILL');
  assert.equal(existsSync(join(dh.modelsDir, `${model.id}.gguf`)), false);
  assert.equal(await readInstalled(dh.modelsDir), null);

  dh.hub.setMisbehaviour({});
  const run = await dh.pull(model);
  assert.equal(run.error, null);
  const [resume] = milestones(run);
  assert.equal(resume?.event, 'resume');
  assert.ok(resume.event === 'resume' && resume.offset >= 2 * MIB && resume.offset <= 2 * MIB + 9);
  await checkInstalledModel(dh.modelsDir);
});

test('pullModel() promotes a partial that was already whole (killed before the rename) without a request', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  dh.hub.setMisbehaviour({ cutAfterBytes: MIB });
  assert.equal((await dh.pull(model)).error?.code, 'ERR_DOWNLOAD_NETWORK');
  dh.hub.setMisbehaviour({});
  // Complete the temp file by hand with the right bytes, as if the process died just before the promote.
  const elsewhere = join(dh.dir, 'elsewhere');
  assert.equal((await dh.pull(model, { modelsDir: elsewhere })).error, null);
  await copyFile(join(elsewhere, `${model.id}.gguf`), join(dh.modelsDir, '.partial', `${model.id}.gguf.part`));
  const requestsBefore = hostGets(dh.hub, model).length;
  const run = await dh.pull(model);
  assert.equal(run.error, null);
  assert.deepEqual(
    milestones(run).map((e) => e.event),
    ['resume', 'verified'],
  );
  assert.equal(hostGets(dh.hub, model).length, requestsBefore);
});

test('checkInstalledModel() refuses a file swapped for other bytes of the same size (ERR_MODEL_CHANGED)', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  assert.equal((await dh.pull(model)).error, null);
  const path = join(dh.modelsDir, `${model.id}.gguf`);
  const bytes = await readFile(path);
  const at = randomInt(0, bytes.length);
  bytes[at] = bytes[at]! ^ 0x80;
  await writeFile(`${path}.new`, bytes, { mode: 0o600 });
  await rm(path);
  await rename(`${path}.new`, path);
  await assert.rejects(checkInstalledModel(dh.modelsDir), { code: 'ERR_MODEL_CHANGED' });
});

test('checkInstalledModel() refuses a changed size, a symlink in place of the file, and a missing file', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  assert.equal((await dh.pull(model)).error, null);
  const path = join(dh.modelsDir, `${model.id}.gguf`);
  const original = await readFile(path);
  await writeFile(path, Buffer.concat([original, Buffer.from([0])]));
  await assert.rejects(checkInstalledModel(dh.modelsDir), { code: 'ERR_MODEL_CHANGED' });
  // The same bytes behind a symlink: not the file that was verified.
  await writeFile(join(dh.dir, 'copy.gguf'), original);
  await rm(path);
  await symlink(join(dh.dir, 'copy.gguf'), path);
  await assert.rejects(checkInstalledModel(dh.modelsDir), { code: 'ERR_MODEL_CHANGED' });
  await rm(path);
  await assert.rejects(checkInstalledModel(dh.modelsDir), { code: 'ERR_MODEL_NOT_INSTALLED' });
});

test('checkInstalledModel() accepts a touched but identical file after hashing it, and refreshes the record', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  assert.equal((await dh.pull(model)).error, null);
  const before = await readInstalled(dh.modelsDir);
  const path = join(dh.modelsDir, `${model.id}.gguf`);
  const later = new Date(Date.now() + 60_000);
  await utimes(path, later, later);
  const checked = await checkInstalledModel(dh.modelsDir);
  assert.equal(checked.path, path);
  assert.notEqual(checked.installed.mtimeNs, before!.mtimeNs);
  assert.deepEqual(await readInstalled(dh.modelsDir), checked.installed, 'the record now names the new identity');
  // The next check passes on identity alone (and gives the same record).
  assert.deepEqual((await checkInstalledModel(dh.modelsDir)).installed, checked.installed);
});
