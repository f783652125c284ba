import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCustody, guardKeychain, DEFAULT_SKEW_MS } from '../../src/core/custody.js';
import { Secret } from '../../src/core/secret.js';
import type { TokenSet } from '../../src/core/oauth.js';
import type { Keychain, KeychainAccount } from '../../src/core/keychain-port.js';
import { createMemoryKeychain } from '../helpers/memory-keychain.js';

const T0 = Date.UTC(2031, 0, 2, 3, 4, 5);
const AT = 'access-token-value-0123456789abcdefghijklmnop';
const RT = 'refresh-token-value-0123456789abcdefghijklmno';
const RT2 = 'refresh-token-rotated-0123456789abcdefghijklm';

function tokenSet(
  overrides: Partial<{
    accessToken: string;
    refreshToken: string | null;
    expiresAt: number;
    scope: string[];
    sub: string;
  }> = {},
): TokenSet {
  const refresh = overrides.refreshToken === undefined ? RT : overrides.refreshToken;
  return {
    accessToken: new Secret(overrides.accessToken ?? AT),
    refreshToken: refresh === null ? null : new Secret(refresh),
    expiresAt: overrides.expiresAt ?? T0 + 3600_000,
    scope: overrides.scope ?? ['openid', 'models:read'],
    idTokenClaims: { sub: overrides.sub ?? 'user-42' },
  };
}

function setup(skewMs?: number) {
  const keychain = createMemoryKeychain();
  const clock = { now: T0 };
  const custody = createCustody({ keychain, now: () => clock.now, ...(skewMs === undefined ? {} : { skewMs }) });
  return { keychain, clock, custody };
}

test('createCustody() stores a token set and hands the access token out while it is fresh', async () => {
  const { custody, clock, keychain } = setup();
  await custody.storeTokens(tokenSet());
  assert.equal((await custody.accessTokenIfFresh())?.reveal(), AT);
  assert.equal(await custody.needsRefresh(), false);
  assert.equal(keychain.items.get('refresh-token'), RT);
  const item = JSON.parse(keychain.items.get('access-token')!) as Record<string, unknown>;
  assert.deepEqual(Object.keys(item).sort(), ['accessToken', 'binding', 'expiresAt', 'scope', 'subject', 'v']);
  assert.equal(item.expiresAt, T0 + 3600_000);
  clock.now = T0 + 3600_000 - DEFAULT_SKEW_MS - 1;
  assert.ok(await custody.accessTokenIfFresh());
  clock.now = T0 + 3600_000 - DEFAULT_SKEW_MS;
  assert.equal(await custody.accessTokenIfFresh(), null);
  assert.equal(await custody.needsRefresh(), true);
});

test('createCustody() honours skewMs', async () => {
  const { custody, clock } = setup(0);
  await custody.storeTokens(tokenSet());
  clock.now = T0 + 3600_000 - 1;
  assert.ok(await custody.accessTokenIfFresh());
  clock.now = T0 + 3600_000;
  assert.equal(await custody.accessTokenIfFresh(), null);
  assert.throws(() => createCustody({ keychain: createMemoryKeychain(), now: () => 0, skewMs: -1 }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
});

test('nextStep() says use, then refresh, then sign-in', async () => {
  const { custody, clock } = setup();
  assert.deepEqual(await custody.nextStep(), { action: 'sign-in' });
  await custody.storeTokens(tokenSet());
  const use = await custody.nextStep();
  assert.equal(use.action, 'use');
  assert.equal(use.action === 'use' ? use.accessToken.reveal() : '', AT);
  clock.now = T0 + 7200_000;
  const next = await custody.nextStep();
  assert.equal(next.action, 'refresh');
  assert.equal(next.action === 'refresh' ? next.refreshToken.reveal() : '', RT);
  await custody.storeTokens(tokenSet({ refreshToken: null, expiresAt: T0 }));
  assert.deepEqual(await custody.nextStep(), { action: 'sign-in' });
});

test('state() reports signed-in, expiry, subject and scope without any token', async () => {
  const { custody, clock } = setup();
  assert.deepEqual(await custody.state(), { signedIn: false, expiresAt: null, scope: [], damaged: false });
  await custody.storeTokens(tokenSet());
  const state = await custody.state();
  assert.deepEqual(state, {
    signedIn: true,
    expiresAt: T0 + 3600_000,
    subject: 'user-42',
    scope: ['openid', 'models:read'],
    damaged: false,
  });
  assert.ok(!JSON.stringify(state).includes(AT));
  clock.now = T0 + 7200_000;
  assert.equal(
    (await custody.state()).signedIn,
    true,
    'an expired access token with a refresh token is still signed in',
  );
});

test('storeRefreshedTokens() replaces the refresh token when the hub rotates it and forgets the old one', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  await custody.storeRefreshedTokens(tokenSet({ accessToken: 'new-access-token-value-0123456789', refreshToken: RT2 }));
  assert.equal((await custody.refreshToken())?.reveal(), RT2);
  assert.equal((await custody.accessTokenIfFresh())?.reveal(), 'new-access-token-value-0123456789');
  for (const value of keychain.items.values()) assert.ok(!value.includes(RT));
});

test('storeRefreshedTokens() keeps the current refresh token when the hub does not rotate it', async () => {
  const { custody } = setup();
  await custody.storeTokens(tokenSet());
  await custody.storeRefreshedTokens(
    tokenSet({ accessToken: 'new-access-token-value-0123456789', refreshToken: null }),
  );
  assert.equal((await custody.refreshToken())?.reveal(), RT);
  assert.equal((await custody.state()).damaged, false);
});

test('storeTokens() of a new sign-in without a refresh token drops the earlier one', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  await custody.storeTokens(tokenSet({ refreshToken: null }));
  assert.equal(keychain.items.has('refresh-token'), false);
  assert.equal(await custody.refreshToken(), null);
});

