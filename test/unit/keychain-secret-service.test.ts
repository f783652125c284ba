// The Secret Service backend over an injected binding and an injected command runner: the store pin, the
// health parse, the error mapping, and that no value reaches a command line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import {
  createSecretServiceBackend,
  querySecretServiceHealth,
  sessionBusAddress,
  SECRET_SERVICE_ENTRY_OPTIONS,
} from '../../src/authority/keychain-secret-service.js';
import { guardKeychainBackend } from '../../src/authority/keychain.js';
import { classifyBindingError } from '../../src/authority/keychain-common.js';
import type { BindingEntry, BindingEntryOptions, KeyringBinding } from '../../src/authority/keychain-binding.js';
import type { Exec, ExecResult } from '../../src/authority/keychain-exec.js';
import type { CompanionError } from '../../src/core/errors.js';

const SECRET = 'tok-3f9a1c77-very-secret-value';
const BUS = 'unix:path=/run/user/1000/bus';

interface ExecCall {
  readonly file: string;
  readonly args: readonly string[];
  readonly input: string | undefined;
  readonly env: Readonly<Record<string, string>>;
}

/** A D-Bus tool stand-in: answers ReadAlias and Get(Locked) from the given state. */
function fakeDbus(state: {
  alias?: string;
  locked?: boolean;
  stderr?: string;
  missing?: string[];
  timeout?: boolean;
}): Exec & { calls: ExecCall[] } {
  const calls: ExecCall[] = [];
  const exec = (async (file, args, options): Promise<ExecResult> => {
    calls.push({ file, args, input: options.input, env: options.env });
    if (state.missing?.includes(file)) return { kind: 'not-found' };
    if (state.timeout === true) return { kind: 'timeout' };
    if (state.stderr !== undefined) return { kind: 'exited', status: 1, stdout: '', stderr: state.stderr };
    const isAlias = args.some((a) => a.includes('ReadAlias'));
    const busctl = file === 'busctl';
    if (isAlias) {
      const path = state.alias ?? '/org/freedesktop/secrets/collection/login';
      return {
        kind: 'exited',
        status: 0,
        stdout: busctl ? `o "${path}"\n` : `method return time=1 sender=:1.0\n   object path "${path}"\n`,
        stderr: '',
      };
    }
    const flag = String(state.locked ?? false);
    return {
      kind: 'exited',
      status: 0,
      stdout: busctl ? `b ${flag}\n` : `method return time=1 sender=:1.0\n   variant       boolean ${flag}\n`,
      stderr: '',
    };
  }) as Exec & { calls: ExecCall[] };
  exec.calls = calls;
  return exec;
}

interface FakeBinding extends KeyringBinding {
  readonly constructed: { service: string; account: string; options: BindingEntryOptions | undefined; argc: number }[];
  readonly items: Map<string, string>;
  failWith?: Error;
  /** Bumped to simulate a daemon restart: entries made before fail like the real ones do. */
  generation: number;
}

