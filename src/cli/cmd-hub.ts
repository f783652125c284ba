/**
 * `companion hub`: runs the reference hub (authorization server, signed manifest, model host) until
 * SIGINT/SIGTERM. Prints its URLs, the CA file to trust, the manifest public key to pin and the dev login
 * (the reference hub's own, printed on purpose). With `--json`, exactly one line once ready (CONTRACT §6):
 * `{"hub", "modelHost", "ca", "manifestKey", "user", "password"}`. With `--env`, exactly one line once
 * ready: `export COMPANION_HUB=… COMPANION_CA=… COMPANION_MANIFEST_KEY=…`, for a shell to source. With
 * `--data-dir` the ports are remembered there, so a restart keeps the hub URL (and the sign-ins).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SYNTHETIC_LLAMA_PRESETS } from '../hub/llama-gguf.js';
import { isModelId, modelIdFromFileName } from '../hub/published-models.js';
import { defineCommand } from './command.js';
import { OUTPUT_OPTIONS, UnknownOptionError, type OptionTable } from './args.js';
import { CliUsageError, type Io } from './io.js';

const ABOUT = [
  'Usage: companion hub [--port P] [--model-host-port Q] [--data-dir DIR] [--synthetic-model SIZE]',
  '                     [--model FILE.gguf [--model-id ID]] [--json | --env]',
  '',
  'Run the reference hub on 127.0.0.1: an OAuth authorization server for the companion (native client,',
  'PKCE, consent page), the signed model manifest, and a model host on a separate origin, all over HTTPS',
  'with a generated local CA. Runs until Ctrl-C / SIGTERM.',
];

/** The options of `hub`, for its help and completion; {@link parseHubArgs} reads them (some repeat, in order). */
const OPTIONS: OptionTable = {
  port: {
    type: 'string',
    value: 'P',
    help: ['hub port (default: the one remembered in --data-dir, else an ephemeral port;', '--port 0 takes a new one)'],
  },
  'model-host-port': { type: 'string', value: 'Q', help: 'model host port (default: as --port)' },
  'data-dir': {
    type: 'string',
    value: 'DIR',
    help: [
      'keep the CA, keys, grants, dev password and ports in DIR (0700): a restart with',
      'the same DIR has the same URL, CA and manifest key, and sign-ins stay valid; a',
      'remembered port in use is an error (ERR_HUB_PORT_BUSY), never silently replaced.',
      'Without it everything is in memory and the CA goes to a temporary folder',
    ],
  },
  'synthetic-model': {
    type: 'string',
    value: 'SIZE',
    help: [
      'also publish a synthetic llama with random weights (gibberish text, real speed',
      "and memory), generated once (kept in --data-dir): SIZE is smol135m (SmolLM2-135M's",
      'shape, Q8_0, about 123 MB) or tiny; its manifest id is SIZE. Repeatable',
    ],
  },
  model: {
    type: 'string',
    value: 'FILE.gguf',
    help: [
      'also publish a GGUF model file you have: signed manifest entry, size and SHA-256',
      'computed once at start (remembered in --data-dir), served by the model host. A',
      'file that is not GGUF is refused (ERR_HUB_MODEL_FILE). Repeatable',
    ],
  },
  'model-id': {
    type: 'string',
    value: 'ID',
    help: 'manifest id of the --model just before it (default: from the file name)',
  },
  json: {
    type: 'boolean',
    help: 'print one line {"hub", "modelHost", "ca", "manifestKey", "user", "password"}',
  },
  env: {
    type: 'boolean',
    help: [
      'print one line: export COMPANION_HUB=… COMPANION_CA=… COMPANION_MANIFEST_KEY=…',
      '(the hub keeps running; the rest goes to stderr)',
    ],
  },
  debug: OUTPUT_OPTIONS.debug,
};

