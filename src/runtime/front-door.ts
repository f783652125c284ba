/**
 * The front door (D5.1): the only way in to local inference. A `node:http` server bound to a loopback
 * address on an ephemeral port, `exclusive`, that runs `verifyLoopbackRequest` on every request before
 * any body is read or any upstream is touched, then proxies to the runtime over its Unix socket (or
 * loopback port) through a keep-alive undici Pool, streaming SSE through without buffering.
 *
 * It is given capabilities, not authority: a token *verifier* and an *attestor* (never the token or the
 * token store), a function that says where the runtime is, and an admission controller. The attestor
 * answers `GET /companion/attest`, the one route served without the token, with which a local client
 * makes sure that the door it is about to send the token to is ours (src/core/attest.ts, P-k).
 * It never emits a CORS header and refuses `OPTIONS`. What reaches the runtime is rebuilt, not forwarded:
 * the route's method and path, `Host`, `Content-Type` and `Content-Length` of a POST, and its body
 * (bounded). No client header (Authorization, Cookie, Origin, X-Forwarded-*) ever reaches it. What reaches
 * the client from the runtime is its status, `Content-Type`, `Content-Length` and body, under the front
 * door's own security headers.
 *
 * Bounds (all configurable, see {@link FrontDoorLimits}): request head size and time (slowloris), whole
 * request time (slow bodies), body size, idle keep-alive, upstream time to response headers (a
 * non-streamed generation) and upstream silence during a response. Client gone → the upstream request is
 * aborted (the runtime cancels the generation). Runtime gone → 502 (or 503 once the shell knows it is not
 * ready), and a stream in progress is cut so that the client sees an error instead of a hang.
 *
 * See docs/front-door.md.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as connectSocket, isIP, type Socket } from 'node:net';
import { Pool, type buildConnector, type Dispatcher } from 'undici';
import type { Admission, Release } from '../core/admission.js';
import { ATTEST_ROUTE, readAttestNonce, type Attestor } from '../core/attest.js';
import { CompanionError, isCompanionError, type ErrorCode, CodedTypeError } from '../core/errors.js';
import { allowedHostsFor, verifyLoopbackRequest, type GuardPolicy, type GuardRoute } from '../core/guard.js';
import type { Secret } from '../core/secret.js';
import { sameSocket, type SocketIdentity } from './health.js';

/** Where the runtime listens. */
export type UpstreamAddress =
  | { readonly kind: 'unix'; readonly path: string; readonly identity?: SocketIdentity }
  | { readonly kind: 'tcp'; readonly host: '127.0.0.1'; readonly port: number; readonly key: Secret };

export interface FrontDoorLimits {
  /** Largest request body (default 1 MiB): 413 beyond it, before the runtime is touched. */
  readonly maxBodyBytes: number;
  /** Largest request head (default 16 KiB): 431 beyond it. */
  readonly maxHeaderBytes: number;
  /** Time to receive the whole request head (default 10 s): slowloris senders are cut off (408). */
  readonly headersTimeoutMs: number;
  /** Time to receive the whole request, body included (default 30 s; ≥ headersTimeoutMs): 408. */
  readonly requestTimeoutMs: number;
  /** Idle keep-alive connection timeout between requests (default 5 s). */
  readonly keepAliveTimeoutMs: number;
  /** Time until the runtime's response headers, i.e. a whole non-streamed generation (default 300 s): 504. */
  readonly upstreamHeadersTimeoutMs: number;
  /** Longest silence from the runtime during a response body (default 120 s): the response is cut. */
  readonly upstreamBodyTimeoutMs: number;
}

export interface FrontDoorOptions {
  /** A loopback literal: `127.0.0.1` (default), another `127.x.y.z`, or `::1`. Anything else is refused. */
  readonly host?: string;
  /** Constant-time check of a presented bearer token (from the shell; not the keychain). */
  readonly verifyToken: (candidate: string) => boolean;
  /**
   * The attestation capability (`createAttestor(token)` of src/core/attest.ts, from the shell; not the
   * token). With it the door serves `GET /companion/attest` without a token; without it that route is not
   * served, and no companion client will trust this door (they verify before they send the token).
   */
  readonly attest?: Attestor;
  /** The runtime's address when it is ready, else null (answers 503). */
  readonly upstream: () => UpstreamAddress | null;
  readonly admission: Admission;
  readonly limits?: Partial<FrontDoorLimits>;
  /**
   * Browser origins explicitly allowed to call (default none: any `Origin` header is refused).
   * WARNING: a page on a listed origin can drive the runtime from a browser; it still needs the token.
   */
  readonly allowedOrigins?: readonly string[];
  /** One event per request: method, path, status, duration. Never a header value, nonce, MAC or body. */
  readonly onRequest?: (event: FrontDoorRequestEvent) => void;
}

