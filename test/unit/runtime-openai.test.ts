// The bundled runtime's OpenAI wire format: request validation and response shapes (no I/O).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApiError,
  base64Float32,
  chatChunkBody,
  chatCompletionBody,
  completionBody,
  embeddingsBody,
  modelBody,
  modelNotFound,
  modelsBody,
  parseChatRequest,
  parseCompletionRequest,
  parseEmbeddingRequest,
  sseData,
  SSE_DONE,
  usageOf,
} from '../../src/runtime-server/openai.js';

const user = [{ role: 'user', content: 'hi' }];

test('parseChatRequest() maps roles, text parts and sampling options when the body is valid', () => {
  const request = parseChatRequest({
    model: 'anything',
    messages: [
      { role: 'developer', content: 'be brief' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'a' },
          { type: 'text', text: 'b' },
        ],
      },
      { role: 'assistant', content: null },
    ],
    max_tokens: 12,
    temperature: 0,
    top_p: 0.5,
    seed: -1,
    stop: 'END',
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.deepEqual(request.messages, [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: 'ab' },
    { role: 'assistant', content: '' },
  ]);
  assert.deepEqual(request.sampling, {
    maxTokens: 12,
    temperature: 0,
    topP: 0.5,
    topK: undefined,
    minP: undefined,
    seed: 4294967295,
    stop: ['END'],
    frequencyPenalty: 0,
    presencePenalty: 0,
    logitBias: new Map(),
  });
  assert.equal(request.model, 'anything');
  assert.deepEqual(request.responseFormat, { type: 'text' });
  assert.equal(request.toolChoice, 'none');
  assert.equal(request.stream, true);
  assert.equal(request.includeUsage, true);
});

test('parseChatRequest() uses OpenAI defaults when options are absent or null', () => {
  const request = parseChatRequest({ messages: user, max_tokens: null, stop: null, top_p: 1 });
  assert.deepEqual(request.sampling, {
    maxTokens: undefined,
    temperature: 1,
    topP: undefined,
    topK: undefined,
    minP: undefined,
    seed: undefined,
    stop: [],
    frequencyPenalty: 0,
    presencePenalty: 0,
    logitBias: new Map(),
  });
  assert.equal(request.model, undefined);
  assert.equal(request.stream, false);
  assert.equal(request.includeUsage, false);
  assert.equal(parseChatRequest({ messages: user, max_completion_tokens: 3 }).sampling.maxTokens, 3);
});

