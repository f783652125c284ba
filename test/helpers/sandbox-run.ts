// Helpers for the sandbox tests: run a wrapped command as the spawn adapter will (detached: its own
// process group, argv array, no shell), bounded by a timeout, and look at the process tree it leaves.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { distRoot, repoRoot } from './paths.js';

export const BWRAP = '/usr/bin/bwrap';
export const bwrapPresent = existsSync(BWRAP);

/** A compiled fixture under dist/test/fixtures/sandbox/. */
export function fixture(name: string): string {
  return join(distRoot, 'test', 'fixtures', 'sandbox', name);
}

/** The repository's package.json (Node reads `"type": "module"` from it to load the fixtures as ESM). */
export const packageJson = join(repoRoot, 'package.json');

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Kills the whole process group of a detached child; quiet when it is already gone. */
export function killGroup(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** Runs a command detached, collects its output, kills its group after `timeoutMs`. */
export function runDetached(
  command: { file: string; args: readonly string[] },
  timeoutMs = 30_000,
  env: Record<string, string> = {},
): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(command.file, [...command.args], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
      cwd: '/',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => killGroup(child.pid), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Parses the last JSON line a fixture printed; fails with its stderr when there is none. */
export function lastJson<T>(finished: Finished): T {
  const line = finished.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(
      `no JSON from the fixture (code ${String(finished.code)}, signal ${String(finished.signal)}): ${finished.stderr.slice(0, 2000)}`,
    );
  }
}

export interface Started {
  readonly child: ChildProcess;
  /** The first stdout line. */
  readonly firstLine: Promise<string>;
  /** Resolves when the child has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts a long-running command detached; the caller must kill its group (t.after). */
export function startDetached(command: { file: string; args: readonly string[] }, timeoutMs = 30_000): Started {
  const child = spawn(command.file, [...command.args], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {},
    cwd: '/',
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const firstLine = new Promise<string>((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(
      () => reject(new Error(`no line within ${timeoutMs} ms: ${stderr.slice(0, 2000)}`)),
      timeoutMs,
    );
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf('\n');
      if (end >= 0) {
        clearTimeout(timer);
        resolve(buffer.slice(0, end));
      }
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`exited (${String(code)}, ${String(signal)}) before a line: ${stderr.slice(0, 2000)}`));
    });
  });
  firstLine.catch(() => undefined);
  return { child, firstLine, exited };
}

/** The pids below `pid` (children, grandchildren…), read from /proc. */
export { descendantsOf as descendants } from './runtime-env.js';

/** The process group of a live pid, or null when it is gone (or a zombie). */
export function groupOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    return Number(fields[2]);
  } catch {
    return null;
  }
}

/** Waits until every pid is gone (or a zombie), up to `timeoutMs`; returns those still alive. */
export async function waitGone(pids: readonly number[], timeoutMs = 5000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = pids.filter((pid) => groupOf(pid) !== null);
  while (alive.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    alive = alive.filter((pid) => groupOf(pid) !== null);
  }
  return alive;
}
