/**
 * Stale-runtime reclaim (D5.4, P-k). While a runtime runs, a 0600 state file in the data directory
 * records its pid, its start time (field 22 of /proc/<pid>/stat, in clock ticks since boot) and the exact
 * program it runs (/proc/<pid>/exe and /proc/<pid>/cmdline). On the next start, a live process that matches all three is an
 * earlier companion's runtime and is stopped (its process group); a pid that now belongs to anything else
 * (another start time, binary or argv) is never signalled.
 *
 * Identity needs Linux's /proc. Elsewhere the state file is read but nothing is ever killed
 * (`unverifiable`): the runtime's own parent-death check is what ends it there.
 */
import { lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { writePrivateFileAtomicSync } from '../common/private-file.js';
import { readProcessIdentity, type ProcessIdentity } from '../common/process-identity.js';

/** Name of the state file inside the data directory. */
export const STATE_FILE = 'runtime.state.json';

export interface RuntimeState {
  readonly version: 1;
  readonly pid: number;
  /** /proc/<pid>/stat field 22 (start time in clock ticks since boot), as a decimal string. */
  readonly startTime: string;
  /** The running binary (readlink /proc/<pid>/exe) and its full argv (/proc/<pid>/cmdline). */
  readonly exe: string;
  readonly cmdline: readonly string[];
  /** The per-spawn run directory (holds the socket); removed on reclaim when it is ours. */
  readonly runDir: string;
}

/**
 * True when some live process still belongs to process group `pgid` (Linux; false without /proc). While
 * one does, the kernel keeps the number `pgid` in use, so `kill(-pgid)` cannot reach an unrelated group.
 */
export function groupHasMembers(pgid: number): boolean {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return false;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const identity = readProcessIdentity(Number(entry));
    if (identity !== null && identity.pgrp === pgid && identity.state !== 'Z') return true;
  }
  return false;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

/** Reads and validates the state file; null when absent or malformed. */
export function readRuntimeState(dataDir: string): RuntimeState | null {
  let raw: string;
  try {
    raw = readFileSync(join(dataDir, STATE_FILE), 'utf8');
  } catch {
    return null;
  }
  try {
    const value = JSON.parse(raw) as Record<string, unknown>;
    if (value.version !== 1 || typeof value.pid !== 'number' || !Number.isInteger(value.pid) || value.pid <= 1)
      return null;
    if (typeof value.startTime !== 'string' || !/^\d+$/.test(value.startTime)) return null;
    if (
      typeof value.exe !== 'string' ||
      !value.exe.startsWith('/') ||
      !isStringArray(value.cmdline) ||
      value.cmdline.length === 0
    )
      return null;
    if (typeof value.runDir !== 'string') return null;
    return {
      version: 1,
      pid: value.pid,
      startTime: value.startTime,
      exe: value.exe,
      cmdline: value.cmdline,
      runDir: value.runDir,
    };
  } catch {
    return null;
  }
}

/** Writes the state file atomically with mode 0600 (random O_EXCL|O_NOFOLLOW temp file, fsync, rename). */
export function writeRuntimeState(dataDir: string, state: RuntimeState): void {
  writePrivateFileAtomicSync(join(dataDir, STATE_FILE), `${JSON.stringify(state)}\n`);
}

/**
 * Records the identity of the live process `pid` as /proc shows it now (so an exec-ing wrapper is
 * recorded as what it became). Returns false when /proc cannot tell (nothing is written then).
 */
export function recordRuntimeState(dataDir: string, pid: number, runDir: string): boolean {
  const identity = readProcessIdentity(pid);
  if (identity === null || identity.exe === null || identity.state === 'Z') return false;
  writeRuntimeState(dataDir, {
    version: 1,
    pid,
    startTime: identity.startTime,
    exe: identity.exe,
    cmdline: identity.cmdline,
    runDir,
  });
  return true;
}

/** Removes the state file if it still names `pid` (a newer runtime's file is left alone). */
export function clearRuntimeState(dataDir: string, pid: number): void {
  const state = readRuntimeState(dataDir);
  if (state !== null && state.pid !== pid) return;
  rmSync(join(dataDir, STATE_FILE), { force: true });
}

/**
 * True when a live process is exactly the recorded runtime: same start time, same executable, same argv.
 * Any doubt is "no".
 */
export function matchesState(identity: ProcessIdentity, state: RuntimeState): boolean {
  if (identity.startTime !== state.startTime) return false;
  if (identity.exe === null || identity.exe !== state.exe) return false;
  return (
    identity.cmdline.length === state.cmdline.length && identity.cmdline.every((arg, i) => arg === state.cmdline[i])
  );
}

export type ReclaimOutcome =
  /** No state file (or a malformed one, now removed). */
  | { readonly outcome: 'none' }
  /** The recorded runtime is no longer running. */
  | { readonly outcome: 'gone'; readonly pid: number }
  /** The recorded runtime was running and has been stopped. */
  | { readonly outcome: 'reclaimed'; readonly pid: number; readonly forced: boolean }
  /** The pid now belongs to another process: left alone. */
  | { readonly outcome: 'foreign'; readonly pid: number }
  /** No /proc to verify identity: nothing was signalled. */
  | { readonly outcome: 'unverifiable'; readonly pid: number };

export interface ReclaimOptions {
  /** How long SIGTERM gets before SIGKILL (default 3000 ms). */
  readonly graceMs?: number;
  /** The folder holding per-spawn run directories; a stale one inside it is removed. */
  readonly runBase?: string;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolvePromise) => setTimeout(resolvePromise, ms));
}