export interface FrontDoorRequestEvent {
  readonly method: string;
  /** The served route's path, or `-` for a refused request. */
  readonly path: string;
  readonly status: number;
  readonly code?: ErrorCode;
  readonly ms: number;
}

export interface FrontDoor {
  /** `http://127.0.0.1:P` (or `http://[::1]:P`), without a path. */
  readonly url: string;
  readonly port: number;
  readonly host: string;
  /** Stops listening, cuts every connection (aborting their upstream requests) and closes the pool. */
  close(): Promise<void>;
}

export const FRONT_DOOR_ROUTES: readonly GuardRoute[] = [
  { method: 'GET', path: '/health' },
  { method: 'GET', path: '/v1/models' },
  { method: 'POST', path: '/v1/chat/completions' },
  { method: 'POST', path: '/v1/completions' },
  { method: 'POST', path: '/v1/embeddings' },
  // One model id segment only: no '/', no '%', no dot segment (the guard's prefix-route rule).
  { method: 'GET', path: '/v1/models/', segment: /^[A-Za-z0-9._:-]{1,128}$/ },
];

export const DEFAULT_FRONT_DOOR_LIMITS: FrontDoorLimits = Object.freeze({
  maxBodyBytes: 1 << 20,
  maxHeaderBytes: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  upstreamHeadersTimeoutMs: 300_000,
  upstreamBodyTimeoutMs: 120_000,
});

/** Sent on every response, refusals included (flat name/value list: no per-response object walk). */
const SECURITY_HEADERS: readonly string[] = [
  'X-Content-Type-Options',
  'nosniff',
  'Cache-Control',
  'no-store',
  'Content-Security-Policy',
  "default-src 'none'; frame-ancestors 'none'",
  'Referrer-Policy',
  'no-referrer',
  'Cross-Origin-Resource-Policy',
  'same-origin',
];

const SECURITY_HEADER_LINES = SECURITY_HEADERS.reduce(
  (text, value, i) => text + (i % 2 === 0 ? `${value}: ` : `${value}\r\n`),
  '',
);

/** How much of an oversized body is read and dropped after a 413 before the connection is cut. */
const DISCARD_LIMIT = 16 << 20;

/** A stream batch is written out once it holds this much, without waiting for the end of the tick. */
const BATCH_BYTES = 16 * 1024;

/** Upstream connections kept per runtime address. */
const POOL_CONNECTIONS = 64;
/** Below the runtime's own keep-alive timeout (5 s), so that we never reuse a socket it is closing. */
const POOL_KEEP_ALIVE_MS = 4_000;

/** True for a literal loopback address we may bind: `127.x.y.z` (not the network or broadcast form) or `::1`. */
export function isLoopbackBindAddress(host: string): boolean {
  if (host === '::1') return true;
  if (isIP(host) !== 4) return false;
  return host.startsWith('127.') && host !== '127.0.0.0' && host !== '127.255.255.255';
}

function statusOf(code: ErrorCode): number {
  switch (code) {
    case 'ERR_ADMISSION_QUEUE_FULL':
      return 429;
    case 'ERR_ADMISSION_NOT_READY':
      return 503;
    case 'ERR_ADMISSION_TIMEOUT':
      return 503;
    case 'ERR_BODY_TOO_LARGE':
      return 413;
    case 'ERR_REQUEST_TIMEOUT':
      return 504;
    case 'ERR_UPSTREAM_UNAVAILABLE':
      return 502;
    default:
      return 500;
  }
}

const MESSAGES: Partial<Record<ErrorCode, string>> = {
  ERR_ADMISSION_QUEUE_FULL: 'too many requests are waiting; try again later',
  ERR_ADMISSION_NOT_READY: 'the local runtime is not ready',
  ERR_ADMISSION_TIMEOUT: 'the request waited too long for the local runtime',
  ERR_BODY_TOO_LARGE: 'request body too large',
  ERR_REQUEST_TIMEOUT: 'the local runtime did not answer in time',
  ERR_UPSTREAM_UNAVAILABLE: 'the local runtime did not answer',
};

