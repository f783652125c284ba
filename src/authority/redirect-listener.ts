/**
 * The one-shot loopback redirect listener of the native-app sign-in (RFC 8252 §7.3, D5.2, P-d).
 *
 * Binds `127.0.0.1:0` for the length of one flow. Accepts only `GET` of its exact path
 * with exactly one `Host: 127.0.0.1:<port>` (read from the raw headers) and an origin-form target; hands
 * the callback URL to `validate` (the OAuth core's `validateAuthorizationResponse`). The page shown to the
 * browser holds no secret, sets `Referrer-Policy: no-referrer` and `Cache-Control: no-store`, and
 * redirects nowhere. It closes after the first valid callback, after an error response from the hub (with
 * the right state), or after the timeout, and frees its port in every case.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { CompanionError, isCompanionError } from '../core/errors.js';

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
}

export interface RedirectListener<T> {
  /** `http://127.0.0.1:<port>`. */
  readonly origin: string;
  readonly port: number;
  /** The callback path (`/callback` by default). */
  readonly path: string;
  /** Settles with the validated callback, or rejects (timeout, hub error, cancel). */
  readonly result: Promise<T>;
  /** True once the listener has stopped listening. */
  readonly closed: () => boolean;
  /** Stops waiting (rejects `result` with ERR_OAUTH_CALLBACK_TIMEOUT unless already settled). */
  cancel(): Promise<void>;
}

/** Hub errors that end the flow (the user said no, or the hub refused the request). */
const TERMINAL = new Set<string>(['ERR_OAUTH_AUTHORIZATION_DENIED']);

const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  connection: 'close',
};

function page(title: string, text: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title>` +
    '<style>body{font:16px system-ui,sans-serif;margin:4rem auto;max-width:32rem;color:#222}</style></head>' +
    `<body><h1>${title}</h1><p>${text}</p></body></html>`;
}

function send(res: ServerResponse, status: number, title: string, text: string): void {
  const body = page(title, text);
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

/**
 * Starts the listener. Resolves once it listens (so the redirect URI uses the real bound port).
 * @throws ERR_SIGNIN_LISTENER when the loopback bind fails.
 */
export async function startRedirectListener<T>(options: RedirectListenerOptions<T>): Promise<RedirectListener<T>> {
  const path = options.path ?? '/callback';
  if (!/^\/[A-Za-z0-9._~/-]{0,128}$/.test(path) || path.includes('//') || path.includes('..')) throw new CompanionError('ERR_OAUTH_REDIRECT_URI');
  let settle: { resolve: (value: T) => void; reject: (error: Error) => void } | undefined;
  const result = new Promise<T>((resolve, reject) => {
    settle = { resolve, reject };
  });
  result.catch(() => undefined); // the caller awaits it; avoid an unhandled rejection before it does
  let done = false;
  let isClosed = false;
  let port = 0;

  // connectionsCheckingInterval: Node checks the two timeouts only this often (default 30 s).
  const server = createServer({ requireHostHeader: false, headersTimeout: 10_000, requestTimeout: 15_000, maxHeaderSize: 16 * 1024, connectionsCheckingInterval: 1_000 });
  // Node drops header fields past the 2000th without a word: a second Host placed after 2000 filler fields
  // would go unseen by singleHost(). No count limit; the head stays bounded by maxHeaderSize.
  server.maxHeadersCount = 0;

  const finish = (outcome: { value: T } | { error: Error }): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    server.close(() => {
      isClosed = true;
    });
    server.closeIdleConnections();
    if ('value' in outcome) settle!.resolve(outcome.value);
    else settle!.reject(outcome.error);
  };

  const refuse = (res: ServerResponse, status: number, code: string): void => {
    options.onRefused?.(code);
    send(res, status, 'Not a sign-in', 'This address only accepts the sign-in redirect of Companion.');
  };

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (done) {
      refuse(res, 410, 'ERR_SIGNIN_LISTENER');
      return;
    }
    const target = req.url ?? '';
    if (req.method !== 'GET') return refuse(res, 405, 'ERR_GUARD_METHOD');
    if (!target.startsWith('/') || target.startsWith('//')) return refuse(res, 400, 'ERR_GUARD_TARGET_FORM');
    if (singleHost(req.rawHeaders) !== `127.0.0.1:${port}`) return refuse(res, 400, 'ERR_GUARD_HOST_NOT_ALLOWED');
    const queryAt = target.indexOf('?');
    const targetPath = queryAt === -1 ? target : target.slice(0, queryAt);
    if (targetPath !== path) return refuse(res, 404, 'ERR_GUARD_PATH');
    const url = new URL(`http://127.0.0.1:${port}${target}`);
    try {
      const value = options.validate(url);
      send(res, 200, 'Signed in', 'Companion is signed in. You can close this tab.');
      finish({ value });
    } catch (error) {
      const code = isCompanionError(error) ? error.code : 'ERR_INTERNAL';
      options.onRefused?.(code);
      if (TERMINAL.has(code)) {
        send(res, 400, 'Sign-in not completed', 'The hub did not authorize Companion. You can close this tab and try again.');
        finish({ error: error as Error });
      } else {
        // A forged or stale callback (wrong state, wrong issuer, …): refused, and the flow keeps waiting.
        send(res, 400, 'Sign-in not accepted', 'This sign-in response was not accepted. You can close this tab.');
      }
    }
  });
  server.on('clientError', (_error, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', () => reject(new CompanionError('ERR_SIGNIN_LISTENER')));
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') {
    server.close();
    throw new CompanionError('ERR_SIGNIN_LISTENER');
  }
  port = address.port;
  const timer = setTimeout(() => finish({ error: new CompanionError('ERR_OAUTH_CALLBACK_TIMEOUT') }), options.timeoutMs ?? 5 * 60_000);

  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    path,
    result,
    closed: () => isClosed,
    async cancel() {
      finish({ error: new CompanionError('ERR_OAUTH_CALLBACK_TIMEOUT', 'the sign-in was cancelled') });
      await new Promise<void>((resolve) => {
        if (isClosed) resolve();
        else server.once('close', () => resolve());
      });
    },
  };
}
