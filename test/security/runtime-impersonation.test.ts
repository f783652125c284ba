// P-k runtime impersonation: the companion trusts only the address its own child reports on the spawn pipe,
// checked against what it asked for; an impostor at an old socket path or behind a stale state file is
// never used (nor signalled). The fake runtime stands in for the child.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { spawnRuntime } from '../../src/runtime/spawn.js';
import { readProcessIdentity, writeRuntimeState, type ReclaimOutcome } from '../../src/runtime/stale.js';
import { checkHealth } from '../../src/runtime/health.js';
import { alive, fakeProfile, fakeRuntimeScript, killQuietly, processesWith, tempDir, waitFor } from '../helpers/runtime-env.js';

/** Starts a fake "impostor" process listening on `path`; resolves once it listens. */
async function startImpostor(path: string): Promise<number> {
  const impostor = spawn(process.execPath, [fakeRuntimeScript, '--socket', path], { stdio: ['ignore', 'pipe', 'ignore'] });
  const lines = createInterface({ input: impostor.stdout! });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the impostor did not start')), 10_000);
    lines.once('line', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  lines.close();
  return impostor.pid!;
}

test('P-k an impostor listening at the previous runtime\'s socket path, named in a stale state file, is neither used nor signalled', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const first = await spawnRuntime(fakeProfile(), { dataDir: dir.path, readyTimeoutMs: 10_000 });
  const oldPath = first.address.kind === 'unix' ? first.address.path : '';
  const oldRunDir = first.runDir;
  await first.stop(2000);
  assert.equal(existsSync(oldRunDir), false);

  // Someone takes the old place: recreates the directory and listens where the runtime was.
  mkdirSync(dirname(oldPath), { mode: 0o700 });
  const impostor = await startImpostor(oldPath);
  t.after(() => killQuietly(impostor));
  const identity = readProcessIdentity(impostor)!;
  // And a state file that names the impostor's pid with another start time (a reused pid).
  writeRuntimeState(dir.path, { version: 1, pid: impostor, startTime: String(Number(identity.startTime) + 7), exe: identity.exe!, cmdline: identity.cmdline, runDir: dirname(oldPath) });

  const outcomes: ReclaimOutcome[] = [];
  const second = await spawnRuntime(fakeProfile(), { dataDir: dir.path, readyTimeoutMs: 10_000, onReclaim: (o) => outcomes.push(o) });
  t.after(() => second.stop(1000));
  assert.deepEqual(outcomes, [{ outcome: 'foreign', pid: impostor }]);
  assert.ok(alive(impostor), 'the impostor is not signalled');
  assert.equal(second.address.kind, 'unix');
  const newPath = second.address.kind === 'unix' ? second.address.path : '';
  assert.notEqual(newPath, oldPath);
  assert.notEqual(second.runDir, dirname(oldPath));
  assert.equal(await second.healthCheck(2000), true);
  // The health check went to the new socket: the impostor's is still there, untouched by us.
  assert.ok(existsSync(oldPath));
});

const refusals: [string, string[], 'unix' | 'tcp'][] = [
  ['a socket path outside its run directory', ['--report-path', '/tmp/companion-elsewhere.sock'], 'unix'],
  ['a socket it made readable by other users', ['--socket-mode', '666'], 'unix'],
  ['a TCP host that is not 127.0.0.1', ['--report-host', '0.0.0.0'], 'tcp'],
  ['a TCP host name instead of the loopback literal', ['--report-host', 'localhost'], 'tcp'],
];

for (const [name, extra, bind] of refusals) {
  test(`P-k a child that reports ${name} is refused with ERR_SPAWN_HANDSHAKE and killed`, async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const marker = `--marker-${Math.random().toString(36).slice(2)}`;
    await assert.rejects(spawnRuntime(fakeProfile([...extra, marker]), { dataDir: dir.path, bind, readyTimeoutMs: 10_000 }), { code: 'ERR_SPAWN_HANDSHAKE' });
    await waitFor(() => processesWith(marker).length === 0, 5000, 'the refused child to be gone');
  });
}

test('P-k a health check never follows a path it was not given: a dead runtime\'s address fails closed', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const handle = await spawnRuntime(fakeProfile(), { dataDir: dir.path, readyTimeoutMs: 10_000 });
  const address = handle.address;
  await handle.stop(1000);
  // Even if something listens there again, the handle of an exited runtime reports unhealthy.
  mkdirSync(handle.runDir, { mode: 0o700 });
  const impostor = await startImpostor(address.kind === 'unix' ? address.path : '');
  t.after(() => killQuietly(impostor));
  assert.equal(await handle.healthCheck(1000), false);
  // (A raw probe of that path would succeed: the handle's exit state is what protects its users.)
  assert.equal((await checkHealth(address, 1000)).ok, true);
});
