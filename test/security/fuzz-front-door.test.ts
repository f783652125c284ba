// P-a P-b P-c: the front door under generated raw HTTP (issue 11). Requests are raw bytes over real
// loopback sockets (pipelined 1–6 per connection, some dribbled in pieces), generated from a seed around
// the allow-list: odd Host forms (IP encodings, trailing dots, case, userinfo, ports, IPv6, duplicates,
// missing), absolute-form and `//` targets, CR/LF/NUL tricks, obs-fold, huge heads, header floods,
// invalid methods, HTTP/1.0 and other versions, body framing. An independent reference predicate
// (test/helpers/fuzz-front-door.ts) says which ones may be served; the instrumented upstream says which
// ones were. COMPANION_FUZZ_REQUESTS / COMPANION_FUZZ_SEED change the sample (the bench runs 100,000).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { codeIn, rawRequest } from '../helpers/cores-guard-server.js';
import { startFrontDoorFixture } from '../helpers/front-door.js';
import { fuzzFrontDoor } from '../helpers/fuzz-run.js';

const REQUESTS = Number(process.env.COMPANION_FUZZ_REQUESTS ?? 30_000);
const SEED = Number(process.env.COMPANION_FUZZ_SEED ?? 20_261_129);

test(
  `P-a P-b P-c fuzz: the front door serves exactly the allow-list over ${REQUESTS} generated raw requests (seed ${SEED}) and leaks no handle`,
  { timeout: 240_000 },
  async (t) => {
    const figures = await fuzzFrontDoor({ requests: REQUESTS, seed: SEED });
    t.diagnostic(`front door fuzz: ${JSON.stringify({ ...figures, examples: undefined })}`);
    const why = figures.examples.join('\n');
    assert.ok(figures.requests >= REQUESTS, 'the whole sample was judged');
    assert.equal(figures.acceptedButShouldRefuse, 0, `served although the allow-list refuses them:\n${why}`);
    assert.equal(figures.reachedButShouldRefuse, 0, `reached the upstream although refused:\n${why}`);
    assert.equal(figures.unattributed, 0, `upstream requests no generated request explains:\n${why}`);
    assert.equal(
      figures.refusedButShouldAccept,
      0,
      `refused although the allow-list serves them (the predicate is exact):\n${why}`,
    );
    assert.ok(
      figures.accepted > REQUESTS / 5 && figures.refused > REQUESTS / 3,
      'the sample exercises both sides of the allow-list',
    );
    assert.equal(figures.hung, 0, 'no connection outlived its deadline');
    assert.equal(figures.garbled, 0, `every response parsed:\n${JSON.stringify(figures.garbledSamples, null, 1)}`);
    assert.equal(figures.servesAfter, true, 'the door still serves a valid request afterwards');
    assert.deepEqual(figures.leakedHandles, {}, 'no TCP socket or server handle left after closing');
  },
);

test('P-a P-b P-c a Host, Origin or Authorization placed after 2,000 header fields still reaches the guard', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  const P = f.door.port;
  const filler = Array.from({ length: 2_100 }, (_, i) => `x${i % 10}:`);
  const base = ['GET /v1/models HTTP/1.1', `Host: 127.0.0.1:${P}`, `Authorization: Bearer ${f.token}`, ...filler];
  for (const [tail, code] of [
    ['Host: evil.example', 'ERR_GUARD_HOST_DUPLICATE'],
    ['Origin: http://evil.example', 'ERR_GUARD_ORIGIN'],
    ['Authorization: Bearer wrong-token-wrong-token', 'ERR_GUARD_TOKEN_INVALID'],
  ] as const) {
    const response = await rawRequest(P, [...base, tail]);
    assert.equal(codeIn(response), code, tail);
  }
  assert.equal(f.upstream.seen.length, 0, 'nothing reached the runtime');
  const control = await rawRequest(P, [...base, 'X-Tail: 1', 'Connection: close']);
  assert.equal(control.status, 200, 'the same flood with a harmless tail is served');
});

test('P-a P-b P-c a bad request pipelined behind a valid one never answers in its place', async (t) => {
  const f = await startFrontDoorFixture();
  t.after(() => f.close());
  const P = f.door.port;
  const valid = `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${P}\r\nAuthorization: Bearer ${f.token}\r\n\r\n`;
  for (const bad of [
    `GET /v1/models HTTP/1.1\r\nHost : evil.example\r\n\r\n`, // a parse error
    `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${P}\r\nX-Pad: ${'p'.repeat(20_000)}\r\n\r\n`, // a head too large
    `POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${P}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`, // broken chunks
  ]) {
    const response = await rawRequest(P, [valid.slice(0, -4)], bad);
    assert.equal(response.status, 200, "the first answer on the connection is the valid request's");
    assert.ok(response.body.includes('"object":"list"'), "and it is the runtime's answer");
  }
});
