// P-e mix-up / wrong issuer: the RFC 9207 `iss` check and the pinned metadata issuer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exchangeAuthorizationCode, parseIssuerMetadata, validateAuthorizationResponse } from '../../src/core/oauth.js';
import {
  CEILING,
  CLIENT_ID,
  ISSUER,
  NOW,
  OTHER_ISSUER,
  SCOPE,
  idToken,
  jsonResponse,
  metadata,
  metadataJson,
  recordingFetch,
  signIn,
  tokenBody,
} from '../helpers/oauth-fixtures.js';

function withIss(base: URL, iss: string | null): URL {
  const url = new URL(base);
  if (iss === null) url.searchParams.delete('iss');
  else url.searchParams.set('iss', iss);
  return url;
}

test('P-e a callback whose iss names another issuer is refused (mix-up)', () => {
  const s = signIn();
  assert.throws(() => s.validate(withIss(s.callbackUrl, OTHER_ISSUER)), { code: 'ERR_OAUTH_ISSUER_MISMATCH' });
});

test('P-e issuer look-alikes are refused: exact string comparison (RFC 9207 §2.4)', () => {
  const s = signIn();
  for (const iss of [
    `${ISSUER}/`,
    'https://HUB.test',
    'https://hub.test:443',
    'https://hub.test/x',
    'https://user@hub.test',
    'http://hub.test',
    ' https://hub.test',
    'https://hub.test.evil.test',
  ]) {
    assert.throws(() => s.validate(withIss(s.callbackUrl, iss)), { code: 'ERR_OAUTH_ISSUER_MISMATCH' }, iss);
  }
});

test('P-e a callback without iss is refused because the hub promises it', () => {
  const s = signIn();
  assert.throws(() => s.validate(withIss(s.callbackUrl, null)), { code: 'ERR_OAUTH_ISSUER_MISSING' });
});

test('P-e metadata naming another issuer, or not promising iss, is refused', () => {
  assert.throws(() => parseIssuerMetadata(metadataJson(OTHER_ISSUER), ISSUER), { code: 'ERR_OAUTH_METADATA' });
  assert.throws(
    () => parseIssuerMetadata(metadataJson(ISSUER, { authorization_response_iss_parameter_supported: false }), ISSUER),
    { code: 'ERR_OAUTH_METADATA' },
  );
});

test('P-e a callback is validated only against the metadata of the expected issuer', () => {
  const s = signIn();
  const evil = metadata(OTHER_ISSUER);
  const url = withIss(s.callbackUrl, OTHER_ISSUER);
  // Even when the attacker's metadata and iss agree with each other, the pinned issuer decides.
  assert.throws(
    () =>
      validateAuthorizationResponse({
        callbackUrl: url,
        expectedState: s.state,
        expectedIssuer: ISSUER,
        issuerMetadata: evil,
        clientId: CLIENT_ID,
      }),
    { code: 'ERR_OAUTH_METADATA' },
  );
});

test("P-e a code validated for one hub is never sent to another hub's token endpoint", async () => {
  const s = signIn();
  const callback = s.validate();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody()));
  await assert.rejects(
    exchangeAuthorizationCode({
      issuerMetadata: metadata(OTHER_ISSUER),
      clientId: CLIENT_ID,
      redirectUri: s.redirectUri,
      callback,
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

test('P-e an ID token issued by another issuer is refused and nothing is returned', async () => {
  const s = signIn();
  const rec = recordingFetch(() => jsonResponse(200, tokenBody({ id_token: idToken({ iss: OTHER_ISSUER }) })));
  await assert.rejects(
    exchangeAuthorizationCode({
      issuerMetadata: s.metadata,
      clientId: CLIENT_ID,
      redirectUri: s.redirectUri,
      callback: s.validate(),
      verifier: s.pkce.verifier,
      fetch: rec.fetch,
      requestedScope: SCOPE,
      scopeCeiling: CEILING,
      now: () => NOW,
    }),
    { code: 'ERR_OAUTH_TOKEN_RESPONSE' },
  );
});
