// Runtime processes: process-group stop, forced stop, parent-death exit, stale reclaim and the identity
// check that keeps an unrelated process safe. The fake runtime stands in where no model is needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { spawnRuntime, type SpawnCommand, type WrapContext } from '../../src/runtime/spawn.js';
import { readProcessIdentity } from '../../src/common/process-identity.js';
import {
  readRuntimeState,
  reclaimStaleRuntime,
  writeRuntimeState,
  STATE_FILE,
  type ReclaimOutcome,
} from '../../src/runtime/stale.js';
import {
  alive,
  fakeProfile,
  killQuietly,
  parentScript,
  tempDir,
  waitFor,
  writeTinyModel,
} from '../helpers/runtime-env.js';

/** Starts the intermediate parent and resolves with its pid and its runtime's pid. */
async function startParent(config: object): Promise<{ parentPid: number; runtimePid: number }> {
  const parent = spawn(process.execPath, [parentScript, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: parent.stdout! });
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the parent did not report in time')), 60_000);
    lines.once('line', (first) => {
      clearTimeout(timer);
      resolve(first);
    });
    parent.once('exit', (code) => reject(new Error(`the parent exited (${code})`)));
  });
  lines.close();
  return { parentPid: parent.pid!, runtimePid: (JSON.parse(line) as { pid: number }).pid };
}

test('stop() signals the whole process group: a grandchild of the runtime dies too', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  let grandchild: number | undefined;
  t.after(() => killQuietly(grandchild));
  const handle = await spawnRuntime(fakeProfile(['--grandchild']), {
    dataDir: dir.path,
    readyTimeoutMs: 10_000,
    onStderr: (line) => {
      const match = /^grandchild (\d+)$/.exec(line);
      if (match !== null) grandchild = Number(match[1]);
    },
  });
  t.after(() => handle.stop(1000));
  await waitFor(() => grandchild !== undefined, 5000, 'the grandchild pid');
  assert.ok(alive(grandchild!));
  assert.equal(readProcessIdentity(grandchild!)?.pgrp, handle.pid, 'the grandchild is in the runtime group');
  assert.equal(readProcessIdentity(handle.pid)?.pgrp, handle.pid, 'the runtime leads its own group');
  assert.notEqual(readProcessIdentity(handle.pid)?.pgrp, readProcessIdentity(process.pid)?.pgrp);
  assert.deepEqual(await handle.stop(5000), { forced: false });
  await waitFor(() => !alive(grandchild!), 5000, 'the grandchild to die');
});

test('stop() escalates to SIGKILL after the bound and reports forced: true', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const exits: unknown[] = [];
  const handle = await spawnRuntime(fakeProfile(['--ignore-term']), {
    dataDir: dir.path,
    readyTimeoutMs: 10_000,
    onExit: (exit) => exits.push(exit),
  });
  assert.deepEqual(await handle.stop(300), { forced: true });
  assert.deepEqual(await handle.exited, { code: null, signal: 'SIGKILL' });
  assert.deepEqual(exits, [{ code: null, signal: 'SIGKILL', expected: true }]);
  assert.deepEqual(await handle.stop(), { forced: true }, 'stop() is idempotent');
  assert.equal(existsSync(handle.runDir), false);
});

test('the bundled runtime exits by itself when its parent is SIGKILLed', { timeout: 90_000 }, async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const model = writeTinyModel(dir.path);
  const { parentPid, runtimePid } = await startParent({ dataDir: join(dir.path, 'data'), model });
  t.after(() => {
    killQuietly(parentPid);
    killQuietly(runtimePid);
  });
  assert.ok(alive(runtimePid));
  process.kill(parentPid, 'SIGKILL');
  await waitFor(() => !alive(runtimePid), 15_000, 'the orphaned runtime to exit');
});

test(
  'spawnRuntime() reclaims a runtime left running by a companion that was SIGKILLed',
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const dataDir = join(dir.path, 'data');
    // The fake runtime does not watch its parent: it stays behind like a runtime that missed the signal.
    const { parentPid, runtimePid } = await startParent({ dataDir, fake: ['--grandchild'] });
    t.after(() => killQuietly(runtimePid));
    process.kill(parentPid, 'SIGKILL');
    await waitFor(() => !alive(parentPid), 5000, 'the parent to die');
    assert.ok(alive(runtimePid), 'the stale runtime survived its parent');
    const stale = readRuntimeState(dataDir);
    assert.equal(stale?.pid, runtimePid);
    assert.equal(lstatSync(join(dataDir, STATE_FILE)).mode & 0o777, 0o600);
    assert.equal(stale?.cmdline[0], process.execPath);
    assert.equal(stale?.exe, readProcessIdentity(runtimePid)?.exe);

    const outcomes: ReclaimOutcome[] = [];
    const handle = await spawnRuntime(fakeProfile(), {
      dataDir,
      readyTimeoutMs: 10_000,
      onReclaim: (outcome) => outcomes.push(outcome),
    });
    t.after(() => handle.stop(1000));
    assert.deepEqual(outcomes, [{ outcome: 'reclaimed', pid: runtimePid, forced: false }]);
    assert.equal(alive(runtimePid), false);
    assert.equal(existsSync(stale!.runDir), false, 'the stale run directory is removed');
    assert.equal(readRuntimeState(dataDir)?.pid, handle.pid, 'the state file now names the new runtime');
  },
);

