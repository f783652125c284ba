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
import { printableOption, UnknownOptionError } from './args.js';
import type { Command } from './command.js';
import { COMMANDS } from './commands.js';
import { withExamples } from './examples.js';
import { CliUsageError, type Io, processIo } from './io.js';

export const EXIT = { ok: 0, error: 1, usage: 2, interrupted: 130 } as const;

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "companion — run a hub's LLM work on this machine, safely",
    '',
    'Usage: companion <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    `  ${'help'.padEnd(width)}  print a command's help (companion help CMD, as companion CMD --help)`,
    '',
    'Every command takes --help, which lists the options it takes. Shared ones, where they apply: --hub URL',
    '(COMPANION_HUB), --ca FILE (COMPANION_CA), --data-dir DIR (COMPANION_HOME), --manifest-key KEY',
    '(COMPANION_MANIFEST_KEY), --keychain memory, --json, --debug. A successful login remembers --hub, --ca',
    "and --manifest-key in the data dir's config.json",
    '(companion config); flags, then the environment, override it.',
    '',
    'Getting started (see the README): companion hub --data-dir ~/.companion-hub; companion login --hub URL',
    '--ca FILE --manifest-key KEY (once); companion pull; companion up --detach; companion run "Say hello".',
    '',
    'With --json, stdout carries JSON lines only; a failure ends with one line',
    '{"error":{"code":"ERR_…","message":"…"}} (the same message is the one line on stderr).',
    'Exit status: 0 success; 1 error (status and doctor: a fault they show); 2 usage error;',
    '130 interrupted (Ctrl-C; up and hub stop on Ctrl-C with 0).',
  ].join('\n');
}

/** A command's `--help` text with its examples (src/cli/examples.ts). */
export function helpText(command: Command): string {
  return withExamples(command.name, command.help);
}

/** The optimal string alignment distance (Levenshtein plus adjacent transpositions: `stauts` → `status` is 1). */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i += 1) {
    for (let j = 1; j <= b.length; j += 1) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = best;
    }
  }
  return rows[a.length]![b.length]!;
}

/**
 * The command name closest to a mistyped `name`, when it is close enough to be what was meant: at most
 * one edit for names up to 4 letters, two for longer ones (case aside: `STATUS` suggests `status`). Ties
 * go to the earlier name in the table.
 */
export function suggestCommand(
  name: string,
  names: readonly string[] = [...COMMANDS.map((c) => c.name), 'help'],
): string | null {
  const typed = name.toLowerCase();
  if (typed.length === 0 || typed.length > 40) return null;
  let best: { name: string; distance: number } | null = null;
  for (const candidate of names) {
    const distance = editDistance(typed, candidate);
    if (best === null || distance < best.distance) best = { name: candidate, distance };
  }
  const bound = typed.length <= 4 ? 1 : 2;
  return best !== null && best.name !== name && best.distance <= bound ? best.name : null;
}

/** The usage failure for an unknown command name, with a "did you mean" when one is close. */
function unknownCommand(name: string): { message: string; hint: string } {
  const shown = printableOption(name);
  const suggestion = name.startsWith('-') ? null : suggestCommand(name);
  return suggestion === null
    ? { message: `unknown command ${shown}`, hint: ' (see companion --help)' }
    : { message: `unknown command ${shown}; did you mean ${suggestion}?`, hint: '' };
}

/**
 * The usage message for an option `command` does not take: which commands take it, when a few do
 * (`--threads is an option of companion demo and companion up, not of companion status`); when most do,
 * only that this one does not (its --help, named after the message, lists what it takes).
 */
export function unknownOptionMessage(error: UnknownOptionError, command: string, commands = COMMANDS): string {
  const name = error.option.startsWith('--') ? error.option.slice(2) : null;
  const owners = name === null ? [] : commands.filter((c) => Object.hasOwn(c.options, name)).map((c) => c.name);
  if (owners.length === 0) return error.message;
  if (owners.length > 3) return `${error.option} is not an option of companion ${command}`;
  return `${error.option} is an option of ${owners.map((o) => `companion ${o}`).join(' and ')}, not of companion ${command}`;
}

/** The argument list up to `--` (what follows is never an option). */
function optionPart(args: readonly string[]): readonly string[] {
  const end = args.indexOf('--');
  return end === -1 ? args : args.slice(0, end);
}

/**
 * Runs the CLI with `argv` (without node and script). Returns the exit status; never throws: an
 * unexpected error is reported as ERR_INTERNAL (its message may not be safe to print).
 */
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
  if (name === 'help' && rest[0] !== undefined && !rest[0].startsWith('-')) {
    // `companion help CMD` prints what `companion CMD --help` prints.
    const target = COMMANDS.find((c) => c.name === rest[0]);
    if (target !== undefined) {
      io.out(helpText(target));
      return EXIT.ok;
    }
    if (rest[0] === 'help') {
      io.out(topHelp());
      return EXIT.ok;
    }
    const { message, hint } = unknownCommand(rest[0]);
    fail('companion help', 'ERR_USAGE', message, hint);
    return EXIT.usage;
  }
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
    const { message, hint } = unknownCommand(name);
    fail('companion', 'ERR_USAGE', message, hint);
    return EXIT.usage;
  }
  if (options.includes('--help') || options.includes('-h')) {
    io.out(helpText(command));
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
    if (error instanceof UnknownOptionError) {
      fail(prefix, error.code, unknownOptionMessage(error, command.name), ` (see ${prefix} --help)`);
      return EXIT.usage;
    }
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
