/**
 * The OpenAI-compatible wire format of the bundled runtime: request validation and response shapes, with
 * no I/O. Shapes follow the OpenAI API reference for chat completions and (legacy) completions, so the
 * official `openai` SDK parses them: https://platform.openai.com/docs/api-reference/chat
 *
 * Only what the runtime supports is accepted: one choice (`n` 1), text content, no logprobs. Anything
 * else, an unknown top-level field included, is refused with a 400 naming it rather than silently
 * ignored (docs/runtime.md lists the supported, refused and accepted-without-effect fields).
 */
import { Buffer } from 'node:buffer';
import { grammarSchemaOf, UnsupportedSchemaError } from './json-schema.js';

/** An OpenAI-shaped error: `{ error: { message, type, code, param } }` with an HTTP status. */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string;
  readonly param: string | null;

  constructor(status: number, type: string, code: string, message: string, param: string | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
  }

  /** The JSON body. The message never echoes request values: it names parameters (and a schema keyword's pointer). */
  body(): { error: { message: string; type: string; code: string; param: string | null } } {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

function invalid(param: string, message: string, code = 'invalid_value'): ApiError {
  return new ApiError(400, 'invalid_request_error', code, message, param);
}

/** 404 `model_not_found` for a `model` other than the loaded one (OpenAI's shape and code). */
export function modelNotFound(): ApiError {
  return new ApiError(
    404,
    'invalid_request_error',
    'model_not_found',
    'the model does not exist; GET /v1/models lists the one served',
    'model',
  );
}

/** 503 `shutting_down`: the runtime is stopping and takes no more work. */
export function shuttingDown(): ApiError {
  return new ApiError(503, 'server_error', 'shutting_down', 'the runtime is shutting down');
}

/**
 * 400 `context_length_exceeded`: `what` ("the prompt", "an input") has `tokens` tokens, which the context of
 * `contextSize` tokens cannot hold.
 */
export function contextLengthExceeded(what: string, tokens: number, contextSize: number, param: string): ApiError {
  return new ApiError(
    400,
    'invalid_request_error',
    'context_length_exceeded',
    `${what} has ${tokens} tokens; the context holds ${contextSize}`,
    param,
  );
}

export type Role = 'system' | 'user' | 'assistant' | 'tool';

/** One tool call of an assistant message: `arguments` is the JSON text of the parameters object. */
export interface ToolCall {
  readonly id: string;
  readonly name: string;
  readonly arguments: string;
}

export type ChatMessage =
  | { readonly role: 'system' | 'user'; readonly content: string }
  | { readonly role: 'assistant'; readonly content: string; readonly toolCalls?: readonly ToolCall[] }
  | { readonly role: 'tool'; readonly content: string; readonly toolCallId: string };

/** `response_format`: plain text, any JSON object, or JSON matching a schema (grammar-constrained). */
export type ResponseFormat =
  | { readonly type: 'text' }
  | { readonly type: 'json_object' }
  | { readonly type: 'json_schema'; readonly name: string; readonly schema: object };

/** A function the model may call; `parameters` is in the grammar builder's form (json-schema.ts). */
export interface ToolDefinition {
  readonly name: string;
  readonly description?: string;
  readonly parameters?: object;
}

/** `tool_choice`: the model decides, never calls, must call one, or must call the named function. */
export type ToolChoice = 'auto' | 'none' | 'required' | { readonly name: string };

export interface Sampling {
  /** Upper bound on generated tokens; `undefined` = until the context is full or the model stops. */
  readonly maxTokens: number | undefined;
  readonly temperature: number;
  readonly topP: number | undefined;
  readonly topK: number | undefined;
  readonly minP: number | undefined;
  /** Unsigned 32-bit seed of the sampler; `undefined` = random. */
  readonly seed: number | undefined;
  readonly stop: readonly string[];
  /** OpenAI `frequency_penalty` / `presence_penalty` (-2 to 2); 0 = off. */
  readonly frequencyPenalty: number;
  readonly presencePenalty: number;
  /** `logit_bias`: token id → bias (-100 to 100). The engine checks the ids against the vocabulary. */
  readonly logitBias: ReadonlyMap<number, number>;
}

interface Common {
  /** The requested model id, checked by the server against the loaded one; absent = the loaded one. */
  readonly model: string | undefined;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  readonly sampling: Sampling;
}

export interface ChatRequest extends Common {
  readonly kind: 'chat';
  readonly messages: readonly ChatMessage[];
  readonly responseFormat: ResponseFormat;
  /** Empty when the request has no tools. */
  readonly tools: readonly ToolDefinition[];
  readonly toolChoice: ToolChoice;
  readonly parallelToolCalls: boolean;
}

export interface CompletionRequest extends Common {
  readonly kind: 'completion';
  readonly prompt: string;
}

export interface EmbeddingRequest {
  readonly kind: 'embedding';
  readonly model: string | undefined;
  /** Each input: a text, or token ids (checked against the vocabulary by the engine). */
  readonly inputs: readonly (string | readonly number[])[];
  readonly encoding: 'float' | 'base64';
}

const MAX_STOP = 4;
const MAX_STOP_LENGTH = 256;
const MAX_MESSAGES = 4096;
const MAX_TOOLS = 128;
const MAX_EMBEDDING_INPUTS = 2048;
const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const MODEL_ID = /^[\x21-\x7e]{1,256}$/;

/**
 * The top-level fields each endpoint reads. Every other field is refused with a 400 naming it, so that
 * nothing a client asks for is silently ignored. Accepted without effect (docs/runtime.md): `user`
 * (an end-user id for abuse tracking), `n` 1, `logprobs` false, `parallel_tool_calls`, `best_of` 1,
 * `echo` false.
 */
/** The fields chat and completions share: the model, streaming and sampling. */
const GENERATION_FIELDS = [
  'model',
  'stream',
  'stream_options',
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'seed',
  'stop',
  'n',
  'frequency_penalty',
  'presence_penalty',
  'logit_bias',
  'logprobs',
  'user',
];
const CHAT_FIELDS = new Set([
  ...GENERATION_FIELDS,
  'messages',
  'max_completion_tokens',
  'top_logprobs',
  'response_format',
  'tools',
  'tool_choice',
  'parallel_tool_calls',
]);
const COMPLETION_FIELDS = new Set([...GENERATION_FIELDS, 'prompt', 'echo', 'suffix', 'best_of']);
const EMBEDDING_FIELDS = new Set(['input', 'model', 'encoding_format', 'dimensions', 'user']);

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function present(body: Record<string, unknown>, key: string): boolean {
  return body[key] !== undefined && body[key] !== null;
}

/** Asserts that `body` is a JSON object holding only `known` fields. */
function assertRequestObject(body: unknown, known: ReadonlySet<string>): asserts body is Record<string, unknown> {
  if (!isObject(body)) throw invalid('body', 'the request body must be a JSON object', 'invalid_body');
  for (const key of Object.keys(body)) {
    // Why: a field we do not read would be silently ignored; the client must know it had no effect.
    if (!known.has(key))
      throw invalid(
        key.length > 64 ? `${key.slice(0, 64)}…` : key,
        'this parameter is not supported by this runtime',
        'unknown_parameter',
      );
  }
}

/** `user` (an end-user id, accepted without effect) must be a string when present. */
function checkUser(body: Record<string, unknown>): void {
  if (present(body, 'user') && typeof body.user !== 'string') throw invalid('user', 'user must be a string');
}

function numberIn(body: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  if (!present(body, key)) return undefined;
  const value = body[key];
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw invalid(key, `${key} must be a number from ${min} to ${max}`);
  }
  return value;
}