/** A small OpenAI-shaped JSON error. Never a CORS header; never a header value or token in the body. */
function sendError(
  res: ServerResponse,
  status: number,
  code: ErrorCode,
  message: string,
  extra: readonly string[] = [],
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({
    error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', code },
  });
  res.writeHead(status, [
    ...SECURITY_HEADERS,
    'Content-Type',
    'application/json; charset=utf-8',
    'Content-Length',
    String(Buffer.byteLength(body)),
    ...extra,
  ]);
  res.end(body);
}

/** Reads a request body up to `limit` bytes. Rejects with ERR_BODY_TOO_LARGE, or the stream's error. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit)
    return Promise.reject(new CompanionError('ERR_BODY_TOO_LARGE'));
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const onData = (chunk: Buffer): void => {
      total += chunk.length;
      if (total > limit) {
        cleanup();
        reject(new CompanionError('ERR_BODY_TOO_LARGE'));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolveBody(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total));
    };
    const onError = (error: Error): void => {
      cleanup();
      reject(error);
    };
    const onClose = (): void => {
      cleanup();
      reject(new CompanionError('ERR_ADMISSION_ABORTED'));
    };
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/** Maps an undici error before response headers to (status, code). */
function upstreamFailure(error: Error): ErrorCode {
  const code = (error as { code?: unknown }).code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' ? 'ERR_REQUEST_TIMEOUT' : 'ERR_UPSTREAM_UNAVAILABLE';
}

/** The runtime's answer, copied to the client: status, Content-Type, Content-Length and body only. */
class Forward implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private gone = false;
  private readonly res: ServerResponse;
  private readonly done: () => void;

  constructor(res: ServerResponse, done: () => void) {
    this.res = res;
    this.done = done;
  }

  /** The client went away before the response ended: abort upstream, so that the generation stops. */
  readonly onClientClose = (): void => {
    if (this.res.writableFinished) return;
    this.gone = true;
    this.controller?.abort(new CompanionError('ERR_ADMISSION_ABORTED'));
  };

  private paused = false;

  private readonly onDrain = (): void => {
    this.paused = false;
    this.controller?.resume();
  };

  private corked = false;
  private batchBytes = 0;

  /** Ends a batch: everything written since {@link batch} goes out in one write. */
  private readonly flush = (): void => {
    if (!this.corked) return;
    this.corked = false;
    this.batchBytes = 0;
    this.res.uncork();
  };

  /**
   * Starts a batch for this turn of the event loop. The runtime's stream arrives as many small HTTP
   * chunks (one per token event) that one socket read can hold by the hundred; written one by one they
   * would cost a write each. Corked until the end of this tick (or {@link BATCH_BYTES}, so that a burst's
   * first events are not held back by its last), they leave as one write, and an event that arrives
   * alone leaves at once (same tick).
   */
  private batch(): void {
    if (this.corked) return;
    this.corked = true;
    this.res.cork();
    process.nextTick(this.flush);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.gone) controller.abort(new CompanionError('ERR_ADMISSION_ABORTED'));
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (this.gone) return;
    const type = headers['content-type'];
    const length = headers['content-length'];
    const out: string[] = SECURITY_HEADERS.slice();
    if (typeof type === 'string') out.push('Content-Type', type);
    if (typeof length === 'string') out.push('Content-Length', length);
    this.res.writeHead(statusCode, out);
    // An event stream: send the head now (the first token may take a while), in the same write as any
    // event that came with it; anything else goes out with its body.
    if (typeof type === 'string' && type.startsWith('text/event-stream')) {
      this.batch();
      this.res.flushHeaders();
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.gone) return;
    this.batch();
    this.batchBytes += chunk.length;
    // Backpressure: a slow reader pauses the runtime's socket instead of growing our memory.
    if (!this.res.write(chunk) && !this.paused) {
      this.paused = true;
      controller.pause();
      this.res.once('drain', this.onDrain);
    }
    if (this.batchBytes >= BATCH_BYTES) this.flush();
  }

  onResponseEnd(): void {
    this.res.off('close', this.onClientClose);
    if (!this.gone) this.res.end();
    this.done();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.res.off('close', this.onClientClose);
    if (!this.gone) {
      if (this.res.headersSent) {
        // Mid-stream: cut the response so that the client sees an error, never a clean end or a hang.
        this.res.destroy();
      } else {
        const code = upstreamFailure(error);
        sendError(this.res, statusOf(code), code, MESSAGES[code]!);
      }
    }
    this.done();
  }
}

