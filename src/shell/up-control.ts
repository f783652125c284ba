/**
 * Stopping the `up` of a data dir from another process (`companion stop`; `logout` calls it too). The
 * process to stop is the holder named by `run/up.lock` (src/shell/up-lock.ts): pid, start time and
 * executable. It is signalled only while all three still match, re-checked right before each signal, so
 * a pid the system gave to another process since is never signalled.
 *
 * SIGTERM first (the `up` stops its runtime, removes its records and releases the lock), then a bounded
 * wait; SIGKILL after the bound, reported as `forced`. After a forced stop the lock and the runtime the
 * killed `up` left behind are reclaimed (the runtime by its own identity record, src/runtime/stale.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync } from 'node:fs';
import { ensurePrivateDir } from '../common/private-file.js';
import { CompanionError, ERROR_CODES, type ErrorCode } from '../core/errors.js';
import { reclaimLeftRuntime } from '../runtime/manager/group.js';
import { readProcessIdentity } from '../common/process-identity.js';
import { openLogFile } from './log-file.js';
import { readUpLock, removeStaleUpLock, upLockIsLive, type UpLockRecord } from './up-lock.js';

export interface StopUpOptions {
  /** How long the `up` gets after SIGTERM before SIGKILL (default 20 s: it stops its runtime first). */
  readonly graceMs?: number;
  /** How long to wait for the exit after SIGKILL (default 5 s). */
  readonly killWaitMs?: number;
  /** Called once, just before SIGKILL is sent (for the line that says so). */
  readonly onForce?: (pid: number, graceMs: number) => void;
}

export type StopUpOutcome =
  /** No `up` holds the lock: none, a stale one (its process gone or another process now), or not a lock. */
  | { readonly outcome: 'not-running' }
  /** The `up` with pid `pid` exited and its lock is gone; `forced` when SIGKILL ended it. */
  | { readonly outcome: 'stopped'; readonly pid: number; readonly forced: boolean };

const POLL_MS = 50;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Sends `signal` to the holder only if it is still the process that wrote the lock. */
function signalHolder(record: UpLockRecord, signal: NodeJS.Signals): boolean {
  // Why re-check here: between the first look and this signal the process may have exited and its pid been reused.
  if (!upLockIsLive(record)) return false;
  try {
    process.kill(record.pid, signal);
    return true;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ESRCH') return false;
    throw new CompanionError(
      'ERR_LOCKED_BY_OTHER',
      `the running companion (pid ${record.pid}) cannot be signalled (${String(code)})`,
      { detail: { pid: record.pid } },
    );
  }
}

/** Waits until the holder is gone and the lock no longer holds `text`, at most `ms`; true when both. */
async function waitReleased(lockPath: string, record: UpLockRecord, text: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!upLockIsLive(record)) {
      const now = await readUpLock(lockPath);
      if (now.text !== text) return true;
      // Gone without releasing (killed): a process that exited has nothing left to release; give it a moment.
      if (Date.now() >= deadline) return false;
    }
    if (Date.now() >= deadline) return false;
    await sleep(POLL_MS);
  }
}

/**
 * Stops the `up` of the data dir whose lock is `paths.upLock`.
 *
 * @param paths `layout(dataDir)` (its `dataDir`, `run` and `upLock`).
 * @returns `not-running`, or `stopped` with the pid and whether SIGKILL was needed.
 * @throws ERR_LOCKED_BY_OTHER when the holder cannot be signalled (another user's), when its identity
 *   cannot be verified (no /proc: it is left alone rather than risk signalling a reused pid), or when it
 *   is still alive after SIGKILL and the bound.
 */
export async function stopUp(
  paths: { readonly dataDir: string; readonly run: string; readonly upLock: string },
  options: StopUpOptions = {},
): Promise<StopUpOutcome> {
  const graceMs = options.graceMs ?? 20_000;
  const killWaitMs = options.killWaitMs ?? 5_000;
  const { text, record } = await readUpLock(paths.upLock);
  if (text === null || record === null || !upLockIsLive(record)) return { outcome: 'not-running' };
  if (record.startTime === null || record.exe === null || readProcessIdentity(process.pid) === null) {
    throw new CompanionError(
      'ERR_LOCKED_BY_OTHER',
      `the running companion (pid ${record.pid}) cannot be identified on this system; stop it with Ctrl-C where it runs`,
      { detail: { pid: record.pid } },
    );
  }
  if (!signalHolder(record, 'SIGTERM')) return { outcome: 'not-running' };
  if (await waitReleased(paths.upLock, record, text, graceMs))
    return { outcome: 'stopped', pid: record.pid, forced: false };

  let forced = false;
  if (upLockIsLive(record)) {
    options.onForce?.(record.pid, graceMs);
    forced = signalHolder(record, 'SIGKILL');
    const deadline = Date.now() + killWaitMs;
    while (upLockIsLive(record) && Date.now() < deadline) await sleep(POLL_MS);
    if (upLockIsLive(record)) {
      throw new CompanionError(
        'ERR_LOCKED_BY_OTHER',
        `the running companion (pid ${record.pid}) did not exit after SIGKILL`,
        { detail: { pid: record.pid } },
      );
    }
  }
  // Its holder is gone: a lock still naming it is stale (moved aside and checked, so a new `up`'s lock stays).
  await removeStaleUpLock(paths.upLock, text);
  // A killed `up` could not stop its runtime: stop it by its own identity record, as the next `up` would.
  if (forced) await reclaimLeftRuntime(paths.dataDir);
  return { outcome: 'stopped', pid: record.pid, forced };
}