function integerIn(body: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const value = numberIn(body, key, min, max);
  if (value !== undefined && !Number.isInteger(value)) throw invalid(key, `${key} must be an integer`);
  return value;
}

function booleanOf(body: Record<string, unknown>, key: string): boolean | undefined {
  if (!present(body, key)) return undefined;
  if (typeof body[key] !== 'boolean') throw invalid(key, `${key} must be a boolean`);
  return body[key];
}

function modelOf(body: Record<string, unknown>): string | undefined {
  if (!present(body, 'model')) return undefined;
  if (typeof body.model !== 'string' || !MODEL_ID.test(body.model)) throw invalid('model', 'model must be a model id');
  return body.model;
}

function logitBiasOf(body: Record<string, unknown>): Map<number, number> {
  const bias = new Map<number, number>();
  if (!present(body, 'logit_bias')) return bias;
  const raw = body.logit_bias;
  if (!isObject(raw)) throw invalid('logit_bias', 'logit_bias must be an object of token id → bias');
  const entries = Object.entries(raw);
  if (entries.length > 1024) throw invalid('logit_bias', 'logit_bias holds at most 1024 tokens');
  for (const [key, value] of entries) {
    if (!/^(?:0|[1-9][0-9]{0,9})$/.test(key) || Number(key) > 0xffffffff)
      throw invalid('logit_bias', 'logit_bias keys must be token ids (decimal integers)');
    if (typeof value !== 'number' || !Number.isFinite(value) || value < -100 || value > 100)
      throw invalid('logit_bias', 'each logit_bias value must be a number from -100 to 100');
    bias.set(Number(key), value);
  }
  return bias;
}

