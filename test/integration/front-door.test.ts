// The front door over real loopback sockets, in front of an instrumented upstream on a Unix socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { startFrontDoor } from '../../src/runtime/front-door.js';
import { createAdmission } from '../../src/core/admission.js';
import { codeIn, rawRequest } from '../helpers/cores-guard-server.js';
import { startFrontDoorFixture } from '../helpers/front-door.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(
  url: string,
  options: { method?: string; path: string; token?: string; body?: string; headers?: Record<string, string> },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const target = new URL(options.path, url);
    const req = request(
      target,
      {
        method: options.method ?? 'GET',
        headers: {
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...options.headers,
        },
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(options.body);
  });
}

const CHAT = JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }] });

function assertNoCors(reply: Reply): void {
  for (const name of Object.keys(reply.headers))
    assert.ok(!name.startsWith('access-control-'), `no CORS header (${name})`);
}

test('startFrontDoor() proxies /v1/models and chat completions with security headers and no CORS', async (t) => {
  const f = await startFrontDoorFixture({ behaviour: { extraHeaders: { 'access-control-allow-origin': '*' } } });
  t.after(() => f.close());
  assert.match(f.door.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const models = await call(f.door.url, { path: '/v1/models', token: f.token });
  assert.equal(models.status, 200);
  assert.equal((JSON.parse(models.body) as { data: { id: string }[] }).data[0]?.id, 'tiny');
  assert.equal(models.headers['x-content-type-options'], 'nosniff');
  assert.equal(models.headers['cache-control'], 'no-store');
  assert.match(String(models.headers['content-security-policy']), /default-src 'none'/);
  assertNoCors(models);
  const chat = await call(f.door.url, { method: 'POST', path: '/v1/chat/completions', token: f.token, body: CHAT });
  assert.equal(chat.status, 200);
  assert.equal(
    (JSON.parse(chat.body) as { choices: { message: { content: string } }[] }).choices[0]?.message.content,
    'hello',
  );
  assertNoCors(chat);
  assert.equal(f.upstream.seen.length, 2);
  assert.equal(f.upstream.seen[1]?.body, CHAT);
});

test('startFrontDoor() never forwards the loopback token or client headers to the runtime', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  await call(f.door.url, {
    method: 'POST',
    path: '/v1/chat/completions',
    token: f.token,
    body: CHAT,
    headers: { cookie: 'a=b', 'x-forwarded-for': '1.2.3.4', origin: '' },
  });
  await call(f.door.url, {
    method: 'POST',
    path: '/v1/chat/completions',
    token: f.token,
    body: CHAT,
    headers: { cookie: 'a=b' },
  });
  assert.equal(f.upstream.seen.length, 1);
  const headers = f.upstream.seen[0]!.headers;
  assert.equal(headers.authorization, undefined);
  assert.equal(headers.cookie, undefined);
  assert.ok(!JSON.stringify(headers).includes(f.token));
});

test('startFrontDoor() streams SSE through and ends with [DONE]', async (t) => {
  const f = await startFrontDoorFixture({ behaviour: { events: 20, eventDelayMs: 2 } });
  t.after(() => f.close());
  const reply = await call(f.door.url, {
    method: 'POST',
    path: '/v1/chat/completions',
    token: f.token,
    body: JSON.stringify({ messages: [], stream: true }),
  });
  assert.equal(reply.status, 200);
  assert.equal(reply.headers['content-type'], 'text/event-stream');
  const events = reply.body.split('\n\n').filter((e) => e.startsWith('data: '));
  assert.equal(events.length, 22);
  assert.equal(events.at(-1), 'data: [DONE]');
});

