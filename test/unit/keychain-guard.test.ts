// The keychain guard (src/authority/keychain.ts) over a spy backend, and openKeychain's backend choice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import {
  guardKeychainBackend,
  keychainServiceFor,
  openKeychain,
  MAX_VALUE_BYTES,
  MEMORY_ANNOUNCEMENT,
  KEYCHAIN_ACCOUNTS,
  type KeychainBackend,
  type KeychainHealth,
} from '../../src/authority/keychain.js';
import { CompanionError } from '../../src/core/errors.js';

interface Spy extends KeychainBackend {
  readonly calls: string[];
}

function spyBackend(overrides: Partial<KeychainBackend> = {}): Spy {
  const calls: string[] = [];
  const items = new Map<string, string>();
  return {
    calls,
    name: 'spy',
    maxValueBytes: MAX_VALUE_BYTES,
    async get(account) {
      calls.push(`get ${account}`);
      return items.get(account) ?? null;
    },
    async set(account, value) {
      calls.push(`set ${account}`);
      items.set(account, value);
    },
    async delete(account) {
      calls.push(`delete ${account}`);
      return items.delete(account);
    },
    async health(): Promise<KeychainHealth> {
      calls.push('health');
      return { backend: 'spy', state: 'available' };
    },
    ...overrides,
  };
}

const TOKEN_LIKE = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyIn0.c2VjcmV0LXNpZ25hdHVyZQ';
const BAD_ACCOUNTS: unknown[] = [
  '',
  'bogus',
  'Access-Token',
  'access-token ',
  ' refresh-token',
  'access_token',
  '__proto__',
  'toString',
  'constructor',
  TOKEN_LIKE,
  42,
  null,
  undefined,
  {},
  ['access-token'],
];

for (const account of BAD_ACCOUNTS) {
  test(`guard get/set/delete refuse account ${inspect(account)} with ERR_KEYCHAIN_ACCOUNT before the backend is called`, async () => {
    const spy = spyBackend();
    const keychain = guardKeychainBackend(spy, 1_000);
    const anyKeychain = keychain as unknown as {
      get(a: unknown): Promise<unknown>;
      set(a: unknown, v: string): Promise<unknown>;
      delete(a: unknown): Promise<unknown>;
    };
    for (const call of [
      () => anyKeychain.get(account),
      () => anyKeychain.set(account, 'value-1'),
      () => anyKeychain.delete(account),
    ]) {
      await assert.rejects(call(), (error: CompanionError) => {
        assert.equal(error.code, 'ERR_KEYCHAIN_ACCOUNT');
        // The refused name is never echoed: it might be a token passed by mistake.
        assert.ok(!error.message.includes(TOKEN_LIKE));
        return true;
      });
    }
    assert.deepEqual(spy.calls, []);
  });
}

test('guard passes each of the four accounts to the backend', async () => {
  const spy = spyBackend();
  const keychain = guardKeychainBackend(spy, 1_000);
  for (const account of KEYCHAIN_ACCOUNTS) {
    await keychain.set(account, `v-${account}`);
    assert.equal(await keychain.get(account), `v-${account}`);
    assert.equal(await keychain.delete(account), true);
  }
  assert.equal(spy.calls.length, 12);
});

const BAD_VALUES: [string, unknown, string][] = [
  ['a number', 42, 'ERR_INVALID_ARG_TYPE'],
  ['null', null, 'ERR_INVALID_ARG_TYPE'],
  ['an empty string', '', 'ERR_INVALID_ARG_VALUE'],
  ['a lone high surrogate', 'abc\uD800def', 'ERR_INVALID_ARG_VALUE'],
  ['a lone low surrogate', '\uDC00', 'ERR_INVALID_ARG_VALUE'],
  ['one byte over the limit', 'x'.repeat(MAX_VALUE_BYTES + 1), 'ERR_KEYCHAIN_VALUE_TOO_LARGE'],
  ['multi-byte text over the limit', 'é'.repeat(MAX_VALUE_BYTES / 2 + 1), 'ERR_KEYCHAIN_VALUE_TOO_LARGE'],
];
for (const [label, value, code] of BAD_VALUES) {
  test(`guard set() refuses ${label} with ${code} and never calls the backend`, async () => {
    const spy = spyBackend();
    const keychain = guardKeychainBackend(spy, 1_000);
    await assert.rejects(keychain.set('access-token', value as string), { code });
    assert.deepEqual(spy.calls, []);
  });
}

