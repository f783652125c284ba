// P-c, another local process or user calls the front door: without the exact loopback token in one
// Authorization header nothing gets through, a refusal never shows the token, and a non-loopback peer is
// refused before anything else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { verifyLoopbackRequest } from '../../src/core/guard.js';
import { TOKEN, goodRequest, makePolicy } from '../helpers/cores-guard.js';
import { codeIn, rawRequest, startGuardedServer } from '../helpers/cores-guard-server.js';

test('P-c rejects a request without a token', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const response = await rawRequest(server.port, ['GET /v1/models HTTP/1.1', `Host: 127.0.0.1:${server.port}`]);
  assert.deepEqual([response.status, codeIn(response), server.hits.count], [401, 'ERR_GUARD_TOKEN_MISSING', 0]);
});

test('P-c rejects wrong tokens: same length, one character off, a prefix, in the query, as Basic', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const host = `Host: 127.0.0.1:${server.port}`;
  const flipped = `${TOKEN.slice(0, -1)}${TOKEN.endsWith('a') ? 'b' : 'a'}`;
  const cases: [string[], string][] = [
    [['GET /v1/models HTTP/1.1', host, `Authorization: Bearer ${flipped}`], 'ERR_GUARD_TOKEN_INVALID'],
    [['GET /v1/models HTTP/1.1', host, `Authorization: Bearer ${TOKEN.slice(0, 8)}`], 'ERR_GUARD_TOKEN_INVALID'],
    [['GET /v1/models HTTP/1.1', host, `Authorization: Bearer ${TOKEN}${TOKEN}`], 'ERR_GUARD_TOKEN_INVALID'],
    [[`GET /v1/models?access_token=${TOKEN} HTTP/1.1`, host], 'ERR_GUARD_TOKEN_MISSING'],
    [
      ['GET /v1/models HTTP/1.1', host, `Authorization: Basic ${Buffer.from(`user:${TOKEN}`).toString('base64')}`],
      'ERR_GUARD_TOKEN_MISSING',
    ],
    [
      ['GET /v1/models HTTP/1.1', host, `Authorization: Bearer ${TOKEN}`, `Authorization: Bearer ${TOKEN}`],
      'ERR_GUARD_TOKEN_INVALID',
    ],
  ];
  for (const [lines, code] of cases) {
    const response = await rawRequest(server.port, lines);
    assert.deepEqual([response.status, codeIn(response)], [401, code], lines[0]);
  }
  assert.equal(server.hits.count, 0);
});

test('P-c never shows the token in a refusal', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const auth = `Authorization: Bearer ${TOKEN}`;
  for (const lines of [
    ['GET /v1/models HTTP/1.1', 'Host: evil.example', auth],
    ['GET /nope HTTP/1.1', `Host: 127.0.0.1:${server.port}`, auth],
    ['DELETE /v1/models HTTP/1.1', `Host: 127.0.0.1:${server.port}`, auth],
    ['GET /v1/models HTTP/1.1', `Host: 127.0.0.1:${server.port}`, `Authorization: Bearer ${TOKEN}x`],
  ]) {
    const response = await rawRequest(server.port, lines);
    assert.ok(response.status >= 400, lines[0]);
    assert.ok(!`${response.head}${response.body}`.includes(TOKEN.slice(4, 20)));
  }
  assert.equal(server.hits.count, 0);
});

test('P-c refuses a non-loopback peer before looking at anything else', () => {
  for (const peerAddress of ['192.168.1.20', '10.0.0.5', '::ffff:192.168.1.20', 'fe80::1', '169.254.1.1']) {
    const policy = makePolicy();
    assert.deepEqual(verifyLoopbackRequest(goodRequest({ peerAddress }), policy), {
      ok: false,
      status: 403,
      code: 'ERR_GUARD_PEER_NOT_LOOPBACK',
    });
    assert.equal(policy.calls.count, 0, 'the token was not even checked');
  }
});

test('P-c accepts the exact token (control)', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const response = await rawRequest(
    server.port,
    [
      'POST /v1/chat/completions HTTP/1.1',
      `Host: 127.0.0.1:${server.port}`,
      `Authorization: Bearer ${TOKEN}`,
      'Content-Type: application/json',
      'Content-Length: 2',
    ],
    '{}',
  );
  assert.deepEqual([response.status, server.hits.count], [200, 1]);
});