interface Upstream {
  readonly key: string;
  readonly pool: Pool;
  /** Request headers for a GET; a POST adds Content-Type and Content-Length. */
  readonly headers: Record<string, string>;
}

/**
 * Whether an error answer written on the raw socket may carry a body: not when `rawPacket` (the bytes
 * Node's parser failed on) starts with a HEAD request line, as a response to HEAD has no content. When the
 * failing read does not show the method (a head that came in several reads, a timeout), the JSON body is
 * sent: the connection closes right after it, and every other method's client reads the error code there.
 */
function bodyAllowedFor(rawPacket: unknown): boolean {
  return !(Buffer.isBuffer(rawPacket) && /^HEAD /.test(rawPacket.subarray(0, 5).toString('latin1')));
}

/** A refused or failed request's extra headers: nothing, or `Connection: close` (plus the 401 challenge). */
const CLOSE: readonly string[] = ['Connection', 'close'];
const CHALLENGE_AND_CLOSE: readonly string[] = ['WWW-Authenticate', 'Bearer', 'Connection', 'close'];

/**
 * Starts the front door. Resolves once it listens.
 * @throws ERR_BIND_NOT_LOOPBACK for a non-loopback host, ERR_BIND_FAILED when the bind fails (never
 * retried on another address); TypeError `ERR_INVALID_ARG_VALUE` for inconsistent limits.
 */
export async function startFrontDoor(options: FrontDoorOptions): Promise<FrontDoor> {
  const host = options.host ?? '127.0.0.1';
  if (!isLoopbackBindAddress(host)) throw new CompanionError('ERR_BIND_NOT_LOOPBACK');
  const limits = checkLimits(options.limits);
  const door = new Door(options, limits);
  const server = createDoorServer(limits);
  door.attach(server);
  const port = await listenOnLoopback(server, host);
  door.policy = {
    allowedHosts: allowedHostsFor(port, { ipv6: host === '::1' }),
    verifyToken: options.verifyToken,
    routes: FRONT_DOOR_ROUTES,
    ...(options.attest !== undefined ? { attestRoute: ATTEST_ROUTE } : {}),
    ...(options.allowedOrigins ? { allowedOrigins: options.allowedOrigins } : {}),
  };
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
      await door.pools.close();
    },
  };
}

/** The limits with defaults filled in. Throws `ERR_INVALID_ARG_VALUE` when one is not a positive integer. */
function checkLimits(overrides: Partial<FrontDoorLimits> | undefined): FrontDoorLimits {
  const limits: FrontDoorLimits = { ...DEFAULT_FRONT_DOOR_LIMITS, ...overrides };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) throw invalidArg(`limits.${name} must be a positive integer`);
  }
  if (limits.headersTimeoutMs > limits.requestTimeoutMs)
    throw invalidArg('limits.headersTimeoutMs must not exceed limits.requestTimeoutMs');
  return limits;
}

/** The HTTP server with the door's bounds; its handlers are attached by {@link Door.attach}. */
function createDoorServer(limits: FrontDoorLimits): Server {
  const server = createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    requestTimeout: limits.requestTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // Node checks the two timeouts above only this often (default 30 s): check often enough that a
    // slow sender is cut off close to its bound.
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 4))),
    requireHostHeader: false, // the guard refuses a missing Host with its own code
    joinDuplicateHeaders: false,
    noDelay: true,
  });
  // Node drops every header past maxHeadersCount without a word: a second Host, an Origin or a second
  // Authorization placed after the filler would never reach the guard. No count limit (0); the head
  // stays bounded by maxHeaderSize.
  server.maxHeadersCount = 0;
  return server;
}

/** Listens on `host`, port 0, and returns the port. Throws `ERR_BIND_FAILED` (never another address). */
async function listenOnLoopback(server: Server, host: string): Promise<number> {
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
  return address.port;
}

