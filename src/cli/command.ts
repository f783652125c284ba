/**
 * What every command is made of, written once: its declared options (the parser, the `--help` option
 * lines and the completion scripts all read them) and its run function. Opening the command context
 * (configuration, TLS agent) and closing it is {@link withContext} in context.ts; mapping errors to one
 * line and an exit status is `main`'s.
 */
import { optionLines, parseCommandArgs, type OptionTable, type Parsed } from './args.js';
import type { Io } from './io.js';

/** A command of the table (src/cli/commands.ts). */
export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly help: string;
  /** The options it takes: completion lists them, and `main` names the command that takes one another refused. */
  readonly options: OptionTable;
  run(args: readonly string[], io: Io): Promise<number>;
}

/** A command as it is declared. `P` is what its parser returns (the standard parser's {@link Parsed}). */
export interface CommandSpec<P> {
  readonly name: string;
  readonly summary: string;
  /** The help above the option lines: the usage line(s) and what the command does. */
  readonly about: readonly string[];
  readonly options: OptionTable;
  /** Help after the option lines (an `Examples:` section of its own). */
  readonly after?: readonly string[];
  /** How many positional arguments the standard parser lets through (default none). */
  readonly positionals?: number;
  /** A parser of its own, for options the standard one cannot express (`hub`: repeated, ordered options). */
  readonly parse?: (args: readonly string[]) => P;
  run(parsed: P, io: Io): Promise<number>;
}

/** Every command takes `--help` (main answers it before the command's parser runs). */
const HELP_OPTION: OptionTable = { help: { type: 'boolean', help: "print this command's help" } };

/** A command's `--help` text: what it does, then `Options:` with a line per declared option, and --help. */
export function commandHelp(about: readonly string[], options: OptionTable, after: readonly string[] = []): string {
  const lines = optionLines({ ...options, ...HELP_OPTION });
  return [...about, '', 'Options:', ...lines, ...(after.length > 0 ? ['', ...after] : [])].join('\n');
}

/** A command that parses its arguments with the standard parser, against the options it declares. */
export function defineCommand(spec: CommandSpec<Parsed>): Command;
/** A command with a parser of its own (its options are still declared, for help and completion). */
export function defineCommand<P>(spec: CommandSpec<P> & { readonly parse: (args: readonly string[]) => P }): Command;
/** Makes the command of `spec`: the help from its declared options, the parser, then its run. */
export function defineCommand<P>(spec: CommandSpec<P>): Command {
  const parse =
    spec.parse ?? ((args: readonly string[]) => parseCommandArgs(args, spec.options, spec.positionals) as P);
  return {
    name: spec.name,
    summary: spec.summary,
    help: commandHelp(spec.about, spec.options, spec.after),
    options: spec.options,
    run: async (args, io) => spec.run(parse(args), io),
  };
}
