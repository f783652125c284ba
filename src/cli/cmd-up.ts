/** `companion up`: start the runtime and the guarded endpoint; runs until SIGINT/SIGTERM. */
import { startRuntimeGroup } from '../shell/companion.js';
import { claimDiscovery } from '../shell/discovery.js';
import { resolveSandbox } from '../shell/sandbox-choice.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { authorityFor, createContext } from './context.js';

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

export const upCommand: Command = {
  name: 'up',
  summary: 'start the runtime and the guarded endpoint; runs until Ctrl-C',
  help: [
    'Usage: companion up [--json] [--threads N] [--allow-unsandboxed]',
    '',
    'Re-checks the installed model, starts the local runtime in its sandbox (no network, read-only view',
    'of its model and code), and serves the guarded OpenAI-compatible endpoint on 127.0.0.1. A new',
    'loopback token is made for each run and kept in the keychain; `companion endpoint` prints it.',
    'With --json: {"event":"available","endpoint":URL} once available, then one line per change.',
    '',
    'Options:',
    '  --threads N            CPU threads for inference (default: the runtime\'s choice)',
    '  --allow-unsandboxed    start even when no sandbox can be made (status and doctor say so)',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args);
    const context = await createContext(parsed, io);
    const stop = untilSignal();
    try {
      const sandbox = await resolveSandbox(context.config.sandbox, (line) => io.err(line));
      const authority = authorityFor(context, io);
      // Before the token is rotated: another live `up` on this data dir keeps its token (ERR_LOCKED_BY_OTHER).
      await claimDiscovery(context.paths.discovery);
      const { verifyToken, attest } = await authority.rotateLoopbackCapabilities();
      let endpoint = '';
      const companion = await startRuntimeGroup({
        dataDir: context.config.dataDir,
        verifyToken,
        attest,
        ...(context.config.threads !== null ? { threads: context.config.threads } : {}),
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
      await context.close();
    }
  },
};
