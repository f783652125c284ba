/**
 * The Linux half of the resource probe (D5.6, P-j): parsers for the few `/proc` files it reads, and the
 * walk that finds the runtime's process group from its leader without scanning other processes.
 *
 * Files read, and nothing else (docs/probe.md lists them with the reason for each):
 * - `/proc/self/auxv`, once: the page size (AT_PAGESZ) and clock ticks (AT_CLKTCK) the kernel gave *this*
 *   process; the same source glibc's `sysconf(_SC_PAGESIZE)` / `sysconf(_SC_CLK_TCK)` use.
 * - for the leader and each confirmed member `<pid>`: `/proc/<pid>/stat` (state, pgrp, CPU ticks, start
 *   time), `/proc/<pid>/statm` (resident pages), the listing of `/proc/<pid>/task` (its thread ids) and
 *   `/proc/<pid>/task/<tid>/children` (the children each thread forked; CONFIG_PROC_CHILDREN).
 * - for each child found that way: `/proc/<child>/stat`, to confirm it is still in the group before
 *   anything else of it is read. A child that left the group (setsid/setpgid) is not read further.
 *
 * Never read: the `/proc` directory listing (that is every process on the machine), any other pid's
 * files, `cmdline`, `environ`, `status`, `maps`, `fd`.
 */
import { CompanionError } from '../core/errors.js';

/** The fields of `/proc/<pid>/stat` the probe uses (proc(5)); the command name is parsed past, not kept. */
export interface ProcStat {
  readonly pid: number;
  /** Field 3: R, S, D, Z (zombie), T, t, X (dead), I, … */
  readonly state: string;
  readonly ppid: number;
  readonly pgrp: number;
  /** Fields 14–17, in clock ticks: user and system time, and those of waited-for children. */
  readonly utime: number;
  readonly stime: number;
  readonly cutime: number;
  readonly cstime: number;
  /** Field 22: start time after boot in clock ticks; with the pid it names one process for its lifetime. */
  readonly starttime: number;
}

/** The fields of the auxiliary vector the probe needs (getauxval(3)). */
export interface AuxvFacts {
  readonly pageSize: number | undefined;
  readonly clockTicks: number | undefined;
}

/** The page size and clock-tick rate used when `/proc/self/auxv` cannot be read (x86-64 and arm64 ABI). */
export const LINUX_DEFAULTS = { pageSize: 4096, clockTicks: 100 } as const;

/** Stop walking past this many group members: a runtime with more is doubt, not a figure. */
export const MAX_MEMBERS = 1024;

const DECIMAL = /^\d{1,20}$/;
/** Linux pid_max is at most 2^22 (PID_MAX_LIMIT). */
const PID_MAX_LIMIT = 4_194_304;

function malformed(what: string): CompanionError {
  // The message names the kind of file only, never a pid or a path (P-j).
  return new CompanionError('ERR_PROBE_FAILED', `the resource probe could not parse ${what}`, {
    detail: { step: 'parse', file: what },
  });
}

function toCount(token: string | undefined, what: string): number {
  if (token === undefined || !DECIMAL.test(token)) throw malformed(what);
  const value = Number(token);
  if (!Number.isSafeInteger(value)) throw malformed(what);
  return value;
}

function toPid(token: string | undefined, what: string): number {
  const value = toCount(token, what);
  if (value < 1 || value > PID_MAX_LIMIT) throw malformed(what);
  return value;
}

/**
 * Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold spaces and
 * parentheses, so the fields after it are found from the *last* `)`.
 * @throws CompanionError ERR_PROBE_FAILED when the text is not a stat line.
 */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open < 1 || close < open) throw malformed('stat');
  const pid = toPid(text.slice(0, open), 'stat');
  // rest[0] is field 3; field n is rest[n - 3].
  const rest = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  if (rest.length < 20) throw malformed('stat');
  const state = rest[0]!;
  if (!/^[A-Za-z]$/.test(state)) throw malformed('stat');
  return {
    pid,
    state,
    ppid: toCount(rest[1], 'stat'),
    pgrp: toCount(rest[2], 'stat'),
    utime: toCount(rest[11], 'stat'),
    stime: toCount(rest[12], 'stat'),
    // cutime/cstime are signed longs in the kernel; a negative value never occurs for waited children.
    cutime: toCount(rest[13], 'stat'),
    cstime: toCount(rest[14], 'stat'),
    starttime: toCount(rest[19], 'stat'),
  };
}