test('storeTokens() refuses values that are not a token set', async () => {
  const { custody, keychain } = setup();
  const bad: unknown[] = [
    null,
    {},
    { ...tokenSet(), accessToken: AT },
    { ...tokenSet(), refreshToken: RT },
    { ...tokenSet(), expiresAt: 1.5 },
    { ...tokenSet(), scope: 'openid' },
  ];
  for (const value of bad) await assert.rejects(custody.storeTokens(value as TokenSet), { name: 'TypeError' });
  assert.equal(keychain.writes().length, 0);
});

test('a failed write of the new refresh token signs out with ERR_CUSTODY_STORE_FAILED and leaves nothing usable', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  keychain.failNext('set', 'refresh-token', 'ERR_KEYCHAIN_LOCKED');
  await assert.rejects(custody.storeRefreshedTokens(tokenSet({ refreshToken: RT2 })), {
    code: 'ERR_CUSTODY_STORE_FAILED',
    detail: { account: 'refresh-token', keychain: 'ERR_KEYCHAIN_LOCKED', scrubbed: true },
  });
  assert.equal(keychain.items.size, 0);
  assert.deepEqual(await custody.state(), { signedIn: false, expiresAt: null, scope: [], damaged: false });
  assert.equal(await custody.accessTokenIfFresh(), null);
});

test('a failed write of the access item after the refresh token also signs out with ERR_CUSTODY_STORE_FAILED', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  keychain.failNext('set', 'access-token', 'ERR_KEYCHAIN_VALUE_TOO_LARGE');
  await assert.rejects(custody.storeRefreshedTokens(tokenSet({ refreshToken: RT2 })), {
    code: 'ERR_CUSTODY_STORE_FAILED',
    detail: { account: 'access-token', keychain: 'ERR_KEYCHAIN_VALUE_TOO_LARGE', scrubbed: true },
  });
  assert.equal(await custody.refreshToken(), null);
  assert.equal(await custody.accessTokenIfFresh(), null);
});

test('a store that fails halfway and cannot be scrubbed leaves a damaged state that is never used', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  keychain.failNext('set', 'access-token', 'ERR_KEYCHAIN_FAILURE');
  keychain.failNext('delete', '*', 'ERR_KEYCHAIN_FAILURE', 2);
  await assert.rejects(custody.storeRefreshedTokens(tokenSet({ refreshToken: RT2 })), {
    code: 'ERR_CUSTODY_STORE_FAILED',
    detail: { account: 'access-token', keychain: 'ERR_KEYCHAIN_FAILURE', scrubbed: false },
  });
  // The keychain now holds the new refresh token beside the old access item: they do not belong together.
  assert.equal(keychain.items.get('refresh-token'), RT2);
  assert.equal(await custody.accessTokenIfFresh(), null);
  assert.equal(await custody.refreshToken(), null);
  assert.equal(await custody.needsRefresh(), false);
  assert.deepEqual(await custody.nextStep(), { action: 'sign-in' });
  assert.deepEqual(await custody.state(), { signedIn: false, expiresAt: null, scope: [], damaged: true });
});

test('a refresh token without an access item, or an unreadable access item, counts as damaged', async () => {
  for (const seed of [
    { 'refresh-token': RT },
    { 'access-token': 'not json', 'refresh-token': RT },
    { 'access-token': JSON.stringify({ v: 2, accessToken: AT }) },
  ]) {
    const keychain = createMemoryKeychain(seed);
    const custody = createCustody({ keychain, now: () => T0 });
    assert.equal((await custody.state()).damaged, true, JSON.stringify(Object.keys(seed)));
    assert.equal(await custody.refreshToken(), null);
    assert.equal(await custody.accessTokenIfFresh(), null);
  }
});

