/**
 * The front door (D5.1): the only way in to local inference. A `node:http` server bound to a loopback
 * address on an ephemeral port, `exclusive`, that runs `verifyLoopbackRequest` on every request before
 * any body is read or any upstream is touched, then proxies to the runtime over its Unix socket (or
 * loopback port) with keep-alive, streaming SSE through without buffering.
 *
 * It is given capabilities, not authority: a token *verifier* (never the token store), a function that
 * says where the runtime is, and an admission controller. It never emits a CORS header and refuses
 * `OPTIONS`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { Pool, type Dispatcher } from 'undici';
import type { Admission } from '../core/admission.js';
import { CompanionError, isCompanionError, type ErrorCode } from '../core/errors.js';
import { allowedHostsFor, verifyLoopbackRequest, type GuardRoute } from '../core/guard.js';
import type { Secret } from '../core/secret.js';

/** Where the runtime listens. */
export type UpstreamAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: '127.0.0.1'; readonly port: number; readonly key: Secret };

export interface FrontDoorLimits {
  /** Largest request body (default 1 MiB). */
  readonly maxBodyBytes: number;
  /** Largest request head (default 16 KiB). */
  readonly maxHeaderBytes: number;
  /** Time to receive the whole request head (default 10 s). */
  readonly headersTimeoutMs: number;
  /** Time to receive the whole request, body included (default 30 s). */
  readonly requestTimeoutMs: number;
  /** Idle keep-alive connection timeout (default 5 s). */
  readonly keepAliveTimeoutMs: number;
  /** Longest silence from the runtime during a response (default 120 s). */
  readonly upstreamBodyTimeoutMs: number;
}

export interface FrontDoorOptions {
  /** A loopback literal: `127.0.0.1` (default) or `::1`. Anything else is refused. */
  readonly host?: string;
  /** Constant-time check of a presented bearer token (from the shell; not the keychain). */
  readonly verifyToken: (candidate: string) => boolean;
  /** The runtime's address when it is ready, else null (answers 503). */
  readonly upstream: () => UpstreamAddress | null;
  readonly admission: Admission;
  readonly limits?: Partial<FrontDoorLimits>;
  /** Origins explicitly allowed to call (default none: any Origin header is refused). */
  readonly allowedOrigins?: readonly string[];
  /** One event per request: method, path, status, duration. Never a header value or body. */
  readonly onRequest?: (event: { method: string; path: string; status: number; code?: ErrorCode; ms: number }) => void;
}

export interface FrontDoor {
  readonly url: string;
  readonly port: number;
  readonly host: string;
  close(): Promise<void>;
}

export const FRONT_DOOR_ROUTES: readonly GuardRoute[] = [
  { method: 'GET', path: '/health' },
  { method: 'GET', path: '/v1/models' },
  { method: 'POST', path: '/v1/chat/completions' },
  { method: 'POST', path: '/v1/completions' },
];

const DEFAULT_LIMITS: FrontDoorLimits = {
  maxBodyBytes: 1 << 20,
  maxHeaderBytes: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  upstreamBodyTimeoutMs: 120_000,
};

const SECURITY_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
};

/** Response headers from the runtime that pass through; everything else (CORS above all) is dropped. */
const PASS_THROUGH = new Set(['content-type', 'x-request-id']);

/** True for a literal loopback address we may bind. */
export function isLoopbackBindAddress(host: string): boolean {
  if (host === '::1') return true;
  if (isIP(host) !== 4) return false;
  return host.startsWith('127.') && host !== '127.0.0.0' && host !== '127.255.255.255';
}

function statusOf(code: ErrorCode): number {
  switch (code) {
    case 'ERR_ADMISSION_QUEUE_FULL': return 429;
    case 'ERR_ADMISSION_NOT_READY': return 503;
    case 'ERR_ADMISSION_TIMEOUT': return 503;
    case 'ERR_BODY_TOO_LARGE': return 413;
    case 'ERR_REQUEST_TIMEOUT': return 408;
    case 'ERR_UPSTREAM_UNAVAILABLE': return 502;
    default: return 500;
  }
}

