// P-d authorization-code interception: PKCE S256, state, a one-shot callback, loopback-only redirect URIs.
// The pure core is exercised with a recording fetch (the token endpoint's side is the hub's own test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  buildAuthorizationUrl,
  buildLoopbackRedirectUri,
  createPkcePair,
  createState,
  exchangeAuthorizationCode,
  parseLoopbackRedirectUri,
} from '../../src/core/oauth.js';
import {
  CEILING,
  CLIENT_ID,
  ISSUER,
  NOW,
  SCOPE,
  jsonResponse,
  recordingFetch,
  signIn,
  tokenBody,
} from '../helpers/oauth-fixtures.js';

function withParams(base: URL, change: (p: URLSearchParams) => void): URL {
  const url = new URL(base);
  change(url.searchParams);
  return url;
}

test('P-d the authorization URL carries an S256 challenge of the verifier and never the verifier itself', () => {
  const s = signIn();
  const url = buildAuthorizationUrl({
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    scope: SCOPE,
    state: s.state,
    codeChallenge: s.pkce.challenge,
  });
  assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(
    url.searchParams.get('code_challenge'),
    createHash('sha256').update(s.pkce.verifier.reveal()).digest('base64url'),
  );
  assert.ok(!url.href.includes(s.pkce.verifier.reveal()));
});

test('P-d every sign-in gets a fresh state and verifier', () => {
  const states = new Set<string>();
  const verifiers = new Set<string>();
  for (let i = 0; i < 1000; i += 1) {
    states.add(createState());
    verifiers.add(createPkcePair().verifier.reveal());
  }
  assert.equal(states.size, 1000);
  assert.equal(verifiers.size, 1000);
});

test('P-d a callback with another state, or none, is refused and no token request is made', async () => {
  const s = signIn();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  for (const url of [
    withParams(s.callbackUrl, (p) => p.set('state', createState())),
    withParams(s.callbackUrl, (p) => p.delete('state')),
  ]) {
    assert.throws(() => s.validate(url), { code: 'ERR_OAUTH_STATE_MISMATCH' });
  }
  assert.equal(rec.requests.length, 0);
});

test('P-d a forged error response with a wrong state cannot end the sign-in', () => {
  const s = signIn();
  const forged = withParams(s.callbackUrl, (p) => {
    p.delete('code');
    p.set('error', 'access_denied');
    p.set('state', createState());
  });
  assert.throws(() => s.validate(forged), { code: 'ERR_OAUTH_STATE_MISMATCH' });
});

test('P-d an injected second code (duplicate parameter) is refused', () => {
  const s = signIn();
  assert.throws(() => s.validate(withParams(s.callbackUrl, (p) => p.append('code', 'attacker-code'))), {
    code: 'ERR_OAUTH_DUPLICATE_PARAM',
  });
  const front = new URL(s.redirectUri);
  front.search = `code=attacker-code&${s.callbackUrl.searchParams.toString()}`;
  assert.throws(() => s.validate(front), { code: 'ERR_OAUTH_DUPLICATE_PARAM' });
});

test('P-d a validated callback is one-shot: the code cannot be exchanged twice', async () => {
  const s = signIn();
  const callback = s.validate();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  const args = {
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    callback,
    verifier: s.pkce.verifier,
    fetch: rec.fetch,
    requestedScope: SCOPE,
    scopeCeiling: CEILING,
    now: () => NOW,
  };
  await exchangeAuthorizationCode(args);
  await assert.rejects(exchangeAuthorizationCode(args), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.equal(rec.requests.length, 1);
});

test('P-d the verifier goes only to the token endpoint, in the POST body, never in a URL', async () => {
  const s = signIn();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  await exchangeAuthorizationCode({
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    callback: s.validate(),
    verifier: s.pkce.verifier,
    fetch: rec.fetch,
    requestedScope: SCOPE,
    scopeCeiling: CEILING,
    now: () => NOW,
  });
  assert.equal(rec.requests.length, 1);
  const request = rec.requests[0]!;
  assert.equal(request.url, `${ISSUER}/token`);
  assert.equal(request.method, 'POST');
  assert.equal(request.redirect, 'manual', 'a redirect of the token request is never followed');
  assert.equal(request.body.get('code_verifier'), s.pkce.verifier.reveal());
  assert.ok(!request.url.includes(s.pkce.verifier.reveal()));
  assert.ok(!JSON.stringify(request.headers).includes(s.pkce.verifier.reveal()));
});

test('P-d redirect URIs are loopback IP literals on the bound port only (RFC 8252 §7.3, §8.3)', () => {
  assert.equal(buildLoopbackRedirectUri(50000, 'callback'), 'http://127.0.0.1:50000/callback');
  assert.throws(() => buildLoopbackRedirectUri(0, 'callback'), { code: 'ERR_OAUTH_REDIRECT_URI' });
  for (const uri of [
    'http://localhost:50000/callback',
    'http://evil.example:50000/callback',
    'http://0.0.0.0:50000/callback',
    'http://127.0.0.1:50000/callback?next=https://evil.example',
  ]) {
    assert.throws(() => parseLoopbackRedirectUri(uri), { code: 'ERR_OAUTH_REDIRECT_URI' }, uri);
  }
  const s = signIn();
  assert.throws(
    () =>
      buildAuthorizationUrl({
        issuerMetadata: s.metadata,
        clientId: CLIENT_ID,
        redirectUri: 'http://localhost:50000/callback',
        scope: SCOPE,
        state: s.state,
        codeChallenge: s.pkce.challenge,
      }),
    { code: 'ERR_OAUTH_REDIRECT_URI' },
  );
});
