// Issue 17, "done when": the official openai SDK, pointed at what `companion endpoint --json` hands out for a
// real `companion up` (bubblewrap sandbox, the real Secret Service holding the loopback token), gets a
// json_schema answer that parses and validates, a tool call it answers with a `tool` message and then a
// final answer, embeddings of the model's dimension, a 404 for an unknown model, a 400 naming an
// unsupported field, a stop sequence with a space honoured, and 4 concurrent requests done sooner than
// the same 4 in a row (two wall times measured in this test and compared; no absolute timing).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { readGgufFileInfo } from 'node-llama-cpp';
import { installTinyModel, TINY_MODEL_ID } from '../helpers/assurance-runtime.js';
import { runCli, startCli, type LongRunning } from '../helpers/cli.js';
import { gate } from '../helpers/gate.js';
import { bwrapPresent } from '../helpers/sandbox-run.js';
import { secretServiceAvailable, startSecretService, type SecretServiceHandle } from '../helpers/secret-service.js';

const HUB = 'https://127.0.0.1:9';
const ask = [{ role: 'user' as const, content: 'Hello there' }];
const options = {
  ...gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap'),
  ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
  timeout: 300_000,
};

const BOOK = {
  type: 'object',
  properties: {
    title: { type: 'string', maxLength: 16 },
    kind: { enum: ['novel', 'poem'] },
    read: { type: 'boolean' },
  },
  required: ['title', 'kind', 'read'],
  additionalProperties: false,
} as const;

function isBook(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  return (
    Object.keys(v).sort().join(',') === 'kind,read,title' &&
    typeof v.title === 'string' &&
    v.title.length <= 16 &&
    (v.kind === 'novel' || v.kind === 'poem') &&
    typeof v.read === 'boolean'
  );
}

async function refusal(call: Promise<unknown>): Promise<{ status: number | undefined; code: unknown; param: unknown }> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof OpenAI.APIError, String(error));
    return { status: error.status, code: error.code, param: error.param };
  }
  assert.fail('the call was answered');
}

