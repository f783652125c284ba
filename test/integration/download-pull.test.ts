// The verified pull (src/runtime/manager/install.ts) against the reference hub's model host over real TLS: the
// happy path on both sinks, resume after a cut, a host that ignores Range, an ETag change, and a large
// file whose peak RSS must stay flat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { checkInstalledModel, readInstalled } from '../../src/runtime/manager/install.js';
import { MIB, SMALL, hostGets, listTree, milestones, modeOf, startDownloadHub } from '../helpers/download-hub.js';
import { exited, jsonLines, spawnDownloadChild } from '../helpers/download-child.js';
import { startHub } from '../../src/hub/index.js';

for (const hashOn of ['worker', 'main'] as const) {
  test(`pullModel() (hashing on the ${hashOn} thread) installs a verified model that checkInstalledModel() accepts`, async (t) => {
    const dh = await startDownloadHub(t);
    const model = dh.model(SMALL.id);
    const finalPath = join(dh.modelsDir, `${model.id}.gguf`);
    let finalSeenEarly = false;
    const run = await dh.pull(model, {
      hashOn,
      onEvent: (event) => {
        if (event.event !== 'verified' && existsSync(finalPath)) finalSeenEarly = true;
      },
    });
    assert.equal(run.error, null);
    assert.equal(finalSeenEarly, false, 'the final name appears only after verification');
    assert.deepEqual(milestones(run), [
      { event: 'verified', model: model.id, bytes: model.size, reused: false, active: true },
    ]);
    const progress = run.events.filter((e) => e.event === 'progress');
    assert.ok(progress.length >= 2);
    assert.equal(progress.at(-1)!.event === 'progress' && progress.at(-1)!.bytes, model.size);

    const bytes = await readFile(finalPath);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), model.sha256);
    assert.deepEqual(await listTree(dh.modelsDir), [
      '.partial',
      'installed.json',
      'records',
      `records/${model.id}.json`,
      `${model.id}.gguf`,
    ]);
    assert.equal(await modeOf(dh.modelsDir), 0o700);
    assert.equal(await modeOf(join(dh.modelsDir, '.partial')), 0o700);
    assert.equal(await modeOf(finalPath), 0o600);
    assert.equal(await modeOf(join(dh.modelsDir, 'installed.json')), 0o600);

    const record = await readInstalled(dh.modelsDir);
    assert.ok(record);
    assert.equal(record.id, model.id);
    assert.equal(record.size, model.size);
    assert.equal(record.manifestVersion, dh.hub.manifestVersion);
    const recordText = await readFile(join(dh.modelsDir, 'installed.json'), 'utf8');
    assert.ok(!recordText.includes(model.sha256), 'the record does not hold the digest');
    const checked = await checkInstalledModel(dh.modelsDir);
    assert.equal(checked.path, finalPath);
    assert.deepEqual(checked.installed, record);
    assert.deepEqual(
      hostGets(dh.hub, model).map((r) => r.range),
      [null],
    );
  });
}

test('pullModel() of a model that is installed and unchanged reuses it without a request', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  assert.equal((await dh.pull(model)).error, null);
  const again = await dh.pull(model);
  assert.equal(again.error, null);
  assert.deepEqual(milestones(again), [
    { event: 'verified', model: model.id, bytes: model.size, reused: true, active: true },
  ]);
  assert.equal(hostGets(dh.hub, model).length, 1);
});

