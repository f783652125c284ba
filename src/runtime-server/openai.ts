/**
 * The OpenAI-compatible wire format of the bundled runtime: request validation and response shapes, with
 * no I/O. Shapes follow the OpenAI API reference for chat completions and (legacy) completions, so the
 * official `openai` SDK parses them: https://platform.openai.com/docs/api-reference/chat
 *
 * Only what the runtime supports is accepted: one choice (`n` 1), text content, no tools, no logprobs.
 * Anything else is refused with a 400 rather than silently ignored. Unknown fields are ignored, as the
 * OpenAI API does for forward compatibility.
 */

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

  /** The JSON body. The message never echoes request content (it names parameters only). */
  body(): { error: { message: string; type: string; code: string; param: string | null } } {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

function invalid(param: string, message: string, code = 'invalid_value'): ApiError {
  return new ApiError(400, 'invalid_request_error', code, message, param);
}

export type Role = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  readonly role: Role;
  readonly content: string;
}

export interface Sampling {
  /** Upper bound on generated tokens; `undefined` = until the context is full or the model stops. */
  readonly maxTokens: number | undefined;
  readonly temperature: number;
  readonly topP: number | undefined;
  /** Unsigned 32-bit seed of the sampler; `undefined` = random. */
  readonly seed: number | undefined;
  readonly stop: readonly string[];
}

interface Common {
  readonly stream: boolean;
  readonly includeUsage: boolean;
  readonly sampling: Sampling;
}

export interface ChatRequest extends Common {
  readonly kind: 'chat';
  readonly messages: readonly ChatMessage[];
}

export interface CompletionRequest extends Common {
  readonly kind: 'completion';
  readonly prompt: string;
}

