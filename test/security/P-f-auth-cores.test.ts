// P-f secret leakage, for the authority cores: no error, result or state of the OAuth core, custody or the
// manifest verifier shows a code, verifier, token, callback parameter or model digest, however printed
// (String, JSON, util.inspect with hidden fields, message, stack, cause, detail).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { exchangeAuthorizationCode, refreshTokens, revokeToken, type OAuthFetch } from '../../src/core/oauth.js';
import { createCustody } from '../../src/core/custody.js';
import { verifyManifest } from '../../src/core/manifest.js';
import { Secret } from '../../src/core/secret.js';
import {
  ACCESS_TOKEN,
  CEILING,
  CLIENT_ID,
  CODE,
  NOW,
  REFRESH_TOKEN,
  SCOPE,
  idToken,
  jsonResponse,
  metadata,
  recordingFetch,
  renderings,
  signIn,
  tokenBody,
} from '../helpers/oauth-fixtures.js';
import { createMemoryKeychain } from '../helpers/memory-keychain.js';
import { payload, signValue, verifyOptions } from '../helpers/manifest-fixtures.js';

const ID_TOKEN = idToken();

function assertClean(value: unknown, secrets: readonly string[], label: string): void {
  for (const shown of renderings(value)) {
    for (const secret of secrets)
      assert.ok(!shown.includes(secret), `${label}: a secret shows in ${shown.slice(0, 200)}`);
  }
}

async function failure(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  return assert.fail('expected a refusal');
}

test('P-f callback refusals carry neither the code nor the state', () => {
  const s = signIn();
  const variants: ((p: URLSearchParams) => void)[] = [
    (p) => p.set('iss', 'https://evil.test'),
    (p) => p.delete('iss'),
    (p) => p.append('code', 'x'),
    (p) => p.set('state', 'wrong-state-value-0123456789'),
    (p) => {
      p.set('error', 'access_denied');
      p.set('error_description', `denied ${CODE} ${s.state}`);
    },
    (p) => p.set('id_token', 'x'),
  ];
  for (const change of variants) {
    const url = new URL(s.callbackUrl);
    change(url.searchParams);
    let error: unknown;
    try {
      s.validate(url);
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof Error);
    assertClean(error, [CODE, s.state], url.search);
  }
});

test('P-f token-exchange refusals carry no code, verifier, token or ID token, even when the library put them on cause', async () => {
  const answers: [string, () => Response][] = [
    ['scope exceeded', () => jsonResponse(200, tokenBody({ scope: 'openid models:read admin' }))],
    [
      'unsupported token type (library puts the body on cause)',
      () => jsonResponse(200, tokenBody({ token_type: 'mac' })),
    ],
    ['bad expires_in (library puts the body on cause)', () => jsonResponse(200, tokenBody({ expires_in: 'x' }))],
    [
      'ID token audience (library puts the claims on cause)',
      () => jsonResponse(200, tokenBody({ id_token: idToken({ aud: 'other' }) })),
    ],
    [
      'error body echoing the code',
      () =>
        jsonResponse(400, {
          error: 'invalid_grant',
          error_description: `code ${CODE} is used`,
          access_token: ACCESS_TOKEN,
        }),
    ],
    ['server error echoing the request', () => new Response(`code=${CODE}`, { status: 500 })],
    ['not JSON', () => new Response(`${ACCESS_TOKEN}`, { status: 200, headers: { 'content-type': 'text/plain' } })],
  ];
  for (const [label, answer] of answers) {
    const s = signIn();
    const error = await failure(() =>
      exchangeAuthorizationCode({
        issuerMetadata: s.metadata,
        clientId: CLIENT_ID,
        redirectUri: s.redirectUri,
        callback: s.validate(),
        verifier: s.pkce.verifier,
        fetch: recordingFetch(answer).fetch,
        requestedScope: SCOPE,
        scopeCeiling: CEILING,
        now: () => NOW,
      }),
    );
    assertClean(error, [CODE, s.pkce.verifier.reveal(), ACCESS_TOKEN, REFRESH_TOKEN, ID_TOKEN, s.state], label);
    assert.equal((error as Error).cause, undefined, label);
  }
});

test('P-f a failing fetch whose error quotes the request body is not passed on', async () => {
  const s = signIn();
  const leaky: OAuthFetch = async (_url, init) => {
    throw Object.assign(new Error(`request failed: ${String(init.body)}`), { code: 'ECONNRESET' });
  };
  const error = await failure(() =>
    exchangeAuthorizationCode({
      issuerMetadata: s.metadata,
      clientId: CLIENT_ID,
      redirectUri: s.redirectUri,
      callback: s.validate(),
      verifier: s.pkce.verifier,
      fetch: leaky,
      requestedScope: SCOPE,
      scopeCeiling: CEILING,
      now: () => NOW,
    }),
  );
  assert.equal((error as { code?: string }).code, 'ERR_HUB_UNREACHABLE');
  assertClean(error, [CODE, s.pkce.verifier.reveal()], 'leaky fetch');
});

