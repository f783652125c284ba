/**
 * Configuration of one installation, from flags, environment and the data dir's config file (CONTRACT
 * §6): `--hub URL` / COMPANION_HUB, `--ca FILE` / COMPANION_CA, `--data-dir DIR` / COMPANION_HOME,
 * `--manifest-key KEY` / COMPANION_MANIFEST_KEY, `--keychain memory`, threads and sandbox options.
 * Precedence: flags > environment > `<data-dir>/config.json` (what `login` and `config set` saved) >
 * defaults. The data dir itself comes only from flag, environment or default. Every path is made absolute.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { CompanionError } from '../core/errors.js';
import { parseTrustedKeys } from '../core/manifest-format.js';
import { ensurePrivateDir, writePrivateFileAtomic } from '../common/private-file.js';
import { layout } from '../common/layout.js';

export type KeychainChoice = 'os' | 'memory';
import type { SandboxChoice } from '../runtime/manager/sandbox-choice.js';

export interface CompanionConfig {
  /** The hub's issuer/base URL (https). */
  readonly hub: string | null;
  readonly caFile: string | null;
  readonly dataDir: string;
  readonly manifestKeys: string | null;
  readonly keychain: KeychainChoice;
  /** Threads for the runtime (default: physical cores, here taken as available parallelism). */
  readonly threads: number | null;
  /** `required` (default): refuse to start without a sandbox; `off`: explicit unsandboxed start. */
  readonly sandbox: SandboxChoice;
  /** `auto` (default): the runtime uses a GPU when node-llama-cpp finds one, else the CPU; `off`: CPU only. `--gpu` / COMPANION_GPU. */
  readonly gpu: 'off' | 'auto';
  /** Sequences the runtime runs at once (`up --parallel` / COMPANION_PARALLEL, 1–16); null: the runtime's choice. */
  readonly parallel: number | null;
  /** Tokens per sequence (`up --context` / COMPANION_CONTEXT, 64–1048576); null: the runtime's choice. */
  readonly contextSize: number | null;
}

/** A whole number from a flag (else the environment variable) within [min, max], or null when neither is set. */
function wholeSetting(
  flags: ParsedFlags['values'],
  env: NodeJS.ProcessEnv,
  flag: string,
  variable: string,
  min: number,
  max: number,
): number | null {
  const fromFlag = flags[flag];
  const text =
    typeof fromFlag === 'string'
      ? fromFlag
      : env[variable] !== undefined && env[variable] !== ''
        ? env[variable]
        : undefined;
  if (text === undefined) return null;
  const value = Number(text);
  if (!/^[0-9]{1,8}$/.test(text) || value < min || value > max) {
    throw new CompanionError('ERR_CONFIG', `--${flag} (${variable}) takes a whole number from ${min} to ${max}`);
  }
  return value;
}

/** The platform's app-data folder for Companion. */
export function defaultDataDir(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
): string {
  if (platform === 'darwin') return join(homedir(), 'Library', 'Application Support', 'Companion');
  if (platform === 'win32') return join(env.LOCALAPPDATA ?? join(homedir(), 'AppData', 'Local'), 'Companion');
  const base =
    env.XDG_DATA_HOME && env.XDG_DATA_HOME.startsWith('/') ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share');
  return join(base, 'companion');
}

/**
 * The installation key of a data dir: the first 16 hex digits of SHA-256 over its resolved path, with
 * symlinks resolved as far as the path exists (so `/tmp/x` and its real path give one key, before and
 * after the folder is made). It names the data dir in the keychain service (`keychainServiceFor`) so two
 * installations on one hub never share an item; the path itself never appears in a service name or output.
 */
export function installationKey(dataDir: string): string {
  let existing = resolve(dataDir);
  const rest: string[] = [];
  let real: string | null = null;
  for (;;) {
    try {
      real = realpathSync(existing);
      break;
    } catch {
      const parent = dirname(existing);
      if (parent === existing) break;
      rest.unshift(basename(existing));
      existing = parent;
    }
  }
  const path = real === null ? resolve(dataDir) : join(real, ...rest);
  return createHash('sha256').update(`companion-data-dir\0${path}`, 'utf8').digest('hex').slice(0, 16);
}

export interface ParsedFlags {
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
}

/** The keys of the config file, named as their flags. */
export const CONFIG_KEYS = ['hub', 'ca', 'manifest-key', 'threads'] as const;
export type ConfigKey = (typeof CONFIG_KEYS)[number];
/** Where a setting's value came from. */
export type ConfigSource = 'flag' | 'env' | 'file';
/** The environment variable of each key. */
export const CONFIG_ENV: Readonly<Record<ConfigKey, string>> = {
  hub: 'COMPANION_HUB',
  ca: 'COMPANION_CA',
  'manifest-key': 'COMPANION_MANIFEST_KEY',
  threads: 'COMPANION_THREADS',
};
/** The saved settings: only keys that are set. */
export type ConfigValues = Partial<Record<ConfigKey, string>>;

