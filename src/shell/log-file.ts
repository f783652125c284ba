/**
 * The companion's log file (issue 18 item 8): `<data dir>/logs/companion.log`, 0600 in a 0700 folder,
 * appended, bounded in size with one rotation (`companion.log.1`). `up` (attached or detached) and the
 * demo write their events and the runtime's stderr here; `companion logs` reads it.
 *
 * It never holds a secret: what is written are event names, states, error codes and messages (which
 * carry no secret, src/core/errors.ts), the endpoint URL, pids, and the runtime's stderr lines (which the
 * leak scan checks, test/e2e/leak-scan.test.ts). Control characters are replaced, so a line printed by
 * `companion logs` cannot drive the terminal. Every open refuses a symlink (`O_NOFOLLOW`) and a file that
 * is not ours; a failing write is dropped, never an error of the command that logs.
 */
import { closeSync, constants, fstatSync, openSync, renameSync, writeSync, fchmodSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { checkPrivateDir, ensurePrivateDirSync } from '../common/private-file.js';
import { CompanionError } from '../core/errors.js';

/** Rotation threshold: past this size the file becomes `companion.log.1` (the older one is dropped). */
export const LOG_MAX_BYTES = 1024 * 1024;
/** A longer line is cut (a runaway runtime line must not fill the file). */
export const LOG_MAX_LINE = 2_000;

const APPEND_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | (constants.O_NOFOLLOW ?? 0);
const READ_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);

/** Where the log lives in a data dir. */
export function logPaths(dataDir: string): { readonly dir: string; readonly file: string; readonly rotated: string } {
  const dir = join(dataDir, 'logs');
  return { dir, file: join(dir, 'companion.log'), rotated: join(dir, 'companion.log.1') };
}

/** `text` with control characters (terminal escapes, CR, NUL) replaced by `?`, tabs kept, cut at the bound. */
export function cleanLogText(text: string, max = LOG_MAX_LINE): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\x00-\x08\x0a-\x1f\x7f-\x9f]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

export interface LogFile {
  readonly path: string;
  /** Appends one line `<ISO time> <source>: <text>` (rotating first when the file is full). Never throws. */
  write(source: string, text: string): void;
  /** A descriptor of the log file opened for appending (a detached child's stdout/stderr); the caller closes it. */
  appendDescriptor(): number;
  close(): void;
}

/**
 * Opens (creating it) the private append-only log of `dataDir`.
 * @throws ERR_STATE_UNSAFE when `logs/` or the log file is a symlink, not a folder/file, or another user's.
 */
export function openLogFile(dataDir: string, options: { maxBytes?: number; now?: () => Date } = {}): LogFile {
  const paths = logPaths(dataDir);
  const maxBytes = options.maxBytes ?? LOG_MAX_BYTES;
  const now = options.now ?? (() => new Date());
  ensurePrivateDirSync(paths.dir);
  let fd: number | null = openChecked(paths.file);
  let size = fstatSync(fd).size;

  const rotate = (): void => {
    if (fd !== null) closeSync(fd);
    fd = null;
    // Why a rename: the reader (`logs --follow`) sees the old file end and the new one start.
    renameSync(paths.file, paths.rotated);
    fd = openChecked(paths.file);
    size = fstatSync(fd).size;
  };

  return {
    path: paths.file,
    write(source, text) {
      if (fd === null) return;
      const line = Buffer.from(`${now().toISOString()} ${source}: ${cleanLogText(text)}\n`, 'utf8');
      try {
        if (size > 0 && size + line.length > maxBytes) rotate();
        if (fd === null) return;
        let offset = 0;
        while (offset < line.length) offset += writeSync(fd, line, offset, line.length - offset);
        size += line.length;
      } catch {
        // A full disk or a rotation that failed: the log is best effort, the command goes on.
      }
    },
    appendDescriptor: () => openChecked(paths.file),
    close() {
      if (fd !== null) closeSync(fd);
      fd = null;
    },
  };
}

/** Opens `path` for appending, refusing a symlink or a file that is not a regular file of ours; made 0600. */
function openChecked(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, APPEND_FLAGS, 0o600);
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ELOOP')
      throw new CompanionError('ERR_STATE_UNSAFE', 'the log file is a symlink');
    throw error;
  }
  const stats = fstatSync(fd);
  const uid = process.getuid?.();
  if (!stats.isFile() || (uid !== undefined && stats.uid !== uid)) {
    closeSync(fd);
    throw new CompanionError('ERR_STATE_UNSAFE', 'the log file is not a regular file of this user');
  }
  fchmodSync(fd, 0o600);
  return fd;
}

/**
 * The text of one log file, or null when there is none.
 * @throws ERR_STATE_UNSAFE when a symlink or something other than a regular file holds its name.
 */
export async function readLogText(path: string): Promise<string | null> {
  let handle;
  try {
    handle = await open(path, READ_FLAGS);
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return null;
    if ((error as { code?: unknown }).code === 'ELOOP')
      throw new CompanionError('ERR_STATE_UNSAFE', 'the log file is a symlink');
    throw error;
  }
  try {
    if (!(await handle.stat()).isFile())
      throw new CompanionError('ERR_STATE_UNSAFE', 'the log file is not a regular file');
    return await handle.readFile('utf8');
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * The last `count` lines of the log (the rotated file first when the current one has fewer), and how
 * many bytes of the current file were read (where `logs --follow` goes on); null when there is no log.
 */
export async function tailLog(
  dataDir: string,
  count: number,
): Promise<{ readonly lines: string[]; readonly bytes: number } | null> {
  const paths = logPaths(dataDir);
  if (!(await checkPrivateDir(paths.dir))) return null;
  const current = await readLogText(paths.file);
  const older = await readLogText(paths.rotated);
  if (current === null && older === null) return null;
  const split = (text: string | null): string[] =>
    text === null || text === '' ? [] : text.replace(/\n$/, '').split('\n');
  const lines = [...split(older), ...split(current)];
  return {
    lines: count === 0 ? [] : lines.slice(-count),
    bytes: current === null ? 0 : Buffer.byteLength(current, 'utf8'),
  };
}
