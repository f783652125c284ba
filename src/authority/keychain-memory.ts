/**
 * The explicit in-memory keychain, for the demo and the tests only (D5.3). It is chosen only by
 * `openKeychain({ backend: 'memory' })` (`--keychain memory`), never as a fallback, and it announces
 * itself once when created. Nothing is written anywhere; everything is gone when the process exits.
 */
import type { KeychainAccount } from '../core/keychain-port.js';
import { MAX_VALUE_BYTES, type KeychainBackend } from './keychain-common.js';

export const MEMORY_BACKEND = 'memory';

/** The line announced on stderr when the in-memory keychain is created. */
export const MEMORY_ANNOUNCEMENT =
  'companion: using the in-memory keychain (demo/tests only): nothing is stored on this machine';

/** Creates the in-memory backend and announces it once through `announce`. Its calls never reject. */
export function createMemoryBackend(announce: (line: string) => void): KeychainBackend {
  const items = new Map<KeychainAccount, string>();
  announce(MEMORY_ANNOUNCEMENT);
  return {
    name: MEMORY_BACKEND,
    maxValueBytes: MAX_VALUE_BYTES,
    async get(account) {
      return items.get(account) ?? null;
    },
    async set(account, value) {
      items.set(account, value);
    },
    async delete(account) {
      return items.delete(account);
    },
    async health() {
      return {
        backend: MEMORY_BACKEND,
        state: 'available',
        detail: 'in-memory keychain (demo/tests only): nothing persists',
      };
    },
  };
}
