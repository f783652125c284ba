// Issue 17 items 6-7 on the REAL runtime (node-llama-cpp on the generated tiny GGUF, threads 1), through
// the front door with the official openai SDK:
// - parallel 4: four concurrent requests finish sooner than the same four in a row, and the runtime had
//   four sequences generating at once (its own count on /health), also inside the bubblewrap sandbox;
// - the front door's admission follows the runtime's sequences: with parallel 1 one request runs, the
//   bounded queue fills, and the next gets 429;
// - `contextSize 256` refuses a ~300-token prompt with context_length_exceeded, the default (the model's
//   trained context, 2048) answers it; the chosen shape is reported on ready and /health.
// No assertion on an absolute time: only two wall times measured in the same test are compared.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import OpenAI from 'openai';
import { createTokenVerifier } from '../../src/core/guard.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime } from '../../src/runtime/spawn.js';
import { startRuntimeGroup } from '../../src/runtime/manager/group.js';
import { resolveSandbox } from '../../src/runtime/manager/sandbox-choice.js';
import { gate } from '../helpers/gate.js';
import { bwrapPresent } from '../helpers/sandbox-run.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { startRuntimeDoor } from '../helpers/front-door-runtime.js';
import { runtimeClient } from '../helpers/runtime-client.js';
import { tempDir, writeTinyModel } from '../helpers/runtime-env.js';

const ask = [{ role: 'user' as const, content: 'Hello there' }];
/** A prompt of a few hundred tokens for the tiny model's tokenizer (checked below through `usage`). */
const LONG_PROMPT = Array.from({ length: 75 }, (_, i) => `word${i}`).join(' ');

interface Health {
  status: string;
  parallel: number;
  contextSize: number;
  sequences: { active: number; peak: number };
}

for (const mode of ['unsandboxed', 'sandboxed'] as const) {
  const gated = mode === 'sandboxed' ? gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap') : {};
  test(
    `parallel 4 (${mode}): four concurrent requests finish sooner than four in a row, with four sequences generating at once`,
    { ...gated, timeout: 300_000 },
    (t) => batching(t, mode),
  );
}

async function batching(t: TestContext, mode: 'unsandboxed' | 'sandboxed'): Promise<void> {
  const wrap = mode === 'sandboxed' ? (await resolveSandbox('required', () => undefined)).wrap : undefined;
  const run = await startRuntimeDoor({ parallel: 4, contextSize: 1024, ...(wrap === undefined ? {} : { wrap }) });
  t.after(() => run.close());
  assert.equal(run.handle.shape?.parallel, 4, 'the runtime reported 4 sequences when ready');
  const health = runtimeClient(run.handle.address);
  t.after(() => health.close());
  // Greedy, fixed length: every request does the same work (completion_tokens is checked).
  const one = async (): Promise<number> => {
    const completion = await run.openai.chat.completions.create({
      model: 'tiny',
      messages: ask,
      max_tokens: 200,
      temperature: 0,
    });
    return completion.usage?.completion_tokens ?? 0;
  };
  await one(); // warm-up: first-use costs out of the timing
  // Two rounds each way, alternated, summed: a loaded machine's noise hits both sides alike.
  let serialMs = 0;
  let concurrentMs = 0;
  const serialTokens: number[] = [];
  const concurrentTokens: number[] = [];
  for (let round = 0; round < 2; round++) {
    const serialStart = performance.now();
    for (let i = 0; i < 4; i++) serialTokens.push(await one());
    serialMs += performance.now() - serialStart;
    const concurrentStart = performance.now();
    concurrentTokens.push(...(await Promise.all([one(), one(), one(), one()])));
    concurrentMs += performance.now() - concurrentStart;
  }
  assert.deepEqual(concurrentTokens, serialTokens, 'the same work both ways');
  assert.ok(
    serialTokens.every((n) => n === 200),
    'greedy, fixed length',
  );
  const body = JSON.parse((await health.raw('GET', '/health')).text) as Health;
  assert.equal(body.parallel, 4);
  assert.equal(body.sequences.peak, 4, 'llama.cpp had all four sequences to batch at once');
  assert.equal(body.sequences.active, 0);
  t.diagnostic(`4 in a row: ${Math.round(serialMs)} ms; 4 at once: ${Math.round(concurrentMs)} ms`);
  assert.ok(
    concurrentMs < serialMs,
    `4 at once (${Math.round(concurrentMs)} ms) finish sooner than 4 in a row (${Math.round(serialMs)} ms)`,
  );
}

