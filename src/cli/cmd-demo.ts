/** `companion demo`: the whole flow against an embedded reference hub (`npm start`). */
import { resolve } from 'node:path';
import { isCompanionError } from '../core/errors.js';
import { prepareDemoDataDir, runDemo } from '../shell/demo.js';
import { SHARED_OPTIONS, type Parsed } from './args.js';
import { defineCommand } from './command.js';
import { untilSignal } from './cmd-up.js';
import { CliUsageError, type Io } from './io.js';

const LABELS: Record<string, string> = {
  hub: 'started the reference hub (authorization server, signed manifest, model host) on 127.0.0.1',
  keychain: 'opened the keychain',
  'signed-in': 'signed in (OAuth native-app flow: loopback redirect, PKCE S256, issuer checked)',
  manifest: 'fetched the signed manifest and verified it against the pinned key',
  verified: 'downloaded the model and verified size and SHA-256 while it streamed; promoted atomically',
  available: 'runtime up (llama.cpp in a child process), front door guarding 127.0.0.1: companion available',
  completion:
    'streamed a completion through the front door with the LLM client (the demo model has random weights: gibberish is expected)',
  stopped: 'stopped everything and signed out',
};

/** The demo's own settings from its options. @throws CliUsageError for a bad value, before anything starts */
async function demoSettings(parsed: Parsed): Promise<{ threads?: number; dataDir?: string; memory: boolean }> {
  const threadsText = parsed.values.threads;
  const threads = typeof threadsText === 'string' ? Number(threadsText) : undefined;
  if (threads !== undefined && (!/^[0-9]{1,3}$/.test(String(threadsText)) || threads < 1 || threads > 256))
    throw new CliUsageError('--threads takes a whole number from 1 to 256');
  const keychain = parsed.values.keychain;
  if (keychain !== undefined && keychain !== 'memory' && keychain !== 'os')
    throw new CliUsageError('--keychain takes "memory" (or nothing for the OS keychain)');
  const dataDirText = parsed.values['data-dir'];
  const dataDir = typeof dataDirText === 'string' && dataDirText !== '' ? resolve(dataDirText) : undefined;
  if (dataDir !== undefined) {
    try {
      await prepareDemoDataDir(dataDir);
    } catch (error) {
      // A folder the demo must not use is a bad --data-dir value: a usage error, before anything starts.
      if (isCompanionError(error, 'ERR_CONFIG')) throw new CliUsageError(error.message);
      throw error;
    }
  }
  return {
    ...(threads !== undefined ? { threads } : {}),
    ...(dataDir !== undefined ? { dataDir } : {}),
    memory: keychain === 'memory',
  };
}

/** What the demo prints: a line per step (or JSON lines), and the completion's tokens as they stream. */
class DemoPrinter {
  private streaming = false;

  constructor(
    private readonly io: Io,
    private readonly json: boolean,
  ) {}

  /** One event of the demo. */
  report(event: Record<string, unknown>): void {
    const { io } = this;
    if (this.json) {
      io.out(JSON.stringify(event));
      return;
    }
    if (this.streaming) {
      io.write('\n');
      this.streaming = false;
    }
    if (event.event === 'step') {
      const label = LABELS[String(event.step)] ?? String(event.step);
      const extra =
        event.step === 'available'
          ? ` at ${String(event.endpoint)} (sandbox: ${String(event.sandbox)})`
          : event.step === 'keychain'
            ? ` (${String(event.backend)})`
            : '';
      io.out(`[${String(event.totalMs).padStart(6)} ms] ${label}${extra}  (+${String(event.ms)} ms)`);
    } else if (event.event === 'note') {
      io.err(`companion demo: ${String(event.text).replace(/^companion: /, '')}`);
    } else if (event.event === 'available') {
      io.out(
        `Endpoint ${String(event.endpoint)} is up; token: ${String(event.token)}\nPoint any OpenAI client at it. Ctrl-C stops.`,
      );
    }
  }

  /** A piece of the completion's text. */
  token(text: string): void {
    const { io } = this;
    if (this.json) {
      io.out(JSON.stringify({ event: 'token', text }));
      return;
    }
    if (!this.streaming) {
      io.write('           > ');
      this.streaming = true;
    }
    io.write(text.replace(/\n/g, ' '));
  }
}

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'run the whole flow against an embedded reference hub',
  about: [
    'Usage: companion demo [--keep-running] [--json] [--threads N] [--data-dir DIR]',
    '',
    'Starts a reference hub in this process, signs in through the real loopback redirect flow (the demo',
    "plays the browser's part against the hub's consent form, and says so), pulls and verifies the",
    'generated demo model, starts the runtime, waits until the companion is available, streams a',
    'completion through the guarded endpoint, and shuts everything down. The demo model has random',
    'weights: its text is gibberish, the flow is the point.',
  ],
  options: {
    'keep-running': {
      type: 'boolean',
      help: [
        'stay up after the completion (hub, runtime, endpoint) until Ctrl-C; with',
        '--json prints {"event":"available","endpoint":URL,"token":STRING}',
      ],
    },
    json: { ...SHARED_OPTIONS.json, help: 'one JSON object per line' },
    threads: { ...SHARED_OPTIONS.threads, help: 'CPU threads for inference' },
    keychain: { ...SHARED_OPTIONS.keychain, help: 'use the in-memory keychain even when the OS keychain is available' },
    prompt: { type: 'string', value: 'TEXT', help: 'the prompt to send' },
    'data-dir': {
      ...SHARED_OPTIONS['data-dir'],
      help: [
        "keep the demo's state (model, log) in DIR instead of a temp dir removed at",
        'the end; DIR must be new, empty, or one an earlier demo made (never an',
        "installation's data dir; COMPANION_HOME is not used by the demo)",
      ],
    },
    debug: SHARED_OPTIONS.debug,
  },
  async run(parsed, io) {
    const settings = await demoSettings(parsed);
    const printer = new DemoPrinter(io, parsed.values.json === true);
    await runDemo({
      ...(settings.dataDir !== undefined ? { dataDir: settings.dataDir } : {}),
      keepRunning: parsed.values['keep-running'] === true,
      ...(settings.threads !== undefined ? { threads: settings.threads } : {}),
      ...(typeof parsed.values.prompt === 'string' ? { prompt: parsed.values.prompt } : {}),
      keychain: settings.memory ? 'memory' : 'auto',
      untilStopped: untilSignal(),
      report: (event) => printer.report(event),
      onToken: (text) => printer.token(text),
    });
    return 0;
  },
});