/**
 * One undici pool per runtime address. A restarted runtime gets a new socket or port: its pool replaces
 * the old one, which is retired (closed once its requests are done).
 */
class UpstreamPools {
  private upstream: Upstream | null = null;
  private lastAddress: UpstreamAddress | null = null;
  private readonly retiring = new Set<Pool>();
  private readonly limits: FrontDoorLimits;

  constructor(limits: FrontDoorLimits) {
    this.limits = limits;
  }

  /** The pool and request headers for `address` (the same object while the address does not change). */
  for(address: UpstreamAddress): Upstream {
    if (address === this.lastAddress && this.upstream !== null) return this.upstream;
    const key = address.kind === 'unix' ? `unix:${address.path}` : `tcp:${address.port}`;
    let pool = this.upstream?.key === key ? this.upstream.pool : null;
    if (pool === null) {
      this.retireCurrent();
      pool = this.createPool(address);
    }
    // The per-spawn key of a TCP runtime goes to the runtime only (never to a log or the client).
    const headers: Record<string, string> =
      address.kind === 'unix'
        ? { host: 'localhost' }
        : { host: `127.0.0.1:${address.port}`, authorization: `Bearer ${address.key.reveal()}` };
    this.upstream = { key, pool, headers };
    this.lastAddress = address;
    return this.upstream;
  }

  /** Destroys every pool, retiring ones included. */
  async close(): Promise<void> {
    const pools = [...this.retiring, ...(this.upstream === null ? [] : [this.upstream.pool])];
    this.upstream = null;
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  private retireCurrent(): void {
    if (this.upstream === null) return;
    const old = this.upstream.pool;
    this.retiring.add(old);
    void old
      .close()
      .catch(() => undefined)
      .finally(() => this.retiring.delete(old));
  }

  private createPool(address: UpstreamAddress): Pool {
    const settings = {
      connections: POOL_CONNECTIONS,
      pipelining: 1,
      keepAliveTimeout: POOL_KEEP_ALIVE_MS,
      headersTimeout: this.limits.upstreamHeadersTimeoutMs,
      bodyTimeout: this.limits.upstreamBodyTimeoutMs,
    };
    return address.kind === 'unix'
      ? new Pool('http://localhost', { ...settings, connect: unixConnector(address.path, address.identity) })
      : new Pool(`http://127.0.0.1:${address.port}`, settings);
  }
}

/**
 * What each client connection owes. Requests still being answered, per connection (pipelining), and the
 * last request dispatched on it: a parse error must not be answered in place of a pending response (the
 * client would read our error as the answer to an earlier, valid request).
 */
class Connections {
  private readonly inFlight = new WeakMap<Socket, Set<IncomingMessage>>();
  private readonly lastRequest = new WeakMap<Socket, { req: IncomingMessage; res: ServerResponse }>();
  private readonly closeWhenIdle = new WeakSet<Socket>();

  /** Records a request until its response closes; closes a connection marked to close once it is idle. */
  track(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    let pending = this.inFlight.get(socket);
    if (pending === undefined) {
      pending = new Set();
      this.inFlight.set(socket, pending);
    }
    pending.add(req);
    this.lastRequest.set(socket, { req, res });
    res.once('close', () => {
      pending.delete(req);
      if (pending.size === 0 && this.closeWhenIdle.has(socket)) {
        // Half-close first (a reset could cut the last answer on its way), then close for good.
        socket.end();
        setTimeout(() => socket.destroy(), 1_000).unref();
      }
    });
  }

