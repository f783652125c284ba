/**
 * The one-shot loopback redirect listener of the native-app sign-in (RFC 8252 §7.3, D5.2, P-d).
 *
 * Binds `127.0.0.1:0` for the length of one flow. Accepts only `GET` of its exact path with exactly one
 * `Host: 127.0.0.1:<port>` (read from the raw headers) and an origin-form target; hands the callback URL
 * to `validate` (the OAuth core's `validateAuthorizationResponse`). Everything else is refused before
 * `validate` runs. The page shown to the browser holds no secret (no code, no state, nothing from the
 * request), sets `Referrer-Policy: no-referrer` and `Cache-Control: no-store`, and redirects nowhere (no
 * `Location`, no meta refresh, no script: the CSP forbids scripts). It closes after the first valid
 * callback, after an error response from the hub (with the right state), or after the timeout, and frees
 * its port in every case: the listening socket closes at once, idle or half-sent connections (a browser's
 * pre-connect, a slow client) are destroyed, and a response still being written closes after it
 * (`Connection: close`), bounded by a short grace period.
 *
 * With `awaitOutcome`, the page for the valid callback is held until the caller reports the real outcome
 * ({@link RedirectListener.complete}): "Signed in" only once the tokens are stored, a failure page naming
 * the error code (one of ours, never anything from the request) otherwise. A page never waits longer
 * than `outcomeTimeoutMs`, and the port is closed to new connections as soon as the callback arrived.
 *
 * The path is fixed (`/callback` by default) and not random per flow: the hub registers the redirect URI
 * with its path and matches it exactly (RFC 8252 §7.3 only lets the port vary), so a random path would be
 * refused by the hub. The per-flow secrets are `state` (checked by `validate`) and the PKCE verifier
 * (docs/signin.md).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { CompanionError, ERROR_CODES, isCompanionError, type ErrorCode, CodedTypeError } from '../core/errors.js';

export interface RedirectListenerOptions<T> {
  /** Checks a callback URL; returns the validated result or throws a coded error. */
  readonly validate: (callbackUrl: URL) => T;
  /** How long to wait for the browser (default 5 minutes). */
  readonly timeoutMs?: number;
  /** Notified of each refused request (reason code only, never the URL). */
  readonly onRefused?: (code: string) => void;
  /**
   * The callback path (default `/callback`, what the hub registered: RFC 8252 §7.3 lets the port vary,
   * not the path, and oidc-provider matches the path exactly). `state` and PKCE make each flow unique.
   */
  readonly path?: string;
  /**
   * Hold the browser's page for the valid callback until {@link RedirectListener.complete} reports how the
   * sign-in ended (default false: "Sign-in received" at once).
   */
  readonly awaitOutcome?: boolean;
  /** The longest a held page waits for the outcome (default 60 s); then it says to look at the terminal. */
  readonly outcomeTimeoutMs?: number;
}

/**
 * How the sign-in ended, for the held page: signed in (tokens stored), or failed with one of our codes
 * (a keychain or custody code says the tokens could not be kept; any other, that the hub did not finish).
 */
export type SignInOutcome = { readonly ok: true } | { readonly ok: false; readonly code: string };

export interface RedirectListener<T> {
  /** `http://127.0.0.1:<port>`. */
  readonly origin: string;
  readonly port: number;
  /** The callback path (`/callback` by default). */
  readonly path: string;
  /** Settles with the validated callback, or rejects (timeout, hub error, cancel). */
  readonly result: Promise<T>;
  /** True once the listener has stopped listening and every connection is gone. */
  readonly closed: () => boolean;
  /**
   * Stops waiting (rejects `result` with ERR_OAUTH_CALLBACK_TIMEOUT unless already settled) and resolves
   * once the port is free and every connection is closed.
   */
  cancel(): Promise<void>;
  /**
   * Shows the held page (see `awaitOutcome`) for `outcome`; does nothing when no page is held. Then the
   * last connection closes.
   */
  complete(outcome: SignInOutcome): void;
}

/** Default wait for the browser. */
export const DEFAULT_CALLBACK_TIMEOUT_MS = 5 * 60_000;
/** How long a response still being written may keep its connection after the listener is done. */
const CLOSE_GRACE_MS = 2_000;
/** Default bound on a page held for the outcome (the code exchange and the keychain write). */
export const DEFAULT_OUTCOME_TIMEOUT_MS = 60_000;

/** Hub errors that end the flow (the user said no, or the hub refused the request). */
const TERMINAL = new Set<string>(['ERR_OAUTH_AUTHORIZATION_DENIED']);

const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  // No script, no frame, no form, no fetch: the page can do nothing but show its text.
  'content-security-policy':
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  connection: 'close',
};

