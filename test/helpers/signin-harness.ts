// Test harness for the sign-in flow (issue 6): an instrumented fetch that records the secrets a flow
// handles (the harness may know them; the product must never print them) and can make the token endpoint
// fail; a browser stand-in that hands the authorization URL to the test; the hub's pages walked to the
// callback URL without delivering it; raw and plain deliveries to the loopback listener; port checks.
import { request } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { OAuthFetch } from '../../src/core/oauth.js';
import type { CompanionHub } from './companion-hub.js';
import { walkAuthorization, withAgent } from './hub.js';

export interface RecordingFetch {
  /** The fetch to inject (same shape as the companion's). */
  readonly fetch: OAuthFetch & typeof globalThis.fetch;
  /** Every secret seen so far: code, PKCE verifier, access/refresh/ID tokens, revoked token. */
  readonly secrets: Set<string>;
  /** POSTs to the token endpoint that were sent (or answered by `tokenAnswer`). */
  tokenPosts: number;
  /** Every request, `METHOD path`. */
  readonly requests: string[];
}

export interface RecordingFetchOptions {
  /** Answers a token-endpoint POST instead of the hub (a fault); undefined lets it through. */
  readonly tokenAnswer?: (form: URLSearchParams | null) => Response | undefined;
}

const REQUEST_SECRETS = ['code', 'code_verifier', 'refresh_token', 'token'];
const RESPONSE_SECRETS = ['access_token', 'refresh_token', 'id_token'];

/** Wraps `inner` (the companion's verifying fetch) to record secrets and count token requests. */
export function recordingFetch(inner: typeof globalThis.fetch, options: RecordingFetchOptions = {}): RecordingFetch {
  const record: RecordingFetch = {
    secrets: new Set<string>(),
    tokenPosts: 0,
    requests: [],
    fetch: (async (url: string | URL, init?: RequestInit) => {
      const target = new URL(String(url));
      const method = init?.method ?? 'GET';
      record.requests.push(`${method} ${target.pathname}`);
      const isToken = method === 'POST' && /\/token$/.test(target.pathname);
      if (init?.body instanceof URLSearchParams) {
        for (const name of REQUEST_SECRETS) {
          const value = init.body.get(name);
          if (value) record.secrets.add(value);
        }
      }
      if (isToken) {
        record.tokenPosts += 1;
        const answer = options.tokenAnswer?.(init?.body instanceof URLSearchParams ? init.body : null);
        if (answer !== undefined) return answer;
      }
      const response = await inner(url, init);
      if (isToken) {
        try {
          const json = (await response.clone().json()) as Record<string, unknown>;
          for (const name of RESPONSE_SECRETS)
            if (typeof json[name] === 'string' && json[name] !== '') record.secrets.add(json[name]);
        } catch {
          // not JSON: nothing to record
        }
      }
      return response;
    }) as OAuthFetch & typeof globalThis.fetch,
  };
  return record;
}

/** A browser stand-in: `openBrowser` hands the URL to the test and returns at once. */
export function deferredBrowser(): { openBrowser: (url: string) => Promise<void>; url: Promise<string> } {
  let give: (url: string) => void = () => undefined;
  const url = new Promise<string>((resolve) => {
    give = resolve;
  });
  return {
    url,
    openBrowser: async (value: string) => {
      give(value);
    },
  };
}

/** Walks the hub's login and consent pages (dev user) and returns the callback URL, undelivered. */
export async function callbackFor(
  ch: CompanionHub,
  authorizationUrl: string,
  consent: 'allow' | 'deny' = 'allow',
): Promise<URL> {
  const outcome = await walkAuthorization(withAgent(ch.hub, ch.agent), new URL(authorizationUrl), { consent });
  if (outcome.kind !== 'redirect') throw new Error(`the hub walk ended on a page (status ${outcome.status})`);
  return outcome.location;
}

/** The loopback port of the redirect URI inside an authorization URL. */
export function listenerPortOf(authorizationUrl: string): number {
  return Number(new URL(new URL(authorizationUrl).searchParams.get('redirect_uri') ?? '').port);
}

export interface Delivered {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** A plain GET of `url` as a browser would send it (one Host, origin-form); 5 s bound. */
export function deliver(url: URL | string, method = 'GET'): Promise<Delivered> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, timeout: 5_000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('deliver: no answer within 5 s')));
    req.end();
  });
}

/** True when nothing accepts a connection on 127.0.0.1:port. */
export function portRefuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

/** An idle TCP connection to 127.0.0.1:port (a browser's pre-connect): resolves once connected. */
export function idleConnection(port: number): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    socket.once('connect', () => resolve({ socket, closed }));
    socket.once('error', reject);
  });
}

/** A TCP server on 127.0.0.1:0 that accepts and never answers (a hung hub). */
export async function blackHole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A port on 127.0.0.1 that was just free (bound and released): for "the hub is down". */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Listening TCP servers of this process (for "no listener was started"). */
export function listeningServers(): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'TCPServerWrap').length;
}

/** Each needle that occurs in `text`, by a short label (never the value itself). */
export function leaksIn(text: string, needles: ReadonlyMap<string, string>): string[] {
  return [...needles].filter(([, value]) => value.length > 0 && text.includes(value)).map(([label]) => label);
}