  /** Node's parser failed on `socket` (or timed it out): answer what is owed, once, then close. */
  readonly onClientError = (error: Error & { code?: string; rawPacket?: unknown }, socket: Socket): void => {
    if (error.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const pending = this.inFlight.get(socket) ?? new Set<IncomingMessage>();
    const last = this.lastRequest.get(socket);
    const brokenDispatched = last !== undefined && !last.req.complete;
    if (brokenDispatched && !last.res.writableEnded) {
      answerBrokenBody(error, socket, last.res, pending.size);
      return;
    }
    if (pending.size > 0) {
      // Requests read in full are being answered: finish them, then close; nothing more is read.
      this.closeWhenIdle.add(socket);
      return;
    }
    if (brokenDispatched || error.code === 'HPE_CLOSED_CONNECTION') {
      // Already answered (refused from its head), or bytes after a request that asked to close.
      socket.end();
      return;
    }
    answerOnRawSocket(error, socket);
  };
}

/**
 * A request whose head was fine and whose body is broken (or too slow) is still being handled: it waits
 * for bytes that will never come. Answer it (408/400) when it is the only one owed, then close.
 */
function answerBrokenBody(error: Error & { code?: string }, socket: Socket, res: ServerResponse, owed: number): void {
  if (res.headersSent || owed > 1) {
    socket.destroy();
    return;
  }
  const timeout = error.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  sendError(
    res,
    timeout ? 408 : 400,
    timeout ? 'ERR_REQUEST_TIMEOUT' : 'ERR_GUARD_MALFORMED',
    'request not served',
    CLOSE,
  );
  setTimeout(() => socket.destroy(), 1_000).unref();
}

/** A request head too large, too slow or malformed: answer once (our headers), then close. */
function answerOnRawSocket(error: Error & { code?: string; rawPacket?: unknown }, socket: Socket): void {
  const [status, code] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? ['431 Request Header Fields Too Large', 'ERR_GUARD_MALFORMED']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ['408 Request Timeout', 'ERR_REQUEST_TIMEOUT']
        : ['400 Bad Request', 'ERR_GUARD_MALFORMED'];
  // No JSON body for a HEAD request (RFC 9110 §9.3.2: a response to HEAD has no content).
  const body = bodyAllowedFor(error.rawPacket)
    ? `{"error":{"message":"request not served","type":"invalid_request_error","code":"${code}"}}`
    : '';
  socket.end(
    `HTTP/1.1 ${status}\r\n${SECURITY_HEADER_LINES}${body === '' ? '' : 'Content-Type: application/json; charset=utf-8\r\n'}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
  );
  // end() waits for the peer only so long: a sender that keeps the socket half-open is cut.
  setTimeout(() => socket.destroy(), 1_000).unref();
}

/** What {@link Door.forward} sends upstream for one admitted request. */
interface Admitted {
  readonly route: GuardRoute;
  readonly contentType: string | undefined;
  readonly accept: string | undefined;
  readonly body: Buffer | null;
  readonly release: Release;
  readonly started: number;
}

/**
 * The door's request handling: guard decision, then attestation, `/health` or admission and the proxy.
 * `policy` is set once the server listens (the allowed hosts name its port); no request is served before.
 */
class Door {
  policy: GuardPolicy | null = null;
  readonly pools: UpstreamPools;
  private readonly connections = new Connections();
  private readonly options: FrontDoorOptions;
  private readonly limits: FrontDoorLimits;
  private readonly admission: Admission;
  private readonly onRequest: ((event: FrontDoorRequestEvent) => void) | undefined;

  constructor(options: FrontDoorOptions, limits: FrontDoorLimits) {
    this.options = options;
    this.limits = limits;
    this.admission = options.admission;
    this.onRequest = options.onRequest;
    this.pools = new UpstreamPools(limits);
  }

  /** Attaches the door's handlers to `server`. */
  attach(server: Server): void {
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.handle(req, res));
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => this.handle(req, res, true));
    // CONNECT and Upgrade never reach a handler: no tunnel, no WebSocket.
    server.on('connect', (_req: IncomingMessage, socket: Socket) => socket.destroy());
    server.on('upgrade', (_req: IncomingMessage, socket: Socket) => socket.destroy());
    // An expectation other than 100-continue (RFC 9110 §10.1.1): 417 and close; nothing is served.
    server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      this.connections.track(req, res);
      sendError(res, 417, 'ERR_GUARD_MALFORMED', 'request refused', CLOSE);
    });
    server.on('clientError', this.connections.onClientError);
  }

  private handle(req: IncomingMessage, res: ServerResponse, expectsContinue = false): void {
    this.connections.track(req, res);
    const started = this.onRequest === undefined ? 0 : performance.now();
    const decision = verifyLoopbackRequest(
      {
        peerAddress: req.socket.remoteAddress ?? '',
        method: req.method ?? '',
        target: req.url ?? '',
        rawHeaders: req.rawHeaders,
        httpVersion: req.httpVersion,
      },
      this.policy!,
    );
    if (!decision.ok) {
      // Refused before any body is read or any upstream is touched; the connection is not reused.
      sendError(
        res,
        decision.status,
        decision.code,
        'request refused',
        decision.status === 401 ? CHALLENGE_AND_CLOSE : CLOSE,
      );
      this.report(req.method ?? '', '-', decision.status, started, decision.code);
      return;
    }
    const route = decision.route;
    if (route === ATTEST_ROUTE && this.options.attest !== undefined) {
      this.answerAttestation(req, res, this.options.attest, started);
      return;
    }
    if (route.path === '/health') {
      this.answerHealth(res, route, started);
      return;
    }
    // `Expect: 100-continue`: invite the body only now, after the guard (Node would have sent the 100 first).
    if (
      expectsContinue &&
      route.method === 'POST' &&
      !(Number(req.headers['content-length']) > this.limits.maxBodyBytes)
    )
      res.writeContinue();
    this.serve(req, res, route, started).catch(() => {
      if (!res.headersSent) sendError(res, 500, 'ERR_INTERNAL', 'internal error');
      else res.destroy();
    });
  }

  private report(method: string, path: string, status: number, started: number, code?: ErrorCode): void {
    this.onRequest?.({
      method,
      path,
      status,
      ...(code === undefined ? {} : { code }),
      ms: performance.now() - started,
    });
  }

  /**
   * `GET /companion/attest`: the MAC of (the request's Host, its nonce) under the loopback token, so that a
   * client can check the door before it sends the token. The guard has already checked the peer, the
   * target, that Host is exactly one of ours, the browser headers and that no Authorization came. Nothing
   * else is read, the runtime is not touched; no CORS header, no-store (in SECURITY_HEADERS).
   */
  private answerAttestation(req: IncomingMessage, res: ServerResponse, attest: Attestor, started: number): void {
    const nonce = readAttestNonce(req.rawHeaders);
    const host = req.headers.host;
    if (nonce === null || typeof host !== 'string') {
      sendError(res, 400, 'ERR_ATTEST_NONCE', 'request refused', CLOSE);
      this.report(ATTEST_ROUTE.method, ATTEST_ROUTE.path, 400, started, 'ERR_ATTEST_NONCE');
      return;
    }
    let mac: string;
    try {
      mac = attest(host.toLowerCase(), nonce);
    } catch {
      sendError(res, 500, 'ERR_INTERNAL', 'internal error', CLOSE);
      this.report(ATTEST_ROUTE.method, ATTEST_ROUTE.path, 500, started, 'ERR_INTERNAL');
      return;
    }
    const body = JSON.stringify({ mac });
    res.writeHead(200, [
      ...SECURITY_HEADERS,
      'Content-Type',
      'application/json; charset=utf-8',
      'Content-Length',
      String(Buffer.byteLength(body)),
    ]);
    res.end(body);
    this.report(ATTEST_ROUTE.method, ATTEST_ROUTE.path, 200, started);
  }

  /** `GET /health`: ready or not, nothing more: the runtime's details stay behind the door. */
  private answerHealth(res: ServerResponse, route: GuardRoute, started: number): void {
    const ready = this.options.upstream() !== null;
    const body = ready ? '{"status":"ready"}' : '{"status":"not-ready"}';
    res.writeHead(ready ? 200 : 503, [
      ...SECURITY_HEADERS,
      'Content-Type',
      'application/json; charset=utf-8',
      'Content-Length',
      String(body.length),
      ...(ready ? [] : ['Retry-After', String(this.admission.retryAfterSeconds())]),
    ]);
    res.end(body);
    this.report(route.method, route.path, res.statusCode, started);
  }

  /** Reads a POST's body (bounded), waits for admission, then proxies; a failure is answered here. */
  private async serve(req: IncomingMessage, res: ServerResponse, route: GuardRoute, started: number): Promise<void> {
    let release: Release | undefined;
    try {
      const body = route.method === 'POST' ? await readBody(req, this.limits.maxBodyBytes) : null;
      release = await this.acquire(res, req.socket);
      if (res.destroyed || req.socket.destroyed) {
        release();
        return;
      }
      const { 'content-type': contentType, accept } = req.headers;
      this.forward(res, req.socket, { route, contentType, accept, body, release, started });
    } catch (error) {
      release?.();
      this.answerServeFailure(req, res, route, started, error);
    }
  }

  private answerServeFailure(
    req: IncomingMessage,
    res: ServerResponse,
    route: GuardRoute,
    started: number,
    error: unknown,
  ): void {
    const code: ErrorCode = isCompanionError(error) ? error.code : 'ERR_INTERNAL';
    if (code === 'ERR_ADMISSION_ABORTED' || res.destroyed) return;
    const status = statusOf(code);
    let extra: readonly string[] =
      status === 429 || status === 503 ? ['Retry-After', String(Math.max(1, this.admission.retryAfterSeconds()))] : [];
    if (status === 413) {
      if (Number(req.headers['content-length']) > this.limits.maxBodyBytes) {
        // Announced too large: nothing of it was read, and nothing more will be.
        extra = CLOSE;
      } else {
        discardRest(req);
      }
    }
    sendError(res, status, code, MESSAGES[code] ?? 'request not served', extra);
    this.report(route.method, route.path, status, started, code);
  }

  /** A slot from admission; an AbortController only when the request may have to wait. */
  private acquire(res: ServerResponse, socket: Socket): Promise<Release> {
    const stats = this.admission.stats();
    if (stats.ready && stats.active < stats.maxConcurrent && stats.queued === 0) return this.admission.acquire();
    const abort = new AbortController();
    const onClose = (): void => abort.abort();
    // The socket too: a pipelined response queued behind one that closed the connection never emits
    // 'close' itself, and would otherwise wait (and then hold a slot) for good.
    res.once('close', onClose);
    socket.once('close', onClose);
    return this.admission.acquire(abort.signal).finally(() => {
      res.off('close', onClose);
      socket.off('close', onClose);
    });
  }

  /** Rebuilds the request for the runtime and dispatches it; {@link Forward} relays the answer. */
  private forward(res: ServerResponse, socket: Socket, admitted: Admitted): void {
    const { route, release, started, body } = admitted;
    const address = this.options.upstream();
    if (address === null) {
      release();
      sendError(res, 503, 'ERR_ADMISSION_NOT_READY', MESSAGES.ERR_ADMISSION_NOT_READY!, [
        'Retry-After',
        String(this.admission.retryAfterSeconds()),
      ]);
      this.report(route.method, route.path, 503, started, 'ERR_ADMISSION_NOT_READY');
      return;
    }
    const target = this.pools.for(address);
    const handler = new Forward(res, () => {
      socket.off('close', handler.onClientClose);
      release();
      if (this.onRequest !== undefined) this.report(route.method, route.path, res.statusCode, started);
    });
    res.on('close', handler.onClientClose);
    // A connection that closes under a queued pipelined response ends it too (its 'close' never comes).
    socket.once('close', handler.onClientClose);
    // Accept (and Content-Type for a body) are the client's own negotiation; nothing else passes.
    const base = admitted.accept === undefined ? target.headers : { ...target.headers, accept: admitted.accept };
    const headers =
      body === null
        ? base
        : {
            ...base,
            'content-type': admitted.contentType ?? 'application/octet-stream',
            'content-length': String(body.length),
          };
    target.pool.dispatch({ path: route.path, method: route.method as Dispatcher.HttpMethod, headers, body }, handler);
  }
}

/**
 * A body found too large while reading: drop the rest after the answer so that the client can read it (a
 * reset would hide it); a client that keeps sending past a bound is cut off.
 */
function discardRest(req: IncomingMessage): void {
  let discarded = 0;
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > DISCARD_LIMIT) req.socket.destroy();
  });
}

function invalidArg(message: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_VALUE', message);
}

/**
 * Connects the pool to the runtime's Unix socket, but only while the file at `path` is still the socket
 * the parent bound (issue 16 item 4): a socket file replaced or swapped for a link fails the request
 * closed (502), and nothing is sent to whatever listens there.
 */
function unixConnector(path: string, identity: SocketIdentity | undefined): buildConnector.connector {
  return (_options, callback) => {
    if (identity !== undefined && !sameSocket(path, identity)) {
      callback(
        new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the runtime socket is not the one the companion bound'),
        null,
      );
      return;
    }
    const socket = connectSocket({ path });
    const onError = (error: Error): void => {
      socket.destroy();
      callback(error, null);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      callback(null, socket);
    });
  };
}
