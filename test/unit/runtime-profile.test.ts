// Runtime profiles, the child's environment allow-list and the runtime's start-line parser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isAbsolute } from 'node:path';
import { bundledEntryPath, bundledProfile } from '../../src/runtime/runtime-profile.js';
import { childEnvironment } from '../../src/runtime/spawn.js';
import { parseStartLine } from '../../src/runtime-server/args.js';

const model = '/models/tiny.gguf';

test('bundledProfile() runs process.execPath on the compiled entry with no argument; settings travel on stdin', () => {
  const profile = bundledProfile({
    modelPath: model,
    threads: 1,
    contextSize: 1024,
    parallel: 2,
    modelId: 'tiny',
    gpu: 'auto',
  });
  assert.equal(profile.file, process.execPath);
  assert.ok(isAbsolute(bundledEntryPath()));
  assert.ok(bundledEntryPath().endsWith('/dist/src/runtime-server/main.js'));
  // P-f (issue 16 item 6): argv holds no setting, no model id, no model or socket path.
  assert.deepEqual(profile.args, [bundledEntryPath()]);
  assert.deepEqual(profile.settings, { contextSize: 1024, threads: 1, gpu: 'auto', parallel: 2, modelId: 'tiny' });
  assert.ok(!profile.readOnlyPaths.includes(model));
  // The start line the spawn adapter builds from the profile parses in the runtime.
  const parsed = parseStartLine(
    JSON.stringify({ ...profile.settings, v: 1, model: { fd: 3 }, listen: { fd: 4, kind: 'unix' } }),
  );
  assert.deepEqual(parsed.listen, { fd: 4, kind: 'unix' });
  assert.equal(parsed.threads, 1);
  assert.equal(parsed.modelId, 'tiny');
  assert.equal(parsed.modelPath, '/proc/self/fd/3');
});

test('bundledProfile() refuses a relative model path and out-of-range settings with ERR_INVALID_ARG_*', () => {
  for (const options of [
    { modelPath: 'tiny.gguf' },
    { modelPath: model, threads: 0 },
    { modelPath: model, contextSize: 10 },
    { modelPath: model, modelId: 'a b' },
    { modelPath: model, gpu: 'cuda' as 'auto' },
  ]) {
    assert.throws(
      () => bundledProfile(options),
      (error: { code?: string }) => error instanceof TypeError && /^ERR_INVALID_ARG_/.test(error.code ?? ''),
    );
  }
});

test('childEnvironment() keeps only PATH, HOME, locale, TMPDIR and TZ from the parent', () => {
  const env = childEnvironment(
    {
      PATH: '/usr/bin',
      HOME: '/home/u',
      LANG: 'C.UTF-8',
      LC_ALL: 'C',
      TMPDIR: '/tmp',
      TZ: 'UTC',
      NODE_OPTIONS: '--require /evil.js',
      COMPANION_TOKEN: 't',
      AWS_SECRET_ACCESS_KEY: 's',
      DBUS_SESSION_BUS_ADDRESS: 'unix:x',
      LLAMA_API_KEY: 'k',
      SSH_AUTH_SOCK: '/s',
      LD_PRELOAD: '/x.so',
      NODE_LLAMA_CPP_DEBUG: 'true',
      LC_SECRET_TOKEN: 'x',
    },
    {},
  );
  assert.deepEqual(env, { PATH: '/usr/bin', HOME: '/home/u', LANG: 'C.UTF-8', LC_ALL: 'C', TMPDIR: '/tmp', TZ: 'UTC' });
});

test('childEnvironment() adds thread/GPU keys of the profile and refuses anything else', () => {
  assert.deepEqual(childEnvironment({}, { OMP_NUM_THREADS: '1', CUDA_VISIBLE_DEVICES: '0' }), {
    OMP_NUM_THREADS: '1',
    CUDA_VISIBLE_DEVICES: '0',
  });
  for (const name of ['LLAMA_API_KEY', 'NODE_OPTIONS', 'GGML_API_TOKEN', 'LD_PRELOAD']) {
    assert.throws(() => childEnvironment({}, { [name]: 'x' }), { code: 'ERR_INVALID_ARG_VALUE' });
  }
});

const key = 'k'.repeat(43);

test('parseStartLine() reads every setting and defaults the rest', () => {
  assert.deepEqual(
    parseStartLine(
      JSON.stringify({ v: 1, model: { path: '/run/companion/model.gguf' }, listen: { fd: 4, kind: 'tcp' }, key }),
    ),
    {
      modelPath: '/run/companion/model.gguf',
      listen: { fd: 4, kind: 'tcp' },
      key,
      contextSize: undefined,
      threads: undefined,
      gpu: 'off',
      parallel: undefined,
      memoryBytes: undefined,
      modelId: 'local',
      shutdownGraceMs: 1000,
    },
  );
  const full = parseStartLine(
    JSON.stringify({
      v: 1,
      model: { fd: 3 },
      listen: { fd: 4, kind: 'unix' },
      contextSize: 512,
      threads: 2,
      gpu: 'auto',
      parallel: 3,
      modelId: 'x',
      shutdownGraceMs: 0,
    }),
  );
  assert.equal(full.contextSize, 512);
  assert.equal(full.parallel, 3);
  assert.equal(
    parseStartLine(JSON.stringify({ v: 1, model: { fd: 3 }, listen: { fd: 4, kind: 'unix' }, memoryBytes: 2 ** 33 }))
      .memoryBytes,
    2 ** 33,
  );
  assert.equal(full.shutdownGraceMs, 0);
  assert.equal(full.key, null);
});

const base = { v: 1, model: { fd: 3 }, listen: { fd: 4, kind: 'unix' } };
const badLines: [string, string][] = [
  ['text that is not JSON', 'model=/x'],
  ['an array', '[]'],
  ['another version', JSON.stringify({ ...base, v: 2 })],
  ['no model', JSON.stringify({ v: 1, listen: base.listen })],
  ['a relative model path', JSON.stringify({ ...base, model: { path: 'm.gguf' } })],
  ['both model forms', JSON.stringify({ ...base, model: { fd: 3, path: '/m' } })],
  ['a model descriptor below 3', JSON.stringify({ ...base, model: { fd: 2 } })],
  ['no listener', JSON.stringify({ v: 1, model: base.model })],
  ['an unknown listener kind', JSON.stringify({ ...base, listen: { fd: 4, kind: 'udp' } })],
  ['tcp without a key', JSON.stringify({ ...base, listen: { fd: 4, kind: 'tcp' } })],
  ['a key on a Unix socket', JSON.stringify({ ...base, key })],
  ['an unknown setting', JSON.stringify({ ...base, apiKey: 'x' })],
  ['a bad integer', JSON.stringify({ ...base, threads: 1.5 })],
  ['a bad gpu mode', JSON.stringify({ ...base, gpu: 'cuda' })],
  ['a bad model id', JSON.stringify({ ...base, modelId: 'a b' })],
  ['parallel 0', JSON.stringify({ ...base, parallel: 0 })],
  ['a context below 64', JSON.stringify({ ...base, contextSize: 32 })],
  ['a memory budget of 0', JSON.stringify({ ...base, memoryBytes: 0 })],
];

for (const [name, line] of badLines) {
  test(`parseStartLine() refuses ${name} with ERR_USAGE`, () => {
    assert.throws(() => parseStartLine(line), { code: 'ERR_USAGE' });
  });
}
