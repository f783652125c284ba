/** `companion pull [MODEL]`: manifest from the hub, verified download, atomic promote (D5.5, P-h). */
import { CompanionError, isCompanionError } from '../core/errors.js';
import type { ManifestModel } from '../core/manifest-format.js';
import type { VerifiedModel } from '../core/manifest.js';
import {
  collectSuperseded,
  pullModel,
  readInstalled,
  type InstalledModel,
  type PullEvent,
} from '../runtime/manager/install.js';
import { manifestModel } from './cmd-models.js';
import { HUB_OPTIONS } from './args.js';
import { defineCommand } from './command.js';
import { authorityFor, withContext, type CommandContext } from './context.js';
import type { Io } from './io.js';
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

/**
 * What `pull` shows while it downloads: on a terminal a live line (a spinner until the first byte, then
 * the progress bar fitted to the width); elsewhere a line every 5 s; with --json every event as it is.
 */
class PullDisplay {
  /** On a terminal, without --json: the live line. */
  readonly live: boolean;
  private frame = 0;
  private spinner: NodeJS.Timeout | undefined;
  private lastLine = 0;
  /** From the `verified` event: the model was there already / became the active one. */
  reused = false;
  active = true;
  /** Bytes received so far (for the line of an interrupted pull). */
  received = 0;

  constructor(
    private readonly context: CommandContext,
    private readonly io: Io,
  ) {
    this.live = !context.json && io.isTty;
  }

  private columns(): number | undefined {
    return this.io.columns?.();
  }

  /** The live line: `\r`, text fitted to the width, clear to the end (never padded past the width). */
  draw(text: string): void {
    this.io.write(`\r${text}${CLEAR_TO_EOL}`);
  }

  /** The header line, and on a terminal the spinner until the first byte. */
  start(model: ManifestModel): void {
    if (this.context.json) return;
    this.io.out(
      this.live
        ? formatHeader(model.name, model.id, model.size, this.columns())
        : `Pulling ${model.name} (${model.id}, ${mib(model.size)} MiB) from the model host…`,
    );
    if (!this.live) return;
    this.draw(formatSpinnerLine(this.frame, this.columns()));
    this.spinner = setInterval(() => this.draw(formatSpinnerLine(++this.frame, this.columns())), SPINNER_MS);
    this.spinner.unref();
  }

  stopSpinner(): void {
    if (this.spinner !== undefined) clearInterval(this.spinner);
    this.spinner = undefined;
  }

  /** One event of the pull. */
  onEvent(event: PullEvent): void {
    if (event.event === 'verified') ({ reused: this.reused, active: this.active } = event);
    if (event.event === 'progress') this.received = event.bytes;
    else if (event.event === 'resume') this.received = event.offset;
    if (this.context.json) this.context.emit({ ...event });
    else if (event.event === 'progress') this.progress(event);
    else this.note(event);
  }

  private progress(event: Extract<PullEvent, { event: 'progress' }>): void {
    if (this.live) {
      if (event.bytes > 0 || event.bytes === event.total) this.stopSpinner();
      if (this.spinner === undefined) this.draw(formatProgressLine(event, this.columns()));
    } else if (Date.now() - this.lastLine > 5_000 || event.bytes === event.total) {
      const share = event.total > 0 ? event.bytes / event.total : 0;
      const eta = event.etaSeconds !== null ? `  ETA ${event.etaSeconds}s` : '';
      this.lastLine = Date.now();
      this.io.out(
        `  ${Math.floor(share * 100)}%  ${mib(event.bytes)}/${mib(event.total)} MiB  ${mib(event.bytesPerSecond)} MiB/s${eta}`,
      );
    }
  }

  private note(event: PullEvent): void {
    const note =
      event.event === 'resume'
        ? `  resuming at ${humanBytes(event.offset)}`
        : event.event === 'restart'
          ? `  the host ${event.reason === 'changed' ? 'changed the file' : 'ignored the range'}: starting over`
          : null;
    if (note === null) return;
    if (this.live) this.draw('');
    this.io.out(this.live ? fit(note, usableWidth(this.columns())) : note);
  }
}

/**
 * Downloads and verifies `model`; Ctrl-C stops cleanly (what was received is written, so the next pull
 * resumes from there). Returns the installed model, or null when interrupted (after its one line).
 */
async function install(
  context: CommandContext,
  io: Io,
  display: PullDisplay,
  model: VerifiedModel,
  manifestVersion: number,
): Promise<InstalledModel | null> {
  const controller = new AbortController();
  let interrupted = false;
  const onSigint = (): void => {
    interrupted = true;
    controller.abort();
  };
  process.once('SIGINT', onSigint);
  try {
    return await pullModel({
      model,
      manifestVersion,
      modelsDir: context.paths.models,
      dispatcher: context.agent,
      onEvent: (event) => display.onEvent(event),
      signal: controller.signal,
    });
  } catch (error) {
    if (!interrupted || !isCompanionError(error, 'ERR_DOWNLOAD_ABORTED')) throw explainPullError(error, model.url);
    // The one outcome of Ctrl-C: a line that says where it stopped and how to go on, status 130.
    if (display.live) display.draw('');
    const message = `interrupted at ${humanBytes(display.received)} of ${humanBytes(model.size)}; run the same pull again to resume`;
    io.err(message);
    if (context.json) io.out(JSON.stringify({ error: { code: 'ERR_INTERRUPTED', message } }));
    return null;
  } finally {
    display.stopSpinner();
    process.removeListener('SIGINT', onSigint);
    if (display.live && !interrupted) io.write('\n');
  }
}

/** `pull [MODEL]` with the context open. */
async function pull(context: CommandContext, io: Io, id: string | undefined): Promise<number> {
  const manifest = await authorityFor(context, io).fetchManifest();
  const model = manifestModel(manifest, id);
  const display = new PullDisplay(context, io);
  display.start(model);
  const installed = await install(context, io, display, model, manifest.version);
  if (installed === null) return EXIT_INTERRUPTED;
  await collectSuperseded(context.paths.models, installed.id);
  if (context.json) return 0;
  io.out(`${installed.id}: verified and installed${display.reused ? ' (already there, unchanged)' : ''}.`);
  // A second model does not switch the active one (docs/decisions.md): say how to.
  if (!display.active)
    io.out(
      `${(await readInstalled(context.paths.models))?.id ?? 'another model'} stays the active model; run companion use ${installed.id} to switch.`,
    );
  return 0;
}

export const pullCommand = defineCommand({
  name: 'pull',
  summary: 'download and verify the model named by the signed manifest',
  about: [
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
  ],
  options: HUB_OPTIONS,
  positionals: 1,
  run: (parsed, io) => withContext(parsed, io, (context) => pull(context, io, parsed.positionals[0])),
});