test('guard set() stores a value of exactly the limit whole and a surrogate pair intact', async () => {
  const spy = spyBackend();
  const keychain = guardKeychainBackend(spy, 1_000);
  const big = 'y'.repeat(MAX_VALUE_BYTES);
  await keychain.set('access-token', big);
  assert.equal(await keychain.get('access-token'), big);
  await keychain.set('refresh-token', 'key 🔑 ok');
  assert.equal(await keychain.get('refresh-token'), 'key 🔑 ok');
});

test('guard set() reports the limit, not the value, when it refuses a large value', async () => {
  const keychain = guardKeychainBackend(spyBackend(), 1_000);
  const value = `${TOKEN_LIKE}${'z'.repeat(MAX_VALUE_BYTES)}`;
  await assert.rejects(keychain.set('access-token', value), (error: CompanionError) => {
    assert.equal(error.code, 'ERR_KEYCHAIN_VALUE_TOO_LARGE');
    assert.equal(error.detail?.limitBytes, MAX_VALUE_BYTES);
    assert.ok(!inspect(error).includes(TOKEN_LIKE));
    return true;
  });
});

test('guard get() fails with ERR_KEYCHAIN_TIMEOUT when the backend never answers', async () => {
  const keychain = guardKeychainBackend(spyBackend({ get: () => new Promise<never>(() => undefined) }), 30);
  await assert.rejects(keychain.get('access-token'), { code: 'ERR_KEYCHAIN_TIMEOUT' });
});

test('guard set() fails with ERR_KEYCHAIN_TIMEOUT when the backend never answers', async () => {
  const keychain = guardKeychainBackend(spyBackend({ set: () => new Promise<never>(() => undefined) }), 30);
  await assert.rejects(keychain.set('access-token', 'v'), { code: 'ERR_KEYCHAIN_TIMEOUT' });
});

test('guard turns a foreign backend error into ERR_KEYCHAIN_FAILURE without its message or cause', async () => {
  const keychain = guardKeychainBackend(
    spyBackend({
      get: async () => {
        throw new Error(`Platform failure: item ${TOKEN_LIKE} is corrupt`);
      },
    }),
    1_000,
  );
  await assert.rejects(keychain.get('access-token'), (error: CompanionError) => {
    assert.equal(error.code, 'ERR_KEYCHAIN_FAILURE');
    assert.equal(error.cause, undefined);
    assert.ok(!inspect(error, { showHidden: true, depth: 5 }).includes(TOKEN_LIKE));
    return true;
  });
});

test('guard health() reports unavailable when the backend health never answers or throws', async () => {
  const hung = guardKeychainBackend(spyBackend({ health: () => new Promise<never>(() => undefined) }), 30);
  const health = await hung.health();
  assert.equal(health.state, 'unavailable');
  assert.equal(health.backend, 'spy');
  const broken = guardKeychainBackend(
    spyBackend({
      health: async () => {
        throw new Error('boom');
      },
    }),
    1_000,
  );
  assert.equal((await broken.health()).state, 'unavailable');
});

test('openKeychain() picks secret-service on linux, macos-keychain on darwin, windows-dpapi on win32', () => {
  assert.equal(
    openKeychain({ backend: 'os', service: 'companion:https://a.example', platform: 'linux', env: {} }).backend,
    'secret-service',
  );
  assert.equal(
    openKeychain({ backend: 'os', service: 'companion:https://a.example', platform: 'darwin', env: {} }).backend,
    'macos-keychain',
  );
  assert.equal(
    openKeychain({ backend: 'os', service: 'companion:https://a.example', platform: 'win32', env: {} }).backend,
    'windows-dpapi',
  );
});

for (const platform of ['freebsd', 'openbsd', 'aix', 'sunos', 'android'] as NodeJS.Platform[]) {
  test(`openKeychain() fails with ERR_KEYCHAIN_UNAVAILABLE on ${platform} and announces no fallback`, () => {
    const lines: string[] = [];
    assert.throws(
      () =>
        openKeychain({
          backend: 'os',
          service: 'companion:https://a.example',
          platform,
          announce: (l) => lines.push(l),
        }),
      { code: 'ERR_KEYCHAIN_UNAVAILABLE' },
    );
    assert.deepEqual(lines, []);
  });
}

