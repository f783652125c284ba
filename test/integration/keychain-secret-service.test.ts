// The Secret Service backend against a real gnome-keyring on a private D-Bus (test/helpers/secret-service.ts).
// The keychain runs in a child process with the private bus's environment (the binding opens its store once
// per process: docs/keychain.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { gate } from '../helpers/gate.js';
import { repoRoot } from '../helpers/paths.js';
import { SANDBOX_MODES } from '../../src/runtime/sandbox-profile.js';
import {
  startSecretService,
  openKeychainChild,
  loginItems,
  secretToolLookup,
  secretServiceAvailable,
  secretToolAvailable,
  type SecretServiceHandle,
  type KeychainChild,
} from '../helpers/secret-service.js';

const options = gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus');
const secretToolOptions = gate(
  'secret-tool',
  secretServiceAvailable && secretToolAvailable,
  'apt-get install libsecret-tools',
);
const MAX = 64 * 1024;

let service: SecretServiceHandle | undefined;
const children: KeychainChild[] = [];

before(async () => {
  if (secretServiceAvailable) service = await startSecretService();
});
after(async () => {
  for (const child of children) await child.close();
  await service?.stop();
});

const hub = (): string => `companion:https://hub-${randomBytes(4).toString('hex')}.example`;
const value = (label: string): string => `${label}-${randomBytes(12).toString('base64url')}`;

async function open(name: string): Promise<KeychainChild> {
  const child = await openKeychainChild(service!.env, { service: name, timeoutMs: 5_000 });
  children.push(child);
  return child;
}

function ok(result: Awaited<ReturnType<KeychainChild['call']>>): unknown {
  assert.ok(result.ok, `expected success, got ${result.ok ? '' : `${result.code}: ${result.message}`}`);
  return result.ok ? result.value : undefined;
}

test('openKeychain("os") round-trips each of the four accounts through the Secret Service', options, async () => {
  const keychain = await open(hub());
  for (const account of ['refresh-token', 'access-token', 'loopback-token', 'installation-id']) {
    const v = value(account);
    assert.equal(ok(await keychain.call('get', account)), null);
    ok(await keychain.call('set', account, v));
    assert.equal(ok(await keychain.call('get', account)), v);
  }
});

test('health() reports the Secret Service available', options, async () => {
  const keychain = await open(hub());
  assert.deepEqual(ok(await keychain.call('health')), { backend: 'secret-service', state: 'available' });
});

test('set() then get() returns Unicode text exactly', options, async () => {
  const keychain = await open(hub());
  for (const text of [
    'héllo wörld',
    '🔑🗝️ emoji with ZWJ 👩‍💻',
    '日本語のトークン',
    'mixed\ttab and\nnewline',
    'ᚠᛇᚻ᛫ᛒᛦᚦ',
  ]) {
    ok(await keychain.call('set', 'access-token', text));
    assert.equal(ok(await keychain.call('get', 'access-token')), text);
  }
});

test('set() then get() returns a 16 KiB JWT-like value and a value of exactly 64 KiB whole', options, async () => {
  const keychain = await open(hub());
  const jwt = `eyJhbGciOiJFUzI1NiJ9.${randomBytes(12 * 1024)
    .toString('base64url')
    .slice(0, 16 * 1024)}.${randomBytes(64).toString('base64url')}`;
  ok(await keychain.call('set', 'refresh-token', jwt));
  assert.equal(ok(await keychain.call('get', 'refresh-token')), jwt);
  const exact = randomBytes(MAX).toString('base64').slice(0, MAX);
  ok(await keychain.call('set', 'access-token', exact));
  assert.equal(ok(await keychain.call('get', 'access-token')), exact);
});

