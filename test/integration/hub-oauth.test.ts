// The reference hub's authorization server over real TLS, driven with oauth4webapi as the client and
// the hub's own sign-in and consent pages filled in by hand (cookie jar, manual redirects).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpsRequest } from 'node:https';
import { checkServerIdentity } from 'node:tls';
import * as oauth from 'oauth4webapi';
import {
  CookieJar,
  actionOf,
  authorizationUrl,
  csrfOf,
  discover,
  fetchManifest,
  loopbackRedirect,
  pkcePair,
  signIn,
  startTestHub,
  walkAuthorization,
  type BrowserOutcome,
  type TestHub,
} from '../helpers/hub.js';

let hub: TestHub;
let as: oauth.AuthorizationServer;
const teardown: (() => Promise<void> | void)[] = [];

before(async () => {
  hub = await startTestHub({ after: (fn) => teardown.push(fn) });
  as = await discover(hub);
});
after(async () => {
  for (const fn of teardown.reverse()) await fn();
});

/** GET discovery with a forged Host header; the certificate is still checked against 127.0.0.1. */
function statusWithHost(host: string): Promise<number> {
  const url = new URL('/.well-known/openid-configuration', hub.issuer);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: url.port,
        path: url.pathname,
        method: 'GET',
        headers: { host },
        ca: hub.caPem,
        agent: false,
        checkServerIdentity: (_name, cert) => checkServerIdentity('127.0.0.1', cert),
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function redirectOf(outcome: BrowserOutcome): URL {
  if (outcome.kind !== 'redirect')
    assert.fail(`expected a redirect to the client, got a page (status ${outcome.status})`);
  return outcome.location;
}

function tokenError(error: unknown): string {
  assert.ok(error instanceof oauth.ResponseBodyError, `expected a token endpoint error, got ${String(error)}`);
  return error.error;
}

test('discovery names the issuer exactly and advertises S256, iss and the native endpoints', async () => {
  assert.equal(as.issuer, hub.issuer);
  assert.equal(hub.issuer, hub.hubUrl);
  assert.deepEqual(as.code_challenge_methods_supported, ['S256']);
  assert.equal(as.authorization_response_iss_parameter_supported, true);
  assert.deepEqual(as.response_types_supported, ['code']);
  assert.deepEqual(as.token_endpoint_auth_methods_supported, ['none']);
  for (const endpoint of [as.authorization_endpoint, as.token_endpoint, as.revocation_endpoint]) {
    assert.ok(endpoint?.startsWith(`${hub.issuer}/api/v1/auth/native/`), endpoint);
  }
  // RFC 8414 location: the same document.
  const rfc8414 = await oauth.processDiscoveryResponse(
    new URL(hub.issuer),
    await oauth.discoveryRequest(new URL(hub.issuer), { algorithm: 'oauth2', ...hub.oauthOptions }),
  );
  assert.equal(rfc8414.issuer, hub.issuer);
  assert.equal(rfc8414.token_endpoint, as.token_endpoint);
});

test('signIn() gets code, then tokens, with iss in the callback and the full scope with prompt=consent', async () => {
  const { tokens, callback } = await signIn(hub, { prompt: 'consent' });
  assert.equal(callback.searchParams.get('iss'), hub.issuer);
  assert.equal(callback.hostname, '127.0.0.1');
  assert.equal(tokens.token_type, 'bearer');
  assert.equal(typeof tokens.access_token, 'string');
  assert.equal(typeof tokens.refresh_token, 'string');
  assert.equal(typeof tokens.id_token, 'string');
  assert.equal(tokens.expires_in, 300);
  assert.deepEqual(new Set(tokens.scope?.split(' ')), new Set(['openid', 'offline_access', 'companion:manifest']));
});

test('a native client gets a refresh token without prompt=consent; offline_access is then not echoed in scope', async () => {
  const { tokens } = await signIn(hub);
  assert.equal(typeof tokens.refresh_token, 'string');
  assert.deepEqual(new Set(tokens.scope?.split(' ')), new Set(['openid', 'companion:manifest']));
  assert.equal((await fetchManifest(hub, tokens.access_token)).status, 200);
});

test('the loopback redirect may use any port, and each port gets its own code', async () => {
  const first = await signIn(hub);
  const second = await signIn(hub);
  assert.notEqual(new URL(first.redirectUri).port, new URL(second.redirectUri).port);
  assert.notEqual(first.tokens.access_token, second.tokens.access_token);
});

test('refresh rotates the refresh token, and reusing an old one revokes the whole grant', async () => {
  const { client, tokens } = await signIn(hub);
  const first = tokens.refresh_token!;
  const rotated = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, oauth.None(), first, hub.oauthOptions),
  );
  assert.equal(typeof rotated.refresh_token, 'string');
  assert.notEqual(rotated.refresh_token, first);
  assert.equal((await fetchManifest(hub, rotated.access_token)).status, 200);

  // Replay of the consumed token (what a thief would do): refused, and the grant is gone.
  await assert.rejects(
    async () =>
      oauth.processRefreshTokenResponse(
        as,
        client,
        await oauth.refreshTokenGrantRequest(as, client, oauth.None(), first, hub.oauthOptions),
      ),
    (error) => tokenError(error) === 'invalid_grant',
  );
  await assert.rejects(
    async () =>
      oauth.processRefreshTokenResponse(
        as,
        client,
        await oauth.refreshTokenGrantRequest(as, client, oauth.None(), rotated.refresh_token!, hub.oauthOptions),
      ),
    (error) => tokenError(error) === 'invalid_grant',
  );
  assert.equal(
    (await fetchManifest(hub, rotated.access_token)).status,
    401,
    'access tokens of the revoked grant are dead too',
  );
  assert.equal((await fetchManifest(hub, tokens.access_token)).status, 401);
});

