/** Output ports of the CLI, swapped in tests. Every command writes through these, never to process.stdout. */
import type { ErrorCode } from '../core/errors.js';

export interface Io {
  /** One line on stdout. */
  out(line: string): void;
  /** One line on stderr. */
  err(line: string): void;
  /** Text on stdout without a newline (a progress bar, streamed tokens). Never used with --json. */
  write(text: string): void;
  readonly isTty: boolean;
  /** The terminal's width in columns (stdout), when known; callers assume 80 without it. */
  readonly columns?: () => number | undefined;
  readonly env: NodeJS.ProcessEnv;
  /** True once the reader of stdout went away (EPIPE): the exit status is then 0, as `git log | head`. */
  readonly outputClosed?: () => boolean;
  /**
   * The terminal streams, for a command that reads stdin or holds an interactive session (`run`).
   * Absent (a test's Io): stdin counts as empty and not a terminal.
   */
  readonly input?: NodeJS.ReadableStream & { readonly isTTY?: boolean };
  /** The terminal's output stream, for the interactive session's line editor (given with `input`). */
  readonly output?: NodeJS.WritableStream;
}

/**
 * The process's own streams. A reader that closes early (`companion status | head -1`) makes the next
 * write fail with EPIPE: that ends the process quietly, never with a stack trace. A long-running command
 * (it listens for SIGTERM: `up`, `hub`, `demo`) is stopped as by SIGTERM so its children are stopped too;
 * any other command exits at once with status 0.
 */
export function processIo(): Io {
  let closed = false;
  const onStreamError = (error: NodeJS.ErrnoException): void => {
    if (closed) return;
    // Why any error, not only EPIPE: nothing can be printed about a broken stdout or stderr anyway.
    closed = true;
    if (error.code !== 'EPIPE') process.exitCode = 1;
    else process.exitCode = 0;
    if (process.listenerCount('SIGTERM') > 0) process.kill(process.pid, 'SIGTERM');
    else process.exit();
  };
  process.stdout.on('error', onStreamError);
  process.stderr.on('error', onStreamError);
  const write = (stream: NodeJS.WriteStream, text: string): void => {
    if (closed || stream.destroyed) return;
    stream.write(text);
  };
  return {
    out: (line) => write(process.stdout, `${line}\n`),
    err: (line) => write(process.stderr, `${line}\n`),
    write: (text) => write(process.stdout, text),
    isTty: process.stdout.isTTY === true,
    // Read at each call: the terminal may be resized during a pull.
    columns: () => (process.stdout.isTTY === true ? process.stdout.columns : undefined),
    env: process.env,
    outputClosed: () => closed,
    // Getters: process.stdin is made only by a command that reads it.
    get input() {
      return process.stdin;
    },
    get output() {
      return process.stdout;
    },
  };
}

/**
 * A command-line usage problem (unknown option, bad value, missing argument): one line on stderr with a
 * pointer to --help, exit status 2, and with --json `{"error":{"code":"ERR_USAGE",…}}` on stdout.
 */
export class CliUsageError extends Error {
  override readonly name = 'CliUsageError';
  readonly code: ErrorCode = 'ERR_USAGE';
}
