/** Argument parsing shared by the commands: the common options of CONTRACT §6 plus each command's own. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CliUsageError } from './io.js';

type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export const COMMON_OPTIONS: OptionSpec = {
  hub: { type: 'string' },
  ca: { type: 'string' },
  'data-dir': { type: 'string' },
  'manifest-key': { type: 'string' },
  keychain: { type: 'string' },
  threads: { type: 'string' },
  'allow-unsandboxed': { type: 'boolean' },
  json: { type: 'boolean' },
  debug: { type: 'boolean' },
};

export const COMMON_HELP = [
  '  --hub URL              hub to use (env COMPANION_HUB)',
  '  --ca FILE              extra trusted CA, PEM (env COMPANION_CA)',
  '  --data-dir DIR         all state of this installation (env COMPANION_HOME)',
  '  --manifest-key KEY     pinned manifest public key(s), ed25519:… (env COMPANION_MANIFEST_KEY)',
  '  --keychain memory      explicit in-memory keychain (demo and tests only; announced on stderr)',
  '  --json                 JSON lines only on stdout; a failure ends with {"error":{"code","message"}}',
  '  --debug                print stack traces of errors',
].join('\n');

export interface Parsed {
  readonly values: Record<string, string | boolean | undefined>;
  readonly positionals: string[];
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
 * Checks `args` against `options` before node:util sees them, so that each mistake is one readable line
 * (node:util's messages are long and suggest `--` tricks). @throws CliUsageError
 */
export function checkOptions(args: readonly string[], options: OptionSpec): void {
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i]!;
    if (arg === '--') return;
    if (!arg.startsWith('-') || arg === '-') continue;
    if (!arg.startsWith('--')) throw new CliUsageError(`unknown option ${printableOption(arg)}`);
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const spec = Object.hasOwn(options, name) ? options[name] : undefined;
    if (spec === undefined) throw new CliUsageError(`unknown option ${printableOption(arg)}`);
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

/** Parses `args` with the common options and `extra`; unknown options are a usage error. */
export function parseCommandArgs(args: readonly string[], extra: OptionSpec = {}, maxPositionals = 0): Parsed {
  const options = { ...COMMON_OPTIONS, ...extra };
  checkOptions(args, options);
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options, allowPositionals: true, strict: true });
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
  return { values: parsed.values as Record<string, string | boolean | undefined>, positionals: parsed.positionals };
}
