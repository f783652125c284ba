// The demo (npm start) end to end: a fresh data dir, the embedded hub, sign-in, verified pull, the
// sandboxed runtime, a streamed completion through the front door; and --keep-running with a real
// OpenAI SDK client pointed at the printed endpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import OpenAI from 'openai';
import { runCli, startCli } from '../helpers/cli.js';

const STEPS = ['hub', 'keychain', 'signed-in', 'manifest', 'verified', 'available', 'completion', 'stopped'];

test('companion demo prints every step in order and exits 0', async () => {
  const result = await runCli(['demo', '--json', '--keychain', 'memory', '--threads', '1'], process.env, 90_000);
  assert.equal(result.status, 0, result.stderr);
  const events = result.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    events.filter((e) => e.event === 'step').map((e) => e.step),
    STEPS,
  );
  const tokens = events
    .filter((e) => e.event === 'token')
    .map((e) => String(e.text))
    .join('');
  assert.ok(tokens.length > 0, 'the completion streamed text');
  const completion = events.find((e) => e.step === 'completion');
  assert.equal(completion?.lane, 'companion');
  assert.match(result.stdout, /in-memory keychain/, 'the in-memory keychain announces itself');
  const available = events.find((e) => e.step === 'available');
  assert.match(String(available?.endpoint), /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
});

test('companion demo (human output) prints each step with timings', async () => {
  const result = await runCli(['demo', '--keychain', 'memory', '--threads', '1'], process.env, 90_000);
  assert.equal(result.status, 0, result.stderr);
  for (const phrase of [
    'started the reference hub',
    'signed in',
    'verified',
    'companion available',
    'streamed a completion',
    'stopped everything',
  ]) {
    assert.match(result.stdout, new RegExp(phrase), phrase);
  }
  assert.match(result.stdout, /\[\s+\d+ ms\]/);
});

test('companion demo --keep-running --json serves any OpenAI client until SIGTERM', async (t) => {
  const demo = startCli(['demo', '--keep-running', '--json', '--keychain', 'memory', '--threads', '1'], process.env);
  t.after(() => demo.stop());
  const line = await demo.waitJson((v) => v.event === 'available' && typeof v.token === 'string', 90_000);
  const endpoint = String(line.endpoint);
  const client = new OpenAI({ baseURL: endpoint, apiKey: String(line.token), maxRetries: 0, timeout: 30_000 });
  const models = await client.models.list();
  assert.ok(models.data.length >= 1);
  const chat = await client.chat.completions.create({
    model: models.data[0]!.id,
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(typeof chat.choices[0]?.message.content, 'string');
  const stream = await client.chat.completions.create({
    model: models.data[0]!.id,
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 8,
    stream: true,
  });
  let pieces = 0;
  for await (const chunk of stream) if (chunk.choices[0]?.delta.content) pieces++;
  assert.ok(pieces > 0);
  const wrong = new OpenAI({ baseURL: endpoint, apiKey: 'x'.repeat(43), maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (error: { status?: number }) => error.status === 401);
  assert.equal(await demo.stop(), 0);
  const port = Number(new URL(endpoint).port);
  const refused = await new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
  assert.ok(refused, 'the front door is closed after SIGTERM');
});
