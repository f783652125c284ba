// Runtime profiles (argv builders), the child's environment allow-list and the runtime's own argv parser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isAbsolute } from 'node:path';
import { bundledEntryPath, bundledProfile, llamaServerProfile } from '../../src/runtime/runtime-profile.js';
import { childEnvironment } from '../../src/runtime/spawn.js';
import { parseRuntimeArgs } from '../../src/runtime-server/args.js';

const model = '/models/tiny.gguf';

test('bundledProfile() runs process.execPath on the compiled entry with settings and the bind target', () => {
  const profile = bundledProfile({ modelPath: model, threads: 1, contextSize: 1024, parallel: 2, modelId: 'tiny', gpu: 'auto' });
  assert.equal(profile.file, process.execPath);
  assert.equal(profile.handshake, 'ready-line');
  assert.equal(profile.keyDelivery, 'stdin');
  assert.ok(isAbsolute(bundledEntryPath()));
  assert.ok(bundledEntryPath().endsWith('/dist/src/runtime-server/main.js'));
  assert.deepEqual(profile.args({ kind: 'unix', path: '/run/rt-1/rt.sock' }), [
    bundledEntryPath(), '--model-fd', '3', '--context', '1024', '--threads', '1', '--gpu', 'auto', '--parallel', '2', '--model-id', 'tiny', '--socket', '/run/rt-1/rt.sock',
  ]);
  assert.deepEqual(profile.args({ kind: 'tcp' }).slice(-1), ['--tcp']);
  // P-f: the model's path is never on argv; the spawn adapter hands it over as descriptor 3.
  assert.equal(profile.modelDelivery, 'fd');
  assert.ok(!profile.args({ kind: 'unix', path: '/run/rt-1/rt.sock' }).some((a) => a.includes(model)));
  assert.ok(!profile.readOnlyPaths.includes(model));
  // Every argv the profile builds parses in the runtime.
  const parsed = parseRuntimeArgs(profile.args({ kind: 'unix', path: '/run/rt-1/rt.sock' }).slice(1));
  assert.deepEqual(parsed.bind, { kind: 'unix', path: '/run/rt-1/rt.sock' });
  assert.equal(parsed.threads, 1);
  assert.equal(parsed.modelPath, '/proc/self/fd/3');
});

test('bundledProfile() refuses a relative model path and out-of-range settings with ERR_INVALID_ARG_*', () => {
  for (const options of [{ modelPath: 'tiny.gguf' }, { modelPath: model, threads: 0 }, { modelPath: model, contextSize: 10 }, { modelPath: model, modelId: 'a b' }, { modelPath: model, gpu: 'cuda' as 'auto' }]) {
    assert.throws(() => bundledProfile(options), (error: { code?: string }) => error instanceof TypeError && /^ERR_INVALID_ARG_/.test(error.code ?? ''));
  }
});

test('llamaServerProfile() binds the socket with --host *.sock and never puts a key on argv', () => {
  const profile = llamaServerProfile({ binary: '/opt/llama/llama-server', modelPath: model, contextSize: 2048, threads: 1 });
  assert.equal(profile.file, '/opt/llama/llama-server');
  assert.equal(profile.keyDelivery, 'file');
  assert.equal(profile.handshake, 'llama-server-log');
  const unix = profile.args({ kind: 'unix', path: '/run/rt-1/rt.sock' });
  assert.deepEqual(unix, ['-m', model, '-c', '2048', '-t', '1', '-ngl', '0', '--host', '/run/rt-1/rt.sock']);
  assert.ok(!unix.includes('--api-key') && !unix.includes('--port'));
  assert.throws(() => profile.args({ kind: 'unix', path: '/run/rt-1/rt' }), { code: 'ERR_SPAWN_FAILED' });
});

test('llamaServerProfile() binds 127.0.0.1 port 0 with --api-key-file when a key file is given', () => {
  const profile = llamaServerProfile({ binary: '/opt/llama/llama-server', modelPath: model });
  const tcp = profile.args({ kind: 'tcp', keyFile: '/run/rt-1/api-key' });
  assert.deepEqual(tcp, ['-m', model, '-ngl', '0', '--host', '127.0.0.1', '--port', '0', '--api-key-file', '/run/rt-1/api-key']);
  assert.ok(!tcp.includes('--api-key'));
  assert.deepEqual(profile.env, {});
});

