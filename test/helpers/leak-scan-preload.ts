// Test-only instrumentation for the leak scan (issue 11), loaded into the demo child with
// `node --import <this file> bin/companion.js demo …`. It changes no behaviour and adds no production hook:
// it listens on undici's diagnostics channels (the demo's HTTPS to the hub and the LLM client's HTTP to the
// front door both go through undici) and on the runtime child's stderr, and reports to the harness, over
// file descriptor 3 only (a socket the harness opened; never a file, an env var or argv), every secret value
// it sees on the wire (authorization code, state, PKCE verifier, tokens, cookies, the dev password,
// bearer tokens) plus the runtime's stderr lines and its model path, one JSON object per line.
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { subscribe } from 'node:diagnostics_channel';
import { writeSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';

const CHANNEL_FD = 3;

function send(message: Record<string, unknown>): void {
  const bytes = Buffer.from(`${JSON.stringify(message)}\n`, 'utf8');
  let offset = 0;
  for (let attempt = 0; offset < bytes.length && attempt < 10_000; attempt++) {
    try {
      offset += writeSync(CHANNEL_FD, bytes, offset);
    } catch (error) {
      if ((error as { code?: string }).code !== 'EAGAIN') return;
    }
  }
}

function secret(kind: string, value: string | null | undefined): void {
  if (typeof value === 'string' && value.length >= 8) send({ type: 'secret', kind, value });
}

function fromParams(params: URLSearchParams, where: string): void {
  for (const [name, kind] of [
    ['code', 'authorization code'],
    ['state', 'state'],
    ['code_verifier', 'PKCE verifier'],
    ['refresh_token', 'refresh token'],
    ['token', 'token'],
    ['password', 'hub password'],
    ['access_token', 'access token'],
    ['id_token', 'ID token'],
    ['csrf', 'csrf'],
  ] as const) {
    for (const value of params.getAll(name)) secret(`${kind} (${where})`, value);
  }
}

function fromAuthorization(value: string, where: string): void {
  const bearer = /^bearer\s+(\S+)/i.exec(value);
  if (bearer !== null) secret(`bearer token (${where})`, bearer[1]);
}

function fromCookies(value: string, where: string): void {
  for (const pair of value.split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0) secret(`cookie ${pair.slice(0, eq).trim()} (${where})`, pair.slice(eq + 1).trim());
  }
}

interface UndiciRequest {
  origin?: unknown;
  path?: unknown;
  method?: unknown;
  headers?: unknown;
}

function text(value: unknown): string {
  return Buffer.isBuffer(value) ? value.toString('latin1') : String(value);
}

const bodies = new WeakMap<object, Buffer[]>();

subscribe('undici:request:create', (message) => {
  const { request } = message as { request: UndiciRequest };
  const path = typeof request.path === 'string' ? request.path : '';
  const q = path.indexOf('?');
  if (q !== -1) fromParams(new URLSearchParams(path.slice(q + 1)), 'request URL');
  const headers = Array.isArray(request.headers)
    ? request.headers
    : typeof request.headers === 'string'
      ? request.headers.split('\r\n').flatMap((line) => {
          const colon = line.indexOf(':');
          return colon > 0 ? [line.slice(0, colon), line.slice(colon + 1).trim()] : [];
        })
      : [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = text(headers[i]).toLowerCase();
    const value = text(headers[i + 1]);
    if (name === 'authorization') fromAuthorization(value, `${String(request.origin)}`);
    if (name === 'cookie') fromCookies(value, 'request cookie');
  }
});

subscribe('undici:request:bodyChunkSent', (message) => {
  const { chunk } = message as { chunk: unknown };
  const body =
    typeof chunk === 'string'
      ? chunk
      : Buffer.isBuffer(chunk) || chunk instanceof Uint8Array
        ? Buffer.from(chunk).toString('utf8')
        : '';
  if (body.includes('=') && !body.trimStart().startsWith('{')) fromParams(new URLSearchParams(body), 'request body');
});

subscribe('undici:request:headers', (message) => {
  const { request, response } = message as { request: object; response: { headers: unknown[] } };
  const headers = response.headers ?? [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = text(headers[i]).toLowerCase();
    const value = text(headers[i + 1]);
    if (name === 'set-cookie') fromCookies(value.split(';')[0] ?? '', 'set-cookie');
    if (name === 'location') {
      try {
        fromParams(new URL(value, 'https://placeholder.invalid').searchParams, 'redirect');
      } catch {
        // Not a URL.
      }
    }
  }
  bodies.set(request, []);
});

subscribe('undici:request:bodyChunkReceived', (message) => {
  const { request, chunk } = message as { request: object; chunk: Buffer };
  bodies.get(request)?.push(Buffer.from(chunk));
});

subscribe('undici:request:trailers', (message) => {
  const { request } = message as { request: object };
  const chunks = bodies.get(request);
  bodies.delete(request);
  if (chunks === undefined || chunks.length === 0) return;
  const body = Buffer.concat(chunks).toString('utf8');
  if (!body.trimStart().startsWith('{')) return;
  try {
    const value = JSON.parse(body) as Record<string, unknown>;
    for (const [field, kind] of [
      ['access_token', 'access token'],
      ['refresh_token', 'refresh token'],
      ['id_token', 'ID token'],
    ] as const) {
      if (typeof value[field] === 'string') secret(`${kind} (token response)`, value[field] as string);
    }
  } catch {
    // Not JSON.
  }
});

// The runtime child: its pid and stderr. spawn() is wrapped through the
// CommonJS export and pushed to the ESM bindings, so the spawn adapter's `import { spawn }` sees it.
const require = createRequire(import.meta.url);
const childProcess = require('node:child_process') as typeof import('node:child_process');
const originalSpawn = childProcess.spawn;
childProcess.spawn = function spawnAndWatch(this: unknown, ...args: unknown[]): ChildProcess {
  const child = (originalSpawn as (...a: unknown[]) => ChildProcess).apply(this, args);
  const argv = Array.isArray(args[1]) ? (args[1] as unknown[]).map(String) : [];
  if (argv.some((a) => a.includes('runtime-server'))) {
    child.once('spawn', () => {
      send({ type: 'runtime-pid', pid: child.pid });
    });
    child.stderr?.on('data', (chunk: Buffer | string) => send({ type: 'runtime-stderr', text: chunk.toString() }));
  }
  return child;
} as typeof childProcess.spawn;
// The model is handed over as descriptor 3 (never on argv): learn its path where the spawn adapter opens it.
const fs = require('node:fs') as typeof import('node:fs');
const originalOpenSync = fs.openSync;
fs.openSync = function openAndWatch(this: unknown, ...args: unknown[]): number {
  const [path] = args;
  if (typeof path === 'string' && path.endsWith('.gguf')) send({ type: 'model-path', value: path });
  return (originalOpenSync as (...a: unknown[]) => number).apply(this, args);
} as typeof fs.openSync;
// The supervisor opens the installed model once (fs/promises open) and hands that descriptor on.
const fsPromises = require('node:fs/promises') as typeof import('node:fs/promises');
const originalOpen = fsPromises.open;
fsPromises.open = function openAndWatch(
  this: unknown,
  ...args: unknown[]
): Promise<import('node:fs/promises').FileHandle> {
  const [path] = args;
  if (typeof path === 'string' && path.endsWith('.gguf')) send({ type: 'model-path', value: path });
  return (originalOpen as (...a: unknown[]) => Promise<import('node:fs/promises').FileHandle>).apply(this, args);
} as typeof fsPromises.open;
syncBuiltinESMExports();
send({ type: 'ready' });
