// The Windows DPAPI backend with an injected PowerShell stand-in. It cannot run here (Linux): these tests
// check the command it runs (argv fixed, value only on stdin), the files it writes and its errors. What has
// and has not run on a real Windows machine: docs/keychain.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createWindowsBackend,
  dpapiFolder,
  powershellPath,
  POWERSHELL_ARGS,
} from '../../src/authority/keychain-windows.js';
import { guardKeychainBackend } from '../../src/authority/keychain.js';
import type { Exec, ExecResult } from '../../src/authority/keychain-exec.js';
import type { KeychainAccount } from '../../src/core/keychain-port.js';

const SECRET = 'win-secret-5e1b77-value';
const SERVICE = 'companion:https://hub.example';

interface Call {
  file: string;
  args: readonly string[];
  input: string;
  env: Readonly<Record<string, string>>;
}

/**
 * A DPAPI stand-in: "protect" returns MAGIC ‖ sha256(entropy) ‖ data XOR 0x5a, "unprotect" checks the
 * entropy hash (as DPAPI does) and exits 3 (CryptographicException) when it differs.
 */
function fakePowershell(override?: ExecResult): Exec & { calls: Call[] } {
  const calls: Call[] = [];
  const exec = (async (file, args, options) => {
    calls.push({ file, args, input: options.input ?? '', env: options.env });
    if (override) return override;
    const [entropyB64, dataB64] = (options.input ?? '').split('\n');
    const entropy = Buffer.from(entropyB64 ?? '', 'base64');
    const data = Buffer.from(dataB64 ?? '', 'base64');
    const tag = createHash('sha256').update(entropy).digest();
    if (args === POWERSHELL_ARGS.protect) {
      const body = Buffer.from(data.map((b) => b ^ 0x5a));
      return {
        kind: 'exited',
        status: 0,
        stdout: Buffer.concat([Buffer.from('DPAPI'), tag, body]).toString('base64'),
        stderr: '',
      };
    }
    if (args === POWERSHELL_ARGS.unprotect) {
      if (!data.subarray(5, 37).equals(tag)) return { kind: 'exited', status: 3, stdout: '', stderr: '' };
      return {
        kind: 'exited',
        status: 0,
        stdout: Buffer.from(data.subarray(37).map((b) => b ^ 0x5a)).toString('base64'),
        stderr: '',
      };
    }
    return { kind: 'exited', status: 4, stdout: '', stderr: '' };
  }) as Exec & { calls: Call[] };
  exec.calls = calls;
  return exec;
}

function setup(t: { after(fn: () => void): void }, override?: ExecResult, envExtra: NodeJS.ProcessEnv = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'companion-dpapi-unit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const exec = fakePowershell(override);
  const env: NodeJS.ProcessEnv = {
    LOCALAPPDATA: dir,
    APPDATA: join(dir, 'Roaming'),
    SystemRoot: 'C:\\Windows',
    USERPROFILE: 'C:\\Users\\u',
    ...envExtra,
  };
  const keychain = guardKeychainBackend(createWindowsBackend({ service: SERVICE, timeoutMs: 1_000, exec, env }), 1_000);
  return { dir, exec, keychain, env };
}

function decodeScript(args: readonly string[]): string {
  return Buffer.from(args[args.length - 1]!, 'base64').toString('utf16le');
}

test('the Windows backend round-trips Unicode and a 16 KiB value through DPAPI blobs under LOCALAPPDATA', async (t) => {
  const { dir, keychain } = setup(t);
  const unicode = 'héllo wörld 🔑 — 日本語 ✓';
  const large = `eyJ${'A'.repeat(16 * 1024)}.sig`;
  await keychain.set('access-token', unicode);
  await keychain.set('refresh-token', large);
  assert.equal(await keychain.get('access-token'), unicode);
  assert.equal(await keychain.get('refresh-token'), large);
  const folder = dpapiFolder(dir, SERVICE);
  assert.ok(folder.startsWith(join(dir, 'Companion', 'keychain')));
  assert.deepEqual(readdirSync(folder).sort(), ['access-token.dpapi', 'refresh-token.dpapi']);
  assert.ok(!existsSync(join(dir, 'Roaming')), 'nothing goes to the roaming APPDATA');
});

