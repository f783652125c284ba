// The optional external llama-server profile, run only when COMPANION_LLAMA_SERVER names a binary (no
// llama.cpp package exists for Debian 12 and no npm package ships llama-server). This is the one optional
// skip of the runtime tests; see docs/runtime.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnRuntime } from '../../src/runtime/spawn.js';
import { llamaServerProfile } from '../../src/runtime/runtime-profile.js';
import { tempDir, writeTinyModel } from '../helpers/runtime-env.js';
import { distRoot } from '../helpers/paths.js';
import { runtimeClient } from '../helpers/runtime-client.js';

const fakeLlamaScript = join(distRoot, 'test', 'helpers', 'runtime-fake-llama.js');
const binary = process.env.COMPANION_LLAMA_SERVER;
const optional = binary === undefined || binary === '' ? { skip: 'optional: no llama-server binary (external profile; set COMPANION_LLAMA_SERVER=/abs/path/llama-server)' } : {};

test('llamaServerProfile() runs llama-server on a Unix socket and answers the openai SDK', { ...optional, timeout: 120_000 }, async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const model = writeTinyModel(dir.path);
  const handle = await spawnRuntime(llamaServerProfile({ binary: binary!, modelPath: model, contextSize: 2048, threads: 1 }), { dataDir: join(dir.path, 'data'), readyTimeoutMs: 90_000 });
  const client = runtimeClient(handle.address);
  t.after(async () => {
    await client.close();
    await handle.stop(5000);
  });
  assert.equal(handle.address.kind, 'unix');
  assert.equal(await handle.healthCheck(2000), true);
  const chat = await client.openai.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, temperature: 0 });
  assert.equal(chat.choices.length, 1);
  assert.deepEqual(await handle.stop(10_000), { forced: false });
});

test('llamaServerProfile() in TCP mode takes its key from a 0600 file that is gone once ready', { ...optional, timeout: 120_000 }, async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const model = writeTinyModel(dir.path);
  const handle = await spawnRuntime(llamaServerProfile({ binary: binary!, modelPath: model, contextSize: 2048, threads: 1 }), { dataDir: join(dir.path, 'data'), bind: 'tcp', readyTimeoutMs: 90_000 });
  const client = runtimeClient(handle.address);
  t.after(async () => {
    await client.close();
    await handle.stop(5000);
  });
  assert.equal(handle.address.kind, 'tcp');
  assert.deepEqual(readdirSync(handle.runDir), [], 'the key file is removed once the server is ready');
  assert.ok(!existsSync(join(handle.runDir, 'api-key')));
  const models = await client.openai.models.list();
  assert.ok(models.data.length >= 1);
  const keyless = await client.raw('GET', '/v1/models', { headers: { host: `127.0.0.1:${handle.address.kind === 'tcp' ? handle.address.port : 0}` } });
  assert.equal(keyless.status, 401);
});

// The llama-server handshake itself, with a stand-in that speaks like llama-server (always runs).
function fakeLlamaServer(modelPath: string): ReturnType<typeof llamaServerProfile> {
  const profile = llamaServerProfile({ binary: process.execPath, modelPath, threads: 1 });
  return { ...profile, args: (target) => [fakeLlamaScript, ...profile.args(target)] };
}

test('spawnRuntime() takes a llama-server address from its "listening" log line, then waits for /health 200', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const handle = await spawnRuntime(fakeLlamaServer('/dev/null'), { dataDir: dir.path, readyTimeoutMs: 10_000 });
  t.after(() => handle.stop(1000));
  assert.deepEqual(handle.address, { kind: 'unix', path: join(handle.runDir, 'rt.sock') });
  assert.equal(await handle.healthCheck(1000), true);
});

test('spawnRuntime() gives llama-server its TCP key through a 0600 file and removes the file once ready', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const handle = await spawnRuntime(fakeLlamaServer('/dev/null'), { dataDir: dir.path, bind: 'tcp', readyTimeoutMs: 10_000 });
  t.after(() => handle.stop(1000));
  assert.equal(handle.address.kind, 'tcp');
  assert.deepEqual(readdirSync(handle.runDir), []);
  assert.equal(await handle.healthCheck(1000), true, 'the key from the file is the one the handle holds');
  const cmdline = readFileSync(`/proc/${handle.pid}/cmdline`, 'utf8');
  assert.ok(handle.address.kind === 'tcp' && !cmdline.includes(handle.address.key.reveal()));
});
