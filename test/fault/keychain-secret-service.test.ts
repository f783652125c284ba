// Fault cases of the Secret Service backend against a real gnome-keyring on a private D-Bus: no bus, no
// service on the bus, a locked collection, the daemon killed mid-run, a daemon that stops answering.
// Each case must be a coded error (never null-as-empty, never a fallback) and leave the value nowhere:
// no file under the test's HOME / XDG dirs / temp dirs holds it (as UTF-8, UTF-16 or base64), and no
// kernel key names the service (/proc/keys: descriptions of this user's keys; docs/keychain.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gate } from '../helpers/gate.js';
import {
  startSecretService,
  openKeychainChild,
  filesContaining,
  kernelKeysMentioning,
  secretServiceAvailable,
  type KeychainChild,
  type ChildResult,
} from '../helpers/secret-service.js';

const options = gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus');
const ACCOUNTS = ['refresh-token', 'access-token', 'loopback-token', 'installation-id'];

const hub = (): string => `companion:https://fault-${randomBytes(4).toString('hex')}.example`;
const secret = (): string => `fault-secret-${randomBytes(16).toString('hex')}`;

function code(result: ChildResult): string | undefined {
  return result.ok ? `ok:${JSON.stringify(result.value)}` : result.code;
}

/** Every operation on every account fails with `expected`; the secret appears in no answer. */
async function expectAllFail(
  keychain: KeychainChild,
  expected: string | readonly string[],
  value: string,
): Promise<void> {
  const codes = typeof expected === 'string' ? [expected] : expected;
  for (const account of ACCOUNTS) {
    for (const [op, v] of [
      ['set', value],
      ['get', undefined],
      ['delete', undefined],
    ] as const) {
      const result = await keychain.call(op, account, v);
      assert.ok(
        codes.includes(code(result) ?? ''),
        `${op} ${account}: expected ${codes.join('|')}, got ${code(result)}`,
      );
      assert.ok(!JSON.stringify(result).includes(value), `${op} ${account}: the answer holds the value`);
    }
  }
  assert.ok(!keychain.stderr().includes(value));
}

function assertStoredNowhere(value: string, service: string, roots: readonly string[], since: number): void {
  assert.deepEqual(filesContaining([...roots, tmpdir()], [value], since), [], 'a file holds the value');
  assert.deepEqual(kernelKeysMentioning(service), [], 'a kernel key names the service');
  assert.deepEqual(kernelKeysMentioning(value), []);
}

function bareEnv(t: { after(fn: () => void): void }): { dir: string; env: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), 'companion-keychain-fault-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const env: Record<string, string> = {
    XDG_RUNTIME_DIR: join(dir, 'run'),
    XDG_DATA_HOME: join(dir, 'data'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    XDG_CACHE_HOME: join(dir, 'cache'),
    HOME: join(dir, 'home'),
  };
  for (const path of Object.values(env)) mkdirSync(path, { recursive: true, mode: 0o700 });
  return { dir, env };
}

test(
  'no bus (DBUS_SESSION_BUS_ADDRESS points nowhere): every call fails ERR_KEYCHAIN_UNAVAILABLE and nothing is stored',
  options,
  async (t) => {
    const since = Date.now() - 1_000;
    const { dir, env } = bareEnv(t);
    env.DBUS_SESSION_BUS_ADDRESS = `unix:path=${join(dir, 'run', 'no-such-bus')}`;
    const service = hub();
    const value = secret();
    const keychain = await openKeychainChild(env, { service, timeoutMs: 5_000 });
    t.after(() => keychain.close());
    await expectAllFail(keychain, 'ERR_KEYCHAIN_UNAVAILABLE', value);
    const health = await keychain.call('health');
    assert.ok(health.ok);
    assert.equal((health.value as { state: string }).state, 'unavailable');
    assertStoredNowhere(value, service, [dir], since);
  },
);

test(
  'no bus at all (no variable, no $XDG_RUNTIME_DIR/bus): ERR_KEYCHAIN_UNAVAILABLE, nothing started, nothing stored',
  options,
  async (t) => {
    const since = Date.now() - 1_000;
    const { dir, env } = bareEnv(t);
    const service = hub();
    const value = secret();
    const keychain = await openKeychainChild(env, { service, timeoutMs: 5_000 });
    t.after(() => keychain.close());
    await expectAllFail(keychain, 'ERR_KEYCHAIN_UNAVAILABLE', value);
    assert.deepEqual(readdirSync(join(dir, 'run')), [], 'no bus was launched in the runtime dir');
    assertStoredNowhere(value, service, [dir], since);
  },
);

