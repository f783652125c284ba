// Runs the real `companion` CLI (bin/companion.js) as child processes, for the e2e tier.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export const BIN = join(repoRoot, 'bin', 'companion.js');

export interface CliResult {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs one command to completion (bounded). */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`companion ${args[0]} did not finish in ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

export interface LongRunning {
  readonly child: ChildProcessWithoutNullStreams;
  /** Every stdout line so far. */
  readonly lines: string[];
  stderr(): string;
  /**
   * Waits for a JSON line matching `predicate` (already seen or future), looking only at lines from index
   * `fromLine` on (default 0). Resolves with the value and its line index.
   */
  waitJson(
    predicate: (value: Record<string, unknown>) => boolean,
    timeoutMs?: number,
    fromLine?: number,
  ): Promise<Record<string, unknown>>;
  /** Like `waitJson`, and also tells at which line index the match was. */
  waitJsonLine(
    predicate: (value: Record<string, unknown>) => boolean,
    timeoutMs?: number,
    fromLine?: number,
  ): Promise<{ value: Record<string, unknown>; index: number }>;
  /** SIGTERM, then waits for exit (SIGKILL after the bound). */
  stop(timeoutMs?: number): Promise<number | null>;
  /** Waits for the process to exit by itself (rejects after the bound). */
  exit(timeoutMs?: number): Promise<number | null>;
}

/** Starts a long-running command (`hub`, `up`, `login`, `demo --keep-running`). */
export function startCli(args: readonly string[], env: NodeJS.ProcessEnv): LongRunning {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: repoRoot, env, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  const listeners = new Set<() => void>();
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    for (const wake of listeners) wake();
  });
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      for (const wake of listeners) wake();
      resolve(code);
    }),
  );
  const parse = (line: string): Record<string, unknown> | null => {
    try {
      const value = JSON.parse(line) as unknown;
      return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  };
  const waitJsonLine: LongRunning['waitJsonLine'] = (predicate, timeoutMs = 60_000, fromLine = 0) => {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        for (let index = fromLine; index < lines.length; index += 1) {
          const value = parse(lines[index]!);
          if (value !== null && predicate(value)) {
            cleanup();
            resolve({ value, index });
            return;
          }
        }
        if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          reject(
            new Error(
              `companion ${args[0]} exited (${child.exitCode ?? child.signalCode}) before the expected line\nstdout: ${lines.join('\n')}\nstderr: ${stderr}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `companion ${args[0]}: no expected line in ${timeoutMs} ms\nstdout: ${lines.join('\n')}\nstderr: ${stderr}`,
          ),
        );
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  };
  return {
    child,
    lines,
    stderr: () => stderr,
    waitJson: (predicate, timeoutMs = 60_000, fromLine = 0) =>
      waitJsonLine(predicate, timeoutMs, fromLine).then(({ value }) => value),
    waitJsonLine,
    exit(timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`companion ${args[0]} did not exit in ${timeoutMs} ms`)),
          timeoutMs,
        );
        void exited.then((code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
    },
    async stop(timeoutMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
