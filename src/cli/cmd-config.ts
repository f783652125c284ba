/**
 * `companion config get|set|unset|list`: the settings remembered in `<data-dir>/config.json` (hub, CA file,
 * manifest key, threads), as `gh` keeps its hosts. `login` saves hub, CA and manifest key after a
 * successful sign-in; flags and environment still override the file (src/shell/config.ts). No secret is
 * ever stored here: tokens stay in the keychain.
 */
import { readCaFile } from '../common/tls.js';
import { isCompanionError } from '../core/errors.js';
import {
  CONFIG_ENV,
  CONFIG_KEYS,
  explainConfig,
  isConfigKey,
  normalizeSetting,
  readConfigFile,
  resolveDataDir,
  saveConfigValues,
  type ConfigKey,
} from '../shell/config.js';
import { layout } from '../common/layout.js';
import { OUTPUT_OPTIONS, SHARED_OPTIONS, printableOption, type Parsed } from './args.js';
import { defineCommand } from './command.js';
import { CliUsageError, type Io } from './io.js';

const SOURCE_TEXT = { flag: 'flag', env: 'environment', file: 'config file' } as const;

const ABOUT = [
  'Usage: companion config list [--json]',
  '       companion config get KEY [--json]',
  '       companion config set KEY VALUE [--json]',
  '       companion config unset KEY [--json]',
  '',
  "Reads and changes the settings remembered in the data dir's config file (<data-dir>/config.json, 0600).",
  '`companion login --hub URL --ca FILE --manifest-key KEY` saves them after a successful sign-in, so later',
  'commands need no flags or environment. Precedence: flags > environment > config file > defaults. The data',
  'dir itself comes from --data-dir or COMPANION_HOME only. No token is ever stored in the file.',
  '',
  'Keys:',
  `  hub            the hub URL, https (env ${CONFIG_ENV.hub})`,
  `  ca             extra trusted CA file, PEM; saved as an absolute path (env ${CONFIG_ENV.ca})`,
  `  manifest-key   pinned manifest public key(s), ed25519:<b64url>, comma-separated (env ${CONFIG_ENV['manifest-key']})`,
  `  threads        runtime threads, 1 to 256 (env ${CONFIG_ENV.threads})`,
  '',
  '`get` and `list` show the value in effect and where it comes from (flag, environment, config file);',
  '`set` checks a value as its flag is checked (a bad value exits 2 and writes nothing); `unset` removes a key.',
  'With --json: list prints {"file": PATH, "settings": {KEY: {"value", "source"} | null}}; get prints',
  '{"key", "value", "source"} (null when unset); set and unset print {"event": "set"|"unset", "key", "file"}.',
];

const EXAMPLES = [
  'Examples:',
  '  companion config list',
  '  companion config set hub https://hub.example',
  '  companion config set ca ./hub-ca.pem',
  '  companion config get hub',
  '  companion config unset threads',
  '  companion config list --data-dir ~/companion-2 --json',
];

/**
 * The options of `config`: the settings' own flags (their value then shows as coming from a flag), the
 * data dir, and output. Not --threads: it is an option of `up` only; `threads` is a KEY here.
 */
const OPTIONS = {
  hub: SHARED_OPTIONS.hub,
  ca: SHARED_OPTIONS.ca,
  'manifest-key': SHARED_OPTIONS['manifest-key'],
  'data-dir': SHARED_OPTIONS['data-dir'],
  ...OUTPUT_OPTIONS,
} as const;

/** A key argument, checked. @throws CliUsageError */
function keyArg(value: string | undefined): ConfigKey {
  if (value === undefined) throw new CliUsageError(`needs a KEY (one of ${CONFIG_KEYS.join(', ')})`);
  if (!isConfigKey(value))
    throw new CliUsageError(`unknown key ${printableOption(value)} (one of ${CONFIG_KEYS.join(', ')})`);
  return value;
}

/** `value` checked as its flag is; the CA file must be readable PEM. @throws CliUsageError */
async function checkedValue(key: ConfigKey, value: string): Promise<string> {
  let normalized: string;
  try {
    normalized = normalizeSetting(key, value);
    if (key === 'ca') await readCaFile(normalized);
  } catch (error) {
    // Why a usage error: a bad value on the command line, as with the flag (exit 2, nothing written).
    if (isCompanionError(error, 'ERR_CONFIG', 'ERR_TLS_CA')) throw new CliUsageError(`${key}: ${error.message}`);
    throw error;
  }
  return normalized;
}

