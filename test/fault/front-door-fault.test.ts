// Front door faults. With the REAL runtime: kill -9 of its process group mid-stream (the client's stream
// fails, never hangs; the next request gets 502 while the shell still believes in the runtime, 503 once it
// knows), and a client that disconnects mid-stream (the runtime stops generating: its CPU falls to idle and
// the next request is served by the one sequence). With an instrumented upstream: no response headers,
// silence mid-body. With raw sockets: a slowloris head and a slow body are cut off at the configured bounds,
// and a long response is NOT cut by the request timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { APIError } from 'openai';
import { createResourceProbe } from '../../src/runtime/probe.js';
import { startFrontDoorFixture } from '../helpers/front-door.js';
import { startRuntimeDoor } from '../helpers/front-door-runtime.js';
import { sleep, waitFor } from '../helpers/runtime-env.js';

const ask = [{ role: 'user' as const, content: 'Hello there' }];
const linux = process.platform === 'linux' ? {} : { skip: 'the runtime-side CPU check reads /proc' };

function apiStatus(error: unknown): { status: number | undefined; code: unknown } {
  return error instanceof APIError
    ? { status: error.status, code: error.code }
    : { status: undefined, code: undefined };
}

test(
  "kill -9 of the runtime group mid-stream: the client's stream fails (no hang), then 502 while the runtime is believed up and 503 once it is known gone",
  { timeout: 60_000 },
  async (t) => {
    const rd = await startRuntimeDoor();
    t.after(() => rd.close());
    const stream = await rd.openai.chat.completions.create({
      model: 'tiny',
      messages: ask,
      max_tokens: 30_000,
      temperature: 0,
      stream: true,
    });
    let chunks = 0;
    await assert.rejects(async () => {
      for await (const _chunk of stream) {
        // The runtime is detached: its pid is its process group.
        if (++chunks === 2) process.kill(-rd.handle.pid, 'SIGKILL');
      }
    });
    assert.ok(chunks >= 2);
    assert.deepEqual(await rd.handle.exited, { code: null, signal: 'SIGKILL' });
    await waitFor(() => !rd.ready.value, 5_000, 'the exit to be noticed');

    // The shell has not noticed yet (the front door still has the old address): 502, coded.
    rd.ready.value = true;
    const stale = await rd.openai.chat.completions
      .create({ model: 'tiny', messages: ask, max_tokens: 1 })
      .then(() => null, apiStatus);
    assert.deepEqual(stale, { status: 502, code: 'ERR_UPSTREAM_UNAVAILABLE' });
    // The shell knows: 503 with Retry-After, and /health says not ready.
    rd.ready.value = false;
    const gone = await rd.openai.chat.completions
      .create({ model: 'tiny', messages: ask, max_tokens: 1 })
      .then(() => null, apiStatus);
    assert.deepEqual(gone, { status: 503, code: 'ERR_ADMISSION_NOT_READY' });
    const health = await fetch(`${rd.door.url}/health`, { headers: { authorization: `Bearer ${rd.token}` } });
    assert.equal(health.status, 503);
    assert.ok(Number(health.headers.get('retry-after')) >= 1);
  },
);