/** Set (to `1`) in the environment of the background `up` that `up --detach` starts; read once, then removed. */
export const DETACHED_ENV = 'COMPANION_UP_DETACHED';

export type DetachedStart =
  /** The background `up` is available at `endpoint`. */
  | { readonly outcome: 'available'; readonly pid: number; readonly endpoint: string }
  /** It failed to start, with its error (`detail`: the running one's pid and endpoint for ERR_LOCKED_BY_OTHER). */
  | {
      readonly outcome: 'failed';
      readonly pid: number;
      readonly code: ErrorCode;
      readonly message: string;
      readonly detail: Record<string, unknown>;
    }
  /** It exited before it said anything. */
  | { readonly outcome: 'exited'; readonly pid: number; readonly status: number | null }
  /** Not available within the bound; it keeps running and trying. */
  | { readonly outcome: 'timeout'; readonly pid: number };

export interface DetachedOptions {
  readonly dataDir: string;
  /** The `up` arguments without `--detach` (options only: no secret is ever an `up` argument). */
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  /** How long to wait for availability (default 120 s). */
  readonly timeoutMs?: number;
  /** The CLI script to run (default: this process's, `process.argv[1]`). */
  readonly script?: string;
}

/**
 * Starts `companion up ARGS` in the background: a new session (no terminal, so closing the terminal
 * does not stop it), stdin from /dev/null, stdout and stderr appended to the data dir's log file (never
 * a terminal that goes away), and an IPC channel on which it says once whether it became available or
 * failed, then closes it. Waits for that, for its exit, or for the bound.
 * @throws ERR_STATE_UNSAFE for an unsafe log folder or file; ERR_SPAWN_FAILED when it cannot be started.
 */
export async function startDetachedUp(options: DetachedOptions): Promise<DetachedStart> {
  const script = options.script ?? process.argv[1];
  if (script === undefined) throw new CompanionError('ERR_SPAWN_FAILED', 'the companion script is not known');
  await ensurePrivateDir(options.dataDir);
  const log = openLogFile(options.dataDir);
  log.write('up', 'starting in the background (up --detach)');
  const fd = log.appendDescriptor();
  log.close();
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [script, 'up', ...options.args], {
      detached: true,
      stdio: ['ignore', fd, fd, 'ipc'],
      env: { ...options.env, [DETACHED_ENV]: '1' },
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) {
    await new Promise((resolve) => child.once('error', resolve));
    throw new CompanionError('ERR_SPAWN_FAILED', 'the background companion could not be started');
  }
  const result = await new Promise<DetachedStart>((resolve) => {
    const timer = setTimeout(() => resolve({ outcome: 'timeout', pid }), options.timeoutMs ?? 120_000);
    const done = (value: DetachedStart): void => {
      clearTimeout(timer);
      resolve(value);
    };
    child.on('message', (message: unknown) => done(parseNotice(message, pid)));
    child.once('exit', (status) => done({ outcome: 'exited', pid, status }));
    child.once('error', () => done({ outcome: 'exited', pid, status: null }));
  });
  child.removeAllListeners();
  if (child.connected) child.disconnect();
  child.unref();
  return result;
}

function parseNotice(message: unknown, pid: number): DetachedStart {
  const value = (typeof message === 'object' && message !== null ? message : {}) as Record<string, unknown>;
  if (value.event === 'available' && typeof value.endpoint === 'string')
    return { outcome: 'available', pid, endpoint: value.endpoint };
  const error = (typeof value.error === 'object' && value.error !== null ? value.error : {}) as Record<string, unknown>;
  const code = typeof error.code === 'string' && error.code in ERROR_CODES ? (error.code as ErrorCode) : 'ERR_INTERNAL';
  const { code: _code, message: text, ...detail } = error;
  return { outcome: 'failed', pid, code, message: typeof text === 'string' ? text : ERROR_CODES[code], detail };
}

/** The background `up`'s side of the channel: one notice (available, or an error), then it is closed. */
export interface DetachedChannel {
  notify(message: Record<string, unknown>): void;
}

/** The channel when this process is the background `up` of an `up --detach`, else null. */
export function detachedChannel(env: NodeJS.ProcessEnv): DetachedChannel | null {
  if (env[DETACHED_ENV] !== '1') return null;
  // Why removed: nothing this process starts should take itself for a detached `up`.
  delete env.COMPANION_UP_DETACHED;
  if (typeof process.send !== 'function') return null;
  let open = true;
  return {
    notify(message) {
      if (!open) return;
      open = false;
      const close = (): void => {
        try {
          process.disconnect();
        } catch {
          // The starter is gone already.
        }
      };
      try {
        process.send!(message, undefined, {}, close);
      } catch {
        close();
      }
    },
  };
}
