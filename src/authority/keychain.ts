/**
 * The keychain adapter (D5.3, P-g): picks the OS backend for this platform, or the explicit in-memory
 * store, and wraps it in one guard that
 * - accepts only the four {@link KEYCHAIN_ACCOUNTS} (anything else: `ERR_KEYCHAIN_ACCOUNT`, before the
 *   backend is called; the refused name is never echoed, it might be a misplaced token);
 * - accepts only non-empty, well-formed string values up to the backend's limit (larger values:
 *   `ERR_KEYCHAIN_VALUE_TOO_LARGE`, never truncated);
 * - bounds every call with a timeout (`ERR_KEYCHAIN_TIMEOUT`): a GUI unlock prompt can block forever;
 * - lets out only our own coded errors: anything else becomes `ERR_KEYCHAIN_FAILURE` without its message.
 *
 * There is no plaintext fallback: a locked, missing or broken store is an error (docs/keychain.md).
 */
import { KEYCHAIN_ACCOUNTS, isKeychainAccount, type Keychain, type KeychainAccount } from '../core/keychain-port.js';
import {
  CompanionError,
  assertInteger,
  assertOneOf,
  assertString,
  isCompanionError,
  type ErrorCode,
  CodedTypeError,
} from '../core/errors.js';
import {
  DEFAULT_TIMEOUT_MS,
  keychainError,
  withTimeout,
  type KeychainBackend,
  type KeychainHealth,
} from './keychain-common.js';
import { createMemoryBackend } from './keychain-memory.js';
import { createSecretServiceBackend } from './keychain-secret-service.js';
import { createMacosBackend } from './keychain-macos.js';
import { createWindowsBackend } from './keychain-windows.js';

export type { KeychainHealth, KeychainState, KeychainBackend } from './keychain-common.js';
export { DEFAULT_TIMEOUT_MS, MAX_VALUE_BYTES } from './keychain-common.js';
export { MEMORY_ANNOUNCEMENT } from './keychain-memory.js';
export { KEYCHAIN_ACCOUNTS };

/** A keychain with its backend's name and a health check (for `companion doctor`). */
export interface OsKeychain extends Keychain {
  /** `secret-service`, `macos-keychain`, `windows-dpapi` or `memory`. */
  readonly backend: string;
  /** Never rejects; never reads or changes a stored item. */
  health(): Promise<KeychainHealth>;
}

export interface OpenKeychainOptions {
  /** `os`: the platform's keychain; `memory`: the explicit in-memory store (demo/tests only, announced). */
  readonly backend: 'os' | 'memory';
  /** The service name every item is stored under; include the hub identity ({@link keychainServiceFor}). */
  readonly service: string;
  /** Bound on each call in ms (default {@link DEFAULT_TIMEOUT_MS}). */
  readonly timeoutMs?: number;
  /** Where the memory store announces itself (default: a line on stderr). */
  readonly announce?: (line: string) => void;
  /** The platform to choose for (default `process.platform`); for tests. */
  readonly platform?: NodeJS.Platform;
  /** The environment the OS backends read (default `process.env`); for tests. */
  readonly env?: NodeJS.ProcessEnv;
}

/** Longest service name accepted (a hub origin is far shorter). */
const MAX_SERVICE_LENGTH = 255;

/** An installation key as {@link keychainServiceFor} takes it: 16 lowercase hex digits. */
const INSTALLATION_KEY = /^[0-9a-f]{16}$/;

/**
 * The service name for a hub and an installation: `companion:<origin>#<installation key>` (scheme, host,
 * port; the key is a digest of the data dir, never its path: src/shell/config.ts `installationKey`). Two
 * hubs, or two data dirs on one hub, get two names, so their items (the loopback token above all) never
 * mix. Without a key: `companion:<origin>` (the hub alone; only for a health check, which reads no item).
 * Throws `ERR_INVALID_ARG_VALUE` unless `hub` is an http(s) URL and the key, when given, is 16 hex digits.
 */
