/** `companion pull [MODEL]`: manifest from the hub, verified download, atomic promote (D5.5, P-h). */
import { CompanionError, isCompanionError } from '../core/errors.js';
import { collectSuperseded, pullModel, readInstalled, type PullEvent } from '../runtime/manager/install.js';
import { manifestModel } from './cmd-models.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { authorityFor, createContext } from './context.js';
import {
  CLEAR_TO_EOL,
  fit,
  formatHeader,
  formatProgressLine,
  formatSpinnerLine,
  humanBytes,
  usableWidth,
} from './progress.js';

/** The exit status of an interrupted command (EXIT.interrupted in main.ts, not imported: main imports us). */
const EXIT_INTERRUPTED = 130;
/** How often the spinner turns while waiting for the first byte. */
const SPINNER_MS = 100;

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

/** The model host as it may be shown: its origin only (the path may name the file). */
function hostOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return 'the model host';
  }
}

/**
 * A download failure as one line naming the model host and the fix (the code is kept). The hub's own
 * failures already say so (src/authority/hub-errors.ts); anything else passes through unchanged.
 */
export function explainPullError(error: unknown, modelUrl: string): unknown {
  if (!isCompanionError(error)) return error;
  const host = hostOf(modelUrl);
  const again = 'run the same pull again to resume';
  const cause =
    typeof error.detail?.cause === 'string' && /^[A-Z][A-Z0-9_]{1,63}$/.test(error.detail.cause)
      ? ` (${error.detail.cause})`
      : '';
  const lines: Partial<Record<string, string>> = {
    ERR_DOWNLOAD_TLS: `the model host's TLS certificate at ${host} could not be verified; a model host with a private CA needs --ca FILE`,
    ERR_DOWNLOAD_NETWORK: `the model host at ${host} could not be reached${cause}; check the network, then ${again}`,
    ERR_DOWNLOAD_STALLED: `the download from ${host} stalled (no data for too long); ${again}`,
    ERR_DOWNLOAD_HTTP_STATUS: `${error.message} for the model file at ${host}; try again later, or tell the hub's operator if it persists`,
  };
  const message = lines[error.code];
  return message === undefined
    ? error
    : new CompanionError(error.code, message, error.detail === undefined ? {} : { detail: error.detail });
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
    'the last one is {"event":"verified","model":ID,"bytes":N,"reused":BOOL,"active":BOOL}. A failure: one line on stderr and',
    '{"error":{"code","message"}} on stdout. Ctrl-C stops, keeps what was received and says so on stderr',
    '("interrupted at X of Y; run the same pull again to resume"; with --json also the ERR_INTERRUPTED error',
    'object); exit status 130. On a terminal the progress line fits its width.',
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
      const model = manifestModel(manifest, parsed.positionals[0]);
      const live = !context.json && io.isTty;
      const columns = (): number | undefined => io.columns?.();
      if (!context.json)
        io.out(
          live
            ? formatHeader(model.name, model.id, model.size, columns())
            : `Pulling ${model.name} (${model.id}, ${mib(model.size)} MiB) from the model host…`,
        );
      // The live line: `\r`, text fitted to the width, clear to the end (never padded past the width).
      const draw = (text: string): void => io.write(`\r${text}${CLEAR_TO_EOL}`);
      let frame = 0;
      let spinner: NodeJS.Timeout | undefined;
      const stopSpinner = (): void => {
        if (spinner !== undefined) clearInterval(spinner);
        spinner = undefined;
      };
      if (live) {
        draw(formatSpinnerLine(frame, columns()));
        spinner = setInterval(() => draw(formatSpinnerLine(++frame, columns())), SPINNER_MS);
        spinner.unref();
      }
      let lastLine = 0;
      let reused = false;
      let active = true;
      let received = 0;
      const onEvent = (event: PullEvent): void => {
        if (event.event === 'verified') ({ reused, active } = event);
        if (event.event === 'progress') received = event.bytes;
        else if (event.event === 'resume') received = event.offset;
        if (context.json) {
          context.emit({ ...event });
          return;
        }
        if (event.event === 'progress') {
          if (live) {
            if (event.bytes > 0 || event.bytes === event.total) stopSpinner();
            if (spinner === undefined) draw(formatProgressLine(event, columns()));
          } else if (Date.now() - lastLine > 5_000 || event.bytes === event.total) {
            const share = event.total > 0 ? event.bytes / event.total : 0;
            const eta = event.etaSeconds !== null ? `  ETA ${event.etaSeconds}s` : '';
            lastLine = Date.now();
            io.out(
              `  ${Math.floor(share * 100)}%  ${mib(event.bytes)}/${mib(event.total)} MiB  ${mib(event.bytesPerSecond)} MiB/s${eta}`,
            );
          }
          return;
        }
        const note =
          event.event === 'resume'
            ? `  resuming at ${humanBytes(event.offset)}`
            : event.event === 'restart'
              ? `  the host ${event.reason === 'changed' ? 'changed the file' : 'ignored the range'}: starting over`
              : null;
        if (note === null) return;
        if (live) draw('');
        io.out(live ? fit(note, usableWidth(columns())) : note);
      };
      // Ctrl-C stops cleanly: what was received is written, so the next pull resumes from there.
      const controller = new AbortController();
      let interrupted = false;
      const onSigint = (): void => {
        interrupted = true;
        controller.abort();
      };
      process.once('SIGINT', onSigint);
      let installed;
      try {
        installed = await pullModel({
          model,
          manifestVersion: manifest.version,
          modelsDir: context.paths.models,
          dispatcher: context.agent,
          onEvent,
          signal: controller.signal,
        });
      } catch (error) {
        if (!interrupted || !isCompanionError(error, 'ERR_DOWNLOAD_ABORTED')) throw explainPullError(error, model.url);
        // The one outcome of Ctrl-C: a line that says where it stopped and how to go on, status 130.
        if (live) draw('');
        const message = `interrupted at ${humanBytes(received)} of ${humanBytes(model.size)}; run the same pull again to resume`;
        io.err(message);
        if (context.json) io.out(JSON.stringify({ error: { code: 'ERR_INTERRUPTED', message } }));
        return EXIT_INTERRUPTED;
      } finally {
        stopSpinner();
        process.removeListener('SIGINT', onSigint);
        if (live && !interrupted) io.write('\n');
      }
      await collectSuperseded(context.paths.models, installed.id);
      if (!context.json)
        io.out(`${installed.id}: verified and installed${reused ? ' (already there, unchanged)' : ''}.`);
      // A second model does not switch the active one (docs/decisions.md): say how to.
      if (!context.json && !active)
        io.out(
          `${(await readInstalled(context.paths.models))?.id ?? 'another model'} stays the active model; run companion use ${installed.id} to switch.`,
        );
      return 0;
    } finally {
      await context.close();
    }
  },
};