test('the Windows backend runs the same fixed PowerShell argv for every value, and the value goes only on stdin', async (t) => {
  const { exec, keychain } = setup(t, undefined, { COMPANION_OTHER: SECRET });
  await keychain.set('access-token', SECRET);
  assert.equal(await keychain.get('access-token'), SECRET);
  await keychain.set('loopback-token', `${SECRET}-2`);
  assert.equal(exec.calls.length, 3);
  for (const call of exec.calls) {
    assert.equal(call.file, 'C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe');
    assert.ok(call.args === POWERSHELL_ARGS.protect || call.args === POWERSHELL_ARGS.unprotect);
    assert.ok(!call.args.join(' ').includes(SECRET));
    assert.ok(!decodeScript(call.args).includes(SECRET));
    assert.ok(!JSON.stringify(call.env).includes(SECRET), 'no unrelated variable reaches the child');
  }
  const stdin = exec.calls[0]!.input.split('\n');
  assert.equal(Buffer.from(stdin[1]!, 'base64').toString('utf8'), SECRET);
});

test('the Windows backend script uses ProtectedData with scope CurrentUser and reads stdin', () => {
  for (const args of [POWERSHELL_ARGS.protect, POWERSHELL_ARGS.unprotect]) {
    assert.deepEqual(args.slice(0, 4), ['-NoLogo', '-NoProfile', '-NonInteractive', '-EncodedCommand']);
    const script = decodeScript(args);
    assert.match(script, /\[System\.Security\.Cryptography\.DataProtectionScope\]::CurrentUser/);
    assert.match(script, /\[Console\]::In\.ReadLine\(\)/);
    assert.doesNotMatch(script, /LocalMachine/);
  }
  assert.match(decodeScript(POWERSHELL_ARGS.protect), /ProtectedData\]::Protect\(/);
  assert.match(decodeScript(POWERSHELL_ARGS.unprotect), /ProtectedData\]::Unprotect\(/);
  assert.equal(powershellPath({ SystemRoot: 'D:\\Win' }), 'D:\\Win\\System32\\WindowsPowerShell\\v1.0\\powershell.exe');
});

test('the Windows backend binds a blob to its account: a blob copied to another account does not open', async (t) => {
  const { dir, keychain } = setup(t);
  await keychain.set('access-token', SECRET);
  const folder = dpapiFolder(dir, SERVICE);
  copyFileSync(join(folder, 'access-token.dpapi'), join(folder, 'refresh-token.dpapi'));
  await assert.rejects(keychain.get('refresh-token'), { code: 'ERR_KEYCHAIN_FAILURE' });
});

test('the Windows backend keeps two services in two folders', async (t) => {
  const { dir, exec, env } = setup(t);
  const a = guardKeychainBackend(
    createWindowsBackend({ service: 'companion:https://a.example', timeoutMs: 1_000, exec, env }),
    1_000,
  );
  const b = guardKeychainBackend(
    createWindowsBackend({ service: 'companion:https://b.example', timeoutMs: 1_000, exec, env }),
    1_000,
  );
  await a.set('access-token', 'for-a');
  assert.equal(await b.get('access-token'), null);
  assert.notEqual(dpapiFolder(dir, 'companion:https://a.example'), dpapiFolder(dir, 'companion:https://b.example'));
});

test('the Windows backend delete() removes the blob and reports whether there was one', async (t) => {
  const { dir, keychain } = setup(t);
  await keychain.set('installation-id', 'id-1');
  assert.equal(await keychain.delete('installation-id'), true);
  assert.equal(await keychain.delete('installation-id'), false);
  assert.equal(await keychain.get('installation-id'), null);
  assert.deepEqual(readdirSync(dpapiFolder(dir, SERVICE)), []);
});