test('reclaim never signals an unrelated process that holds the recorded pid', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const sleepBinary = realpathSync('/bin/sleep');
  const unrelated = spawn(sleepBinary, ['30'], { stdio: 'ignore' });
  t.after(() => killQuietly(unrelated.pid));
  await waitFor(() => readProcessIdentity(unrelated.pid!)?.exe === sleepBinary, 5000, 'sleep to start');
  const identity = readProcessIdentity(unrelated.pid!)!;
  const base = { version: 1 as const, pid: unrelated.pid!, runDir: join(dir.path, 'run', 'rt-AAAAAA') };
  const impostors = [
    { ...base, startTime: String(Number(identity.startTime) + 1), exe: identity.exe!, cmdline: identity.cmdline },
    { ...base, startTime: identity.startTime, exe: realpathSync(process.execPath), cmdline: identity.cmdline },
    { ...base, startTime: identity.startTime, exe: identity.exe!, cmdline: [sleepBinary, '31'] },
  ];
  for (const state of impostors) {
    writeRuntimeState(dir.path, state);
    assert.deepEqual(await reclaimStaleRuntime(dir.path, { graceMs: 200 }), { outcome: 'foreign', pid: unrelated.pid });
    assert.ok(alive(unrelated.pid!), 'the unrelated process is untouched');
    assert.equal(readRuntimeState(dir.path), null, 'the stale state file is dropped');
  }
  // Control: the same process recorded exactly is taken for ours (so the refusals above are not vacuous).
  writeRuntimeState(dir.path, {
    ...base,
    startTime: identity.startTime,
    exe: identity.exe!,
    cmdline: identity.cmdline,
  });
  assert.deepEqual(await reclaimStaleRuntime(dir.path, { graceMs: 2000 }), {
    outcome: 'reclaimed',
    pid: unrelated.pid,
    forced: false,
  });
  await waitFor(() => !alive(unrelated.pid!), 5000, 'the matching process to stop');
});

test('reclaim reports gone for a dead pid and none for a missing or malformed state file', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  assert.deepEqual(await reclaimStaleRuntime(dir.path), { outcome: 'none' });
  const finished = spawn(realpathSync('/bin/true'), [], { stdio: 'ignore' });
  await new Promise((resolve) => finished.once('exit', resolve));
  const runBase = join(dir.path, 'run');
  const runDir = join(runBase, 'rt-Zz0123');
  mkdirSync(runDir, { recursive: true });
  writeRuntimeState(dir.path, {
    version: 1,
    pid: finished.pid!,
    startTime: '1',
    exe: '/bin/true',
    cmdline: ['/bin/true'],
    runDir,
  });
  assert.deepEqual(await reclaimStaleRuntime(dir.path, { runBase }), { outcome: 'gone', pid: finished.pid });
  assert.equal(existsSync(runDir), false);
  for (const text of ['not json', '{"version":1,"pid":1}', '{"version":2}']) {
    writeFileSync(join(dir.path, STATE_FILE), text, { mode: 0o600 });
    assert.deepEqual(await reclaimStaleRuntime(dir.path), { outcome: 'none' });
    assert.equal(existsSync(join(dir.path, STATE_FILE)), false);
  }
});

test('a sandbox wrap hook receives the command and the paths to expose, and its command is what runs', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const seen: { command: SpawnCommand; context: WrapContext }[] = [];
  const nice = realpathSync('/usr/bin/nice');
  const handle = await spawnRuntime(fakeProfile(), {
    dataDir: dir.path,
    readyTimeoutMs: 10_000,
    wrap: (command, context) => {
      seen.push({ command, context });
      return { file: nice, args: ['-n', '1', command.file, ...command.args] };
    },
  });
  t.after(() => handle.stop(1000));
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.command.file, process.execPath);
  assert.equal(seen[0]!.context.modelFd, 3);
  assert.deepEqual(handle.address.kind === 'unix' ? handle.address.path : null, join(handle.runDir, 'rt.sock'));
  // nice exec'd the runtime: the recorded identity is what runs now (so reclaim still recognises it).
  const state = readRuntimeState(dir.path)!;
  assert.equal(state.exe, readProcessIdentity(handle.pid)!.exe);
  assert.deepEqual(state.cmdline, readProcessIdentity(handle.pid)!.cmdline);
  assert.equal(state.cmdline[0], process.execPath);
  assert.ok(readFileSync(`/proc/${handle.pid}/stat`, 'utf8').length > 0);
});