/** The pages, fixed text only: nothing from the request is ever echoed. */
const PAGES = {
  received: [
    'Sign-in received',
    'Companion received the answer from the hub and is finishing the sign-in. You can close this tab.',
  ],
  signedIn: ['Signed in', 'Companion is signed in and its tokens are in the keychain. You can close this tab.'],
  userDenied: [
    'Sign-in cancelled',
    'You denied access, so nothing was stored. You can close this tab; run companion login to sign in again.',
  ],
  denied: [
    'Sign-in not completed',
    'The hub refused the sign-in request, so nothing was stored. See the terminal for the reason, then run companion login again.',
  ],
  storeFailed: [
    'Sign-in not completed',
    'The hub signed you in, but Companion could not store the tokens in the keychain, so nothing was kept. Unlock the keychain (see the terminal), then run companion login again.',
  ],
  exchangeFailed: [
    'Sign-in not completed',
    'The hub did not complete the sign-in, so nothing was stored. See the terminal for the reason, then run companion login again.',
  ],
  stopped: [
    'Sign-in not completed',
    'Companion stopped before it finished the sign-in, so nothing was stored. See the terminal.',
  ],
  unknown: ['Sign-in still running', 'Companion is still finishing the sign-in. See the terminal for the outcome.'],
  notAccepted: ['Sign-in not accepted', 'This sign-in response was not accepted. You can close this tab.'],
  notHere: ['Not a sign-in', 'This address only accepts the sign-in redirect of Companion.'],
  over: ['Sign-in already finished', 'This sign-in is over. You can close this tab.'],
} as const satisfies Record<string, readonly [string, string]>;

function page([title, text]: readonly [string, string], code?: ErrorCode): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title>` +
    '<style>body{font:16px system-ui,sans-serif;margin:4rem auto;max-width:32rem;color:#222}</style></head>' +
    `<body><h1>${title}</h1><p>${text}</p>${code === undefined ? '' : `<p>Error code: <code>${code}</code></p>`}</body></html>`
  );
}

/** Our code, when `value` is one (a page shows only codes from the closed list, never request text). */
function knownCode(value: unknown): ErrorCode | undefined {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value) ? (value as ErrorCode) : undefined;
}

/** The held page for an outcome: which text, which status, which code to name. */
function outcomePage(outcome: SignInOutcome): { status: number; which: readonly [string, string]; code?: ErrorCode } {
  if (outcome.ok) return { status: 200, which: PAGES.signedIn };
  const code = knownCode(outcome.code) ?? 'ERR_INTERNAL';
  if (code === 'ERR_CUSTODY_STORE_FAILED' || code.startsWith('ERR_KEYCHAIN_'))
    return { status: 500, which: PAGES.storeFailed, code };
  if (code === 'ERR_OAUTH_CALLBACK_TIMEOUT') return { status: 500, which: PAGES.stopped, code };
  return { status: 502, which: PAGES.exchangeFailed, code };
}

function send(res: ServerResponse, status: number, which: readonly [string, string], code?: ErrorCode): void {
  const body = page(which, code);
  res.writeHead(status, { ...PAGE_HEADERS, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The single Host header value from raw headers, or null when absent or repeated. */
function singleHost(rawHeaders: readonly string[]): string | null {
  let host: string | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] ?? '').toLowerCase() === 'host') {
      if (host !== null) return null;
      host = rawHeaders[i + 1] ?? '';
    }
  }
  return host;
}
/** A request that passed every guard (its callback URL), or why it is refused. */
type GuardResult = { readonly url: URL } | { readonly status: number; readonly code: string };

/**
 * The guards a request passes before `validate` sees it: `GET`, an origin-form target, exactly one
 * `Host: 127.0.0.1:<port>`, the exact callback path, a URL that parses.
 */
function guardCallback(req: IncomingMessage, port: number, path: string): GuardResult {
  const target = req.url ?? '';
  if (req.method !== 'GET') return { status: 405, code: 'ERR_GUARD_METHOD' };
  // Absolute-form (`GET http://evil/…`) and `//host/…` would let the request name another host.
  if (!target.startsWith('/') || target.startsWith('//')) return { status: 400, code: 'ERR_GUARD_TARGET_FORM' };
  // Exactly one Host, exactly the bound address (DNS rebinding, `localhost:P`, duplicates): raw headers.
  if (singleHost(req.rawHeaders) !== `127.0.0.1:${port}`) return { status: 400, code: 'ERR_GUARD_HOST_NOT_ALLOWED' };
  const queryAt = target.indexOf('?');
  const targetPath = queryAt === -1 ? target : target.slice(0, queryAt);
  if (targetPath !== path) return { status: 404, code: 'ERR_GUARD_PATH' };
  try {
    return { url: new URL(`http://127.0.0.1:${port}${target}`) };
  } catch {
    return { status: 400, code: 'ERR_GUARD_MALFORMED' };
  }
}

