// P-k runtime impersonation: the companion binds the runtime's listening socket itself and hands it over as
// a descriptor, so the runtime never chooses, creates or reports an address; the parent reaches only the
// socket file it bound (same inode), and an impostor at an old socket path, behind a stale state file, or
// behind a socket file swapped for a link is never used (nor signalled). The fake runtime stands in for
// the child.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, symlinkSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { spawnRuntime, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { readProcessIdentity } from '../../src/common/process-identity.js';
import { writeRuntimeState, type ReclaimOutcome } from '../../src/runtime/stale.js';
import { checkHealth } from '../../src/runtime/health.js';
import { startFrontDoor } from '../../src/runtime/front-door.js';
import { createAdmission } from '../../src/core/admission.js';
import { alive, fakeProfile, killQuietly, tempDir } from '../helpers/runtime-env.js';

// An impostor: answers /health like a runtime would, counts what reaches it on stderr.
const IMPOSTOR =
  "const s=require('http').createServer((q,r)=>{process.stderr.write('hit\\n');r.end('{\\\"status\\\":\\\"ok\\\"}')});s.listen(process.argv[1],()=>console.log('listening'))";

/** Starts an "impostor" process listening on `path`; resolves once it listens. */
async function startImpostor(path: string): Promise<number> {
  const impostor = spawn(process.execPath, ['-e', IMPOSTOR, path], { stdio: ['ignore', 'pipe', 'ignore'] });
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

test("P-k an impostor listening at the previous runtime's socket path, named in a stale state file, is neither used nor signalled", async (t) => {
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
  writeRuntimeState(dir.path, {
    version: 1,
    pid: impostor,
    startTime: String(Number(identity.startTime) + 7),
    exe: identity.exe!,
    cmdline: identity.cmdline,
    runDir: dirname(oldPath),
  });

  const outcomes: ReclaimOutcome[] = [];
  const second = await spawnRuntime(fakeProfile(), {
    dataDir: dir.path,
    readyTimeoutMs: 10_000,
    onReclaim: (o) => outcomes.push(o),
  });
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

/** A foreign listener that counts its connections. */
async function foreignListener(path: string): Promise<{ count: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.end('HTTP/1.1 200 OK\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{"status":"ok"}');
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return { count: () => connections, close };
}

test("P-k a child's ready line naming another socket is ignored: the parent reaches only the socket it bound", async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const foreign = await foreignListener(join(dir.path, 'foreign.sock'));
  t.after(foreign.close);
  const handle = await spawnRuntime(fakeProfile(['--report-address', join(dir.path, 'foreign.sock')]), {
    dataDir: dir.path,
    readyTimeoutMs: 10_000,
  });
  t.after(() => handle.stop(1000));
  assert.deepEqual(handle.address.kind === 'unix' ? handle.address.path : null, join(handle.runDir, 'rt.sock'));
  assert.equal(await handle.healthCheck(2000), true);
  assert.equal(foreign.count(), 0, 'nothing went to the address the child named');
});

/** A foreign listener and a stand-in runtime in a fresh folder; `swap()` puts a link to the foreign socket at the runtime's socket path. */
async function runtimeNextToForeign(
  t: TestContext,
): Promise<{ handle: RuntimeHandle; foreign: Awaited<ReturnType<typeof foreignListener>>; swap: () => void }> {
  const dir = tempDir();
  t.after(dir.cleanup);
  const foreign = await foreignListener(join(dir.path, 'foreign.sock'));
  t.after(foreign.close);
  const handle = await spawnRuntime(fakeProfile(), { dataDir: dir.path, readyTimeoutMs: 10_000 });
  t.after(() => handle.stop(1000));
  const swap = (): void => {
    const path = handle.address.kind === 'unix' ? handle.address.path : '';
    // What a compromised runtime with write access to the folder did in the first wave.
    renameSync(path, `${path}.moved`);
    symlinkSync(join(dir.path, 'foreign.sock'), path);
  };
  return { handle, foreign, swap };
}

test('P-k a runtime socket file swapped for a link to a foreign socket fails health closed; the foreign socket sees nothing', async (t) => {
  const { handle, foreign, swap } = await runtimeNextToForeign(t);
  assert.equal(await handle.healthCheck(2000), true);
  swap();
  assert.equal(await handle.healthCheck(2000), false);
  assert.equal((await checkHealth(handle.address, 2000)).ok, false);
  assert.equal(foreign.count(), 0, 'the foreign socket never saw a connection');
});

test('P-k the front door sends no request to a runtime socket file swapped for a link: the client gets a 5xx, the foreign socket sees nothing', async (t) => {
  const { handle, foreign, swap } = await runtimeNextToForeign(t);
  const token = 'a'.repeat(43);
  const admission = createAdmission({ maxConcurrent: 4, maxQueue: 4, queueTimeoutMs: 2_000, ready: true });
  const door = await startFrontDoor({
    verifyToken: (candidate) => candidate === token,
    upstream: () => handle.address,
    admission,
  });
  let doorOpen = true;
  t.after(() => (doorOpen ? door.close() : undefined));
  const call = (): Promise<Response> =>
    fetch(`${door.url}/v1/models`, { headers: { authorization: `Bearer ${token}` } });
  const before = await call();
  // The stand-in runtime answers 404 to all but /health: the door reached the runtime it was given.
  assert.equal(before.status, 404, 'the door reaches the runtime it was given');
  await before.arrayBuffer();
  swap();
  // A new connection is needed: the pool's kept-alive one goes to the real runtime's inode.
  await door.close();
  doorOpen = false;
  const again = await startFrontDoor({
    verifyToken: (candidate) => candidate === token,
    upstream: () => handle.address,
    admission,
  });
  t.after(() => again.close());
  const after = await fetch(`${again.url}/v1/models`, { headers: { authorization: `Bearer ${token}` } });
  await after.arrayBuffer();
  assert.ok(after.status >= 500, `status ${after.status}`);
  assert.equal(foreign.count(), 0, 'the foreign socket never saw a connection');
});

test("P-k a health check never follows a path it was not given: a dead runtime's address fails closed", async (t) => {
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
  // Even a raw probe of that path refuses: the socket file there is not the one the parent bound.
  assert.equal((await checkHealth(address, 1000)).ok, false);
});