const badChat: [string, unknown, string][] = [
  ['a non-object body', [], 'body'],
  ['no messages', {}, 'messages'],
  ['empty messages', { messages: [] }, 'messages'],
  [
    'a tool message answering no call',
    { messages: [{ role: 'tool', content: 'x', tool_call_id: 'c1' }] },
    'messages[0].tool_call_id',
  ],
  ['a function role', { messages: [{ role: 'function', content: 'x' }] }, 'messages[0].role'],
  [
    'a tool call left unanswered',
    {
      messages: [
        ...user,
        { role: 'assistant', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      ],
    },
    'messages',
  ],
  [
    'tool call arguments that are not JSON',
    {
      messages: [
        ...user,
        { role: 'assistant', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{' } }] },
      ],
    },
    'messages[1].tool_calls',
  ],
  [
    'an image part',
    { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] },
    'messages[0].content',
  ],
  ['numeric content', { messages: [{ role: 'user', content: 5 }] }, 'messages[0].content'],
  ['n = 2', { messages: user, n: 2 }, 'n'],
  ['temperature 3', { messages: user, temperature: 3 }, 'temperature'],
  ['top_p as a string', { messages: user, top_p: '0.5' }, 'top_p'],
  ['max_tokens 0', { messages: user, max_tokens: 0 }, 'max_tokens'],
  ['fractional max_tokens', { messages: user, max_tokens: 1.5 }, 'max_tokens'],
  ['five stop strings', { messages: user, stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
  ['an empty stop string', { messages: user, stop: [''] }, 'stop'],
  ['a tool of another type', { messages: user, tools: [{ type: 'code_interpreter' }] }, 'tools[0]'],
  [
    'a tool with a bad name',
    { messages: user, tools: [{ type: 'function', function: { name: 'a b' } }] },
    'tools[0].function.name',
  ],
  [
    'tool parameters with a pattern',
    {
      messages: user,
      tools: [
        {
          type: 'function',
          function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'string', pattern: 'x' } } } },
        },
      ],
    },
    'tools[0].function.parameters',
  ],
  [
    'tool_choice naming an unknown function',
    {
      messages: user,
      tools: [{ type: 'function', function: { name: 'f' } }],
      tool_choice: { type: 'function', function: { name: 'g' } },
    },
    'tool_choice',
  ],
  ['tool_choice required without tools', { messages: user, tool_choice: 'required' }, 'tool_choice'],
  [
    'a JSON format with tools',
    {
      messages: user,
      tools: [{ type: 'function', function: { name: 'f' } }],
      response_format: { type: 'json_object' },
    },
    'response_format',
  ],
  ['logprobs', { messages: user, logprobs: true }, 'logprobs'],
  ['top_logprobs', { messages: user, top_logprobs: 2 }, 'top_logprobs'],
  ['an unknown response_format type', { messages: user, response_format: { type: 'xml' } }, 'response_format'],
  [
    'a json_schema with minimum',
    {
      messages: user,
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'n', schema: { type: 'object', properties: { a: { type: 'number', minimum: 1 } } } },
      },
    },
    'response_format',
  ],
  [
    'a json_schema without a name',
    { messages: user, response_format: { type: 'json_schema', json_schema: { schema: { type: 'object' } } } },
    'response_format',
  ],
  ['an unknown top-level field', { messages: user, grammar: 'root ::= "x"' }, 'grammar'],
  ['functions (the legacy form)', { messages: user, functions: [] }, 'functions'],
  ['repeat_penalty (not an OpenAI field)', { messages: user, repeat_penalty: 1.1 }, 'repeat_penalty'],
  ['an unknown stream_options field', { messages: user, stream_options: { chunk: 1 } }, 'stream_options'],
  ['frequency_penalty 3', { messages: user, frequency_penalty: 3 }, 'frequency_penalty'],
  ['presence_penalty as a string', { messages: user, presence_penalty: '1' }, 'presence_penalty'],
  ['a logit_bias key that is not a token id', { messages: user, logit_bias: { abc: 1 } }, 'logit_bias'],
  ['a logit_bias value of 101', { messages: user, logit_bias: { 5: 101 } }, 'logit_bias'],
  ['a negative top_k', { messages: user, top_k: -1 }, 'top_k'],
  ['min_p 2', { messages: user, min_p: 2 }, 'min_p'],
  ['a model that is not a string', { messages: user, model: 5 }, 'model'],
  ['stream as a string', { messages: user, stream: 'yes' }, 'stream'],
  ['a seed beyond 2^53', { messages: user, seed: 2 ** 60 }, 'seed'],
];

for (const [name, body, param] of badChat) {
  test(`parseChatRequest() refuses ${name} with a 400 naming ${param}`, () => {
    assert.throws(
      () => parseChatRequest(body),
      (error: unknown) => {
        assert.ok(error instanceof ApiError);
        assert.equal(error.status, 400);
        assert.equal(error.type, 'invalid_request_error');
        assert.equal(error.param, param);
        return true;
      },
    );
  });
}

test('parseCompletionRequest() accepts a string or an array of one string and refuses the rest', () => {
  assert.equal(parseCompletionRequest({ prompt: 'x' }).prompt, 'x');
  assert.equal(parseCompletionRequest({ prompt: ['y'] }).prompt, 'y');
  for (const body of [
    { prompt: ['a', 'b'] },
    { prompt: [1, 2] },
    {},
    { prompt: 'x', echo: true },
    { prompt: 'x', suffix: 's' },
    { prompt: 'x', best_of: 2 },
  ]) {
    assert.throws(
      () => parseCompletionRequest(body),
      (error: unknown) => error instanceof ApiError && error.status === 400,
    );
  }
});

test('ApiError.body() has the OpenAI error shape', () => {
  const error = new ApiError(413, 'invalid_request_error', 'body_too_large', 'too big');
  assert.deepEqual(error.body(), {
    error: { message: 'too big', type: 'invalid_request_error', code: 'body_too_large', param: null },
  });
});