function parseSampling(body: Record<string, unknown>): Sampling {
  const maxTokens = integerIn(body, 'max_completion_tokens', 1, 1 << 24) ?? integerIn(body, 'max_tokens', 1, 1 << 24);
  const temperature = numberIn(body, 'temperature', 0, 2) ?? 1;
  const topP = numberIn(body, 'top_p', 0, 1);
  const topK = integerIn(body, 'top_k', 0, 1 << 20);
  const minP = numberIn(body, 'min_p', 0, 1);
  const rawSeed = integerIn(body, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  // OpenAI seeds are 64-bit integers; the sampler takes 32 bits.
  const seed = rawSeed === undefined ? undefined : ((rawSeed % 2 ** 32) + 2 ** 32) % 2 ** 32;
  let stop: string[] = [];
  if (present(body, 'stop')) {
    const raw = body.stop;
    const list = typeof raw === 'string' ? [raw] : raw;
    if (
      !Array.isArray(list) ||
      list.length > MAX_STOP ||
      !list.every((s) => typeof s === 'string' && s.length > 0 && s.length <= MAX_STOP_LENGTH)
    ) {
      throw invalid(
        'stop',
        `stop must be a string or up to ${MAX_STOP} non-empty strings of at most ${MAX_STOP_LENGTH} characters`,
      );
    }
    stop = list as string[];
  }
  return {
    maxTokens,
    temperature,
    topP: topP === undefined || topP >= 1 ? undefined : topP,
    topK: topK === undefined || topK === 0 ? undefined : topK,
    minP: minP === undefined || minP === 0 ? undefined : minP,
    seed,
    stop,
    frequencyPenalty: numberIn(body, 'frequency_penalty', -2, 2) ?? 0,
    presencePenalty: numberIn(body, 'presence_penalty', -2, 2) ?? 0,
    logitBias: logitBiasOf(body),
  };
}

function parseCommon(body: Record<string, unknown>): Common {
  const n = integerIn(body, 'n', 1, 128);
  if (n !== undefined && n !== 1) throw invalid('n', 'only n = 1 is supported', 'unsupported_value');
  const stream = booleanOf(body, 'stream') ?? false;
  let includeUsage = false;
  if (present(body, 'stream_options')) {
    const options = body.stream_options;
    if (!isObject(options)) throw invalid('stream_options', 'stream_options must be an object');
    for (const key of Object.keys(options))
      if (key !== 'include_usage')
        throw invalid('stream_options', `stream_options.${key.slice(0, 64)} is not supported`, 'unknown_parameter');
    if (present(options, 'include_usage')) {
      if (typeof options.include_usage !== 'boolean')
        throw invalid('stream_options', 'stream_options.include_usage must be a boolean');
      includeUsage = options.include_usage;
    }
  }
  return { model: modelOf(body), stream, includeUsage, sampling: parseSampling(body) };
}

function schemaFor(schema: unknown, param: string): object {
  try {
    return grammarSchemaOf(schema);
  } catch (error) {
    if (error instanceof UnsupportedSchemaError)
      throw invalid(param, `the schema cannot be enforced by a grammar: ${error.message}`, 'unsupported_schema');
    throw error;
  }
}

function parseResponseFormat(body: Record<string, unknown>): ResponseFormat {
  if (!present(body, 'response_format')) return { type: 'text' };
  const format = body.response_format;
  if (!isObject(format)) throw invalid('response_format', 'response_format must be an object');
  const only = (keys: string[]): void => {
    for (const key of Object.keys(format))
      if (!keys.includes(key))
        throw invalid('response_format', `response_format.${key.slice(0, 64)} is not supported`, 'unknown_parameter');
  };
  if (format.type === 'text' || format.type === 'json_object') {
    only(['type']);
    return { type: format.type };
  }
  if (format.type !== 'json_schema')
    throw invalid(
      'response_format',
      'response_format.type must be text, json_object or json_schema',
      'unsupported_value',
    );
  only(['type', 'json_schema']);
  const spec = format.json_schema;
  if (!isObject(spec)) throw invalid('response_format', 'response_format.json_schema must be an object');
  for (const key of Object.keys(spec)) {
    if (!['name', 'schema', 'strict', 'description'].includes(key))
      throw invalid(
        'response_format',
        `response_format.json_schema.${key.slice(0, 64)} is not supported`,
        'unknown_parameter',
      );
  }
  if (typeof spec.name !== 'string' || !TOOL_NAME.test(spec.name))
    throw invalid('response_format', 'response_format.json_schema.name must be 1 to 64 of a-z, A-Z, 0-9, _ and -');
  if (spec.strict !== undefined && spec.strict !== null && typeof spec.strict !== 'boolean')
    throw invalid('response_format', 'response_format.json_schema.strict must be a boolean');
  if (spec.description !== undefined && typeof spec.description !== 'string')
    throw invalid('response_format', 'response_format.json_schema.description must be a string');
  // No schema means any JSON object, as OpenAI documents; strict or not, the grammar enforces what is given.
  const schema = spec.schema === undefined ? { type: 'object', additionalProperties: true } : spec.schema;
  return { type: 'json_schema', name: spec.name, schema: schemaFor(schema, 'response_format') };
}

function parseTools(body: Record<string, unknown>): ToolDefinition[] {
  if (!present(body, 'tools')) return [];
  const raw = body.tools;
  if (!Array.isArray(raw) || raw.length > MAX_TOOLS)
    throw invalid('tools', `tools must be a list of at most ${MAX_TOOLS} functions`);
  const names = new Set<string>();
  return raw.map((tool: unknown, i): ToolDefinition => {
    const param = `tools[${i}]`;
    if (!isObject(tool) || tool.type !== 'function' || !isObject(tool.function))
      throw invalid(
        param,
        'each tool must be { type: "function", function: { name, parameters } }',
        'unsupported_value',
      );
    for (const key of Object.keys(tool))
      if (key !== 'type' && key !== 'function')
        throw invalid(param, `${key.slice(0, 64)} is not supported`, 'unknown_parameter');
    const fn = tool.function;
    for (const key of Object.keys(fn)) {
      if (!['name', 'description', 'parameters', 'strict'].includes(key))
        throw invalid(`${param}.function`, `${key.slice(0, 64)} is not supported`, 'unknown_parameter');
    }
    if (typeof fn.name !== 'string' || !TOOL_NAME.test(fn.name))
      throw invalid(`${param}.function.name`, 'a function name is 1 to 64 of a-z, A-Z, 0-9, _ and -');
    if (names.has(fn.name)) throw invalid(`${param}.function.name`, 'function names must be unique');
    names.add(fn.name);
    if (fn.description !== undefined && typeof fn.description !== 'string')
      throw invalid(`${param}.function.description`, 'description must be a string');
    if (fn.strict !== undefined && fn.strict !== null && typeof fn.strict !== 'boolean')
      throw invalid(`${param}.function.strict`, 'strict must be a boolean');
    const parameters = present(fn, 'parameters') ? schemaFor(fn.parameters, `${param}.function.parameters`) : undefined;
    if (parameters !== undefined && (parameters as { type?: unknown }).type !== 'object') {
      throw invalid(
        `${param}.function.parameters`,
        'function parameters must be an object schema',
        'unsupported_schema',
      );
    }
    return {
      name: fn.name,
      ...(typeof fn.description === 'string' ? { description: fn.description } : {}),
      ...(parameters === undefined ? {} : { parameters }),
    };
  });
}

function parseToolChoice(body: Record<string, unknown>, tools: readonly ToolDefinition[]): ToolChoice {
  if (!present(body, 'tool_choice')) return tools.length === 0 ? 'none' : 'auto';
  const raw = body.tool_choice;
  if (raw === 'none') return 'none';
  if (raw === 'auto' || raw === 'required') {
    if (tools.length === 0) throw invalid('tool_choice', `tool_choice ${raw} needs tools`);
    return raw;
  }
  if (isObject(raw) && raw.type === 'function' && isObject(raw.function) && typeof raw.function.name === 'string') {
    const name = raw.function.name;
    if (!tools.some((tool) => tool.name === name))
      throw invalid('tool_choice', 'tool_choice names a function that is not in tools');
    return { name };
  }
  throw invalid('tool_choice', 'tool_choice must be none, auto, required or { type: "function", function: { name } }');
}

function messageText(content: unknown, index: number, role: Role): string {
  if (typeof content === 'string') return content;
  if ((content === null || content === undefined) && role === 'assistant') return '';
  if (Array.isArray(content)) {
    let text = '';
    for (const part of content) {
      if (!isObject(part) || part.type !== 'text' || typeof part.text !== 'string') {
        throw invalid(`messages[${index}].content`, 'only text content parts are supported', 'unsupported_value');
      }
      text += part.text;
    }
    return text;
  }
  throw invalid(`messages[${index}].content`, 'content must be a string or an array of text parts');
}

function toolCallsOf(raw: unknown, index: number): ToolCall[] {
  const param = `messages[${index}].tool_calls`;
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_TOOLS)
    throw invalid(param, `tool_calls must be a list of 1 to ${MAX_TOOLS} calls`);
  return raw.map((call: unknown): ToolCall => {
    if (
      !isObject(call) ||
      call.type !== 'function' ||
      typeof call.id !== 'string' ||
      call.id.length === 0 ||
      call.id.length > 256 ||
      !isObject(call.function) ||
      typeof call.function.name !== 'string' ||
      typeof call.function.arguments !== 'string'
    ) {
      throw invalid(param, 'each tool call must be { id, type: "function", function: { name, arguments } }');
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(call.function.arguments);
    } catch {
      throw invalid(param, 'function arguments must be a JSON text');
    }
    if (!isObject(parsed)) throw invalid(param, 'function arguments must be a JSON object');
    return { id: call.id, name: call.function.name, arguments: call.function.arguments };
  });
}

function parseMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_MESSAGES) {
    throw invalid('messages', `messages must be an array of 1 to ${MAX_MESSAGES} messages`);
  }
  // Tool call ids still waiting for their `tool` message.
  let open = new Set<string>();
  const messages = raw.map((message: unknown, index): ChatMessage => {
    if (!isObject(message)) throw invalid(`messages[${index}]`, 'each message must be an object');
    const declared = message.role;
    if (declared === 'tool') {
      const id = message.tool_call_id;
      if (typeof id !== 'string' || !open.has(id))
        throw invalid(
          `messages[${index}].tool_call_id`,
          'a tool message must answer a tool call of the assistant message before it',
        );
      open.delete(id);
      return { role: 'tool', content: messageText(message.content, index, 'tool'), toolCallId: id };
    }
    if (open.size > 0)
      throw invalid(`messages[${index}]`, 'every tool call must be answered by a tool message before the next message');
    if (declared === 'system' || declared === 'developer')
      return { role: 'system', content: messageText(message.content, index, 'system') };
    if (declared === 'user') return { role: 'user', content: messageText(message.content, index, 'user') };
    if (declared !== 'assistant')
      throw invalid(
        `messages[${index}].role`,
        'role must be system, developer, user, assistant or tool',
        'unsupported_value',
      );
    const content = messageText(message.content, index, 'assistant');
    if (!present(message, 'tool_calls')) return { role: 'assistant', content };
    const toolCalls = toolCallsOf(message.tool_calls, index);
    open = new Set(toolCalls.map((call) => call.id));
    if (open.size !== toolCalls.length) throw invalid(`messages[${index}].tool_calls`, 'tool call ids must be unique');
    return { role: 'assistant', content, toolCalls };
  });
  if (open.size > 0) throw invalid('messages', 'every tool call must be answered by a tool message');
  return messages;
}