test('the Windows backend overwrites atomically and leaves no temp file', async (t) => {
  const { dir, keychain } = setup(t);
  await keychain.set('access-token', 'first');
  await keychain.set('access-token', 'second');
  assert.equal(await keychain.get('access-token'), 'second');
  assert.deepEqual(readdirSync(dpapiFolder(dir, SERVICE)), ['access-token.dpapi']);
});

const FAILURES: [string, ExecResult, string][] = [
  ['PowerShell is missing', { kind: 'not-found' }, 'ERR_KEYCHAIN_UNAVAILABLE'],
  ['PowerShell times out', { kind: 'timeout' }, 'ERR_KEYCHAIN_TIMEOUT'],
  [
    'DPAPI throws a CryptographicException (exit 3)',
    { kind: 'exited', status: 3, stdout: '', stderr: SECRET },
    'ERR_KEYCHAIN_FAILURE',
  ],
  [
    'PowerShell fails otherwise (exit 4)',
    { kind: 'exited', status: 4, stdout: '', stderr: `#< CLIXML ${SECRET}` },
    'ERR_KEYCHAIN_FAILURE',
  ],
  [
    'PowerShell prints something that is not base64',
    { kind: 'exited', status: 0, stdout: `not base64 ${SECRET}`, stderr: '' },
    'ERR_KEYCHAIN_FAILURE',
  ],
];
for (const [label, result, code] of FAILURES) {
  test(`the Windows backend fails with ${code} when ${label}, writes nothing and quotes no output`, async (t) => {
    const { dir, keychain } = setup(t, result);
    await assert.rejects(keychain.set('access-token', SECRET), (error: Error & { code?: string }) => {
      assert.equal(error.code, code);
      assert.ok(!error.message.includes(SECRET));
      return true;
    });
    assert.ok(!existsSync(dpapiFolder(dir, SERVICE)) || readdirSync(dpapiFolder(dir, SERVICE)).length === 0);
    assert.equal((await keychain.health()).state, 'unavailable');
  });
}

test('the Windows backend refuses to work without an absolute LOCALAPPDATA (and never uses APPDATA)', async (t) => {
  for (const local of [undefined, '', 'relative\\path']) {
    const dir = mkdtempSync(join(tmpdir(), 'companion-dpapi-unit-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const env: NodeJS.ProcessEnv = { APPDATA: dir, SystemRoot: 'C:\\Windows' };
    if (local !== undefined) env.LOCALAPPDATA = local;
    const exec = fakePowershell();
    const keychain = guardKeychainBackend(
      createWindowsBackend({ service: SERVICE, timeoutMs: 1_000, exec, env }),
      1_000,
    );
    await assert.rejects(keychain.set('access-token', SECRET), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
    await assert.rejects(keychain.get('access-token'), { code: 'ERR_KEYCHAIN_UNAVAILABLE' });
    const health = await keychain.health();
    assert.equal(health.state, 'unavailable');
    assert.match(health.detail ?? '', /LOCALAPPDATA/);
    assert.deepEqual(readdirSync(dir), []);
  }
});

test('the Windows backend health() round-trips random bytes in memory and stores nothing', async (t) => {
  const { dir, exec, keychain } = setup(t);
  assert.deepEqual(await keychain.health(), { backend: 'windows-dpapi', state: 'available' });
  assert.equal(exec.calls.length, 2);
  assert.deepEqual(readdirSync(dir), []);
});

test('the Windows backend reports a corrupt blob as ERR_KEYCHAIN_FAILURE', async (t) => {
  const { dir, keychain } = setup(t);
  await keychain.set('access-token', SECRET);
  writeFileSync(join(dpapiFolder(dir, SERVICE), 'access-token.dpapi'), 'garbage');
  await assert.rejects(keychain.get('access-token' as KeychainAccount), { code: 'ERR_KEYCHAIN_FAILURE' });
  assert.ok(!readFileSync(join(dpapiFolder(dir, SERVICE), 'access-token.dpapi'), 'utf8').includes(SECRET));
});
