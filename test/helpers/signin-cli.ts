// `companion` as a child process for the sign-in tests: its stdout lines (JSON where they parse), all of
// its stdout and stderr kept for leak scans, an optional recorder preload whose fd-3 lines are collected
// separately, every wait bounded, and the child killed in `t.after` if it is still running.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { distRoot, repoRoot } from './paths.js';

export const BIN = join(repoRoot, 'bin', 'companion.js');
const PRELOAD = pathToFileURL(join(distRoot, 'test', 'helpers', 'signin-secrets-preload.js')).href;

export interface CliChild {
  readonly child: ChildProcess;
  /** Everything printed so far. */
  stdout(): string;
  stderr(): string;
  /** Secrets reported by the recorder preload (kind → values). */
  recorded(): { kind: string; value: string }[];
  /** The next stdout line that parses as JSON and satisfies `match` (lines already seen count). */
  nextJson(match: (value: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** The exit status (null after a signal), within `timeoutMs`. */
  exited(timeoutMs?: number): Promise<number | null>;
  /** SIGTERM, then SIGKILL after 3 s; resolves once the child is gone (also run by `t.after`). */
  stop(): Promise<void>;
}

export interface CliOptions {
  readonly env: Record<string, string>;
  /** Load the secret recorder into the child (fd 3). */
  readonly record?: boolean;
}

/** Starts `node bin/companion.js ...args`; `t.after` stops it if it has not exited. */
export function startCli(
  t: { after(fn: () => Promise<void> | void): void },
  args: readonly string[],
  options: CliOptions,
): CliChild {
  const nodeArgs = options.record === true ? ['--import', PRELOAD] : [];
  const child = spawn(process.execPath, [...nodeArgs, BIN, ...args], {
    cwd: repoRoot,
    env: options.record === true ? { ...options.env, COMPANION_TEST_RECORD_FD: '3' } : options.env,
    stdio: ['ignore', 'pipe', 'pipe', options.record === true ? 'pipe' : 'ignore'],
  });
  let out = '';
  let err = '';
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  const recorded: { kind: string; value: string }[] = [];
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const value = JSON.parse(line) as unknown;
      if (typeof value === 'object' && value !== null && !Array.isArray(value))
        lines.push(value as Record<string, unknown>);
    } catch {
      // a human line
    }
    for (const wake of waiters.splice(0)) wake();
  });
  const extra = child.stdio[3] as Readable | null | undefined;
  if (extra) {
    createInterface({ input: extra }).on('line', (line) => {
      try {
        recorded.push(JSON.parse(line) as { kind: string; value: string });
      } catch {
        // ignore
      }
    });
  }
  // 'close' (not 'exit'): every line the child printed has been read by then.
  let closed = false;
  const exit = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      closed = true;
      for (const wake of waiters.splice(0)) wake();
      resolve(code);
    }),
  );
  const stop = async (): Promise<void> => {
    if (closed) return;
    // SIGTERM first (a hub removes its temporary CA folder on the way out), SIGKILL after 3 s.
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    await exit;
    clearTimeout(timer);
  };
  t.after(stop);
  let seen = 0;
  return {
    child,
    stop,
    stdout: () => out,
    stderr: () => err,
    recorded: () => [...recorded],
    async nextJson(match, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        while (seen < lines.length) {
          const value = lines[seen++]!;
          if (match(value)) return value;
        }
        if (closed)
          throw new Error(
            `companion ${args[0] ?? ''} exited (${child.exitCode ?? child.signalCode}) before the expected line; stderr: ${err.slice(0, 400)}`,
          );
        const left = deadline - Date.now();
        if (left <= 0)
          throw new Error(
            `companion ${args[0] ?? ''}: no expected line within ${timeoutMs} ms; stderr: ${err.slice(0, 400)}`,
          );
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
    async exited(timeoutMs = 15_000) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`companion ${args[0] ?? ''} did not exit within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        return await Promise.race([exit, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
