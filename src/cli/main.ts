/**
 * The `companion` command line: parses arguments, dispatches to one command, maps errors to one line on
 * stderr and an exit status. No stack trace unless `--debug`, never a secret.
 *
 * Exit status (README, "CLI"): 0 success (also when the reader of stdout went away, as `git log | head`);
 * 1 an error, or a fault that `status` or `doctor` shows; 2 a usage error (unknown option, bad value,
 * missing argument); 130 interrupted by SIGINT (Ctrl-C) — except `up`, `hub` and `demo --keep-running`,
 * for which Ctrl-C is the way to stop and exits 0.
 *
 * With `--json`, stdout carries JSON lines only; a failure ends with exactly one line
 * `{"error":{"code":"ERR_…","message":"…"}}` on stdout, besides the one human line on stderr.
 */
import { CompanionError, ERROR_CODES, isCompanionError, type ErrorCode } from '../core/errors.js';
import { printableOption } from './args.js';
import { COMMANDS, type Command } from './commands.js';
import { CliUsageError, type Io, processIo } from './io.js';

export const EXIT = { ok: 0, error: 1, usage: 2, interrupted: 130 } as const;

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'companion — run a hub\'s LLM work on this machine, safely',
    '',
    'Usage: companion <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --help. Common options: --hub URL (COMPANION_HUB), --ca FILE (COMPANION_CA),',
    '--data-dir DIR (COMPANION_HOME), --manifest-key KEY (COMPANION_MANIFEST_KEY), --keychain memory, --json,',
    '--debug.',
    '',
    'With --json, stdout carries JSON lines only; a failure ends with one line',
    '{"error":{"code":"ERR_…","message":"…"}} (the same message is the one line on stderr).',
    'Exit status: 0 success; 1 error (status and doctor: a fault they show); 2 usage error;',
    '130 interrupted (Ctrl-C; up and hub stop on Ctrl-C with 0).',
  ].join('\n');
}

/** The argument list up to `--` (what follows is never an option). */
function optionPart(args: readonly string[]): readonly string[] {
  const end = args.indexOf('--');
  return end === -1 ? args : args.slice(0, end);
}

/** Runs the CLI with `argv` (without node and script). Returns the exit status. */
export async function main(argv: readonly string[], io: Io = processIo()): Promise<number> {
  const [name, ...rest] = argv;
  const options = optionPart(rest);
  const json = options.includes('--json');
  const debug = options.includes('--debug');
  /** The one human line on stderr and, with --json, the one error object on stdout. */
  const fail = (prefix: string, code: ErrorCode, message: string, hint = ''): void => {
    io.err(`${prefix}: ${message}${hint}`);
    if (json) io.out(JSON.stringify({ error: { code, message } }));
  };
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.out(topHelp());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === '--version' || name === '-v') {
    io.out('0.1.0');
    return EXIT.ok;
  }
  const command: Command | undefined = COMMANDS.find((c) => c.name === name);
  if (command === undefined) {
    fail('companion', 'ERR_USAGE', `unknown command ${printableOption(name)}`, ' (see companion --help)');
    return EXIT.usage;
  }
  if (options.includes('--help') || options.includes('-h')) {
    io.out(command.help);
    return EXIT.ok;
  }
  const prefix = `companion ${name}`;
  // Ctrl-C: a command that listens for SIGINT itself (up, hub, pull, demo) stops its own way; any other
  // is ended here with 130, as a shell reports a process killed by SIGINT.
  let interrupted = false;
  const onSigint = (): void => {
    interrupted = true;
    if (process.listenerCount('SIGINT') > 1) return;
    fail(prefix, 'ERR_INTERRUPTED', ERROR_CODES.ERR_INTERRUPTED, ' [ERR_INTERRUPTED]');
    process.exit(EXIT.interrupted);
  };
  process.on('SIGINT', onSigint);
  const closed = (): boolean => io.outputClosed?.() === true;
  try {
    const status = await command.run(rest, io);
    return closed() ? EXIT.ok : status;
  } catch (error) {
    if (closed()) return EXIT.ok;
    const exit = interrupted ? EXIT.interrupted : EXIT.error;
    if (error instanceof CliUsageError) {
      fail(prefix, error.code, error.message, ` (see ${prefix} --help)`);
      return EXIT.usage;
    }
    if (isCompanionError(error)) {
      fail(prefix, error.code, error.message, ` [${error.code}]`);
      if (debug && error.stack) io.err(error.stack);
      return exit;
    }
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && code in ERROR_CODES) {
      fail(prefix, code as ErrorCode, (error as Error).message, ` [${code}]`);
      return exit;
    }
    // An unexpected error: its message may come from a library and is not known to be safe to print.
    const wrapped = new CompanionError('ERR_INTERNAL');
    fail(prefix, wrapped.code, wrapped.message, ` [${wrapped.code}]; rerun with --debug for details`);
    if (debug && error instanceof Error && error.stack) io.err(error.stack);
    return exit;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
