/**
 * The HTTP side of the bundled runtime: plain node:http, OpenAI-compatible routes, no framework.
 *
 *   GET  /health                 {"status":"ok","parallel":P,"contextSize":C,"sequences":{"active","peak"}}
 *                                once the model is loaded (503 before); `peak`: most sequences that ever
 *                                generated at once (llama.cpp batched them)
 *   GET  /v1/models              the one model
 *   GET  /v1/models/{id}         that model, or 404 `model_not_found`
 *   POST /v1/chat/completions    streaming (SSE) and not; response_format, tools
 *   POST /v1/completions         streaming (SSE) and not
 *   POST /v1/embeddings          from an embedding context on the loaded model
 *
 * A request naming a `model` other than the loaded one gets 404 `model_not_found`.
 *
 * In loopback-TCP mode every request needs `Authorization: Bearer <per-spawn key>` (compared in constant
 * time) and a `Host` that names the bound port; a Unix socket relies on its 0600 mode inside a 0700
 * directory. No mode ever sends CORS headers, and OPTIONS is refused like any unknown method.
 * Request and response bodies are never logged.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ClientGoneError, type ChatOptions, type Engine, type GenerationResult } from './engine.js';
import {
  ApiError,
  chatChunkBody,
  chatCompletionBody,
  chatUsageChunkBody,
  completionBody,
  completionUsageChunkBody,
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
  type ChatRequest,
  type CompletionRequest,
  type EmbeddingRequest,
  type ResponseMeta,
  type ToolCallDelta,
} from './openai.js';

/** A model id in `/v1/models/{id}`: the same shape the front door's guard lets through. */
const MODEL_SEGMENT = /^[A-Za-z0-9._:-]{1,128}$/;

/** Default request body limit: 1 MiB. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;
/** How much of an oversized body is read and dropped before the connection is cut. */
const DISCARD_LIMIT = 16 * 1024 * 1024;

export interface RuntimeServerOptions {
  readonly modelId: string;
  /** The engine once the model is loaded; `null` while loading (requests get 503). */
  readonly engine: () => Engine | null;
  /** Loopback-TCP mode: the per-spawn key and the Host values allowed (set after bind). */
  readonly tcp?: { readonly key: string; readonly allowedHosts: () => ReadonlySet<string> };
  readonly bodyLimit?: number;
}

export interface RuntimeServer {
  readonly server: Server;
  /** Cancels every generation in flight (shutdown); their clients get a 503 `shutting_down` error. */
  abortAll(): void;
  /** Resolves when no generation is in flight. */
  idle(): Promise<void>;
  readonly inFlight: number;
}

const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
};

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

function sendJson(res: ServerResponse, status: number, body: object): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, error: ApiError, extraHeaders: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(error.body());
  res.writeHead(error.status, { ...JSON_HEADERS, ...extraHeaders, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The values of every `Host` header as sent (Node keeps only the first in `headers.host`). */
function hostHeaders(req: IncomingMessage): string[] {
  const hosts: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === 'host') hosts.push(req.rawHeaders[i + 1]!);
  }
  return hosts;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      reject(new ApiError(413, 'invalid_request_error', 'body_too_large', `the request body exceeds ${limit} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(new ApiError(413, 'invalid_request_error', 'body_too_large', `the request body exceeds ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', (error) => {
      if (!failed) {
        failed = true;
        reject(error);
      }
    });
  });
}

function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  return value.split(';')[0]!.trim().toLowerCase() === 'application/json';
}

function errorFromGeneration(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  // A generation failure is reported by kind only: its message may quote model output or paths.
  return new ApiError(500, 'server_error', 'generation_failed', 'the generation failed');
}

/**
 * Creates the runtime's HTTP server (not yet listening). main.ts serves it on the listening descriptor
 * the companion bound and handed over (fd 4).
 */