test('pullModel() resumes after a cut at a random offset: hashes the partial, asks with Range, ends verified', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const cut = randomInt(1, model.size - 1);
  dh.hub.setMisbehaviour({ cutAfterBytes: cut });
  const first = await dh.pull(model);
  assert.equal(first.error?.code, 'ERR_DOWNLOAD_NETWORK');
  assert.equal(existsSync(join(dh.modelsDir, `${model.id}.gguf`)), false);
  const partial = join(dh.modelsDir, '.partial', `${model.id}.gguf.part`);
  assert.equal((await readFile(partial)).length, cut, 'every byte received before the cut is kept');
  assert.equal(await modeOf(partial), 0o600);

  dh.hub.setMisbehaviour({});
  const second = await dh.pull(model);
  assert.equal(second.error, null);
  assert.deepEqual(milestones(second), [
    { event: 'resume', model: model.id, offset: cut },
    { event: 'verified', model: model.id, bytes: model.size, reused: false, active: true },
  ]);
  assert.deepEqual(
    hostGets(dh.hub, model).map((r) => r.range),
    [null, `bytes=${cut}-`],
  );
  await checkInstalledModel(dh.modelsDir);
  assert.deepEqual(await readdir(join(dh.modelsDir, '.partial')), []);
});

test('pullModel() restarts from byte 0 when the host ignores Range, and ends verified', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  dh.hub.setMisbehaviour({ cutAfterBytes: 2 * MIB });
  assert.equal((await dh.pull(model)).error?.code, 'ERR_DOWNLOAD_NETWORK');
  dh.hub.setMisbehaviour({ ignoreRange: true });
  const second = await dh.pull(model);
  assert.equal(second.error, null);
  assert.deepEqual(milestones(second), [
    { event: 'resume', model: model.id, offset: 2 * MIB },
    { event: 'restart', model: model.id, reason: 'range-ignored' },
    { event: 'verified', model: model.id, bytes: model.size, reused: false, active: true },
  ]);
  await checkInstalledModel(dh.modelsDir);
});

test('pullModel() restarts from byte 0 when the ETag changed between attempts (If-Range)', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  dh.hub.setMisbehaviour({ cutAfterBytes: MIB + 17 });
  assert.equal((await dh.pull(model)).error?.code, 'ERR_DOWNLOAD_NETWORK');
  dh.hub.setMisbehaviour({ changeEtag: true });
  const second = await dh.pull(model);
  assert.equal(second.error, null);
  assert.deepEqual(milestones(second), [
    { event: 'resume', model: model.id, offset: MIB + 17 },
    { event: 'restart', model: model.id, reason: 'changed' },
    { event: 'verified', model: model.id, bytes: model.size, reused: false, active: true },
  ]);
  const ranges = hostGets(dh.hub, model).map((r) => r.range);
  assert.deepEqual(ranges, [null, `bytes=${MIB + 17}-`]);
  await checkInstalledModel(dh.modelsDir);
});

test('pullModel() of a 256 MiB model keeps the peak RSS of its process flat (< 150 MB growth)', async (t) => {
  const size = 256 * MIB;
  const hub = await startHub({ extraModels: [{ id: 'large', size, seed: 'download-rss' }] });
  t.after(() => hub.close());
  const model = hub.models.find((m) => m.id === 'large')!;
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(tmpdir(), 'companion-download-rss-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const child = spawnDownloadChild('pull', {
    model,
    modelsDir: join(dir, 'models'),
    caPem: hub.caPem,
    progressMs: 60_000,
  });
  t.after(() => child.kill('SIGKILL'));
  let result: Record<string, unknown> | undefined;
  jsonLines(child, (line) => {
    if ('done' in line || 'error' in line) result = line;
  });
  const exit = await exited(child, 120_000);
  assert.equal(exit.code, 0, JSON.stringify(result));
  assert.equal(result?.done, true);
  const growthMB = (((result.maxRssKb as number) - (result.startRssKb as number)) * 1024) / 1e6;
  t.diagnostic(
    `256 MiB pull: peak RSS ${(((result.maxRssKb as number) * 1024) / 1e6).toFixed(0)} MB, growth ${growthMB.toFixed(0)} MB, ${(size / MIB / ((result.ms as number) / 1000)).toFixed(0)} MiB/s`,
  );
  assert.ok(growthMB < 150, `peak RSS grew by ${growthMB.toFixed(0)} MB`);
  await checkInstalledModel(join(dir, 'models'));
});