async function run(parsed: Parsed, io: Io): Promise<number> {
  const json = parsed.values.json === true;
  const [action, keyText, value] = parsed.positionals;
  const dataDir = resolveDataDir(parsed.values, io.env);
  const file = layout(dataDir).configFile;
  const expectArgs = (count: number): void => {
    if (parsed.positionals.length - 1 > count)
      throw new CliUsageError(
        `config ${action ?? ''} takes ${count === 0 ? 'no arguments' : count === 1 ? 'one argument, KEY' : 'KEY VALUE'}`,
      );
  };
  switch (action) {
    case 'list': {
      expectArgs(0);
      const settings = explainConfig(parsed.values, io.env);
      if (json) {
        io.out(JSON.stringify({ file, settings }));
      } else {
        io.out(`Config file: ${file}`);
        for (const key of CONFIG_KEYS) {
          const setting = settings[key];
          io.out(
            `  ${key.padEnd(13)} ${setting === null ? '-' : `${setting.value}  (${SOURCE_TEXT[setting.source]})`}`,
          );
        }
      }
      return 0;
    }
    case 'get': {
      expectArgs(1);
      const key = keyArg(keyText);
      const setting = explainConfig(parsed.values, io.env)[key];
      if (json) io.out(JSON.stringify({ key, value: setting?.value ?? null, source: setting?.source ?? null }));
      else io.out(setting?.value ?? '');
      return 0;
    }
    case 'set': {
      expectArgs(2);
      const key = keyArg(keyText);
      if (value === undefined) throw new CliUsageError(`config set ${key} needs a VALUE`);
      // Read first: a damaged or unsafe file is reported, never overwritten unseen.
      const values = readConfigFile(dataDir);
      values[key] = await checkedValue(key, value);
      await saveConfigValues(dataDir, values);
      if (json) io.out(JSON.stringify({ event: 'set', key, value: values[key], file }));
      else io.out(`Saved ${key} = ${values[key]} in ${file}`);
      const override = parsed.values[key] !== undefined ? `--${key}` : io.env[CONFIG_ENV[key]] ? CONFIG_ENV[key] : null;
      if (override !== null) io.err(`companion config: note: ${override} is set and overrides the config file`);
      return 0;
    }
    case 'unset': {
      expectArgs(1);
      const key = keyArg(keyText);
      const current = readConfigFile(dataDir);
      const had = current[key] !== undefined;
      if (had)
        await saveConfigValues(dataDir, Object.fromEntries(Object.entries(current).filter(([name]) => name !== key)));
      if (json) io.out(JSON.stringify({ event: 'unset', key, file, removed: had }));
      else io.out(had ? `Removed ${key} from ${file}` : `${key} was not set in ${file}`);
      return 0;
    }
    case undefined:
      throw new CliUsageError('needs an action: list, get, set or unset');
    default:
      throw new CliUsageError(`unknown action ${printableOption(action)} (list, get, set or unset)`);
  }
}

export const configCommand = defineCommand({
  name: 'config',
  summary: 'show and change the remembered settings (hub, CA, manifest key, threads)',
  about: ABOUT,
  options: OPTIONS,
  positionals: 3,
  after: EXAMPLES,
  run,
});

/**
 * What a successful `login` remembers: the hub, CA file and manifest key in effect (from flags,
 * environment or the file), each checked as `config set` checks it. Called before the sign-in, so a bad
 * value stops the login before any browser opens. @throws CliUsageError
 */
export async function settingsToRemember(config: {
  readonly hub: string | null;
  readonly caFile: string | null;
  readonly manifestKeys: string | null;
}): Promise<Partial<Record<ConfigKey, string>>> {
  const values: Partial<Record<ConfigKey, string>> = {};
  if (config.hub !== null) values.hub = await checkedValue('hub', config.hub);
  if (config.caFile !== null) values.ca = await checkedValue('ca', config.caFile);
  if (config.manifestKeys !== null) values['manifest-key'] = await checkedValue('manifest-key', config.manifestKeys);
  return values;
}

/**
 * Saves `values` into the data dir's config file, keeping the keys it does not name (after a successful
 * sign-in only: a failed login saves nothing). Returns the file's path. @throws ERR_CONFIG_FILE, ERR_STATE_UNSAFE
 */
export async function rememberSettings(dataDir: string, values: Partial<Record<ConfigKey, string>>): Promise<string> {
  await saveConfigValues(dataDir, { ...readConfigFile(dataDir), ...values });
  return layout(dataDir).configFile;
}
