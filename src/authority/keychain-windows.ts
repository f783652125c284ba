/**
 * Windows backend: per-user DPAPI (`ProtectedData`, scope `CurrentUser`) blobs in the local, non-roaming
 * app-data folder: `%LOCALAPPDATA%\Companion\keychain\<service hash>\<account>.dpapi`.
 *
 * Why not Credential Manager (what `@napi-rs/keyring` uses on Windows): its entries roam with a roaming
 * profile (the contract wants device-local) and it caps a secret at 2560 bytes, which a JWT can exceed.
 * A DPAPI `CurrentUser` blob can only be opened by the same Windows user (on this machine, unless the
 * user's DPAPI master key itself roams with a domain roaming profile: docs/keychain.md), and
 * `%LOCALAPPDATA%` never roams. The entropy binds each blob to its service and account, so a blob copied
 * to another account's file does not open.
 *
 * Protect/unprotect run in Windows PowerShell (`System.Security.Cryptography.ProtectedData`) from a fixed
 * script passed with `-EncodedCommand`: argv is the same for every call and holds no value; the value and
 * the entropy go over stdin, the result comes back over stdout. Node writes the blob atomically
 * (src/common/private-file.ts: a random O_EXCL temp file, fsynced, renamed into place).
 *
 * NOT YET RUN ON A REAL WINDOWS MACHINE (docs/keychain.md): unit tests check the argv, stdin, files.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, unlink } from 'node:fs/promises';
import { isAbsolute, join, win32 } from 'node:path';
import { ensurePrivateDir, writePrivateFileAtomic } from '../common/private-file.js';
import type { KeychainAccount } from '../core/keychain-port.js';
import { isCompanionError } from '../core/errors.js';
import { MAX_VALUE_BYTES, keychainError, type KeychainBackend, type KeychainHealth } from './keychain-common.js';
import type { OsBackendOptions } from './keychain-binding.js';
import { pickEnv, runCommand } from './keychain-exec.js';

export const WINDOWS_BACKEND = 'windows-dpapi';

const script = (operation: 'Protect' | 'Unprotect'): string =>
  [
    "$ErrorActionPreference = 'Stop'",
    'try {',
    '  Add-Type -AssemblyName System.Security',
    '  $entropy = [Convert]::FromBase64String([Console]::In.ReadLine())',
    '  $data = [Convert]::FromBase64String([Console]::In.ReadLine())',
    `  $out = [System.Security.Cryptography.ProtectedData]::${operation}($data, $entropy, [System.Security.Cryptography.DataProtectionScope]::CurrentUser)`,
    '  [Array]::Clear($data, 0, $data.Length)',
    '  [Console]::Out.Write([Convert]::ToBase64String($out))',
    '  [Array]::Clear($out, 0, $out.Length)',
    '  exit 0',
    '} catch [System.Security.Cryptography.CryptographicException] { exit 3 } catch { exit 4 }',
  ].join('\n');

const encoded = (text: string): string => Buffer.from(text, 'utf16le').toString('base64');

/** The fixed argv of the two operations (exported for the tests that prove it holds no value). */
export const POWERSHELL_ARGS = Object.freeze({
  protect: Object.freeze(['-NoLogo', '-NoProfile', '-NonInteractive', '-EncodedCommand', encoded(script('Protect'))]),
  unprotect: Object.freeze([
    '-NoLogo',
    '-NoProfile',
    '-NonInteractive',
    '-EncodedCommand',
    encoded(script('Unprotect')),
  ]),
});

/** `%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe`: an absolute path, never a PATH lookup. */
export function powershellPath(env: NodeJS.ProcessEnv): string {
  const root = env.SystemRoot ?? env.SYSTEMROOT ?? env.windir ?? 'C:\\Windows';
  return win32.join(root, 'System32', 'WindowsPowerShell', 'v1.0', 'powershell.exe');
}

const CHILD_ENV = [
  'SystemRoot',
  'SYSTEMROOT',
  'windir',
  'SystemDrive',
  'TEMP',
  'TMP',
  'USERPROFILE',
  'USERNAME',
  'USERDOMAIN',
  'LOCALAPPDATA',
  'APPDATA',
  'PATH',
  'PATHEXT',
  'ComSpec',
  'PSModulePath',
  'ProgramData',
  'ProgramFiles',
];

const ADVICE = {
  noAppData:
    'LOCALAPPDATA is not set to an absolute path; companion stores DPAPI blobs only in the local (non-roaming) app-data folder',
  noPowershell: 'Windows PowerShell (powershell.exe) was not found under %SystemRoot%',
  timeout: 'Windows PowerShell did not answer in time',
  cannotOpen: 'a stored item could not be opened by this Windows user (DPAPI); sign in again',
  failure: 'Windows PowerShell failed to run DPAPI',
} as const;