/** Validates a `POST /v1/chat/completions` body. Throws {@link ApiError} (400) on anything unsupported. */
export function parseChatRequest(body: unknown): ChatRequest {
  assertRequestObject(body, CHAT_FIELDS);
  const messages = parseMessages(body.messages);
  if (present(body, 'logprobs') && body.logprobs !== false)
    throw invalid('logprobs', 'logprobs are not supported', 'unsupported_value');
  if (present(body, 'top_logprobs')) throw invalid('top_logprobs', 'logprobs are not supported', 'unsupported_value');
  const responseFormat = parseResponseFormat(body);
  const tools = parseTools(body);
  const toolChoice = parseToolChoice(body, tools);
  const parallelToolCalls = booleanOf(body, 'parallel_tool_calls') ?? true;
  if (toolChoice !== 'none' && responseFormat.type !== 'text') {
    throw invalid(
      'response_format',
      'a JSON response_format cannot be combined with tools (unless tool_choice is none)',
      'unsupported_value',
    );
  }
  checkUser(body);
  return { kind: 'chat', messages, responseFormat, tools, toolChoice, parallelToolCalls, ...parseCommon(body) };
}

/** Validates a `POST /v1/completions` body (one prompt string, or an array holding one). */
export function parseCompletionRequest(body: unknown): CompletionRequest {
  assertRequestObject(body, COMPLETION_FIELDS);
  let prompt = body.prompt;
  if (Array.isArray(prompt) && prompt.length === 1) prompt = prompt[0];
  if (typeof prompt !== 'string') throw invalid('prompt', 'prompt must be a string (or an array of one string)');
  if (booleanOf(body, 'echo') === true) throw invalid('echo', 'echo is not supported', 'unsupported_value');
  if (present(body, 'suffix')) throw invalid('suffix', 'suffix is not supported', 'unsupported_value');
  if (present(body, 'best_of') && body.best_of !== 1)
    throw invalid('best_of', 'only best_of = 1 is supported', 'unsupported_value');
  if (present(body, 'logprobs') && body.logprobs !== 0 && body.logprobs !== false)
    throw invalid('logprobs', 'logprobs are not supported', 'unsupported_value');
  checkUser(body);
  return { kind: 'completion', prompt, ...parseCommon(body) };
}

