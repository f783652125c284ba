/**
 * Private files and folders, written so that another local user or a planted symlink cannot redirect
 * them (threat P-f; issue 16 item 7). One helper per job, used by both groups and the hub:
 *
 * - {@link ensurePrivateDir} / {@link ensurePrivateDirSync}: a 0700 folder of ours, never a symlink;
 *   {@link checkPrivateDir} checks one without creating it.
 * - {@link writePrivateFileAtomic} / {@link writePrivateFileAtomicSync}: a 0600 temp file with a random
 *   name opened `O_CREAT | O_EXCL | O_NOFOLLOW` (a link or a file planted at the temp name is refused,
 *   never followed), written, fsynced, then renamed over the target. A reader sees the old file or the
 *   new one, never a torn one.
 * - {@link readJsonFile} / {@link readJsonFileSync}: the parsed JSON of a file, opened `O_NOFOLLOW`; the
 *   async one gives null on any failure, the sync one null only when the file is absent.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { chmod, lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CompanionError, type ErrorCode } from '../core/errors.js';

/** Open flags of a new private temp file: create it, never reuse or follow what is there. */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0);
/** Open flags of a read that refuses a symlink in the last component. */
const READ_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);

function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
}

function checkDirStats(
  stats: { isDirectory(): boolean; isSymbolicLink(): boolean; uid: number },
  code: ErrorCode,
): void {
  const uid = process.getuid?.();
  // Why: a symlinked folder (or one another user owns) would let someone else choose where our files go.
  if (stats.isSymbolicLink() || !stats.isDirectory() || (uid !== undefined && stats.uid !== uid)) {
    throw new CompanionError(code, 'a private folder is a symlink, not a folder, or owned by another user');
  }
}

/**
 * Creates `dir` (and its parents) 0700, or checks the existing one: a real folder (not a symlink), owned
 * by this user, tightened to 0700. Throws `code` (default `ERR_STATE_UNSAFE`) otherwise.
 */
export async function ensurePrivateDir(dir: string, code: ErrorCode = 'ERR_STATE_UNSAFE'): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    // A file or a dangling symlink holds the name (EEXIST / ENOENT): that is an unsafe folder, not an I/O failure.
    checkDirStats(await lstat(dir).catch(() => Promise.reject(error)), code);
  }
  checkDirStats(await lstat(dir), code);
  await chmod(dir, 0o700);
}

/**
 * Checks, without creating anything, that `dir` is a private folder of ours (not a symlink, owned by
 * this user). Resolves false when it does not exist; throws `code` (default `ERR_STATE_UNSAFE`) when
 * something else holds the name.
 */
export async function checkPrivateDir(dir: string, code: ErrorCode = 'ERR_STATE_UNSAFE'): Promise<boolean> {
  let stats;
  try {
    stats = await lstat(dir);
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return false;
    throw error;
  }
  checkDirStats(stats, code);
  return true;
}

/** The synchronous {@link ensurePrivateDir}. */
export function ensurePrivateDirSync(dir: string, code: ErrorCode = 'ERR_STATE_UNSAFE'): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    // As in ensurePrivateDir: a file or a dangling symlink at the name is unsafe, not an I/O failure.
    let stats;
    try {
      stats = lstatSync(dir);
    } catch {
      throw error;
    }
    checkDirStats(stats, code);
  }
  checkDirStats(lstatSync(dir), code);
  chmodSync(dir, 0o700);
}

/**
 * Writes `data` to a new 0600 temp file with a random name beside `path` (opened `O_CREAT | O_EXCL |
 * O_NOFOLLOW`, fsynced) and returns its name; the caller renames or links it into place. The temp file is
 * removed on failure.
 */
export async function writePrivateTemp(path: string, data: string | Uint8Array): Promise<string> {
  const temp = tempNameFor(path);
  const handle = await open(temp, CREATE_FLAGS, 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  return temp;
}

/**
 * Writes `data` to `path` atomically and privately: a 0600 temp file with a random name in the same
 * folder, opened `O_CREAT | O_EXCL | O_NOFOLLOW`, fsynced, renamed over `path`. The temp file is removed
 * on failure. Throws the underlying I/O error (the caller maps it to its own code).
 */
export async function writePrivateFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const temp = await writePrivateTemp(path, data);
  try {
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/**
 * The synchronous {@link writePrivateFileAtomic}. `data` may also be a sequence of chunks, written one by
 * one (a generated file of hundreds of MB is never held whole in memory).
 */
export function writePrivateFileAtomicSync(path: string, data: string | Uint8Array | Iterable<Uint8Array>): void {
  const temp = tempNameFor(path);
  const fd = openSync(temp, CREATE_FLAGS, 0o600);
  try {
    for (const chunk of chunksOf(data)) writeAllSync(fd, chunk);
    fsyncSync(fd);
    closeSync(fd);
  } catch (error) {
    try {
      closeSync(fd);
    } catch {
      // Already closed.
    }
    rmSync(temp, { force: true });
    throw error;
  }
  try {
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}

function chunksOf(data: string | Uint8Array | Iterable<Uint8Array>): Iterable<Uint8Array> {
  if (typeof data === 'string') return [Buffer.from(data, 'utf8')];
  return data instanceof Uint8Array ? [data] : data;
}

/** Writes all of `bytes` at the descriptor's position (writeSync may write fewer bytes than asked). */
function writeAllSync(fd: number, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
}

/** {@link writePrivateFileAtomic} of `JSON.stringify(value)`. */
export async function writePrivateJson(path: string, value: unknown): Promise<void> {
  await writePrivateFileAtomic(path, JSON.stringify(value));
}

/** The one JSON parser of the readers below: the value, or undefined when `text` is not JSON. */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** The parsed JSON of the regular file at `path` (a symlink is refused), or null on any failure. */
export async function readJsonFile(path: string): Promise<unknown> {
  let handle;
  try {
    handle = await open(path, READ_FLAGS);
  } catch {
    return null;
  }
  try {
    if (!(await handle.stat()).isFile()) return null;
    return parseJson(await handle.readFile('utf8')) ?? null;
  } catch {
    return null;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * The parsed JSON of the file at `path` (a symlink is refused), or null when nothing is there. A file
 * that is there but unreadable throws its I/O error; one that is not JSON is a damaged file.
 * @param what names the file in the error message (`a hub data file`); its folder is never shown.
 * @throws `code` (default ERR_CONFIG) when the file is not valid JSON.
 */
export function readJsonFileSync(path: string, what: string, code: ErrorCode = 'ERR_CONFIG'): unknown {
  let fd: number;
  try {
    fd = openSync(path, READ_FLAGS);
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return null;
    throw error;
  }
  let text: string;
  try {
    text = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  const value = parseJson(text);
  if (value === undefined) throw new CompanionError(code, `${what} is not valid JSON (${basename(path)})`);
  return value;
}
