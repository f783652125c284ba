/**
 * Argument parsing for the commands: each command declares the options it takes (its own and some of the
 * shared ones of CONTRACT §6), and the parser, the `--help` option lines and the completion scripts are
 * all made from that one declaration, so they cannot drift apart.
 */
import { parseArgs } from 'node:util';
import { CliUsageError } from './io.js';

/** One option a command takes. */
export interface OptionDef {
  readonly type: 'string' | 'boolean';
  /** The value's placeholder in help (`URL`, `N`, `FILE`, `memory`); only for a string option. */
  readonly value?: string;
  /** The help text: one line, or several (the later ones continue the description). */
  readonly help: string | readonly string[];
}

/** A command's options by name (without `--`), in the order its help lists them. */
export type OptionTable = Readonly<Record<string, OptionDef>>;

/** The shared options, each defined once; a command picks the ones it takes (see the groups below). */
export const SHARED_OPTIONS = {
  hub: { type: 'string', value: 'URL', help: 'hub to use (env COMPANION_HUB)' },
  ca: { type: 'string', value: 'FILE', help: 'extra trusted CA, PEM (env COMPANION_CA)' },
  'data-dir': { type: 'string', value: 'DIR', help: 'all state of this installation (env COMPANION_HOME)' },
  'manifest-key': {
    type: 'string',
    value: 'KEY',
    help: 'pinned manifest public key(s), ed25519:… (env COMPANION_MANIFEST_KEY)',
  },
  keychain: {
    type: 'string',
    value: 'memory',
    help: 'explicit in-memory keychain (demo and tests only; announced on stderr)',
  },
  threads: { type: 'string', value: 'N', help: "CPU threads for inference (default: the runtime's choice)" },
  'allow-unsandboxed': { type: 'boolean', help: 'start even when no sandbox can be made (status and doctor say so)' },
  json: { type: 'boolean', help: 'JSON lines only on stdout; a failure ends with {"error":{"code","message"}}' },
  debug: { type: 'boolean', help: 'print stack traces of errors' },
} as const satisfies OptionTable;

/** `--json` and `--debug`: every command that prints takes them. */
export const OUTPUT_OPTIONS = { json: SHARED_OPTIONS.json, debug: SHARED_OPTIONS.debug } as const;

/** `--data-dir`, `--json`, `--debug`: a command that reads or changes only this installation's files. */
export const LOCAL_OPTIONS = { 'data-dir': SHARED_OPTIONS['data-dir'], ...OUTPUT_OPTIONS } as const;

/**
 * The hub settings (`--hub`, `--ca`, `--manifest-key`: what `login` remembers), `--data-dir` and
 * `--keychain`, with `--json` and `--debug`: a command that reaches the hub or this installation's
 * keychain items. Why the three together even where one is not read (`logout` verifies no manifest):
 * they are one installation's settings, which users pass as a set (the README's login line), and
 * refusing one of them would break a copied command line for nothing.
 */
export const HUB_OPTIONS = {
  hub: SHARED_OPTIONS.hub,
  ca: SHARED_OPTIONS.ca,
  'data-dir': SHARED_OPTIONS['data-dir'],
  'manifest-key': SHARED_OPTIONS['manifest-key'],
  keychain: SHARED_OPTIONS.keychain,
  ...OUTPUT_OPTIONS,
} as const;

/** Where a description starts in an option line of `--help`. */
const HELP_COLUMN = 25;

/** The `Options:` lines of a help text for `options`, in their order. */
export function optionLines(options: OptionTable): string[] {
  const lines: string[] = [];
  for (const [name, def] of Object.entries(options)) {
    const label = `  --${name}${def.value === undefined ? '' : ` ${def.value}`}`;
    const [first = '', ...rest] = typeof def.help === 'string' ? [def.help] : def.help;
    if (label.length < HELP_COLUMN - 1) lines.push(`${label.padEnd(HELP_COLUMN)}${first}`);
    else lines.push(label, `${' '.repeat(HELP_COLUMN)}${first}`);
    for (const line of rest) lines.push(`${' '.repeat(HELP_COLUMN)}${line}`);
  }
  return lines;
}

export interface Parsed {
  readonly values: Record<string, string | boolean | undefined>;
  readonly positionals: string[];
  /** The arguments as given (`up --detach` hands them on to the background `up`). */
  readonly args: readonly string[];
}

/**
 * An argument as it may be echoed in a usage message: the option name only (never a `=value`, which may
 * be a secret), at most 40 characters, printable ASCII (no terminal escapes).
 */
export function printableOption(arg: string): string {
  const name = arg.startsWith('--') && arg.includes('=') ? arg.slice(0, arg.indexOf('=')) : arg;
  const clean = name.replace(/[^\x21-\x7e]/g, '?');
  return clean.length > 40 ? `${clean.slice(0, 40)}…` : clean;
}

/**
 * An option this command does not take. `main` names the commands that take it, if any (it has the
 * command table; the parser does not).
 */
export class UnknownOptionError extends CliUsageError {
  /** The option as typed, made printable (see {@link printableOption}). */
  readonly option: string;
  constructor(arg: string) {
    super(`unknown option ${printableOption(arg)}`);
    this.option = printableOption(arg);
  }
}

/**
 * Checks `args` against `options` before node:util sees them, so that each mistake is one readable line
 * (node:util's messages are long and suggest `--` tricks). @throws CliUsageError, UnknownOptionError
 */
export function checkOptions(args: readonly string[], options: OptionTable): void {
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i]!;
    if (arg === '--') return;
    if (!arg.startsWith('-') || arg === '-') continue;
    if (!arg.startsWith('--')) throw new UnknownOptionError(arg);
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const spec = Object.hasOwn(options, name) ? options[name] : undefined;
    if (spec === undefined) throw new UnknownOptionError(arg);
    if (spec.type === 'boolean' && eq !== -1) throw new CliUsageError(`--${name} takes no value`);
    if (spec.type === 'string' && eq === -1) {
      const next = args[i + 1];
      if (next === undefined) throw new CliUsageError(`--${name} needs a value`);
      // node:util refuses a separate value that starts with '-' (it may be a forgotten value).
      if (next.startsWith('-') && next !== '-')
        throw new CliUsageError(`--${name} needs a value (write --${name}=VALUE for one that starts with -)`);
      i += 1;
    }
  }
}

/** Parses `args` with a command's `options`; an option it does not take is a usage error. @throws CliUsageError */
export function parseCommandArgs(args: readonly string[], options: OptionTable, maxPositionals = 0): Parsed {
  checkOptions(args, options);
  const config = Object.fromEntries(Object.entries(options).map(([name, def]) => [name, { type: def.type }]));
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: config, allowPositionals: true, strict: true });
  } catch (error) {
    // checkOptions catches what node:util refuses; this is a fallback that never echoes node's text.
    const code = (error as { code?: unknown } | null)?.code;
    throw new CliUsageError(code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 'unknown option' : 'an option is not valid');
  }
  if (parsed.positionals.length > maxPositionals) {
    throw new CliUsageError(
      maxPositionals === 0
        ? 'takes no arguments'
        : `takes at most ${maxPositionals} argument${maxPositionals === 1 ? '' : 's'}`,
    );
  }
  return {
    values: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
    args,
  };
}
