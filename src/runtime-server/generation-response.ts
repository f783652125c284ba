/**
 * The answers of the generation routes: a chat or completion as one JSON body, or streamed as
 * server-sent events (OpenAI's chunk shapes, ending with `[DONE]`), and embeddings.
 */
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import {
  ClientGoneError,
  type ChatOptions,
  type Engine,
  type GenerationHooks,
  type GenerationResult,
} from './engine.js';
import { errorFromGeneration, sendJson } from './http-reply.js';
import type { InFlight } from './in-flight.js';
import {
  chatChunkBody,
  chatCompletionBody,
  chatUsageChunkBody,
  completionBody,
  completionUsageChunkBody,
  embeddingsBody,
  sseData,
  SSE_DONE,
  usageOf,
  type ChatRequest,
  type CompletionRequest,
  type EmbeddingRequest,
  type ResponseMeta,
  type ToolCallDelta,
} from './openai.js';

type GenerationRequest = ChatRequest | CompletionRequest;

/** One generation being answered: the response, its ids, the request, the engine and the cancel signal. */
interface Exchange {
  readonly res: ServerResponse;
  readonly meta: ResponseMeta;
  readonly request: GenerationRequest;
  readonly engine: Engine;
  readonly signal: AbortSignal;
}

/** Answers a chat or completion request, streamed when it asks for a stream; cancelled if the client leaves. */
export async function generate(
  inFlight: InFlight,
  res: ServerResponse,
  request: GenerationRequest,
  engine: Engine,
  modelId: string,
): Promise<void> {
  const meta: ResponseMeta = {
    id: `${request.kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`,
    created: Math.floor(Date.now() / 1000),
    model: modelId,
  };
  await inFlight.cancellable(res, (signal) => {
    const exchange: Exchange = { res, meta, request, engine, signal };
    return request.stream ? stream(exchange) : answer(exchange);
  });
}

/** Answers an embeddings request; cancelled if the client leaves. */
export async function embed(
  inFlight: InFlight,
  res: ServerResponse,
  request: EmbeddingRequest,
  engine: Engine,
  modelId: string,
): Promise<void> {
  await inFlight.cancellable(res, async (signal) => {
    const result = await engine.embed(request.inputs, signal);
    sendJson(res, 200, embeddingsBody(modelId, result.vectors, request.encoding, result.promptTokens));
  });
}

/** Runs the request on the engine: chat with its options, or completion. */
function run(engine: Engine, request: GenerationRequest, hooks: GenerationHooks): Promise<GenerationResult> {
  if (request.kind === 'completion') return engine.complete(request.prompt, request.sampling, hooks);
  const options: ChatOptions = {
    format: request.responseFormat,
    tools: request.tools,
    toolChoice: request.toolChoice,
    parallelToolCalls: request.parallelToolCalls,
  };
  return engine.chat(request.messages, request.sampling, options, hooks);
}

/** The whole answer as one JSON body. */
async function answer({ res, meta, request, engine, signal }: Exchange): Promise<void> {
  const result = await run(engine, request, { signal });
  const usage = usageOf(result.promptTokens, result.completionTokens);
  sendJson(
    res,
    200,
    request.kind === 'chat'
      ? chatCompletionBody(meta, result.text, result.finishReason, usage, result.toolCalls)
      : completionBody(meta, result.text, result.finishReason, usage),
  );
}

/** The answer as server-sent events: the text and tool calls as they come, then the finish (and usage). */
async function stream(exchange: Exchange): Promise<void> {
  const { request, engine, signal } = exchange;
  const events = new EventStream(exchange);
  let result: GenerationResult;
  try {
    // Validation errors (prompt too long, queue full) still get a plain JSON error: nothing was sent yet.
    result = await run(
      engine,
      request,
      request.kind === 'chat'
        ? { signal, onText: events.onText, onToolCall: events.onToolCall }
        : { signal, onText: events.onText },
    );
  } catch (error) {
    if (!events.started) throw error;
    events.fail(error);
    return;
  }
  events.finish(result);
}

/** One streamed answer: its headers are sent with the first event, so an early error is still plain JSON. */
class EventStream {
  readonly #res: ServerResponse;
  readonly #meta: ResponseMeta;
  readonly #request: GenerationRequest;
  readonly #signal: AbortSignal;
  #started = false;

  constructor({ res, meta, request, signal }: Exchange) {
    this.#res = res;
    this.#meta = meta;
    this.#request = request;
    this.#signal = signal;
  }

  /** True once the headers (and for a chat, the role chunk) were sent. */
  get started(): boolean {
    return this.#started;
  }

  /** Streams a piece of generated text. */
  readonly onText = (text: string): void => {
    if (text.length === 0 || this.#signal.aborted) return;
    this.#start();
    this.#res.write(
      sseData(
        this.#request.kind === 'chat'
          ? chatChunkBody(this.#meta, { content: text }, null)
          : completionBody(this.#meta, text, null, null),
      ),
    );
  };

  /** OpenAI streams a tool call as deltas with its index: id, type and name first, then argument text. */
  readonly onToolCall = (delta: ToolCallDelta): void => {
    if (this.#signal.aborted) return;
    this.#start();
    this.#res.write(sseData(chatChunkBody(this.#meta, { tool_calls: [delta] }, null)));
  };

  /** Ends the stream with the finish reason, the usage when asked, and `[DONE]`. */
  finish(result: GenerationResult): void {
    this.#start();
    const usage = usageOf(result.promptTokens, result.completionTokens);
    if (this.#request.kind === 'chat') {
      this.#res.write(sseData(chatChunkBody(this.#meta, {}, result.finishReason)));
      if (this.#request.includeUsage) this.#res.write(sseData(chatUsageChunkBody(this.#meta, usage)));
    } else {
      this.#res.write(sseData(completionBody(this.#meta, '', result.finishReason, null)));
      if (this.#request.includeUsage) this.#res.write(sseData(completionUsageChunkBody(this.#meta, usage)));
    }
    this.#res.end(SSE_DONE);
  }

  /** Ends a started stream after a failure: with an error event (no `[DONE]`), unless the client is gone. */
  fail(error: unknown): void {
    if (!(this.#signal.reason instanceof ClientGoneError)) this.#res.write(sseData(errorFromGeneration(error).body()));
    this.#res.end();
  }

  #start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    });
    this.#res.flushHeaders();
    if (this.#request.kind === 'chat')
      this.#res.write(sseData(chatChunkBody(this.#meta, { role: 'assistant', content: '' }, null)));
  }
}
