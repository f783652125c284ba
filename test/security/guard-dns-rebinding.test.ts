// P-a, DNS rebinding: a page on a rebound name reaches the loopback port, but its Host names another
// origin. Real Node HTTP parsing on a loopback socket; the guard is the only gate; the upstream counter
// proves the request never got past it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TOKEN } from '../helpers/cores-guard.js';
import { codeIn, rawRequest, startGuardedServer } from '../helpers/cores-guard-server.js';

const auth = `Authorization: Bearer ${TOKEN}`;

test('P-a rejects Host: evil.example', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const response = await rawRequest(server.port, ['GET /v1/models HTTP/1.1', 'Host: evil.example', auth]);
  assert.deepEqual([response.status, codeIn(response), server.hits.count], [403, 'ERR_GUARD_HOST_NOT_ALLOWED', 0]);
});

test('P-a rejects rebound and look-alike names on the bound port', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const P = server.port;
  for (const host of [
    `evil.example:${P}`,
    `127.0.0.1.nip.io:${P}`,
    `localhost.:${P}`,
    `127.0.0.1.:${P}`,
    `2130706433:${P}`,
    `127.1:${P}`,
    `0x7f.0.0.1:${P}`,
    `0177.0.0.1:${P}`,
    `user@127.0.0.1:${P}`,
    '127.0.0.1',
    `127.0.0.1:${P + 1 > 65535 ? 1 : P + 1}`,
    `127.0.0.2:${P}`,
  ]) {
    const response = await rawRequest(P, ['GET /v1/models HTTP/1.1', `Host: ${host}`, auth]);
    assert.deepEqual([response.status, codeIn(response)], [403, 'ERR_GUARD_HOST_NOT_ALLOWED'], host);
  }
  assert.equal(server.hits.count, 0);
});

test('P-a rejects a second Host header even when the first one is allowed', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  for (const pair of [
    [`127.0.0.1:${server.port}`, 'evil.example'],
    ['evil.example', `127.0.0.1:${server.port}`],
  ]) {
    const response = await rawRequest(server.port, [
      'GET /v1/models HTTP/1.1',
      `Host: ${pair[0]}`,
      `Host: ${pair[1]}`,
      auth,
    ]);
    assert.deepEqual([response.status, codeIn(response)], [400, 'ERR_GUARD_HOST_DUPLICATE']);
  }
  assert.equal(server.hits.count, 0);
});

test('P-a rejects absolute-form and //host targets that would make the URL name another host', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  for (const target of [
    'http://evil.example/v1/models',
    `http://127.0.0.1:${server.port}/v1/models`,
    '//evil.example/v1/models',
  ]) {
    const response = await rawRequest(server.port, [`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${server.port}`, auth]);
    assert.deepEqual([response.status, codeIn(response)], [400, 'ERR_GUARD_TARGET_FORM'], target);
  }
  assert.equal(server.hits.count, 0);
});

test('P-a rejects an HTTP/1.0 request without Host', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  const response = await rawRequest(server.port, ['GET /v1/models HTTP/1.0', auth]);
  assert.deepEqual([response.status, codeIn(response), server.hits.count], [400, 'ERR_GUARD_HOST_MISSING', 0]);
});

test('P-a accepts the three loopback names of the bound port (control)', async (t) => {
  const server = await startGuardedServer();
  t.after(() => server.close());
  for (const host of [
    `127.0.0.1:${server.port}`,
    `localhost:${server.port}`,
    `[::1]:${server.port}`,
    `LocalHost:${server.port}`,
  ]) {
    const response = await rawRequest(server.port, ['GET /v1/models HTTP/1.1', `Host: ${host}`, auth]);
    assert.equal(response.status, 200, host);
  }
  assert.equal(server.hits.count, 4);
});