test('signOut() deletes all four accounts', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  await custody.ensureLoopbackToken();
  await custody.installationId();
  assert.equal(keychain.items.size, 4);
  const result = await custody.signOut();
  assert.deepEqual(result, {
    deleted: ['refresh-token', 'access-token', 'loopback-token', 'installation-id'],
    failed: [],
  });
  assert.equal(keychain.items.size, 0);
});

test('signOut() deletes what it can and reports the rest with ERR_CUSTODY_SIGNOUT_INCOMPLETE', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  keychain.failNext('delete', 'refresh-token', 'ERR_KEYCHAIN_LOCKED');
  await assert.rejects(custody.signOut(), {
    code: 'ERR_CUSTODY_SIGNOUT_INCOMPLETE',
    detail: {
      failed: 'refresh-token',
      deleted: 'access-token,loopback-token,installation-id',
      keychain: 'ERR_KEYCHAIN_LOCKED',
    },
  });
  assert.equal(keychain.items.has('access-token'), false);
  assert.equal(keychain.items.has('refresh-token'), true);
  // What is left is a lone refresh token: damaged, not used.
  assert.equal(await custody.refreshToken(), null);
});

test('forgetTokens() deletes the two token accounts only', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  const id = await custody.installationId();
  await custody.ensureLoopbackToken();
  assert.deepEqual(await custody.forgetTokens(), { deleted: ['access-token', 'refresh-token'], failed: [] });
  assert.deepEqual([...keychain.items.keys()].sort(), ['installation-id', 'loopback-token']);
  assert.equal(await custody.installationId(), id);
});

test('installationId() creates a random UUID once and keeps it; a malformed one is replaced', async () => {
  const { custody, keychain } = setup();
  const id = await custody.installationId();
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(await custody.installationId(), id);
  assert.equal(keychain.writes().filter((c) => c.account === 'installation-id').length, 1);
  keychain.items.set('installation-id', '../../etc');
  assert.notEqual(await custody.installationId(), '../../etc');
});

test('loopbackToken(), setLoopbackToken() and ensureLoopbackToken() keep one 256-bit token', async () => {
  const { custody } = setup();
  assert.equal(await custody.loopbackToken(), null);
  const made = await custody.ensureLoopbackToken();
  assert.match(made.reveal(), /^[A-Za-z0-9_-]{43}$/);
  assert.equal((await custody.ensureLoopbackToken()).reveal(), made.reveal());
  const chosen = new Secret('L'.repeat(43));
  await custody.setLoopbackToken(chosen);
  assert.equal((await custody.loopbackToken())?.reveal(), chosen.reveal());
  await assert.rejects(custody.setLoopbackToken(new Secret('short')), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(custody.setLoopbackToken('L'.repeat(43) as unknown as Secret), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('reads pass a locked keychain error up with its code', async () => {
  const { custody, keychain } = setup();
  await custody.storeTokens(tokenSet());
  keychain.lock();
  for (const read of [
    () => custody.accessTokenIfFresh(),
    () => custody.refreshToken(),
    () => custody.state(),
    () => custody.needsRefresh(),
    () => custody.nextStep(),
    () => custody.loopbackToken(),
    () => custody.installationId(),
  ]) {
    await assert.rejects(read(), { code: 'ERR_KEYCHAIN_LOCKED' });
  }
  keychain.lock('ERR_KEYCHAIN_UNAVAILABLE');
  await assert.rejects(custody.accessTokenIfFresh(), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
});

test('guardKeychain() refuses unknown accounts before calling the backend', async () => {
  const keychain = createMemoryKeychain();
  const guarded = guardKeychain(keychain);
  for (const account of ['github-token', 'Refresh-Token', 'refresh-token ', '', '__proto__', 42, null]) {
    await assert.rejects(guarded.get(account as KeychainAccount), { code: 'ERR_KEYCHAIN_ACCOUNT' });
    await assert.rejects(guarded.set(account as KeychainAccount, 'v'), { code: 'ERR_KEYCHAIN_ACCOUNT' });
    await assert.rejects(guarded.delete(account as KeychainAccount), { code: 'ERR_KEYCHAIN_ACCOUNT' });
  }
  assert.equal(keychain.calls.length, 0);
});

test('guardKeychain() turns an uncoded backend error into ERR_KEYCHAIN_FAILURE without its cause', async () => {
  const backend: Keychain = {
    async get() {
      throw new Error('dbus said: secret=hunter2');
    },
    async set() {
      throw new Error('x');
    },
    async delete() {
      return true;
    },
  };
  const guarded = guardKeychain(backend);
  await assert.rejects(guarded.get('access-token'), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'ERR_KEYCHAIN_FAILURE');
    assert.equal(error.cause, undefined);
    assert.ok(!error.message.includes('hunter2'));
    return true;
  });
  await assert.rejects(guarded.set('access-token', ''), { code: 'ERR_KEYCHAIN_FAILURE' });
  assert.throws(() => guardKeychain({ get: null } as unknown as Keychain), { code: 'ERR_INVALID_ARG_TYPE' });
});
