/**
 * The macOS half of the resource probe (D5.6, P-j): the `ps` call that asks the kernel for one process
 * group, and the parser of its output. Not run on the Linux build machine: unit-tested on its argv and on
 * constructed output (docs/probe.md).
 *
 * `-g` semantics: in macOS's ps (adv_cmds) `-g <pgrp>` selects the members of process group `pgrp`
 * (a single `-g` becomes one `sysctl(KERN_PROC_PGRP, pgrp)`, so ps itself never lists other processes),
 * and implies `-x` (members without a terminal are kept). But only in UNIX 2003 mode: with
 * `COMMAND_MODE=legacy` the historical `-g` is a no-op and ps would list *all the user's processes*. So
 * the child gets `COMMAND_MODE=unix2003` explicitly, and the parser fails closed if any line names
 * another group. (On Linux procps, `-g` means session or effective group: the Linux probe never uses ps.)
 */
import { CompanionError } from '../core/errors.js';
import { unparsableOutput, type GroupSample } from './probe-sample.js';

/** Absolute path: no PATH lookup for a tool that ships with the OS. */
export const DARWIN_PS = '/bin/ps';

/**
 * The argv for `ps`: one `-o` per column with an empty header (`name=`), so there is no header line;
 * `lstart` (the start time, last because it holds spaces) tells a reused pid from the runtime.
 */
export function darwinPsArgs(pgid: number): string[] {
  return ['-o', 'pid=', '-o', 'pgid=', '-o', 'rss=', '-o', 'time=', '-o', 'lstart=', '-g', String(pgid)];
}

/** The environment for `ps`: UNIX 2003 `-g` semantics, C number format, nothing of the parent's. */
export function darwinPsEnv(): Record<string, string> {
  return { COMMAND_MODE: 'unix2003', LC_ALL: 'C', PATH: '/usr/bin:/bin:/usr/sbin:/sbin' };
}

function malformed(): CompanionError {
  return unparsableOutput('ps', 'ps');
}

/**
 * Parses ps's `time` column (accumulated user + system CPU): `M:SS.cc` with unbounded minutes on macOS,
 * also `[[D-]H:]M:SS[.ff]`. Returns seconds.
 */
export function parseCpuTime(text: string): number {
  const match = /^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d{2})(?:[.,](\d{1,6}))?$/.exec(text);
  if (match === null) throw malformed();
  const [, days, hours, minutes, seconds, fraction] = match;
  const whole = Number(days ?? 0) * 86_400 + Number(hours ?? 0) * 3600 + Number(minutes) * 60 + Number(seconds);
  return whole + (fraction === undefined ? 0 : Number(`0.${fraction}`));
}

/**
 * Parses the output of {@link darwinPsArgs}: one line per member, `rss` in KiB. Returns `null` when the leader (`pid === pgid`) is not among the lines: the runtime is gone.
 * @throws CompanionError ERR_PROBE_FAILED on a malformed line, and on a line of another group (fail
 *   closed: ps selected more than it was asked to).
 */
export function parseDarwinPs(stdout: string, pgid: number): GroupSample | null {
  let rssKiB = 0;
  let cpuSeconds = 0;
  let processes = 0;
  let leaderStart: string | null = null;
  for (const line of stdout.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    const fields = trimmed.split(/\s+/);
    // lstart is `Www Mmm dd hh:mm:ss yyyy`: five words.
    if (fields.length !== 9) throw malformed();
    const [pid, group, rss, time] = fields as [string, string, string, string];
    const start = fields.slice(4).join(' ');
    if (!/^\d{1,10}$/.test(pid) || !/^\d{1,10}$/.test(group) || !/^\d{1,15}$/.test(rss)) throw malformed();
    if (!/^[A-Z][a-z]{2} [A-Z][a-z]{2} \d{1,2} \d{2}:\d{2}:\d{2} \d{4}$/.test(start)) throw malformed();
    if (Number(group) !== pgid)
      throw new CompanionError('ERR_PROBE_FAILED', 'ps returned processes outside the runtime group', {
        detail: { step: 'scope' },
      });
    if (Number(pid) === pgid) leaderStart = start;
    rssKiB += Number(rss);
    cpuSeconds += parseCpuTime(time);
    processes += 1;
  }
  if (leaderStart === null) return null;
  return { rssBytes: rssKiB * 1024, cpuSeconds, processes, leaderStart };
}
