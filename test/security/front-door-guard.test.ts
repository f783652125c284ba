// P-a, P-b, P-c at the real front door: raw bytes over a loopback socket; the instrumented runtime
// behind it proves that nothing refused ever reached it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { codeIn, rawRequest } from '../helpers/cores-guard-server.js';
import { startFrontDoorFixture } from '../helpers/front-door.js';

const body = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] });

test('P-a the front door refuses rebound Host names and the runtime sees nothing', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  const P = f.door.port;
  const auth = `Authorization: Bearer ${f.token}`;
  const hosts = [
    'evil.example',
    `evil.example:${P}`,
    `127.0.0.1.nip.io:${P}`,
    `2130706433:${P}`,
    `0x7f.1:${P}`,
    `127.1:${P}`,
    `localhost.:${P}`,
    `LOCALHOST.:${P}`,
    `127.0.0.1:${P + 1}`,
  ];
  for (const host of hosts) {
    const response = await rawRequest(P, ['GET /v1/models HTTP/1.1', `Host: ${host}`, auth]);
    assert.equal(response.status, 403, host);
    assert.equal(codeIn(response), 'ERR_GUARD_HOST_NOT_ALLOWED', host);
  }
  const duplicate = await rawRequest(P, [
    'GET /v1/models HTTP/1.1',
    `Host: 127.0.0.1:${P}`,
    'Host: evil.example',
    auth,
  ]);
  assert.equal(codeIn(duplicate), 'ERR_GUARD_HOST_DUPLICATE');
  const http10 = await rawRequest(P, ['GET /v1/models HTTP/1.0', auth]);
  assert.equal(codeIn(http10), 'ERR_GUARD_HOST_MISSING');
  const absolute = await rawRequest(P, ['GET http://evil.example/v1/models HTTP/1.1', `Host: 127.0.0.1:${P}`, auth]);
  assert.equal(codeIn(absolute), 'ERR_GUARD_TARGET_FORM');
  const post = await rawRequest(
    P,
    [
      'POST /v1/chat/completions HTTP/1.1',
      'Host: evil.example',
      auth,
      'Content-Type: application/json',
      `Content-Length: ${body.length}`,
    ],
    body,
  );
  assert.equal(post.status, 403);
  assert.equal(f.upstream.seen.length, 0);
  // The same request with the right Host goes through: the refusals above were about the Host alone.
  const good = await rawRequest(P, ['GET /v1/models HTTP/1.1', `Host: localhost:${P}`, auth, 'Connection: close']);
  assert.equal(good.status, 200);
  assert.equal(f.upstream.seen.length, 1);
});

test('P-b the front door refuses cross-origin browser requests, preflights and form posts without CORS headers', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  const P = f.door.port;
  const host = `Host: 127.0.0.1:${P}`;
  const auth = `Authorization: Bearer ${f.token}`;
  const cases: Array<[string[], string, number]> = [
    [
      [
        'POST /v1/chat/completions HTTP/1.1',
        host,
        'Origin: https://evil.example',
        'Content-Type: text/plain',
        `Content-Length: ${body.length}`,
      ],
      'ERR_GUARD_ORIGIN',
      403,
    ],
    [
      [
        'POST /v1/chat/completions HTTP/1.1',
        host,
        'Origin: null',
        'Content-Type: application/x-www-form-urlencoded',
        `Content-Length: ${body.length}`,
      ],
      'ERR_GUARD_ORIGIN',
      403,
    ],
    [
      [
        'OPTIONS /v1/chat/completions HTTP/1.1',
        host,
        'Origin: https://evil.example',
        'Access-Control-Request-Method: POST',
        'Access-Control-Request-Headers: authorization',
        'Content-Length: 0',
      ],
      'ERR_GUARD_ORIGIN',
      403,
    ],
    [['OPTIONS /v1/chat/completions HTTP/1.1', host, auth, 'Content-Length: 0'], 'ERR_GUARD_METHOD', 405],
    [
      [
        'POST /v1/chat/completions HTTP/1.1',
        host,
        auth,
        'Sec-Fetch-Site: cross-site',
        'Content-Type: application/json',
        `Content-Length: ${body.length}`,
      ],
      'ERR_GUARD_FETCH_SITE',
      403,
    ],
    [
      [
        'POST /v1/chat/completions HTTP/1.1',
        host,
        auth,
        'Referer: https://evil.example/page',
        'Content-Type: application/json',
        `Content-Length: ${body.length}`,
      ],
      'ERR_GUARD_REFERER',
      403,
    ],
  ];
  for (const [lines, code, status] of cases) {
    const response = await rawRequest(P, lines, lines[0]!.startsWith('POST') ? body : '');
    assert.deepEqual([response.status, codeIn(response)], [status, code], lines[0]);
    assert.ok(!response.headerNames.some((n) => n.startsWith('access-control-')), 'no CORS header');
  }
  assert.equal(f.upstream.seen.length, 0);
});

test("P-c the front door refuses a missing, wrong or another run's token with 401", async (t) => {
  const f = await startFrontDoorFixture();
  const other = await startFrontDoorFixture();
  t.after(async () => {
    await f.close();
    await other.close();
  });
  const P = f.door.port;
  const host = `Host: 127.0.0.1:${P}`;
  for (const auth of [
    [],
    ['Authorization: Bearer '],
    [`Authorization: Bearer ${randomBytes(32).toString('base64url')}`],
    [`Authorization: Bearer ${other.token}`],
    [`Authorization: Basic ${Buffer.from(`x:${f.token}`).toString('base64')}`],
    [`Authorization: Bearer ${f.token}x`],
    [`Authorization: bearer  ${f.token.slice(1)}`],
  ]) {
    const response = await rawRequest(P, ['GET /v1/models HTTP/1.1', host, ...auth]);
    assert.equal(response.status, 401, auth.join());
    assert.ok(
      !response.body.includes(f.token) && !response.head.includes(f.token),
      'the refusal does not echo the token',
    );
    assert.match(response.head, /www-authenticate: Bearer/i);
  }
  assert.equal(f.upstream.seen.length, 0);
  assert.equal(other.upstream.seen.length, 0);
});