test(
  'the front door admits as many requests as the runtime has sequences: parallel 1 runs one, queues up to maxQueue, then 429',
  { timeout: 180_000 },
  async (t) => {
    const dir = tempDir('companion-parallel-');
    t.after(dir.cleanup);
    const dataDir = join(dir.path, 'data');
    installTinyModel(dataDir);
    const token = randomBytes(32).toString('base64url');
    const companion = await startRuntimeGroup({
      dataDir,
      verifyToken: createTokenVerifier(token),
      threads: 1,
      parallel: 1,
      contextSize: 32768,
      maxQueue: 3,
      sandboxMode: 'none',
    });
    t.after(() => companion.close());
    assert.equal(await companion.supervisor.waitAvailable(60_000), true);
    assert.deepEqual(companion.supervisor.snapshot().shape, { parallel: 1, contextSize: 32768 });
    const state = await companion.publishState();
    assert.equal(state.parallel, 1);
    assert.equal(state.contextSize, 32768);

    const openai = new OpenAI({ baseURL: companion.endpoint, apiKey: token, maxRetries: 0, timeout: 120_000 });
    const holder = new AbortController();
    // One long generation holds the only sequence (and so the only admission slot).
    const stream = await openai.chat.completions.create(
      { model: 'tiny', messages: ask, max_tokens: 30_000, temperature: 0, stream: true },
      { signal: holder.signal },
    );
    const iterator = stream[Symbol.asyncIterator]();
    assert.equal((await iterator.next()).done, false);
    // Four more at once: three wait in the front door's queue (maxQueue 3), the fourth (the fifth request)
    // is refused at once. Had the door admitted 4 like before, none would be refused.
    const post = (): Promise<Response> =>
      fetch(`${companion.endpoint}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'tiny', messages: ask, max_tokens: 1, temperature: 0 }),
        signal: AbortSignal.timeout(120_000),
      });
    const more = [post(), post(), post(), post()];
    // While the first request still runs, the only answer that can come is the refusal.
    const first = await Promise.race(more);
    assert.equal(first.status, 429, await first.clone().text());
    assert.ok(Number(first.headers.get('retry-after')) >= 1);
    holder.abort();
    await iterator.return?.();
    const statuses = (await Promise.all(more)).map((response) => response.status).sort();
    assert.deepEqual(statuses, [200, 200, 200, 429], 'the queued three ran once the sequence was free');
  },
);

test(
  'contextSize 256 refuses a ~300-token prompt with context_length_exceeded; the default (trained context) answers it',
  { timeout: 180_000 },
  async (t) => {
    const dir = tempDir('companion-context-');
    t.after(dir.cleanup);
    const modelPath = writeTinyModel(dir.path);
    // The runtime's own defaults: no contextSize, no parallel, no memory cap.
    const handle = await spawnRuntime(bundledProfile({ modelPath, threads: 1, modelId: 'tiny' }), {
      dataDir: join(dir.path, 'data'),
      readyTimeoutMs: 60_000,
    });
    t.after(() => handle.stop(2000));
    const client = runtimeClient(handle.address);
    t.after(() => client.close());
    assert.deepEqual(
      handle.shape,
      { parallel: 4, contextSize: 2048 },
      "default: 4 sequences of the tiny model's trained 2048 tokens",
    );
    const health = JSON.parse((await client.raw('GET', '/health')).text) as Health;
    assert.deepEqual([health.parallel, health.contextSize], [4, 2048]);
    const answered = await client.openai.chat.completions.create({
      model: 'tiny',
      messages: [{ role: 'user', content: LONG_PROMPT }],
      max_tokens: 4,
      temperature: 0,
    });
    const promptTokens = answered.usage?.prompt_tokens ?? 0;
    assert.ok(promptTokens > 256 && promptTokens < 2048, `the prompt has ${promptTokens} tokens`);

    const small = await startRuntimeDoor({ contextSize: 256 });
    t.after(() => small.close());
    assert.equal(small.handle.shape?.contextSize, 256);
    await assert.rejects(
      small.openai.chat.completions.create({
        model: 'tiny',
        messages: [{ role: 'user', content: LONG_PROMPT }],
        max_tokens: 4,
        temperature: 0,
      }),
      (error: unknown) =>
        error instanceof OpenAI.APIError && error.status === 400 && error.code === 'context_length_exceeded',
    );
    // A prompt that fits is still answered.
    const short = await small.openai.chat.completions.create({
      model: 'tiny',
      messages: ask,
      max_tokens: 2,
      temperature: 0,
    });
    assert.ok((short.usage?.completion_tokens ?? 0) > 0);
  },
);
