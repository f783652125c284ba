/**
 * One `companion up` per data dir (issue 18 item 1). `up` takes `<data dir>/run/up.lock` before it
 * rotates, spawns or deletes anything, and holds it until it exits. The lock names its holder by pid,
 * start time (field 22 of /proc/<pid>/stat) and executable (/proc/<pid>/exe), as src/runtime/stale.ts and
 * the discovery record do.
 *
 * - **Taking it**: the record is written to a 0600 temp file (random name, `O_CREAT | O_EXCL |
 *   O_NOFOLLOW`) and hard-linked to the lock name. `link` fails when the name exists (a symlink there is
 *   not followed), so the lock appears whole or not at all: no reader sees a half-written lock.
 * - **A held lock**: a live process with the recorded identity is never touched (ERR_LOCKED_BY_OTHER).
 * - **A stale lock** (its process gone, a zombie, or its pid now another process; or a file that is not a
 *   lock record): moved aside by rename, checked to be the very file judged stale, then deleted. If it was
 *   not (another `up` reclaimed and locked in between), it is linked back.
 * - **Releasing** removes the lock only while it is still this process's.
 *
 * Without /proc (macOS, Windows) the identity cannot be read: a live pid holds the lock.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ensurePrivateDir, writePrivateTemp } from '../common/private-file.js';
import { CompanionError } from '../core/errors.js';
import { readProcessIdentity, recordedProcessIsLive } from '../common/process-identity.js';

export const UP_LOCK_FORMAT = 'companion-up-lock-v1';

export interface UpLockRecord {
  readonly format: typeof UP_LOCK_FORMAT;
  readonly pid: number;
  /** /proc/<pid>/stat field 22, or null without /proc. */
  readonly startTime: string | null;
  /** readlink /proc/<pid>/exe, or null without /proc. */
  readonly exe: string | null;
}

export interface UpLock {
  readonly path: string;
  readonly record: UpLockRecord;
  /** Removes the lock if it is still this process's; idempotent, never throws. */
  release(): Promise<void>;
}

const READ_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);
const MAX_LOCK_BYTES = 4_096;

/** The lock record for process `pid` (default: this one). */
export function upLockRecordFor(pid = process.pid): UpLockRecord {
  const identity = readProcessIdentity(pid);
  return { format: UP_LOCK_FORMAT, pid, startTime: identity?.startTime ?? null, exe: identity?.exe ?? null };
}

/** The validated record, or null for anything that is not one. */
export function parseUpLock(text: string): UpLockRecord | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const r = value as Record<string, unknown>;
  if (r.format !== UP_LOCK_FORMAT) return null;
  if (typeof r.pid !== 'number' || !Number.isSafeInteger(r.pid) || r.pid <= 1) return null;
  if (r.startTime !== null && (typeof r.startTime !== 'string' || !/^\d{1,20}$/.test(r.startTime))) return null;
  if (r.exe !== null && (typeof r.exe !== 'string' || !r.exe.startsWith('/'))) return null;
  return { format: UP_LOCK_FORMAT, pid: r.pid, startTime: r.startTime as string | null, exe: r.exe as string | null };
}

/**
 * True when the lock's process is alive and is the one that wrote it (same pid, start time and
 * executable, not a zombie). Without /proc: the pid is alive.
 */
export function upLockIsLive(record: UpLockRecord): boolean {
  return recordedProcessIsLive(record);
}

/** The lock file's text (a symlink or a non-file is refused), or null when there is none. */
async function readLockText(path: string): Promise<string | null> {
  let handle;
  try {
    handle = await open(path, READ_FLAGS);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ENOENT') return null;
    // A symlink at the lock name (ELOOP) is not a lock of ours: stale.
    return '';
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size > MAX_LOCK_BYTES) return '';
    return await handle.readFile('utf8');
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Moves a stale lock (whose text was `seen`) out of the way. If the file moved is not the one judged
 * stale (someone reclaimed and locked in between), it is put back.
 */
async function removeStale(path: string, seen: string): Promise<void> {
  const aside = join(dirname(path), `.${basename(path)}.${randomBytes(8).toString('hex')}.stale`);
  try {
    await rename(path, aside);
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return;
    throw error;
  }
  let moved: string | null;
  try {
    moved = await readLockText(aside);
  } catch {
    moved = '';
  }
  if (moved !== seen) {
    // Not the stale one: a live lock taken meanwhile. Put it back (fails only if yet another lock exists).
    await link(aside, path).catch(() => undefined);
  }
  await rm(aside, { force: true });
}

/**
 * The lock as it is now: its text (null when there is none) and its record (null for a file that is not
 * a lock record). Reads only; a symlink at the lock name is refused (read as a non-record).
 */
export async function readUpLock(
  path: string,
): Promise<{ readonly text: string | null; readonly record: UpLockRecord | null }> {
  const text = await readLockText(path);
  return { text, record: text === null ? null : parseUpLock(text) };
}

/**
 * Removes a lock judged stale from its text `seen` (its holder is gone): the same move-aside-and-check
 * as {@link acquireUpLock}, so a lock taken meanwhile by a new `up` is put back, never deleted.
 */
export async function removeStaleUpLock(path: string, seen: string): Promise<void> {
  await removeStale(path, seen);
}

/** The holder named in an ERR_LOCKED_BY_OTHER from {@link acquireUpLock}. */
export interface UpLockHolder {
  readonly pid: number;
}

/**
 * Takes `<data dir>/run/up.lock` for this process. Nothing else is read, written or deleted besides the
 * `run/` folder (made private) and a stale lock.
 *
 * @param path the lock path (`layout(dataDir).upLock`).
 * @returns the held lock; call `release()` on every exit path.
 * @throws ERR_LOCKED_BY_OTHER (detail `{ pid }`) when a live process with the recorded identity holds it
 *   (this process included); ERR_STATE_UNSAFE for an unsafe `run/` folder.
 */
export async function acquireUpLock(path: string): Promise<UpLock> {
  await ensurePrivateDir(dirname(path));
  const record = upLockRecordFor();
  const text = JSON.stringify(record);
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const temp = await writePrivateTemp(path, text);
    try {
      await link(temp, path);
      return { path, record, release: () => releaseUpLock(path, text) };
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EEXIST') throw error;
    } finally {
      await rm(temp, { force: true });
    }
    const seen = await readLockText(path);
    if (seen === null) continue;
    const holder = parseUpLock(seen);
    if (holder !== null && upLockIsLive(holder)) {
      throw new CompanionError(
        'ERR_LOCKED_BY_OTHER',
        `another companion (pid ${holder.pid}) is running with this data directory; stop it first or use another --data-dir`,
        { detail: { pid: holder.pid } },
      );
    }
    // Why it may go: its process is gone or is another process now; a live holder never reaches here.
    await removeStale(path, seen);
  }
  throw new CompanionError('ERR_LOCKED_BY_OTHER', 'the data directory lock could not be taken');
}

async function releaseUpLock(path: string, ours: string): Promise<void> {
  try {
    if ((await readFile(path, { encoding: 'utf8', flag: READ_FLAGS })) === ours) await rm(path, { force: true });
  } catch {
    // Already gone, or not ours.
  }
}
