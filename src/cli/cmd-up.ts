/** `companion up`: start the runtime and the guarded endpoint; runs until SIGINT/SIGTERM. */
import { startRuntimeGroup } from '../runtime/manager/group.js';
import { isCompanionError } from '../core/errors.js';
import { claimDiscovery, readDiscovery } from '../runtime/manager/discovery.js';
import { resolveSandbox } from '../runtime/manager/sandbox-choice.js';
import { acquireUpLock } from '../shell/up-lock.js';
import { openLogFile, type LogFile } from '../shell/log-file.js';
import { detachedChannel, startDetachedUp, type DetachedChannel } from '../shell/up-control.js';
import { CompanionError } from '../core/errors.js';
import { resolveConfig } from '../shell/config.js';
import { HUB_OPTIONS, SHARED_OPTIONS, type Parsed } from './args.js';
import { defineCommand } from './command.js';
import { authorityFor, withContext, type CommandContext } from './context.js';
import { servedModelFor } from './cmd-models.js';
import type { Io } from './io.js';
import type { SupervisorEvent } from '../runtime/manager/supervisor.js';

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
async function reportRunning(
  context: CommandContext,
  io: Io,
  pid: number,
  channel: DetachedChannel | null = null,
): Promise<void> {
  const record = await readDiscovery(context.paths.discovery);
  const url = record !== null && record.pid === pid ? record.url : null;
  const message =
    url === null ? `companion is already running (pid ${pid})` : `companion is already running at ${url} (pid ${pid})`;
  io.err(message);
  channel?.notify({ error: { code: 'ERR_LOCKED_BY_OTHER', message, pid, endpoint: url } });
  // The one --json error object every command ends a failure with (src/cli/main.ts), with pid and URL.
  if (context.json) context.emit({ error: { code: 'ERR_LOCKED_BY_OTHER', message, pid, endpoint: url } });
}

export const upCommand = defineCommand({
  name: 'up',
  summary: 'start the runtime and the guarded endpoint; runs until Ctrl-C',
  about: [
    'Usage: companion up [--detach] [--json] [--threads N] [--gpu auto|off] [--parallel N] [--context N] [--allow-unsandboxed] [--model MODEL]',
    '',
    'Re-checks the installed model, starts the local runtime in its sandbox (no network, read-only view',
    'of its model and code), and serves the guarded OpenAI-compatible endpoint on 127.0.0.1. A new',
    'loopback token is made for each run and kept in the keychain; `companion endpoint` prints it.',
    'With --json: {"event":"available","endpoint":URL,"parallel":N,"contextSize":N} once available, then one',
    'line per change.',
    'One `up` per data dir: a second one prints `companion is already running at URL (pid N)` and exits 1',
    '(with --json also {"error":{"code":"ERR_LOCKED_BY_OTHER",...}} on stdout), leaving the first alone.',
    "Events and the runtime's stderr go to the log (companion logs). With --detach it runs in the",
    'background: this command waits until it is available, prints its endpoint and pid (with --json',
    '{"event":"available","endpoint":URL,"pid":N}) and exits 0, or prints the failure and exits 1;',
    '`companion stop` stops it.',
  ],
  options: {
    threads: SHARED_OPTIONS.threads,
    gpu: {
      type: 'string',
      value: 'auto|off',
      help: 'auto (default): a GPU if there is one, else the CPU; off: CPU only (COMPANION_GPU)',
    },
    parallel: {
      type: 'string',
      value: 'N',
      help: 'requests generated at once, 1-16 (COMPANION_PARALLEL; default: up to 4, as memory allows)',
    },
    context: {
      type: 'string',
      value: 'N',
      help: [
        'tokens per request (prompt and answer), 64-1048576 (COMPANION_CONTEXT; default: the',
        "model's trained context, capped by memory)",
      ],
    },
    model: {
      type: 'string',
      value: 'MODEL',
      help: 'serve this installed model for this run (default: the active one, see companion use)',
    },
    'allow-unsandboxed': SHARED_OPTIONS['allow-unsandboxed'],
    detach: { type: 'boolean', help: 'run in the background (output to the log), return once available' },
    ...HUB_OPTIONS,
  },
  async run(parsed, io) {
    if (parsed.values.detach === true) return withContext(parsed, io, (context) => runDetached(context, parsed, io));
    const channel = detachedChannel(io.env);
    let log: LogFile | null = null;
    try {
      // The background `up`: its human lines would go nowhere; the log has its events, warnings go there too.
      if (channel !== null) log = openLogFile(resolveConfig(parsed.values, io.env).dataDir);
      const upIo: Io = log === null ? io : { ...io, out: () => undefined, err: (line) => log?.write('up', line) };
      return await runUp(parsed, upIo, channel, log, (opened) => (log = opened));
    } catch (error) {
      const code = error instanceof CompanionError ? error.code : 'ERR_INTERNAL';
      const message = error instanceof CompanionError ? error.message : new CompanionError('ERR_INTERNAL').message;
      (log as LogFile | null)?.write('up', `failed: ${message} [${code}]`);
      channel?.notify({ error: { code, message } });
      throw error;
    } finally {
      (log as LogFile | null)?.close();
    }
  },
});

