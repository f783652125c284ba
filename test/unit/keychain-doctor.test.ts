// `companion doctor` over an injected keychain: the JSON shape (CONTRACT §6), the human form, the exit
// status and the one stderr line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDoctorCommand, type DoctorDeps } from '../../src/cli/cmd-doctor.js';
import { openKeychain, type KeychainHealth, type OsKeychain } from '../../src/authority/keychain.js';
import { main } from '../../src/cli/main.js';
import { COMMANDS } from '../../src/cli/commands.js';
import type { Io } from '../../src/cli/io.js';

function captureIo(): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (l) => stdout.push(l),
    err: (l) => stderr.push(l),
    write: (t) => stdout.push(t),
    isTty: false,
    env: {},
  };
}

function deps(health: KeychainHealth, calls: string[] = []): Partial<DoctorDeps> {
  return {
    platform: 'linux',
    arch: 'x64',
    nodeVersion: 'v20.20.2',
    detectSandboxMode: async () => 'none',
    detectGpu: async () => ({ devices: [], backend: 'cpu' }),
    openKeychain: (options) => {
      calls.push(`open ${options.backend} ${options.service}`);
      const keychain: OsKeychain = {
        backend: health.backend,
        get: async () => {
          calls.push('get');
          return null;
        },
        set: async () => {
          calls.push('set');
        },
        delete: async () => {
          calls.push('delete');
          return false;
        },
        health: async () => {
          calls.push('health');
          return health;
        },
      };
      return keychain;
    },
  };
}

test('doctor --json prints one JSON object with keychain, sandbox, node and platform and exits 0 when available', async () => {
  const io = captureIo();
  const calls: string[] = [];
  const status = await createDoctorCommand(deps({ backend: 'secret-service', state: 'available' }, calls)).run(
    ['--json'],
    io,
  );
  assert.equal(status, 0);
  assert.equal(io.stdout.length, 1);
  assert.deepEqual(JSON.parse(io.stdout[0]!), {
    keychain: { backend: 'secret-service', state: 'available' },
    sandbox: 'none',
    gpu: { devices: [], backend: 'cpu' },
    node: 'v20.20.2',
    platform: 'linux-x64',
  });
  assert.deepEqual(io.stderr, []);
  assert.deepEqual(
    calls,
    ['open os companion:doctor', 'health'],
    'only the health check: no item is read, written or deleted',
  );
});

for (const state of ['locked', 'unavailable'] as const) {
  test(`doctor exits 1 with one stderr line when the keychain is ${state}`, async () => {
    const io = captureIo();
    const detail = `the keyring is ${state}; do the thing`;
    const status = await createDoctorCommand(deps({ backend: 'secret-service', state, detail })).run(['--json'], io);
    assert.equal(status, 1);
    const report = JSON.parse(io.stdout[0]!) as { keychain: { state: string; detail: string } };
    assert.equal(report.keychain.state, state);
    assert.equal(report.keychain.detail, detail);
    assert.equal(io.stdout.length, 2, 'the report, then the one error object');
    assert.equal(
      (JSON.parse(io.stdout[1]!) as { error: { code: string } }).error.code,
      state === 'locked' ? 'ERR_KEYCHAIN_LOCKED' : 'ERR_KEYCHAIN_UNAVAILABLE',
    );
    assert.equal(io.stderr.length, 1);
    assert.match(io.stderr[0]!, new RegExp(`^companion doctor: keychain ${state} \\(secret-service\\): `));
  });
}

test('doctor without --json prints the human form', async () => {
  const io = captureIo();
  const status = await createDoctorCommand(deps({ backend: 'secret-service', state: 'available' })).run([], io);
  assert.equal(status, 0);
  assert.deepEqual(io.stdout, [
    'keychain  secret-service: available',
    'sandbox   none',
    'gpu       cpu; devices: none',
    'node      v20.20.2',
    'platform  linux-x64',
  ]);
});

test('doctor --keychain memory checks the explicit in-memory store and it announces itself on stderr', async () => {
  const io = captureIo();
  const status = await createDoctorCommand({
    platform: 'linux',
    arch: 'x64',
    nodeVersion: 'v20',
    detectSandboxMode: async () => 'none',
    detectGpu: async () => ({ devices: [], backend: 'cpu' }),
    openKeychain,
  }).run(['--keychain', 'memory', '--json'], io);
  assert.equal(status, 0);
  assert.equal((JSON.parse(io.stdout[0]!) as { keychain: { backend: string } }).keychain.backend, 'memory');
  assert.equal(io.stderr.length, 1);
  assert.match(io.stderr[0]!, /in-memory keychain/);
});

test('doctor on a platform without a backend reports backend none, unavailable, exit 1', async () => {
  const io = captureIo();
  const status = await createDoctorCommand({
    platform: 'aix',
    arch: 'ppc64',
    nodeVersion: 'v20',
    detectSandboxMode: async () => 'none',
    detectGpu: async () => ({ devices: [], backend: 'cpu' }),
    openKeychain: (o) => openKeychain({ ...o, platform: 'aix' }),
  }).run(['--json'], io);
  assert.equal(status, 1);
  const report = JSON.parse(io.stdout[0]!) as { keychain: { backend: string; state: string } };
  assert.deepEqual([report.keychain.backend, report.keychain.state], ['none', 'unavailable']);
  assert.equal(io.stderr.length, 1);
});

test('doctor refuses an unknown argument or keychain value as a usage error (exit 2)', async () => {
  for (const args of [['--bogus'], ['--keychain', 'plaintext'], ['--keychain'], ['extra']]) {
    const io = captureIo();
    const saved = COMMANDS.findIndex((c) => c.name === 'doctor');
    const original = COMMANDS[saved]!;
    COMMANDS[saved] = createDoctorCommand(deps({ backend: 'secret-service', state: 'available' }));
    try {
      assert.equal(await main(['doctor', ...args], io), 2);
    } finally {
      COMMANDS[saved] = original;
    }
    assert.equal(io.stderr.length, 1);
    assert.match(io.stderr[0]!, /companion doctor: .*--help/);
  }
});

test('doctor is registered in the command table and has --help', async () => {
  const io = captureIo();
  assert.equal(await main(['doctor', '--help'], io), 0);
  assert.match(io.stdout.join('\n'), /Usage: companion doctor \[--json\]/);
});