const AFTER = [
  'Sign in once with: companion login --hub <hub> --ca <ca> --manifest-key <manifestKey>',
  '(login remembers the three in its data dir; or export them, as the printed export line does).',
  '',
  'Examples:',
  '  companion hub --data-dir ~/.companion-hub',
  '  companion hub --data-dir ~/.companion-hub --env > ~/.companion-hub.env &    # then: . ~/.companion-hub.env',
  '  companion hub --json',
  '  companion hub --data-dir ~/.companion-hub --port 0 --model-host-port 0     # take new ports',
  '  companion hub --data-dir ~/.companion-hub --synthetic-model smol135m       # a realistic model for benches',
  '  companion hub --data-dir ~/.companion-hub --model ~/models/SmolLM2-135M-Instruct-Q8_0.gguf --model-id smollm2-135m',
];

interface HubArgs {
  port?: number;
  modelHostPort?: number;
  dataDir?: string;
  json: boolean;
  env: boolean;
  syntheticModels: string[];
  modelFiles: { path: string; id?: string }[];
}

const DEMO_ID = 'tiny-demo';
const SYNTHETIC_SIZES = Object.keys(SYNTHETIC_LLAMA_PRESETS);

function parsePort(value: string | undefined, flag: string): number {
  if (value === undefined || !/^\d{1,5}$/.test(value) || Number(value) > 65535)
    throw new CliUsageError(`${flag} needs a port number 0-65535`);
  return Number(value);
}

/** Parses the arguments of `companion hub`. @throws CliUsageError */
export function parseHubArgs(args: readonly string[]): HubArgs {
  const out: HubArgs = { json: false, env: false, syntheticModels: [], modelFiles: [] };
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i]!;
    const [flag, inline] =
      arg.startsWith('--') && arg.includes('=')
        ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
        : [arg, undefined];
    const value = (): string | undefined => inline ?? args[++i];
    switch (flag) {
      case '--port':
        out.port = parsePort(value(), '--port');
        break;
      case '--model-host-port':
        out.modelHostPort = parsePort(value(), '--model-host-port');
        break;
      case '--data-dir': {
        const dir = value();
        if (dir === undefined || dir.length === 0) throw new CliUsageError('--data-dir needs a folder');
        out.dataDir = resolve(dir);
        break;
      }
      case '--synthetic-model': {
        const size = value();
        if (size === undefined || !SYNTHETIC_SIZES.includes(size))
          throw new CliUsageError(`--synthetic-model needs a size: ${SYNTHETIC_SIZES.join(' or ')}`);
        out.syntheticModels.push(size);
        break;
      }
      case '--model': {
        const file = value();
        if (file === undefined || file.length === 0) throw new CliUsageError('--model needs a GGUF file');
        out.modelFiles.push({ path: resolve(file) });
        break;
      }
      case '--model-id': {
        const id = value();
        const last = out.modelFiles.at(-1);
        if (last === undefined || last.id !== undefined)
          throw new CliUsageError('--model-id names the --model FILE just before it');
        if (id === undefined || !isModelId(id))
          throw new CliUsageError(
            '--model-id needs an id of lower-case letters, digits, ".", "_" and "-" (at most 64)',
          );
        last.id = id;
        break;
      }
      case '--json':
        out.json = true;
        break;
      case '--env':
        out.env = true;
        break;
      case '--debug':
        break;
      default:
        if (arg.startsWith('-')) throw new UnknownOptionError(arg);
        throw new CliUsageError('takes no arguments');
    }
  }
  if (out.json && out.env) throw new CliUsageError('--json and --env cannot be used together');
  const ids = [DEMO_ID, ...out.syntheticModels];
  for (const file of out.modelFiles) {
    const id = file.id ?? modelIdFromFileName(file.path);
    if (id === null)
      throw new CliUsageError(`no model id can be made from the file name of ${file.path}: add --model-id ID after it`);
    ids.push(id);
  }
  const twice = ids.find((id, i) => ids.indexOf(id) !== i);
  if (twice !== undefined) throw new CliUsageError(`two models would have the id ${twice}: give one --model-id ID`);
  return out;
}