test(
  'no Secret Service on the bus: every call fails ERR_KEYCHAIN_UNAVAILABLE and nothing is stored',
  options,
  async (t) => {
    const since = Date.now() - 1_000;
    const store = await startSecretService();
    t.after(() => store.stop());
    await store.killDaemon();
    const service = hub();
    const value = secret();
    const keychain = await openKeychainChild(store.env, { service, timeoutMs: 5_000 });
    t.after(() => keychain.close());
    await expectAllFail(keychain, 'ERR_KEYCHAIN_UNAVAILABLE', value);
    const health = await keychain.call('health');
    assert.ok(health.ok);
    assert.deepEqual(health.value, {
      backend: 'secret-service',
      state: 'unavailable',
      detail:
        'no Secret Service on the session bus; install and start gnome-keyring (or another Secret Service such as KeePassXC)',
    });
    assertStoredNowhere(value, service, [store.dir], since);
  },
);

test(
  'a collection locked during the run: get (stored or never stored), set and delete fail ERR_KEYCHAIN_LOCKED, never null',
  options,
  async (t) => {
    const since = Date.now() - 1_000;
    const store = await startSecretService();
    t.after(() => store.stop());
    const service = hub();
    const stored = secret();
    const keychain = await openKeychainChild(store.env, { service, timeoutMs: 5_000 });
    t.after(() => keychain.close());
    assert.equal(code(await keychain.call('set', 'refresh-token', stored)), 'ok:null');

    await store.lock();
    const value = secret();
    await expectAllFail(keychain, 'ERR_KEYCHAIN_LOCKED', value);
    const health = await keychain.call('health');
    assert.ok(health.ok);
    assert.equal((health.value as { state: string }).state, 'locked');

    // A process that starts while the collection is locked is refused on its first call, too.
    const fresh = await openKeychainChild(store.env, { service, timeoutMs: 5_000 });
    t.after(() => fresh.close());
    assert.equal(code(await fresh.call('get', 'access-token')), 'ERR_KEYCHAIN_LOCKED');

    await store.unlock();
    assert.equal(
      code(await keychain.call('get', 'refresh-token')),
      `ok:${JSON.stringify(stored)}`,
      'the stored value survived',
    );
    assert.equal(code(await keychain.call('get', 'access-token')), 'ok:null', 'nothing was written while locked');
    assertStoredNowhere(value, service, [store.dir], since);
    // The keyring file holds the stored value encrypted, never in plain text.
    assert.deepEqual(filesContaining([store.dir], [stored]), []);
  },
);

test(
  'the keyring daemon killed mid-run: every call fails ERR_KEYCHAIN_UNAVAILABLE; a restarted daemon serves the stored value again',
  options,
  async (t) => {
    const since = Date.now() - 1_000;
    const store = await startSecretService();
    t.after(() => store.stop());
    const service = hub();
    const stored = secret();
    const keychain = await openKeychainChild(store.env, { service, timeoutMs: 5_000 });
    t.after(() => keychain.close());
    assert.equal(code(await keychain.call('set', 'access-token', stored)), 'ok:null');

    await store.killDaemon();
    const value = secret();
    await expectAllFail(keychain, 'ERR_KEYCHAIN_UNAVAILABLE', value);
    const health = await keychain.call('health');
    assert.ok(health.ok);
    assert.equal((health.value as { state: string }).state, 'unavailable');
    assertStoredNowhere(value, service, [store.dir], since);

    await store.unlock(); // a new daemon, unlocked, on the same bus and keyring files
    assert.equal(code(await keychain.call('get', 'access-token')), `ok:${JSON.stringify(stored)}`);
  },
);

test(
  'a keyring daemon that stops answering: calls fail with ERR_KEYCHAIN_TIMEOUT (or UNAVAILABLE from the bounded probe), not a hang',
  options,
  async (t) => {
    const since = Date.now() - 1_000;
    const store = await startSecretService();
    t.after(() => store.stop());
    t.after(() => store.resumeDaemon());
    const service = hub();
    const keychain = await openKeychainChild(store.env, { service, timeoutMs: 1_000 });
    t.after(() => keychain.close());
    assert.equal(code(await keychain.call('set', 'loopback-token', secret())), 'ok:null');

    store.pauseDaemon();
    // The entry already exists, so the call goes off-thread and our 1 s bound fires first.
    assert.equal(code(await keychain.call('get', 'loopback-token')), 'ERR_KEYCHAIN_TIMEOUT');
    const value = secret();
    for (const [op, v] of [
      ['get', undefined],
      ['set', value],
      ['delete', undefined],
    ] as const) {
      const result = await keychain.call(op, 'loopback-token', v);
      assert.ok(
        ['ERR_KEYCHAIN_TIMEOUT', 'ERR_KEYCHAIN_UNAVAILABLE'].includes(code(result) ?? ''),
        `${op}: ${code(result)}`,
      );
    }
    const health = await keychain.call('health');
    assert.ok(health.ok);
    assert.equal((health.value as { state: string }).state, 'unavailable');
    store.resumeDaemon();
    assertStoredNowhere(value, service, [store.dir], since);
  },
);
