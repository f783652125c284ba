import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLlmClient, type LlmClientOptions } from '../../src/client/llm.js';

interface Call {
  url: string;
  auth: string | null;
  body: Record<string, unknown>;
}

function fakeFetch(calls: Call[], reply: (url: string) => Response): typeof globalThis.fetch {
  return (async (input: URL | string, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    calls.push({
      url: String(input),
      auth: headers.get('authorization'),
      body: JSON.parse(String(init?.body ?? '{}')) as Record<string, unknown>,
    });
    return reply(String(input));
  }) as typeof globalThis.fetch;
}

const LOCAL = { url: 'http://127.0.0.1:1234/v1', token: 'local-token-0123456789abcdef' };
const CLOUD = { url: 'https://cloud.example/v1', token: 'cloud-key', model: 'cloud-model' };
const chat = (content: string) =>
  new Response(
    JSON.stringify({
      choices: [{ message: { content }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 3, completion_tokens: 2 },
    }),
    { status: 200 },
  );

function client(calls: Call[], options: Partial<LlmClientOptions> = {}) {
  return createLlmClient({
    local: () => LOCAL,
    companionAvailable: () => true,
    cloud: CLOUD,
    fetch: fakeFetch(calls, (url) => chat(url.startsWith('https://cloud') ? 'from cloud' : 'from companion')),
    ...options,
  });
}

test('complete() sends a private call to the companion with the loopback token when it is available', async () => {
  const calls: Call[] = [];
  const result = await client(calls).complete({ tier: 'private', messages: [{ role: 'user', content: 'hi' }] });
  assert.deepEqual([result.lane, result.text], ['companion', 'from companion']);
  assert.equal(calls[0]?.url, 'http://127.0.0.1:1234/v1/chat/completions');
  assert.equal(calls[0]?.auth, `Bearer ${LOCAL.token}`);
  assert.deepEqual(result.usage, { promptTokens: 3, completionTokens: 2 });
});

test('complete() never sends a local-only call to the cloud: refused when the companion is unavailable', async () => {
  const calls: Call[] = [];
  await assert.rejects(
    client(calls, { companionAvailable: () => false }).complete({ tier: 'local-only', messages: [] }),
    { code: 'ERR_LANE_LOCAL_ONLY_UNAVAILABLE' },
  );
  assert.equal(calls.length, 0);
});

test('complete() treats an availability check that throws as unavailable (doubt)', async () => {
  const calls: Call[] = [];
  await assert.rejects(
    client(calls, {
      companionAvailable: () => {
        throw new Error('boom');
      },
    }).complete({ tier: 'local-only', messages: [] }),
    { code: 'ERR_LANE_LOCAL_ONLY_UNAVAILABLE' },
  );
  const result = await client(calls, {
    companionAvailable: () => {
      throw new Error('boom');
    },
  }).complete({ tier: 'public', messages: [] });
  assert.equal(result.lane, 'cloud');
  assert.equal(calls[0]?.auth, 'Bearer cloud-key');
});

test('complete() sends a public call to the cloud when the companion is unavailable', async () => {
  const calls: Call[] = [];
  const result = await client(calls, { companionAvailable: () => false }).complete({ tier: 'public', messages: [] });
  assert.deepEqual([result.lane, result.text], ['cloud', 'from cloud']);
  assert.equal(calls[0]?.body.model, 'cloud-model');
});

test('complete() refuses the cloud lane when none is configured', async () => {
  const calls: Call[] = [];
  const c = createLlmClient({
    local: () => null,
    companionAvailable: () => false,
    fetch: fakeFetch(calls, () => chat('x')),
  });
  await assert.rejects(c.complete({ tier: 'public', messages: [] }), { code: 'ERR_LANE_CLOUD_NOT_ALLOWED' });
  assert.equal(calls.length, 0);
});

test('complete() parses a streamed answer and ends only on [DONE]', async () => {
  const sse = [
    '{"choices":[{"delta":{"content":"he"}}]}',
    '{"choices":[{"delta":{"content":"llo"},"finish_reason":"stop"}]}',
    '{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
    '[DONE]',
  ]
    .map((d) => `data: ${d}\n\n`)
    .join('');
  const pieces: string[] = [];
  const c = client([], { fetch: fakeFetch([], () => new Response(sse, { status: 200 })) });
  const result = await c.complete({ tier: 'private', stream: true, messages: [], onToken: (t) => pieces.push(t) });
  assert.deepEqual(pieces, ['he', 'llo']);
  assert.deepEqual([result.text, result.finishReason, result.usage?.completionTokens], ['hello', 'stop', 2]);
  const cut = client([], {
    fetch: fakeFetch([], () => new Response('data: {"choices":[{"delta":{"content":"he"}}]}\n\n', { status: 200 })),
  });
  await assert.rejects(cut.complete({ tier: 'private', stream: true, messages: [] }), {
    code: 'ERR_UPSTREAM_UNAVAILABLE',
  });
});

test('complete() maps 429 and 503 from the endpoint to admission codes', async () => {
  for (const [status, code] of [
    [429, 'ERR_ADMISSION_QUEUE_FULL'],
    [503, 'ERR_ADMISSION_NOT_READY'],
    [500, 'ERR_UPSTREAM_UNAVAILABLE'],
  ] as const) {
    const c = client([], { fetch: fakeFetch([], () => new Response('{}', { status })) });
    await assert.rejects(c.complete({ tier: 'private', messages: [] }), { code });
  }
});
