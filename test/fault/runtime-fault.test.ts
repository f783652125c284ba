// Runtime faults: kill -9 mid-stream, bad and aborting models, a socket path in use, a silent or dying
// child, a missing binary. Each start that fails leaves no process behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { isCompanionError } from '../../src/core/errors.js';
import { createHealthMonitor, type HealthSample } from '../../src/runtime/health.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeExit } from '../../src/runtime/spawn.js';
import { readRuntimeState, type ReclaimOutcome } from '../../src/runtime/stale.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import {
  fakeProfile,
  processesWith,
  runtimeDescendants,
  runtimeEntry,
  tempDir,
  writeTinyModel,
} from '../helpers/runtime-env.js';
import { runtimeClient } from '../helpers/runtime-client.js';

const ask = [{ role: 'user' as const, content: 'Hello there' }];

test(
  'kill -9 of the runtime mid-stream: the client gets an error, exited resolves, health fails, a restart works',
  { timeout: 90_000 },
  async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const model = writeTinyModel(dir.path);
    const dataDir = join(dir.path, 'data');
    const exits: RuntimeExit[] = [];
    const profile = bundledProfile({ modelPath: model, threads: 1, contextSize: 32768 });
    const handle = await spawnRuntime(profile, { dataDir, readyTimeoutMs: 60_000, onExit: (exit) => exits.push(exit) });
    t.after(() => handle.stop(1000));
    const samples: HealthSample[] = [];
    const monitor = createHealthMonitor({
      probe: (ms) => handle.healthCheck(ms),
      intervalMs: 60_000,
      timeoutMs: 1000,
      onHealth: (s) => samples.push(s),
    });
    assert.equal((await monitor.checkNow()).ok, true);

    const client = runtimeClient(handle.address);
    t.after(() => client.close());
    const stream = await client.openai.chat.completions.create({
      model: 'local',
      messages: ask,
      max_tokens: 30_000,
      temperature: 0,
      stream: true,
    });
    let chunks = 0;
    await assert.rejects(async () => {
      for await (const _chunk of stream) {
        if (++chunks === 2) process.kill(handle.pid, 'SIGKILL');
      }
    });
    assert.deepEqual(await handle.exited, { code: null, signal: 'SIGKILL' });
    assert.deepEqual(exits, [{ code: null, signal: 'SIGKILL', expected: false }]);
    const after = await monitor.checkNow();
    assert.equal(after.ok, false);
    assert.deepEqual(
      samples.map((s) => s.ok),
      [true, false],
    );
    assert.equal(existsSync(handle.runDir), false, "the dead runtime's run directory is removed");
    assert.equal(readRuntimeState(dataDir), null, 'the state file is cleared on exit');

    // A restart (the lifecycle core's decision) just works.
    const outcomes: ReclaimOutcome[] = [];
    const again = await spawnRuntime(profile, { dataDir, readyTimeoutMs: 60_000, onReclaim: (o) => outcomes.push(o) });
    t.after(() => again.stop(1000));
    assert.deepEqual(outcomes, [{ outcome: 'none' }]);
    assert.equal(await again.healthCheck(2000), true);
    assert.deepEqual(await again.stop(5000), { forced: false });
  },
);

for (const [name, bytes] of [
  ['a garbage file', Buffer.from('this is not a gguf file at all\n'.repeat(100))],
  ['a truncated model', generateTinyGguf().subarray(0, 100_000)],
] as const) {
  test(`spawnRuntime() fails cleanly with ERR_RUNTIME_MODEL_LOAD on ${name}`, { timeout: 60_000 }, async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const model = join(dir.path, 'bad-model-for-test.gguf');
    writeFileSync(model, bytes);
    await assert.rejects(
      spawnRuntime(bundledProfile({ modelPath: model, threads: 1 }), {
        dataDir: join(dir.path, 'data'),
        readyTimeoutMs: 60_000,
      }),
      (error: unknown) => {
        assert.ok(isCompanionError(error, 'ERR_RUNTIME_MODEL_LOAD'));
        assert.ok(
          !error.message.includes(dir.path) && !JSON.stringify(error.detail ?? {}).includes(dir.path),
          'no model path in the error',
        );
        return true;
      },
    );
    assert.deepEqual(runtimeDescendants(), [], 'no runtime left');
    assert.equal(readRuntimeState(join(dir.path, 'data')), null);
  });
}

test(
  'a model that makes llama.cpp abort shows up as a crash (ERR_SPAWN_EXITED), not a hang',
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const model = writeTinyModel(dir.path, {
      name: 'aborting-model.gguf',
      omitMetadata: ['llama.attention.head_count', 'llama.attention.head_count_kv'],
    });
    await assert.rejects(
      spawnRuntime(bundledProfile({ modelPath: model, threads: 1 }), {
        dataDir: join(dir.path, 'data'),
        readyTimeoutMs: 60_000,
      }),
      (error: unknown) => {
        assert.ok(isCompanionError(error, 'ERR_SPAWN_EXITED'), String(error));
        // GGML_ASSERT → abort(): exit status 134 in a shell.
        assert.equal(error.detail?.signal, 'SIGABRT');
        return true;
      },
    );
    assert.deepEqual(runtimeDescendants(), []);
  },
);