/** The checked path and timeout. */
function checkOptions<T>(options: RedirectListenerOptions<T>): { path: string; timeoutMs: number } {
  const path = options.path ?? '/callback';
  if (!/^\/[A-Za-z0-9._~/-]{0,128}$/.test(path) || path.includes('//') || path.includes('..'))
    throw new CompanionError('ERR_OAUTH_REDIRECT_URI');
  const timeoutMs = options.timeoutMs ?? DEFAULT_CALLBACK_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 24 * 3600_000) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'timeoutMs must be a whole number of milliseconds, 1 ms to 24 h');
  }
  return { path, timeoutMs };
}

/** The loopback HTTP server with tight limits: it serves one browser redirect, nothing else. */
function createLoopbackServer(): Server {
  // connectionsCheckingInterval: Node checks the two timeouts only this often (default 30 s).
  const server = createServer({
    requireHostHeader: false,
    headersTimeout: 10_000,
    requestTimeout: 15_000,
    maxHeaderSize: 16 * 1024,
    keepAliveTimeout: 1_000,
    connectionsCheckingInterval: 1_000,
  });
  // Node drops header fields past the 2000th without a word: a second Host placed after 2000 filler fields
  // would go unseen by singleHost(). No count limit; the head stays bounded by maxHeaderSize.
  server.maxHeadersCount = 0;
  return server;
}

/**
 * Starts the listener. Resolves once it listens (so the redirect URI uses the real bound port).
 * @throws ERR_SIGNIN_LISTENER when the loopback bind fails, ERR_OAUTH_REDIRECT_URI for a bad `path`,
 *   TypeError ERR_INVALID_ARG_VALUE for a bad `timeoutMs`. `result` rejects with ERR_OAUTH_CALLBACK_TIMEOUT
 *   when no valid callback came in time or on `cancel()`, or with the hub's error (ERR_OAUTH_AUTHORIZATION_DENIED).
 */
export async function startRedirectListener<T>(options: RedirectListenerOptions<T>): Promise<RedirectListener<T>> {
  const { path, timeoutMs } = checkOptions(options);
  const flow = new CallbackFlow(options, path);
  await flow.listen();
  flow.startWait(timeoutMs);
  return {
    origin: `http://127.0.0.1:${flow.port}`,
    port: flow.port,
    path,
    result: flow.result,
    closed: () => flow.isClosed,
    cancel: () => flow.cancel(),
    complete: (outcome) => flow.complete(outcome),
  };
}

/**
 * One flow's listener: the server and its connections, the one-shot state (`done`) and the page held for
 * the outcome. Nothing after the first valid callback (or the end of the flow) reaches `validate`.
 */
class CallbackFlow<T> {
  readonly server = createLoopbackServer();
  readonly result: Promise<T>;
  /** Resolves once the listener stopped listening and every connection is gone. */
  readonly closedPromise: Promise<void>;
  port = 0;
  isClosed = false;
  private done = false;
  private settle: { resolve: (value: T) => void; reject: (error: Error) => void } | undefined;
  /** The wait for the browser, the grace period of a response still being written, the held page's bound. */
  private readonly timers: { wait?: NodeJS.Timeout; grace?: NodeJS.Timeout; outcome?: NodeJS.Timeout } = {};
  /** The response to the valid callback, held for the outcome (`awaitOutcome`). */
  private held: ServerResponse | null = null;
  /** The longest a held page waits for the outcome. */
  private readonly outcomeTimeoutMs: number;
  private readonly sockets = new Set<Socket>();
  /** Sockets with a response being written (they close by themselves: `Connection: close`). */
  private readonly busy = new WeakSet<Socket>();

