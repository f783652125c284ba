import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireUpLock, parseUpLock, UP_LOCK_FORMAT, upLockRecordFor } from '../../src/shell/up-lock.js';

function fresh(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'companion-uplock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'run', 'up.lock');
}

test('acquireUpLock() takes a 0600 lock naming this process, refuses a second take while held, and release() removes only its own', async (t) => {
  const path = fresh(t);
  const lock = await acquireUpLock(path);
  assert.deepEqual(parseUpLock(readFileSync(path, 'utf8')), upLockRecordFor());
  await assert.rejects(
    acquireUpLock(path),
    (error: { code?: string; detail?: { pid?: number } }) =>
      error.code === 'ERR_LOCKED_BY_OTHER' && error.detail?.pid === process.pid,
  );
  assert.ok(existsSync(path), 'a live lock is never removed');
  await lock.release();
  assert.equal(existsSync(path), false);
  // A lock that is no longer ours (replaced after a reclaim) is left alone by release().
  const again = await acquireUpLock(path);
  writeFileSync(path, JSON.stringify({ format: UP_LOCK_FORMAT, pid: 2, startTime: '1', exe: '/bin/x' }));
  await again.release();
  assert.ok(existsSync(path));
});

test('acquireUpLock() reclaims a lock whose pid is dead, reused by another program or start time, or that is no lock at all', async (t) => {
  const path = fresh(t);
  const sleeper = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
  t.after(() => sleeper.kill('SIGKILL'));
  const live = upLockRecordFor(sleeper.pid!);
  const done = spawn('/bin/true', [], { stdio: 'ignore' });
  await new Promise((resolve) => done.once('close', resolve));
  const stale = [
    { format: UP_LOCK_FORMAT, pid: done.pid!, startTime: '1', exe: '/bin/true' },
    { ...live, exe: '/usr/bin/node' },
    { ...live, startTime: String(Number(live.startTime) + 1) },
    { format: UP_LOCK_FORMAT, pid: sleeper.pid!, startTime: null, exe: null },
    'garbage',
  ];
  const first = await acquireUpLock(path);
  await first.release();
  for (const value of stale) {
    writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value), { mode: 0o600 });
    const lock = await acquireUpLock(path);
    assert.equal(parseUpLock(readFileSync(path, 'utf8'))?.pid, process.pid, JSON.stringify(value));
    await lock.release();
  }
  // The live holder (the sleeper's own identity) is never touched.
  writeFileSync(path, JSON.stringify(live), { mode: 0o600 });
  await assert.rejects(acquireUpLock(path), { code: 'ERR_LOCKED_BY_OTHER' });
  assert.equal(readFileSync(path, 'utf8'), JSON.stringify(live));
  assert.equal(sleeper.exitCode, null);
});

test('acquireUpLock() does not follow a symlink planted at the lock name', async (t) => {
  const path = fresh(t);
  const first = await acquireUpLock(path);
  await first.release();
  const target = join(path, '..', '..', 'target');
  writeFileSync(target, 'keep');
  symlinkSync(target, path);
  const lock = await acquireUpLock(path);
  assert.equal(readFileSync(target, 'utf8'), 'keep', 'the symlink target is untouched');
  await lock.release();
});
