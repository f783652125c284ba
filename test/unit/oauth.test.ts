import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import * as oauth from 'oauth4webapi';
import { Response as UndiciResponse } from 'undici';
import {
  buildAuthorizationUrl,
  buildLoopbackRedirectUri,
  createPkcePair,
  createState,
  discoverIssuerMetadata,
  discoveryUrl,
  exchangeAuthorizationCode,
  isIssuerMetadata,
  isValidatedCallback,
  parseIssuerMetadata,
  parseLoopbackRedirectUri,
  refreshTokens,
  revokeToken,
  sanitizeOAuthText,
  validateAuthorizationResponse,
  type OAuthFetch,
} from '../../src/core/oauth.js';
import { CompanionError } from '../../src/core/errors.js';
import { Secret } from '../../src/core/secret.js';
import {
  ACCESS_TOKEN,
  CEILING,
  CLIENT_ID,
  CODE,
  ISSUER,
  NOW,
  OTHER_ISSUER,
  REFRESH_TOKEN,
  ROTATED_REFRESH_TOKEN,
  SCOPE,
  idToken,
  jsonResponse,
  metadata,
  metadataJson,
  recordingFetch,
  signIn,
  tokenBody,
} from '../helpers/oauth-fixtures.js';

// The global fetch is what the adapter passes (with its own dispatcher): it must fit the port's type.
const _globalFetchFits: OAuthFetch = fetch;
void _globalFetchFits;

// --- PKCE, state --------------------------------------------------------------------------------

test('createPkcePair() makes a 43-character S256 verifier whose challenge matches oauth4webapi', async () => {
  const pair = createPkcePair();
  assert.equal(pair.method, 'S256');
  assert.match(pair.verifier.reveal(), /^[A-Za-z0-9_-]{43}$/);
  assert.ok(pair.verifier instanceof Secret);
  assert.equal(pair.challenge, await oauth.calculatePKCECodeChallenge(pair.verifier.reveal()));
  assert.notEqual(createPkcePair().verifier.reveal(), pair.verifier.reveal());
  assert.ok(!inspect(pair).includes(pair.verifier.reveal()));
});

test('createState() returns 256 random bits as base64url, different each time', () => {
  const a = createState();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(createState(), a);
});

// --- Redirect URI -------------------------------------------------------------------------------

test('buildLoopbackRedirectUri() builds http://127.0.0.1:<port>/<path> from the bound port', () => {
  assert.equal(buildLoopbackRedirectUri(49152, 'callback'), 'http://127.0.0.1:49152/callback');
  assert.equal(buildLoopbackRedirectUri(1, '/oauth/callback'), 'http://127.0.0.1:1/oauth/callback');
  assert.equal(buildLoopbackRedirectUri(65535, 'a.b_c~d-e'), 'http://127.0.0.1:65535/a.b_c~d-e');
});

test('buildLoopbackRedirectUri() refuses port 0, out-of-range or non-integer ports and bad paths with ERR_OAUTH_REDIRECT_URI', () => {
  const cases: [unknown, unknown][] = [
    [0, 'callback'],
    [65536, 'callback'],
    [-1, 'callback'],
    [1.5, 'callback'],
    ['8080', 'callback'],
    [NaN, 'callback'],
    [8080, ''],
    [8080, '/'],
    [8080, '..'],
    [8080, 'a/../b'],
    [8080, './a'],
    [8080, 'a?x=1'],
    [8080, 'a#b'],
    [8080, 'a b'],
    [8080, '%2e%2e'],
    [8080, 'a//b'],
    [8080, '//evil.example/x'],
    [8080, 'x'.repeat(129)],
    [8080, 42],
    [8080, 'a\nb'],
  ];
  for (const [port, path] of cases) {
    assert.throws(
      () => buildLoopbackRedirectUri(port as number, path as string),
      { code: 'ERR_OAUTH_REDIRECT_URI' },
      `${String(port)} ${String(path)}`,
    );
  }
});

test('parseLoopbackRedirectUri() accepts only what buildLoopbackRedirectUri() makes', () => {
  assert.deepEqual(parseLoopbackRedirectUri('http://127.0.0.1:8080/callback'), { port: 8080, path: '/callback' });
  for (const uri of [
    'http://localhost:8080/callback',
    'http://[::1]:8080/callback',
    'https://127.0.0.1:8080/callback',
    'http://127.0.0.1/callback',
    'http://127.0.0.1:0/callback',
    'http://127.0.0.1:08080/callback',
    'http://127.0.0.1:70000/callback',
    'http://u:p@127.0.0.1:8080/callback',
    'http://127.0.0.1:8080/callback?x=1',
    'http://127.0.0.1:8080/callback#f',
    'http://127.0.0.2:8080/callback',
    'http://127.0.0.1:8080/',
    'http://127.0.0.1.evil.example:8080/callback',
    'HTTP://127.0.0.1:8080/callback',
  ]) {
    assert.throws(() => parseLoopbackRedirectUri(uri), { code: 'ERR_OAUTH_REDIRECT_URI' }, uri);
  }
});

