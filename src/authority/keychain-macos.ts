/**
 * macOS backend: generic-password items in the user's login keychain through `@napi-rs/keyring` (which
 * calls the Security framework in-process: no `security` command, so no value ever reaches an argv).
 *
 * Device-local: an unsigned Node process writes to the file-based login keychain, which iCloud Keychain
 * does not sync. `kSecAttrAccessibleWhenUnlockedThisDeviceOnly` belongs to the data-protection keychain,
 * which needs a signed app with a keychain-access-group entitlement; until Companion ships signed
 * (packaging), items live in the login keychain, are readable while it is unlocked, and are guarded by its
 * per-item access list (docs/keychain.md, "macOS").
 *
 * Health: `/usr/bin/security show-keychain-info` on the default keychain (no item is read or changed).
 * NOT YET RUN ON A REAL MAC (docs/keychain.md).
 */
import type { KeychainBackend, KeychainHealth } from './keychain-common.js';
import { createBindingBackend, loadKeyringBinding, type OsBackendOptions } from './keychain-binding.js';
import { pickEnv, runCommand, type Exec } from './keychain-exec.js';

export const MACOS_BACKEND = 'macos-keychain';
export const SECURITY_TOOL = '/usr/bin/security';

const ADVICE = {
  locked: 'the login keychain is locked; unlock it (log in, or open Keychain Access) and try again',
  noKeychain: 'there is no default keychain; restore the login keychain in Keychain Access',
  unavailable: 'the macOS keychain could not be reached',
  timeout: 'the macOS keychain did not answer in time (an unlock prompt may be waiting)',
} as const;

const health = (state: KeychainHealth['state'], detail?: string): KeychainHealth =>
  detail === undefined ? { backend: MACOS_BACKEND, state } : { backend: MACOS_BACKEND, state, detail };

/** Runs `security show-keychain-info` (argv holds no secret) and maps its outcome to a state. */
export async function queryMacosHealth(
  exec: Exec,
  timeoutMs: number,
  env: Readonly<Record<string, string>>,
): Promise<KeychainHealth> {
  const result = await exec(SECURITY_TOOL, ['show-keychain-info'], { timeoutMs, env });
  if (result.kind === 'not-found' || result.kind === 'spawn-failed') return health('unavailable', ADVICE.unavailable);
  if (result.kind === 'timeout') return health('unavailable', ADVICE.timeout);
  if (result.status === 0) return health('available');
  const text = `${result.stdout}\n${result.stderr}`;
  if (/interaction is not allowed|is locked|user canceled|passphrase you entered is not correct/i.test(text))
    return health('locked', ADVICE.locked);
  if (/no default keychain|could not be found/i.test(text)) return health('unavailable', ADVICE.noKeychain);
  return health('unavailable', ADVICE.unavailable);
}

/**
 * Creates the macOS backend: login-keychain items through the binding, health from `security`. Its
 * calls reject with our keychain codes only (see {@link createBindingBackend}).
 */
export function createMacosBackend(options: OsBackendOptions): KeychainBackend {
  const exec = options.exec ?? runCommand;
  const env = pickEnv(options.env ?? process.env, ['HOME', 'USER', 'LOGNAME', 'TMPDIR']);
  return createBindingBackend({
    name: MACOS_BACKEND,
    service: options.service,
    entryOptions: undefined,
    health: () => queryMacosHealth(exec, options.timeoutMs, { ...env, LC_ALL: 'C' }),
    loadBinding: options.loadBinding ?? loadKeyringBinding,
    noDefaultAdvice: ADVICE.noKeychain,
    lockedAdvice: ADVICE.locked,
    unavailableAdvice: ADVICE.unavailable,
  });
}
