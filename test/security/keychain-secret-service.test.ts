// P-g (keychain downgrade) and P-f (secret leakage) for the keychain adapter, against a real gnome-keyring
// on a private D-Bus where a store is involved (test/helpers/secret-service.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gate } from '../helpers/gate.js';
import { distRoot, repoRoot } from '../helpers/paths.js';
import {
  startSecretService,
  openKeychainChild,
  loginItems,
  filesContaining,
  kernelKeysMentioning,
  secretServiceAvailable,
  type SecretServiceHandle,
  type KeychainChild,
  type ChildResult,
} from '../helpers/secret-service.js';
import { guardKeychainBackend, openKeychain, type KeychainBackend } from '../../src/authority/keychain.js';

const options = gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus');
const hub = (): string => `companion:https://sec-${randomBytes(4).toString('hex')}.example`;
const secret = (): string => `sec-secret-${randomBytes(16).toString('hex')}`;
// Library and platform text that must never reach our errors (it may quote a value).
const FOREIGN = [
  'Platform failure',
  'GenericFailure',
  'DBus error',
  "Couldn't access platform storage",
  'org.freedesktop',
];

let store: SecretServiceHandle | undefined;
const children: KeychainChild[] = [];
before(async () => {
  if (secretServiceAvailable) store = await startSecretService();
});
after(async () => {
  for (const child of children) await child.close();
  await store?.stop();
});

async function open(env: Record<string, string>, service: string): Promise<KeychainChild> {
  const child = await openKeychainChild(env, { service, timeoutMs: 5_000 });
  children.push(child);
  return child;
}

test('P-g refuses an unknown account before the backend is called (a spy over the in-memory store)', async () => {
  const calls: string[] = [];
  const memory = openKeychain({
    backend: 'memory',
    service: 'companion:https://spy.example',
    announce: () => undefined,
  });
  const spy: KeychainBackend = {
    name: 'spy',
    maxValueBytes: 64 * 1024,
    get: (a) => (calls.push(`get ${a}`), memory.get(a)),
    set: (a, v) => (calls.push(`set ${a}`), memory.set(a, v)),
    delete: (a) => (calls.push(`delete ${a}`), memory.delete(a)),
    health: () => memory.health(),
  };
  const keychain = guardKeychainBackend(spy, 1_000) as unknown as {
    get(a: string): Promise<unknown>;
    set(a: string, v: string): Promise<void>;
    delete(a: string): Promise<unknown>;
  };
  for (const account of [
    'session-cookie',
    'password',
    'id-token',
    'ACCESS-TOKEN',
    'refresh-token\u0000',
    '../refresh-token',
  ]) {
    await assert.rejects(keychain.get(account), { code: 'ERR_KEYCHAIN_ACCOUNT' });
    await assert.rejects(keychain.set(account, 'v'), { code: 'ERR_KEYCHAIN_ACCOUNT' });
    await assert.rejects(keychain.delete(account), { code: 'ERR_KEYCHAIN_ACCOUNT' });
  }
  assert.deepEqual(calls, []);
});

test('P-g refuses an unknown account against the real Secret Service and stores no item for it', options, async () => {
  const service = hub();
  const keychain = await open(store!.env, service);
  const before = await loginItems(store!.env);
  for (const account of ['session-cookie', 'password', 'id-token', 'Refresh-Token']) {
    for (const [op, v] of [
      ['set', secret()],
      ['get', undefined],
      ['delete', undefined],
    ] as const) {
      const result = await keychain.call(op, account, v);
      assert.equal(result.ok ? 'ok' : result.code, 'ERR_KEYCHAIN_ACCOUNT');
    }
  }
  assert.deepEqual(await loginItems(store!.env), before);
});

test("P-g one hub cannot read or delete another hub's items", options, async () => {
  const a = await open(store!.env, hub());
  const b = await open(store!.env, hub());
  const value = secret();
  assert.ok((await a.call('set', 'refresh-token', value)).ok);
  assert.deepEqual(await b.call('get', 'refresh-token'), { ok: true, value: null });
  const deleted = await b.call('delete', 'refresh-token');
  assert.ok(deleted.ok && deleted.value === false);
  const still = await a.call('get', 'refresh-token');
  assert.ok(still.ok && still.value === value);
});