// --- Metadata -----------------------------------------------------------------------------------

test('discoveryUrl() builds the OIDC and RFC 8414 well-known URLs', () => {
  assert.equal(discoveryUrl('https://hub.test').href, 'https://hub.test/.well-known/openid-configuration');
  assert.equal(
    discoveryUrl('https://hub.test/tenant').href,
    'https://hub.test/tenant/.well-known/openid-configuration',
  );
  assert.equal(
    discoveryUrl('https://hub.test', 'oauth2').href,
    'https://hub.test/.well-known/oauth-authorization-server',
  );
  assert.equal(
    discoveryUrl('https://hub.test/tenant', 'oauth2').href,
    'https://hub.test/.well-known/oauth-authorization-server/tenant',
  );
  for (const bad of ['http://hub.test', 'https://hub.test/?x=1', 'https://hub.test/#f', 'not a url']) {
    assert.throws(() => discoveryUrl(bad), { code: 'ERR_INVALID_ARG_VALUE' }, bad);
  }
});

test('parseIssuerMetadata() returns the endpoints of metadata that names the pinned issuer', () => {
  const md = parseIssuerMetadata(metadataJson(), ISSUER);
  assert.ok(isIssuerMetadata(md));
  assert.ok(!isIssuerMetadata({ ...md }));
  assert.deepEqual(
    { ...md },
    {
      issuer: ISSUER,
      authorizationEndpoint: `${ISSUER}/auth`,
      tokenEndpoint: `${ISSUER}/token`,
      revocationEndpoint: `${ISSUER}/token/revocation`,
      scopesSupported: ['openid', 'offline_access', 'models:read'],
    },
  );
  assert.equal(
    parseIssuerMetadata(metadataJson(ISSUER, { revocation_endpoint: undefined }), ISSUER).revocationEndpoint,
    null,
  );
});

test('parseIssuerMetadata() refuses every unacceptable document with ERR_OAUTH_METADATA', () => {
  const cases: [string, unknown][] = [
    ['not an object', 'x'],
    ['an array', []],
    ['null', null],
    ['another issuer', metadataJson(OTHER_ISSUER)],
    ['issuer with trailing slash', metadataJson(`${ISSUER}/`)],
    ['issuer in other case', metadataJson('https://HUB.test')],
    ['no issuer', metadataJson(ISSUER, { issuer: undefined })],
    ['http authorization endpoint', metadataJson(ISSUER, { authorization_endpoint: 'http://hub.test/auth' })],
    ['http token endpoint', metadataJson(ISSUER, { token_endpoint: 'http://hub.test/token' })],
    ['no token endpoint', metadataJson(ISSUER, { token_endpoint: undefined })],
    ['token endpoint with userinfo', metadataJson(ISSUER, { token_endpoint: 'https://u:p@hub.test/token' })],
    ['http revocation endpoint', metadataJson(ISSUER, { revocation_endpoint: 'http://hub.test/rev' })],
    ['iss parameter not promised', metadataJson(ISSUER, { authorization_response_iss_parameter_supported: undefined })],
    ['iss parameter false', metadataJson(ISSUER, { authorization_response_iss_parameter_supported: false })],
    ['iss parameter "true"', metadataJson(ISSUER, { authorization_response_iss_parameter_supported: 'true' })],
    ['no PKCE methods', metadataJson(ISSUER, { code_challenge_methods_supported: undefined })],
    ['plain PKCE only', metadataJson(ISSUER, { code_challenge_methods_supported: ['plain'] })],
    ['no code response type', metadataJson(ISSUER, { response_types_supported: ['token'] })],
    ['no authorization_code grant', metadataJson(ISSUER, { grant_types_supported: ['client_credentials'] })],
    ['no public clients', metadataJson(ISSUER, { token_endpoint_auth_methods_supported: ['client_secret_basic'] })],
    ['scopes not strings', metadataJson(ISSUER, { scopes_supported: [1] })],
    ['algs not a list', metadataJson(ISSUER, { id_token_signing_alg_values_supported: 'RS256' })],
  ];
  for (const [name, json] of cases)
    assert.throws(() => parseIssuerMetadata(json, ISSUER), { code: 'ERR_OAUTH_METADATA' }, name);
});

