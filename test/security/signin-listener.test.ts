// P-d authorization-code interception at the real one-shot loopback listener: only a GET of the exact
// path with exactly `Host: 127.0.0.1:<port>` in origin-form reaches `validate`; after the first valid
// callback nothing else does (connection refused or 410); the page holds no secret and redirects nowhere.
// First the listener alone (a spy `validate`), then through signIn() against the reference hub, where
// the spy is the token endpoint (an instrumented fetch counts the POSTs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedirectListener, type RedirectListener } from '../../src/authority/redirect-listener.js';
import { signIn } from '../../src/authority/signin.js';
import { CompanionError } from '../../src/core/errors.js';
import { startCompanionHub } from '../helpers/companion-hub.js';
import { rawRequest, type RawResponse } from '../helpers/cores-guard-server.js';
import {
  callbackFor,
  deferredBrowser,
  deliver,
  listenerPortOf,
  portRefuses,
  recordingFetch,
} from '../helpers/signin-harness.js';

/** Every test is bounded: a listener that never closes must fail the test, not hang the run. */
const BOUND = { timeout: 20_000 };

const STATE = 'st4te-of-this-flow-0123456789abcdefghijk';
const CODE = 'c0de-from-the-hub-0123456789abcdefghijklmn';

/** A listener whose `validate` accepts `?state=STATE` and counts every call. */
async function spiedListener(t: {
  after(fn: () => Promise<void>): void;
}): Promise<{ listener: RedirectListener<string>; calls: { count: number }; refused: string[] }> {
  const calls = { count: 0 };
  const refused: string[] = [];
  const listener = await startRedirectListener<string>({
    validate: (url) => {
      calls.count += 1;
      if (url.searchParams.get('state') !== STATE) throw new CompanionError('ERR_OAUTH_STATE_MISMATCH');
      return 'validated';
    },
    onRefused: (code) => refused.push(code),
    timeoutMs: 20_000,
  });
  t.after(() => listener.cancel());
  return { listener, calls, refused };
}

const query = `?code=${CODE}&state=${STATE}&iss=https%3A%2F%2Fhub.example`;

/** A second request after the listener is done: refused at the socket, or answered 410. */
async function refusedAfterDone(port: number, lines: string[]): Promise<void> {
  try {
    const response = await rawRequest(port, lines);
    assert.ok(response.status === 410 || response.status === 0, `expected refusal, got ${response.status}`);
  } catch (error) {
    assert.equal((error as { code?: string }).code, 'ECONNREFUSED');
  }
}

function assertHarmlessPage(
  response: { head?: string; body: string; headers?: Record<string, unknown> },
  secrets: readonly string[],
): void {
  const head = (
    response.head ??
    Object.entries(response.headers ?? {})
      .map(([k, v]) => `${k}: ${String(v)}`)
      .join('\r\n')
  ).toLowerCase();
  assert.match(head, /referrer-policy: no-referrer/);
  assert.match(head, /cache-control: no-store/);
  assert.doesNotMatch(head, /\r?\nlocation:|^location:/m, 'no Location header');
  assert.doesNotMatch(head, /refresh:/, 'no Refresh header');
  assert.doesNotMatch(response.body, /<meta[^>]+http-equiv/i, 'no meta refresh');
  assert.doesNotMatch(response.body, /<script|javascript:|<form|<a /i, 'no script, form or link');
  for (const secret of secrets)
    assert.ok(
      !response.body.includes(secret) && !head.includes(secret.toLowerCase()),
      'the page holds no secret from the callback',
    );
}

test(
  'P-d startRedirectListener() refuses a second request after the first valid callback without validating it',
  BOUND,
  async (t) => {
    const { listener, calls } = await spiedListener(t);
    const first = await rawRequest(listener.port, [
      `GET /callback${query} HTTP/1.1`,
      `Host: 127.0.0.1:${listener.port}`,
      'Connection: keep-alive',
    ]);
    assert.equal(first.status, 200);
    assert.equal(await listener.result, 'validated');
    // The same callback again (a replay), on a new connection.
    await refusedAfterDone(listener.port, [`GET /callback${query} HTTP/1.1`, `Host: 127.0.0.1:${listener.port}`]);
    assert.equal(calls.count, 1, 'only the first callback reached validate');
    await listener.cancel();
    assert.ok(listener.closed());
    assert.ok(await portRefuses(listener.port), 'the port is free');
  },
);