/** True when `key` is one of {@link CONFIG_KEYS}. */
export function isConfigKey(key: string): key is ConfigKey {
  return (CONFIG_KEYS as readonly string[]).includes(key);
}

/** The config file is at most this large (it holds four short values). */
const CONFIG_FILE_MAX_BYTES = 64 * 1024;

/** @throws ERR_CONFIG unless `value` is an https URL (the value is never echoed). */
function assertHubUrl(value: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CompanionError('ERR_CONFIG', 'the hub URL is not a URL');
  }
  if (url.protocol !== 'https:') throw new CompanionError('ERR_CONFIG', 'the hub URL must be https');
}

/**
 * Checks and normalises one setting exactly as its flag is checked: `hub` an https URL (trailing slashes
 * dropped), `ca` made absolute (its readability and PEM are checked by the caller: reading is I/O), `manifest-key`
 * one or more `ed25519:<b64url>` keys, `threads` a whole number from 1 to 256.
 * @throws ERR_CONFIG naming the key (never echoing the value).
 */
export function normalizeSetting(key: ConfigKey, value: string): string {
  if (value.length === 0) throw new CompanionError('ERR_CONFIG', `${key} needs a value`);
  switch (key) {
    case 'hub':
      assertHubUrl(value);
      return value.replace(/\/+$/, '');
    case 'ca':
      return resolve(value);
    case 'manifest-key':
      parseTrustedKeys(value);
      return value.trim();
    case 'threads': {
      const threads = Number(value);
      if (!/^[0-9]{1,3}$/.test(value) || threads < 1 || threads > 256)
        throw new CompanionError('ERR_CONFIG', 'threads takes a whole number from 1 to 256');
      return String(threads);
    }
  }
}

function unsafeConfig(file: string, what: string, fix: string): CompanionError {
  return new CompanionError('ERR_CONFIG_FILE', `the config file ${file} ${what}; ${fix}`);
}

/**
 * The settings saved in `<dataDir>/config.json`, or `{}` when there is no such file. The file is opened
 * `O_NOFOLLOW` and must be a regular file owned by this user with no group/other permission bits, hold
 * one JSON object of known keys with valid values (those written by {@link saveConfigValues}).
 * @throws ERR_CONFIG_FILE naming the file and the fix when it is a symlink, not a file, another user's,
 * readable by others, or damaged: never ignored, since a silently skipped file would mean another hub.
 */