test('parseIssuerMetadata() refuses a configured issuer that is not https with ERR_INVALID_ARG_VALUE', () => {
  assert.throws(() => parseIssuerMetadata(metadataJson('http://hub.test'), 'http://hub.test'), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
});

test('discoverIssuerMetadata() GETs the well-known URL through the injected fetch without following redirects', async () => {
  const rec = recordingFetch(() => jsonResponse(200, metadataJson()));
  const md = await discoverIssuerMetadata({ issuer: ISSUER, fetch: rec.fetch });
  assert.equal(md.tokenEndpoint, `${ISSUER}/token`);
  assert.equal(rec.requests.length, 1);
  assert.equal(rec.requests[0]?.url, `${ISSUER}/.well-known/openid-configuration`);
  assert.equal(rec.requests[0]?.method, 'GET');
  assert.equal(rec.requests[0]?.redirect, 'manual');
});

test('discoverIssuerMetadata() maps failures to ERR_OAUTH_METADATA or ERR_HUB_UNREACHABLE', async () => {
  const cases: [string, OAuthFetch, string][] = [
    ['404', async () => jsonResponse(404, {}), 'ERR_OAUTH_METADATA'],
    [
      'redirect',
      async () => new Response(null, { status: 302, headers: { location: 'https://evil.test/' } }),
      'ERR_OAUTH_METADATA',
    ],
    ['not JSON', async () => new Response('<html>', { status: 200 }), 'ERR_OAUTH_METADATA'],
    ['wrong issuer', async () => jsonResponse(200, metadataJson(OTHER_ISSUER)), 'ERR_OAUTH_METADATA'],
    [
      'network',
      async () => {
        throw Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } });
      },
      'ERR_HUB_UNREACHABLE',
    ],
    [
      'adapter error',
      async () => {
        throw new CompanionError('ERR_TLS_CA');
      },
      'ERR_TLS_CA',
    ],
  ];
  for (const [name, fetch, code] of cases) {
    await assert.rejects(discoverIssuerMetadata({ issuer: ISSUER, fetch }), { code }, name);
  }
});

// --- Authorization URL --------------------------------------------------------------------------

test('buildAuthorizationUrl() puts the code flow, PKCE S256, state, scope and loopback redirect on the endpoint', () => {
  const s = signIn();
  const url = buildAuthorizationUrl({
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    scope: SCOPE,
    state: s.state,
    codeChallenge: s.pkce.challenge,
    prompt: 'consent',
  });
  assert.equal(url.origin + url.pathname, `${ISSUER}/auth`);
  const p = url.searchParams;
  assert.deepEqual(Object.fromEntries(p), {
    response_type: 'code',
    client_id: CLIENT_ID,
    redirect_uri: s.redirectUri,
    scope: 'openid models:read',
    state: s.state,
    code_challenge: s.pkce.challenge,
    code_challenge_method: 'S256',
    prompt: 'consent',
  });
  assert.ok(!url.href.includes(s.pkce.verifier.reveal()));
});

test('buildAuthorizationUrl() keeps a query on the endpoint and overrides parameters of the same name', () => {
  const md = parseIssuerMetadata(
    metadataJson(ISSUER, { authorization_endpoint: `${ISSUER}/auth?tenant=a&state=evil` }),
    ISSUER,
  );
  const s = signIn();
  const url = buildAuthorizationUrl({
    issuerMetadata: md,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    scope: SCOPE,
    state: s.state,
    codeChallenge: s.pkce.challenge,
  });
  assert.equal(url.searchParams.get('tenant'), 'a');
  assert.deepEqual(url.searchParams.getAll('state'), [s.state]);
});

test('buildAuthorizationUrl() refuses a non-loopback redirect, a weak state or challenge, no scope and unvalidated metadata', () => {
  const s = signIn();
  const base = {
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    scope: SCOPE as readonly string[],
    state: s.state,
    codeChallenge: s.pkce.challenge,
  };
  const cases: [string, Record<string, unknown>, string][] = [
    ['localhost', { redirectUri: 'http://localhost:49152/callback' }, 'ERR_OAUTH_REDIRECT_URI'],
    ['https redirect', { redirectUri: 'https://app.example/cb' }, 'ERR_OAUTH_REDIRECT_URI'],
    ['short state', { state: 'abc' }, 'ERR_INVALID_ARG_VALUE'],
    ['plain challenge', { codeChallenge: s.pkce.verifier.reveal().slice(0, 40) }, 'ERR_INVALID_ARG_VALUE'],
    ['empty scope', { scope: [] }, 'ERR_INVALID_ARG_VALUE'],
    ['scope with space', { scope: ['a b'] }, 'ERR_INVALID_ARG_VALUE'],
    ['raw metadata', { issuerMetadata: { ...s.metadata } }, 'ERR_INVALID_ARG_VALUE'],
    ['bad prompt', { prompt: 'none' }, 'ERR_INVALID_ARG_VALUE'],
  ];
  for (const [name, change, code] of cases) {
    assert.throws(
      () => buildAuthorizationUrl({ ...base, ...change } as Parameters<typeof buildAuthorizationUrl>[0]),
      { code },
      name,
    );
  }
});

