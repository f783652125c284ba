/**
 * A keychain backend over the `@napi-rs/keyring` native binding, shared by the Linux (Secret Service) and
 * macOS (login keychain) backends. What differs between them is passed in: the entry options and the
 * health check.
 *
 * Three facts of the binding shape this file (measured; docs/keychain.md):
 * - It opens its store once per process, at the first `AsyncEntry`, from the environment of that moment,
 *   and keeps that store (a failure included) for the life of the process. So the health check runs
 *   before the first entry is made: an unreachable store is refused by us, and the binding is never left
 *   holding a failed store (or allowed to auto-launch a bus).
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

export function createBindingBackend(options: BindingBackendOptions): KeychainBackend {
  const { name, service, entryOptions } = options;
  let ready: Promise<KeyringBinding> | undefined;

  // The first entry is made only after the store answered the health check (see the file comment).
  const binding = (): Promise<KeyringBinding> => {
    ready ??= (async () => {
      const health = await options.health();
      if (health.state !== 'available') throw errorForHealth(health);
      return options.loadBinding();
    })();
    const attempt = ready;
    attempt.catch(() => {
      if (ready === attempt) ready = undefined; // not constructed: a later call may retry
    });
    return attempt;
  };

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

  const entry = async (account: KeychainAccount): Promise<BindingEntry> => {
    const { AsyncEntry } = await binding();
    try {
      return entryOptions === undefined ? new AsyncEntry(service, account) : new AsyncEntry(service, account, entryOptions);
    } catch (error) {
      throw mapError(error);
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
      const item = await entry(account);
      let value: string | null;
      try {
        value = await item.getPassword();
      } catch (error) {
        throw mapError(error);
      }
      if (value === null) await confirmEmpty();
      return value;
    },
    async set(account, value) {
      const item = await entry(account);
      try {
        await item.setPassword(value);
      } catch (error) {
        throw mapError(error);
      }
    },
    async delete(account) {
      const item = await entry(account);
      let deleted: boolean;
      try {
        deleted = await item.deleteCredential();
      } catch (error) {
        throw mapError(error);
      }
      if (!deleted) await confirmEmpty();
      return deleted;
    },
    health: options.health,
  };
}
