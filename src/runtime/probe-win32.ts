/**
 * The Windows half of the resource probe (D5.6, P-j): a PowerShell CIM query that walks the runtime's
 * process tree down from its root, and the parser of its output. Not run on the Linux build machine:
 * unit-tested on the argv and script it builds and on constructed output (docs/probe.md).
 *
 * Windows has no process group to ask for (a detached spawn only makes a console group for Ctrl+Break),
 * so the runtime's processes are its root (`pid === pgid`) and the root's descendants, found with one
 * `Win32_Process` query per member, filtered by `ParentProcessId` (the query returns only those rows).
 * A child whose creation time is earlier than its parent's is a reused pid's orphan, not ours: skipped.
 * The script prints no pid and no name: one line per member with its working set and CPU times.
 */
import { CompanionError } from '../core/errors.js';
import { unparsableOutput, type GroupSample } from './probe-sample.js';

/** The most members the script walks (as on Linux). */
export const WIN32_MAX_MEMBERS = 1024;

/** The absolute path of Windows PowerShell 5.1 (present on every supported Windows), from `SystemRoot`. */
export function win32PowerShellPath(systemRoot: string): string {
  return `${systemRoot.replace(/[\\/]+$/, '')}\\System32\\WindowsPowerShell\\v1.0\\powershell.exe`;
}

/**
 * The PowerShell script for the group rooted at `pgid` (an integer checked by the caller).
 * @throws CompanionError ERR_PROBE_FAILED when `pgid` is not a positive safe integer (never put in a script).
 */
export function win32Script(pgid: number): string {
  if (!Number.isSafeInteger(pgid) || pgid < 1) throw new CompanionError('ERR_PROBE_FAILED');
  return [
    "$ErrorActionPreference = 'Stop'",
    `$root = Get-CimInstance -ClassName Win32_Process -Filter 'ProcessId = ${pgid}'`,
    'if ($null -eq $root) { exit 0 }',
    '$todo = New-Object System.Collections.Queue',
    '$todo.Enqueue($root)',
    '$count = 0',
    `while ($todo.Count -gt 0 -and $count -lt ${WIN32_MAX_MEMBERS}) {`,
    '  $p = $todo.Dequeue()',
    '  $count++',
    "  $kind = if ($count -eq 1) { 'R' } else { 'C' }",
    "  '{0} {1} {2} {3} {4}' -f $kind, $p.WorkingSetSize, $p.UserModeTime, $p.KernelModeTime, $p.CreationDate.ToFileTimeUtc()",
    "  foreach ($c in @(Get-CimInstance -ClassName Win32_Process -Filter ('ParentProcessId = ' + $p.ProcessId))) {",
    '    if ($c.CreationDate -ge $p.CreationDate) { $todo.Enqueue($c) }',
    '  }',
    '}',
    `if ($todo.Count -gt 0) { 'MORE' }`,
  ].join('\n');
}

/** The argv: the script travels base64 UTF-16LE in `-EncodedCommand`, so no quoting layer can alter it. */
export function win32Args(pgid: number): string[] {
  return [
    '-NoLogo',
    '-NoProfile',
    '-NonInteractive',
    '-EncodedCommand',
    Buffer.from(win32Script(pgid), 'utf16le').toString('base64'),
  ];
}

/** The environment for PowerShell: what it needs to start, nothing else of the parent's. */
export function win32Env(parent: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ['SystemRoot', 'windir', 'SystemDrive', 'PATH', 'PATHEXT']) {
    const value = parent[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

function malformed(): CompanionError {
  return unparsableOutput('PowerShell', 'powershell');
}

/**
 * Parses the script's output: `R|C <workingSetBytes> <user100ns> <kernel100ns> <creationFileTime>`.
 * Returns `null` when there is no root line (the runtime is gone).
 * @throws CompanionError ERR_PROBE_FAILED on a malformed line or when the walk hit its bound.
 */
export function parseWin32Output(stdout: string): GroupSample | null {
  let rssBytes = 0;
  let hundredNs = 0;
  let processes = 0;
  let leaderStart: string | null = null;
  for (const line of stdout.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    if (trimmed === 'MORE')
      throw new CompanionError('ERR_PROBE_FAILED', 'the runtime has too many processes to probe', {
        detail: { step: 'walk' },
      });
    const match = /^([RC]) (\d{1,20}) (\d{1,20}) (\d{1,20}) (\d{1,20})$/.exec(trimmed);
    if (match === null) throw malformed();
    const [, kind, ws, user, kernel, created] = match as unknown as [string, string, string, string, string, string];
    if (kind === 'R') {
      if (leaderStart !== null || processes !== 0) throw malformed();
      leaderStart = created;
    } else if (leaderStart === null) {
      throw malformed();
    }
    rssBytes += Number(ws);
    hundredNs += Number(user) + Number(kernel);
    processes += 1;
  }
  if (leaderStart === null) return null;
  return { rssBytes, cpuSeconds: hundredNs / 1e7, processes, leaderStart };
}