const MAX_STOP = 4;
const MAX_STOP_LENGTH = 256;
const MAX_MESSAGES = 4096;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function present(body: Record<string, unknown>, key: string): boolean {
  return body[key] !== undefined && body[key] !== null;
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

function parseSampling(body: Record<string, unknown>): Sampling {
  const maxTokens = integerIn(body, 'max_completion_tokens', 1, 1 << 24) ?? integerIn(body, 'max_tokens', 1, 1 << 24);
  const temperature = numberIn(body, 'temperature', 0, 2) ?? 1;
  const topP = numberIn(body, 'top_p', 0, 1);
  const rawSeed = integerIn(body, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  // OpenAI seeds are 64-bit integers; the sampler takes 32 bits.
  const seed = rawSeed === undefined ? undefined : ((rawSeed % 2 ** 32) + 2 ** 32) % 2 ** 32;
  let stop: string[] = [];
  if (present(body, 'stop')) {
    const raw = body.stop;
    const list = typeof raw === 'string' ? [raw] : raw;
    if (!Array.isArray(list) || list.length > MAX_STOP || !list.every((s) => typeof s === 'string' && s.length > 0 && s.length <= MAX_STOP_LENGTH)) {
      throw invalid('stop', `stop must be a string or up to ${MAX_STOP} non-empty strings of at most ${MAX_STOP_LENGTH} characters`);
    }
    stop = list as string[];
  }
  return { maxTokens, temperature, topP: topP === undefined || topP >= 1 ? undefined : topP, seed, stop };
}

function parseCommon(body: Record<string, unknown>): Common {
  const n = integerIn(body, 'n', 1, 128);
  if (n !== undefined && n !== 1) throw invalid('n', 'only n = 1 is supported', 'unsupported_value');
  if (present(body, 'logprobs') && body.logprobs !== false) throw invalid('logprobs', 'logprobs are not supported', 'unsupported_value');
  if (present(body, 'tools') && !(Array.isArray(body.tools) && body.tools.length === 0)) {
    throw invalid('tools', 'tools are not supported by this runtime', 'unsupported_value');
  }
  if (present(body, 'functions')) throw invalid('functions', 'functions are not supported by this runtime', 'unsupported_value');
  if (present(body, 'response_format')) {
    const format = body.response_format;
    if (!isObject(format) || format.type !== 'text') throw invalid('response_format', 'only response_format text is supported', 'unsupported_value');
  }
  const stream = booleanOf(body, 'stream') ?? false;
  let includeUsage = false;
  if (present(body, 'stream_options')) {
    const options = body.stream_options;
    if (!isObject(options)) throw invalid('stream_options', 'stream_options must be an object');
    if (present(options, 'include_usage')) {
      if (typeof options.include_usage !== 'boolean') throw invalid('stream_options', 'stream_options.include_usage must be a boolean');
      includeUsage = options.include_usage;
    }
  }
  return { stream, includeUsage, sampling: parseSampling(body) };
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

/** Validates a `POST /v1/chat/completions` body. Throws {@link ApiError} (400) on anything unsupported. */
export function parseChatRequest(body: unknown): ChatRequest {
  if (!isObject(body)) throw invalid('body', 'the request body must be a JSON object', 'invalid_body');
  const raw = body.messages;
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_MESSAGES) {
    throw invalid('messages', `messages must be an array of 1 to ${MAX_MESSAGES} messages`);
  }
  const messages = raw.map((message: unknown, index): ChatMessage => {
    if (!isObject(message)) throw invalid(`messages[${index}]`, 'each message must be an object');
    const declared = message.role;
    let role: Role;
    if (declared === 'system' || declared === 'developer') role = 'system';
    else if (declared === 'user' || declared === 'assistant') role = declared;
    else throw invalid(`messages[${index}].role`, 'role must be system, developer, user or assistant', 'unsupported_value');
    if (role === 'assistant' && present(message, 'tool_calls')) {
      throw invalid(`messages[${index}].tool_calls`, 'tool calls are not supported', 'unsupported_value');
    }
    return { role, content: messageText(message.content, index, role) };
  });
  return { kind: 'chat', messages, ...parseCommon(body) };
}

/** Validates a `POST /v1/completions` body (one prompt string, or an array holding one). */
export function parseCompletionRequest(body: unknown): CompletionRequest {
  if (!isObject(body)) throw invalid('body', 'the request body must be a JSON object', 'invalid_body');
  let prompt = body.prompt;
  if (Array.isArray(prompt) && prompt.length === 1) prompt = prompt[0];
  if (typeof prompt !== 'string') throw invalid('prompt', 'prompt must be a string (or an array of one string)');
  if (booleanOf(body, 'echo') === true) throw invalid('echo', 'echo is not supported', 'unsupported_value');
  if (present(body, 'suffix')) throw invalid('suffix', 'suffix is not supported', 'unsupported_value');
  if (present(body, 'best_of') && body.best_of !== 1) throw invalid('best_of', 'only best_of = 1 is supported', 'unsupported_value');
  return { kind: 'completion', prompt, ...parseCommon(body) };
}

export type FinishReason = 'stop' | 'length';

export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
}

export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

export interface ResponseMeta {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

export function chatCompletionBody(meta: ResponseMeta, content: string, finishReason: FinishReason, usage: Usage): object {
  return {
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: finishReason }],
    usage,
  };
}

/** One `chat.completion.chunk`. The first carries the role; the last carries `finish_reason`. */
export function chatChunkBody(meta: ResponseMeta, delta: { role?: 'assistant'; content?: string }, finishReason: FinishReason | null): object {
  return {
    id: meta.id,
    object: 'chat.completion.chunk',
    created: meta.created,
    model: meta.model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

/** The usage chunk sent last when `stream_options.include_usage` is true (empty `choices`). */
export function chatUsageChunkBody(meta: ResponseMeta, usage: Usage): object {
  return { id: meta.id, object: 'chat.completion.chunk', created: meta.created, model: meta.model, choices: [], usage };
}

export function completionBody(meta: ResponseMeta, text: string, finishReason: FinishReason | null, usage: Usage | null): object {
  return {
    id: meta.id,
    object: 'text_completion',
    created: meta.created,
    model: meta.model,
    choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason }],
    ...(usage === null ? {} : { usage }),
  };
}

export function completionUsageChunkBody(meta: ResponseMeta, usage: Usage): object {
  return { id: meta.id, object: 'text_completion', created: meta.created, model: meta.model, choices: [], usage };
}

export function modelsBody(modelId: string, created: number): object {
  return { object: 'list', data: [{ id: modelId, object: 'model', created, owned_by: 'companion' }] };
}

/** One server-sent event carrying `value` as JSON. */
export function sseData(value: object): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

export const SSE_DONE = 'data: [DONE]\n\n';
