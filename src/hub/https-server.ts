/**
 * The HTTPS listener the hub and its model host share: loopback only, bounded header, request and
 * keep-alive times, TLS 1.2 at least, and a close that does not wait for idle or stalled connections.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { CompanionError } from '../core/errors.js';

/** A server bound on 127.0.0.1. */
export interface LoopbackHttpsServer {
  readonly server: Server;
  readonly port: number;
  /** Stops listening and destroys every open connection (a stalled download too). */
  close(): Promise<void>;
}

/**
 * Creates the server and binds it on `127.0.0.1:port` (0: an ephemeral port), exclusively.
 *
 * @param what names the server in the bind error, e.g. `the hub`
 * @throws ERR_BIND_FAILED when the port cannot be bound
 */
export async function listenLoopbackHttps(
  tls: { readonly key: string; readonly cert: string },
  port: number,
  what: string,
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<LoopbackHttpsServer> {
  const server = createServer({ key: tls.key, cert: tls.cert, minVersion: 'TLSv1.2' }, onRequest);
  server.headersTimeout = 20_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(new CompanionError('ERR_BIND_FAILED', `${what} could not listen on 127.0.0.1`, { cause: error })),
    );
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new CompanionError('ERR_BIND_FAILED');
  return {
    server,
    port: address.port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await closed;
    },
  };
}

/** A short `text/plain` answer (a line), never cached; `extra` headers come after the standard ones. */
export function sendPlainText(
  res: ServerResponse,
  status: number,
  text: string,
  extra: Record<string, string> = {},
): void {
  const body = Buffer.from(`${text}\n`, 'utf8');
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(body.length),
    'Cache-Control': 'no-store',
    ...extra,
  });
  res.end(body);
}
