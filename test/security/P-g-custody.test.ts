// P-g keychain downgrade, at the custody core: the account allow-list is enforced before the backend is
// called, a locked or unavailable keychain is an error passed up (never a fallback store), and a store
// that fails halfway leaves nothing that is used. The backend here is the port-level in-memory double;
// the real backends' own P-g tests (Secret Service, device-local items) belong to the keychain adapter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { createCustody, guardKeychain } from '../../src/core/custody.js';
import { KEYCHAIN_ACCOUNTS, type KeychainAccount } from '../../src/core/keychain-port.js';
import { Secret } from '../../src/core/secret.js';
import type { TokenSet } from '../../src/core/oauth.js';
import { createMemoryKeychain } from '../helpers/memory-keychain.js';

const NOW = Date.UTC(2031, 0, 2);
const AT = 'p-g-access-token-0123456789abcdefghijklmnopq';
const RT = 'p-g-refresh-token-0123456789abcdefghijklmnop';

function tokens(refresh = RT): TokenSet {
  return {
    accessToken: new Secret(AT),
    refreshToken: new Secret(refresh),
    expiresAt: NOW + 3600_000,
    scope: ['openid'],
  };
}

test('P-g custody refuses unknown account names before the keychain is called', async () => {
  const backend = createMemoryKeychain();
  const guarded = guardKeychain(backend);
  for (const account of ['github-token', 'ssh-key', 'login', 'access-token\u0000', 'ACCESS-TOKEN', 'constructor', '']) {
    await assert.rejects(guarded.get(account as KeychainAccount), { code: 'ERR_KEYCHAIN_ACCOUNT' }, account);
    await assert.rejects(guarded.set(account as KeychainAccount, 'x'), { code: 'ERR_KEYCHAIN_ACCOUNT' }, account);
    await assert.rejects(guarded.delete(account as KeychainAccount), { code: 'ERR_KEYCHAIN_ACCOUNT' }, account);
  }
  assert.deepEqual(backend.calls, [], 'the backend never ran');
});

test('P-g custody only ever touches the four accounts', async () => {
  const keychain = createMemoryKeychain();
  const custody = createCustody({ keychain, now: () => NOW });
  await custody.storeTokens(tokens());
  await custody.storeRefreshedTokens(tokens('p-g-rotated-refresh-token-0123456789abcdef'));
  await custody.accessTokenIfFresh();
  await custody.nextStep();
  await custody.state();
  await custody.ensureLoopbackToken();
  await custody.installationId();
  await custody.signOut();
  const touched = new Set(keychain.calls.map((c) => c.account));
  assert.ok(
    [...touched].every((a) => (KEYCHAIN_ACCOUNTS as readonly string[]).includes(a)),
    [...touched].join(','),
  );
});

test('P-g a locked keychain error passes up and nothing is written elsewhere', async () => {
  const keychain = createMemoryKeychain();
  const custody = createCustody({ keychain, now: () => NOW });
  const envBefore = JSON.stringify(process.env);
  const globalsBefore = Object.getOwnPropertyNames(globalThis).sort().join(',');
  keychain.lock('ERR_KEYCHAIN_LOCKED');
  await assert.rejects(custody.storeTokens(tokens()), {
    code: 'ERR_CUSTODY_STORE_FAILED',
    detail: { account: 'refresh-token', keychain: 'ERR_KEYCHAIN_LOCKED', scrubbed: false },
  });
  await assert.rejects(custody.accessTokenIfFresh(), { code: 'ERR_KEYCHAIN_LOCKED' });
  await assert.rejects(custody.state(), { code: 'ERR_KEYCHAIN_LOCKED' });
  await assert.rejects(custody.ensureLoopbackToken(), { code: 'ERR_KEYCHAIN_LOCKED' });
  assert.deepEqual(keychain.writes(), [], 'no write reached the keychain');
  // No fallback: once unlocked, custody has nothing, so it kept nothing in memory or anywhere else.
  keychain.unlock();
  assert.equal(await custody.accessTokenIfFresh(), null);
  assert.deepEqual(await custody.nextStep(), { action: 'sign-in' });
  assert.equal(keychain.items.size, 0);
  assert.equal(JSON.stringify(process.env), envBefore, 'nothing went into the environment');
  assert.equal(Object.getOwnPropertyNames(globalThis).sort().join(','), globalsBefore, 'nothing went onto globalThis');
  assert.ok(!inspect(custody, { showHidden: true, depth: Infinity }).includes(AT));
});

test('P-g an unavailable keychain fails closed: no token is handed out', async () => {
  const keychain = createMemoryKeychain();
  const custody = createCustody({ keychain, now: () => NOW });
  await custody.storeTokens(tokens());
  keychain.lock('ERR_KEYCHAIN_UNAVAILABLE');
  await assert.rejects(custody.accessTokenIfFresh(), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  await assert.rejects(custody.refreshToken(), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  await assert.rejects(custody.loopbackToken(), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
});

test('P-g a backend error without our code carries nothing of the backend out', async () => {
  const custody = createCustody({
    keychain: {
      async get() {
        throw new Error(`secret service said ${AT}`);
      },
      async set() {
        throw new Error('nope');
      },
      async delete() {
        throw new Error('nope');
      },
    },
    now: () => NOW,
  });
  await assert.rejects(custody.accessTokenIfFresh(), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'ERR_KEYCHAIN_FAILURE');
    assert.equal(error.cause, undefined);
    assert.ok(!inspect(error).includes(AT));
    return true;
  });
});

test('P-g a rotated refresh token that could not be stored is never used, and neither is the old one', async () => {
  const keychain = createMemoryKeychain();
  const custody = createCustody({ keychain, now: () => NOW });
  await custody.storeTokens(tokens());
  keychain.failNext('set', 'access-token', 'ERR_KEYCHAIN_TIMEOUT');
  keychain.failNext('delete', '*', 'ERR_KEYCHAIN_TIMEOUT', 2);
  await assert.rejects(custody.storeRefreshedTokens(tokens('p-g-rotated-refresh-token-0123456789abcdef')), {
    code: 'ERR_CUSTODY_STORE_FAILED',
  });
  assert.equal(await custody.accessTokenIfFresh(), null);
  assert.equal(await custody.refreshToken(), null);
  assert.equal((await custody.state()).damaged, true);
});

test('P-g sign-out deletes all four accounts and names the ones it could not delete', async () => {
  const keychain = createMemoryKeychain();
  const custody = createCustody({ keychain, now: () => NOW });
  await custody.storeTokens(tokens());
  await custody.ensureLoopbackToken();
  keychain.failNext('delete', 'loopback-token', 'ERR_KEYCHAIN_LOCKED');
  await assert.rejects(custody.signOut(), {
    code: 'ERR_CUSTODY_SIGNOUT_INCOMPLETE',
    detail: {
      failed: 'loopback-token',
      deleted: 'refresh-token,access-token,installation-id',
      keychain: 'ERR_KEYCHAIN_LOCKED',
    },
  });
  assert.deepEqual([...keychain.items.keys()], ['loopback-token']);
  assert.deepEqual(await custody.signOut(), { deleted: [...KEYCHAIN_ACCOUNTS], failed: [] });
  assert.equal(keychain.items.size, 0);
});