/**
 * Parses `/proc/<pid>/statm` and returns its second field, the resident set in pages. (statm's resident
 * is the exact counter, equal to `status` VmRSS; stat's field 24 is an approximation that differs on
 * recent kernels, measured on this machine.)
 * @throws CompanionError ERR_PROBE_FAILED when the text is not a statm line.
 */
export function parseProcStatm(text: string): number {
  const fields = text.trim().split(/\s+/);
  if (fields.length < 7) throw malformed('statm');
  for (const field of fields) toCount(field, 'statm');
  return toCount(fields[1], 'statm');
}

/**
 * Parses `/proc/<pid>/task/<tid>/children`: space-separated pids, possibly empty, with a trailing space.
 * @throws CompanionError ERR_PROBE_FAILED on anything else.
 */
export function parseProcChildren(text: string): number[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  return trimmed.split(/\s+/).map((token) => toPid(token, 'children'));
}

/** Parses a `/proc/<pid>/task` listing (thread ids). */
export function parseTaskList(names: readonly string[]): number[] {
  return names.map((name) => toPid(name, 'task list'));
}

const AT_NULL = 0;
const AT_PAGESZ = 6;
const AT_CLKTCK = 17;

/**
 * Reads the page size and clock ticks from a 64-bit little-endian auxiliary vector (`/proc/self/auxv`)
 * given as a latin1 string (one char per byte). Returns `undefined` fields when the text is not such a
 * vector (a 32-bit or big-endian one, or one decoded as UTF-8): the caller then uses {@link LINUX_DEFAULTS}.
 */
export function parseAuxv(text: string): AuxvFacts {
  let pageSize: number | undefined;
  let clockTicks: number | undefined;
  if (text.length === 0 || text.length % 16 !== 0) return { pageSize, clockTicks };
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return { pageSize, clockTicks };
  const bytes = Buffer.from(text, 'latin1');
  for (let offset = 0; offset + 16 <= bytes.length; offset += 16) {
    const type = bytes.readBigUInt64LE(offset);
    const value = bytes.readBigUInt64LE(offset + 8);
    if (type === BigInt(AT_NULL)) break;
    if (type === BigInt(AT_PAGESZ)) pageSize = Number(value);
    if (type === BigInt(AT_CLKTCK)) clockTicks = Number(value);
  }
  const powerOfTwo = (n: number): boolean =>
    Number.isSafeInteger(n) && n >= 4096 && n <= 1 << 21 && (n & (n - 1)) === 0;
  if (pageSize !== undefined && !powerOfTwo(pageSize)) pageSize = undefined;
  if (clockTicks !== undefined && !(Number.isSafeInteger(clockTicks) && clockTicks >= 1 && clockTicks <= 100_000))
    clockTicks = undefined;
  return { pageSize, clockTicks };
}

/** The I/O the walk needs: read a file as text, list a directory. Both reject with the fs error. */
export interface LinuxProcIo {
  readFile(path: string): Promise<string>;
  listDir(path: string): Promise<string[]>;
}

/** One sample of a process group. */
export interface LinuxGroupSample {
  readonly rssBytes: number;
  /** user + system CPU seconds of the members, plus those of members they have reaped. */
  readonly cpuSeconds: number;
  /** Live members (zombies are not counted). */
  readonly processes: number;
  /** The leader's start time (clock ticks after boot): the identity the next sample must match. */
  readonly leaderStart: number;
}

function isVanished(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}

function ioFailed(step: 'read' | 'list'): CompanionError {
  return new CompanionError('ERR_PROBE_FAILED', undefined, { detail: { step } });
}

function gone(): CompanionError {
  return new CompanionError('ERR_RUNTIME_GONE');
}

/** Reads a file; `null` when the process vanished meanwhile; ERR_PROBE_FAILED on any other error. */
async function readOrNull(io: LinuxProcIo, path: string): Promise<string | null> {
  try {
    return await io.readFile(path);
  } catch (error) {
    if (isVanished(error)) return null;
    throw ioFailed('read');
  }
}

