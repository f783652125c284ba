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
    'With --json: progress events, then {"event":"verified","model":ID}.',
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
      const onEvent = (event: PullEvent): void => {
        if (context.json) {
          context.emit({ ...event });
          return;
        }
        if (event.event === 'progress') {
          const pct = event.total > 0 ? Math.floor((event.bytes / event.total) * 100) : 0;
          const line = `  ${pct}%  ${mib(event.bytes)}/${mib(event.total)} MiB  ${mib(event.bytesPerSecond)} MiB/s${event.etaSeconds !== null ? `  ETA ${event.etaSeconds}s` : ''}`;
          if (io.isTty) process.stdout.write(`\r${line.padEnd(60)}`);
          else if (Date.now() - lastLine > 5_000 || event.bytes === event.total) {
            lastLine = Date.now();
            io.out(line);
          }
        } else if (event.event === 'resume') io.out(`  resuming at ${mib(event.offset)} MiB`);
        else if (event.event === 'restart') io.out(`  the host ${event.reason === 'changed' ? 'changed the file' : 'ignored the range'}: starting over`);
      };
      await pullModel({ model, manifestVersion: manifest.version, modelsDir: context.paths.models, dispatcher: context.agent, onEvent });
      if (!context.json) {
        if (io.isTty) process.stdout.write('\n');
        io.out(`Verified and installed ${model.id}.`);
      }
      return 0;
    } finally {
      await context.close();
    }
  },
};
