// The sign-in flow driver against the reference hub over real TLS: discovery, the one-shot loopback
// listener, the hub's pages (driven by the dev browser), the code exchange, custody, refresh, sign-out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startCompanionHub } from '../helpers/companion-hub.js';
import { freshAccessToken } from '../../src/authority/signin.js';

function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

test('signIn() signs in through the hub, stores tokens in custody and closes its listener', async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  let opened = '';
  const result = await authority.signIn({ openBrowser: ch.browser(), onOpen: (url) => (opened = url) });
  assert.match(opened, /^https:\/\/127\.0\.0\.1:\d+\/api\/v1\/auth\/native\/auth\?/);
  const redirect = new URL(new URL(opened).searchParams.get('redirect_uri')!);
  assert.equal(redirect.hostname, '127.0.0.1');
  assert.equal(new URL(opened).searchParams.get('code_challenge_method'), 'S256');
  assert.ok(await portClosed(Number(redirect.port)), 'the redirect listener is closed after the flow');
  assert.deepEqual([...result.scope].sort(), ['companion:manifest', 'offline_access', 'openid']);
  const state = await authority.state();
  assert.equal(state.signedIn, true);
  assert.equal(state.subject, ch.hub.user);
});

test('fetchManifest() fetches and verifies the hub manifest with the access token', async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  const manifest = await authority.fetchManifest();
  assert.equal(manifest.issuer, ch.hub.issuer);
  assert.equal(manifest.version, ch.hub.manifestVersion);
  assert.deepEqual(
    manifest.models.map((m) => m.id),
    ch.hub.models.map((m) => m.id),
  );
});

test('fetchManifest() refuses a manifest signed by a key that is not pinned (P-h)', async (t) => {
  const ch = await startCompanionHub(t);
  const other = await startCompanionHub(t);
  const authority = ch.authority({ manifestKeys: other.hub.manifestKey });
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  await assert.rejects(authority.fetchManifest(), { code: 'ERR_MANIFEST_UNKNOWN_KEY' });
});

test('freshAccessToken() refreshes with rotation; a reused refresh token signs out cleanly', async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  const first = await authority.custody.refreshToken();
  const options = { client: authority.client, fetch: ch.fetch as never, custody: authority.custody };
  const refreshed = await freshAccessToken(options, true);
  const second = await authority.custody.refreshToken();
  assert.ok(first !== null && second !== null && refreshed !== null);
  assert.notEqual(first.reveal(), second.reveal(), 'the refresh token rotated');
  // Put the old (already used) refresh token back: the hub sees a reuse and revokes the grant.
  await authority.custody.storeTokens({
    accessToken: refreshed,
    refreshToken: first,
    expiresAt: 0,
    scope: ['openid', 'offline_access', 'companion:manifest'],
  });
  await assert.rejects(freshAccessToken(options, true), { code: 'ERR_OAUTH_REFRESH_REFUSED' });
  assert.equal((await authority.state()).signedIn, false, 'a refused refresh signs out');
});

test('signOut() revokes at the hub and deletes every keychain item', async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  await authority.rotateLoopbackToken();
  const outcome = await authority.signOut();
  assert.deepEqual(outcome, { revoked: true, failedAccounts: [], keychainCodes: [] });
  for (const account of ['refresh-token', 'access-token', 'loopback-token', 'installation-id'] as const) {
    assert.equal(await authority.keychain.get(account), null, account);
  }
});

test('signIn() ends with ERR_OAUTH_AUTHORIZATION_DENIED when the user denies consent', async (t) => {
  const ch = await startCompanionHub(t);
  const authority = ch.authority();
  let port = 0;
  await assert.rejects(
    authority.signIn({
      openBrowser: ch.browser('deny'),
      onOpen: (url) => (port = Number(new URL(new URL(url).searchParams.get('redirect_uri')!).port)),
    }),
    { code: 'ERR_OAUTH_AUTHORIZATION_DENIED' },
  );
  assert.ok(await portClosed(port));
  assert.equal((await authority.state()).signedIn, false);
});