test('openKeychain() on linux without a session bus fails with ERR_KEYCHAIN_UNAVAILABLE and never falls back to memory', async () => {
  const lines: string[] = [];
  const keychain = openKeychain({
    backend: 'os',
    service: 'companion:https://a.example',
    platform: 'linux',
    env: {},
    announce: (l) => lines.push(l),
  });
  await assert.rejects(keychain.set('access-token', 'value-1'), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  await assert.rejects(keychain.get('access-token'), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  assert.equal((await keychain.health()).state, 'unavailable');
  assert.deepEqual(lines, []);
});

for (const backend of ['file', 'plaintext', 'keyutils', '', 'MEMORY']) {
  test(`openKeychain() refuses backend ${JSON.stringify(backend)} with ERR_INVALID_ARG_VALUE`, () => {
    assert.throws(() => openKeychain({ backend: backend as 'os', service: 'companion:x' }), {
      code: 'ERR_INVALID_ARG_VALUE',
    });
  });
}

test('openKeychain() refuses an empty, over-long or control-character service name', () => {
  assert.throws(() => openKeychain({ backend: 'memory', service: '', announce: () => undefined }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
  assert.throws(() => openKeychain({ backend: 'memory', service: 'x'.repeat(256), announce: () => undefined }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
  assert.throws(() => openKeychain({ backend: 'memory', service: 'companion:\nx', announce: () => undefined }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
  assert.throws(
    () => openKeychain({ backend: 'memory', service: 'companion:x', timeoutMs: 0, announce: () => undefined }),
    { code: 'ERR_INVALID_ARG_VALUE' },
  );
});

test('openKeychain({ backend: "memory" }) announces itself exactly once and keeps values in this object only', async () => {
  const lines: string[] = [];
  const a = openKeychain({ backend: 'memory', service: 'companion:https://a.example', announce: (l) => lines.push(l) });
  assert.deepEqual(lines, [MEMORY_ANNOUNCEMENT]);
  assert.equal(a.backend, 'memory');
  await a.set('access-token', 'v1');
  assert.equal(await a.get('access-token'), 'v1');
  assert.deepEqual(lines, [MEMORY_ANNOUNCEMENT]);
  const b = openKeychain({ backend: 'memory', service: 'companion:https://a.example', announce: (l) => lines.push(l) });
  assert.equal(await b.get('access-token'), null, 'a second memory keychain starts empty: nothing persists');
  assert.equal(await a.delete('access-token'), true);
  assert.equal(await a.delete('access-token'), false);
  assert.deepEqual(await a.health(), {
    backend: 'memory',
    state: 'available',
    detail: 'in-memory keychain (demo/tests only): nothing persists',
  });
});

test('keychainServiceFor() names the hub origin and tells two hubs apart', () => {
  assert.equal(keychainServiceFor('https://hub.example/some/path?x=1'), 'companion:https://hub.example');
  assert.equal(keychainServiceFor('https://hub.example:8443/'), 'companion:https://hub.example:8443');
  assert.notEqual(keychainServiceFor('https://a.example'), keychainServiceFor('https://b.example'));
  assert.notEqual(keychainServiceFor('http://127.0.0.1:1234'), keychainServiceFor('http://127.0.0.1:1235'));
  assert.throws(() => keychainServiceFor('ftp://hub.example'), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => keychainServiceFor('not a url'), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('keychainServiceFor() with an installation key names hub and data dir, tells two data dirs apart, and takes only 16 hex digits', () => {
  assert.equal(
    keychainServiceFor('https://hub.example/x', '0123456789abcdef'),
    'companion:https://hub.example#0123456789abcdef',
  );
  assert.notEqual(
    keychainServiceFor('https://hub.example', '0123456789abcdef'),
    keychainServiceFor('https://hub.example', 'fedcba9876543210'),
  );
  for (const bad of [
    '',
    '0123456789ABCDEF',
    '0123456789abcde',
    '/home/u/.local/share/companion',
    '0123456789abcdef0',
  ]) {
    assert.throws(() => keychainServiceFor('https://hub.example', bad), { code: 'ERR_INVALID_ARG_VALUE' }, bad);
  }
});
