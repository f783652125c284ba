// A real loopback HTTP server whose only gate is verifyLoopbackRequest, and a raw-socket client that sends
// exactly the bytes a test writes (duplicate headers, absolute-form targets, HTTP/1.0 without Host).
// `hits` counts requests that reached the "upstream" (the code after the guard).
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { allowedHostsFor, createTokenVerifier, verifyLoopbackRequest, type GuardPolicy } from '../../src/core/guard.js';
import { ROUTES, TOKEN } from './cores-guard.js';

export interface GuardedServer {
  readonly port: number;
  readonly hits: { count: number };
  close(): Promise<void>;
}

export async function startGuardedServer(extra: Partial<GuardPolicy> = {}): Promise<GuardedServer> {
  const hits = { count: 0 };
  // Filled in once the port is known; no request can arrive before listen() returns.
  const bound: { policy?: GuardPolicy } = {};
  const server: Server = createServer((req, res) => {
    const decision = verifyLoopbackRequest(
      {
        peerAddress: req.socket.remoteAddress ?? '',
        method: req.method ?? '',
        target: req.url ?? '',
        rawHeaders: req.rawHeaders,
        httpVersion: req.httpVersion,
      },
      bound.policy!,
    );
    const reply = (status: number, value: unknown): void => {
      const text = JSON.stringify(value);
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        connection: 'close',
      });
      res.end(text);
    };
    if (!decision.ok) {
      reply(decision.status, { error: { code: decision.code } });
      return;
    }
    hits.count++;
    reply(200, { ok: true, route: decision.route.path });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  bound.policy = {
    allowedHosts: allowedHostsFor(port),
    verifyToken: createTokenVerifier(TOKEN),
    routes: ROUTES,
    ...extra,
  };
  return {
    port,
    hits,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface RawResponse {
  readonly status: number;
  readonly head: string;
  readonly body: string;
  /** Lower-case header names of the response. */
  readonly headerNames: readonly string[];
}

/** Sends `lines` (joined with CRLF, ended by an empty line) and reads the whole response; 5 s bound. */
export function rawRequest(port: number, lines: readonly string[], body = ''): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('rawRequest: no complete response within 5 s'));
    }, 5_000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      const head = split === -1 ? text : text.slice(0, split);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      const headerNames = head
        .split('\r\n')
        .slice(1)
        .map((line) => line.slice(0, line.indexOf(':')).toLowerCase());
      resolve({ status, head, body: split === -1 ? '' : text.slice(split + 4), headerNames });
    });
    socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
  });
}

/** The refusal code in a guarded server's JSON body, or undefined. */
export function codeIn(response: RawResponse): string | undefined {
  try {
    return (JSON.parse(response.body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}