function sendError(res: ServerResponse, status: number, code: ErrorCode, message: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', code } });
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw new CompanionError('ERR_BODY_TOO_LARGE');
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) throw new CompanionError('ERR_BODY_TOO_LARGE');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/**
 * Starts the front door. Resolves once it listens.
 * @throws ERR_BIND_NOT_LOOPBACK for a non-loopback host, ERR_BIND_FAILED when the bind fails (never
 * retried on another address).
 */
export async function startFrontDoor(options: FrontDoorOptions): Promise<FrontDoor> {
  const host = options.host ?? '127.0.0.1';
  if (!isLoopbackBindAddress(host)) throw new CompanionError('ERR_BIND_NOT_LOOPBACK');
  const limits: FrontDoorLimits = { ...DEFAULT_LIMITS, ...options.limits };
  let allowedHosts: ReadonlySet<string> = new Set();
  const pools = new Map<string, Pool>();

  function poolFor(address: UpstreamAddress): { pool: Pool; origin: string; headers: Record<string, string> } {
    const key = address.kind === 'unix' ? `unix:${address.path}` : `tcp:${address.port}`;
    let pool = pools.get(key);
    if (pool === undefined) {
      // A new runtime address: drop pools for old ones (a restarted runtime gets a new socket/port).
      for (const [k, p] of pools) {
        pools.delete(k);
        void p.close().catch(() => undefined);
      }
      pool = address.kind === 'unix'
        ? new Pool('http://localhost', { socketPath: address.path, connections: 64, pipelining: 1, keepAliveTimeout: 4_000, bodyTimeout: limits.upstreamBodyTimeoutMs, headersTimeout: limits.upstreamBodyTimeoutMs })
        : new Pool(`http://127.0.0.1:${address.port}`, { connections: 64, pipelining: 1, keepAliveTimeout: 4_000, bodyTimeout: limits.upstreamBodyTimeoutMs, headersTimeout: limits.upstreamBodyTimeoutMs });
      pools.set(key, pool);
    }
    const headers: Record<string, string> = address.kind === 'unix'
      ? { host: 'localhost' }
      : { host: `127.0.0.1:${address.port}`, authorization: `Bearer ${address.key.reveal()}` };
    return { pool, origin: address.kind === 'unix' ? 'http://localhost' : `http://127.0.0.1:${address.port}`, headers };
  }

  async function proxy(req: IncomingMessage, res: ServerResponse, route: GuardRoute, body: Buffer | null, signal: AbortSignal): Promise<void> {
    const address = options.upstream();
    if (address === null) {
      sendError(res, 503, 'ERR_ADMISSION_NOT_READY', 'the local runtime is not ready', { 'retry-after': '2' });
      return;
    }
    // The client is already gone: nothing would ever drain what the runtime sends.
    if (signal.aborted) return;
    const { pool, headers } = poolFor(address);
    // Settles when the client is gone. A response queued behind one that closed the connection never
    // finishes and never emits 'close', so undici would wait on it for good: stop waiting then.
    const gone = new Promise<void>((resolveGone) => {
      if (signal.aborted) resolveGone();
      else signal.addEventListener('abort', () => resolveGone(), { once: true });
    });
    try {
      const streaming = pool.stream(
        {
          path: route.path,
          method: route.method as Dispatcher.HttpMethod,
          headers: {
            ...headers,
            accept: req.headers.accept ?? 'application/json',
            ...(body !== null ? { 'content-type': 'application/json', 'content-length': String(body.length) } : {}),
          },
          ...(body !== null ? { body } : {}),
          signal,
        },
        ({ statusCode, headers: upstreamHeaders }) => {
          const out: Record<string, string> = { ...SECURITY_HEADERS };
          for (const [name, value] of Object.entries(upstreamHeaders)) {
            if (PASS_THROUGH.has(name.toLowerCase()) && typeof value === 'string') out[name.toLowerCase()] = value;
          }
          res.writeHead(statusCode, out);
          res.flushHeaders();
          return res;
        },
      );
      await Promise.race([streaming, gone]);
    } catch {
      if (signal.aborted) return;
      if (!res.headersSent) sendError(res, 502, 'ERR_UPSTREAM_UNAVAILABLE', 'the local runtime did not answer');
      else res.destroy();
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const decision = verifyLoopbackRequest(
      {
        peerAddress: req.socket.remoteAddress ?? '',
        method: req.method ?? '',
        target: req.url ?? '',
        rawHeaders: req.rawHeaders,
        httpVersion: req.httpVersion,
      },
      { allowedHosts, verifyToken: options.verifyToken, routes: FRONT_DOOR_ROUTES, ...(options.allowedOrigins ? { allowedOrigins: options.allowedOrigins } : {}) },
    );
    const path = decision.ok ? decision.route.path : '-';
    if (!decision.ok) {
      // Refused before any body is read or any upstream is touched; the connection is not reused.
      sendError(res, decision.status, decision.code, 'request refused', {
        connection: 'close',
        ...(decision.status === 401 ? { 'www-authenticate': 'Bearer' } : {}),
      });
      options.onRequest?.({ method: req.method ?? '', path, status: decision.status, code: decision.code, ms: performance.now() - started });
      return;
    }
    const route = decision.route;
    if (route.path === '/health') {
      const ready = options.upstream() !== null;
      const body = JSON.stringify({ status: ready ? 'ready' : 'not-ready' });
      res.writeHead(ready ? 200 : 503, { ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), ...(ready ? {} : { 'retry-after': '2' }) });
      res.end(body);
      options.onRequest?.({ method: route.method, path, status: res.statusCode, ms: performance.now() - started });
      return;
    }
    let release: (() => void) | undefined;
    // One abort for the whole request, listening from the start, to the response and to the connection:
    // a client that leaves while its body is read, while it waits for a slot or before the proxy starts
    // stops the request there. Node never emits 'close' on a pipelined response still queued behind one
    // that closed the connection; without the socket's 'close' such a request would hold its admission
    // slot and an upstream connection for good, writing into a response nobody reads.
    const abort = new AbortController();
    const socket = req.socket;
    const onGone = (): void => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onGone);
    socket.once('close', onGone);
    try {
      const body = route.method === 'POST' ? await readBody(req, limits.maxBodyBytes) : null;
      if (abort.signal.aborted) return;
      release = await options.admission.acquire(abort.signal);
      await proxy(req, res, route, body, abort.signal);
    } catch (error) {
      const code: ErrorCode = isCompanionError(error) ? error.code : 'ERR_INTERNAL';
      const status = statusOf(code);
      const retry = status === 429 || status === 503 ? { 'retry-after': String(Math.max(1, options.admission.retryAfterSeconds())) } : {};
      if (!res.destroyed) sendError(res, status, code, status === 413 ? 'request body too large' : 'request not served', { ...retry, ...(status === 413 ? { connection: 'close' } : {}) });
    } finally {
      socket.off('close', onGone);
      release?.();
      options.onRequest?.({ method: route.method, path, status: res.statusCode, ms: performance.now() - started });
    }
  }

  const server: Server = createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    requestTimeout: limits.requestTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // Node checks the two timeouts above only this often (default 30 s): a slow sender would otherwise
    // hold its connection for up to 30 s past the limit.
    connectionsCheckingInterval: Math.min(1_000, Math.max(50, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 4))),
    requireHostHeader: false, // the guard refuses a missing Host with its own code
    joinDuplicateHeaders: false,
  });
  // Node drops every header past the 2000th without a word: a second Host, an Origin or a second
  // Authorization placed after 2000 filler fields would never reach the guard. No count limit; the head
  // stays bounded by maxHeaderSize.
  server.maxHeadersCount = 0;
  // Requests still being answered, per connection (pipelining), and the last request dispatched on it.
  // A parse error must not be answered in place of a pending response: the client would read our 400 as
  // the answer to an earlier, valid request.
  const inFlight = new WeakMap<Socket, Set<IncomingMessage>>();
  const lastRequest = new WeakMap<Socket, { req: IncomingMessage; res: ServerResponse }>();
  const closeWhenIdle = new WeakSet<Socket>();
  const track = (req: IncomingMessage, res: ServerResponse): void => {
    const socket = req.socket;
    let pending = inFlight.get(socket);
    if (pending === undefined) {
      pending = new Set();
      inFlight.set(socket, pending);
    }
    pending.add(req);
    lastRequest.set(socket, { req, res });
    res.once('close', () => {
      pending.delete(req);
      if (pending.size === 0 && closeWhenIdle.has(socket)) socket.destroy();
    });
  };
  // An expectation other than 100-continue (RFC 9110 §10.1.1): 417 and close. Nothing is served, so the
  // guard is not consulted; answered here (not by Node) so that the connection's bookkeeping knows.
  server.on('checkExpectation', (req, res) => {
    track(req, res);
    sendError(res, 417, 'ERR_GUARD_MALFORMED', 'request refused', { connection: 'close' });
    options.onRequest?.({ method: req.method ?? '', path: '-', status: 417, code: 'ERR_GUARD_MALFORMED', ms: 0 });
  });
  server.on('request', (req, res) => {
    track(req, res);
    handle(req, res).catch(() => {
      if (!res.headersSent) sendError(res, 500, 'ERR_INTERNAL', 'internal error');
      else res.destroy();
    });
  });
  // CONNECT and Upgrade never reach a handler: no tunnel, no WebSocket.
  server.on('connect', (_req, socket) => socket.destroy());
  server.on('upgrade', (_req, socket) => socket.destroy());
  server.on('clientError', (error, raw) => {
    const socket = raw as Socket;
    // Bytes after a request that asked to close (HTTP/1.0, `Connection: close`) are ignored, not answered.
    const afterClose = (error as { code?: unknown }).code === 'HPE_CLOSED_CONNECTION';
    const pending = inFlight.get(socket) ?? new Set<IncomingMessage>();
    const last = lastRequest.get(socket);
    const brokenDispatched = last !== undefined && !last.req.complete;
    if (brokenDispatched && !last.res.writableEnded) {
      // A request whose head was fine and whose body is broken (or too slow) is still being handled: it
      // waits for bytes that will never come. Close now (what is queued behind it is lost).
      socket.destroy();
    } else if (pending.size > 0) {
      // Requests read in full are being answered: finish them, then close; nothing more is read.
      closeWhenIdle.add(socket);
    } else if (brokenDispatched || afterClose) {
      // The broken request was already answered (refused from its head), or nothing is owed: just close.
      socket.end();
    } else if (socket.writable) {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    } else {
      socket.destroy();
    }
  });

  await new Promise<void>((resolvePromise, reject) => {
    const onError = (): void => reject(new CompanionError('ERR_BIND_FAILED'));
    server.once('error', onError);
    server.listen({ host, port: 0, exclusive: true }, () => {
      server.off('error', onError);
      resolvePromise();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string' || address.address !== host) {
    server.close();
    throw new CompanionError('ERR_BIND_FAILED');
  }
  const port = address.port;
  allowedHosts = allowedHostsFor(port, { ipv6: host === '::1' });
  const url = host === '::1' ? `http://[::1]:${port}` : `http://${host}:${port}`;

  return {
    url,
    port,
    host,
    async close() {
      await new Promise<void>((resolveClose) => {
        server.close(() => resolveClose());
        server.closeAllConnections();
      });
      await Promise.all([...pools.values()].map((p) => p.close().catch(() => undefined)));
      pools.clear();
    },
  };
}
