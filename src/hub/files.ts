/**
 * The hub's data directory: optional reads and a lock so two hubs never share one directory. Everything
 * the hub keeps (keys, CA, grants) is 0600 in a 0700 directory, written with the helpers of
 * src/common/private-file.ts (`ensurePrivateDirSync`, `writePrivateFileAtomicSync`, `readJsonFileSync`).
 */
import { readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompanionError } from '../core/errors.js';

/** The file's bytes, or null when it does not exist. */
export function readOptional(path: string): Buffer | null {
  try {
    return readFileSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/** True when `path` exists and is only accessible by its owner (no group/other bits). */
export function isOwnerOnly(path: string): boolean {
  return (statSync(path).mode & 0o077) === 0;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes `dir/hub.lock` for this process. A lock left by a process that no longer exists is taken over.
 * @throws ERR_LOCKED_BY_OTHER when a live process holds it.
 * @returns a function that releases the lock.
 */
export function acquireDirLock(dir: string): () => void {
  const path = join(dir, 'hub.lock');
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => {
        try {
          if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
        } catch {
          // already gone
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number.parseInt(readOptional(path)?.toString('utf8').trim() ?? '', 10);
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && pidAlive(holder)) {
        throw new CompanionError('ERR_LOCKED_BY_OTHER', 'another hub is running with this data directory');
      }
      if (holder === process.pid) {
        throw new CompanionError('ERR_LOCKED_BY_OTHER', 'this process already runs a hub with this data directory');
      }
      rmSync(path, { force: true });
    }
  }
  throw new CompanionError('ERR_LOCKED_BY_OTHER', 'the hub data directory lock could not be taken');
}