export function createRuntimeServer(options: RuntimeServerOptions): RuntimeServer {
  const limit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const keyDigest = options.tcp === undefined ? undefined : digest(options.tcp.key);
  const controllers = new Set<AbortController>();
  let idleWaiters: (() => void)[] = [];
  const created = Math.floor(Date.now() / 1000);

  function track(controller: AbortController): () => void {
    controllers.add(controller);
    return () => {
      controllers.delete(controller);
      if (controllers.size === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    };
  }

  /** Loopback-TCP checks. Returns an error to send, or null when the request may proceed. */
  function guard(req: IncomingMessage): ApiError | null {
    const tcp = options.tcp;
    if (tcp === undefined || keyDigest === undefined) return null;
    const hosts = hostHeaders(req);
    // One Host header, naming exactly the bound loopback port (DNS rebinding, P-a).
    if (hosts.length !== 1 || !tcp.allowedHosts().has(hosts[0]!.toLowerCase())) {
      return new ApiError(403, 'invalid_request_error', 'host_not_allowed', 'the Host header is not allowed');
    }
    const header = req.headers.authorization;
    const match = header === undefined ? null : /^Bearer ([^\s]+)$/.exec(header);
    // Hash both sides so the comparison is constant-time whatever the lengths.
    if (match === null || !timingSafeEqual(digest(match[1]!), keyDigest)) {
      return new ApiError(401, 'authentication_error', 'invalid_api_key', 'a valid bearer key is required');
    }
    return null;
  }

  /**
   * Runs `work` with a signal that aborts when the client goes away before the response finished; an error
   * is answered in OpenAI's shape, except after the client left (nobody to answer).
   */
  async function cancellable(res: ServerResponse, work: (signal: AbortSignal) => Promise<void>): Promise<void> {
    const controller = new AbortController();
    const untrack = track(controller);
    const onClose = (): void => {
      if (!res.writableFinished) controller.abort(new ClientGoneError());
    };
    res.on('close', onClose);
    try {
      await work(controller.signal);
    } catch (error) {
      if (controller.signal.reason instanceof ClientGoneError) return;
      sendError(res, errorFromGeneration(controller.signal.aborted ? controller.signal.reason : error));
    } finally {
      res.off('close', onClose);
      untrack();
    }
  }

  async function generate(
    req: IncomingMessage,
    res: ServerResponse,
    request: ChatRequest | CompletionRequest,
    engine: Engine,
  ): Promise<void> {
    const meta: ResponseMeta = {
      id: `${request.kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`,
      created: Math.floor(Date.now() / 1000),
      model: options.modelId,
    };
    const chatOptions: ChatOptions | undefined =
      request.kind === 'chat'
        ? {
            format: request.responseFormat,
            tools: request.tools,
            toolChoice: request.toolChoice,
            parallelToolCalls: request.parallelToolCalls,
          }
        : undefined;
    await cancellable(res, async (signal) => {
      if (!request.stream) {
        const result =
          request.kind === 'chat'
            ? await engine.chat(request.messages, request.sampling, chatOptions!, { signal: signal })
            : await engine.complete(request.prompt, request.sampling, { signal: signal });
        const usage = usageOf(result.promptTokens, result.completionTokens);
        sendJson(
          res,
          200,
          request.kind === 'chat'
            ? chatCompletionBody(meta, result.text, result.finishReason, usage, result.toolCalls)
            : completionBody(meta, result.text, result.finishReason, usage),
        );
        return;
      }
      let started = false;
      const start = (): void => {
        if (started) return;
        started = true;
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-store',
          'x-content-type-options': 'nosniff',
        });
        res.flushHeaders();
        if (request.kind === 'chat') res.write(sseData(chatChunkBody(meta, { role: 'assistant', content: '' }, null)));
      };
      const onText = (text: string): void => {
        if (text.length === 0 || signal.aborted) return;
        start();
        res.write(
          sseData(
            request.kind === 'chat'
              ? chatChunkBody(meta, { content: text }, null)
              : completionBody(meta, text, null, null),
          ),
        );
      };
      // OpenAI streams a tool call as deltas with its index: id, type and name first, then argument text.
      const onToolCall = (delta: ToolCallDelta): void => {
        if (signal.aborted) return;
        start();
        res.write(sseData(chatChunkBody(meta, { tool_calls: [delta] }, null)));
      };
      let result: GenerationResult;
      try {
        // Validation errors (prompt too long, queue full) still get a plain JSON error: nothing was sent yet.
        result =
          request.kind === 'chat'
            ? await engine.chat(request.messages, request.sampling, chatOptions!, {
                signal: signal,
                onText,
                onToolCall,
              })
            : await engine.complete(request.prompt, request.sampling, { signal: signal, onText });
      } catch (error) {
        if (!started) throw error;
        // The client is gone: nobody to tell. Otherwise the stream ends with an error event, no [DONE].
        if (!(signal.reason instanceof ClientGoneError)) res.write(sseData(errorFromGeneration(error).body()));
        res.end();
        return;
      }
      start();
      const usage = usageOf(result.promptTokens, result.completionTokens);
      if (request.kind === 'chat') {
        res.write(sseData(chatChunkBody(meta, {}, result.finishReason)));
        if (request.includeUsage) res.write(sseData(chatUsageChunkBody(meta, usage)));
      } else {
        res.write(sseData(completionBody(meta, '', result.finishReason, null)));
        if (request.includeUsage) res.write(sseData(completionUsageChunkBody(meta, usage)));
      }
      res.end(SSE_DONE);
    });
  }

  async function embed(res: ServerResponse, request: EmbeddingRequest, engine: Engine): Promise<void> {
    await cancellable(res, async (signal) => {
      const result = await engine.embed(request.inputs, signal);
      sendJson(res, 200, embeddingsBody(options.modelId, result.vectors, request.encoding, result.promptTokens));
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.url ?? '';
    // Origin-form only: absolute-form and `//host` targets are refused, as is `OPTIONS *`.
    if (!target.startsWith('/') || target.startsWith('//')) {
      sendError(res, new ApiError(400, 'invalid_request_error', 'invalid_target', 'the request target must be a path'));
      return;
    }
    const refusal = guard(req);
    if (refusal !== null) {
      req.resume();
      sendError(res, refusal, refusal.status === 401 ? { 'www-authenticate': 'Bearer' } : {});
      return;
    }
    const path = target.split('?')[0]!;
    const routes: Record<string, string> = {
      '/health': 'GET',
      '/v1/models': 'GET',
      '/v1/chat/completions': 'POST',
      '/v1/completions': 'POST',
      '/v1/embeddings': 'POST',
    };
    // `/v1/models/{id}`: one segment, the front door's guard allows the same shape only.
    const modelPath = path.startsWith('/v1/models/') ? path.slice('/v1/models/'.length) : null;
    const method = modelPath !== null && MODEL_SEGMENT.test(modelPath) ? 'GET' : routes[path];
    if (method === undefined) {
      req.resume();
      sendError(res, new ApiError(404, 'invalid_request_error', 'not_found', 'no such route'));
      return;
    }
    if (req.method !== method) {
      req.resume();
      sendError(res, new ApiError(405, 'invalid_request_error', 'method_not_allowed', `use ${method} on this path`), {
        allow: method,
      });
      return;
    }
    const engine = options.engine();
    if (path === '/health') {
      if (engine === null) sendError(res, new ApiError(503, 'server_error', 'model_loading', 'the model is loading'));
      else
        sendJson(res, 200, {
          status: 'ok',
          parallel: engine.parallel,
          contextSize: engine.contextSize,
          sequences: engine.sequences(),
        });
      return;
    }
    if (path === '/v1/models') {
      sendJson(res, 200, modelsBody(options.modelId, created));
      return;
    }
    if (modelPath !== null) {
      if (modelPath === options.modelId) sendJson(res, 200, modelBody(options.modelId, created));
      else sendError(res, modelNotFound());
      return;
    }
    if (!isJsonContentType(req.headers['content-type'])) {
      req.resume();
      sendError(
        res,
        new ApiError(415, 'invalid_request_error', 'unsupported_media_type', 'the body must be application/json'),
      );
      return;
    }
    let body: unknown;
    try {
      const raw = await readBody(req, limit);
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw new ApiError(400, 'invalid_request_error', 'invalid_json', 'the body is not valid JSON');
      }
    } catch (error) {
      if (error instanceof ApiError) {
        if (error.status === 413) {
          // Answer at once and drop what the client still sends (bounded), so that it reads the answer
          // instead of failing on a reset; a client that keeps sending past the bound is cut off.
          let discarded = 0;
          req.on('data', (chunk: Buffer) => {
            discarded += chunk.length;
            if (discarded > DISCARD_LIMIT) req.socket.destroy();
          });
          req.resume();
          sendError(res, error);
        } else {
          sendError(res, error);
        }
      } else {
        res.destroy();
      }
      return;
    }
    if (engine === null) {
      sendError(res, new ApiError(503, 'server_error', 'model_loading', 'the model is loading'));
      return;
    }
    let request: ChatRequest | CompletionRequest | EmbeddingRequest;
    try {
      request =
        path === '/v1/chat/completions'
          ? parseChatRequest(body)
          : path === '/v1/embeddings'
            ? parseEmbeddingRequest(body)
            : parseCompletionRequest(body);
      // Why: answering for another model would pass one model's output off as another's.
      if (request.model !== undefined && request.model !== options.modelId) throw modelNotFound();
    } catch (error) {
      sendError(res, errorFromGeneration(error));
      return;
    }
    if (request.kind === 'embedding') await embed(res, request, engine);
    else await generate(req, res, request, engine);
  }

  const server = createServer({ maxHeaderSize: 16 * 1024 }, (req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) sendError(res, new ApiError(500, 'server_error', 'internal', 'internal error'));
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 60_000;
  server.keepAliveTimeout = 5_000;
  server.maxHeadersCount = 100;

  return {
    server,
    abortAll() {
      for (const controller of controllers)
        controller.abort(new ApiError(503, 'server_error', 'shutting_down', 'the runtime is shutting down'));
    },
    idle() {
      if (controllers.size === 0) return Promise.resolve();
      return new Promise((resolve) => idleWaiters.push(resolve));
    },
    get inFlight() {
      return controllers.size;
    },
  };
}
