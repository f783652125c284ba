/**
 * Configuration of one installation, from flags and environment (CONTRACT §6):
 * `--hub URL` / COMPANION_HUB, `--ca FILE` / COMPANION_CA, `--data-dir DIR` / COMPANION_HOME,
 * `--manifest-key KEY` / COMPANION_MANIFEST_KEY, `--keychain memory`, threads and sandbox options.
 * Flags win over the environment. Every path is made absolute.
 */
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { CompanionError } from '../core/errors.js';

export type KeychainChoice = 'os' | 'memory';
export type SandboxChoice = 'auto' | 'required' | 'off';

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
}

/** The platform's app-data folder for Companion. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (platform === 'darwin') return join(homedir(), 'Library', 'Application Support', 'Companion');
  if (platform === 'win32') return join(env.LOCALAPPDATA ?? join(homedir(), 'AppData', 'Local'), 'Companion');
  const base = env.XDG_DATA_HOME && env.XDG_DATA_HOME.startsWith('/') ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share');
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

/** Folders inside the data dir. */
export function layout(dataDir: string) {
  return {
    dataDir,
    models: join(dataDir, 'models'),
    run: join(dataDir, 'run'),
    /** The discovery file local clients read (URL and pid, no token). */
    discovery: join(dataDir, 'run', 'endpoint.json'),
    /** The state `up` publishes for `status` (no secret). */
    state: join(dataDir, 'run', 'state.json'),
    /** The single-instance lock `up` holds while it runs (pid, start time, executable). */
    upLock: join(dataDir, 'run', 'up.lock'),
    /** The runtime's lock/state file for stale reclaim. */
    runtimeLock: join(dataDir, 'run', 'runtime.lock'),
    /** The last manifest version seen (rollback protection). */
    manifestVersion: join(dataDir, 'manifest-version.json'),
  };
}

export interface ParsedFlags {
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
}

/** Resolves the configuration from parsed flags and the environment. @throws ERR_CONFIG */
export function resolveConfig(flags: ParsedFlags['values'], env: NodeJS.ProcessEnv = process.env): CompanionConfig {
  const str = (name: string): string | undefined => {
    const v = flags[name];
    return typeof v === 'string' && v.length > 0 ? v : undefined;
  };
  const hub = str('hub') ?? env.COMPANION_HUB ?? null;
  if (hub !== null) {
    let url: URL;
    try {
      url = new URL(hub);
    } catch {
      throw new CompanionError('ERR_CONFIG', 'the hub URL is not a URL');
    }
    if (url.protocol !== 'https:') throw new CompanionError('ERR_CONFIG', 'the hub URL must be https');
  }
  const keychain = str('keychain') ?? 'os';
  if (keychain !== 'os' && keychain !== 'memory') throw new CompanionError('ERR_CONFIG', '--keychain takes "memory" (or nothing for the OS keychain)');
  const threadsText = str('threads') ?? env.COMPANION_THREADS;
  let threads: number | null = null;
  if (threadsText !== undefined) {
    threads = Number(threadsText);
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new CompanionError('ERR_CONFIG', '--threads takes a whole number from 1 to 256');
  }
  const sandbox = flags['allow-unsandboxed'] === true || env.COMPANION_ALLOW_UNSANDBOXED === '1' ? 'off' : 'required';
  const ca = str('ca') ?? env.COMPANION_CA ?? null;
  const dataDir = str('data-dir') ?? env.COMPANION_HOME ?? defaultDataDir(env);
  return {
    hub: hub === null ? null : hub.replace(/\/+$/, ''),
    caFile: ca === null ? null : resolve(ca),
    dataDir: resolve(dataDir),
    manifestKeys: str('manifest-key') ?? env.COMPANION_MANIFEST_KEY ?? null,
    keychain,
    threads,
    sandbox,
  };
}