test(
  'P-g the pinned binding refuses, and writes neither a kernel key nor a file, when the Secret Service is missing',
  options,
  async (t) => {
    // Our health probe is told "available" so the call reaches the real binding with no bus behind it:
    // pinned to secret-service it must fail (a DBus error), never fall back to the kernel keyring.
    const since = Date.now() - 1_000;
    const dir = mkdtempSync(join(tmpdir(), 'companion-keychain-pin-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const service = hub();
    const value = secret();
    const module = join(distRoot, 'src', 'authority', 'keychain-secret-service.js');
    const guard = join(distRoot, 'src', 'authority', 'keychain.js');
    const script = `
    const { createSecretServiceBackend } = await import(${JSON.stringify(module)});
    const { guardKeychainBackend } = await import(${JSON.stringify(guard)});
    const say = (stdout) => ({ kind: 'exited', status: 0, stderr: '', stdout });
    const exec = async (file, args) => args.some((a) => a.includes('ReadAlias'))
      ? say('   object path "/org/freedesktop/secrets/collection/login"') : say('   variant       boolean false');
    const keychain = guardKeychainBackend(createSecretServiceBackend({ service: process.env.SERVICE, timeoutMs: 5000, exec }), 5000);
    const value = await new Promise((resolve) => { let s = ''; process.stdin.on('data', (d) => s += d).on('end', () => resolve(s)); });
    const out = [];
    for (const op of ['set', 'get']) {
      try { out.push(op === 'set' ? await keychain.set('access-token', value) ?? 'stored' : await keychain.get('access-token')); }
      catch (error) { out.push(error.code); }
    }
    process.stdout.write(JSON.stringify(out));
  `;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      input: value,
      encoding: 'utf8',
      timeout: 30_000,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        SERVICE: service,
        HOME: dir,
        XDG_RUNTIME_DIR: dir,
        DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(dir, 'no-bus')}`,
      },
    });
    assert.equal(result.status, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), ['ERR_KEYCHAIN_UNAVAILABLE', 'ERR_KEYCHAIN_UNAVAILABLE']);
    assert.ok(!result.stderr.includes(value));
    assert.deepEqual(kernelKeysMentioning(service), []);
    assert.deepEqual(filesContaining([dir, tmpdir()], [value], since), []);
  },
);

test(
  'P-g the in-memory store is never chosen implicitly: no bus means an error, not an announced memory store',
  options,
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'companion-keychain-nomem-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const keychain = await open(
      { HOME: dir, XDG_RUNTIME_DIR: dir, DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(dir, 'no-bus')}` },
      hub(),
    );
    const value = secret();
    const set = await keychain.call('set', 'access-token', value);
    assert.equal(set.ok ? 'ok' : set.code, 'ERR_KEYCHAIN_UNAVAILABLE');
    const get = await keychain.call('get', 'access-token');
    assert.equal(get.ok ? 'ok' : get.code, 'ERR_KEYCHAIN_UNAVAILABLE');
    assert.doesNotMatch(keychain.stderr(), /in-memory/);
  },
);

test(
  'P-f no secret value or library text in any keychain error (message, stack, inspect, JSON) or stderr line',
  options,
  async (t) => {
    const errors: ChildResult[] = [];
    const value = secret();
    const service = hub();
    const own = await startSecretService();
    t.after(() => own.stop());
    const keychain = await open(own.env, service);
    const record = async (op: 'get' | 'set' | 'delete', account: string, v?: string): Promise<void> => {
      const result = await keychain.call(op, account, v);
      assert.equal(result.ok, false, `${op} ${account} should fail`);
      errors.push(result);
    };
    // A secret passed where the account goes, and a secret inside an oversized value.
    await record('get', value);
    await record('set', value, value);
    await record('set', 'access-token', `${value}${'x'.repeat(64 * 1024)}`);
    assert.ok((await keychain.call('set', 'refresh-token', value)).ok);
    // Locked.
    await own.lock();
    await record('get', 'refresh-token');
    await record('set', 'refresh-token', value);
    await record('delete', 'refresh-token');
    // Gone.
    await own.killDaemon();
    await record('get', 'refresh-token');
    await record('set', 'access-token', value);
    await record('delete', 'refresh-token');
    // No bus at all.
    const dir = mkdtempSync(join(tmpdir(), 'companion-keychain-leak-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const nobus = await open(
      { HOME: dir, XDG_RUNTIME_DIR: dir, DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(dir, 'no-bus')}` },
      service,
    );
    for (const [op, v] of [
      ['set', value],
      ['get', undefined],
    ] as const) {
      const result = await nobus.call(op, 'access-token', v);
      assert.equal(result.ok, false);
      errors.push(result);
    }
    const codes = new Set(errors.map((e) => (e.ok ? 'ok' : e.code)));
    assert.deepEqual([...codes].sort(), [
      'ERR_KEYCHAIN_ACCOUNT',
      'ERR_KEYCHAIN_LOCKED',
      'ERR_KEYCHAIN_UNAVAILABLE',
      'ERR_KEYCHAIN_VALUE_TOO_LARGE',
    ]);
    for (const error of errors) {
      assert.ok(!error.ok);
      const text = `${error.message}\n${error.text}`;
      assert.ok(!text.includes(value), `${error.code}: holds the value`);
      for (const foreign of FOREIGN) assert.ok(!text.includes(foreign), `${error.code}: quotes "${foreign}"`);
    }
    for (const child of [keychain, nobus]) {
      assert.ok(!child.stderr().includes(value));
    }
  },
);

test('P-f `companion doctor` prints no stored value in any keychain state', options, async (t) => {
  const own = await startSecretService();
  t.after(() => own.stop());
  const service = hub();
  const value = secret();
  const keychain = await open(own.env, service);
  assert.ok((await keychain.call('set', 'access-token', value)).ok);
  const doctor = (): string => {
    const result = spawnSync(process.execPath, [join(repoRoot, 'bin', 'companion.js'), 'doctor', '--json'], {
      env: own.env,
      encoding: 'utf8',
      timeout: 30_000,
    });
    return `${result.status}\n${result.stdout}\n${result.stderr}`;
  };
  const outputs = [doctor()];
  await own.lock();
  outputs.push(doctor());
  await own.killDaemon();
  outputs.push(doctor());
  assert.match(outputs[0]!, /^0\n.*"state":"available"/);
  assert.match(outputs[1]!, /^1\n.*"state":"locked"/);
  assert.match(outputs[2]!, /^1\n.*"state":"unavailable"/);
  for (const output of outputs) assert.ok(!output.includes(value));
});
