// An in-memory Keychain for the unit tier (and the port-level security tests of the pure cores): it
// behaves like a real backend (unknown accounts refused with ERR_KEYCHAIN_ACCOUNT, coded errors) and can
// be locked or told to fail one call, and records every call so a test can assert what reached it.
import { CompanionError, type ErrorCode } from '../../src/core/errors.js';
import { isKeychainAccount, type Keychain, type KeychainAccount } from '../../src/core/keychain-port.js';

export type KeychainOp = 'get' | 'set' | 'delete';

export interface KeychainCall {
  readonly op: KeychainOp;
  readonly account: string;
  /** Whether the call succeeded. */
  readonly ok: boolean;
}

export interface MemoryKeychain extends Keychain {
  /** The stored items (inspect or seed them directly). */
  readonly items: Map<KeychainAccount, string>;
  /** Every call, in order. */
  readonly calls: KeychainCall[];
  /** Every call fails with `code` until {@link unlock}. */
  lock(code?: ErrorCode): void;
  unlock(): void;
  /** The next `times` calls of `op` on `account` (or any account) fail with `code`. */
  failNext(op: KeychainOp, account: KeychainAccount | '*', code?: ErrorCode, times?: number): void;
  /** Calls that changed the store successfully. */
  writes(): KeychainCall[];
}

export function createMemoryKeychain(seed: Partial<Record<KeychainAccount, string>> = {}): MemoryKeychain {
  const items = new Map<KeychainAccount, string>();
  for (const [account, value] of Object.entries(seed)) {
    if (isKeychainAccount(account) && value !== undefined) items.set(account, value);
  }
  const calls: KeychainCall[] = [];
  let locked: ErrorCode | null = null;
  const failures: { op: KeychainOp; account: KeychainAccount | '*'; code: ErrorCode; times: number }[] = [];

  function enter(op: KeychainOp, account: unknown): KeychainAccount {
    if (!isKeychainAccount(account)) {
      calls.push({ op, account: String(account), ok: false });
      throw new CompanionError('ERR_KEYCHAIN_ACCOUNT');
    }
    if (locked !== null) {
      calls.push({ op, account, ok: false });
      throw new CompanionError(locked);
    }
    const failure = failures.find((f) => f.op === op && (f.account === '*' || f.account === account) && f.times > 0);
    if (failure !== undefined) {
      failure.times -= 1;
      calls.push({ op, account, ok: false });
      throw new CompanionError(failure.code);
    }
    calls.push({ op, account, ok: true });
    return account;
  }

  return {
    items,
    calls,
    async get(account) {
      const name = enter('get', account);
      return items.get(name) ?? null;
    },
    async set(account, value) {
      const name = enter('set', account);
      items.set(name, value);
    },
    async delete(account) {
      const name = enter('delete', account);
      return items.delete(name);
    },
    lock(code: ErrorCode = 'ERR_KEYCHAIN_LOCKED') {
      locked = code;
    },
    unlock() {
      locked = null;
    },
    failNext(op, account, code: ErrorCode = 'ERR_KEYCHAIN_FAILURE', times = 1) {
      failures.push({ op, account, code, times });
    },
    writes() {
      return calls.filter((c) => c.ok && c.op !== 'get');
    },
  };
}
