/**
 * `companion ps` (issue 18 item 3): the running runtime of this data dir as `status` shows it: model id,
 * state, uptime, RSS of the runtime's process tree, backend, pid and endpoint URL. Nothing running is a
 * state, not a fault (exit 0), as `docker ps` with no container. Never a token, path or digest.
 */
import { constants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { readDiscovery, type PublishedState } from '../runtime/manager/discovery.js';
import { readPublishedState } from '../shell/discovery.js';
import { parseUpLock, upLockIsLive } from '../shell/up-lock.js';
import { LOCAL_OPTIONS } from './args.js';
import { defineCommand } from './command.js';
import { withContext, type CommandContext } from './context.js';
import type { Io } from './io.js';
import { humanBytes } from './progress.js';
import { tableLines } from './table.js';

/** A running `companion up` of this data dir, and what it serves (null: not said yet). */
export interface RunningUp {
  readonly pid: number;
  readonly state: PublishedState | null;
  readonly model: string | null;
}

/**
 * The `up` that holds `run/up.lock` (a live process with the recorded identity), or one of an older
 * version that only left a live discovery record; null when none runs.
 */
export async function findRunningUp(context: CommandContext): Promise<RunningUp | null> {
  let pid: number | null = null;
  // O_NOFOLLOW: a link at the lock name is not a lock of ours.
  const text = await readFile(context.paths.upLock, {
    encoding: 'utf8',
    flag: constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0),
  }).catch(() => null);
  const lock = text === null ? null : parseUpLock(text);
  if (lock !== null && upLockIsLive(lock)) pid = lock.pid;
  else pid = (await readDiscovery(context.paths.discovery))?.pid ?? null;
  if (pid === null) return null;
  const state = await readPublishedState(context.paths.state, pid);
  const model = state !== null && typeof state.model?.id === 'string' ? state.model.id : null;
  return { pid, state, model };
}

/** Clock ticks per second of /proc/<pid>/stat's start time (USER_HZ: 100 on every Linux Node runs on). */
const USER_HZ = 100;

/** Seconds since process `pid` started (Linux /proc), or null without /proc or when it is gone. */
export async function processUptimeSeconds(pid: number): Promise<number | null> {
  try {
    const [stat, uptime] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile('/proc/uptime', 'utf8')]);
    // After the ")" that ends the command name, field 3 is index 0: the start time (field 22) is index 19.
    const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const now = Number(uptime.split(' ')[0]);
    if (!Number.isFinite(start) || !Number.isFinite(now)) return null;
    return Math.max(0, Math.floor(now - start / USER_HZ));
  } catch {
    return null;
  }
}

/** `3d 4h`, `2h 5m`, `4m 10s`, `12s`. */
export function formatUptime(seconds: number): string {
  const d = Math.floor(seconds / 86_400);
  const h = Math.floor((seconds % 86_400) / 3_600);
  const m = Math.floor((seconds % 3_600) / 60);
  const s = seconds % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** The `ps` row of a running `up`: what its published state says, and the runtime's uptime. */
async function psRow(up: RunningUp): Promise<Record<string, unknown> & PsCells> {
  const state = up.state;
  const runtimePid = state?.runtime?.pid ?? null;
  const rss = state?.resources?.rssBytes;
  const backend = (state as { backend?: unknown } | null)?.backend;
  const gpuLayers = (state as { gpuLayers?: unknown } | null)?.gpuLayers;
  return {
    model: up.model,
    state: state?.runtime?.state ?? 'starting',
    pid: runtimePid,
    upPid: up.pid,
    uptimeSeconds: runtimePid === null ? null : await processUptimeSeconds(runtimePid),
    rssBytes: typeof rss === 'number' ? rss : null,
    // What the runtime reported in its ready line (gpu auto: a GPU or the CPU); null before it is ready.
    backend: typeof backend === 'string' ? backend : null,
    gpuLayers: typeof gpuLayers === 'number' ? gpuLayers : null,
    sandbox: state?.sandbox ?? null,
    endpoint: state?.endpoint ?? null,
    parallel: state?.parallel ?? null,
    contextSize: state?.contextSize ?? null,
  };
}

/** What the human table shows of a row. */
interface PsCells {
  readonly model: string | null;
  readonly state: string;
  readonly pid: number | null;
  readonly uptimeSeconds: number | null;
  readonly rssBytes: number | null;
  readonly backend: string | null;
  readonly endpoint: string | null;
}

/** The human table: a header and the one row. */
function printPsTable(io: Io, row: PsCells): void {
  const cells = [
    row.model ?? '-',
    row.state,
    row.pid === null ? '-' : String(row.pid),
    row.uptimeSeconds === null ? '-' : formatUptime(row.uptimeSeconds),
    row.rssBytes === null ? '-' : humanBytes(row.rssBytes),
    row.backend ?? '-',
    row.endpoint ?? '-',
  ];
  for (const line of tableLines(['MODEL', 'STATE', 'PID', 'UPTIME', 'RSS', 'BACKEND', 'ENDPOINT'], [cells]))
    io.out(line);
}

/** `ps` with the context open. */
async function ps(context: CommandContext, io: Io): Promise<number> {
  const up = await findRunningUp(context);
  if (up === null) {
    if (!context.json) io.out('nothing running (start it with companion up)');
    return 0;
  }
  const row = await psRow(up);
  if (context.json) context.emit(row);
  else printPsTable(io, row);
  return 0;
}

export const psCommand = defineCommand({
  name: 'ps',
  summary: 'show the running runtime (model, uptime, memory, pid, endpoint)',
  about: [
    'Usage: companion ps [--json]',
    '',
    'Shows the runtime that companion up runs for this data directory: the model it serves, its state, how',
    "long the runtime process has run, its memory (RSS of the runtime's process tree), the backend (cpu,",
    'cuda, vulkan or metal, as the runtime reported it once ready; "gpuLayers" in --json),',
    "the runtime's pid and up's, and the endpoint URL (never the token: companion endpoint prints that).",
    'When nothing runs it prints "nothing running" and exits 0: that is a state, not a fault.',
    'With --json: one line {"model","state","pid","upPid","uptimeSeconds","rssBytes","backend","gpuLayers","sandbox",',
    '"endpoint"} while something runs; no line when nothing does.',
  ],
  options: LOCAL_OPTIONS,
  after: ['Examples:', '  companion ps', '  companion ps --json'],
  run: (parsed, io) => withContext(parsed, io, (context) => ps(context, io)),
});