/**
 * `up --detach`: start the background `up` and report what became of it. @throws ERR_SPAWN_FAILED (it
 * exited first), ERR_RUNTIME_UNHEALTHY (not available in time), or the failure it reported
 */
async function runDetached(context: CommandContext, parsed: Parsed, io: Io): Promise<number> {
  const result = await startDetachedUp({
    dataDir: context.config.dataDir,
    args: parsed.args.filter((arg) => arg !== '--detach'),
    env: io.env,
  });
  if (result.outcome === 'available') {
    if (context.json) context.emit({ event: 'available', endpoint: result.endpoint, pid: result.pid });
    else
      io.out(
        `companion is running in the background at ${result.endpoint} (pid ${result.pid}); companion logs shows its log, companion stop stops it`,
      );
    return 0;
  }
  if (result.outcome === 'failed' && result.code === 'ERR_LOCKED_BY_OTHER' && typeof result.detail.pid === 'number') {
    io.err(result.message);
    if (context.json) context.emit({ error: { code: result.code, message: result.message, ...result.detail } });
    return 1;
  }
  if (result.outcome === 'failed') throw new CompanionError(result.code, result.message);
  if (result.outcome === 'exited')
    throw new CompanionError(
      'ERR_SPAWN_FAILED',
      `the background companion exited before it was available (status ${result.status ?? 'unknown'}); see companion logs`,
    );
  throw new CompanionError(
    'ERR_RUNTIME_UNHEALTHY',
    `the background companion (pid ${result.pid}) was not available within 120 s; it keeps trying: see companion logs, or companion stop`,
  );
}

/** An event of the runtime group: the supervisor's, and the front door's `listening`. */
type RuntimeGroupEvent = SupervisorEvent | { event: 'listening'; endpoint: string };

/** What `up` prints of the runtime group's events (and tells a waiting `up --detach`). */
class UpEvents {
  private endpoint = '';

  constructor(
    private readonly context: CommandContext,
    private readonly io: Io,
    private readonly channel: DetachedChannel | null,
    private readonly sandboxMode: string,
  ) {}

  /** One event of the runtime group. */
  onEvent(event: RuntimeGroupEvent): void {
    const { context, io } = this;
    if (event.event === 'health') return;
    if (event.event === 'listening') {
      this.endpoint = event.endpoint;
      if (!context.json) io.out(`Endpoint ${this.endpoint} (sandbox: ${this.sandboxMode}). Ctrl-C stops.`);
      return;
    }
    if (event.event === 'available') {
      this.onAvailable(event);
      return;
    }
    if (context.json) context.emit({ ...event });
    else if (event.event === 'state') io.out(`runtime: ${event.state}${event.code ? ` (${event.code})` : ''}`);
  }