test('startFrontDoor() carries a large stream to a slow reader intact: backpressure reaches the runtime instead of buffering', async (t) => {
  // 4,000 events of ~4 KiB (16 MiB): more than the socket buffers hold while the client does not read.
  const f = await startFrontDoorFixture({ behaviour: { events: 4000, padBytes: 4096 } });
  t.after(() => f.close());
  let writtenWhilePaused = -1;
  const events = await new Promise<string[]>((resolve, reject) => {
    const req = request(
      new URL('/v1/chat/completions', f.door.url),
      { method: 'POST', headers: { authorization: `Bearer ${f.token}`, 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.pause();
        setTimeout(() => {
          writtenWhilePaused = f.upstream.written.count;
          res.resume();
        }, 500);
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(text.split('\n\n').filter((e) => e.startsWith('data: '))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ messages: [], stream: true }));
  });
  assert.equal(events.length, 4002);
  assert.ok(
    events.slice(0, 4000).every((e, i) => e.includes(`"t${i} "`)),
    'every event, in order',
  );
  assert.equal(events.at(-1), 'data: [DONE]');
  // Without backpressure the front door would have read (and buffered) the whole stream meanwhile.
  t.diagnostic(`events written while the reader paused: ${writtenWhilePaused} of 4000`);
  assert.ok(
    writtenWhilePaused > 0 && writtenWhilePaused < 4000,
    `the runtime was held back while the reader paused (${writtenWhilePaused} of 4000 written)`,
  );
  assert.ok(f.upstream.backpressured.count > 0, 'the runtime had to wait for the slow reader');
});

test('startFrontDoor() aborts the upstream request when the client goes away mid-stream', async (t) => {
  const f = await startFrontDoorFixture({ behaviour: { events: 1000, eventDelayMs: 5 } });
  t.after(() => f.close());
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no first event')), 5_000);
    const req = request(
      new URL('/v1/chat/completions', f.door.url),
      { method: 'POST', headers: { authorization: `Bearer ${f.token}`, 'content-type': 'application/json' } },
      (res) => {
        res.once('data', () => {
          clearTimeout(timer);
          req.destroy();
          resolve();
        });
      },
    );
    req.on('error', () => undefined);
    req.end(JSON.stringify({ messages: [], stream: true }));
  });
  for (let i = 0; i < 100 && f.upstream.aborted.count === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(f.upstream.aborted.count, 1);
});

test('startFrontDoor() answers 503 with Retry-After when the runtime is not ready, and the upstream sees nothing', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  f.ready.value = false;
  const chat = await call(f.door.url, { method: 'POST', path: '/v1/chat/completions', token: f.token, body: CHAT });
  assert.equal(chat.status, 503);
  assert.ok(Number(chat.headers['retry-after']) >= 1);
  assert.equal((JSON.parse(chat.body) as { error: { code: string } }).error.code, 'ERR_ADMISSION_NOT_READY');
  const health = await call(f.door.url, { path: '/health', token: f.token });
  assert.deepEqual([health.status, JSON.parse(health.body)], [503, { status: 'not-ready' }]);
  assert.equal(f.upstream.seen.length, 0);
  f.ready.value = true;
  const again = await call(f.door.url, { path: '/health', token: f.token });
  assert.deepEqual([again.status, JSON.parse(again.body)], [200, { status: 'ready' }]);
});

test('startFrontDoor() refuses a body over the limit with 413 before the upstream is touched', async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: { maxBodyBytes: 1024 } } });
  t.after(() => f.close());
  const reply = await call(f.door.url, {
    method: 'POST',
    path: '/v1/chat/completions',
    token: f.token,
    body: JSON.stringify({ pad: 'x'.repeat(2000) }),
  });
  assert.equal(reply.status, 413);
  assert.equal(f.upstream.seen.length, 0);
});

test('startFrontDoor() answers a body found too large while reading (chunked) with a readable 413, not a reset', async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: { maxBodyBytes: 1024 } } });
  t.after(() => f.close());
  const reply = await new Promise<Reply>((resolve, reject) => {
    const req = request(
      new URL('/v1/chat/completions', f.door.url),
      {
        method: 'POST',
        headers: { authorization: `Bearer ${f.token}`, 'content-type': 'application/json' },
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    // No Content-Length: chunked, 2 MiB in 64 KiB pieces.
    const piece = Buffer.alloc(64 * 1024, 0x20);
    for (let i = 0; i < 32; i++) req.write(piece);
    req.end();
  });
  assert.equal(reply.status, 413);
  assert.equal((JSON.parse(reply.body) as { error: { code: string } }).error.code, 'ERR_BODY_TOO_LARGE');
  assert.equal(f.upstream.seen.length, 0);
});

test('startFrontDoor() answers a request head over maxHeaderBytes with a JSON 431 and nothing reaches the upstream', async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: { maxHeaderBytes: 2048 } } });
  t.after(() => f.close());
  const response = await rawRequest(f.door.port, [
    'GET /v1/models HTTP/1.1',
    `Host: 127.0.0.1:${f.door.port}`,
    `Authorization: Bearer ${f.token}`,
    `X-Pad: ${'a'.repeat(4096)}`,
  ]);
  assert.equal(response.status, 431);
  assert.equal(codeIn(response), 'ERR_GUARD_MALFORMED');
  assert.ok(response.headerNames.includes('x-content-type-options'));
  assert.equal(f.upstream.seen.length, 0);
});

