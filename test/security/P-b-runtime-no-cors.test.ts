// P-b behind the front door: the bundled runtime (src/runtime-server/server.ts, the child the companion
// spawns) never sends a CORS header, whatever a browser page asks: a simple request with `Origin`, a
// preflight, a streamed answer, a refusal. In loopback-TCP mode the runtime is a port a page could aim at;
// without `Access-Control-Allow-*` the browser keeps every answer from the page. Real runtime, tiny model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { runtimeClient, type RuntimeClient } from '../helpers/runtime-client.js';
import { tempDir, writeTinyModel } from '../helpers/runtime-env.js';

const EVIL = 'https://evil.example';
const dir = tempDir('companion-p-b-');
const runtimes: { mode: 'tcp' | 'unix'; handle: RuntimeHandle; client: RuntimeClient }[] = [];

before(async () => {
  const model = writeTinyModel(dir.path);
  for (const mode of ['tcp', 'unix'] as const) {
    const handle = await spawnRuntime(bundledProfile({ modelPath: model, threads: 1, modelId: 'tiny' }), {
      dataDir: join(dir.path, `data-${mode}`),
      bind: mode,
      readyTimeoutMs: 60_000,
    });
    runtimes.push({ mode, handle, client: runtimeClient(handle.address) });
  }
});

after(async () => {
  for (const { handle, client } of runtimes) {
    await client.close();
    await handle.stop(2000);
  }
  dir.cleanup();
});

/** Header names of a response that belong to CORS (any `access-control-*`). */
function corsHeaders(headers: Record<string, string | string[] | undefined>): string[] {
  return Object.keys(headers).filter((name) => name.toLowerCase().startsWith('access-control-'));
}

function baseHeaders(r: (typeof runtimes)[number], withKey: boolean): Record<string, string> {
  if (r.handle.address.kind !== 'tcp') return { host: 'localhost' };
  return {
    host: `127.0.0.1:${r.handle.address.port}`,
    ...(withKey ? { authorization: `Bearer ${r.handle.address.key.reveal()}` } : {}),
  };
}

const chat = (stream: boolean): string =>
  JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0, stream });

test(
  'P-b the bundled runtime sends no CORS header to a cross-origin request, a preflight, a stream or a refusal (TCP and Unix socket)',
  { timeout: 120_000 },
  async () => {
    assert.equal(runtimes.length, 2);
    for (const r of runtimes) {
      const cases: {
        name: string;
        method: string;
        path: string;
        headers: Record<string, string>;
        body?: string;
        status: (s: number) => boolean;
      }[] = [
        {
          name: 'GET /health with Origin',
          method: 'GET',
          path: '/health',
          headers: { ...baseHeaders(r, true), origin: EVIL },
          status: (s) => s === 200,
        },
        {
          name: 'GET /v1/models with Origin',
          method: 'GET',
          path: '/v1/models',
          headers: { ...baseHeaders(r, true), origin: EVIL, 'sec-fetch-site': 'cross-site' },
          status: (s) => s === 200,
        },
        {
          name: 'chat with Origin',
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { ...baseHeaders(r, true), origin: EVIL, 'content-type': 'application/json' },
          body: chat(false),
          status: (s) => s === 200,
        },
        {
          name: 'streamed chat with Origin',
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { ...baseHeaders(r, true), origin: EVIL, 'content-type': 'application/json' },
          body: chat(true),
          status: (s) => s === 200,
        },
        {
          name: 'a form post (text/plain) with Origin',
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { ...baseHeaders(r, true), origin: EVIL, 'content-type': 'text/plain' },
          body: chat(false),
          status: (s) => s >= 400,
        },
        {
          name: 'preflight',
          method: 'OPTIONS',
          path: '/v1/chat/completions',
          headers: {
            ...baseHeaders(r, true),
            origin: EVIL,
            'access-control-request-method': 'POST',
            'access-control-request-headers': 'authorization, content-type',
          },
          status: (s) => s >= 400,
        },
        {
          name: 'preflight without the key',
          method: 'OPTIONS',
          path: '/v1/models',
          headers: { ...baseHeaders(r, false), origin: EVIL, 'access-control-request-method': 'GET' },
          status: (s) => s >= 400,
        },
        {
          name: 'unknown path with Origin',
          method: 'GET',
          path: '/nope',
          headers: { ...baseHeaders(r, true), origin: EVIL },
          status: (s) => s === 404,
        },
      ];
      if (r.mode === 'tcp') {
        cases.push({
          name: 'no key, with Origin',
          method: 'GET',
          path: '/v1/models',
          headers: { ...baseHeaders(r, false), origin: EVIL },
          status: (s) => s === 401,
        });
      }
      for (const c of cases) {
        const response = await r.client.raw(c.method, c.path, {
          headers: c.headers,
          ...(c.body === undefined ? {} : { body: c.body }),
        });
        const where = `${r.mode}: ${c.name} (${response.status})`;
        assert.ok(c.status(response.status), where);
        assert.deepEqual(corsHeaders(response.headers), [], where);
        if (c.name.startsWith('streamed'))
          assert.match(String(response.headers['content-type']), /^text\/event-stream/, where);
      }
    }
  },
);
