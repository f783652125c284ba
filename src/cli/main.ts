/**
 * The `companion` command line: parses arguments, dispatches to one command, maps errors to one line on
 * stderr and an exit status. No stack trace unless `--debug`, never a secret.
 */
import { CompanionError, ERROR_CODES, isCompanionError } from '../core/errors.js';
import { COMMANDS, type Command } from './commands.js';
import { CliUsageError, type Io, processIo } from './io.js';

export const EXIT = { ok: 0, error: 1, usage: 2 } as const;

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
  ].join('\n');
}

/** Runs the CLI with `argv` (without node and script). Returns the exit status. */
export async function main(argv: readonly string[], io: Io = processIo()): Promise<number> {
  const [name, ...rest] = argv;
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
    io.err(`companion: unknown command '${name}'; run 'companion --help'`);
    return EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(command.help);
    return EXIT.ok;
  }
  const debug = rest.includes('--debug');
  try {
    return await command.run(rest, io);
  } catch (error) {
    if (error instanceof CliUsageError) {
      io.err(`companion ${name}: ${error.message}; run 'companion ${name} --help'`);
      return EXIT.usage;
    }
    if (isCompanionError(error)) {
      io.err(`companion ${name}: ${error.message} [${error.code}]`);
      if (debug && error.stack) io.err(error.stack);
      return EXIT.error;
    }
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && code in ERROR_CODES) {
      io.err(`companion ${name}: ${(error as Error).message} [${code}]`);
      return EXIT.error;
    }
    // An unexpected error: its message may come from a library and is not known to be safe to print.
    const wrapped = new CompanionError('ERR_INTERNAL');
    io.err(`companion ${name}: ${wrapped.message} [${wrapped.code}]; rerun with --debug for details`);
    if (debug && error instanceof Error && error.stack) io.err(error.stack);
    return EXIT.error;
  }
}