test('a child that aborts before ready is reported as ERR_SPAWN_EXITED with its signal', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  await assert.rejects(
    spawnRuntime(fakeProfile(['--abort']), { dataDir: dir.path, readyTimeoutMs: 10_000 }),
    (error: unknown) => {
      assert.ok(isCompanionError(error, 'ERR_SPAWN_EXITED'));
      assert.equal(error.detail?.signal, 'SIGABRT');
      return true;
    },
  );
  await assert.rejects(
    spawnRuntime(fakeProfile(['--exit', '3']), { dataDir: dir.path, readyTimeoutMs: 10_000 }),
    (error: unknown) => {
      assert.ok(isCompanionError(error, 'ERR_SPAWN_EXITED'));
      assert.equal(error.detail?.exitCode, 3);
      return true;
    },
  );
  await assert.rejects(
    spawnRuntime(fakeProfile(['--error', 'ERR_BIND_FAILED']), { dataDir: dir.path, readyTimeoutMs: 10_000 }),
    { code: 'ERR_BIND_FAILED' },
  );
  await assert.rejects(
    spawnRuntime(fakeProfile(['--error', 'ERR_SOMETHING_ELSE']), { dataDir: dir.path, readyTimeoutMs: 10_000 }),
    { code: 'ERR_SPAWN_FAILED' },
  );
});

test('a child that never reports ready is killed after readyTimeoutMs (ERR_SPAWN_READY_TIMEOUT)', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  await assert.rejects(
    spawnRuntime(fakeProfile(['--silent', '--marker-silent']), { dataDir: dir.path, readyTimeoutMs: 300 }),
    { code: 'ERR_SPAWN_READY_TIMEOUT' },
  );
  assert.deepEqual(processesWith('--marker-silent'), []);
  assert.equal(readRuntimeState(dir.path), null);
});

test('spawnRuntime() refuses a binary that is missing or not absolute (ERR_SPAWN_BINARY)', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  for (const file of ['/nonexistent/bin/node', 'node', dir.path]) {
    await assert.rejects(spawnRuntime({ ...fakeProfile(), file }, { dataDir: dir.path }), { code: 'ERR_SPAWN_BINARY' });
  }
});

/**
 * Runs the runtime entry directly and resolves with its first stdout line and exit code. `extra` become
 * descriptors 3, 4, … of the child.
 */
function runEntry(
  args: string[],
  stdin?: string,
  extra: Array<number | 'ignore'> = [],
): Promise<{ line: string; code: number | null }> {
  const child = spawn(process.execPath, [runtimeEntry, ...args], {
    stdio: ['pipe', 'pipe', 'ignore', ...extra],
    env: { PATH: process.env.PATH ?? '' },
  });
  if (stdin !== undefined) child.stdin!.write(stdin);
  else child.stdin!.end();
  const lines = createInterface({ input: child.stdout! });
  let first = '';
  lines.once('line', (line) => {
    first = line;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('the runtime did not exit in time'));
    }, 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      child.stdin!.destroy();
      setImmediate(() => resolve({ line: first, code }));
    });
  });
}

test(
  'the runtime refuses any argument with ERR_USAGE: its settings come on stdin, never on argv',
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const model = writeTinyModel(dir.path);
    const result = await runEntry(['--model', model, '--threads', '1']);
    assert.deepEqual(JSON.parse(result.line), { event: 'error', code: 'ERR_USAGE' });
    assert.equal(result.code, 2);
  },
);

test(
  'the runtime without a start line (stdin closed: the parent is gone) exits without serving, and a bad one fails with ERR_USAGE',
  { timeout: 60_000 },
  async () => {
    const none = await runEntry([]);
    assert.equal(none.line, '', 'it never reports ready');
    assert.equal(none.code, 0);
    // TCP without its per-spawn key: refused before anything listens.
    const keyless = await runEntry(
      [],
      `${JSON.stringify({ v: 1, model: { fd: 3 }, listen: { fd: 4, kind: 'tcp' } })}\n`,
    );
    assert.deepEqual(JSON.parse(keyless.line), { event: 'error', code: 'ERR_USAGE' });
    assert.equal(keyless.code, 2);
  },
);

test(
  'the runtime refuses a listening descriptor that is not a listening socket with ERR_BIND_FAILED',
  { timeout: 60_000 },
  async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const model = writeTinyModel(dir.path);
    const modelFd = openSync(model, 'r');
    t.after(() => closeSync(modelFd));
    // Descriptor 4 is the model file, not a socket.
    const result = await runEntry(
      [],
      `${JSON.stringify({ v: 1, model: { fd: 3 }, listen: { fd: 4, kind: 'unix' }, threads: 1 })}\n`,
      [modelFd, modelFd],
    );
    assert.deepEqual(JSON.parse(result.line), { event: 'error', code: 'ERR_BIND_FAILED' });
    assert.equal(result.code, 1);
  },
);
