// P-e mix-up / wrong issuer through the real sign-in: the callback's `iss` (RFC 9207) must be exactly the
// pinned hub issuer, or the callback is refused before the token endpoint and the flow keeps waiting; the
// hub metadata must name exactly the configured issuer, or no listener starts at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { signIn } from '../../src/authority/signin.js';
import { startCompanionHub } from '../helpers/companion-hub.js';
import {
  callbackFor,
  deferredBrowser,
  deliver,
  listenerPortOf,
  listeningServers,
  portRefuses,
  recordingFetch,
} from '../helpers/signin-harness.js';

const BOUND = { timeout: 20_000 };

test(
  "P-e signIn() refuses a callback from another issuer or without iss, keeps waiting, then accepts the hub's own",
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
    const callback = await callbackFor(ch, authorizationUrl);
    assert.equal(callback.searchParams.get('iss'), ch.hub.issuer);

    const variant = (change: (p: URLSearchParams) => void): URL => {
      const url = new URL(callback);
      change(url.searchParams);
      return url;
    };
    const forgeries: [string, URL, string][] = [
      ['another issuer', variant((p) => p.set('iss', 'https://evil.example')), 'ERR_OAUTH_ISSUER_MISMATCH'],
      [
        'the issuer with a trailing slash',
        variant((p) => p.set('iss', `${ch.hub.issuer}/`)),
        'ERR_OAUTH_ISSUER_MISMATCH',
      ],
      [
        'the issuer as localhost',
        variant((p) => p.set('iss', ch.hub.issuer.replace('127.0.0.1', 'localhost'))),
        'ERR_OAUTH_ISSUER_MISMATCH',
      ],
      ['no iss', variant((p) => p.delete('iss')), 'ERR_OAUTH_ISSUER_MISSING'],
      ['an empty iss', variant((p) => p.set('iss', '')), 'ERR_OAUTH_ISSUER_MISSING'],
      ['two iss', variant((p) => p.append('iss', 'https://evil.example')), 'ERR_OAUTH_DUPLICATE_PARAM'],
      // A forged "denied" from another issuer must not end the sign-in either.
      [
        'an error from another issuer',
        variant((p) => {
          p.delete('code');
          p.set('error', 'access_denied');
          p.set('iss', 'https://evil.example');
        }),
        'ERR_OAUTH_ISSUER_MISMATCH',
      ],
    ];
    for (const [name, url, code] of forgeries) {
      const response = await deliver(url);
      assert.equal(response.status, 400, name);
      assert.equal(refused.at(-1), code, name);
    }
    assert.equal(rec.tokenPosts, 0, 'no forged callback reached the token endpoint');
    assert.equal(await portRefuses(listenerPortOf(authorizationUrl)), false, 'the listener is still waiting');

    assert.equal((await deliver(callback)).status, 200);
    const result = await flow;
    assert.equal(result.subject, ch.hub.user);
    assert.equal(rec.tokenPosts, 1);
  },
);

test('P-e signIn() refuses hub metadata that names another issuer and starts no listener', BOUND, async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  // The hub's real metadata, with the issuer of someone else (a mix-up or a misconfigured hub).
  const lying = (async (url: string, init: RequestInit) => {
    const response = await ch.fetch(url, init);
    if (!url.endsWith('/.well-known/openid-configuration')) return response;
    const metadata = (await response.json()) as Record<string, unknown>;
    return Response.json({ ...metadata, issuer: 'https://evil.example' });
  }) as typeof globalThis.fetch;
  const before = listeningServers();
  let opened = false;
  await assert.rejects(
    signIn({
      client: authority.client,
      fetch: lying,
      custody: authority.custody,
      onOpen: () => (opened = true),
      timeoutMs: 5_000,
    }),
    { code: 'ERR_OAUTH_METADATA' },
  );
  assert.equal(opened, false);
  assert.equal(listeningServers(), before, 'no redirect listener was started');
  assert.equal((await authority.state()).signedIn, false);
});
