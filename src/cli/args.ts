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
  '  --json                 one JSON object per line on stdout',
  '  --debug                print stack traces of errors',
].join('\n');

export interface Parsed {
  readonly values: Record<string, string | boolean | undefined>;
  readonly positionals: string[];
}

/** Parses `args` with the common options and `extra`; unknown options are a usage error. */
export function parseCommandArgs(args: readonly string[], extra: OptionSpec = {}, maxPositionals = 0): Parsed {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: { ...COMMON_OPTIONS, ...extra }, allowPositionals: true, strict: true });
  } catch (error) {
    // node:util's message names the option; it holds nothing secret (values are not echoed for flags).
    const message = error instanceof Error ? error.message.split('\n')[0] ?? 'bad option' : 'bad option';
    throw new CliUsageError(message.replace(/^TypeError \[[A-Z_]+\]: /, ''));
  }
  if (parsed.positionals.length > maxPositionals) throw new CliUsageError('too many arguments');
  return { values: parsed.values as Record<string, string | boolean | undefined>, positionals: parsed.positionals };
}
