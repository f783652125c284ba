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
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Engine } from './engine.js';
import { embed, generate } from './generation-response.js';
import { sendError, sendJson, errorFromGeneration } from './http-reply.js';
import { InFlight } from './in-flight.js';
import {
  ApiError,
  modelBody,
  modelNotFound,
  modelsBody,
  parseChatRequest,
  parseCompletionRequest,
  parseEmbeddingRequest,
  type ChatRequest,
  type CompletionRequest,
  type EmbeddingRequest,
} from './openai.js';
import { readJsonBody } from './request-body.js';

/** A model id in `/v1/models/{id}`: the same shape the front door's guard lets through. */
const MODEL_SEGMENT = /^[A-Za-z0-9._:-]{1,128}$/;

/** Default request body limit: 1 MiB. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;

/** The method each fixed path takes. */
const ROUTES: Readonly<Record<string, string>> = {
  '/health': 'GET',
  '/v1/models': 'GET',
  '/v1/chat/completions': 'POST',
  '/v1/completions': 'POST',
  '/v1/embeddings': 'POST',
};

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

/** What every request's handling reads: the options, and the work in flight. */
interface ServerState {
  readonly options: RuntimeServerOptions;
  readonly limit: number;
  /** SHA-256 of the per-spawn key (loopback-TCP mode); undefined on a Unix socket. */
  readonly keyDigest: Buffer | undefined;
  readonly inFlight: InFlight;
  /** When the server was created, in seconds: the model's `created`. */
  readonly created: number;
}

/** A request's route: its path, the method the path takes, and the id of `/v1/models/{id}`. */
interface Route {
  readonly path: string;
  readonly method: string;
  readonly modelPath: string | null;
}

/**
 * Creates the runtime's HTTP server (not yet listening). main.ts serves it on the listening descriptor
 * the companion bound and handed over (fd 4).
 */