  private onAvailable(event: Extract<RuntimeGroupEvent, { event: 'available' }>): void {
    const { context, io, endpoint } = this;
    if (event.available) this.channel?.notify({ event: 'available', endpoint });
    const shape = event.parallel === undefined ? {} : { parallel: event.parallel, contextSize: event.contextSize };
    if (context.json)
      context.emit(event.available ? { event: 'available', endpoint, ...shape } : { event: 'unavailable' });
    else if (!event.available) io.out('Not available (the endpoint answers 503 until the runtime is back)');
    else
      io.out(
        `Available at ${endpoint}${event.parallel === undefined ? '' : ` (${event.parallel} parallel, ${event.contextSize} tokens of context each)`}`,
      );
  }
}

/**
 * Runs `take` (taking the lock, claiming the discovery record), or reports the `up` that holds it and
 * returns null. @throws what `take` throws but ERR_LOCKED_BY_OTHER with a pid
 */
async function lockOrReport<T>(
  context: CommandContext,
  io: Io,
  channel: DetachedChannel | null,
  take: () => Promise<T>,
): Promise<T | null> {
  try {
    return await take();
  } catch (error) {
    if (!isCompanionError(error, 'ERR_LOCKED_BY_OTHER') || typeof error.detail?.pid !== 'number') throw error;
    await reportRunning(context, io, error.detail.pid, channel);
    return null;
  }
}

/** `up` itself, attached or as the background one (`channel`). */
async function runUp(
  parsed: Parsed,
  io: Io,
  channel: DetachedChannel | null,
  opened: LogFile | null,
  onLog: (log: LogFile) => void,
): Promise<number> {
  return withContext(parsed, io, async (context) => {
    const stop = untilSignal();
    // First, before anything is rotated, spawned or deleted: one `up` per data dir (issue 18 item 1).
    const lock = await lockOrReport(context, io, channel, () => acquireUpLock(context.paths.upLock));
    if (lock === null) return 1;
    try {
      const log = opened ?? openLogFile(context.config.dataDir);
      onLog(log);
      return await serve(context, parsed, io, channel, log, stop);
    } finally {
      // Every exit path: a normal stop, a signal (which ends `stop` above), a failed start.
      await lock.release();
    }
  });
}

/** With the lock held: start the runtime group, print its events, stop it on the first signal. */
async function serve(
  context: CommandContext,
  parsed: Parsed,
  io: Io,
  channel: DetachedChannel | null,
  log: LogFile,
  stop: Promise<string>,
): Promise<number> {
  log.write('up', `started (pid ${process.pid}${channel === null ? '' : ', in the background'})`);
  const modelId = await servedModelFor(context, parsed.values.model);
  const sandbox = await resolveSandbox(context.config.sandbox, (line) => io.err(line));
  const authority = authorityFor(context, io);
  // Still before the token is rotated: a live record without a lock (an `up` of an older version) is left alone too.
  const claimed = await lockOrReport(context, io, channel, async () => {
    await claimDiscovery(context.paths.discovery);
    return true;
  });
  if (claimed === null) return 1;
  const { verifyToken, attest } = await authority.rotateLoopbackCapabilities();
  const events = new UpEvents(context, io, channel, sandbox.mode);
  const companion = await startRuntimeGroup({
    dataDir: context.config.dataDir,
    verifyToken,
    attest,
    ...(context.config.threads !== null ? { threads: context.config.threads } : {}),
    ...(context.config.parallel !== null ? { parallel: context.config.parallel } : {}),
    ...(context.config.contextSize !== null ? { contextSize: context.config.contextSize } : {}),
    gpu: context.config.gpu,
    ...(modelId !== undefined ? { modelId } : {}),
    ...(sandbox.wrap ? { wrap: sandbox.wrap } : {}),
    sandboxMode: sandbox.mode,
    log: (source, text) => log.write(source, text),
    onEvent: (event) => events.onEvent(event),
  });
  const signal = await stop;
  log.write('up', `${signal}: stopping`);
  if (!context.json) io.out(`${signal}: stopping`);
  await companion.close();
  log.write('up', 'stopped');
  if (context.json) context.emit({ event: 'stopped' });
  return 0;
}