test(
  'set() refuses a value over 64 KiB with ERR_KEYCHAIN_VALUE_TOO_LARGE and keeps the old value',
  options,
  async () => {
    const keychain = await open(hub());
    const old = value('old');
    ok(await keychain.call('set', 'access-token', old));
    const before = await loginItems(service!.env);
    const result = await keychain.call('set', 'access-token', 'x'.repeat(MAX + 1));
    assert.equal(result.ok, false);
    assert.equal(result.ok ? undefined : result.code, 'ERR_KEYCHAIN_VALUE_TOO_LARGE');
    assert.equal(ok(await keychain.call('get', 'access-token')), old);
    assert.deepEqual(await loginItems(service!.env), before);
  },
);

test('set() twice replaces the item instead of adding a second one', options, async () => {
  const name = hub();
  const keychain = await open(name);
  const before = (await loginItems(service!.env)).length;
  ok(await keychain.call('set', 'loopback-token', value('one')));
  const second = value('two');
  ok(await keychain.call('set', 'loopback-token', second));
  assert.equal((await loginItems(service!.env)).length, before + 1);
  assert.equal(ok(await keychain.call('get', 'loopback-token')), second);
});

test('delete() removes the item, then reports false and get() returns null', options, async () => {
  const keychain = await open(hub());
  ok(await keychain.call('set', 'installation-id', value('id')));
  const before = (await loginItems(service!.env)).length;
  assert.equal(ok(await keychain.call('delete', 'installation-id')), true);
  assert.equal((await loginItems(service!.env)).length, before - 1);
  assert.equal(ok(await keychain.call('delete', 'installation-id')), false);
  assert.equal(ok(await keychain.call('get', 'installation-id')), null);
});

test('two hubs never share items: same account, different service names', options, async () => {
  const a = await open(hub());
  const b = await open(hub());
  const va = value('hub-a');
  ok(await a.call('set', 'refresh-token', va));
  assert.equal(ok(await b.call('get', 'refresh-token')), null);
  const vb = value('hub-b');
  ok(await b.call('set', 'refresh-token', vb));
  assert.equal(ok(await a.call('get', 'refresh-token')), va);
  assert.equal(ok(await b.call('delete', 'refresh-token')), true);
  assert.equal(ok(await a.call('get', 'refresh-token')), va);
});

test(
  'an item is in the real store: secret-tool lookup service/username finds it, and not after delete()',
  secretToolOptions,
  async () => {
    const name = hub();
    const keychain = await open(name);
    const v = value('real');
    ok(await keychain.call('set', 'access-token', v));
    assert.equal(await secretToolLookup(service!.env, name, 'access-token'), v);
    assert.equal(await secretToolLookup(service!.env, 'companion:https://other.example', 'access-token'), null);
    ok(await keychain.call('delete', 'access-token'));
    assert.equal(await secretToolLookup(service!.env, name, 'access-token'), null);
  },
);

test('a value stored by one process is read by the next (it persists in the keyring)', options, async () => {
  const name = hub();
  const first = await open(name);
  const v = value('persist');
  ok(await first.call('set', 'refresh-token', v));
  await first.close();
  const second = await open(name);
  assert.equal(ok(await second.call('get', 'refresh-token')), v);
});

test('`companion doctor --json` reports secret-service available with exit 0 and stores nothing', options, async () => {
  const before = await loginItems(service!.env);
  const result = spawnSync(process.execPath, [join(repoRoot, 'bin', 'companion.js'), 'doctor', '--json'], {
    env: service!.env,
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(result.status, 0, result.stderr);
  const report = JSON.parse(result.stdout.trim()) as {
    keychain: unknown;
    sandbox: string;
    node: string;
    platform: string;
  };
  assert.deepEqual(report.keychain, { backend: 'secret-service', state: 'available' });
  // The sandbox in use on this machine (bubblewrap once it is installed), not a keychain matter.
  assert.ok((SANDBOX_MODES as readonly string[]).includes(report.sandbox), `sandbox mode ${String(report.sandbox)}`);
  assert.equal(report.node, process.version);
  assert.equal(result.stderr, '');
  assert.deepEqual(await loginItems(service!.env), before);
});