test('startFrontDoor() answers an oversized HEAD request head with a 431 that has no body (RFC 9110 §9.3.2)', async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: { maxHeaderBytes: 2048 } } });
  t.after(() => f.close());
  for (const pieces of [1]) {
    const head = `HEAD /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${f.door.port}\r\nAuthorization: Bearer ${f.token}\r\nX-Pad: ${'a'.repeat(4096)}\r\n\r\n`;
    const received = await new Promise<string>((resolve, reject) => {
      const socket = connect(f.door.port, '127.0.0.1', () => {
        if (pieces === 1) socket.write(head);
        else {
          socket.write(head.slice(0, 100));
          setTimeout(() => socket.write(head.slice(100)), 50);
        }
      });
      let text = '';
      socket.setEncoding('latin1').on('data', (chunk: string) => (text += chunk));
      socket.once('close', () => resolve(text));
      socket.once('error', reject);
      socket.setTimeout(10_000, () => socket.destroy(new Error('no answer')));
    });
    assert.match(received, /^HTTP\/1\.1 431 /, `${pieces} piece(s)`);
    assert.match(received, /\r\nContent-Length: 0\r\n/i, `${pieces} piece(s)`);
    assert.ok(
      received.endsWith('\r\n\r\n'),
      `nothing after the head (${pieces} piece(s)): ${JSON.stringify(received.slice(-80))}`,
    );
  }
  assert.equal(f.upstream.seen.length, 0);
});

test('startFrontDoor() sends 100 Continue only after the guard accepted the request', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  const P = f.door.port;
  const head = [
    'POST /v1/chat/completions HTTP/1.1',
    `Host: 127.0.0.1:${P}`,
    'Content-Type: application/json',
    `Content-Length: ${CHAT.length}`,
    'Expect: 100-continue',
  ];
  const refused = await rawRequest(P, head);
  assert.match(refused.head, /^HTTP\/1\.1 401 /, 'no 100 Continue before the refusal');
  const accepted = await rawRequest(P, [...head, `Authorization: Bearer ${f.token}`, 'Connection: close'], CHAT);
  assert.equal(accepted.head, 'HTTP/1.1 100 Continue');
  assert.match(accepted.body, /^HTTP\/1\.1 200 /);
  assert.equal(f.upstream.seen.length, 1);
});

test('startFrontDoor() answers 429 with Retry-After beyond the concurrency limit and queue', async (t) => {
  const f = await startFrontDoorFixture({ behaviour: { events: 50, eventDelayMs: 10 }, maxConcurrent: 1, maxQueue: 0 });
  t.after(() => f.close());
  const slow = call(f.door.url, {
    method: 'POST',
    path: '/v1/chat/completions',
    token: f.token,
    body: JSON.stringify({ stream: true }),
  });
  for (let i = 0; i < 100 && f.upstream.seen.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  const refused = await call(f.door.url, { method: 'POST', path: '/v1/chat/completions', token: f.token, body: CHAT });
  assert.equal(refused.status, 429);
  assert.ok(Number(refused.headers['retry-after']) >= 1);
  assert.equal((await slow).status, 200);
  assert.equal(f.upstream.seen.length, 1);
});

test('startFrontDoor() maps a dead upstream to 502', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.door.close());
  await f.upstream.close();
  const reply = await call(f.door.url, { method: 'POST', path: '/v1/chat/completions', token: f.token, body: CHAT });
  assert.equal(reply.status, 502);
  assert.equal((JSON.parse(reply.body) as { error: { code: string } }).error.code, 'ERR_UPSTREAM_UNAVAILABLE');
});

test('startFrontDoor() refuses unknown paths with 404 only after the token check', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  assert.equal((await call(f.door.url, { path: '/v1/secret', token: f.token })).status, 404);
  assert.equal((await call(f.door.url, { path: '/v1/secret' })).status, 401);
  assert.equal(f.upstream.seen.length, 0);
});

test('startFrontDoor() refuses to bind anything but a loopback address', async () => {
  const admission = createAdmission({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 100 });
  for (const host of [
    '0.0.0.0',
    '::',
    '192.168.1.10',
    '10.0.0.1',
    'localhost',
    'example.com',
    '::ffff:127.0.0.1',
    '',
  ]) {
    await assert.rejects(
      startFrontDoor({ host, verifyToken: () => false, upstream: () => null, admission }),
      { code: 'ERR_BIND_NOT_LOOPBACK' },
      host,
    );
  }
});

test('startFrontDoor() binds ::1 when asked and allows [::1]:P', async (t) => {
  const admission = createAdmission({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 100, ready: true });
  let door;
  try {
    door = await startFrontDoor({ host: '::1', verifyToken: () => false, upstream: () => null, admission });
  } catch (error) {
    // A machine without IPv6 loopback: the bind fails closed with a coded error, never another address.
    assert.equal((error as { code?: string }).code, 'ERR_BIND_FAILED');
    t.diagnostic('no ::1 on this machine');
    return;
  }
  t.after(() => door.close());
  assert.match(door.url, /^http:\/\/\[::1\]:\d+$/);
});
