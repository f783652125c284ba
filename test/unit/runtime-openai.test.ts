// The bundled runtime's OpenAI wire format: request validation and response shapes (no I/O).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApiError,
  chatChunkBody,
  chatCompletionBody,
  completionBody,
  modelsBody,
  parseChatRequest,
  parseCompletionRequest,
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
      { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
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
  assert.deepEqual(request.sampling, { maxTokens: 12, temperature: 0, topP: 0.5, seed: 4294967295, stop: ['END'] });
  assert.equal(request.stream, true);
  assert.equal(request.includeUsage, true);
});

test('parseChatRequest() uses OpenAI defaults when options are absent or null', () => {
  const request = parseChatRequest({ messages: user, max_tokens: null, stop: null, top_p: 1 });
  assert.deepEqual(request.sampling, { maxTokens: undefined, temperature: 1, topP: undefined, seed: undefined, stop: [] });
  assert.equal(request.stream, false);
  assert.equal(request.includeUsage, false);
  assert.equal(parseChatRequest({ messages: user, max_completion_tokens: 3 }).sampling.maxTokens, 3);
});

const badChat: [string, unknown, string][] = [
  ['a non-object body', [], 'body'],
  ['no messages', {}, 'messages'],
  ['empty messages', { messages: [] }, 'messages'],
  ['a tool role', { messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].role'],
  ['an image part', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages[0].content'],
  ['numeric content', { messages: [{ role: 'user', content: 5 }] }, 'messages[0].content'],
  ['n = 2', { messages: user, n: 2 }, 'n'],
  ['temperature 3', { messages: user, temperature: 3 }, 'temperature'],
  ['top_p as a string', { messages: user, top_p: '0.5' }, 'top_p'],
  ['max_tokens 0', { messages: user, max_tokens: 0 }, 'max_tokens'],
  ['fractional max_tokens', { messages: user, max_tokens: 1.5 }, 'max_tokens'],
  ['five stop strings', { messages: user, stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
  ['an empty stop string', { messages: user, stop: [''] }, 'stop'],
  ['tools', { messages: user, tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
  ['logprobs', { messages: user, logprobs: true }, 'logprobs'],
  ['json response_format', { messages: user, response_format: { type: 'json_object' } }, 'response_format'],
  ['stream as a string', { messages: user, stream: 'yes' }, 'stream'],
  ['a seed beyond 2^53', { messages: user, seed: 2 ** 60 }, 'seed'],
];

for (const [name, body, param] of badChat) {
  test(`parseChatRequest() refuses ${name} with a 400 naming ${param}`, () => {
    assert.throws(() => parseChatRequest(body), (error: unknown) => {
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 400);
      assert.equal(error.type, 'invalid_request_error');
      assert.equal(error.param, param);
      return true;
    });
  });
}

test('parseCompletionRequest() accepts a string or an array of one string and refuses the rest', () => {
  assert.equal(parseCompletionRequest({ prompt: 'x' }).prompt, 'x');
  assert.equal(parseCompletionRequest({ prompt: ['y'] }).prompt, 'y');
  for (const body of [{ prompt: ['a', 'b'] }, { prompt: [1, 2] }, {}, { prompt: 'x', echo: true }, { prompt: 'x', suffix: 's' }, { prompt: 'x', best_of: 2 }]) {
    assert.throws(() => parseCompletionRequest(body), (error: unknown) => error instanceof ApiError && error.status === 400);
  }
});

test('ApiError.body() has the OpenAI error shape', () => {
  const error = new ApiError(413, 'invalid_request_error', 'body_too_large', 'too big');
  assert.deepEqual(error.body(), { error: { message: 'too big', type: 'invalid_request_error', code: 'body_too_large', param: null } });
});

test('response builders produce the OpenAI chat, chunk, completion and model shapes', () => {
  const meta = { id: 'chatcmpl-1', created: 1, model: 'm' };
  const usage = usageOf(3, 4);
  assert.deepEqual(usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
  assert.deepEqual(chatCompletionBody(meta, 'hi', 'stop', usage), {
    id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: 'm',
    choices: [{ index: 0, message: { role: 'assistant', content: 'hi', refusal: null }, logprobs: null, finish_reason: 'stop' }],
    usage,
  });
  assert.deepEqual(chatChunkBody(meta, { content: 'h' }, null), {
    id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'm',
    choices: [{ index: 0, delta: { content: 'h' }, logprobs: null, finish_reason: null }],
  });
  assert.deepEqual(completionBody(meta, 'x', 'length', null), {
    id: 'chatcmpl-1', object: 'text_completion', created: 1, model: 'm',
    choices: [{ index: 0, text: 'x', logprobs: null, finish_reason: 'length' }],
  });
  assert.deepEqual(modelsBody('m', 1), { object: 'list', data: [{ id: 'm', object: 'model', created: 1, owned_by: 'companion' }] });
  assert.equal(sseData({ a: 1 }), 'data: {"a":1}\n\n');
  assert.equal(SSE_DONE, 'data: [DONE]\n\n');
});