/** `value` as one shell word: plain when it is made of safe characters, else in single quotes. */
export function shellWord(value: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/** The `export` line that configures a companion for this hub (public values only: URL, CA path, key). */
export function exportLine(hub: string, ca: string, manifestKey: string): string {
  return `export COMPANION_HUB=${shellWord(hub)} COMPANION_CA=${shellWord(ca)} COMPANION_MANIFEST_KEY=${shellWord(manifestKey)}`;
}

function sizeText(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${Math.round(bytes / 1e3)} KB`;
}

/** Resolves on the first SIGINT/SIGTERM; `dispose` removes the handlers. */
function listenForSignals(): { received: Promise<NodeJS.Signals>; dispose(): void } {
  let onSignal: (signal: NodeJS.Signals) => void = () => undefined;
  const received = new Promise<NodeJS.Signals>((resolveSignal) => {
    onSignal = (signal) => resolveSignal(signal);
  });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    received,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

async function run(options: HubArgs, io: Io): Promise<number> {
  // Loaded on use: the other commands never pay for oidc-provider and the certificate code.
  const { startHub } = await import('../hub/index.js');
  const { writePrivateFileAtomicSync } = await import('../common/private-file.js');
  // Listen before starting: a Ctrl-C during start-up still closes the hub cleanly.
  const signals = listenForSignals();
  let tempDir: string | null = null;
  const hub = await startHub({
    ...(options.port === undefined ? {} : { port: options.port }),
    ...(options.modelHostPort === undefined ? {} : { modelHostPort: options.modelHostPort }),
    ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir, rememberPorts: true }),
    ...(options.syntheticModels.length === 0
      ? {}
      : { syntheticLlamas: options.syntheticModels.map((preset) => ({ preset })) }),
    ...(options.modelFiles.length === 0 ? {} : { modelFiles: options.modelFiles }),
    log: options.json ? () => undefined : (line) => io.err(`hub: ${line}`),
  }).catch((error: unknown) => {
    signals.dispose();
    throw error;
  });
  try {
    let caPath = hub.caPath;
    if (caPath === null) {
      tempDir = mkdtempSync(join(tmpdir(), 'companion-hub-'));
      caPath = join(tempDir, 'ca.pem');
      writePrivateFileAtomicSync(caPath, hub.caPem);
    }
    const exports = exportLine(hub.hubUrl, caPath, hub.manifestKey);
    if (options.json) {
      io.out(
        JSON.stringify({
          hub: hub.hubUrl,
          modelHost: hub.modelHostUrl,
          ca: caPath,
          manifestKey: hub.manifestKey,
          user: hub.user,
          password: hub.password,
        }),
      );
    } else if (options.env) {
      io.out(exports);
      io.err(`companion hub: ready at ${hub.hubUrl}; dev login ${hub.user} / ${hub.password}; stop with Ctrl-C.`);
    } else {
      io.out(
        [
          'companion hub: ready',
          `  hub (issuer)    ${hub.hubUrl}`,
          `  model host      ${hub.modelHostUrl}`,
          `  CA file         ${caPath}`,
          `  manifest key    ${hub.manifestKey}`,
          `  dev login       ${hub.user} / ${hub.password}`,
          `  models          ${hub.models.map((m) => `${m.id} (${sizeText(m.size)})`).join(', ')}`,
          '',
          `Sign in once with: companion login --hub ${hub.hubUrl} --ca ${shellWord(caPath)} --manifest-key ${hub.manifestKey}`,
          '(login remembers these in its data dir), or set them for this shell with:',
          `  ${exports}`,
          options.dataDir === undefined
            ? 'Without --data-dir this hub forgets everything on exit.'
            : `A restart with --data-dir ${shellWord(options.dataDir)} keeps this URL, CA and key.`,
          'Stop with Ctrl-C.',
        ].join('\n'),
      );
    }
    const received = await signals.received;
    if (!options.json) io.err(`hub: ${received}, stopping`);
    return 0;
  } finally {
    signals.dispose();
    await hub.close();
    if (tempDir !== null) rmSync(tempDir, { recursive: true, force: true });
  }
}

export const hubCommand = defineCommand({
  name: 'hub',
  summary: 'run the reference hub (authorization server, manifest, model host)',
  about: ABOUT,
  options: OPTIONS,
  after: AFTER,
  parse: parseHubArgs,
  run,
});