export function createRuntimeServer(options: RuntimeServerOptions): RuntimeServer {
  const state: ServerState = {
    options,
    limit: options.bodyLimit ?? DEFAULT_BODY_LIMIT,
    keyDigest: options.tcp === undefined ? undefined : digest(options.tcp.key),
    inFlight: new InFlight(),
    created: Math.floor(Date.now() / 1000),
  };
  const server = createServer({ maxHeaderSize: 16 * 1024 }, (req, res) => {
    handle(state, req, res).catch(() => {
      if (!res.headersSent) sendError(res, new ApiError(500, 'server_error', 'internal', 'internal error'));
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 60_000;
  server.keepAliveTimeout = 5_000;
  server.maxHeadersCount = 100;
  const { inFlight } = state;
  return {
    server,
    abortAll: () => inFlight.abortAll(),
    idle: () => inFlight.idle(),
    get inFlight() {
      return inFlight.size;
    },
  };
}

/** Handles one request: route, guard, the read-only routes, then the body and the generation routes. */
async function handle(state: ServerState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const route = admit(state, req, res);
  if (route === null) return;
  const engine = state.options.engine();
  if (route.method === 'GET') {
    serveRead(state, route, engine, res);
    return;
  }
  const body = await readJsonBody(req, res, state.limit);
  if (body === null) return;
  if (engine === null) {
    sendError(res, modelLoading());
    return;
  }
  const request = parseRequest(route.path, body.value, state.options.modelId, res);
  if (request === null) return;
  if (request.kind === 'embedding') await embed(state.inFlight, res, request, engine, state.options.modelId);
  else await generate(state.inFlight, res, request, engine, state.options.modelId);
}

/**
 * The request's route once the target, the loopback-TCP guard, the path and the method are checked;
 * null when the request was refused (400 `invalid_target`, 403, 401, 404 `not_found`, 405).
 */
function admit(state: ServerState, req: IncomingMessage, res: ServerResponse): Route | null {
  const target = req.url ?? '';
  // Origin-form only: absolute-form and `//host` targets are refused, as is `OPTIONS *`.
  if (!target.startsWith('/') || target.startsWith('//')) {
    sendError(res, new ApiError(400, 'invalid_request_error', 'invalid_target', 'the request target must be a path'));
    return null;
  }
  const refusal = guard(state, req);
  if (refusal !== null) {
    req.resume();
    sendError(res, refusal, refusal.status === 401 ? { 'www-authenticate': 'Bearer' } : {});
    return null;
  }
  const route = routeOf(target);
  if (route === null) {
    req.resume();
    sendError(res, new ApiError(404, 'invalid_request_error', 'not_found', 'no such route'));
    return null;
  }
  if (req.method !== route.method) {
    req.resume();
    sendError(
      res,
      new ApiError(405, 'invalid_request_error', 'method_not_allowed', `use ${route.method} on this path`),
      {
        allow: route.method,
      },
    );
    return null;
  }
  return route;
}

/** Loopback-TCP checks. Returns an error to send, or null when the request may proceed. */
function guard(state: ServerState, req: IncomingMessage): ApiError | null {
  const tcp = state.options.tcp;
  if (tcp === undefined || state.keyDigest === undefined) return null;
  const hosts = hostHeaders(req);
  // One Host header, naming exactly the bound loopback port (DNS rebinding, P-a).
  if (hosts.length !== 1 || !tcp.allowedHosts().has(hosts[0]!.toLowerCase())) {
    return new ApiError(403, 'invalid_request_error', 'host_not_allowed', 'the Host header is not allowed');
  }
  const header = req.headers.authorization;
  const match = header === undefined ? null : /^Bearer ([^\s]+)$/.exec(header);
  // Hash both sides so the comparison is constant-time whatever the lengths.
  if (match === null || !timingSafeEqual(digest(match[1]!), state.keyDigest)) {
    return new ApiError(401, 'authentication_error', 'invalid_api_key', 'a valid bearer key is required');
  }
  return null;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** The values of every `Host` header as sent (Node keeps only the first in `headers.host`). */
function hostHeaders(req: IncomingMessage): string[] {
  const hosts: string[] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === 'host') hosts.push(req.rawHeaders[i + 1]!);
  }
  return hosts;
}

/** The route of an origin-form `target`, or null when no route has its path. */
function routeOf(target: string): Route | null {
  const path = target.split('?')[0]!;
  // `/v1/models/{id}`: one segment, the front door's guard allows the same shape only.
  const modelPath = path.startsWith('/v1/models/') ? path.slice('/v1/models/'.length) : null;
  const method = modelPath !== null && MODEL_SEGMENT.test(modelPath) ? 'GET' : ROUTES[path];
  return method === undefined ? null : { path, method, modelPath };
}

/** Answers the read-only routes: `/health`, `/v1/models` and `/v1/models/{id}`. */
function serveRead(state: ServerState, route: Route, engine: Engine | null, res: ServerResponse): void {
  const { modelId } = state.options;
  if (route.path === '/health') {
    if (engine === null) sendError(res, modelLoading());
    else
      sendJson(res, 200, {
        status: 'ok',
        parallel: engine.parallel,
        contextSize: engine.contextSize,
        sequences: engine.sequences(),
      });
  } else if (route.modelPath === null) sendJson(res, 200, modelsBody(modelId, state.created));
  else if (route.modelPath === modelId) sendJson(res, 200, modelBody(modelId, state.created));
  else sendError(res, modelNotFound());
}

function modelLoading(): ApiError {
  return new ApiError(503, 'server_error', 'model_loading', 'the model is loading');
}

/** The validated request of a generation route, or null when it was answered with its 400 or 404. */
function parseRequest(
  path: string,
  body: unknown,
  modelId: string,
  res: ServerResponse,
): ChatRequest | CompletionRequest | EmbeddingRequest | null {
  try {
    const request =
      path === '/v1/chat/completions'
        ? parseChatRequest(body)
        : path === '/v1/embeddings'
          ? parseEmbeddingRequest(body)
          : parseCompletionRequest(body);
    // Why: answering for another model would pass one model's output off as another's.
    if (request.model !== undefined && request.model !== modelId) throw modelNotFound();
    return request;
  } catch (error) {
    sendError(res, errorFromGeneration(error));
    return null;
  }
}