async function listOrNull(io: LinuxProcIo, path: string): Promise<string[] | null> {
  try {
    return await io.listDir(path);
  } catch (error) {
    if (isVanished(error)) return null;
    throw ioFailed('list');
  }
}

function isDead(state: string): boolean {
  return state === 'Z' || state === 'X' || state === 'x';
}

interface MemberReading {
  readonly residentPages: number;
  readonly children: number[];
}

/** Reads a live member's statm and its threads' children files; `null` if it vanished meanwhile. */
async function readMember(io: LinuxProcIo, pid: number): Promise<MemberReading | null> {
  const [statm, tasks] = await Promise.all([readOrNull(io, `/proc/${pid}/statm`), listOrNull(io, `/proc/${pid}/task`)]);
  if (statm === null || tasks === null) return null;
  const residentPages = parseProcStatm(statm);
  const lists = await Promise.all(
    parseTaskList(tasks).map((tid) => readOrNull(io, `/proc/${pid}/task/${tid}/children`)),
  );
  // A thread that ended between the listing and the read has no children left to report.
  const children = lists.flatMap((text) => (text === null ? [] : parseProcChildren(text)));
  return { residentPages, children };
}

/**
 * Samples the process group `pgid` by walking the process tree down from its leader (`pid === pgid`),
 * confirming each member's pgrp from its own stat.
 *
 * Limit (documented): a member whose parent died is re-parented outside the tree (to init or a
 * subreaper) and is not found; finding it would need a scan of every process, which P-j forbids.
 *
 * @param expectedLeaderStart the leader start time seen by an earlier sample: a different one means the
 *   pid was reused by another process, which is reported as ERR_RUNTIME_GONE.
 * @throws CompanionError ERR_RUNTIME_GONE when the leader is gone, a zombie, no longer leads the group or
 *   was replaced; ERR_PROBE_FAILED when a file cannot be read or parsed or the group is too large.
 */
export async function sampleLinuxGroup(
  io: LinuxProcIo,
  pgid: number,
  units: { readonly pageSize: number; readonly clockTicks: number },
  expectedLeaderStart?: number,
): Promise<LinuxGroupSample> {
  const leaderText = await readOrNull(io, `/proc/${pgid}/stat`);
  if (leaderText === null) throw gone();
  const leader = parseProcStat(leaderText);
  // Why: a pid that no longer leads this group, or was reused, is not our runtime; read nothing more of it.
  if (leader.pid !== pgid || leader.pgrp !== pgid || isDead(leader.state)) throw gone();
  if (expectedLeaderStart !== undefined && leader.starttime !== expectedLeaderStart) throw gone();

  let residentPages = 0;
  let ticks = 0;
  let processes = 0;
  const seen = new Set<number>([pgid]);
  let level: ProcStat[] = [leader];
  while (level.length > 0) {
    const readings = await Promise.all(
      level.map((member) => (isDead(member.state) ? Promise.resolve(null) : readMember(io, member.pid))),
    );
    const next: number[] = [];
    level.forEach((member, index) => {
      const reading = readings[index] ?? null;
      if (member.pid === pgid && reading === null) throw gone();
      // CPU of a zombie still counts until its parent reaps it (then it moves to the parent's cutime).
      if (reading === null && !isDead(member.state)) return;
      ticks += member.utime + member.stime + member.cutime + member.cstime;
      if (reading === null) return;
      processes += 1;
      residentPages += reading.residentPages;
      for (const child of reading.children) {
        if (!seen.has(child)) {
          seen.add(child);
          next.push(child);
        }
      }
    });
    if (seen.size > MAX_MEMBERS)
      throw new CompanionError('ERR_PROBE_FAILED', 'the runtime has too many processes to probe', {
        detail: { step: 'walk' },
      });
    const stats = await Promise.all(next.map((pid) => readOrNull(io, `/proc/${pid}/stat`)));
    level = [];
    stats.forEach((text, index) => {
      if (text === null) return;
      const stat = parseProcStat(text);
      if (stat.pid !== next[index]) throw malformed('stat');
      // Why: a child that moved to another group is not the runtime's; its files are not read further.
      if (stat.pgrp === pgid) level.push(stat);
    });
  }
  return {
    rssBytes: residentPages * units.pageSize,
    cpuSeconds: ticks / units.clockTicks,
    processes,
    leaderStart: leader.starttime,
  };
}
