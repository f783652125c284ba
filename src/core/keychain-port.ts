/**
 * The keychain port (D5.3): the one narrow interface custody talks to. Backends live in
 * `src/authority/` (Secret Service, macOS Keychain, Windows DPAPI, explicit in-memory store); tests swap
 * in a fake. Only the four {@link KEYCHAIN_ACCOUNTS} exist; a backend refuses any other name with
 * `ERR_KEYCHAIN_ACCOUNT` before touching the store.
 */

/** The four accounts Companion stores (docs/decisions.md, "Keychain accounts"). */
export const KEYCHAIN_ACCOUNTS = ['refresh-token', 'access-token', 'loopback-token', 'installation-id'] as const;
/** One of the four {@link KEYCHAIN_ACCOUNTS}. */
export type KeychainAccount = (typeof KEYCHAIN_ACCOUNTS)[number];

/** True when `value` is exactly one of the four {@link KEYCHAIN_ACCOUNTS} (a type guard; never throws). */
export function isKeychainAccount(value: unknown): value is KeychainAccount {
  return typeof value === 'string' && (KEYCHAIN_ACCOUNTS as readonly string[]).includes(value);
}

/**
 * Errors: `ERR_KEYCHAIN_ACCOUNT` (unknown account), `ERR_KEYCHAIN_LOCKED`, `ERR_KEYCHAIN_UNAVAILABLE`,
 * `ERR_KEYCHAIN_TIMEOUT`, `ERR_KEYCHAIN_VALUE_TOO_LARGE`, `ERR_KEYCHAIN_FAILURE`. Never a fallback store.
 */
export interface Keychain {
  /** The stored value, or null when the account holds nothing. */
  get(account: KeychainAccount): Promise<string | null>;
  set(account: KeychainAccount, value: string): Promise<void>;
  /** True when an item was deleted, false when there was none. */
  delete(account: KeychainAccount): Promise<boolean>;
}
