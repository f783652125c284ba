// Issue 17, items 1-5: the workloads a hub moves to the user's machine, through the front door and the
// REAL runtime (node-llama-cpp on the generated tiny GGUF, threads 1), driven by the official openai SDK
// as a local client would: structured output, tool calls (forced by a grammar, so deterministic on a
// random-weight model), embeddings, the model check, refused unknown fields, penalties and logit_bias,
// and stop sequences with spaces. The same assertions run against the runtime on its Unix socket and
// inside the bubblewrap sandbox (gated on bwrap), so the file never only skips.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { readGgufFileInfo } from 'node-llama-cpp';
import { resolveSandbox } from '../../src/runtime/manager/sandbox-choice.js';
import { gate } from '../helpers/gate.js';
import { bwrapPresent } from '../helpers/sandbox-run.js';
import { startRuntimeDoor, type RuntimeDoor } from '../helpers/front-door-runtime.js';
import { tempDir, writeTinyModel } from '../helpers/runtime-env.js';

const ask = [{ role: 'user' as const, content: 'Hello there' }];

/** The tiny model's own facts, read from the GGUF file (no model load): its vocabulary and embedding size. */
async function tinyModelFacts(): Promise<{ pieces: string[]; embeddingLength: number }> {
  const dir = tempDir('companion-workloads-');
  try {
    const info = await readGgufFileInfo(writeTinyModel(dir.path));
    const metadata = info.metadata as unknown as {
      llama: { embedding_length: number };
      tokenizer: { ggml: { tokens: string[] } };
    };
    // Text of each piece: byte tokens <0xNN> as their (printable ASCII) character, control tokens as ''.
    const pieces = metadata.tokenizer.ggml.tokens.map((piece) => {
      const byte = /^<0x([0-9A-F]{2})>$/.exec(piece);
      if (byte !== null) {
        const code = Number.parseInt(byte[1]!, 16);
        return code >= 0x20 && code < 0x7f ? String.fromCharCode(code) : '';
      }
      return /^<.*>$/.test(piece) ? '' : piece.replaceAll('\u2581', ' ');
    });
    return { pieces, embeddingLength: metadata.llama.embedding_length };
  } finally {
    dir.cleanup();
  }
}

/**
 * The test's schema and a validator written for it (types, required keys, no others, lengths, enum).
 * No integer field: node-llama-cpp's number grammar allows an exponent (`7e999` is a JSON integer),
 * which the random tiny model likes and JSON.parse reads as Infinity (docs/runtime.md says so).
 */
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    role: { enum: ['admin', 'user', 3] },
    active: { type: 'boolean' },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
  },
  required: ['name', 'role', 'active', 'tags'],
  additionalProperties: false,
} as const;

function isPerson(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  return (
    Object.keys(v).sort().join(',') === 'active,name,role,tags' &&
    typeof v.name === 'string' &&
    v.name.length <= 12 &&
    (v.role === 'admin' || v.role === 'user' || v.role === 3) &&
    typeof v.active === 'boolean' &&
    Array.isArray(v.tags) &&
    v.tags.length <= 3 &&
    v.tags.every((tag) => typeof tag === 'string' && tag.length <= 6)
  );
}

const WEATHER_TOOL = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 16 } },
      required: ['city'],
      additionalProperties: false,
    },
  },
};
const TIME_TOOL = {
  type: 'function' as const,
  function: {
    name: 'get_time',
    parameters: { type: 'object', properties: { zone: { type: 'string', maxLength: 8 } }, required: ['zone'] },
  },
};

function apiError(error: unknown): { status: number | undefined; code: unknown; param: unknown; type: unknown } {
  assert.ok(error instanceof OpenAI.APIError, `an API error, got ${String(error)}`);
  return { status: error.status, code: error.code, param: error.param, type: error.type };
}

async function refusal(
  call: Promise<unknown>,
): Promise<{ status: number | undefined; code: unknown; param: unknown; type: unknown }> {
  try {
    await call;
  } catch (error) {
    return apiError(error);
  }
  assert.fail('the call was answered');
}