test(
  'a client that disconnects mid-stream stops the generation in the runtime: its CPU falls to idle and its one sequence serves the next request',
  { ...linux, timeout: 60_000 },
  async (t) => {
    const rd = await startRuntimeDoor();
    t.after(() => rd.close());
    const probe = createResourceProbe({ pgid: rd.handle.pid, cacheMs: 0 });
    t.after(() => probe.close());
    await probe.probe();

    const controller = new AbortController();
    // 30 000 tokens keep the runtime's only sequence busy for many seconds unless the disconnect cancels it.
    const stream = await rd.openai.chat.completions.create(
      { model: 'tiny', messages: ask, max_tokens: 30_000, temperature: 0, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    await assert.doesNotReject(async () => {
      for await (const _chunk of stream) {
        if (++chunks === 3) {
          await probe.probe();
          await sleep(300);
          const busy = await probe.probe();
          t.diagnostic(`runtime CPU while generating: ${busy.cpuPercent}%`);
          controller.abort();
        }
      }
    });
    assert.ok(chunks >= 3);

    // Runtime side: the group's CPU over a 300 ms window drops to idle (generating keeps one core busy).
    let idle: number | null = null;
    await waitFor(
      async () => {
        await sleep(300);
        idle = (await probe.probe()).cpuPercent;
        return idle !== null && idle < 15;
      },
      10_000,
      'the runtime to stop generating',
    );
    t.diagnostic(`runtime CPU after the disconnect: ${idle}%`);
    // The one sequence is free: a new request is served at once instead of waiting behind 30 000 tokens.
    const next = await rd.openai.chat.completions.create(
      { model: 'tiny', messages: ask, max_tokens: 1, temperature: 0 },
      { timeout: 15_000 },
    );
    assert.equal(next.usage?.completion_tokens, 1);
    const aborted = rd.requests.find((r) => r.path === '/v1/chat/completions');
    assert.equal(aborted?.status, 200, 'the disconnected stream had started');
  },
);

function post(url: string, token: string, body: string): Promise<{ status: number; text: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL('/v1/chat/completions', url),
      {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        // 'close' comes for a complete body and for a cut one; `complete` tells them apart.
        res.on('close', () => resolve({ status: res.statusCode ?? 0, text, complete: res.complete }));
        res.on('error', () => undefined);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(body);
  });
}

test('an upstream that sends no response headers within upstreamHeadersTimeoutMs gets the client a 504, not a hang', async (t) => {
  const f = await startFrontDoorFixture({
    behaviour: { hangBeforeHeaders: true },
    door: { limits: { upstreamHeadersTimeoutMs: 300 } },
  });
  t.after(() => f.close());
  const reply = await post(f.door.url, f.token, JSON.stringify({ messages: [] }));
  assert.equal(reply.status, 504);
  assert.equal((JSON.parse(reply.text) as { error: { code: string } }).error.code, 'ERR_REQUEST_TIMEOUT');
  assert.equal(f.upstream.seen.length, 1);
  assert.equal(f.admission.stats().active, 0, 'the slot is given back');
});

test("an upstream that goes silent mid-stream beyond upstreamBodyTimeoutMs cuts the client's stream (incomplete, not a clean end)", async (t) => {
  const f = await startFrontDoorFixture({
    behaviour: { events: 10, stallAfterEvents: 2 },
    door: { limits: { upstreamBodyTimeoutMs: 300 } },
  });
  t.after(() => f.close());
  const reply = await post(f.door.url, f.token, JSON.stringify({ messages: [], stream: true }));
  assert.equal(reply.status, 200);
  assert.equal(reply.complete, false, 'the response is cut, so the client sees an error');
  assert.equal(reply.text.split('\n\n').filter((e) => e.startsWith('data: ')).length, 2);
  assert.ok(!reply.text.includes('[DONE]'));
  await waitFor(() => f.admission.stats().active === 0, 2_000, 'the slot to be given back');
});

test('a response that lasts longer than requestTimeoutMs is not cut: that bound is for receiving the request only', async (t) => {
  const f = await startFrontDoorFixture({
    behaviour: { events: 30, eventDelayMs: 25 },
    door: { limits: { headersTimeoutMs: 200, requestTimeoutMs: 300 } },
  });
  t.after(() => f.close());
  const reply = await post(f.door.url, f.token, JSON.stringify({ messages: [], stream: true }));
  assert.equal(reply.status, 200);
  assert.equal(reply.complete, true);
  assert.ok(reply.text.endsWith('data: [DONE]\n\n'));
});

/** Writes `head` then trickles `trickle` one byte every `everyMs`; resolves with what came back when the server closes. */
function slowSender(
  port: number,
  head: string,
  trickle: string,
  everyMs: number,
): Promise<{ response: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ host: '127.0.0.1', port });
    let response = '';
    let i = 0;
    let timer: NodeJS.Timeout | undefined;
    const bound = setTimeout(() => {
      socket.destroy();
      reject(new Error('the front door did not cut the slow sender within 5 s'));
    }, 5_000);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (response += chunk));
    socket.on('connect', () => {
      socket.write(head);
      timer = setInterval(() => {
        if (i < trickle.length && socket.writable) socket.write(trickle[i++]!);
      }, everyMs);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearInterval(timer);
      clearTimeout(bound);
      resolve({ response, ms: Date.now() - started });
    });
  });
}

test('a slowloris request head, trickled byte by byte, is cut off with 408 at headersTimeoutMs and nothing reaches the upstream', async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 } } });
  t.after(() => f.close());
  const head = `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${f.door.port}\r\nAuthorization: Bearer ${f.token}\r\n`;
  const { response } = await slowSender(f.door.port, '', `${head}X-Pad: ${'a'.repeat(500)}`, 20);
  assert.match(response, /^HTTP\/1\.1 408 /);
  assert.match(response, /x-content-type-options: nosniff/i);
  assert.match(response, /"code":"ERR_REQUEST_TIMEOUT"/);
  assert.equal(f.upstream.seen.length, 0);
});

test('a slow request body is cut off with 408 at requestTimeoutMs and nothing reaches the upstream', async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 } } });
  t.after(() => f.close());
  const body = JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(200) }] });
  const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${f.door.port}\r\nAuthorization: Bearer ${f.token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
  const { response } = await slowSender(f.door.port, head, body, 20);
  assert.match(response, /^HTTP\/1\.1 408 /);
  assert.equal(f.upstream.seen.length, 0);
  assert.equal(f.admission.stats().active, 0, 'no slot was taken');
});