function isTokenArray(value: unknown): value is number[] {
  return (
    Array.isArray(value) &&
    value.length > 0 &&
    value.every((t) => typeof t === 'number' && Number.isInteger(t) && t >= 0 && t <= 0xffffffff)
  );
}

/**
 * Validates a `POST /v1/embeddings` body: `input` a string, a list of strings, a list of token ids or a
 * list of such lists; `encoding_format` float (default) or base64. `dimensions` is refused unless it is
 * absent (the model's own size is the only one).
 */
export function parseEmbeddingRequest(body: unknown): EmbeddingRequest {
  assertRequestObject(body, EMBEDDING_FIELDS);
  const raw = body.input;
  let inputs: (string | number[])[];
  if (typeof raw === 'string') inputs = [raw];
  else if (isTokenArray(raw)) inputs = [raw];
  else if (
    Array.isArray(raw) &&
    raw.length > 0 &&
    raw.length <= MAX_EMBEDDING_INPUTS &&
    raw.every((item) => typeof item === 'string' || isTokenArray(item))
  )
    inputs = raw as (string | number[])[];
  else throw invalid('input', `input must be a string, a list of 1 to ${MAX_EMBEDDING_INPUTS} strings, or token ids`);
  if (inputs.some((input) => input.length === 0)) throw invalid('input', 'an input must not be empty');
  let encoding: 'float' | 'base64' = 'float';
  if (present(body, 'encoding_format')) {
    if (body.encoding_format !== 'float' && body.encoding_format !== 'base64')
      throw invalid('encoding_format', 'encoding_format must be float or base64');
    encoding = body.encoding_format;
  }
  if (present(body, 'dimensions'))
    throw invalid('dimensions', 'dimensions is not supported: the model has one embedding size', 'unsupported_value');
  checkUser(body);
  return { kind: 'embedding', model: modelOf(body), inputs, encoding };
}

export type FinishReason = 'stop' | 'length' | 'tool_calls';

export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
}

