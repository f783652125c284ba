/**
 * Process identity from /proc (Linux): start time, group, state, argv and executable of a pid. Both groups
 * use it to tell a live process from a reused pid: the runtime's stale reclaim (src/runtime/stale.ts), the
 * discovery record and the `up` lock.
 */
import { lstatSync, readFileSync, readlinkSync } from 'node:fs';

/** What /proc says about a live process. */
export interface ProcessIdentity {
  readonly startTime: string;
  /** Process group id (field 5). */
  readonly pgrp: number;
  /** State letter (field 3): `Z` is a zombie (already dead). */
  readonly state: string;
  readonly cmdline: readonly string[];
  /** readlink /proc/<pid>/exe, or null when unreadable. */
  readonly exe: string | null;
}

/**
 * Reads a process's identity from /proc, or null when there is no such process (or no /proc).
 * The command name in field 2 may hold spaces and parentheses: fields are counted after the last `)`.
 */
export function readProcessIdentity(pid: number): ProcessIdentity | null {
  if (!Number.isInteger(pid) || pid <= 1) return null;
  let stat: string;
  let cmdline: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return null;
  }
  const close = stat.lastIndexOf(')');
  if (close < 0) return null;
  // After ")": field 3 (state) is index 0, so field N is index N - 3.
  const fields = stat.slice(close + 2).split(' ');
  const state = fields[0];
  const pgrp = Number(fields[5 - 3]);
  const startTime = fields[22 - 3];
  if (state === undefined || startTime === undefined || !/^\d+$/.test(startTime) || !Number.isInteger(pgrp))
    return null;
  let exe: string | null = null;
  try {
    exe = readlinkSync(`/proc/${pid}/exe`);
  } catch {
    exe = null;
  }
  const argv = cmdline.split('\0');
  if (argv.at(-1) === '') argv.pop();
  return { startTime, pgrp, state, cmdline: argv, exe };
}

/** True when this system has /proc (Linux): identity can be read. */
export function procAvailable(): boolean {
  try {
    lstatSync('/proc/self/stat');
    return true;
  } catch {
    return false;
  }
}

/** True when `pid` is a live process (signal 0; EPERM counts as alive). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

/** A process as a record names it: its pid, and its start time and executable when /proc could be read. */
export interface RecordedProcess {
  readonly pid: number;
  /** /proc/<pid>/stat field 22 (clock ticks since boot), or null without /proc. */
  readonly startTime: string | null;
  /** readlink /proc/<pid>/exe, or null without /proc. */
  readonly exe: string | null;
}

/**
 * True when the recorded process is alive and is the one recorded: same pid, start time and executable,
 * not a zombie. Without /proc: the pid is alive (the caller's next check decides). Any doubt is false.
 */
export function recordedProcessIsLive(record: RecordedProcess): boolean {
  if (!procAvailable()) return processAlive(record.pid);
  // Why all three: a pid alone is reused; the start time tells a new process apart, the executable a new program.
  if (record.startTime === null || record.exe === null) return false;
  const identity = readProcessIdentity(record.pid);
  return (
    identity !== null &&
    identity.state !== 'Z' &&
    identity.startTime === record.startTime &&
    identity.exe === record.exe
  );
}
