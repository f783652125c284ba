// Loaded into a `companion` child with `node --import` by the P-f leak test: records the secrets the
// child's OAuth requests carry (the token request's code, PKCE verifier and refresh token; the token
// response's access, refresh and ID tokens) from undici's diagnostics channels and hands them to the test
// on file descriptor 3, one JSON line each. The product is not changed; the harness just knows what to
// look for in everything the child prints and writes. Nothing is recorded unless the parent set
// COMPANION_TEST_RECORD_FD=3. (The descriptor is not probed with fstatSync at load time: on Node 20.20 that
// call, made from a preload inside the repository with fd 3 a pipe, breaks the CJS interop of the `debug`
// package that oidc-provider imports — "Debug is not a constructor".)
import { subscribe } from 'node:diagnostics_channel';
import { writeSync } from 'node:fs';

const FD = 3;
let open = process.env.COMPANION_TEST_RECORD_FD === String(FD);

interface Exchange {
  readonly method: string;
  readonly path: string;
  readonly sent: Buffer[];
  readonly received: Buffer[];
}

const exchanges = new WeakMap<object, Exchange>();
const REQUEST_SECRETS = ['code', 'code_verifier', 'refresh_token', 'token'];
const RESPONSE_SECRETS = ['access_token', 'refresh_token', 'id_token'];

function emit(kind: string, value: string): void {
  if (!open || value.length === 0) return;
  try {
    writeSync(FD, `${JSON.stringify({ kind, value })}\n`);
  } catch {
    open = false;
  }
}

function bytes(chunk: unknown): Buffer {
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  if (chunk instanceof Uint8Array) return Buffer.from(chunk);
  return Buffer.alloc(0);
}

if (open) {
  subscribe('undici:request:create', (message) => {
    const { request } = message as { request: { method: string; path: string } };
    exchanges.set(request, { method: request.method, path: request.path, sent: [], received: [] });
  });
  subscribe('undici:request:bodyChunkSent', (message) => {
    const { request, chunk } = message as { request: object; chunk: unknown };
    exchanges.get(request)?.sent.push(bytes(chunk));
  });
  subscribe('undici:request:bodyChunkReceived', (message) => {
    const { request, chunk } = message as { request: object; chunk: unknown };
    exchanges.get(request)?.received.push(bytes(chunk));
  });
  subscribe('undici:request:trailers', (message) => {
    const { request } = message as { request: object };
    const exchange = exchanges.get(request);
    if (exchange === undefined || exchange.method !== 'POST') return;
    const form = new URLSearchParams(Buffer.concat(exchange.sent).toString('utf8'));
    for (const name of REQUEST_SECRETS) emit(name, form.get(name) ?? '');
    try {
      const json = JSON.parse(Buffer.concat(exchange.received).toString('utf8')) as Record<string, unknown>;
      for (const name of RESPONSE_SECRETS) if (typeof json[name] === 'string') emit(name, json[name]);
    } catch {
      // not a JSON answer
    }
  });
}