test('an authorization code works once; its reuse is refused and revokes what it issued', async () => {
  const client: oauth.Client = { client_id: hub.clientId };
  const { verifier, challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const redirectUri = loopbackRedirect();
  const location = redirectOf(
    await walkAuthorization(hub, authorizationUrl(as, hub, { redirectUri, state, codeChallenge: challenge })),
  );
  const params = oauth.validateAuthResponse(as, client, location, state);
  const tokens = await oauth.processAuthorizationCodeResponse(
    as,
    client,
    await oauth.authorizationCodeGrantRequest(
      as,
      client,
      oauth.None(),
      params,
      redirectUri,
      verifier,
      hub.oauthOptions,
    ),
  );
  assert.equal((await fetchManifest(hub, tokens.access_token)).status, 200);
  await assert.rejects(
    async () =>
      oauth.processAuthorizationCodeResponse(
        as,
        client,
        await oauth.authorizationCodeGrantRequest(
          as,
          client,
          oauth.None(),
          params,
          redirectUri,
          verifier,
          hub.oauthOptions,
        ),
      ),
    (error) => tokenError(error) === 'invalid_grant',
  );
  assert.equal((await fetchManifest(hub, tokens.access_token)).status, 401);
});

test('a wrong code_verifier is refused at the token endpoint', async () => {
  const client: oauth.Client = { client_id: hub.clientId };
  const { challenge } = await pkcePair();
  const other = await pkcePair();
  const state = oauth.generateRandomState();
  const redirectUri = loopbackRedirect();
  const location = redirectOf(
    await walkAuthorization(hub, authorizationUrl(as, hub, { redirectUri, state, codeChallenge: challenge })),
  );
  const params = oauth.validateAuthResponse(as, client, location, state);
  await assert.rejects(
    async () =>
      oauth.processAuthorizationCodeResponse(
        as,
        client,
        await oauth.authorizationCodeGrantRequest(
          as,
          client,
          oauth.None(),
          params,
          redirectUri,
          other.verifier,
          hub.oauthOptions,
        ),
      ),
    (error) => tokenError(error) === 'invalid_grant',
  );
});

test('the code exchange needs the same redirect_uri as the authorization request', async () => {
  const client: oauth.Client = { client_id: hub.clientId };
  const { verifier, challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const redirectUri = loopbackRedirect(41_001);
  const location = redirectOf(
    await walkAuthorization(hub, authorizationUrl(as, hub, { redirectUri, state, codeChallenge: challenge })),
  );
  const params = oauth.validateAuthResponse(as, client, location, state);
  await assert.rejects(
    async () =>
      oauth.processAuthorizationCodeResponse(
        as,
        client,
        await oauth.authorizationCodeGrantRequest(
          as,
          client,
          oauth.None(),
          params,
          loopbackRedirect(41_002),
          verifier,
          hub.oauthOptions,
        ),
      ),
    (error) => tokenError(error) === 'invalid_grant',
  );
});

for (const [name, challengeMethod, hasChallenge] of [
  ['plain PKCE', 'plain', true],
  ['missing PKCE', null, false],
  ['a code_challenge without its method', null, true],
] as const) {
  test(`${name} is refused with invalid_request and iss, before any sign-in page`, async () => {
    const { challenge } = await pkcePair();
    const state = oauth.generateRandomState();
    const url = authorizationUrl(as, hub, {
      state,
      codeChallenge: hasChallenge ? challenge : null,
      codeChallengeMethod: challengeMethod,
    });
    const response = await hub.fetch(url);
    assert.equal(response.status, 303);
    const location = new URL(response.headers.get('location')!);
    assert.equal(location.origin, 'http://127.0.0.1:' + location.port);
    assert.equal(location.searchParams.get('error'), 'invalid_request');
    assert.equal(location.searchParams.get('iss'), hub.issuer);
    assert.equal(location.searchParams.get('state'), state);
    assert.equal(location.searchParams.get('code'), null);
  });
}

for (const [name, redirectUri] of [
  ['a non-loopback host', 'http://evil.example/callback'],
  ['localhost (not registered)', 'http://localhost:43123/callback'],
  ['[::1] (not registered)', 'http://[::1]:43123/callback'],
  ['another path', 'http://127.0.0.1:43123/other'],
  ['https on loopback', 'https://127.0.0.1:43123/callback'],
  ['a userinfo trick', 'http://127.0.0.1:43123@evil.example/callback'],
] as const) {
  test(`a redirect_uri on ${name} is refused without redirecting anywhere`, async () => {
    const { challenge } = await pkcePair();
    const response = await hub.fetch(authorizationUrl(as, hub, { redirectUri, codeChallenge: challenge }));
    assert.equal(response.status, 400);
    assert.equal(response.headers.get('location'), null);
    assert.match(await response.text(), /invalid_redirect_uri/);
  });
}

test("scope ceiling: a known scope beyond the client's ceiling is refused with invalid_scope and iss", async () => {
  const { challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const response = await hub.fetch(
    authorizationUrl(as, hub, { scope: 'openid companion:manifest profile', state, codeChallenge: challenge }),
  );
  assert.equal(response.status, 303);
  const location = new URL(response.headers.get('location')!);
  assert.equal(location.searchParams.get('error'), 'invalid_scope');
  assert.equal(location.searchParams.get('iss'), hub.issuer);
  assert.equal(location.searchParams.get('state'), state);
});

test('scope ceiling: a scope the hub does not know is dropped, never granted', async () => {
  const { tokens } = await signIn(hub, {
    scope: 'openid offline_access companion:manifest companion:admin hub:everything',
    prompt: 'consent',
  });
  assert.deepEqual(new Set(tokens.scope?.split(' ')), new Set(['openid', 'offline_access', 'companion:manifest']));
});

test('a denied consent comes back as access_denied with iss and state', async () => {
  const { challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const location = redirectOf(
    await walkAuthorization(hub, authorizationUrl(as, hub, { state, codeChallenge: challenge }), { consent: 'deny' }),
  );
  assert.equal(location.searchParams.get('error'), 'access_denied');
  assert.equal(location.searchParams.get('iss'), hub.issuer);
  assert.equal(location.searchParams.get('state'), state);
  assert.equal(location.searchParams.get('code'), null);
  assert.throws(
    () => oauth.validateAuthResponse(as, { client_id: hub.clientId }, location, state),
    oauth.AuthorizationResponseError,
  );
});

test('a wrong password shows the form again (401) and never redirects; five failures end the request', async () => {
  const { challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const wrong = await walkAuthorization(hub, authorizationUrl(as, hub, { state, codeChallenge: challenge }), {
    password: 'not-the-password',
  });
  assert.equal(wrong.kind, 'page');
  assert.equal(wrong.kind === 'page' && wrong.status, 401);
  assert.ok(wrong.kind === 'page' && !wrong.html.includes('not-the-password'), 'the password is not echoed');

  // Keep submitting the wrong password on the same interaction.
  const jar = new CookieJar();
  let outcome = await walkAuthorization(hub, authorizationUrl(as, hub, { state, codeChallenge: challenge }), {
    password: 'nope',
    jar,
  });
  for (let i = 1; i < 5 && outcome.kind === 'page'; i += 1) {
    const form = new URLSearchParams({
      csrf: csrfOf(outcome.html),
      username: hub.user,
      password: 'nope',
      action: 'login',
    });
    const url = new URL(actionOf(outcome.html), hub.issuer);
    const response = await hub.fetch(url, {
      method: 'POST',
      body: form.toString(),
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        cookie: jar.header(url) ?? '',
        origin: new URL(hub.issuer).origin,
      },
    });
    jar.store(response);
    if (response.status === 303) {
      outcome = await walkAuthorization(hub, new URL(response.headers.get('location')!, hub.issuer), { jar });
      break;
    }
    outcome = { kind: 'page', status: response.status, html: await response.text(), url };
  }
  const location = redirectOf(outcome);
  assert.equal(location.searchParams.get('error'), 'access_denied');
  assert.equal(location.searchParams.get('iss'), hub.issuer);
});

test('the sign-in form refuses a post without the CSRF token or from another origin, and the flow still works after', async () => {
  const { challenge } = await pkcePair();
  const jar = new CookieJar();
  const start = await hub.fetch(authorizationUrl(as, hub, { codeChallenge: challenge }));
  jar.store(start);
  const pageUrl = new URL(start.headers.get('location')!, hub.issuer);
  const page = await hub.fetch(pageUrl, { headers: { cookie: jar.header(pageUrl) ?? '' } });
  const html = await page.text();
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
  assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
  assert.equal(page.headers.get('cache-control'), 'no-store');
  assert.ok(!html.includes(hub.password), 'no secret in the page');
  const action = new URL(actionOf(html), hub.issuer);
  const post = (form: Record<string, string>, extra: Record<string, string> = {}) =>
    hub.fetch(action, {
      method: 'POST',
      body: new URLSearchParams(form).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header(action) ?? '', ...extra },
    });

  const noToken = await post({ username: hub.user, password: hub.password, action: 'login' });
  assert.equal(noToken.status, 403);
  const forged = await post({ csrf: 'A'.repeat(43), username: hub.user, password: hub.password, action: 'login' });
  assert.equal(forged.status, 403);
  const crossOrigin = await post(
    { csrf: csrfOf(html), username: hub.user, password: hub.password, action: 'login' },
    { origin: 'https://evil.example' },
  );
  assert.equal(crossOrigin.status, 403);
  const crossSite = await post(
    { csrf: csrfOf(html), username: hub.user, password: hub.password, action: 'login' },
    { 'sec-fetch-site': 'cross-site' },
  );
  assert.equal(crossSite.status, 403);
  const noCookie = await hub.fetch(action, {
    method: 'POST',
    body: new URLSearchParams({
      csrf: csrfOf(html),
      username: hub.user,
      password: hub.password,
      action: 'login',
    }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(noCookie.status, 400, 'without the interaction cookie the page is expired');

  const ok = await post(
    { csrf: csrfOf(html), username: hub.user, password: hub.password, action: 'login' },
    { origin: new URL(hub.issuer).origin },
  );
  assert.equal(ok.status, 303);
});

test('no silent re-approval: a browser with a hub session still gets the consent page', async () => {
  const jar = new CookieJar();
  const first = await signIn(hub, { script: { jar } });
  assert.ok(first.tokens.access_token);
  const { challenge } = await pkcePair();
  const start = await hub.fetch(authorizationUrl(as, hub, { codeChallenge: challenge }), {
    headers: { cookie: jar.header(new URL(as.authorization_endpoint!)) ?? '' },
  });
  jar.store(start);
  assert.equal(start.status, 303);
  const pageUrl = new URL(start.headers.get('location')!, hub.issuer);
  assert.match(pageUrl.pathname, /^\/api\/v1\/auth\/native\/interaction\//);
  const page = await hub.fetch(pageUrl, { headers: { cookie: jar.header(pageUrl) ?? '' } });
  const html = await page.text();
  assert.ok(html.includes('id="allow"'), 'the consent page is shown again');
  assert.ok(!html.includes('id="sign-in"'), 'the session is remembered: no second password prompt');
});

test('prompt=none is refused for the native client (consent is always interactive)', async () => {
  const { challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const response = await hub.fetch(authorizationUrl(as, hub, { state, codeChallenge: challenge, prompt: 'none' }));
  assert.equal(response.status, 303);
  const location = new URL(response.headers.get('location')!);
  assert.ok(
    ['login_required', 'consent_required', 'interaction_required'].includes(location.searchParams.get('error') ?? ''),
    location.searchParams.get('error') ?? '',
  );
  assert.equal(location.searchParams.get('iss'), hub.issuer);
});

test('revoking the refresh token at the revocation endpoint ends the refresh', async () => {
  const { client, tokens } = await signIn(hub);
  await oauth.processRevocationResponse(
    await oauth.revocationRequest(as, client, oauth.None(), tokens.refresh_token!, hub.oauthOptions),
  );
  await assert.rejects(
    async () =>
      oauth.processRefreshTokenResponse(
        as,
        client,
        await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token!, hub.oauthOptions),
      ),
    (error) => tokenError(error) === 'invalid_grant',
  );
});

test('the hub answers only its own Host (421 for localhost or another name)', async () => {
  for (const host of [`localhost:${new URL(hub.issuer).port}`, 'evil.example', `127.0.0.1:1`]) {
    assert.equal(await statusWithHost(host), 421, host);
  }
});

test('the token endpoint sends no CORS headers to a browser origin', async () => {
  const response = await hub.fetch(as.token_endpoint!, {
    method: 'POST',
    headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=refresh_token&refresh_token=x&client_id=companion',
  });
  assert.equal(response.headers.get('access-control-allow-origin'), null);
  await response.body?.cancel();
});
