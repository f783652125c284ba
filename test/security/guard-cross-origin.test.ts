// P-b, cross-origin browser requests: what a web page can make a browser send to the loopback port
// (simple requests, form posts, preflights) is refused by the guard, and no CORS header is ever sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TOKEN } from '../helpers/cores-guard.js';
import { codeIn, rawRequest, startGuardedServer, type RawResponse } from '../helpers/cores-guard-server.js';

const auth = `Authorization: Bearer ${TOKEN}`;
const body = '{"model":"m","messages":[]}';

function noCors(response: RawResponse): void {
  assert.deepEqual(
    response.headerNames.filter((name) => name.startsWith('access-control-')),
    [],
  );
}

test('P-b rejects a simple cross-origin POST (Origin: http://evil.example), even one carrying the token', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const host = `Host: 127.0.0.1:${server.port}`;
  for (const extra of [[auth], []]) {
    const response = await rawRequest(
      server.port,
      [
        'POST /v1/chat/completions HTTP/1.1',
        host,
        'Origin: http://evil.example',
        'Content-Type: text/plain',
        `Content-Length: ${body.length}`,
        ...extra,
      ],
      body,
    );
    assert.deepEqual([response.status, codeIn(response)], [403, 'ERR_GUARD_ORIGIN']);
    noCors(response);
  }
  assert.equal(server.hits.count, 0);
});

test('P-b rejects a form post from a sandboxed or file page (Origin: null)', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const response = await rawRequest(
    server.port,
    [
      'POST /v1/chat/completions HTTP/1.1',
      `Host: localhost:${server.port}`,
      'Origin: null',
      'Content-Type: application/x-www-form-urlencoded',
      'Content-Length: 3',
      auth,
    ],
    'a=b',
  );
  assert.deepEqual([response.status, codeIn(response), server.hits.count], [403, 'ERR_GUARD_ORIGIN', 0]);
});

test('P-b refuses a CORS preflight and any OPTIONS without CORS headers', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const host = `Host: 127.0.0.1:${server.port}`;
  const preflight = await rawRequest(server.port, [
    'OPTIONS /v1/chat/completions HTTP/1.1',
    host,
    'Origin: http://evil.example',
    'Access-Control-Request-Method: POST',
    'Access-Control-Request-Headers: authorization, content-type',
  ]);
  assert.deepEqual([preflight.status, codeIn(preflight)], [403, 'ERR_GUARD_ORIGIN']);
  noCors(preflight);
  const bare = await rawRequest(server.port, ['OPTIONS /v1/chat/completions HTTP/1.1', host, auth]);
  assert.deepEqual([bare.status, codeIn(bare)], [405, 'ERR_GUARD_METHOD']);
  noCors(bare);
  const star = await rawRequest(server.port, ['OPTIONS * HTTP/1.1', host]);
  assert.deepEqual([star.status, codeIn(star)], [400, 'ERR_GUARD_TARGET_FORM']);
  assert.equal(server.hits.count, 0);
});

test('P-b rejects Sec-Fetch-Site: cross-site and same-site when no Origin is sent', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  for (const site of ['cross-site', 'same-site']) {
    const response = await rawRequest(server.port, [
      'GET /v1/models HTTP/1.1',
      `Host: 127.0.0.1:${server.port}`,
      `Sec-Fetch-Site: ${site}`,
      auth,
    ]);
    assert.deepEqual([response.status, codeIn(response)], [403, 'ERR_GUARD_FETCH_SITE'], site);
  }
  assert.equal(server.hits.count, 0);
});

test('P-b rejects a Referer from another origin, including one that starts like ours', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  for (const referer of [
    'http://evil.example/page',
    `http://127.0.0.1:${server.port}@evil.example/`,
    `http://127.0.0.1:${server.port}.evil.example/`,
  ]) {
    const response = await rawRequest(server.port, [
      'GET /v1/models HTTP/1.1',
      `Host: 127.0.0.1:${server.port}`,
      `Referer: ${referer}`,
      auth,
    ]);
    assert.deepEqual([response.status, codeIn(response)], [403, 'ERR_GUARD_REFERER'], referer);
  }
  assert.equal(server.hits.count, 0);
});

test('P-b lets through only an explicitly configured origin, and still needs the token', async (t) => {
  const server = await startGuardedServer({ allowedOrigins: ['http://localhost:5173'] });
  t.after(() => server.close());
  const host = `Host: 127.0.0.1:${server.port}`;
  const ok = await rawRequest(server.port, ['GET /v1/models HTTP/1.1', host, 'Origin: http://localhost:5173', auth]);
  const noToken = await rawRequest(server.port, ['GET /v1/models HTTP/1.1', host, 'Origin: http://localhost:5173']);
  const other = await rawRequest(server.port, ['GET /v1/models HTTP/1.1', host, 'Origin: http://localhost:5174', auth]);
  assert.deepEqual([ok.status, codeIn(noToken), codeIn(other)], [200, 'ERR_GUARD_TOKEN_MISSING', 'ERR_GUARD_ORIGIN']);
  noCors(ok);
  assert.equal(server.hits.count, 1);
});