// --- Authorization response ---------------------------------------------------------------------

test('validateAuthorizationResponse() accepts the valid callback and hides the code', () => {
  const s = signIn();
  const callback = s.validate();
  assert.ok(isValidatedCallback(callback));
  assert.equal(callback.issuer, ISSUER);
  for (const shown of [
    String(callback),
    JSON.stringify(callback),
    inspect(callback, { showHidden: true, depth: Infinity }),
  ]) {
    assert.ok(!shown.includes(CODE), shown);
  }
  assert.ok(!isValidatedCallback({ ...callback }));
});

function withParams(base: URL, change: (p: URLSearchParams) => void): URL {
  const url = new URL(base);
  change(url.searchParams);
  return url;
}

test('validateAuthorizationResponse() refuses each bad callback with its code', () => {
  const s = signIn();
  const cases: [string, URL | string, string][] = [
    ['state missing', withParams(s.callbackUrl, (p) => p.delete('state')), 'ERR_OAUTH_STATE_MISMATCH'],
    ['state different', withParams(s.callbackUrl, (p) => p.set('state', createState())), 'ERR_OAUTH_STATE_MISMATCH'],
    ['state empty', withParams(s.callbackUrl, (p) => p.set('state', '')), 'ERR_OAUTH_STATE_MISMATCH'],
    [
      'state prefix',
      withParams(s.callbackUrl, (p) => p.set('state', s.state.slice(0, -1))),
      'ERR_OAUTH_STATE_MISMATCH',
    ],
    ['iss missing', withParams(s.callbackUrl, (p) => p.delete('iss')), 'ERR_OAUTH_ISSUER_MISSING'],
    ['iss empty', withParams(s.callbackUrl, (p) => p.set('iss', '')), 'ERR_OAUTH_ISSUER_MISSING'],
    ['iss other', withParams(s.callbackUrl, (p) => p.set('iss', OTHER_ISSUER)), 'ERR_OAUTH_ISSUER_MISMATCH'],
    ['iss trailing slash', withParams(s.callbackUrl, (p) => p.set('iss', `${ISSUER}/`)), 'ERR_OAUTH_ISSUER_MISMATCH'],
    ['iss case', withParams(s.callbackUrl, (p) => p.set('iss', ISSUER.toUpperCase())), 'ERR_OAUTH_ISSUER_MISMATCH'],
    ['code twice', withParams(s.callbackUrl, (p) => p.append('code', 'other')), 'ERR_OAUTH_DUPLICATE_PARAM'],
    ['state twice', withParams(s.callbackUrl, (p) => p.append('state', s.state)), 'ERR_OAUTH_DUPLICATE_PARAM'],
    ['iss twice', withParams(s.callbackUrl, (p) => p.append('iss', ISSUER)), 'ERR_OAUTH_DUPLICATE_PARAM'],
    [
      'unknown twice',
      withParams(s.callbackUrl, (p) => {
        p.append('x', '1');
        p.append('x', '2');
      }),
      'ERR_OAUTH_DUPLICATE_PARAM',
    ],
    [
      'error',
      withParams(s.callbackUrl, (p) => {
        p.delete('code');
        p.set('error', 'access_denied');
      }),
      'ERR_OAUTH_AUTHORIZATION_DENIED',
    ],
    ['code missing', withParams(s.callbackUrl, (p) => p.delete('code')), 'ERR_OAUTH_CODE_MISSING'],
    ['code empty', withParams(s.callbackUrl, (p) => p.set('code', '')), 'ERR_OAUTH_CODE_MISSING'],
    ['implicit token', withParams(s.callbackUrl, (p) => p.set('access_token', 'x')), 'ERR_OAUTH_CALLBACK_MALFORMED'],
    ['hybrid id_token', withParams(s.callbackUrl, (p) => p.set('id_token', 'x')), 'ERR_OAUTH_CALLBACK_MALFORMED'],
    ['JARM response', withParams(s.callbackUrl, (p) => p.set('response', 'x')), 'ERR_OAUTH_CALLBACK_MALFORMED'],
    [
      'over-long code',
      withParams(s.callbackUrl, (p) => p.set('code', 'c'.repeat(5000))),
      'ERR_OAUTH_CALLBACK_MALFORMED',
    ],
    ['not a URL', 'not a url', 'ERR_OAUTH_CALLBACK_MALFORMED'],
  ];
  for (const [name, url, code] of cases) assert.throws(() => s.validate(url), { code }, name);
});