export function readConfigFile(dataDir: string): ConfigValues {
  const file = layout(dataDir).configFile;
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return {};
    // Why refuse: a planted symlink would let someone else choose the hub and the keys we trust.
    if (code === 'ELOOP')
      throw unsafeConfig(
        file,
        'is a symlink',
        `remove it (rm ${file}) and save the settings again with companion login or companion config set`,
      );
    throw unsafeConfig(file, `cannot be read (${code ?? 'error'})`, 'check its permissions');
  }
  let text: string;
  try {
    const stats = fstatSync(fd);
    const uid = process.getuid?.();
    if (!stats.isFile())
      throw unsafeConfig(
        file,
        'is not a regular file',
        `remove it and save the settings again with companion config set`,
      );
    if (uid !== undefined && stats.uid !== uid)
      throw unsafeConfig(file, 'is owned by another user', `remove it (rm ${file}) and save the settings again`);
    if (process.platform !== 'win32' && (stats.mode & 0o077) !== 0) {
      throw unsafeConfig(
        file,
        `is readable or writable by others (mode ${(stats.mode & 0o777).toString(8).padStart(3, '0')})`,
        `check its contents, then run chmod 600 ${file}`,
      );
    }
    if (stats.size > CONFIG_FILE_MAX_BYTES)
      throw unsafeConfig(file, 'is too large', `remove it (rm ${file}) and save the settings again`);
    const buffer = Buffer.alloc(stats.size);
    let offset = 0;
    while (offset < buffer.length) {
      const n = readSync(fd, buffer, offset, buffer.length - offset, offset);
      if (n === 0) break;
      offset += n;
    }
    text = buffer.subarray(0, offset).toString('utf8');
  } finally {
    closeSync(fd);
  }
  const damaged = (what: string): CompanionError =>
    unsafeConfig(
      file,
      `is damaged (${what})`,
      `fix it, or remove it (rm ${file}) and save the settings again with companion login or companion config set`,
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(text) as unknown;
  } catch {
    throw damaged('not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw damaged('not a JSON object');
  const values: ConfigValues = {};
  for (const [key, value] of Object.entries(parsed)) {
    // Key names are ours or printable-checked before they are echoed.
    if (!isConfigKey(key)) throw damaged(/^[a-z-]{1,32}$/.test(key) ? `unknown key ${key}` : 'an unknown key');
    if (typeof value !== 'string') throw damaged(`${key} is not a string`);
    let normalized: string;
    try {
      normalized = normalizeSetting(key, value);
    } catch {
      throw damaged(`${key} is not valid`);
    }
    if (key === 'ca' && !isAbsolute(value)) throw damaged('ca is not an absolute path');
    values[key] = normalized;
  }
  return values;
}

/**
 * Writes `values` as `<dataDir>/config.json`: the data dir is made (or checked) 0700 and ours, the file
 * written atomically, 0600, never through a symlink (src/common/private-file.ts). Values must already be
 * normalised with {@link normalizeSetting}. @throws ERR_STATE_UNSAFE for an unsafe data dir.
 */
export async function saveConfigValues(dataDir: string, values: ConfigValues): Promise<void> {
  await ensurePrivateDir(dataDir);
  const ordered: ConfigValues = {};
  for (const key of CONFIG_KEYS) if (values[key] !== undefined) ordered[key] = values[key];
  await writePrivateFileAtomic(layout(dataDir).configFile, `${JSON.stringify(ordered, null, 2)}\n`);
}

/** The data dir from flag, environment or default (never from the config file, which lives in it). */
export function resolveDataDir(flags: ParsedFlags['values'], env: NodeJS.ProcessEnv = process.env): string {
  const flag = flags['data-dir'];
  return resolve(typeof flag === 'string' && flag.length > 0 ? flag : env.COMPANION_HOME || defaultDataDir(env));
}

/**
 * Each setting's value and where it came from (flag > environment > config file), null when unset. The
 * config file is read from the resolved data dir. @throws ERR_CONFIG_FILE (see {@link readConfigFile})
 */
export function explainConfig(
  flags: ParsedFlags['values'],
  env: NodeJS.ProcessEnv = process.env,
): Record<ConfigKey, { value: string; source: ConfigSource } | null> {
  const file = readConfigFile(resolveDataDir(flags, env));
  const out = {} as Record<ConfigKey, { value: string; source: ConfigSource } | null>;
  for (const key of CONFIG_KEYS) {
    const flag = flags[key];
    const fromEnv = env[CONFIG_ENV[key]];
    if (typeof flag === 'string' && flag.length > 0) out[key] = { value: flag, source: 'flag' };
    else if (fromEnv !== undefined && fromEnv.length > 0) out[key] = { value: fromEnv, source: 'env' };
    else if (file[key] !== undefined) out[key] = { value: file[key], source: 'file' };
    else out[key] = null;
  }
  return out;
}

/**
 * Resolves the configuration from parsed flags, the environment and the data dir's config file (flags >
 * environment > file > defaults). @throws ERR_CONFIG for a bad flag or environment value; ERR_CONFIG_FILE
 * for an unsafe or damaged config file.
 */
export function resolveConfig(flags: ParsedFlags['values'], env: NodeJS.ProcessEnv = process.env): CompanionConfig {
  const str = (name: string): string | undefined => {
    const v = flags[name];
    return typeof v === 'string' && v.length > 0 ? v : undefined;
  };
  const dataDir = resolveDataDir(flags, env);
  const settings = explainConfig(flags, env);
  const hub = settings.hub?.value ?? null;
  if (hub !== null) assertHubUrl(hub);
  const keychain = str('keychain') ?? 'os';
  if (keychain !== 'os' && keychain !== 'memory')
    throw new CompanionError('ERR_CONFIG', '--keychain takes "memory" (or nothing for the OS keychain)');
  const threadsText = settings.threads?.value;
  let threads: number | null = null;
  if (threadsText !== undefined) {
    threads = Number(threadsText);
    if (!Number.isInteger(threads) || threads < 1 || threads > 256)
      throw new CompanionError('ERR_CONFIG', '--threads takes a whole number from 1 to 256');
  }
  const gpu =
    str('gpu') ?? (env.COMPANION_GPU !== undefined && env.COMPANION_GPU.length > 0 ? env.COMPANION_GPU : 'auto');
  if (gpu !== 'off' && gpu !== 'auto') throw new CompanionError('ERR_CONFIG', '--gpu takes "auto" or "off"');
  const sandbox = flags['allow-unsandboxed'] === true || env.COMPANION_ALLOW_UNSANDBOXED === '1' ? 'off' : 'required';
  const ca = settings.ca?.value ?? null;
  return {
    hub: hub === null ? null : hub.replace(/\/+$/, ''),
    caFile: ca === null ? null : resolve(ca),
    dataDir,
    manifestKeys: settings['manifest-key']?.value ?? null,
    keychain,
    threads,
    sandbox,
    parallel: wholeSetting(flags, env, 'parallel', 'COMPANION_PARALLEL', 1, 16),
    contextSize: wholeSetting(flags, env, 'context', 'COMPANION_CONTEXT', 64, 1 << 20),
    gpu,
  };
}
