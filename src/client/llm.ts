/**
 * The LLM client: one call path for local callers (a hub product's local daemon, the CLI's `run`).
 * Each call asks the lane selector with its context tier and the companion's availability, then goes
 * to the companion's front door (with the loopback token) or to the configured cloud endpoint, over the
 * same OpenAI-compatible API. A `local-only` call never reaches the cloud.
 */
import { CompanionError } from '../core/errors.js';
import { selectLane, type ContextTier, type LanePreference } from '../core/lane.js';

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
}

export interface Endpoint {
  /** Base URL of an OpenAI-compatible API, without `/v1`. */
  readonly url: string;
  /** Bearer token: the loopback token for the companion, the API key for the cloud. */
  readonly token: string;
  readonly model?: string;
}

export interface LlmClientOptions {
  /** The companion's endpoint, or null when there is none (not running). */
  readonly local: () => Endpoint | null | Promise<Endpoint | null>;
  /** Whether the companion is available now (D5.7). Anything but `true` counts as not available. */
  readonly companionAvailable: () => boolean | Promise<boolean>;
  /** The cloud lane; absent means the cloud lane is refused. */
  readonly cloud?: Endpoint;
  readonly preference?: LanePreference;
  /** Whether `private` data may go to the cloud when the companion is not available (default false). */
  readonly privateMayUseCloud?: boolean;
  /** fetch to use (tests, custom TLS); default the global fetch. */
  readonly fetch?: typeof globalThis.fetch;
  readonly timeoutMs?: number;
}

export interface CompleteRequest {
  readonly messages: readonly ChatMessage[];
  readonly tier: ContextTier;
  readonly stream?: boolean;
  readonly maxTokens?: number;
  readonly temperature?: number;
  readonly seed?: number;
  readonly stop?: readonly string[];
  /** Called with each piece of text as it streams. */
  readonly onToken?: (text: string) => void;
  readonly signal?: AbortSignal;
  /** The model id sent; default the endpoint's own `model`, then none to the companion, `default` to the cloud. */
  readonly model?: string;
  /** Called with the selected lane before anything is sent; a throw stops the call (nothing is sent). */
  readonly onLane?: (lane: 'companion' | 'cloud') => void;
}

export interface CompleteResult {
  readonly lane: 'companion' | 'cloud';
  readonly text: string;
  readonly finishReason: string | null;
  readonly usage: { readonly promptTokens: number; readonly completionTokens: number } | null;
}

interface ChatChoice {
  message?: { content?: string | null };
  delta?: { content?: string | null };
  text?: string;
  finish_reason?: string | null;
}

interface ChatResponse {
  choices?: ChatChoice[];
  usage?: { prompt_tokens?: number; completion_tokens?: number };
  error?: { message?: string; code?: string };
}

async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let index: number;
      while ((index = buffer.search(/\r?\n\r?\n/)) !== -1) {
        const block = buffer.slice(0, index);
        buffer = buffer.slice(index).replace(/^\r?\n\r?\n/, '');
        const data = block
          .split(/\r?\n/)
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trimStart())
          .join('\n');
        if (data.length > 0) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** What a client works over: its options and the fetch it was created with. */
interface ClientContext {
  readonly options: LlmClientOptions;
  readonly fetch: typeof globalThis.fetch;
}

type Lane = 'companion' | 'cloud';

/**
 * Creates a client. See {@link LlmClientOptions}.
 * `complete()` rejects with ERR_LANE_* when no lane may take the call (ERR_LANE_CLOUD_NOT_ALLOWED when the
 * cloud would be needed and none is configured), ERR_UPSTREAM_UNAVAILABLE when the endpoint fails, and
 * ERR_ADMISSION_QUEUE_FULL / ERR_ADMISSION_NOT_READY when it answers 429 / 503.
 */
export function createLlmClient(options: LlmClientOptions) {
  const ctx: ClientContext = { options, fetch: options.fetch ?? globalThis.fetch };
  return {
    /**
     * One chat completion through the selected lane.
     * @throws ERR_LANE_* when no lane may take the call, ERR_UPSTREAM_UNAVAILABLE when the endpoint fails.
     */
    complete: (request: CompleteRequest): Promise<CompleteResult> => complete(ctx, request),
    /** The lane a call of `tier` takes now, and its endpoint. @throws ERR_LANE_* when none may take it. */
    route: (tier: ContextTier): Promise<{ lane: Lane; endpoint: Endpoint }> => route(options, tier),
  };
}

async function route(options: LlmClientOptions, tier: ContextTier): Promise<{ lane: Lane; endpoint: Endpoint }> {
  let available = false;
  let local: Endpoint | null = null;
  try {
    available = (await options.companionAvailable()) === true;
    local = available ? await options.local() : null;
  } catch {
    available = false; // doubt counts as unavailable
  }
  const decision = selectLane({
    tier,
    companionAvailable: available && local !== null,
    policy: {
      preference: options.preference ?? 'prefer-local',
      privateMayUseCloud: options.privateMayUseCloud ?? false,
    },
  });
  if ('refused' in decision) throw new CompanionError(decision.code);
  if (decision.lane === 'companion') return { lane: 'companion', endpoint: local! };
  if (options.cloud === undefined)
    throw new CompanionError(
      'ERR_LANE_CLOUD_NOT_ALLOWED',
      'no cloud endpoint is configured and the companion is not available',
    );
  return { lane: 'cloud', endpoint: options.cloud };
}