for (const mode of ['socket', 'sandboxed'] as const) {
  const options = mode === 'sandboxed' ? gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap') : {};
  describe(`runtime workloads through the front door (${mode})`, options, () => {
    let rd: RuntimeDoor;
    let facts: { pieces: string[]; embeddingLength: number };

    before(async () => {
      facts = await tinyModelFacts();
      const wrap = mode === 'sandboxed' ? (await resolveSandbox('required', () => undefined)).wrap : undefined;
      if (mode === 'sandboxed') assert.ok(wrap !== undefined, 'a full sandbox is available');
      rd = await startRuntimeDoor({ contextSize: 4096, ...(wrap === undefined ? {} : { wrap }) });
    });
    after(() => rd?.close());

    test('a json_schema response parses and validates against the schema, streamed or not', async () => {
      const body = {
        model: 'tiny',
        messages: ask,
        max_tokens: 300,
        temperature: 0,
        response_format: {
          type: 'json_schema' as const,
          json_schema: { name: 'person', schema: PERSON, strict: true },
        },
      };
      const reply = await rd.openai.chat.completions.create(body);
      assert.equal(reply.choices[0]?.finish_reason, 'stop');
      const parsed: unknown = JSON.parse(reply.choices[0]?.message.content ?? '');
      assert.ok(isPerson(parsed), `valid: ${JSON.stringify(parsed)}`);
      let streamed = '';
      for await (const chunk of await rd.openai.chat.completions.create({ ...body, stream: true }))
        streamed += chunk.choices[0]?.delta.content ?? '';
      assert.equal(streamed, reply.choices[0]?.message.content, 'temperature 0 streams the same JSON');
    });

    test('a json_object response is a JSON object', async () => {
      const reply = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 200,
        temperature: 0,
        response_format: { type: 'json_object' },
      });
      const parsed: unknown = JSON.parse(reply.choices[0]?.message.content ?? '');
      assert.equal(typeof parsed, 'object');
      assert.ok(parsed !== null && !Array.isArray(parsed));
    });

    test('a schema the grammar cannot express gets a 400 naming response_format and the keyword', async () => {
      const error = await refusal(
        rd.openai.chat.completions.create({
          model: 'tiny',
          messages: ask,
          max_tokens: 4,
          response_format: {
            type: 'json_schema',
            json_schema: {
              name: 'p',
              schema: { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9]+$' } } },
            },
          },
        }),
      );
      assert.deepEqual(error, {
        status: 400,
        code: 'unsupported_schema',
        param: 'response_format',
        type: 'invalid_request_error',
      });
    });

    test('a forced tool call is answered with a tool message and the model gives a final answer', async () => {
      const tools = [WEATHER_TOOL, TIME_TOOL];
      const first = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        tools,
        tool_choice: 'required',
        max_tokens: 200,
        temperature: 0,
      });
      const choice = first.choices[0]!;
      assert.equal(choice.finish_reason, 'tool_calls');
      const calls = choice.message.tool_calls ?? [];
      assert.equal(calls.length, 1);
      const call = calls[0]!;
      assert.equal(call.type, 'function');
      assert.match(call.id, /^call_[0-9a-f]{24}$/);
      if (call.type !== 'function') return;
      assert.ok(['get_weather', 'get_time'].includes(call.function.name));
      const args = JSON.parse(call.function.arguments) as Record<string, unknown>;
      assert.equal(typeof (call.function.name === 'get_weather' ? args.city : args.zone), 'string');

      const named = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        tools,
        tool_choice: { type: 'function', function: { name: 'get_time' } },
        max_tokens: 200,
        temperature: 0,
      });
      const namedCall = named.choices[0]?.message.tool_calls?.[0];
      assert.ok(namedCall?.type === 'function' && namedCall.function.name === 'get_time');

      const final = await rd.openai.chat.completions.create({
        model: 'tiny',
        tools,
        tool_choice: 'none',
        max_tokens: 8,
        temperature: 0,
        messages: [...ask, choice.message, { role: 'tool', tool_call_id: call.id, content: '{"celsius": 21}' }],
      });
      assert.equal(final.choices[0]?.finish_reason, 'length');
      assert.ok((final.choices[0]?.message.content ?? '').length > 0, 'a final answer');
      assert.equal(final.choices[0]?.message.tool_calls, undefined);
      // A tool message that answers no call is refused.
      const orphan = await refusal(
        rd.openai.chat.completions.create({
          model: 'tiny',
          max_tokens: 2,
          messages: [...ask, { role: 'tool', tool_call_id: 'call_x', content: '1' }],
        }),
      );
      assert.equal(orphan.param, 'messages[1].tool_call_id');
    });

    test('a streamed tool call arrives as deltas with index, id and name first, then arguments, and the SDK assembles it', async () => {
      const body = {
        model: 'tiny',
        messages: ask,
        tools: [WEATHER_TOOL],
        tool_choice: 'required' as const,
        max_tokens: 200,
        temperature: 0,
      };
      const deltas: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
      let finish: string | null = null;
      for await (const chunk of await rd.openai.chat.completions.create({ ...body, stream: true })) {
        for (const delta of chunk.choices[0]?.delta.tool_calls ?? []) deltas.push(delta);
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, 'tool_calls');
      assert.ok(deltas.length >= 2);
      assert.equal(deltas[0]?.index, 0);
      assert.match(deltas[0]?.id ?? '', /^call_/);
      assert.equal(deltas[0]?.function?.name, 'get_weather');
      assert.ok(deltas.slice(1).every((d) => d.index === 0 && d.id === undefined && d.function?.name === undefined));
      const argumentsText = deltas.map((d) => d.function?.arguments ?? '').join('');
      assert.equal(typeof (JSON.parse(argumentsText) as { city: unknown }).city, 'string');
      // The SDK's streaming helper accumulates the same deltas into the final message.
      const runner = rd.openai.chat.completions.stream(body);
      let helperArguments = '';
      runner.on('tool_calls.function.arguments.delta', (event) => {
        helperArguments += event.arguments_delta;
      });
      const assembled = await runner.finalChatCompletion();
      const call = assembled.choices[0]?.message.tool_calls?.[0];
      assert.ok(call?.type === 'function');
      assert.equal(call.function.name, 'get_weather');
      assert.equal(call.function.arguments, argumentsText, 'temperature 0: the same call');
      assert.equal(helperArguments, argumentsText);
    });

    test("embeddings have the model's dimension, float and base64 agree, with usage", async () => {
      const float = await rd.openai.embeddings.create({
        model: 'tiny',
        input: ['hello world', 'the model'],
        encoding_format: 'float',
      });
      assert.equal(float.data.length, 2);
      assert.deepEqual(
        float.data.map((d) => d.index),
        [0, 1],
      );
      for (const item of float.data) assert.equal(item.embedding.length, facts.embeddingLength);
      assert.ok(float.usage.prompt_tokens > 0);
      assert.equal(float.usage.total_tokens, float.usage.prompt_tokens);
      assert.notDeepEqual(float.data[0]?.embedding, float.data[1]?.embedding);
      // Without encoding_format the SDK asks for base64 and decodes it to floats.
      const base64 = await rd.openai.embeddings.create({ model: 'tiny', input: ['hello world', 'the model'] });
      for (const [i, item] of base64.data.entries()) {
        assert.equal(item.embedding.length, facts.embeddingLength);
        item.embedding.forEach((value, j) => assert.ok(Math.abs(value - float.data[i]!.embedding[j]!) < 1e-6));
      }
      const single = await rd.openai.embeddings.create({
        model: 'tiny',
        input: 'hello world',
        encoding_format: 'float',
      });
      assert.deepEqual(single.data[0]?.embedding, float.data[0]?.embedding);
      assert.equal(rd.requests.at(-1)?.path, '/v1/embeddings');
    });

    test("an unknown model gets 404 model_not_found in OpenAI's shape; GET /v1/models/{id} serves only the loaded id", async () => {
      const chat = await refusal(rd.openai.chat.completions.create({ model: 'gpt-4o', messages: ask, max_tokens: 2 }));
      assert.deepEqual(chat, { status: 404, code: 'model_not_found', param: 'model', type: 'invalid_request_error' });
      const embed = await refusal(rd.openai.embeddings.create({ model: 'other', input: 'x' }));
      assert.equal(embed.code, 'model_not_found');
      const model = await rd.openai.models.retrieve('tiny');
      assert.equal(model.id, 'tiny');
      assert.equal(model.object, 'model');
      const unknown = await refusal(rd.openai.models.retrieve('other-model'));
      assert.deepEqual(unknown, {
        status: 404,
        code: 'model_not_found',
        param: 'model',
        type: 'invalid_request_error',
      });
      assert.deepEqual(rd.requests.at(-1) && { path: rd.requests.at(-1)!.path, status: rd.requests.at(-1)!.status }, {
        path: '/v1/models/other-model',
        status: 404,
      });
    });

    test('an unsupported top-level field gets a 400 naming it', async () => {
      const error = await refusal(
        rd.openai.chat.completions.create({
          model: 'tiny',
          messages: ask,
          max_tokens: 2,
          grammar: 'root ::= "x"',
        } as never),
      );
      assert.deepEqual(error, {
        status: 400,
        code: 'unknown_parameter',
        param: 'grammar',
        type: 'invalid_request_error',
      });
      const completion = await refusal(
        rd.openai.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 2, mirostat: 2 } as never),
      );
      assert.equal(completion.param, 'mirostat');
    });

    test('logit_bias +100 forces a token, -100 on the first greedy token changes the answer, and penalties change it', async () => {
      const base =
        (await rd.openai.chat.completions.create({ model: 'tiny', messages: ask, max_tokens: 8, temperature: 0 }))
          .choices[0]?.message.content ?? '';
      assert.ok(base.length > 0);
      const forcedId = facts.pieces.findIndex((piece) => /^ [a-z]{4,}$/.test(piece));
      assert.ok(forcedId > 0);
      const forced = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 3,
        temperature: 0,
        logit_bias: { [String(forcedId)]: 100 },
      });
      // Every generated token is the forced one (a leading space of the answer may be trimmed).
      assert.equal(forced.choices[0]?.message.content?.trimStart(), facts.pieces[forcedId]!.repeat(3).trimStart());
      // The greedy answer's first token: the longest vocabulary piece it starts with.
      let firstId = -1;
      facts.pieces.forEach((piece, id) => {
        if (
          piece.length > 0 &&
          base.startsWith(piece) &&
          (firstId === -1 || piece.length > facts.pieces[firstId]!.length)
        )
          firstId = id;
      });
      assert.ok(firstId >= 0, 'the first piece is in the vocabulary');
      const banned = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 8,
        temperature: 0,
        logit_bias: { [String(firstId)]: -100 },
      });
      assert.notEqual(banned.choices[0]?.message.content, base);
      const penalised = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 8,
        temperature: 0,
        frequency_penalty: 2,
        presence_penalty: 2,
      });
      assert.notEqual(penalised.choices[0]?.message.content, base);
      // top_k and min_p are accepted and honoured (greedy stays greedy).
      const sampled = (await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 8,
        temperature: 0,
        top_k: 5,
        min_p: 0.05,
      } as never)) as OpenAI.Chat.Completions.ChatCompletion;
      assert.equal(sampled.choices[0]?.message.content, base);
      const outOfRange = await refusal(
        rd.openai.chat.completions.create({
          model: 'tiny',
          messages: ask,
          max_tokens: 2,
          logit_bias: { [String(facts.pieces.length)]: 1 },
        }),
      );
      assert.equal(outOfRange.param, 'logit_bias');
    });

    test('a stop sequence with a space ends generation and is excluded, in chat and completions, streamed or not', async () => {
      const base =
        (await rd.openai.chat.completions.create({ model: 'tiny', messages: ask, max_tokens: 24, temperature: 0 }))
          .choices[0]?.message.content ?? '';
      const space = base.indexOf(' ', 2);
      assert.ok(space > 0, `the greedy answer has an inner space: ${JSON.stringify(base)}`);
      const stop = base.slice(space - 1, space + 2);
      const expected = base.slice(0, base.indexOf(stop));
      const chat = await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 24,
        temperature: 0,
        stop: [stop, 'never-seen'],
      });
      assert.equal(chat.choices[0]?.message.content, expected);
      assert.equal(chat.choices[0]?.finish_reason, 'stop');
      let streamed = '';
      for await (const chunk of await rd.openai.chat.completions.create({
        model: 'tiny',
        messages: ask,
        max_tokens: 24,
        temperature: 0,
        stop: [stop],
        stream: true,
      })) {
        streamed += chunk.choices[0]?.delta.content ?? '';
      }
      assert.equal(streamed, expected);

      const plain =
        (await rd.openai.completions.create({ model: 'tiny', prompt: 'Once upon', max_tokens: 24, temperature: 0 }))
          .choices[0]?.text ?? '';
      const at = plain.indexOf(' ', 2);
      assert.ok(at > 0, `the greedy completion has an inner space: ${JSON.stringify(plain)}`);
      const stopText = plain.slice(at - 1, at + 2);
      const cut = plain.slice(0, plain.indexOf(stopText));
      const completion = await rd.openai.completions.create({
        model: 'tiny',
        prompt: 'Once upon',
        max_tokens: 24,
        temperature: 0,
        stop: stopText,
      });
      assert.equal(completion.choices[0]?.text, cut);
      assert.equal(completion.choices[0]?.finish_reason, 'stop');
      let streamedCompletion = '';
      for await (const chunk of await rd.openai.completions.create({
        model: 'tiny',
        prompt: 'Once upon',
        max_tokens: 24,
        temperature: 0,
        stop: [stopText],
        stream: true,
      })) {
        streamedCompletion += chunk.choices[0]?.text ?? '';
      }
      assert.equal(streamedCompletion, cut);
    });
  });
}