test('P-f refresh and revocation refusals carry no token', async () => {
  const refreshError = await failure(() =>
    refreshTokens({
      issuerMetadata: metadata(),
      clientId: CLIENT_ID,
      refreshToken: new Secret(REFRESH_TOKEN),
      fetch: recordingFetch(() => jsonResponse(400, { error: 'invalid_grant', error_description: REFRESH_TOKEN }))
        .fetch,
      requestedScope: SCOPE,
      scopeCeiling: CEILING,
      now: () => NOW,
    }),
  );
  assert.equal((refreshError as { code?: string }).code, 'ERR_OAUTH_REFRESH_REFUSED');
  assertClean(refreshError, [REFRESH_TOKEN], 'refresh');
  const revokeError = await failure(() =>
    revokeToken({
      issuerMetadata: metadata(),
      clientId: CLIENT_ID,
      token: new Secret(REFRESH_TOKEN),
      fetch: recordingFetch(() => jsonResponse(400, { error: 'invalid_request', token: REFRESH_TOKEN })).fetch,
    }),
  );
  assertClean(revokeError, [REFRESH_TOKEN], 'revoke');
});

test('P-f token sets, validated callbacks, PKCE pairs and custody state print no secret', async () => {
  const s = signIn();
  const callback = s.validate();
  assertClean(callback, [CODE], 'callback');
  assertClean(s.pkce, [s.pkce.verifier.reveal()], 'pkce');
  const set = await exchangeAuthorizationCode({
    issuerMetadata: s.metadata,
    clientId: CLIENT_ID,
    redirectUri: s.redirectUri,
    callback,
    verifier: s.pkce.verifier,
    fetch: recordingFetch(() => jsonResponse(200, tokenBody())).fetch,
    requestedScope: SCOPE,
    scopeCeiling: CEILING,
    now: () => NOW,
  });
  assertClean(set, [ACCESS_TOKEN, REFRESH_TOKEN, ID_TOKEN], 'token set');
  const keychain = createMemoryKeychain();
  const custody = createCustody({ keychain, now: () => NOW });
  await custody.storeTokens(set);
  assertClean(await custody.state(), [ACCESS_TOKEN, REFRESH_TOKEN], 'state');
  assertClean(await custody.nextStep(), [ACCESS_TOKEN, REFRESH_TOKEN], 'next step');
  assert.ok(!inspect(custody, { showHidden: true, depth: Infinity }).includes(ACCESS_TOKEN));
});

test('P-f custody errors carry no token, whatever the keychain failure', async () => {
  const set = {
    accessToken: new Secret(ACCESS_TOKEN),
    refreshToken: new Secret(REFRESH_TOKEN),
    expiresAt: NOW + 3600_000,
    scope: ['openid'],
  };
  const keychain = createMemoryKeychain();
  const custody = createCustody({ keychain, now: () => NOW });
  keychain.failNext('set', 'access-token', 'ERR_KEYCHAIN_VALUE_TOO_LARGE');
  const storeError = await failure(() => custody.storeTokens(set));
  assertClean(storeError, [ACCESS_TOKEN, REFRESH_TOKEN], 'store');
  await custody.storeTokens(set);
  keychain.failNext('delete', 'access-token', 'ERR_KEYCHAIN_LOCKED');
  const signOutError = await failure(() => custody.signOut());
  assertClean(signOutError, [ACCESS_TOKEN, REFRESH_TOKEN], 'sign-out');
});

test('P-f manifest refusals show no model digest or URL', () => {
  const digest = 'd'.repeat(64);
  const inputs = [
    signValue(
      payload({
        models: [{ id: 'm', name: 'M', url: 'http://models.hub.test/secret-path.gguf', size: 1, sha256: digest }],
      }),
    ),
    signValue(
      payload({
        models: [
          {
            id: 'm',
            name: 'M',
            url: 'https://models.hub.test/secret-path.gguf',
            size: 1,
            sha256: digest.toUpperCase(),
          },
        ],
      }),
    ),
    signValue(
      payload({
        expiresAt: 1,
        issuedAt: 0,
        models: [{ id: 'm', name: 'M', url: 'https://models.hub.test/secret-path.gguf', size: 1, sha256: digest }],
      }),
    ),
  ];
  for (const input of inputs) {
    let error: unknown;
    try {
      verifyManifest(input, verifyOptions);
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof Error);
    assertClean(error, [digest, digest.toUpperCase(), 'secret-path'], 'manifest');
  }
});