test('validateAuthorizationResponse() checks iss before state and state before error, so a forged error cannot end a sign-in', () => {
  const s = signIn();
  const forgedError = withParams(s.callbackUrl, (p) => {
    p.delete('code');
    p.set('error', 'access_denied');
    p.set('state', 'forged-state-value-123456');
  });
  assert.throws(() => s.validate(forgedError), { code: 'ERR_OAUTH_STATE_MISMATCH' });
  const bothWrong = withParams(s.callbackUrl, (p) => {
    p.set('iss', OTHER_ISSUER);
    p.set('state', 'x');
  });
  assert.throws(() => s.validate(bothWrong), { code: 'ERR_OAUTH_ISSUER_MISMATCH' });
});

test('validateAuthorizationResponse() surfaces error and error_description sanitised, truncated and without the code', () => {
  const s = signIn();
  const url = withParams(s.callbackUrl, (p) => {
    p.set('error', 'access_denied\u001b[31m');
    p.set('error_description', `the user said no \u0007 ${CODE} ${'x'.repeat(400)}`);
  });
  const error = (() => {
    try {
      s.validate(url);
    } catch (e) {
      return e as CompanionError;
    }
    return assert.fail('no error');
  })();
  assert.equal(error.code, 'ERR_OAUTH_AUTHORIZATION_DENIED');
  assert.equal(error.detail?.error, 'access_denied?[31m');
  const description = String(error.detail?.errorDescription);
  assert.ok(description.startsWith('the user said no ? [redacted] xxx'), description);
  assert.ok(description.length <= 203);
  assert.ok(!description.includes(CODE));
  assert.equal(error.cause, undefined);
});

test('validateAuthorizationResponse() refuses metadata for another issuer than expected with ERR_OAUTH_METADATA', () => {
  const s = signIn();
  assert.throws(
    () =>
      validateAuthorizationResponse({
        callbackUrl: s.callbackUrl,
        expectedState: s.state,
        expectedIssuer: OTHER_ISSUER,
        issuerMetadata: s.metadata,
        clientId: CLIENT_ID,
      }),
    { code: 'ERR_OAUTH_METADATA' },
  );
});

test('sanitizeOAuthText() keeps the RFC 6749 error charset, redacts given values and truncates', () => {
  assert.equal(sanitizeOAuthText('invalid_grant', 64), 'invalid_grant');
  assert.equal(sanitizeOAuthText('a"b\\c\u00e9\n', 64), 'a?b?c??');
  assert.equal(sanitizeOAuthText('abcdef', 3), 'abc...');
  assert.equal(sanitizeOAuthText('xx SECRET yy', 64, ['SECRET']), 'xx [redacted] yy');
});

// --- Token exchange -----------------------------------------------------------------------------

function exchange(s: ReturnType<typeof signIn>, fetch: OAuthFetch, extra: Record<string, unknown> = {}) {
  return exchangeAuthorizationCode({
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    callback: s.validate(),
    verifier: s.pkce.verifier,
    fetch,
    requestedScope: SCOPE,
    scopeCeiling: CEILING,
    now: () => NOW,
    ...extra,
  } as Parameters<typeof exchangeAuthorizationCode>[0]);
}

test('exchangeAuthorizationCode() posts the code, verifier and redirect URI as a public client and returns the checked token set', async () => {
  const s = signIn();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  const set = await exchange(s, rec.fetch);
  assert.equal(rec.requests.length, 1);
  const r = rec.requests[0]!;
  assert.equal(r.url, `${ISSUER}/token`);
  assert.equal(r.method, 'POST');
  assert.equal(r.redirect, 'manual');
  assert.equal(r.headers.authorization, undefined);
  assert.deepEqual(Object.fromEntries(r.body), {
    redirect_uri: s.redirectUri,
    code: CODE,
    code_verifier: s.pkce.verifier.reveal(),
    grant_type: 'authorization_code',
    client_id: CLIENT_ID,
  });
  assert.equal(set.accessToken.reveal(), ACCESS_TOKEN);
  assert.equal(set.refreshToken?.reveal(), REFRESH_TOKEN);
  assert.equal(set.expiresAt, NOW + 3600_000);
  assert.deepEqual(set.scope, ['openid', 'models:read']);
  assert.deepEqual(set.idTokenClaims, { sub: 'user-42', name: 'Ada' });
  assert.ok(!inspect(set, { depth: Infinity }).includes(ACCESS_TOKEN));
  assert.ok(!JSON.stringify(set).includes(REFRESH_TOKEN));
});