test('response builders produce the OpenAI chat, chunk, completion and model shapes', () => {
  const meta = { id: 'chatcmpl-1', created: 1, model: 'm' };
  const usage = usageOf(3, 4);
  assert.deepEqual(usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
  assert.deepEqual(chatCompletionBody(meta, 'hi', 'stop', usage), {
    id: 'chatcmpl-1',
    object: 'chat.completion',
    created: 1,
    model: 'm',
    choices: [
      { index: 0, message: { role: 'assistant', content: 'hi', refusal: null }, logprobs: null, finish_reason: 'stop' },
    ],
    usage,
  });
  assert.deepEqual(chatChunkBody(meta, { content: 'h' }, null), {
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'm',
    choices: [{ index: 0, delta: { content: 'h' }, logprobs: null, finish_reason: null }],
  });
  assert.deepEqual(completionBody(meta, 'x', 'length', null), {
    id: 'chatcmpl-1',
    object: 'text_completion',
    created: 1,
    model: 'm',
    choices: [{ index: 0, text: 'x', logprobs: null, finish_reason: 'length' }],
  });
  assert.deepEqual(modelsBody('m', 1), {
    object: 'list',
    data: [{ id: 'm', object: 'model', created: 1, owned_by: 'companion' }],
  });
  assert.equal(sseData({ a: 1 }), 'data: {"a":1}\n\n');
  assert.equal(SSE_DONE, 'data: [DONE]\n\n');
});

test('parseChatRequest() maps penalties, logit_bias, top_k and min_p when they are given', () => {
  const { sampling } = parseChatRequest({
    messages: user,
    frequency_penalty: 0.5,
    presence_penalty: -1,
    logit_bias: { 7: -100, 12: 3.5 },
    top_k: 40,
    min_p: 0.05,
    user: 'u1',
  });
  assert.equal(sampling.frequencyPenalty, 0.5);
  assert.equal(sampling.presencePenalty, -1);
  assert.deepEqual(
    [...sampling.logitBias],
    [
      [7, -100],
      [12, 3.5],
    ],
  );
  assert.equal(sampling.topK, 40);
  assert.equal(sampling.minP, 0.05);
});

test('parseChatRequest() reads json_object and json_schema formats, converting the schema for the grammar', () => {
  assert.deepEqual(parseChatRequest({ messages: user, response_format: { type: 'json_object' } }).responseFormat, {
    type: 'json_object',
  });
  const schema = {
    title: 'P',
    type: 'object',
    properties: { a: { anyOf: [{ type: 'string' }, { type: 'null' }] }, b: { $ref: '#/definitions/B' } },
    required: ['a'],
    additionalProperties: false,
    definitions: { B: { type: 'integer' } },
  };
  const format = parseChatRequest({
    messages: user,
    response_format: { type: 'json_schema', json_schema: { name: 'p', schema, strict: true } },
  }).responseFormat;
  assert.deepEqual(format, {
    type: 'json_schema',
    name: 'p',
    schema: {
      type: 'object',
      properties: { a: { oneOf: [{ type: 'string' }, { type: 'null' }] }, b: { $ref: '#/$defs/B' } },
      required: ['a'],
      additionalProperties: false,
      $defs: { B: { type: 'integer' } },
    },
  });
});

test('parseChatRequest() names the unsupported schema keyword with its JSON pointer', () => {
  assert.throws(
    () =>
      parseChatRequest({
        messages: user,
        response_format: {
          type: 'json_schema',
          json_schema: {
            name: 'p',
            schema: { type: 'object', properties: { 'a/b': { type: 'string', pattern: '^x' } } },
          },
        },
      }),
    (error: unknown) =>
      error instanceof ApiError &&
      error.code === 'unsupported_schema' &&
      error.message.includes('/properties/a~1b/pattern'),
  );
  for (const schema of [
    { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } },
    { type: 'string', format: 'email' },
    { allOf: [] },
    {},
    { type: 'object', required: ['x'] },
  ]) {
    assert.throws(
      () =>
        parseChatRequest({
          messages: user,
          response_format: { type: 'json_schema', json_schema: { name: 'p', schema } },
        }),
      (error: unknown) => error instanceof ApiError && error.param === 'response_format',
    );
  }
});