test(
  'P-d startRedirectListener() answers a second request on a kept-open connection with 410 or a close, never validate',
  BOUND,
  async (t) => {
    const { listener, calls } = await spiedListener(t);
    const host = `Host: 127.0.0.1:${listener.port}`;
    // Two pipelined requests on one connection: the second arrives after the flow is over.
    const both = await rawRequest(listener.port, [
      `GET /callback${query} HTTP/1.1`,
      host,
      '',
      `GET /callback${query} HTTP/1.1`,
      host,
    ]);
    assert.equal(both.status, 200);
    assert.ok(!/HTTP\/1\.1 200[\s\S]*HTTP\/1\.1 200/.test(both.head + both.body), 'never two successes');
    assert.equal(calls.count, 1);
  },
);

test(
  'P-d startRedirectListener() refuses another path, Host, target form or method before validate',
  BOUND,
  async (t) => {
    const { listener, calls, refused } = await spiedListener(t);
    const P = listener.port;
    const cases: { name: string; lines: string[]; status: number; code: string }[] = [
      {
        name: 'another path',
        lines: [`GET /other${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 404,
        code: 'ERR_GUARD_PATH',
      },
      {
        name: 'a longer path',
        lines: [`GET /callback/x${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 404,
        code: 'ERR_GUARD_PATH',
      },
      {
        name: 'an encoded path',
        lines: [`GET /%63allback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 404,
        code: 'ERR_GUARD_PATH',
      },
      {
        name: 'a dot segment',
        lines: [`GET /x/../callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 404,
        code: 'ERR_GUARD_PATH',
      },
      {
        name: 'Host localhost',
        lines: [`GET /callback${query} HTTP/1.1`, `Host: localhost:${P}`],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'Host evil.example',
        lines: [`GET /callback${query} HTTP/1.1`, 'Host: evil.example'],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'Host evil.example with the port',
        lines: [`GET /callback${query} HTTP/1.1`, `Host: evil.example:${P}`],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'Host without the port',
        lines: [`GET /callback${query} HTTP/1.1`, 'Host: 127.0.0.1'],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'Host with a trailing dot',
        lines: [`GET /callback${query} HTTP/1.1`, `Host: 127.0.0.1.:${P}`],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'duplicate Host',
        lines: [`GET /callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`, 'Host: evil.example'],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'duplicate identical Host',
        lines: [`GET /callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`, `Host: 127.0.0.1:${P}`],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'no Host (HTTP/1.0)',
        lines: [`GET /callback${query} HTTP/1.0`],
        status: 400,
        code: 'ERR_GUARD_HOST_NOT_ALLOWED',
      },
      {
        name: 'absolute-form target',
        lines: [`GET http://127.0.0.1:${P}/callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 400,
        code: 'ERR_GUARD_TARGET_FORM',
      },
      {
        name: 'absolute-form to another host',
        lines: [`GET http://evil.example/callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 400,
        code: 'ERR_GUARD_TARGET_FORM',
      },
      {
        name: 'scheme-relative target',
        lines: [`GET //evil.example/callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 400,
        code: 'ERR_GUARD_TARGET_FORM',
      },
      {
        name: 'POST',
        lines: [`POST /callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`, 'Content-Length: 0'],
        status: 405,
        code: 'ERR_GUARD_METHOD',
      },
      {
        name: 'HEAD',
        lines: [`HEAD /callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`],
        status: 405,
        code: 'ERR_GUARD_METHOD',
      },
      {
        name: 'OPTIONS *',
        lines: ['OPTIONS * HTTP/1.1', `Host: 127.0.0.1:${P}`],
        status: 405,
        code: 'ERR_GUARD_METHOD',
      },
    ];
    for (const c of cases) {
      const response: RawResponse = await rawRequest(P, c.lines);
      assert.equal(response.status, c.status, c.name);
      assert.equal(refused.at(-1), c.code, c.name);
      if (c.lines[0]!.startsWith('HEAD')) continue; // no body
      assertHarmlessPage(response, [CODE, STATE]);
    }
    assert.equal(calls.count, 0, 'nothing reached validate');
    // Still waiting: a valid callback now succeeds.
    assert.equal((await rawRequest(P, [`GET /callback${query} HTTP/1.1`, `Host: 127.0.0.1:${P}`])).status, 200);
    assert.equal(await listener.result, 'validated');
    assert.equal(calls.count, 1);
  },
);

test('P-d startRedirectListener() refuses a wrong state and keeps waiting', BOUND, async (t) => {
  const { listener, calls, refused } = await spiedListener(t);
  const wrong = await deliver(`http://127.0.0.1:${listener.port}/callback?code=${CODE}&state=guessed`);
  assert.equal(wrong.status, 400);
  assert.equal(refused.at(-1), 'ERR_OAUTH_STATE_MISMATCH');
  assertHarmlessPage(wrong, [CODE, 'guessed']);
  assert.equal(listener.closed(), false);
  assert.equal((await deliver(`http://127.0.0.1:${listener.port}/callback${query}`)).status, 200);
  assert.equal(await listener.result, 'validated');
  assert.equal(calls.count, 2);
});

test(
  'P-d the success page sets no-referrer and no-store, redirects nowhere and holds neither code nor state',
  BOUND,
  async (t) => {
    const { listener } = await spiedListener(t);
    const page = await deliver(`http://127.0.0.1:${listener.port}/callback${query}`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.location, undefined);
    assert.equal(page.headers['access-control-allow-origin'], undefined, 'no CORS');
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'/);
    assertHarmlessPage(page, [CODE, STATE]);
  },
);

test(
  'P-d signIn() lets no wrong state, replay, other path, Host, target form or method reach the token endpoint',
  BOUND,
  async (t) => {
    const ch = await startCompanionHub(t);
    const authority = ch.authority();
    const rec = recordingFetch(ch.fetch);
    const browser = deferredBrowser();
    const refused: string[] = [];
    const flow = signIn({
      client: authority.client,
      fetch: rec.fetch,
      custody: authority.custody,
      openBrowser: browser.openBrowser,
      onOpen: () => undefined,
      onRefused: (code) => refused.push(code),
      timeoutMs: 20_000,
    });
    flow.catch(() => undefined);
    const authorizationUrl = await browser.url;
    const P = listenerPortOf(authorizationUrl);
    const callback = await callbackFor(ch, authorizationUrl);
    const target = `${callback.pathname}${callback.search}`;
    const forged = new URL(callback);
    forged.searchParams.set('state', 'forged-state-0123456789abcdefghij');

    // The real code with a forged state, then the real callback dressed as every refused request shape.
    assert.equal((await deliver(forged)).status, 400);
    const attacks: [string, string[]][] = [
      ['other path', [`GET /other${callback.search} HTTP/1.1`, `Host: 127.0.0.1:${P}`]],
      ['Host localhost', [`GET ${target} HTTP/1.1`, `Host: localhost:${P}`]],
      ['Host evil.example', [`GET ${target} HTTP/1.1`, 'Host: evil.example']],
      ['duplicate Host', [`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${P}`, 'Host: evil.example']],
      ['absolute-form', [`GET http://127.0.0.1:${P}${target} HTTP/1.1`, `Host: 127.0.0.1:${P}`]],
      ['POST', [`POST ${target} HTTP/1.1`, `Host: 127.0.0.1:${P}`, 'Content-Length: 0']],
    ];
    for (const [name, lines] of attacks) assert.ok([400, 404, 405].includes((await rawRequest(P, lines)).status), name);
    assert.deepEqual(refused, [
      'ERR_OAUTH_STATE_MISMATCH',
      'ERR_GUARD_PATH',
      'ERR_GUARD_HOST_NOT_ALLOWED',
      'ERR_GUARD_HOST_NOT_ALLOWED',
      'ERR_GUARD_HOST_NOT_ALLOWED',
      'ERR_GUARD_TARGET_FORM',
      'ERR_GUARD_METHOD',
    ]);
    assert.equal(rec.tokenPosts, 0, 'nothing reached the token endpoint');

    // The genuine callback completes the sign-in; a replay of it afterwards is refused.
    const page = await deliver(callback);
    assert.equal(page.status, 200);
    assertHarmlessPage(page, [callback.searchParams.get('code')!, callback.searchParams.get('state')!]);
    await flow;
    assert.equal(rec.tokenPosts, 1);
    await refusedAfterDone(P, [`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${P}`]);
    assert.equal(rec.tokenPosts, 1, 'the replay never reached the token endpoint');
    assert.ok(await portRefuses(P));
    assert.equal((await authority.state()).signedIn, true);
  },
);