/** The `usage` object of a response: the prompt's and the answer's tokens, and their sum. */
export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

export interface ResponseMeta {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

/** The fields every completion object and chunk starts with. */
function envelope(meta: ResponseMeta, object: string): { id: string; object: string; created: number; model: string } {
  return { id: meta.id, object, created: meta.created, model: meta.model };
}

/** The `tool_calls` of an assistant message in OpenAI's shape. */
export function toolCallsBody(calls: readonly ToolCall[]): object[] {
  return calls.map((call) => ({
    id: call.id,
    type: 'function',
    function: { name: call.name, arguments: call.arguments },
  }));
}

/** A whole `chat.completion`: one choice holding the message (with its tool calls, if any) and the usage. */
export function chatCompletionBody(
  meta: ResponseMeta,
  content: string,
  finishReason: FinishReason,
  usage: Usage,
  toolCalls: readonly ToolCall[] = [],
): object {
  const message =
    toolCalls.length === 0
      ? { role: 'assistant', content, refusal: null }
      : {
          role: 'assistant',
          content: content.length === 0 ? null : content,
          refusal: null,
          tool_calls: toolCallsBody(toolCalls),
        };
  return {
    ...envelope(meta, 'chat.completion'),
    choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason }],
    usage,
  };
}

/** A streamed tool-call delta: the first for a call carries id, type and name; later ones argument text. */
export interface ToolCallDelta {
  readonly index: number;
  readonly id?: string;
  readonly type?: 'function';
  readonly function: { readonly name?: string; readonly arguments: string };
}

/** One `chat.completion.chunk`. The first carries the role; the last carries `finish_reason`. */
export function chatChunkBody(
  meta: ResponseMeta,
  delta: { role?: 'assistant'; content?: string | null; tool_calls?: readonly ToolCallDelta[] },
  finishReason: FinishReason | null,
): object {
  return {
    ...envelope(meta, 'chat.completion.chunk'),
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

/** The usage chunk sent last when `stream_options.include_usage` is true (empty `choices`). */
export function chatUsageChunkBody(meta: ResponseMeta, usage: Usage): object {
  return { ...envelope(meta, 'chat.completion.chunk'), choices: [], usage };
}

/**
 * A `text_completion`: the whole answer with its usage, or (streaming) one piece of it with `usage` null,
 * the last piece carrying `finishReason`.
 */
export function completionBody(
  meta: ResponseMeta,
  text: string,
  finishReason: FinishReason | null,
  usage: Usage | null,
): object {
  return {
    ...envelope(meta, 'text_completion'),
    choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason }],
    ...(usage === null ? {} : { usage }),
  };
}

/** The usage chunk a streamed completion sends last when `stream_options.include_usage` is true. */
export function completionUsageChunkBody(meta: ResponseMeta, usage: Usage): object {
  return { ...envelope(meta, 'text_completion'), choices: [], usage };
}

/** One model object (`GET /v1/models/{id}`). */
export function modelBody(modelId: string, created: number): object {
  return { id: modelId, object: 'model', created, owned_by: 'companion' };
}

/** The model list (`GET /v1/models`): the one model served. */
export function modelsBody(modelId: string, created: number): object {
  return { object: 'list', data: [modelBody(modelId, created)] };
}

/** `POST /v1/embeddings`: one vector per input, as floats or as base64 of little-endian float32. */
export function embeddingsBody(
  model: string,
  vectors: readonly (readonly number[])[],
  encoding: 'float' | 'base64',
  promptTokens: number,
): object {
  return {
    object: 'list',
    data: vectors.map((vector, index) => ({
      object: 'embedding',
      index,
      embedding: encoding === 'float' ? vector : base64Float32(vector),
    })),
    model,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}

/** What the OpenAI SDK decodes for `encoding_format: "base64"`: float32 little-endian, base64. */
export function base64Float32(vector: readonly number[]): string {
  const bytes = new Uint8Array(vector.length * 4);
  const view = new DataView(bytes.buffer);
  vector.forEach((value, i) => view.setFloat32(i * 4, value, true));
  return Buffer.from(bytes).toString('base64');
}

/** One server-sent event carrying `value` as JSON. */
export function sseData(value: object): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

export const SSE_DONE = 'data: [DONE]\n\n';
