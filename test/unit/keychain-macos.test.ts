// The macOS backend over an injected binding and command runner. It cannot run here (Linux): these tests
// check the calls it makes. What has and has not run on a real Mac: docs/keychain.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMacosBackend, queryMacosHealth, SECURITY_TOOL } from '../../src/authority/keychain-macos.js';
import { guardKeychainBackend } from '../../src/authority/keychain.js';
import type { BindingEntry, BindingEntryOptions, KeyringBinding } from '../../src/authority/keychain-binding.js';
import type { Exec, ExecResult } from '../../src/authority/keychain-exec.js';

const SECRET = 'mac-secret-81d0c2-value';

function fakeSecurity(result: ExecResult): Exec & {
  calls: { file: string; args: readonly string[]; input: string | undefined; env: Readonly<Record<string, string>> }[];
} {
  const calls: {
    file: string;
    args: readonly string[];
    input: string | undefined;
    env: Readonly<Record<string, string>>;
  }[] = [];
  const exec = (async (file, args, options) => {
    calls.push({ file, args, input: options.input, env: options.env });
    return result;
  }) as Exec & { calls: typeof calls };
  exec.calls = calls;
  return exec;
}

function fakeBinding(
  failWith?: Error,
): KeyringBinding & { argc: number[]; options: (BindingEntryOptions | undefined)[] } {
  const items = new Map<string, string>();
  const argc: number[] = [];
  const options: (BindingEntryOptions | undefined)[] = [];
  return {
    argc,
    options,
    AsyncEntry: class implements BindingEntry {
      readonly #key: string;
      constructor(service: string, account: string, opts?: BindingEntryOptions) {
        argc.push(arguments.length);
        options.push(opts);
        this.#key = `${service}/${account}`;
      }
      async getPassword(): Promise<string | null> {
        if (failWith) throw failWith;
        return items.get(this.#key) ?? null;
      }
      async setPassword(password: string): Promise<void> {
        if (failWith) throw failWith;
        items.set(this.#key, password);
      }
      async deleteCredential(): Promise<boolean> {
        if (failWith) throw failWith;
        return items.delete(this.#key);
      }
    },
  };
}

const UNLOCKED: ExecResult = {
  kind: 'exited',
  status: 0,
  stdout: '',
  stderr: 'Keychain "/Users/u/Library/Keychains/login.keychain-db" lock-on-sleep timeout=21600s\n',
};

test('the macOS backend stores through the binding with no store option and round-trips a value', async () => {
  const binding = fakeBinding();
  const exec = fakeSecurity(UNLOCKED);
  const keychain = guardKeychainBackend(
    createMacosBackend({
      service: 'companion:https://hub.example',
      timeoutMs: 1_000,
      exec,
      env: { HOME: '/Users/u' },
      loadBinding: async () => binding,
    }),
    1_000,
  );
  assert.equal(keychain.backend, 'macos-keychain');
  await keychain.set('refresh-token', SECRET);
  assert.equal(await keychain.get('refresh-token'), SECRET);
  assert.equal(await keychain.delete('refresh-token'), true);
  assert.ok(
    binding.argc.every((n) => n === 2),
    'AsyncEntry(service, account): no Linux store option on macOS',
  );
  assert.ok(binding.options.every((o) => o === undefined));
});

test('the macOS backend never puts a value on a command line: it runs only `security show-keychain-info`', async () => {
  const exec = fakeSecurity(UNLOCKED);
  const keychain = guardKeychainBackend(
    createMacosBackend({
      service: 'companion:https://hub.example',
      timeoutMs: 1_000,
      exec,
      env: { HOME: '/Users/u', OTHER: SECRET },
      loadBinding: async () => fakeBinding(),
    }),
    1_000,
  );
  await keychain.set('access-token', SECRET);
  await keychain.get('refresh-token');
  await keychain.delete('refresh-token');
  assert.ok(exec.calls.length >= 1);
  for (const call of exec.calls) {
    assert.equal(call.file, SECURITY_TOOL);
    assert.equal(call.file, '/usr/bin/security');
    assert.deepEqual(call.args, ['show-keychain-info']);
    assert.equal(call.input, undefined);
    assert.ok(!JSON.stringify(call).includes(SECRET));
    assert.ok(!('OTHER' in call.env));
  }
});

const HEALTH: [string, ExecResult, string][] = [
  ['exit 0', UNLOCKED, 'available'],
  [
    '"User interaction is not allowed."',
    {
      kind: 'exited',
      status: 36,
      stdout: '',
      stderr: 'security: SecKeychainCopySettings login.keychain-db: User interaction is not allowed.',
    },
    'locked',
  ],
  [
    '"The user name or passphrase you entered is not correct."',
    {
      kind: 'exited',
      status: 51,
      stdout: '',
      stderr: 'security: The user name or passphrase you entered is not correct.',
    },
    'locked',
  ],
  [
    'no default keychain',
    { kind: 'exited', status: 50, stdout: '', stderr: 'security: A default keychain could not be found.' },
    'unavailable',
  ],
  ['an unknown failure', { kind: 'exited', status: 1, stdout: '', stderr: 'security: ???' }, 'unavailable'],
  ['security missing', { kind: 'not-found' }, 'unavailable'],
  ['a timeout (an unlock prompt is up)', { kind: 'timeout' }, 'unavailable'],
];
for (const [label, result, state] of HEALTH) {
  test(`queryMacosHealth() reports ${state} for ${label}`, async () => {
    const health = await queryMacosHealth(fakeSecurity(result), 1_000, {});
    assert.equal(health.backend, 'macos-keychain');
    assert.equal(health.state, state);
  });
}

test('the macOS backend maps "User interaction is not allowed." from the binding to ERR_KEYCHAIN_LOCKED without the message', async () => {
  const binding = fakeBinding(new Error(`Platform failure: User interaction is not allowed. ${SECRET}`));
  const keychain = guardKeychainBackend(
    createMacosBackend({
      service: 'companion:https://hub.example',
      timeoutMs: 1_000,
      exec: fakeSecurity(UNLOCKED),
      env: {},
      loadBinding: async () => binding,
    }),
    1_000,
  );
  await assert.rejects(keychain.get('access-token'), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'ERR_KEYCHAIN_LOCKED');
    assert.ok(!error.message.includes(SECRET));
    return true;
  });
});

test('the macOS backend refuses to make an entry while the keychain reports locked', async () => {
  const binding = fakeBinding();
  const locked: ExecResult = { kind: 'exited', status: 36, stdout: '', stderr: 'User interaction is not allowed.' };
  const keychain = guardKeychainBackend(
    createMacosBackend({
      service: 'companion:https://hub.example',
      timeoutMs: 1_000,
      exec: fakeSecurity(locked),
      env: {},
      loadBinding: async () => binding,
    }),
    1_000,
  );
  await assert.rejects(keychain.set('access-token', SECRET), { code: 'ERR_KEYCHAIN_LOCKED' });
  assert.equal(binding.argc.length, 0);
});
