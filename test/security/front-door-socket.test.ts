// P-c behind the front door: the runtime listens on a Unix socket that only the companion's user can
// reach (mode 0600, inside a fresh 0700 run directory), so another local user cannot bypass the front door
// and its token by talking to the runtime directly. The folders above the run directory are made
// traversable (0711) here on purpose, so that the runtime's own modes are what stops the other user.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { gate } from '../helpers/gate.js';
import { tempDir, writeTinyModel } from '../helpers/runtime-env.js';

const SETPRIV = '/usr/bin/setpriv';
const NOBODY = 65534;
const asRoot = process.getuid?.() === 0 && existsSync(SETPRIV);
// Root and setpriv are how this test acts as another user; CI runs as root, so under
// COMPANION_REQUIRE_ALL=1 the test must really run (a gated skip, not an optional one).
const asOtherUser = gate('root and setpriv (to act as another user)', asRoot, 'run as root; setpriv is in util-linux');

/** Tries to connect to a Unix socket as user `nobody`; resolves with "CONNECTED" or the error code. */
function connectAsNobody(socketPath: string): Promise<string> {
  const code =
    `require('net').connect(${JSON.stringify(socketPath)})` +
    ".on('connect', function () { console.log('CONNECTED'); this.destroy(); })" +
    ".on('error', (e) => console.log(e.code))";
  return new Promise((resolve, reject) => {
    const child = spawn(
      SETPRIV,
      [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', process.execPath, '-e', code],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: '/usr/bin:/bin' },
        cwd: '/',
      },
    );
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      if (out.trim() === '') reject(new Error(`no answer from the probe as nobody: ${err.slice(0, 500)}`));
      else resolve(out.trim());
    });
  });
}

describe('P-c the runtime socket behind the front door', () => {
  let dir: ReturnType<typeof tempDir>;
  let handle: RuntimeHandle;
  let socketPath = '';

  before(async () => {
    dir = tempDir('companion-p-c-');
    chmodSync(dir.path, 0o711);
    const dataDir = join(dir.path, 'data');
    mkdirSync(join(dataDir, 'run'), { recursive: true, mode: 0o711 });
    chmodSync(dataDir, 0o711);
    chmodSync(join(dataDir, 'run'), 0o711);
    const model = writeTinyModel(dir.path);
    handle = await spawnRuntime(bundledProfile({ modelPath: model, threads: 1 }), { dataDir, readyTimeoutMs: 60_000 });
    assert.equal(handle.address.kind, 'unix');
    socketPath = handle.address.kind === 'unix' ? handle.address.path : '';
  });

  after(async () => {
    await handle?.stop(2000);
    dir?.cleanup();
  });

  test("P-c the runtime socket is mode 0600 in a 0700 run directory, both owned by the companion's user", () => {
    const uid = process.getuid?.();
    const socket = lstatSync(socketPath);
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);
    const runDir = lstatSync(dirname(socketPath));
    assert.ok(runDir.isDirectory() && !runDir.isSymbolicLink());
    assert.equal(runDir.mode & 0o777, 0o700);
    if (uid !== undefined) assert.deepEqual([socket.uid, runDir.uid], [uid, uid]);
    // The run folder above was made traversable by anyone in this test: the companion tightened it to 0700.
    assert.equal(lstatSync(dirname(dirname(socketPath))).mode & 0o777, 0o700);
  });

  test(
    'P-c another user (nobody) cannot connect to the runtime socket: EACCES from the 0700 directory and from the 0600 socket',
    asOtherUser,
    async (t) => {
      // Control: the same probe, as nobody, connects to a socket that allows it (so EACCES below is real).
      const openDir = join(dir.path, 'open');
      mkdirSync(openDir, { mode: 0o755 });
      chmodSync(openDir, 0o755);
      const openPath = join(openDir, 'open.sock');
      const server: Server = createServer((socket) => socket.destroy());
      await new Promise<void>((resolve) => server.listen(openPath, resolve));
      t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
      chmodSync(openPath, 0o666);
      assert.equal(await connectAsNobody(openPath), 'CONNECTED');

      assert.equal(await connectAsNobody(socketPath), 'EACCES');
      // With the run directory opened up, the socket's own 0600 still refuses the other user.
      const runDir = dirname(socketPath);
      chmodSync(runDir, 0o711);
      try {
        assert.equal(await connectAsNobody(socketPath), 'EACCES');
      } finally {
        chmodSync(runDir, 0o700);
      }
      assert.equal(await handle.healthCheck(2000), true, 'the runtime itself is fine and still serves its owner');
    },
  );
});