test('llamaServerProfile() refuses extraArgs that carry a key or choose the address', () => {
  for (const flag of ['--api-key', '--api-key=abc', '--api-key-file', '--host', '--port', '-m', '--hf-token']) {
    assert.throws(() => llamaServerProfile({ binary: '/opt/llama/llama-server', modelPath: model, extraArgs: [flag, 'x'] }), { code: 'ERR_INVALID_ARG_VALUE' });
  }
  const ok = llamaServerProfile({ binary: '/opt/llama/llama-server', modelPath: model, extraArgs: ['--no-webui'] });
  assert.deepEqual(ok.args({ kind: 'unix', path: '/r/rt.sock' }).slice(-1), ['--no-webui']);
  assert.throws(() => llamaServerProfile({ binary: 'llama-server', modelPath: model }), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('childEnvironment() keeps only PATH, HOME, locale, TMPDIR and TZ from the parent', () => {
  const env = childEnvironment({
    PATH: '/usr/bin', HOME: '/home/u', LANG: 'C.UTF-8', LC_ALL: 'C', TMPDIR: '/tmp', TZ: 'UTC',
    NODE_OPTIONS: '--require /evil.js', COMPANION_TOKEN: 't', AWS_SECRET_ACCESS_KEY: 's', DBUS_SESSION_BUS_ADDRESS: 'unix:x',
    LLAMA_API_KEY: 'k', SSH_AUTH_SOCK: '/s', LD_PRELOAD: '/x.so', NODE_LLAMA_CPP_DEBUG: 'true', LC_SECRET_TOKEN: 'x',
  }, {});
  assert.deepEqual(env, { PATH: '/usr/bin', HOME: '/home/u', LANG: 'C.UTF-8', LC_ALL: 'C', TMPDIR: '/tmp', TZ: 'UTC' });
});

test('childEnvironment() adds thread/GPU keys of the profile and refuses anything else', () => {
  assert.deepEqual(childEnvironment({}, { OMP_NUM_THREADS: '1', CUDA_VISIBLE_DEVICES: '0' }), { OMP_NUM_THREADS: '1', CUDA_VISIBLE_DEVICES: '0' });
  for (const name of ['LLAMA_API_KEY', 'NODE_OPTIONS', 'GGML_API_TOKEN', 'LD_PRELOAD']) {
    assert.throws(() => childEnvironment({}, { [name]: 'x' }), { code: 'ERR_INVALID_ARG_VALUE' });
  }
});

test('parseRuntimeArgs() reads every setting and defaults the rest', () => {
  assert.deepEqual(parseRuntimeArgs(['--model', model, '--tcp']), {
    modelPath: model, bind: { kind: 'tcp' }, contextSize: 2048, threads: undefined, gpu: 'off', parallel: 1, modelId: 'local', shutdownGraceMs: 1000,
  });
  const full = parseRuntimeArgs(['--model', model, '--socket', '/r/rt.sock', '--context', '512', '--threads', '2', '--gpu', 'auto', '--parallel', '3', '--model-id', 'x', '--shutdown-grace-ms', '0']);
  assert.equal(full.contextSize, 512);
  assert.equal(full.shutdownGraceMs, 0);
});

const badArgs: [string, string[]][] = [
  ['no model', ['--tcp']],
  ['a relative model', ['--model', 'm.gguf', '--tcp']],
  ['both binds', ['--model', model, '--tcp', '--socket', '/r/s']],
  ['no bind', ['--model', model]],
  ['a relative socket', ['--model', model, '--socket', 'r/s']],
  ['an unknown flag', ['--model', model, '--tcp', '--api-key', 'x']],
  ['a repeated flag', ['--model', model, '--model', model, '--tcp']],
  ['a missing value', ['--model', model, '--tcp', '--threads']],
  ['a bad integer', ['--model', model, '--tcp', '--threads', '1e3']],
  ['a bad gpu mode', ['--model', model, '--tcp', '--gpu', 'cuda']],
  ['a stray value', ['--model', model, '--tcp', 'extra']],
  ['both model forms', ['--model', model, '--model-fd', '3', '--tcp']],
  ['a model descriptor below 3', ['--model-fd', '2', '--tcp']],
];

for (const [name, argv] of badArgs) {
  test(`parseRuntimeArgs() refuses ${name} with ERR_USAGE`, () => {
    assert.throws(() => parseRuntimeArgs(argv), { code: 'ERR_USAGE' });
  });
}