async function complete(ctx: ClientContext, request: CompleteRequest): Promise<CompleteResult> {
  const { lane, endpoint } = await route(ctx.options, request.tier);
  request.onLane?.(lane);
  const stream = request.stream === true;
  const response = await post(ctx, lane, endpoint, request);
  if (!response.ok) throw await refusal(lane, response);
  if (!stream) return readCompletion(lane, response, request);
  if (response.body === null) throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the stream has no body');
  return readStream(lane, response.body, request);
}

/** The request body of the OpenAI-compatible `/v1/chat/completions`. */
function requestBody(lane: Lane, endpoint: Endpoint, request: CompleteRequest): Record<string, unknown> {
  const stream = request.stream === true;
  // The companion's runtime refuses a model id it does not serve (404); without one it answers with its own.
  const model = request.model ?? endpoint.model ?? (lane === 'companion' ? undefined : 'default');
  return {
    ...(model === undefined ? {} : { model }),
    messages: request.messages,
    stream,
    ...(request.maxTokens !== undefined ? { max_tokens: request.maxTokens } : {}),
    ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    ...(request.seed !== undefined ? { seed: request.seed } : {}),
    ...(request.stop !== undefined ? { stop: request.stop } : {}),
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  };
}

/** Sends the call, bounded by the client's timeout; ERR_UPSTREAM_UNAVAILABLE when the endpoint cannot be reached. */
async function post(ctx: ClientContext, lane: Lane, endpoint: Endpoint, request: CompleteRequest): Promise<Response> {
  const stream = request.stream === true;
  const body = requestBody(lane, endpoint, request);
  const timeout = AbortSignal.timeout(ctx.options.timeoutMs ?? 120_000);
  const signal = request.signal ? AbortSignal.any([request.signal, timeout]) : timeout;
  try {
    return await ctx.fetch(new URL('/v1/chat/completions', endpoint.url), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${endpoint.token}`,
        'content-type': 'application/json',
        accept: stream ? 'text/event-stream' : 'application/json',
      },
      body: JSON.stringify(body),
      signal,
    });
  } catch {
    throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', `the ${lane} endpoint could not be reached`);
  }
}

/** The error for a non-2xx answer: 429 and 503 keep the front door's admission codes. */
async function refusal(lane: Lane, response: Response): Promise<CompanionError> {
  let code = '';
  try {
    code = ((await response.json()) as ChatResponse).error?.code ?? '';
  } catch {
    // not JSON
  }
  const statusCode =
    response.status === 429
      ? 'ERR_ADMISSION_QUEUE_FULL'
      : response.status === 503
        ? 'ERR_ADMISSION_NOT_READY'
        : 'ERR_UPSTREAM_UNAVAILABLE';
  return new CompanionError(statusCode, `the ${lane} endpoint answered ${response.status}${code ? ` (${code})` : ''}`, {
    detail: { status: response.status },
  });
}

function usageOf(usage: ChatResponse['usage']): CompleteResult['usage'] {
  return usage ? { promptTokens: usage.prompt_tokens ?? 0, completionTokens: usage.completion_tokens ?? 0 } : null;
}

/** A whole (non-streamed) answer. */
async function readCompletion(lane: Lane, response: Response, request: CompleteRequest): Promise<CompleteResult> {
  const json = (await response.json()) as ChatResponse;
  const choice = json.choices?.[0];
  const text = choice?.message?.content ?? '';
  request.onToken?.(text);
  return { lane, text, finishReason: choice?.finish_reason ?? null, usage: usageOf(json.usage) };
}

/** A streamed answer: it counts only when it ends with `[DONE]`; an error event or a cut is ERR_UPSTREAM_UNAVAILABLE. */
async function readStream(
  lane: Lane,
  body: ReadableStream<Uint8Array>,
  request: CompleteRequest,
): Promise<CompleteResult> {
  let text = '';
  let finishReason: string | null = null;
  let usage: CompleteResult['usage'] = null;
  let done = false;
  try {
    for await (const data of sseEvents(body)) {
      if (data === '[DONE]') {
        done = true;
        break;
      }
      const event = JSON.parse(data) as ChatResponse;
      if (event.error) throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the stream ended with an error');
      const choice = event.choices?.[0];
      const piece = choice?.delta?.content ?? '';
      if (piece.length > 0) {
        text += piece;
        request.onToken?.(piece);
      }
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      if (event.usage) usage = usageOf(event.usage);
    }
  } catch (error) {
    if (error instanceof CompanionError) throw error;
    throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the stream was cut');
  }
  if (!done) throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the stream ended before [DONE]');
  return { lane, text, finishReason, usage };
}

/** The client {@link createLlmClient} returns. */
export type LlmClient = ReturnType<typeof createLlmClient>;
