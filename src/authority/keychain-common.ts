/**
 * Shared pieces of the keychain backends (D5.3, P-g): the backend interface behind the guard in
 * `keychain.ts`, the health report, the value limit, and the mapping from a native binding's error to one
 * of our codes. Nothing here ever copies a library message into an error: a library message could hold
 * a value (docs/keychain.md, "Errors").
 */
import type { KeychainAccount } from '../core/keychain-port.js';
import { CompanionError, type ErrorCode } from '../core/errors.js';

/** What `health()` reports: the backend's name and whether it can be used now (CONTRACT §6, `doctor`). */
export type KeychainState = 'available' | 'locked' | 'unavailable';

export interface KeychainHealth {
  /** `secret-service`, `macos-keychain`, `windows-dpapi`, `memory` (or `none` on an unknown platform). */
  readonly backend: string;
  readonly state: KeychainState;
  /** One safe sentence for a human: what is wrong and what to do. Never a value. */
  readonly detail?: string;
}

/**
 * One OS store. The guard (`keychain.ts`) has already checked the account and the value and bounds every
 * call with the timeout, so a backend sees only the four accounts and well-formed values within
 * {@link KeychainBackend.maxValueBytes}.
 */
export interface KeychainBackend {
  readonly name: string;
  /** Largest value, in UTF-8 bytes, that the backend stores whole. Larger values are refused, never cut. */
  readonly maxValueBytes: number;
  get(account: KeychainAccount): Promise<string | null>;
  set(account: KeychainAccount, value: string): Promise<void>;
  delete(account: KeychainAccount): Promise<boolean>;
  /** Never rejects; never reads or changes a stored item. */
  health(): Promise<KeychainHealth>;
}

/**
 * The value limit of every backend: 64 KiB of UTF-8. Tokens are a few KiB; a bigger value is a bug or an
 * attack on the store, and one limit everywhere keeps behaviour the same on every platform.
 */
export const MAX_VALUE_BYTES = 64 * 1024;

/** The default bound on one keychain call (a GUI unlock prompt can otherwise block forever). */
export const DEFAULT_TIMEOUT_MS = 15_000;

/** Builds the coded error for a health state that is not `available`. */
export function errorForHealth(health: KeychainHealth): CompanionError {
  const code: ErrorCode = health.state === 'locked' ? 'ERR_KEYCHAIN_LOCKED' : 'ERR_KEYCHAIN_UNAVAILABLE';
  return keychainError(code, health.backend, health.detail);
}

/**
 * A keychain error whose message says which backend and what to do. `detail` is one of our own fixed
 * sentences, never text from a library or a command.
 */
export function keychainError(code: ErrorCode, backend: string, detail?: string): CompanionError {
  const message =
    detail !== undefined
      ? `${backend}: ${detail}`
      : `${backend}: ${MESSAGES[code] ?? 'the keychain reported an error'}${DEFAULT_ADVICE[code] ? `; ${DEFAULT_ADVICE[code]}` : ''}`;
  return new CompanionError(code, message, { detail: { backend } });
}

const MESSAGES: Partial<Record<ErrorCode, string>> = {
  ERR_KEYCHAIN_LOCKED: 'the keychain is locked',
  ERR_KEYCHAIN_UNAVAILABLE: 'no keychain service is available',
  ERR_KEYCHAIN_TIMEOUT: 'the keychain did not answer in time',
  ERR_KEYCHAIN_VALUE_TOO_LARGE: 'the value is larger than the keychain backend accepts',
  ERR_KEYCHAIN_FAILURE: 'the keychain reported an error',
};

const DEFAULT_ADVICE: Partial<Record<ErrorCode, string>> = {
  ERR_KEYCHAIN_LOCKED: 'unlock it and try again',
  ERR_KEYCHAIN_UNAVAILABLE: 'start the OS keychain service and try again (run `companion doctor`)',
  ERR_KEYCHAIN_TIMEOUT: 'it may be waiting for an unlock prompt; unlock the keychain and try again',
  ERR_KEYCHAIN_FAILURE: 'run `companion doctor`; rerun with --debug for the error class',
};

/** What a native binding error means, read from its message (the binding gives every error one code). */
export type BindingFailure = 'locked' | 'unavailable' | 'no-default-collection' | 'too-large' | 'failure';

const LOCKED_PATTERNS = [
  /unlock prompt was dismissed/i, // Secret Service, locked collection (PLATFORM.md)
  /\bis locked\b/i,
  /interaction is not allowed/i, // macOS errSecInteractionNotAllowed (locked, no UI)
  /user canceled the operation/i, // macOS errSecUserCanceled (unlock prompt cancelled)
  /passphrase you entered is not correct/i, // macOS errSecAuthFailed
];
const UNAVAILABLE_PATTERNS = [
  /dbus error/i, // no bus, no service on the bus, the service went away (PLATFORM.md)
  /failed to connect to socket/i,
  /not provided by any \.service files/i,
  /serviceunknown|namehasnoowner|noreply|disconnected/i,
  /no keychain could be found|no default keychain/i, // macOS errSecNoDefaultKeychain
];

/**
 * Classifies an error from `@napi-rs/keyring` by its message and its `cause` chain. The message is only
 * matched, never kept.
 */
export function classifyBindingError(error: unknown): BindingFailure {
  const texts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== null && current !== undefined; depth += 1) {
    if (current instanceof Error) {
      texts.push(current.message);
      current = (current as { cause?: unknown }).cause;
    } else {
      texts.push(typeof current === 'string' ? current : '');
      break;
    }
  }
  const text = texts.join('\n');
  if (LOCKED_PATTERNS.some((p) => p.test(text))) return 'locked';
  if (/no result found/i.test(text)) return 'no-default-collection';
  if (UNAVAILABLE_PATTERNS.some((p) => p.test(text))) return 'unavailable';
  if (/longer than platform limit|too long/i.test(text)) return 'too-large';
  return 'failure';
}

/** Races `work` against `timeoutMs`; the late result of a timed-out call is dropped (never unhandled). */
export async function withTimeout<T>(work: Promise<T>, timeoutMs: number, backend: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(keychainError('ERR_KEYCHAIN_TIMEOUT', backend)), timeoutMs);
  });
  work.catch(() => undefined);
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