  constructor(
    private readonly options: RedirectListenerOptions<T>,
    private readonly path: string,
  ) {
    this.result = new Promise<T>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.result.catch(() => undefined); // the caller awaits it; avoid an unhandled rejection before it does
    this.outcomeTimeoutMs = options.outcomeTimeoutMs ?? DEFAULT_OUTCOME_TIMEOUT_MS;
    this.closedPromise = new Promise<void>((resolve) => {
      this.server.once('close', () => {
        this.isClosed = true;
        clearTimeout(this.timers.grace);
        resolve();
      });
    });
    this.server.on('connection', (socket: Socket) => this.track(socket));
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => this.answer(req, res));
    this.server.on('clientError', (_error, socket) => socket.destroy());
  }

  /** Binds `127.0.0.1` on a port the system picks; ERR_SIGNIN_LISTENER when it cannot. */
  async listen(): Promise<void> {
    const server = this.server;
    await new Promise<void>((resolve, reject) => {
      const onError = (): void => reject(new CompanionError('ERR_SIGNIN_LISTENER'));
      server.once('error', onError);
      server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    // Errors after the bind (a socket-level failure) must not crash the process; the timeout still ends the flow.
    server.on('error', () => undefined);
    const address = server.address();
    if (address === null || typeof address === 'string') {
      server.close();
      throw new CompanionError('ERR_SIGNIN_LISTENER');
    }
    this.port = address.port;
  }

  /** Ends the flow with ERR_OAUTH_CALLBACK_TIMEOUT when no valid callback came within `timeoutMs`. */
  startWait(timeoutMs: number): void {
    this.timers.wait = setTimeout(
      () => this.finish({ error: new CompanionError('ERR_OAUTH_CALLBACK_TIMEOUT') }),
      timeoutMs,
    );
  }

  /** {@link RedirectListener.cancel}. */
  async cancel(): Promise<void> {
    this.finish({ error: new CompanionError('ERR_OAUTH_CALLBACK_TIMEOUT', 'the sign-in was cancelled') });
    this.release(500, PAGES.stopped);
    await this.closedPromise;
  }

  /** {@link RedirectListener.complete}. */
  complete(outcome: SignInOutcome): void {
    const shown = outcomePage(outcome);
    this.release(shown.status, shown.which, shown.code);
  }

  private track(socket: Socket): void {
    if (this.done) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private answer(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    this.busy.add(socket);
    res.once('close', () => {
      this.busy.delete(socket);
      if (this.done) socket.destroy();
    });
    // One shot: nothing after the first valid callback (or the end of the flow) reaches `validate`.
    if (this.done) return this.refuse(res, 410, 'ERR_SIGNIN_LISTENER', PAGES.over);
    const checked = guardCallback(req, this.port, this.path);
    if (!('url' in checked)) return this.refuse(res, checked.status, checked.code);
    this.answerCallback(checked.url, res);
  }

  /** Hands a guarded callback URL to `validate`; a valid one or a hub error ends the flow. */
  private answerCallback(url: URL, res: ServerResponse): void {
    try {
      const value = this.options.validate(url);
      if (this.options.awaitOutcome === true) {
        this.finish({ value }, res);
      } else {
        send(res, 200, PAGES.received);
        this.finish({ value });
      }
    } catch (error) {
      const code = isCompanionError(error) ? error.code : 'ERR_INTERNAL';
      if (TERMINAL.has(code)) {
        // The user's own "Deny" (RFC 6749 §4.1.2.1 access_denied) reads differently from a hub refusal.
        const userDenied = isCompanionError(error) && error.detail?.error === 'access_denied';
        this.refuse(res, 400, code, userDenied ? PAGES.userDenied : PAGES.denied);
        this.finish({ error: error as Error });
      } else {
        // A forged or stale callback (wrong state, wrong issuer, …): refused, and the flow keeps waiting.
        this.refuse(res, 400, code, PAGES.notAccepted);
      }
    }
  }

  private refuse(
    res: ServerResponse,
    status: number,
    code: string,
    which: readonly [string, string] = PAGES.notHere,
  ): void {
    this.options.onRefused?.(code);
    send(res, status, which);
  }

  /** Settles `result` once, frees the port at once, and holds the page (`hold`) or lets the last response finish. */
  private finish(outcome: { value: T } | { error: Error }, hold: ServerResponse | null = null): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timers.wait);
    // The port is free from here on: no new connection is accepted.
    this.server.close();
    // A browser's pre-connected or a half-sent request would keep the server open: drop them now.
    for (const socket of this.sockets) if (!this.busy.has(socket)) socket.destroy();
    if (hold !== null) this.hold(hold);
    else this.startGrace();
    if ('value' in outcome) this.settle!.resolve(outcome.value);
    else this.settle!.reject(outcome.error);
  }

  /** Keeps the valid callback's page open until the outcome, bounded by `outcomeTimeoutMs`. */
  private hold(res: ServerResponse): void {
    // Why hold: the page must tell the truth, and the truth (tokens stored or not) comes later.
    this.held = res;
    res.once('close', () => {
      if (this.held === res) this.release(200, PAGES.unknown);
    });
    this.timers.outcome = setTimeout(() => this.release(200, PAGES.unknown), this.outcomeTimeoutMs);
    this.timers.outcome.unref();
  }

  /** Answers the held page (once) and lets the last connection close. */
  private release(status: number, which: readonly [string, string], code?: ErrorCode): void {
    const res = this.held;
    if (res === null) return;
    this.held = null;
    clearTimeout(this.timers.outcome);
    if (!res.writableEnded && !res.destroyed) send(res, status, which, code);
    this.startGrace();
  }

  private startGrace(): void {
    clearTimeout(this.timers.grace);
    this.timers.grace = setTimeout(() => this.server.closeAllConnections(), CLOSE_GRACE_MS);
    this.timers.grace.unref();
  }
}
