// The bundled runtime end to end: spawnRuntime → ready → real inference on the tiny model through the
// official openai SDK (over the Unix socket and over loopback TCP) → stop. One runtime per bind mode.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { APIError } from 'openai';
import { spawnRuntime, type RuntimeExit, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { checkHealth } from '../../src/runtime/health.js';
import { Secret } from '../../src/core/secret.js';
import { tempDir, writeTinyModel } from '../helpers/runtime-env.js';
import { runtimeClient, type RuntimeClient } from '../helpers/runtime-client.js';

const dir = tempDir();
const dataDir = join(dir.path, 'data');
let model: string;
let handle: RuntimeHandle;
let client: RuntimeClient;
const exits: RuntimeExit[] = [];

before(async () => {
  model = writeTinyModel(dir.path);
  // A large context lets one request run long enough to be cancelled mid-way (the model is tiny).
  handle = await spawnRuntime(
    bundledProfile({ modelPath: model, threads: 1, contextSize: 32768, parallel: 1, modelId: 'tiny' }),
    {
      dataDir,
      readyTimeoutMs: 60_000,
      onExit: (exit) => exits.push(exit),
    },
  );
  client = runtimeClient(handle.address);
});

after(async () => {
  await client?.close();
  await handle?.stop(2000);
  dir.cleanup();
});

const ask = [{ role: 'user' as const, content: 'Hello there' }];

test('spawnRuntime() resolves with the socket the companion bound for the child: mode 0600, in a fresh 0700 run directory', () => {
  assert.equal(handle.address.kind, 'unix');
  const path = handle.address.kind === 'unix' ? handle.address.path : '';
  assert.equal(dirname(path), handle.runDir);
  assert.equal(dirname(handle.runDir), join(dataDir, 'run'));
  assert.ok(lstatSync(path).isSocket());
  assert.equal(lstatSync(path).mode & 0o777, 0o600);
  assert.equal(lstatSync(handle.runDir).mode & 0o777, 0o700);
  assert.equal(lstatSync(join(dataDir, 'runtime.state.json')).mode & 0o777, 0o600);
});

test('healthCheck() succeeds against the ready runtime', async () => {
  assert.equal(await handle.healthCheck(2000), true);
  const result = await checkHealth(handle.address, 2000);
  assert.deepEqual(result, { ok: true, status: 200 });
});

test('chat completions stream and not through the openai SDK, identical at temperature 0', async () => {
  const first = await client.openai.chat.completions.create({
    model: 'tiny',
    messages: ask,
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(first.object, 'chat.completion');
  assert.equal(first.model, 'tiny');
  assert.equal(first.choices.length, 1);
  assert.equal(first.choices[0]!.message.role, 'assistant');
  assert.equal(first.choices[0]!.finish_reason, 'length');
  const text = first.choices[0]!.message.content ?? '';
  assert.ok(text.length > 0);
  assert.equal(first.usage?.completion_tokens, 12);
  assert.ok((first.usage?.prompt_tokens ?? 0) > 0);
  assert.equal(first.usage?.total_tokens, (first.usage?.prompt_tokens ?? 0) + 12);

  const again = await client.openai.chat.completions.create({
    model: 'tiny',
    messages: ask,
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(again.choices[0]!.message.content, text);

  const stream = await client.openai.chat.completions.create({
    model: 'tiny',
    messages: ask,
    max_tokens: 12,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = '';
  let finish: string | null = null;
  let usage: { completion_tokens: number } | null = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    streamed += chunk.choices[0]?.delta.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(streamed, text);
  assert.equal(finish, 'length');
  assert.equal(usage?.completion_tokens, 12);
});

test('a stop string ends the chat completion before it, with finish_reason stop', async () => {
  const full = await client.openai.chat.completions.create({
    model: 'tiny',
    messages: ask,
    max_tokens: 16,
    temperature: 0,
  });
  const text = full.choices[0]!.message.content ?? '';
  const stop = text.slice(4, 6);
  assert.equal(stop.length, 2);
  const stopped = await client.openai.chat.completions.create({
    model: 'tiny',
    messages: ask,
    max_tokens: 16,
    temperature: 0,
    stop: [stop],
  });
  assert.equal(stopped.choices[0]!.message.content, text.slice(0, text.indexOf(stop)));
  assert.equal(stopped.choices[0]!.finish_reason, 'stop');
});

test('completions stream and not through the openai SDK, and seeded sampling repeats', async () => {
  const plain = await client.openai.completions.create({
    model: 'tiny',
    prompt: 'Once upon',
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(plain.object, 'text_completion');
  assert.equal(plain.choices[0]!.finish_reason, 'length');
  assert.equal(plain.usage?.completion_tokens, 8);
  const stream = await client.openai.completions.create({
    model: 'tiny',
    prompt: 'Once upon',
    max_tokens: 8,
    temperature: 0,
    stream: true,
  });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? '';
  assert.equal(streamed, plain.choices[0]!.text);

  const seeded = { model: 'tiny', prompt: 'Once upon', max_tokens: 8, temperature: 1.2, top_p: 0.9, seed: 42 };
  const a = await client.openai.completions.create(seeded);
  const b = await client.openai.completions.create(seeded);
  assert.equal(a.choices[0]!.text, b.choices[0]!.text);
});

test('/v1/models lists the one model', async () => {
  const models = await client.openai.models.list();
  assert.deepEqual(
    models.data.map((m) => [m.id, m.object, m.owned_by]),
    [['tiny', 'model', 'companion']],
  );
});

test('the runtime answers bad requests with OpenAI error bodies and never sends CORS headers', async () => {
  const cases: [string, string, { body?: string | Buffer; headers?: Record<string, string> }, number, string][] = [
    ['GET', '/v1/nothing', {}, 404, 'not_found'],
    ['GET', '/v1/chat/completions', {}, 405, 'method_not_allowed'],
    [
      'OPTIONS',
      '/v1/chat/completions',
      { headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } },
      405,
      'method_not_allowed',
    ],
    [
      'POST',
      '/v1/chat/completions',
      { body: '{}', headers: { 'content-type': 'text/plain' } },
      415,
      'unsupported_media_type',
    ],
    [
      'POST',
      '/v1/chat/completions',
      { body: '{not json', headers: { 'content-type': 'application/json' } },
      400,
      'invalid_json',
    ],
    [
      'POST',
      '/v1/chat/completions',
      { body: Buffer.alloc(1024 * 1024 + 1, 0x20), headers: { 'content-type': 'application/json' } },
      413,
      'body_too_large',
    ],
    [
      'POST',
      '/v1/chat/completions',
      { body: JSON.stringify({ messages: ask, n: 3 }), headers: { 'content-type': 'application/json' } },
      400,
      'unsupported_value',
    ],
    [
      'POST',
      '/v1/completions',
      {
        body: JSON.stringify({ prompt: 'ab '.repeat(20000), max_tokens: 1 }),
        headers: { 'content-type': 'application/json', origin: 'https://evil.example' },
      },
      400,
      'context_length_exceeded',
    ],
  ];
  for (const [method, path, options, status, code] of cases) {
    const response = await client.raw(method, path, options);
    assert.equal(response.status, status, `${method} ${path}`);
    const body = JSON.parse(response.text) as { error: { code: string; type: string; message: string } };
    assert.equal(body.error.code, code, `${method} ${path}`);
    assert.equal(typeof body.error.message, 'string');
    assert.equal(typeof body.error.type, 'string');
    assert.deepEqual(
      Object.keys(response.headers).filter((name) => name.startsWith('access-control-')),
      [],
      `${method} ${path}`,
    );
  }
  const health = await client.raw('GET', '/health', { headers: { origin: 'https://evil.example' } });
  assert.deepEqual(JSON.parse(health.text), {
    status: 'ok',
    parallel: 1,
    contextSize: 32768,
    sequences: { active: 0, peak: 1 },
  });
  assert.equal(health.headers['access-control-allow-origin'], undefined);
});

test('a client that disconnects mid-stream cancels its generation and frees the sequence', async () => {
  const controller = new AbortController();
  // 30 000 tokens would keep the one sequence busy for a long time if the disconnect did not cancel it.
  const stream = await client.openai.chat.completions.create(
    { model: 'tiny', messages: ask, max_tokens: 30_000, temperature: 0, stream: true },
    { signal: controller.signal },
  );
  let chunks = 0;
  // The SDK ends the iteration quietly on abort.
  await assert.doesNotReject(async () => {
    for await (const _chunk of stream) {
      if (++chunks === 3) controller.abort();
    }
  });
  assert.ok(chunks >= 3);
  // The next request needs the same (only) sequence: it is served because the first was cancelled.
  const next = await client.openai.chat.completions.create(
    { model: 'tiny', messages: ask, max_tokens: 1, temperature: 0 },
    { timeout: 15_000 },
  );
  assert.equal(next.usage?.completion_tokens, 1);
});

test('stop() during a stream: the client sees an error event, the runtime exits 0 and its socket and run folder are removed', async () => {
  const path = handle.address.kind === 'unix' ? handle.address.path : '';
  const stream = await client.openai.chat.completions.create({
    model: 'tiny',
    messages: ask,
    max_tokens: 30_000,
    temperature: 0,
    stream: true,
  });
  let stopping: Promise<{ forced: boolean }> | undefined;
  await assert.rejects(
    async () => {
      for await (const _chunk of stream) stopping ??= handle.stop(10_000);
    },
    (error: unknown) => error instanceof APIError,
  );
  assert.deepEqual(await stopping, { forced: false });
  assert.deepEqual(await handle.exited, { code: 0, signal: null });
  assert.deepEqual(exits, [{ code: 0, signal: null, expected: true }]);
  assert.equal(existsSync(path), false);
  assert.equal(existsSync(handle.runDir), false);
  assert.equal(existsSync(join(dataDir, 'runtime.state.json')), false);
  assert.equal(await handle.healthCheck(500), false);
});

test('spawnRuntime({ bind: "tcp" }) serves 127.0.0.1 with a per-spawn key that the openai SDK uses as its API key', async (t) => {
  const tcp = await spawnRuntime(bundledProfile({ modelPath: model, threads: 1 }), {
    dataDir: join(dir.path, 'data-tcp'),
    bind: 'tcp',
    readyTimeoutMs: 60_000,
  });
  const tcpClient = runtimeClient(tcp.address);
  t.after(async () => {
    await tcpClient.close();
    await tcp.stop(2000);
  });
  assert.equal(tcp.address.kind, 'tcp');
  if (tcp.address.kind !== 'tcp') return;
  assert.equal(tcp.address.host, '127.0.0.1');
  assert.ok(tcp.address.port > 0);
  assert.equal(await tcp.healthCheck(2000), true);
  const chat = await tcpClient.openai.chat.completions.create({
    model: 'local',
    messages: ask,
    max_tokens: 4,
    temperature: 0,
  });
  assert.equal(chat.usage?.completion_tokens, 4);
  // Without the key the SDK gets a 401 (the refusals are covered in the security tier, P-k).
  const keyless = runtimeClient({ ...tcp.address, key: new Secret('not-the-key-not-the-key-not-the-key') });
  t.after(() => keyless.close());
  await assert.rejects(
    keyless.openai.models.list(),
    (error: unknown) => error instanceof APIError && error.status === 401,
  );
  assert.deepEqual(await tcp.stop(5000), { forced: false });
});
