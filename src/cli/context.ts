/** What most commands need: the configuration, a verifying fetch, the layout, the authority group. */
import { readCaFile, createTlsAgent, fetchWith } from '../common/tls.js';
import { isCompanionError } from '../core/errors.js';
import { createAuthorityGroup, type AuthorityGroup } from '../shell/authority.js';
import { installationKey, resolveConfig, type CompanionConfig } from '../shell/config.js';
import { layout } from '../common/layout.js';
import type { Agent } from 'undici';
import { CliUsageError, type Io } from './io.js';
import type { Parsed } from './args.js';

export interface CommandContext {
  readonly config: CompanionConfig;
  readonly paths: ReturnType<typeof layout>;
  readonly agent: Agent;
  readonly fetch: typeof globalThis.fetch;
  readonly json: boolean;
  /** Prints a human line (stderr when --json, so stdout carries JSON lines only). */
  note(line: string): void;
  /** Prints one JSON object (with --json) on stdout. */
  emit(value: Record<string, unknown>): void;
  close(): Promise<void>;
}

/**
 * Resolves the configuration and opens the TLS agent.
 * @throws CliUsageError for a bad option or environment value (`--threads 0`, an http hub): a usage error
 * (exit 2) like any other bad value on the command line. ERR_TLS_CA for an unreadable CA file.
 */
export async function createContext(parsed: Parsed, io: Io): Promise<CommandContext> {
  let config: CompanionConfig;
  try {
    config = resolveConfig(parsed.values, io.env);
  } catch (error) {
    if (isCompanionError(error, 'ERR_CONFIG')) throw new CliUsageError(error.message);
    throw error;
  }
  const extraCas = config.caFile === null ? [] : await readCaFile(config.caFile);
  const agent = createTlsAgent({ extraCas });
  const json = parsed.values.json === true;
  return {
    config,
    paths: layout(config.dataDir),
    agent,
    fetch: fetchWith(agent),
    json,
    note: (line) => (json ? io.err(line) : io.out(line)),
    emit: (value) => io.out(JSON.stringify(value)),
    close: () => agent.close(),
  };
}

/**
 * Runs `fn` with the command context open and closes it on every way out: the one opening of every
 * command that needs the configuration. @throws what {@link createContext} throws, and what `fn` throws
 */
export async function withContext<T>(parsed: Parsed, io: Io, fn: (context: CommandContext) => Promise<T>): Promise<T> {
  const context = await createContext(parsed, io);
  try {
    return await fn(context);
  } finally {
    await context.close();
  }
}

/** The authority group for the configured hub. @throws CliUsageError without a hub (a missing argument). */
export function authorityFor(context: CommandContext, io: Io): AuthorityGroup {
  if (context.config.hub === null) throw new CliUsageError('no hub configured: pass --hub URL or set COMPANION_HUB');
  return createAuthorityGroup({
    hub: context.config.hub,
    installationKey: installationKey(context.config.dataDir),
    keychain: context.config.keychain,
    fetch: context.fetch,
    manifestKeys: context.config.manifestKeys,
    manifestVersionFile: context.paths.manifestVersion,
    announce: (line) => io.err(line),
  });
}
