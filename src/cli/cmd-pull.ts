/** `companion pull [MODEL]`: manifest from the hub, verified download, atomic promote (D5.5, P-h). */
import { findModel } from '../core/manifest.js';
import { pullModel, type PullEvent } from '../shell/install.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { authorityFor, createContext } from './context.js';

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

export const pullCommand: Command = {
  name: 'pull',
  summary: 'download and verify the model named by the signed manifest',
  help: [
    'Usage: companion pull [MODEL] [--json]',
    '',
    'Fetches the signed manifest from the hub (with your access token), verifies it against the pinned',
    'manifest key, downloads the model from the model host (no token is sent there), hashes it while it',
    'streams, and gives it its final name only when size and SHA-256 match. An interrupted pull resumes.',
    'MODEL is a model id from the manifest (default: the first one).',
    'With --json: one event per line on stdout ({"event":"progress"|"resume"|"restart"|"verified",…});',
    'the last one is {"event":"verified","model":ID,"bytes":N,"reused":BOOL}. A failure: one line on stderr and',
    '{"error":{"code","message"}} on stdout. Ctrl-C stops (the next pull resumes); exit status 130.',
    '',
    'Options:',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args, {}, 1);
    const context = await createContext(parsed, io);
    try {
      const authority = authorityFor(context, io);
      const manifest = await authority.fetchManifest();
      const model = findModel(manifest, parsed.positionals[0]);
      if (!context.json) io.out(`Pulling ${model.name} (${model.id}, ${mib(model.size)} MiB) from the model host…`);
      let lastLine = 0;
      let reused = false;
      const onEvent = (event: PullEvent): void => {
        if (event.event === 'verified') reused = event.reused;
        if (context.json) {
          context.emit({ ...event });
          return;
        }
        if (event.event === 'progress') {
          const share = event.total > 0 ? event.bytes / event.total : 0;
          const eta = event.etaSeconds !== null ? `  ETA ${event.etaSeconds}s` : '';
          const figures = `${Math.floor(share * 100)}%  ${mib(event.bytes)}/${mib(event.total)} MiB  ${mib(event.bytesPerSecond)} MiB/s${eta}`;
          if (io.isTty) {
            const filled = Math.round(share * 24);
            io.write(`\r  [${'#'.repeat(filled)}${'.'.repeat(24 - filled)}] ${figures}`.padEnd(90));
          } else if (Date.now() - lastLine > 5_000 || event.bytes === event.total) {
            lastLine = Date.now();
            io.out(`  ${figures}`);
          }
        } else if (event.event === 'resume') io.out(`  resuming at ${mib(event.offset)} MiB`);
        else if (event.event === 'restart') io.out(`  the host ${event.reason === 'changed' ? 'changed the file' : 'ignored the range'}: starting over`);
      };
      // Ctrl-C stops cleanly: what was received is written, so the next pull resumes from there.
      const controller = new AbortController();
      const onSigint = (): void => controller.abort();
      process.once('SIGINT', onSigint);
      let installed;
      try {
        installed = await pullModel({ model, manifestVersion: manifest.version, modelsDir: context.paths.models, dispatcher: context.agent, onEvent, signal: controller.signal });
      } finally {
        process.removeListener('SIGINT', onSigint);
        if (!context.json && io.isTty) io.write('\n');
      }
      if (!context.json) io.out(`${installed.id}: verified and installed${reused ? ' (already there, unchanged)' : ''}.`);
      return 0;
    } finally {
      await context.close();
    }
  },
};
