// The resource probe against a real process group on this machine (Linux /proc): a detached Node leader
// with a Node grandchild. Shows both are counted, RSS grows when the leader allocates 200 MiB, CPU is
// above 0 while it spins, and a group that exited is ERR_RUNTIME_GONE.
//
// Note: the runtime integration (the real bundled runtime loading a model, RSS growing with the load)
// comes with the runtime manager; this file covers the probe on a stand-in group.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createResourceProbe } from '../../src/runtime/probe.js';
import { spawnProbeGroup } from '../helpers/probe-group.js';

const MIB = 1024 * 1024;
const linux = process.platform === 'linux' ? {} : { skip: 'the /proc probe runs on Linux only' };

test('probe() counts the detached leader and its grandchild and sees RSS grow by an allocation', linux, async (t) => {
  const group = await spawnProbeGroup();
  t.after(() => group.kill());
  const probe = createResourceProbe({ pgid: group.pgid, cacheMs: 0 });
  t.after(() => probe.close());

  const before = await probe.probe();
  assert.equal(before.processes, 2);
  assert.ok(before.rssBytes > 20 * MIB, `two Node processes hold more than 20 MiB (saw ${before.rssBytes})`);
  assert.equal(before.cpuPercent, null);
  assert.equal(before.vram, null, 'no nvidia-smi on this machine');

  assert.equal(await group.command('alloc 200'), 'allocated');
  const after = await probe.probe();
  assert.equal(after.processes, 2);
  const grown = (after.rssBytes - before.rssBytes) / MIB;
  assert.ok(grown >= 190, `RSS grew by ${grown.toFixed(1)} MiB after touching 200 MiB`);
});

test('probe() reports CPU above 0 over an interval in which the leader spun', linux, async (t) => {
  const group = await spawnProbeGroup();
  t.after(() => group.kill());
  const probe = createResourceProbe({ pgid: group.pgid, cacheMs: 0 });
  t.after(() => probe.close());

  await probe.probe();
  assert.equal(await group.command('spin 400'), 'spun');
  const figures = await probe.probe();
  assert.ok(figures.cpuPercent !== null && figures.cpuPercent > 0, `cpuPercent ${figures.cpuPercent}`);
});

test('probe() rejects with ERR_RUNTIME_GONE once the group has exited, and keeps doing so', linux, async (t) => {
  const group = await spawnProbeGroup();
  t.after(() => group.kill());
  const probe = createResourceProbe({ pgid: group.pgid, cacheMs: 0 });
  t.after(() => probe.close());

  await probe.probe();
  await group.kill();
  await assert.rejects(probe.probe(), { code: 'ERR_RUNTIME_GONE' });
  await assert.rejects(probe.probe(), { code: 'ERR_RUNTIME_GONE' });
});

test('probe() of a pid that is not a group leader is ERR_RUNTIME_GONE', linux, async (t) => {
  const group = await spawnProbeGroup();
  t.after(() => group.kill());
  const probe = createResourceProbe({ pgid: group.grandchildPid });
  t.after(() => probe.close());
  await assert.rejects(probe.probe(), { code: 'ERR_RUNTIME_GONE' });
});

test('probe() answers concurrent callers from one walk against the real group', linux, async (t) => {
  const group = await spawnProbeGroup();
  t.after(() => group.kill());
  const stats: string[] = [];
  const probe = createResourceProbe({
    pgid: group.pgid,
    recorder: (access) => access.target.endsWith('/stat') && stats.push(access.target),
  });
  t.after(() => probe.close());
  const [a, b, c] = await Promise.all([probe.probe(), probe.probe(), probe.probe()]);
  assert.equal(a, b);
  assert.equal(b, c);
  assert.equal(stats.filter((path) => path === `/proc/${group.pgid}/stat`).length, 1);
});