export function keychainServiceFor(hub: string, installationKey?: string): string {
  assertString(hub, 'hub');
  let url: URL;
  try {
    url = new URL(hub);
  } catch {
    throw argError('ERR_INVALID_ARG_VALUE', 'hub must be an http(s) URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw argError('ERR_INVALID_ARG_VALUE', 'hub must be an http(s) URL');
  if (installationKey === undefined) return `companion:${url.origin}`;
  if (typeof installationKey !== 'string' || !INSTALLATION_KEY.test(installationKey))
    throw argError('ERR_INVALID_ARG_VALUE', 'installationKey must be 16 hex digits');
  return `companion:${url.origin}#${installationKey}`;
}

/**
 * Opens the keychain. Throws `ERR_KEYCHAIN_UNAVAILABLE` for `os` on a platform without a backend
 * (anything but linux, darwin, win32), and `ERR_INVALID_ARG_*` for bad options. Opening does no I/O;
 * the first call checks the store.
 */
export function openKeychain(options: OpenKeychainOptions): OsKeychain {
  assertOneOf(options.backend, 'backend', ['os', 'memory']);
  assertService(options.service);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  assertInteger(timeoutMs, 'timeoutMs', 1, 600_000);
  if (options.backend === 'memory') {
    const announce = options.announce ?? ((line: string) => void process.stderr.write(`${line}\n`));
    return guardKeychainBackend(createMemoryBackend(announce), timeoutMs);
  }
  const env = options.env ?? process.env;
  const common = { service: options.service, timeoutMs, env };
  const platform = options.platform ?? process.platform;
  switch (platform) {
    case 'linux':
      return guardKeychainBackend(createSecretServiceBackend(common), timeoutMs);
    case 'darwin':
      return guardKeychainBackend(createMacosBackend(common), timeoutMs);
    case 'win32':
      return guardKeychainBackend(createWindowsBackend(common), timeoutMs);
    default:
      // Fail closed: no guessed store, no file.
      throw keychainError(
        'ERR_KEYCHAIN_UNAVAILABLE',
        'none',
        `no keychain backend for platform ${JSON.stringify(platform)}`,
      );
  }
}

/**
 * Wraps a backend in the guard described at the top of this file: the account and value checks, the
 * deadline on each call, and only our own coded errors out. Exported so tests can put a spy backend
 * behind the real guard. (Not custody's `guardKeychain` in src/core/custody.ts, which checks a port.)
 * @throws ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE for a bad `timeoutMs`; its calls reject with
 *   ERR_KEYCHAIN_ACCOUNT, ERR_INVALID_ARG_TYPE, ERR_INVALID_ARG_VALUE, ERR_KEYCHAIN_VALUE_TOO_LARGE,
 *   ERR_KEYCHAIN_TIMEOUT, ERR_KEYCHAIN_FAILURE or the backend's own coded error.
 */
export function guardKeychainBackend(backend: KeychainBackend, timeoutMs: number = DEFAULT_TIMEOUT_MS): OsKeychain {
  assertInteger(timeoutMs, 'timeoutMs', 1, 600_000);
  const name = backend.name;

  const run = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await withTimeout(Promise.resolve().then(work), timeoutMs, name);
    } catch (error) {
      if (isCompanionError(error)) throw error;
      // Not ours: its message may quote the store or a value. Keep only the fact.
      throw keychainError('ERR_KEYCHAIN_FAILURE', name);
    }
  };

  return {
    backend: name,
    get(account) {
      return checked(account).then((a) => run(() => backend.get(a)));
    },
    set(account, value) {
      return checked(account).then((a) => {
        checkValue(value, backend);
        return run(() => backend.set(a, value));
      });
    },
    delete(account) {
      return checked(account).then((a) => run(() => backend.delete(a)));
    },
    async health() {
      try {
        return await withTimeout(
          Promise.resolve().then(() => backend.health()),
          timeoutMs,
          name,
        );
      } catch (error) {
        const detail = isCompanionError(error, 'ERR_KEYCHAIN_TIMEOUT')
          ? 'the keychain did not answer in time'
          : 'the health check failed';
        return { backend: name, state: 'unavailable', detail };
      }
    },
  };
}

async function checked(account: unknown): Promise<KeychainAccount> {
  // The refused value is not repeated in the message: a caller may have passed a token by mistake.
  if (!isKeychainAccount(account)) {
    throw new CompanionError(
      'ERR_KEYCHAIN_ACCOUNT',
      `the keychain account is not one of ${KEYCHAIN_ACCOUNTS.join(', ')}`,
    );
  }
  return account;
}

function checkValue(value: unknown, backend: KeychainBackend): asserts value is string {
  if (typeof value !== 'string') throw argError('ERR_INVALID_ARG_TYPE', 'value must be a string');
  if (value.length === 0)
    throw argError('ERR_INVALID_ARG_VALUE', 'value must be a non-empty string (delete the account instead)');
  // A lone surrogate would be replaced on the way to UTF-8 and come back different: refuse, never alter.
  if (!isWellFormed(value)) throw argError('ERR_INVALID_ARG_VALUE', 'value must be well-formed Unicode');
  if (Buffer.byteLength(value, 'utf8') > backend.maxValueBytes) {
    throw new CompanionError(
      'ERR_KEYCHAIN_VALUE_TOO_LARGE',
      `${backend.name}: the value is larger than the ${backend.maxValueBytes}-byte limit of the keychain backend; nothing was stored`,
      {
        detail: { backend: backend.name, limitBytes: backend.maxValueBytes },
      },
    );
  }
}

function isWellFormed(value: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value);
}

function assertService(service: unknown): asserts service is string {
  assertString(service, 'service');
  // eslint-disable-next-line no-control-regex
  if (service.length > MAX_SERVICE_LENGTH || /[\u0000-\u001f\u007f]/.test(service)) {
    throw argError('ERR_INVALID_ARG_VALUE', `service must be at most ${MAX_SERVICE_LENGTH} printable characters`);
  }
}

function argError(code: ErrorCode, message: string): TypeError {
  return new CodedTypeError(code, message);
}
