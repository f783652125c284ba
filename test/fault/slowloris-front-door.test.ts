// Slow clients (issue 11): slowloris-style heads and bodies, and idle connections, are cut off by the
// front door's own limits (small ones configured here), while other clients are served meanwhile; a
// client that leaves early, or pipelines behind a refused request, holds no admission slot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { rawRequest } from '../helpers/cores-guard-server.js';
import { startFrontDoorFixture } from '../helpers/front-door.js';

const LIMITS = { headersTimeoutMs: 500, requestTimeoutMs: 1_000, keepAliveTimeoutMs: 1_000 };
/** Far more than the limits above, far less than Node's default 30 s timeout check: a bound, not a timing. */
const CUT_OFF_BOUND_MS = 8_000;

interface SlowClient {
  readonly socket: Socket;
  /** Resolves with what the server sent when it closed the connection, or 'still open' at the bound. */
  readonly ended: Promise<string>;
  stop(): void;
}

/** Opens a connection, writes `first`, then one `drip` every `everyMs` until the server closes it. */
function slowClient(port: number, first: string, drip: string, everyMs = 100): SlowClient {
  const socket = connect({ host: '127.0.0.1', port });
  let received = '';
  let timer: NodeJS.Timeout | undefined;
  const ended = new Promise<string>((resolve) => {
    const bound = setTimeout(() => resolve('still open'), CUT_OFF_BOUND_MS);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
    });
    socket.on('close', () => {
      clearTimeout(bound);
      clearInterval(timer);
      resolve(received);
    });
    socket.on('error', () => undefined);
  });
  socket.on('connect', () => {
    if (first !== '') socket.write(first);
    if (drip !== '') {
      timer = setInterval(() => {
        if (socket.writable) socket.write(drip);
      }, everyMs);
    }
  });
  return {
    socket,
    ended,
    stop() {
      clearInterval(timer);
      socket.destroy();
    },
  };
}

async function servedMeanwhile(port: number, token: string, count: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < count; i++) {
    const response = await rawRequest(port, [
      'GET /v1/models HTTP/1.1',
      `Host: 127.0.0.1:${port}`,
      `Authorization: Bearer ${token}`,
      'Connection: close',
    ]);
    statuses.push(response.status);
  }
  return statuses;
}

test("slow request heads are cut off by the front door's head timeout while other clients are served", async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: LIMITS } });
  t.after(() => f.close());
  const P = f.door.port;
  const slow = Array.from({ length: 20 }, () =>
    slowClient(
      P,
      `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${P}\r\nAuthorization: Bearer ${f.token}\r\n`,
      'X-Slow: 1\r\n',
    ),
  );
  t.after(() => slow.forEach((c) => c.stop()));
  assert.deepEqual(
    await servedMeanwhile(P, f.token, 10),
    Array(10).fill(200),
    'others are served while the slow heads dribble',
  );
  for (const client of slow) {
    const answer = await client.ended;
    assert.notEqual(answer, 'still open', 'the slow head was cut off');
    assert.ok(!answer.startsWith('HTTP/1.1 2'), 'and never served');
  }
  assert.equal(f.upstream.seen.length, 10, 'only the complete requests reached the runtime');
});

test("a slow request body is cut off by the front door's request timeout, before the runtime sees it", async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: LIMITS } });
  t.after(() => f.close());
  const P = f.door.port;
  const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${P}\r\nAuthorization: Bearer ${f.token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"messages":[`;
  const slow = Array.from({ length: 10 }, () => slowClient(P, head, ' '));
  t.after(() => slow.forEach((c) => c.stop()));
  assert.deepEqual(await servedMeanwhile(P, f.token, 5), Array(5).fill(200));
  for (const client of slow) {
    const answer = await client.ended;
    assert.notEqual(answer, 'still open', 'the slow body was cut off');
    assert.ok(!answer.startsWith('HTTP/1.1 2'));
  }
  assert.equal(f.upstream.seen.filter((s) => s.method === 'POST').length, 0, 'no partial body reached the runtime');
  assert.equal(f.admission.stats().active, 0, 'no admission slot is held');
});

test('connections that send nothing, or go idle after an answer, are closed', async (t) => {
  const f = await startFrontDoorFixture({ door: { limits: LIMITS } });
  t.after(() => f.close());
  const P = f.door.port;
  const silent = Array.from({ length: 10 }, () => slowClient(P, '', ''));
  const idle = slowClient(
    P,
    `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${P}\r\nAuthorization: Bearer ${f.token}\r\n\r\n`,
    '',
  );
  t.after(() => [...silent, idle].forEach((c) => c.stop()));
  for (const client of silent) assert.notEqual(await client.ended, 'still open', 'a silent connection was closed');
  const answer = await idle.ended;
  assert.ok(answer.startsWith('HTTP/1.1 200'), 'the keep-alive request was answered');
  assert.notEqual(answer, 'still open', 'and the idle connection closed after the keep-alive timeout');
});

test('clients that leave early or pipeline behind a refused request hold no admission slot', async (t) => {
  const f = await startFrontDoorFixture({ maxConcurrent: 2, maxQueue: 4, behaviour: { events: 3, eventDelayMs: 20 } });
  t.after(() => f.close());
  const P = f.door.port;
  const body = JSON.stringify({ messages: [{ role: 'user', content: 'x' }], stream: false });
  const post = `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${P}\r\nAuthorization: Bearer ${f.token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  const streamed = post.replace('"stream":false', '"stream":true ');
  // Pipelined behind a refusal (which closes the connection); and streamed requests dropped mid-way.
  const leavers = [
    ...Array.from({ length: 10 }, () =>
      slowClient(P, `GET /v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n${post}`, ''),
    ),
    ...Array.from({ length: 6 }, () => slowClient(P, streamed, '')),
  ];
  await Promise.all(
    leavers.slice(10).map(
      (c) =>
        new Promise<void>((resolve) => {
          c.socket.once('data', () => {
            c.stop();
            resolve();
          });
          setTimeout(resolve, 2_000);
        }),
    ),
  );
  await Promise.all(leavers.slice(0, 10).map((c) => c.ended));
  // Every slot comes back (bounded wait): two requests at once are served.
  const deadline = Date.now() + 5_000;
  while (f.admission.stats().active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(
    { active: f.admission.stats().active, queued: f.admission.stats().queued },
    { active: 0, queued: 0 },
  );
  const again = await Promise.all([servedMeanwhile(P, f.token, 1), servedMeanwhile(P, f.token, 1)]);
  assert.deepEqual(again.flat(), [200, 200]);
});