/** True while `pid` is the same live process (not a zombie, same start time). */
function stillRunning(pid: number, startTime: string): boolean {
  const identity = readProcessIdentity(pid);
  return identity !== null && identity.state !== 'Z' && identity.startTime === startTime;
}

function signal(pid: number, group: boolean, name: NodeJS.Signals): void {
  try {
    process.kill(group ? -pid : pid, name);
  } catch {
    // Already gone.
  }
}

function removeRunDir(runDir: string, runBase: string | undefined): void {
  if (runBase === undefined) return;
  const dir = resolve(runDir);
  // Only a per-spawn directory directly inside our run base, by name, and a real directory (not a link).
  if (dirname(dir) !== resolve(runBase) || !/^rt-[A-Za-z0-9]{6}$/.test(basename(dir))) return;
  try {
    if (!lstatSync(dir).isDirectory()) return;
  } catch {
    return;
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Reclaims a runtime left behind by an earlier companion (see the module comment). Always removes the
 * state file afterwards, and the stale run directory when it lies in `runBase`.
 */
export async function reclaimStaleRuntime(dataDir: string, options: ReclaimOptions = {}): Promise<ReclaimOutcome> {
  const graceMs = options.graceMs ?? 3000;
  const statePath = join(dataDir, STATE_FILE);
  const state = readRuntimeState(dataDir);
  if (state === null) {
    rmSync(statePath, { force: true });
    return { outcome: 'none' };
  }
  const finish = <T extends ReclaimOutcome>(outcome: T): T => {
    rmSync(statePath, { force: true });
    if (outcome.outcome !== 'foreign' && outcome.outcome !== 'unverifiable')
      removeRunDir(state.runDir, options.runBase);
    return outcome;
  };
  let procAvailable = true;
  try {
    lstatSync('/proc/self/stat');
  } catch {
    procAvailable = false;
  }
  if (!procAvailable) return finish({ outcome: 'unverifiable', pid: state.pid });
  const identity = readProcessIdentity(state.pid);
  if (identity === null || identity.state === 'Z') return finish({ outcome: 'gone', pid: state.pid });
  if (!matchesState(identity, state)) return finish({ outcome: 'foreign', pid: state.pid });

  // It is ours: stop its whole group when it leads one (the spawn adapter makes it a group leader).
  const group = identity.pgrp === state.pid;
  signal(state.pid, group, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && stillRunning(state.pid, state.startTime)) await sleep(25);
  let forced = false;
  if (stillRunning(state.pid, state.startTime)) {
    forced = true;
    signal(state.pid, group, 'SIGKILL');
    const killDeadline = Date.now() + 2000;
    while (Date.now() < killDeadline && stillRunning(state.pid, state.startTime)) await sleep(25);
  } else if (group && groupHasMembers(state.pid)) {
    // The leader is gone; sweep what is left of its group (forks that ignored SIGTERM).
    signal(state.pid, true, 'SIGKILL');
  }
  return finish({ outcome: 'reclaimed', pid: state.pid, forced });
}
