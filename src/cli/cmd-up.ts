/** `companion up`: start the runtime and the guarded endpoint; runs until SIGINT/SIGTERM. */
import { startRuntimeGroup } from '../shell/companion.js';
import { isCompanionError } from '../core/errors.js';
import { claimDiscovery, readDiscovery } from '../shell/discovery.js';
import { resolveSandbox } from '../shell/sandbox-choice.js';
import { acquireUpLock, type UpLock } from '../shell/up-lock.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { authorityFor, createContext, type CommandContext } from './context.js';
import { servedModelFor } from './cmd-models.js';
import type { Io } from './io.js';

/** Resolves on the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const handler = (signal: string): void => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      resolve(signal);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}

/**
 * The one line a second `up` prints (and, with --json, its error event): the running one's URL from its
 * live discovery record when it has written one yet.
 */
async function reportRunning(context: CommandContext, io: Io, pid: number): Promise<void> {
  const record = await readDiscovery(context.paths.discovery);
  const url = record !== null && record.pid === pid ? record.url : null;
  const message = url === null ? `companion is already running (pid ${pid})` : `companion is already running at ${url} (pid ${pid})`;
  io.err(message);
  // The one --json error object every command ends a failure with (src/cli/main.ts), with pid and URL.
  if (context.json) context.emit({ error: { code: 'ERR_LOCKED_BY_OTHER', message, pid, endpoint: url } });
}

export const upCommand: Command = {
  name: 'up',
  summary: 'start the runtime and the guarded endpoint; runs until Ctrl-C',
  help: [
    'Usage: companion up [--json] [--threads N] [--allow-unsandboxed] [--model MODEL]',
    '',
    'Re-checks the installed model, starts the local runtime in its sandbox (no network, read-only view',
    'of its model and code), and serves the guarded OpenAI-compatible endpoint on 127.0.0.1. A new',
    'loopback token is made for each run and kept in the keychain; `companion endpoint` prints it.',
    'With --json: {"event":"available","endpoint":URL} once available, then one line per change.',
    'One `up` per data dir: a second one prints `companion is already running at URL (pid N)` and exits 1',
    '(with --json also {"error":{"code":"ERR_LOCKED_BY_OTHER",...}} on stdout), leaving the first alone.',
    '',
    'Options:',
    '  --threads N            CPU threads for inference (default: the runtime\'s choice)',
    '  --model MODEL          serve this installed model for this run (default: the active one, see companion use)',
    '  --allow-unsandboxed    start even when no sandbox can be made (status and doctor say so)',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args, { model: { type: 'string' } });
    const context = await createContext(parsed, io);
    const stop = untilSignal();
    let lock: UpLock | null = null;
    try {
      // First, before anything is rotated, spawned or deleted: one `up` per data dir (issue 18 item 1).
      try {
        lock = await acquireUpLock(context.paths.upLock);
      } catch (error) {
        if (!isCompanionError(error, 'ERR_LOCKED_BY_OTHER') || typeof error.detail?.pid !== 'number') throw error;
        await reportRunning(context, io, error.detail.pid);
        return 1;
      }
      const modelId = await servedModelFor(context, parsed.values.model);
      const sandbox = await resolveSandbox(context.config.sandbox, (line) => io.err(line));
      const authority = authorityFor(context, io);
      // Still before the token is rotated: a live record without a lock (an `up` of an older version) is left alone too.
      try {
        await claimDiscovery(context.paths.discovery);
      } catch (error) {
        if (!isCompanionError(error, 'ERR_LOCKED_BY_OTHER') || typeof error.detail?.pid !== 'number') throw error;
        await reportRunning(context, io, error.detail.pid);
        return 1;
      }
      const { verifyToken, attest } = await authority.rotateLoopbackCapabilities();
      let endpoint = '';
      const companion = await startRuntimeGroup({
        dataDir: context.config.dataDir,
        verifyToken,
        attest,
        ...(context.config.threads !== null ? { threads: context.config.threads } : {}),
        ...(modelId !== undefined ? { modelId } : {}),
        ...(sandbox.wrap ? { wrap: sandbox.wrap } : {}),
        sandboxMode: sandbox.mode,
        onEvent: (event) => {
          if (event.event === 'health') return;
          if (event.event === 'listening') {
            endpoint = event.endpoint;
            if (!context.json) io.out(`Endpoint ${endpoint} (sandbox: ${sandbox.mode}). Ctrl-C stops.`);
            return;
          }
          if (event.event === 'available') {
            if (context.json) context.emit(event.available ? { event: 'available', endpoint } : { event: 'unavailable' });
            else io.out(event.available ? `Available at ${endpoint}` : 'Not available (the endpoint answers 503 until the runtime is back)');
            return;
          }
          if (context.json) context.emit({ ...event });
          else if (event.event === 'state') io.out(`runtime: ${event.state}${event.code ? ` (${event.code})` : ''}`);
        },
      });
      const signal = await stop;
      if (!context.json) io.out(`${signal}: stopping`);
      await companion.close();
      if (context.json) context.emit({ event: 'stopped' });
      return 0;
    } finally {
      // Every exit path: a normal stop, a signal (which ends `stop` above), a failed start.
      await lock?.release();
      await context.close();
    }
  },
};