function fakeBinding(): FakeBinding {
  const items = new Map<string, string>();
  const constructed: FakeBinding['constructed'] = [];
  const binding: FakeBinding = {
    items,
    constructed,
    generation: 0,
    AsyncEntry: class implements BindingEntry {
      readonly #key: string;
      readonly #generation: number;
      constructor(service: string, account: string, options?: BindingEntryOptions) {
        this.#generation = binding.generation;
        constructed.push({ service, account, options, argc: arguments.length });
        this.#key = `${service}\u0000${account}`;
      }
      async getPassword(): Promise<string | null> {
        if (this.#generation !== binding.generation)
          throw new Error('Platform failure: DBus error: The session does not exist');
        if (binding.failWith) throw binding.failWith;
        return items.get(this.#key) ?? null;
      }
      async setPassword(password: string): Promise<void> {
        if (binding.failWith) throw binding.failWith;
        items.set(this.#key, password);
      }
      async deleteCredential(): Promise<boolean> {
        if (binding.failWith) throw binding.failWith;
        return items.delete(this.#key);
      }
    },
  };
  return binding;
}

function backend(
  state: Parameters<typeof fakeDbus>[0],
  binding = fakeBinding(),
  env: NodeJS.ProcessEnv = { DBUS_SESSION_BUS_ADDRESS: BUS, PATH: '/usr/bin' },
) {
  const exec = fakeDbus(state);
  let loads = 0;
  const keychain = guardKeychainBackend(
    createSecretServiceBackend({
      service: 'companion:https://hub.example',
      timeoutMs: 2_000,
      exec,
      env,
      loadBinding: async () => {
        loads += 1;
        return binding;
      },
    }),
    2_000,
  );
  return { keychain, exec, binding, loads: () => loads };
}

test('the Secret Service backend pins every entry to the secret-service store (never keyutils)', async () => {
  const { keychain, binding } = backend({});
  await keychain.set('access-token', SECRET);
  await keychain.get('access-token');
  await keychain.delete('access-token');
  await keychain.get('refresh-token');
  assert.equal(binding.constructed.length, 2, 'one entry per account, reused');
  for (const entry of binding.constructed) {
    assert.deepEqual(entry.options, { linux: { store: 'secret-service' } });
    assert.equal(entry.service, 'companion:https://hub.example');
  }
  assert.deepEqual(SECRET_SERVICE_ENTRY_OPTIONS, { linux: { store: 'secret-service' } });
  assert.ok(Object.isFrozen(SECRET_SERVICE_ENTRY_OPTIONS) && Object.isFrozen(SECRET_SERVICE_ENTRY_OPTIONS.linux));
});

test('the Secret Service backend rebuilds an entry whose daemon session is gone (daemon restarted) once', async () => {
  const { keychain, binding } = backend({});
  await keychain.set('access-token', SECRET);
  binding.generation += 1;
  assert.equal(await keychain.get('access-token'), SECRET);
  assert.equal(binding.constructed.length, 2);
  assert.equal(await keychain.get('access-token'), SECRET);
  assert.equal(binding.constructed.length, 2);
});

test('the Secret Service backend does not retry a failure of a freshly made entry', async () => {
  const { keychain, binding } = backend({});
  binding.failWith = new Error('Platform failure: DBus error: NoReply');
  await assert.rejects(keychain.get('access-token'), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  assert.equal(binding.constructed.length, 1);
});

test('the Secret Service backend round-trips a value and deletes it', async () => {
  const { keychain } = backend({});
  assert.equal(await keychain.get('access-token'), null);
  await keychain.set('access-token', SECRET);
  assert.equal(await keychain.get('access-token'), SECRET);
  assert.equal(await keychain.delete('access-token'), true);
  assert.equal(await keychain.delete('access-token'), false);
});

test('no value reaches the argv, stdin or environment of any command the Secret Service backend runs', async () => {
  const { keychain, exec } = backend({}, fakeBinding(), {
    DBUS_SESSION_BUS_ADDRESS: BUS,
    PATH: '/usr/bin',
    COMPANION_X: SECRET,
  });
  await keychain.set('access-token', SECRET);
  await keychain.get('access-token');
  await keychain.get('refresh-token');
  await keychain.delete('access-token');
  await keychain.delete('access-token');
  assert.ok(exec.calls.length > 0);
  for (const call of exec.calls) {
    assert.ok(!JSON.stringify(call).includes(SECRET), `${call.file} ${call.args.join(' ')}`);
    assert.equal(call.input ?? '', '');
    assert.deepEqual(Object.keys(call.env).sort(), ['LC_ALL', 'PATH']);
  }
});

test('the Secret Service backend checks health before it makes the first entry, and never makes one when unavailable', async () => {
  const { keychain, binding, loads, exec } = backend({
    stderr:
      'Error org.freedesktop.DBus.Error.ServiceUnknown: The name org.freedesktop.secrets was not provided by any .service files',
  });
  await assert.rejects(keychain.get('access-token'), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  await assert.rejects(keychain.set('access-token', SECRET), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  await assert.rejects(keychain.delete('access-token'), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  assert.equal(loads(), 0, 'the binding is not even loaded');
  assert.equal(binding.constructed.length, 0);
  assert.ok(exec.calls.every((c) => c.file === 'dbus-send' && c.args.includes(`--bus=${BUS}`)));
});

test('the Secret Service backend retries the health check after a failed first one', async () => {
  const state: { stderr?: string } = {
    stderr:
      'Failed to open connection to "session" message bus: Failed to connect to socket /x: No such file or directory',
  };
  const { keychain, binding } = backend(state);
  await assert.rejects(keychain.get('access-token'), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
  delete state.stderr;
  assert.equal(await keychain.get('access-token'), null);
  assert.equal(binding.constructed.length, 1);
});

test('get() on a locked collection is ERR_KEYCHAIN_LOCKED, not null, even for an item never stored', async () => {
  const state = { locked: false };
  const { keychain, binding } = backend(state);
  await keychain.set('access-token', SECRET);
  state.locked = true;
  // The real binding answers null for a never-stored item on a locked collection (PLATFORM.md).
  assert.equal(binding.items.has('companion:https://hub.example\u0000refresh-token'), false);
  await assert.rejects(keychain.get('refresh-token'), { code: 'ERR_KEYCHAIN_LOCKED' });
  await assert.rejects(keychain.delete('refresh-token'), { code: 'ERR_KEYCHAIN_LOCKED' });
  assert.equal((await keychain.health()).state, 'locked');
});

const BINDING_ERRORS: [string, string][] = [
  [`Couldn't access platform storage: Secret Service: unlock prompt was dismissed`, 'ERR_KEYCHAIN_LOCKED'],
  [
    'Platform failure: DBus error: Failed to connect to socket /nonexistent/bus: No such file or directory',
    'ERR_KEYCHAIN_UNAVAILABLE',
  ],
  [
    'Platform failure: DBus error: The name org.freedesktop.secrets was not provided by any .service files',
    'ERR_KEYCHAIN_UNAVAILABLE',
  ],
  [`Couldn't access platform storage: Secret Service: no result found`, 'ERR_KEYCHAIN_UNAVAILABLE'],
  [`Attribute 'service' is longer than platform limit of 255 chars`, 'ERR_KEYCHAIN_VALUE_TOO_LARGE'],
  [`Entry is matched by 2 credentials: ${SECRET}`, 'ERR_KEYCHAIN_FAILURE'],
  [`Data is not UTF-8 encoded: ${SECRET}`, 'ERR_KEYCHAIN_FAILURE'],
];
for (const [message, code] of BINDING_ERRORS) {
  test(`a binding error "${message.slice(0, 60)}" becomes ${code} without the library message`, async () => {
    const { keychain, binding } = backend({});
    await keychain.get('access-token'); // construct once while healthy
    const error = Object.assign(new Error(`${message} ${SECRET}`), {
      code: 'GenericFailure',
      cause: new Error(SECRET),
    });
    binding.failWith = error;
    for (const call of [
      () => keychain.get('access-token'),
      () => keychain.set('access-token', 'v'),
      () => keychain.delete('access-token'),
    ]) {
      await assert.rejects(call(), (thrown: CompanionError) => {
        assert.equal(thrown.code, code);
        assert.equal(thrown.cause, undefined);
        const text = `${thrown.message}\n${thrown.stack ?? ''}\n${inspect(thrown, { showHidden: true, depth: 5 })}\n${JSON.stringify(thrown)}`;
        assert.ok(!text.includes(SECRET));
        assert.ok(!text.includes('GenericFailure'));
        return true;
      });
    }
  });
}

test('classifyBindingError() reads the cause chain and defaults to failure', () => {
  const nested = new Error('Platform failure', { cause: new Error('DBus error', { cause: new Error('x') }) });
  assert.equal(classifyBindingError(nested), 'unavailable');
  assert.equal(classifyBindingError(new Error('something new')), 'failure');
  assert.equal(classifyBindingError('unlock prompt was dismissed'), 'locked');
  assert.equal(classifyBindingError(undefined), 'failure');
});

const HEALTH_CASES: [string, Parameters<typeof fakeDbus>[0], string, RegExp][] = [
  ['an unlocked default collection', {}, 'available', /^$/],
  ['a locked default collection', { locked: true }, 'locked', /locked/],
  ['no default collection (alias "/")', { alias: '/' }, 'unavailable', /no default keyring/],
  ['an alias outside the collection namespace', { alias: '/evil/path' }, 'unavailable', /no default keyring/],
  [
    'no service on the bus',
    {
      stderr:
        'Error org.freedesktop.DBus.Error.ServiceUnknown: The name org.freedesktop.secrets was not provided by any .service files',
    },
    'unavailable',
    /no Secret Service/,
  ],
  [
    'no service and no activation (NameHasNoOwner)',
    { stderr: 'Error org.freedesktop.DBus.Error.NameHasNoOwner: Could not get owner of name' },
    'unavailable',
    /no Secret Service/,
  ],
  [
    'an unreachable bus',
    {
      stderr: 'Failed to open connection to "session" message bus: Failed to connect to socket /x: Connection refused',
    },
    'unavailable',
    /cannot connect/,
  ],
  [
    'a service that does not answer',
    { stderr: 'Error org.freedesktop.DBus.Error.NoReply: Did not receive a reply.' },
    'unavailable',
    /did not answer/,
  ],
  ['an unexpected error', { stderr: 'Error org.example.Weird: ?' }, 'unavailable', /unexpected/],
  ['a tool that times out', { timeout: true }, 'unavailable', /did not answer/],
  ['no dbus-send and no busctl', { missing: ['dbus-send', 'busctl'] }, 'unavailable', /neither dbus-send/],
];
for (const [label, state, expected, detail] of HEALTH_CASES) {
  test(`querySecretServiceHealth() reports ${expected} for ${label}`, async () => {
    const health = await querySecretServiceHealth({ exec: fakeDbus(state), address: BUS, timeoutMs: 1_000, env: {} });
    assert.equal(health.backend, 'secret-service');
    assert.equal(health.state, expected);
    assert.match(health.detail ?? '', detail);
  });
}

test('querySecretServiceHealth() falls back to busctl when dbus-send is missing, and parses its output', async () => {
  for (const locked of [false, true]) {
    const exec = fakeDbus({ missing: ['dbus-send'], locked });
    const health = await querySecretServiceHealth({ exec, address: BUS, timeoutMs: 1_000, env: {} });
    assert.equal(health.state, locked ? 'locked' : 'available');
    const busctl = exec.calls.filter((c) => c.file === 'busctl');
    assert.equal(busctl.length, 2);
    assert.ok(busctl.every((c) => c.args[0] === `--address=${BUS}`));
    assert.deepEqual(busctl[1]!.args.slice(2), [
      'get-property',
      'org.freedesktop.secrets',
      '/org/freedesktop/secrets/collection/login',
      'org.freedesktop.Secret.Collection',
      'Locked',
    ]);
  }
});

test('querySecretServiceHealth() asks ReadAlias("default") then Get(Collection, Locked) with dbus-send', async () => {
  const exec = fakeDbus({});
  await querySecretServiceHealth({ exec, address: BUS, timeoutMs: 1_000, env: {} });
  assert.equal(exec.calls.length, 2);
  assert.deepEqual(exec.calls[0]!.args.slice(-3), [
    '/org/freedesktop/secrets',
    'org.freedesktop.Secret.Service.ReadAlias',
    'string:default',
  ]);
  assert.deepEqual(exec.calls[1]!.args.slice(-4), [
    '/org/freedesktop/secrets/collection/login',
    'org.freedesktop.DBus.Properties.Get',
    'string:org.freedesktop.Secret.Collection',
    'string:Locked',
  ]);
  for (const call of exec.calls) assert.ok(call.args.includes('--print-reply') && call.args.includes(`--bus=${BUS}`));
});

test('sessionBusAddress() uses the variable, else $XDG_RUNTIME_DIR/bus when it exists, else nothing (no auto-launch)', () => {
  assert.equal(sessionBusAddress({ DBUS_SESSION_BUS_ADDRESS: BUS }), BUS);
  assert.equal(
    sessionBusAddress({ XDG_RUNTIME_DIR: '/run/user/7' }, (p) => p === '/run/user/7/bus'),
    'unix:path=/run/user/7/bus',
  );
  assert.equal(
    sessionBusAddress({ XDG_RUNTIME_DIR: '/run/user/7' }, () => false),
    undefined,
  );
  assert.equal(
    sessionBusAddress({ XDG_RUNTIME_DIR: 'relative/dir' }, () => true),
    undefined,
  );
  assert.equal(sessionBusAddress({}), undefined);
});
