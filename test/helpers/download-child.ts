// A child process for download tests and the download benchmark, run as
// `node dist/test/helpers/download-child.js pull|serve` with one JSON request on stdin (never on argv).
//   pull:  runs pullModel() against the given model entry, prints each event as a JSON line, then
//          {"done":true,"ms":…,"maxRssKb":…} or {"error":CODE}. Progress events come every `progressMs`.
//   serve: starts a reference hub (with the given synthetic models and data directory), prints
//          {"modelHostUrl","caPem","models"} once, and closes when stdin ends or on SIGTERM.
import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { closeSync, existsSync, openSync, readdirSync, statSync, writeSync } from 'node:fs';
import type { ManifestModel } from '../../src/core/manifest-format.js';
import type { SyntheticModelSpec } from '../../src/hub/synthetic.js';
import { distRoot } from './paths.js';

export interface PullRequest {
  readonly model: ManifestModel;
  readonly modelsDir: string;
  readonly caPem: string;
  readonly progressMs?: number;
  readonly hashOn?: 'worker' | 'main';
  /** Fill the file system of this path with a file of zeros at the first event (disk full mid-way). */
  readonly fillDiskAt?: string;
  /** Print {"tree":[…]} (the models directory's files and sizes) before the last line. */
  readonly reportTree?: boolean;
}

export interface ServeRequest {
  readonly dataDir?: string;
  readonly extraModels: readonly SyntheticModelSpec[];
}

export interface ServeReply {
  readonly modelHostUrl: string;
  readonly caPem: string;
  readonly models: readonly ManifestModel[];
}

export const CHILD_SCRIPT = join(distRoot, 'test', 'helpers', 'download-child.js');

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function runPull(request: PullRequest): Promise<void> {
  const { createTlsAgent } = await import('../../src/common/tls.js');
  const { pullModel } = await import('../../src/runtime/manager/install.js');
  const { verifiedModel } = await import('./download-verified.js');
  const agent = createTlsAgent({ extraCas: [request.caPem] });
  // The entry came over stdin as JSON, which drops the brand: it is verified again (a manifest of its own).
  const model = verifiedModel(request.model);
  const startRssKb = Math.round(process.memoryUsage().rss / 1024);
  const started = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  const faultsStart = process.resourceUsage().minorPageFault;
  let filled = false;
  try {
    await pullModel({
      model,
      manifestVersion: 1,
      modelsDir: request.modelsDir,
      dispatcher: agent,
      progressIntervalMs: request.progressMs ?? 1000,
      ...(request.hashOn === undefined ? {} : { hashOn: request.hashOn }),
      onEvent: (event) => {
        if (request.fillDiskAt !== undefined && !filled) {
          filled = true;
          fillDisk(request.fillDiskAt);
        }
        process.stdout.write(`${JSON.stringify(event)}\n`);
      },
    });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stdout.write(
      `${JSON.stringify({ done: true, ms, startRssKb, maxRssKb: process.resourceUsage().maxRSS, cpuMs: cpuMs(process.cpuUsage(cpuStart)), minorFaults: process.resourceUsage().minorPageFault - faultsStart })}\n`,
    );
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ error: (error as { code?: unknown }).code ?? 'unknown' })}\n`);
    process.exitCode = 1;
  } finally {
    if (request.reportTree === true) process.stdout.write(`${JSON.stringify({ tree: tree(request.modelsDir) })}\n`);
    await agent.close();
  }
}

/** User plus system CPU time of the whole process (every thread), in ms. */
function cpuMs(usage: NodeJS.CpuUsage): number {
  return (usage.user + usage.system) / 1000;
}

/** Writes zeros to `path` until the file system says it is full. */
function fillDisk(path: string): void {
  const fd = openSync(path, 'w');
  const zeros = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, zeros);
  } catch {
    // ENOSPC: full
  } finally {
    closeSync(fd);
  }
}

/** Relative path and size of every file under `dir`. */
function tree(dir: string): { path: string; size: number }[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .sort()
    .map((path) => ({ path, size: statSync(join(dir, path)).size }));
}

async function runServe(request: ServeRequest): Promise<void> {
  const { startHub } = await import('../../src/hub/index.js');
  const hub = await startHub({
    extraModels: request.extraModels,
    ...(request.dataDir === undefined ? {} : { dataDir: request.dataDir }),
  });
  const reply: ServeReply = { modelHostUrl: hub.modelHostUrl, caPem: hub.caPem, models: hub.models };
  process.stdout.write(`${JSON.stringify(reply)}\n`);
  await new Promise<void>((resolve) => {
    process.stdin.on('end', resolve);
    process.stdin.resume();
    process.once('SIGTERM', resolve);
  });
  await hub.close();
}

/**
 * Spawns the child in `mode` and writes `request` to its stdin (closed after, except for serve). With
 * `wrap` (e.g. `['unshare', '-m', 'sh', '-c', 'mount … && exec "$0" "$@"']`) the command runs through it.
 */
export function spawnDownloadChild(
  mode: 'pull' | 'serve',
  request: PullRequest | ServeRequest,
  wrap: readonly string[] = [],
): ChildProcessWithoutNullStreams {
  const argv = [...wrap, process.execPath, CHILD_SCRIPT, mode];
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
  child.stdin.write(`${JSON.stringify(request)}\n`);
  if (mode === 'pull') child.stdin.end();
  return child;
}

/** Calls `onLine` with each JSON line the child prints on stdout. */
export function jsonLines(
  child: ChildProcessWithoutNullStreams,
  onLine: (value: Record<string, unknown>) => void,
): void {
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      onLine(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not a JSON line: ignored
    }
  });
}

/** Resolves with the child's exit code or signal (bounded by `timeoutMs`, then SIGKILL). */
export function exited(
  child: ChildProcessWithoutNullStreams,
  timeoutMs = 60_000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const mode = process.argv[2];
  if (mode === 'serve') {
    // The serve request is one line; stdin then stays open as the "keep running" signal.
    const line = await new Promise<string>((resolve) => {
      createInterface({ input: process.stdin }).once('line', resolve);
    });
    await runServe(JSON.parse(line) as ServeRequest);
  } else if (mode === 'pull') {
    await runPull(JSON.parse(await readStdin()) as PullRequest);
  } else {
    process.stderr.write('usage: download-child.js pull|serve (request on stdin)\n');
    process.exitCode = 2;
  }
}