test('parseChatRequest() reads tools, tool_choice and a tool-call history', () => {
  const tools = [
    {
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'weather',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    },
  ];
  const request = parseChatRequest({
    messages: [
      ...user,
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temp":3}' },
    ],
    tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    parallel_tool_calls: false,
  });
  assert.deepEqual(request.tools, [
    {
      name: 'get_weather',
      description: 'weather',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  ]);
  assert.deepEqual(request.toolChoice, { name: 'get_weather' });
  assert.equal(request.parallelToolCalls, false);
  assert.deepEqual(request.messages.slice(1), [
    {
      role: 'assistant',
      content: '',
      toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: '{"city":"Oslo"}' }],
    },
    { role: 'tool', content: '{"temp":3}', toolCallId: 'call_1' },
  ]);
  assert.equal(parseChatRequest({ messages: user, tools }).toolChoice, 'auto');
  assert.equal(parseChatRequest({ messages: user, tools, tool_choice: 'required' }).toolChoice, 'required');
});

test('parseCompletionRequest() refuses an unknown field and reads the sampling extensions', () => {
  assert.throws(
    () => parseCompletionRequest({ prompt: 'x', grammar: 'g' }),
    (error: unknown) => error instanceof ApiError && error.param === 'grammar' && error.code === 'unknown_parameter',
  );
  assert.equal(parseCompletionRequest({ prompt: 'x', top_k: 5, logprobs: null }).sampling.topK, 5);
});

test('parseEmbeddingRequest() accepts a string, strings or token ids and refuses the rest', () => {
  assert.deepEqual(parseEmbeddingRequest({ input: 'a', model: 'm' }), {
    kind: 'embedding',
    model: 'm',
    inputs: ['a'],
    encoding: 'float',
  });
  assert.deepEqual(parseEmbeddingRequest({ input: ['a', [1, 2]], encoding_format: 'base64' }).inputs, ['a', [1, 2]]);
  assert.deepEqual(parseEmbeddingRequest({ input: [3, 4] }).inputs, [[3, 4]]);
  const bad: [unknown, string][] = [
    [{}, 'input'],
    [{ input: '' }, 'input'],
    [{ input: [] }, 'input'],
    [{ input: [1.5] }, 'input'],
    [{ input: 'a', encoding_format: 'hex' }, 'encoding_format'],
    [{ input: 'a', dimensions: 8 }, 'dimensions'],
    [{ input: 'a', extra: 1 }, 'extra'],
  ];
  for (const [body, param] of bad) {
    assert.throws(
      () => parseEmbeddingRequest(body),
      (error: unknown) => error instanceof ApiError && error.status === 400 && error.param === param,
      param,
    );
  }
});

test('modelNotFound() is the OpenAI 404 model_not_found error naming param model', () => {
  const error = modelNotFound();
  assert.equal(error.status, 404);
  assert.deepEqual(
    { ...error.body().error, message: '' },
    { message: '', type: 'invalid_request_error', code: 'model_not_found', param: 'model' },
  );
});

test('tool-call, model and embedding builders produce the OpenAI shapes', () => {
  const meta = { id: 'chatcmpl-1', created: 1, model: 'm' };
  const body = chatCompletionBody(meta, '', 'tool_calls', usageOf(1, 2), [
    { id: 'call_1', name: 'f', arguments: '{}' },
  ]) as { choices: { message: unknown; finish_reason: string }[] };
  assert.deepEqual(body.choices[0]!.message, {
    role: 'assistant',
    content: null,
    refusal: null,
    tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }],
  });
  assert.equal(body.choices[0]!.finish_reason, 'tool_calls');
  assert.deepEqual(modelBody('m', 1), { id: 'm', object: 'model', created: 1, owned_by: 'companion' });
  const encoded = base64Float32([1, -0.5]);
  const bytes = Buffer.from(encoded, 'base64');
  assert.deepEqual([bytes.readFloatLE(0), bytes.readFloatLE(4)], [1, -0.5]);
  assert.deepEqual(embeddingsBody('m', [[0.25]], 'float', 2), {
    object: 'list',
    data: [{ object: 'embedding', index: 0, embedding: [0.25] }],
    model: 'm',
    usage: { prompt_tokens: 2, total_tokens: 2 },
  });
});
