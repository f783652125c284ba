/**
 * A keychain backend over the `@napi-rs/keyring` native binding, shared by the Linux (Secret Service) and
 * macOS (login keychain) backends. What differs between them is passed in: the entry options and the
 * health check.
 *
 * Three facts of the binding shape this file (measured; docs/keychain.md):
 * - It opens its store once per process, at the first `AsyncEntry`, from the environment of that moment,
 *   and keeps that store (a failure included) for the life of the process. So the health check runs
 *   before an entry is made: an unreachable store is refused by us, and the binding is never left
 *   holding a failed store (or allowed to auto-launch a bus).
 * - The `AsyncEntry` constructor is synchronous and talks to the daemon (it blocks the JS thread, up to
 *   the library's ~2 s D-Bus reply timeout when the daemon hangs); its methods run off the JS thread.
 * - On a locked Secret Service collection, reading an item that was never stored gives `null` and deleting
 *   it gives `false`. An empty answer is therefore confirmed with the health check; locked or unavailable
 *   is an error, never "empty".
 * - Its errors are plain `Error`s whose message may quote the platform; we classify the message and drop it.
 */
import type { KeychainAccount } from '../core/keychain-port.js';
import {
  MAX_VALUE_BYTES,
  classifyBindingError,
  errorForHealth,
  keychainError,
  type KeychainBackend,
  type KeychainHealth,
} from './keychain-common.js';
import type { CompanionError } from '../core/errors.js';
import type { Exec } from './keychain-exec.js';

/** The part of `@napi-rs/keyring`'s `AsyncEntry` that the backends use. */
export interface BindingEntry {
  getPassword(): Promise<string | null>;
  setPassword(password: string): Promise<void>;
  deleteCredential(): Promise<boolean>;
}

/** The binding's entry options (`index.d.ts`: `{ linux?: { store?: 'secret-service' | 'keyutils' } }`). */
export interface BindingEntryOptions {
  readonly linux?: { readonly store?: 'secret-service' | 'keyutils' };
}

export interface KeyringBinding {
  readonly AsyncEntry: new (service: string, account: string, options?: BindingEntryOptions) => BindingEntry;
}

/** Loads the native binding on first use (so the memory backend and unit tests never load it). */
export async function loadKeyringBinding(): Promise<KeyringBinding> {
  const module = (await import('@napi-rs/keyring')) as unknown as KeyringBinding;
  return { AsyncEntry: module.AsyncEntry };
}

/** What an OS backend over the binding is made from (macOS, Secret Service; Windows takes no binding). */
export interface OsBackendOptions {
  /** The service name every item is stored under. */
  readonly service: string;
  /** Bound on a health check's command, in ms. */
  readonly timeoutMs: number;
  /** Injected in unit tests; the real binding otherwise. */
  readonly loadBinding?: () => Promise<KeyringBinding>;
  /** Injected in unit tests; the real command runner otherwise. */
  readonly exec?: Exec;
  /** The environment the backend reads (default `process.env`). */
  readonly env?: NodeJS.ProcessEnv;
}

/** What {@link createBindingBackend} needs: the store's name, its entry options, health check and advice. */
export interface BindingBackendOptions {
  readonly name: string;
  readonly service: string;
  readonly entryOptions: BindingEntryOptions | undefined;
  readonly health: () => Promise<KeychainHealth>;
  readonly loadBinding: () => Promise<KeyringBinding>;
  /** Our own sentence for "the store has no default collection / keychain". */
  readonly noDefaultAdvice: string;
  readonly lockedAdvice: string;
  readonly unavailableAdvice: string;
}

/**
 * A backend over the native binding. Its calls reject with ERR_KEYCHAIN_LOCKED,
 * ERR_KEYCHAIN_UNAVAILABLE, ERR_KEYCHAIN_VALUE_TOO_LARGE or ERR_KEYCHAIN_FAILURE (never a library's
 * message); an empty answer is confirmed by the health check.
 */
export function createBindingBackend(options: BindingBackendOptions): KeychainBackend {
  const { name, service, entryOptions } = options;
  let loaded: Promise<KeyringBinding> | undefined;
  // One entry per account, reused: constructing one is a blocking D-Bus round trip on the JS thread
  // (measured: up to ~2 s against a hung daemon), so it happens once per account, right after a
  // successful health check. An entry holds a session with the daemon; when the daemon goes away the
  // entries are dropped and rebuilt on the next call.
  const entries = new Map<KeychainAccount, BindingEntry>();

  const mapError = (error: unknown): CompanionError => {
    switch (classifyBindingError(error)) {
      case 'locked':
        return keychainError('ERR_KEYCHAIN_LOCKED', name, options.lockedAdvice);
      case 'unavailable':
        return keychainError('ERR_KEYCHAIN_UNAVAILABLE', name, options.unavailableAdvice);
      case 'no-default-collection':
        return keychainError('ERR_KEYCHAIN_UNAVAILABLE', name, options.noDefaultAdvice);
      case 'too-large':
        return keychainError('ERR_KEYCHAIN_VALUE_TOO_LARGE', name);
      case 'failure':
        return keychainError('ERR_KEYCHAIN_FAILURE', name);
    }
  };

  // An entry is made only after the store answered the health check (see the file comment).
  const entry = async (account: KeychainAccount): Promise<{ item: BindingEntry; fresh: boolean }> => {
    const cached = entries.get(account);
    if (cached !== undefined) return { item: cached, fresh: false };
    const health = await options.health();
    if (health.state !== 'available') throw errorForHealth(health);
    loaded ??= options.loadBinding();
    const attempt = loaded;
    let binding: KeyringBinding;
    try {
      binding = await attempt;
    } catch {
      if (loaded === attempt) loaded = undefined;
      throw keychainError('ERR_KEYCHAIN_UNAVAILABLE', name, 'the native keychain binding could not be loaded');
    }
    let item: BindingEntry;
    try {
      item =
        entryOptions === undefined
          ? new binding.AsyncEntry(service, account)
          : new binding.AsyncEntry(service, account, entryOptions);
    } catch (error) {
      throw mapError(error);
    }
    entries.set(account, item);
    return { item, fresh: true };
  };

  /** Runs `operation` on the account's entry; a stale entry (daemon restarted) is rebuilt once. */
  const withEntry = async <T>(account: KeychainAccount, operation: (item: BindingEntry) => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt += 1) {
      const { item, fresh } = await entry(account);
      try {
        return await operation(item);
      } catch (error) {
        const mapped = mapError(error);
        if (mapped.code === 'ERR_KEYCHAIN_UNAVAILABLE') entries.clear();
        if (mapped.code !== 'ERR_KEYCHAIN_UNAVAILABLE' || fresh || attempt > 0) throw mapped;
      }
    }
  };

  // An empty answer counts only when the store is unlocked and reachable right now.
  const confirmEmpty = async (): Promise<void> => {
    const health = await options.health();
    if (health.state !== 'available') throw errorForHealth(health);
  };

  return {
    name,
    maxValueBytes: MAX_VALUE_BYTES,
    async get(account) {
      const value = await withEntry(account, (item) => item.getPassword());
      if (value === null) await confirmEmpty();
      return value;
    },
    async set(account, value) {
      await withEntry(account, (item) => item.setPassword(value));
    },
    async delete(account) {
      const deleted = await withEntry(account, (item) => item.deleteCredential());
      if (!deleted) await confirmEmpty();
      return deleted;
    },
    health: options.health,
  };
}