test('exchangeAuthorizationCode() treats an omitted scope as the requested scope (RFC 6749 §5.1)', async () => {
  const set = await exchange(signIn(), recordingFetch(() => jsonResponse(200, tokenBody({ scope: undefined }))).fetch);
  assert.deepEqual(set.scope, ['openid', 'models:read']);
});

test('exchangeAuthorizationCode() accepts a narrower grant and no refresh token', async () => {
  const set = await exchange(
    signIn(),
    recordingFetch(() => jsonResponse(200, tokenBody({ scope: 'openid', refresh_token: undefined }))).fetch,
  );
  assert.deepEqual(set.scope, ['openid']);
  assert.equal(set.refreshToken, null);
});

test('exchangeAuthorizationCode() refuses each bad token response with its code', async () => {
  const iat = Math.floor(NOW / 1000);
  const cases: [string, () => Response, string][] = [
    ['token_type mac', () => jsonResponse(200, tokenBody({ token_type: 'mac' })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['token_type DPoP', () => jsonResponse(200, tokenBody({ token_type: 'DPoP' })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['no token_type', () => jsonResponse(200, tokenBody({ token_type: undefined })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['no access_token', () => jsonResponse(200, tokenBody({ access_token: undefined })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['empty access_token', () => jsonResponse(200, tokenBody({ access_token: '' })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    [
      'huge access_token',
      () => jsonResponse(200, tokenBody({ access_token: 'a'.repeat(20_000) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    ['no expires_in', () => jsonResponse(200, tokenBody({ expires_in: undefined })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['expires_in 0', () => jsonResponse(200, tokenBody({ expires_in: 0 })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['expires_in negative', () => jsonResponse(200, tokenBody({ expires_in: -5 })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['expires_in fraction', () => jsonResponse(200, tokenBody({ expires_in: 1.5 })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    [
      'expires_in ten years',
      () => jsonResponse(200, tokenBody({ expires_in: 315_360_000 })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    ['expires_in text', () => jsonResponse(200, tokenBody({ expires_in: 'soon' })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['empty refresh_token', () => jsonResponse(200, tokenBody({ refresh_token: '' })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    ['scope not a string', () => jsonResponse(200, tokenBody({ scope: ['openid'] })), 'ERR_OAUTH_TOKEN_RESPONSE'],
    [
      'more scope than asked',
      () => jsonResponse(200, tokenBody({ scope: 'openid models:read offline_access' })),
      'ERR_OAUTH_SCOPE_EXCEEDED',
    ],
    ['scope beyond ceiling', () => jsonResponse(200, tokenBody({ scope: 'openid admin' })), 'ERR_OAUTH_SCOPE_EXCEEDED'],
    [
      'openid without id_token',
      () => jsonResponse(200, tokenBody({ id_token: undefined })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'id_token for another client',
      () => jsonResponse(200, tokenBody({ id_token: idToken({ aud: 'someone-else' }) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'id_token from another issuer',
      () => jsonResponse(200, tokenBody({ id_token: idToken({ iss: OTHER_ISSUER }) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'id_token expired at the injected clock',
      () => jsonResponse(200, tokenBody({ id_token: idToken({ iat: iat - 7200, exp: iat - 3600 }) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'id_token with nonce never sent',
      () => jsonResponse(200, tokenBody({ id_token: idToken({ nonce: 'n' }) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'id_token alg none',
      () => jsonResponse(200, tokenBody({ id_token: idToken({}, { alg: 'none' }) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'id_token HS256',
      () => jsonResponse(200, tokenBody({ id_token: idToken({}, { alg: 'HS256' }) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'id_token without sub',
      () => jsonResponse(200, tokenBody({ id_token: idToken({ sub: undefined }) })),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'invalid_grant',
      () => jsonResponse(400, { error: 'invalid_grant', error_description: 'grant request is invalid' }),
      'ERR_OAUTH_TOKEN_ERROR',
    ],
    ['invalid_client', () => jsonResponse(401, { error: 'invalid_client' }), 'ERR_OAUTH_TOKEN_ERROR'],
    [
      'challenge',
      () => new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } }),
      'ERR_OAUTH_TOKEN_ERROR',
    ],
    ['server error', () => new Response('oops', { status: 500 }), 'ERR_OAUTH_TOKEN_RESPONSE'],
    [
      'redirect',
      () => new Response(null, { status: 302, headers: { location: 'https://evil.test/token' } }),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    [
      'html 200',
      () => new Response('<html>', { status: 200, headers: { 'content-type': 'text/html' } }),
      'ERR_OAUTH_TOKEN_RESPONSE',
    ],
    ['json array', () => jsonResponse(200, [tokenBody()]), 'ERR_OAUTH_TOKEN_RESPONSE'],
  ];
  for (const [name, answer, code] of cases) {
    await assert.rejects(
      exchange(signIn(), recordingFetch(answer).fetch),
      (error: unknown) => {
        assert.equal((error as CompanionError).code, code, name);
        assert.equal((error as Error).cause, undefined, name);
        return true;
      },
      name,
    );
  }
});

test('exchangeAuthorizationCode() reports the OAuth error name and status in detail', async () => {
  await assert.rejects(
    exchange(
      signIn(),
      recordingFetch(() => jsonResponse(400, { error: 'invalid_grant', error_description: 'expired' })).fetch,
    ),
    {
      code: 'ERR_OAUTH_TOKEN_ERROR',
      detail: { status: 400, error: 'invalid_grant', errorDescription: 'expired' },
    },
  );
});

test("exchangeAuthorizationCode() and discoverIssuerMetadata() accept the Response class of undici's own fetch", async () => {
  const undiciJson = (status: number, body: unknown) =>
    new UndiciResponse(JSON.stringify(body), {
      status,
      headers: { 'content-type': 'application/json' },
    }) as unknown as Response;
  const md = await discoverIssuerMetadata({ issuer: ISSUER, fetch: async () => undiciJson(200, metadataJson()) });
  assert.equal(md.issuer, ISSUER);
  const set = await exchange(signIn(), async () => undiciJson(200, tokenBody()));
  assert.equal(set.accessToken.reveal(), ACCESS_TOKEN);
  await assert.rejects(
    exchange(signIn(), async () => undiciJson(500, {})),
    { code: 'ERR_OAUTH_TOKEN_RESPONSE', detail: { library: 'OAUTH_RESPONSE_IS_NOT_CONFORM', status: 500 } },
  );
});

test('exchangeAuthorizationCode() refuses a requested scope beyond the ceiling before sending anything', async () => {
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  await assert.rejects(exchange(signIn(), rec.fetch, { requestedScope: ['openid', 'admin'] }), {
    code: 'ERR_OAUTH_SCOPE_EXCEEDED',
  });
  assert.equal(rec.requests.length, 0);
});

test("exchangeAuthorizationCode() maps a failing fetch to ERR_HUB_UNREACHABLE and passes the adapter's coded errors up", async () => {
  await assert.rejects(
    exchange(signIn(), async () => {
      throw Object.assign(new TypeError('fetch failed'), { cause: { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' } });
    }),
    {
      code: 'ERR_HUB_UNREACHABLE',
      detail: { reason: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
    },
  );
  await assert.rejects(
    exchange(signIn(), async () => {
      throw new CompanionError('ERR_TLS_CA');
    }),
    { code: 'ERR_TLS_CA' },
  );
  await assert.rejects(exchange(signIn(), (async () => 'not a response') as unknown as OAuthFetch), {
    code: 'ERR_HUB_UNREACHABLE',
  });
});

test('exchangeAuthorizationCode() uses a validated callback once only and refuses anything else', async () => {
  const s = signIn();
  const callback = s.validate();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  const args = {
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    verifier: s.pkce.verifier,
    fetch: rec.fetch,
    requestedScope: SCOPE,
    scopeCeiling: CEILING,
    now: () => NOW,
  };
  await exchangeAuthorizationCode({ ...args, callback });
  assert.ok(!isValidatedCallback(callback));
  await assert.rejects(exchangeAuthorizationCode({ ...args, callback }), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(
    exchangeAuthorizationCode({ ...args, callback: { kind: 'validated-authorization-response', issuer: ISSUER } }),
    { code: 'ERR_INVALID_ARG_VALUE' },
  );
  await assert.rejects(
    exchangeAuthorizationCode({
      ...args,
      callback: s.validate(),
      verifier: s.pkce.verifier.reveal() as unknown as Secret,
    }),
    { code: 'ERR_INVALID_ARG_VALUE' },
  );
  await assert.rejects(
    exchangeAuthorizationCode({ ...args, callback: s.validate(), redirectUri: 'http://localhost:49152/callback' }),
    { code: 'ERR_OAUTH_REDIRECT_URI' },
  );
  assert.equal(rec.requests.length, 1);
});

test('exchangeAuthorizationCode() refuses a callback validated for another client', async () => {
  const s = signIn();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  await assert.rejects(
    exchangeAuthorizationCode({
      issuerMetadata: s.metadata,
      clientId: 'another-client',
      redirectUri: s.redirectUri,
      callback: s.validate(),
      verifier: s.pkce.verifier,
      fetch: rec.fetch,
      requestedScope: SCOPE,
      scopeCeiling: CEILING,
      now: () => NOW,
    }),
    { code: 'ERR_OAUTH_ISSUER_MISMATCH' },
  );
  assert.equal(rec.requests.length, 0);
});

// --- Refresh ------------------------------------------------------------------------------------

function refresh(fetch: OAuthFetch, extra: Record<string, unknown> = {}) {
  return refreshTokens({
    issuerMetadata: metadata(),
    clientId: CLIENT_ID,
    refreshToken: new Secret(REFRESH_TOKEN),
    fetch,
    requestedScope: SCOPE,
    scopeCeiling: CEILING,
    now: () => NOW,
    ...extra,
  } as Parameters<typeof refreshTokens>[0]);
}

test('refreshTokens() posts the refresh token and scope and returns the rotated refresh token', async () => {
  const rec = recordingFetch(() =>
    jsonResponse(200, tokenBody({ refresh_token: ROTATED_REFRESH_TOKEN, id_token: undefined })),
  );
  const set = await refresh(rec.fetch);
  assert.deepEqual(Object.fromEntries(rec.requests[0]!.body), {
    scope: 'openid models:read',
    refresh_token: REFRESH_TOKEN,
    grant_type: 'refresh_token',
    client_id: CLIENT_ID,
  });
  assert.equal(set.refreshToken?.reveal(), ROTATED_REFRESH_TOKEN);
  assert.equal(set.idTokenClaims, undefined);
});

test('refreshTokens() returns refreshToken null when the hub does not rotate', async () => {
  const set = await refresh(recordingFetch(() => jsonResponse(200, tokenBody({ refresh_token: undefined }))).fetch);
  assert.equal(set.refreshToken, null);
});

test('refreshTokens() maps invalid_grant to ERR_OAUTH_REFRESH_REFUSED and other errors to ERR_OAUTH_TOKEN_ERROR', async () => {
  await assert.rejects(refresh(recordingFetch(() => jsonResponse(400, { error: 'invalid_grant' })).fetch), {
    code: 'ERR_OAUTH_REFRESH_REFUSED',
  });
  await assert.rejects(refresh(recordingFetch(() => jsonResponse(400, { error: 'invalid_scope' })).fetch), {
    code: 'ERR_OAUTH_TOKEN_ERROR',
  });
  await assert.rejects(
    refresh(recordingFetch(() => jsonResponse(200, tokenBody({ scope: 'openid models:read models:write' }))).fetch),
    { code: 'ERR_OAUTH_SCOPE_EXCEEDED' },
  );
});

// --- Revocation ---------------------------------------------------------------------------------

test('revokeToken() posts the token and its hint to the revocation endpoint', async () => {
  const rec = recordingFetch(() => new Response(null, { status: 200 }));
  const done = await revokeToken({
    issuerMetadata: metadata(),
    clientId: CLIENT_ID,
    token: new Secret(REFRESH_TOKEN),
    fetch: rec.fetch,
    tokenTypeHint: 'refresh_token',
  });
  assert.equal(done, true);
  assert.equal(rec.requests[0]?.url, `${ISSUER}/token/revocation`);
  assert.deepEqual(Object.fromEntries(rec.requests[0]!.body), {
    token_type_hint: 'refresh_token',
    token: REFRESH_TOKEN,
    client_id: CLIENT_ID,
  });
});

test('revokeToken() returns false without a request when the hub has no revocation endpoint, and maps errors', async () => {
  const rec = recordingFetch(() => new Response(null, { status: 200 }));
  const md = parseIssuerMetadata(metadataJson(ISSUER, { revocation_endpoint: undefined }), ISSUER);
  assert.equal(
    await revokeToken({ issuerMetadata: md, clientId: CLIENT_ID, token: new Secret(REFRESH_TOKEN), fetch: rec.fetch }),
    false,
  );
  assert.equal(rec.requests.length, 0);
  await assert.rejects(
    revokeToken({
      issuerMetadata: metadata(),
      clientId: CLIENT_ID,
      token: new Secret(REFRESH_TOKEN),
      fetch: recordingFetch(() => jsonResponse(400, { error: 'unsupported_token_type' })).fetch,
    }),
    { code: 'ERR_OAUTH_TOKEN_ERROR' },
  );
});