describe('the openai SDK through companion endpoint on a real, sandboxed companion up', options, () => {
  let root = '';
  let secrets: SecretServiceHandle | null = null;
  let up: LongRunning | null = null;
  let openai: OpenAI;
  let embeddingLength = 0;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'companion-workloads-cli-'));
    secrets = await startSecretService();
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...secrets.env };
    const dataDir = join(root, 'data');
    const { modelPath } = installTinyModel(dataDir);
    embeddingLength = (
      (await readGgufFileInfo(modelPath)).metadata as unknown as { llama: { embedding_length: number } }
    ).llama.embedding_length;
    // Sandboxed (no --allow-unsandboxed), 4 sequences of 4096 tokens.
    up = startCli(
      ['up', '--json', '--threads', '1', '--parallel', '4', '--context', '4096', '--hub', HUB, '--data-dir', dataDir],
      env,
    );
    const available = await up.waitJson((v) => v.event === 'available', 120_000);
    const status = await runCli(['status', '--json', '--hub', HUB, '--data-dir', dataDir], env, 30_000);
    assert.equal(
      (JSON.parse(status.stdout.split('\n')[0]!) as { sandbox: unknown }).sandbox,
      'bubblewrap',
      'the runtime runs in the bubblewrap sandbox',
    );
    const handed = await runCli(['endpoint', '--json', '--hub', HUB, '--data-dir', dataDir], env, 30_000);
    assert.equal(handed.status, 0, handed.stderr);
    const { url, token } = JSON.parse(handed.stdout) as { url: string; token: string };
    assert.equal(url, available.endpoint);
    openai = new OpenAI({ baseURL: url, apiKey: token, maxRetries: 0, timeout: 120_000 });
  });

  after(async () => {
    await up?.stop();
    await secrets?.stop();
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  test('a json_schema response parses and validates against the schema', async () => {
    const reply = await openai.chat.completions.create({
      model: TINY_MODEL_ID,
      messages: ask,
      max_tokens: 200,
      temperature: 0,
      response_format: { type: 'json_schema', json_schema: { name: 'book', schema: BOOK, strict: true } },
    });
    const parsed: unknown = JSON.parse(reply.choices[0]?.message.content ?? '');
    assert.ok(isBook(parsed), JSON.stringify(parsed));
  });

  test('a tool call, answered with a tool message, then a final answer', async () => {
    const tools = [
      {
        type: 'function' as const,
        function: {
          name: 'get_weather',
          parameters: {
            type: 'object',
            properties: { city: { type: 'string', maxLength: 12 } },
            required: ['city'],
            additionalProperties: false,
          },
        },
      },
    ];
    const first = await openai.chat.completions.create({
      model: TINY_MODEL_ID,
      messages: ask,
      tools,
      tool_choice: 'required',
      max_tokens: 200,
      temperature: 0,
    });
    const choice = first.choices[0]!;
    assert.equal(choice.finish_reason, 'tool_calls');
    const call = choice.message.tool_calls?.[0];
    assert.ok(call?.type === 'function' && call.function.name === 'get_weather');
    assert.equal(typeof (JSON.parse(call.function.arguments) as { city: unknown }).city, 'string');
    const final = await openai.chat.completions.create({
      model: TINY_MODEL_ID,
      tools,
      tool_choice: 'none',
      max_tokens: 8,
      temperature: 0,
      messages: [...ask, choice.message, { role: 'tool', tool_call_id: call.id, content: '{"celsius": 21}' }],
    });
    assert.ok((final.choices[0]?.message.content ?? '').length > 0, 'a final answer');
    assert.equal(final.choices[0]?.message.tool_calls, undefined);
  });

  test("embeddings have the model's dimension", async () => {
    const result = await openai.embeddings.create({ model: TINY_MODEL_ID, input: ['hello world', 'the model'] });
    assert.equal(result.data.length, 2);
    for (const item of result.data) assert.equal(item.embedding.length, embeddingLength);
  });

  test('an unknown model is a 404 and an unsupported field a 400 naming it', async () => {
    assert.deepEqual(
      await refusal(openai.chat.completions.create({ model: 'no-such-model', messages: ask, max_tokens: 2 })),
      { status: 404, code: 'model_not_found', param: 'model' },
    );
    const unknownField = await refusal(
      openai.chat.completions.create({
        model: TINY_MODEL_ID,
        messages: ask,
        max_tokens: 2,
        modalities: ['text'],
      } as OpenAI.ChatCompletionCreateParamsNonStreaming),
    );
    assert.equal(unknownField.status, 400);
    assert.equal(unknownField.param, 'modalities');
  });

  test('a stop sequence with a space ends the answer, without the stop text', async () => {
    const base =
      (await openai.chat.completions.create({ model: TINY_MODEL_ID, messages: ask, max_tokens: 24, temperature: 0 }))
        .choices[0]?.message.content ?? '';
    const space = base.indexOf(' ', 2);
    assert.ok(space > 0, `the greedy answer has an inner space: ${JSON.stringify(base)}`);
    const stop = base.slice(space - 1, space + 2);
    const stopped = await openai.chat.completions.create({
      model: TINY_MODEL_ID,
      messages: ask,
      max_tokens: 24,
      temperature: 0,
      stop: [stop],
    });
    assert.equal(stopped.choices[0]?.message.content, base.slice(0, base.indexOf(stop)));
    assert.equal(stopped.choices[0]?.finish_reason, 'stop');
  });

  test('4 concurrent requests complete sooner than the same 4 in a row', async () => {
    const one = (i: number, round: number): Promise<unknown> =>
      openai.chat.completions.create({
        model: TINY_MODEL_ID,
        messages: [{ role: 'user', content: `Story ${round}.${i}` }],
        max_tokens: 200,
        temperature: 0,
      });
    let serial = 0;
    let concurrent = 0;
    // Two alternating rounds, summed: a load that drifts weighs on both sides alike.
    for (const round of [0, 1]) {
      let t0 = performance.now();
      for (let i = 0; i < 4; i++) await one(i, round);
      serial += performance.now() - t0;
      t0 = performance.now();
      await Promise.all([0, 1, 2, 3].map((i) => one(i, round + 10)));
      concurrent += performance.now() - t0;
    }
    assert.ok(concurrent < serial, `4 at once took ${Math.round(concurrent)} ms, 4 in a row ${Math.round(serial)} ms`);
  });
});