/** The folder of one service's blobs (exported for tests and docs). */
export function dpapiFolder(localAppData: string, service: string): string {
  const digest = createHash('sha256').update(service, 'utf8').digest('hex').slice(0, 32);
  return join(localAppData, 'Companion', 'keychain', digest);
}

/**
 * Creates the Windows backend (DPAPI blobs under `%LOCALAPPDATA%`). Its calls reject with
 * ERR_KEYCHAIN_UNAVAILABLE (no LOCALAPPDATA, no PowerShell), ERR_KEYCHAIN_TIMEOUT or ERR_KEYCHAIN_FAILURE.
 */
export function createWindowsBackend(options: Omit<OsBackendOptions, 'loadBinding'>): KeychainBackend {
  const exec = options.exec ?? runCommand;
  const env = options.env ?? process.env;
  const childEnv = pickEnv(env, CHILD_ENV);
  const powershell = powershellPath(env);
  const name = WINDOWS_BACKEND;

  const folder = (): string => {
    const local = env.LOCALAPPDATA;
    // Only the non-roaming folder; never %APPDATA% (roams) and never a relative path.
    if (typeof local !== 'string' || local.length === 0 || !isAbsolute(local)) {
      throw keychainError('ERR_KEYCHAIN_UNAVAILABLE', name, ADVICE.noAppData);
    }
    return dpapiFolder(local, options.service);
  };
  const entropy = (account: string): Buffer =>
    createHash('sha256').update(`companion-keychain\u0000${options.service}\u0000${account}`, 'utf8').digest();

  const dpapi = async (operation: 'protect' | 'unprotect', data: Buffer, extra: Buffer): Promise<Buffer> => {
    const result = await exec(powershell, POWERSHELL_ARGS[operation], {
      input: `${extra.toString('base64')}\n${data.toString('base64')}\n`,
      timeoutMs: options.timeoutMs,
      env: childEnv,
    });
    if (result.kind === 'not-found') throw keychainError('ERR_KEYCHAIN_UNAVAILABLE', name, ADVICE.noPowershell);
    if (result.kind === 'timeout') throw keychainError('ERR_KEYCHAIN_TIMEOUT', name, ADVICE.timeout);
    if (result.kind === 'spawn-failed') throw keychainError('ERR_KEYCHAIN_FAILURE', name, ADVICE.failure);
    if (result.status === 3) throw keychainError('ERR_KEYCHAIN_FAILURE', name, ADVICE.cannotOpen);
    const text = result.stdout.trim();
    if (result.status !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text))
      throw keychainError('ERR_KEYCHAIN_FAILURE', name, ADVICE.failure);
    return Buffer.from(text, 'base64');
  };

  const file = (account: KeychainAccount): string => join(folder(), `${account}.dpapi`);

  return {
    name,
    maxValueBytes: MAX_VALUE_BYTES,
    async get(account) {
      const path = file(account);
      let blob: Buffer;
      try {
        blob = await readFile(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw keychainError('ERR_KEYCHAIN_FAILURE', name);
      }
      const plain = await dpapi('unprotect', blob, entropy(account));
      try {
        return new TextDecoder('utf-8', { fatal: true }).decode(plain);
      } catch {
        throw keychainError('ERR_KEYCHAIN_FAILURE', name, ADVICE.cannotOpen);
      } finally {
        plain.fill(0);
      }
    },
    async set(account, value) {
      const path = file(account);
      const plain = Buffer.from(value, 'utf8');
      let blob: Buffer;
      try {
        blob = await dpapi('protect', plain, entropy(account));
      } finally {
        plain.fill(0);
      }
      try {
        await ensurePrivateDir(folder());
        await writePrivateFileAtomic(path, blob);
      } catch {
        throw keychainError('ERR_KEYCHAIN_FAILURE', name);
      }
    },
    async delete(account) {
      const path = file(account);
      try {
        await unlink(path);
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw keychainError('ERR_KEYCHAIN_FAILURE', name);
      }
    },
    async health(): Promise<KeychainHealth> {
      try {
        folder();
        // A round trip of random, non-secret bytes in memory: proves DPAPI works for this user, stores nothing.
        const probe = randomBytes(16);
        const extra = randomBytes(16);
        const back = await dpapi('unprotect', await dpapi('protect', probe, extra), extra);
        if (!back.equals(probe)) return { backend: name, state: 'unavailable', detail: ADVICE.failure };
        return { backend: name, state: 'available' };
      } catch (error) {
        // Our own errors carry a fixed sentence; anything else is described generically.
        const detail = isCompanionError(error) ? error.message.replace(/^windows-dpapi: /, '') : ADVICE.failure;
        return { backend: name, state: 'unavailable', detail };
      }
    },
  };
}
