// The sandbox with real children: node-llama-cpp loads the tiny model and generates the same text inside
// the sandbox as outside it; a server inside, listening on a Unix socket in the bound socket folder, is
// reachable from outside; killing the process group (as the spawn adapter does) ends the whole tree.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { gate } from '../helpers/gate.js';
import { repoRoot } from '../helpers/paths.js';
import {
  bwrapPresent,
  descendants,
  fixture,
  groupOf,
  killGroup,
  lastJson,
  packageJson,
  runDetached,
  startDetached,
  waitGone,
} from '../helpers/sandbox-run.js';
import {
  detectSandbox,
  runtimeSandboxProfile,
  sandboxCommand,
  type SandboxSupport,
} from '../../src/runtime/sandbox.js';

interface Inference {
  text: string;
  tokens: number;
  ms: number;
}

function getOverSocket(socketPath: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('sandboxCommand() with bubblewrap', gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap'), () => {
  let root = '';
  let modelPath = '';
  let socketDir = '';
  let support: SandboxSupport;
  const fixtures = join(repoRoot, 'dist', 'test', 'fixtures', 'sandbox');
  const groups: number[] = [];

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'companion-sandbox-it-'));
    const data = join(root, 'data');
    mkdirSync(join(data, 'models'), { recursive: true });
    socketDir = join(data, 'run');
    mkdirSync(socketDir);
    chmodSync(socketDir, 0o700);
    modelPath = join(data, 'models', 'tiny.gguf');
    writeFileSync(modelPath, generateTinyGguf({ seed: 7 }));
    support = await detectSandbox();
    assert.equal(support.mode, 'bubblewrap', support.reason);
  });

  after(() => {
    for (const pgid of groups) killGroup(pgid);
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  function profile(): ReturnType<typeof runtimeSandboxProfile> {
    // The runtime's profile, with the fixtures folder standing in for the runtime's code folder.
    // These tests exercise bubblewrap itself (a model by path, a socket bound inside): the fixtures get the
    // model folder read-only and the socket folder writable on top of the runtime's own profile.
    const base = runtimeSandboxProfile({
      nodeBinary: process.execPath,
      codeDir: fixtures,
      packageJson,
      nodeModulesDir: join(repoRoot, 'node_modules'),
      model: { fd: 3, path: '/run/companion/model.gguf' },
      env: { COMPANION_RUNTIME_THREADS: '1' },
    });
    return {
      ...base,
      readOnlyPaths: [...base.readOnlyPaths, modelPath],
      writablePaths: [socketDir],
      readOnlyFd: undefined,
    } as unknown as ReturnType<typeof runtimeSandboxProfile>;
  }

  test('node-llama-cpp loads the model and generates the same tokens inside the sandbox as outside', async () => {
    const plain = { file: process.execPath, args: [fixture('infer.js'), modelPath] };
    const outside = lastJson<Inference>(
      await runDetached(plain, 60_000, { PATH: '/usr/bin:/bin', HOME: '/nonexistent' }),
    );
    const inside = lastJson<Inference>(await runDetached(sandboxCommand(plain, profile(), support), 60_000));
    assert.ok(outside.tokens > 0, 'the model generated something');
    assert.equal(inside.text, outside.text);
    assert.equal(inside.tokens, outside.tokens);
  });

  test('a server inside, on a Unix socket in the bound socket folder, answers an HTTP GET from outside', async () => {
    const socketPath = join(socketDir, 'runtime.sock');
    const started = startDetached(
      sandboxCommand({ file: process.execPath, args: [fixture('socket-server.js'), socketPath] }, profile(), support),
    );
    groups.push(started.child.pid!);
    assert.deepEqual(JSON.parse(await started.firstLine), { ready: true });
    const response = await getOverSocket(socketPath, '/v1/models');
    assert.equal(response.status, 200);
    const body = JSON.parse(response.body) as { path: string; pid: number };
    assert.equal(body.path, '/v1/models');
    assert.ok(body.pid <= 3, 'the server runs in its own pid namespace');
    killGroup(started.child.pid, 'SIGKILL');
    await started.exited;
  });

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    test(`killing the process group with ${signal} ends every sandboxed process`, async () => {
      const socketPath = join(socketDir, `kill-${signal}.sock`);
      const started = startDetached(
        sandboxCommand({ file: process.execPath, args: [fixture('socket-server.js'), socketPath] }, profile(), support),
      );
      const leader = started.child.pid!;
      groups.push(leader);
      await started.firstLine;
      const tree = descendants(leader);
      assert.ok(tree.length >= 2, 'bwrap forked its pid-1 and the runtime');
      // Without --new-session the whole sandbox stays in the adapter's group: the group kill and the
      // resource probe (which follows the group) reach every process.
      for (const pid of tree) assert.equal(groupOf(pid), leader, "every sandboxed process is in the leader's group");
      process.kill(-leader, signal);
      await started.exited;
      assert.deepEqual(await waitGone([leader, ...tree]), [], 'no process of the sandbox is left');
    });
  }

  test('killing only the bubblewrap process still ends the sandbox (--die-with-parent)', async () => {
    const socketPath = join(socketDir, 'die-with-parent.sock');
    const started = startDetached(
      sandboxCommand({ file: process.execPath, args: [fixture('socket-server.js'), socketPath] }, profile(), support),
    );
    const leader = started.child.pid!;
    groups.push(leader);
    await started.firstLine;
    const tree = descendants(leader);
    process.kill(leader, 'SIGKILL');
    await started.exited;
    assert.deepEqual(await waitGone(tree), [], 'the sandboxed tree died with bwrap');
  });
});
