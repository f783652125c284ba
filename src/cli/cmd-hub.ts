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
import type { Command } from './commands.js';
import { printableOption } from './args.js';
import { CliUsageError, type Io } from './io.js';

const HELP = `Usage: companion hub [--port P] [--model-host-port Q] [--data-dir DIR] [--json | --env]

Run the reference hub on 127.0.0.1: an OAuth authorization server for the companion (native client,
PKCE, consent page), the signed model manifest, and a model host on a separate origin, all over HTTPS
with a generated local CA. Runs until Ctrl-C / SIGTERM.

Options:
  --port P              hub port (default: the one remembered in --data-dir, else an ephemeral port;
                        --port 0 takes a new one)
  --model-host-port Q   model host port (default: as --port)
  --data-dir DIR        keep the CA, keys, grants, dev password and ports in DIR (0700): a restart with
                        the same DIR has the same URL, CA and manifest key, and sign-ins stay valid; a
                        remembered port in use is an error (ERR_HUB_PORT_BUSY), never silently replaced.
                        Without it everything is in memory and the CA goes to a temporary folder
  --json                print one line {"hub", "modelHost", "ca", "manifestKey", "user", "password"}
  --env                 print one line: export COMPANION_HUB=… COMPANION_CA=… COMPANION_MANIFEST_KEY=…
                        (the hub keeps running; the rest goes to stderr)
  --debug               print stack traces of errors

Sign in once with: companion login --hub <hub> --ca <ca> --manifest-key <manifestKey>
(login remembers the three in its data dir; or export them, as the printed export line does).

Examples:
  companion hub --data-dir ~/.companion-hub
  companion hub --data-dir ~/.companion-hub --env > ~/.companion-hub.env &    # then: . ~/.companion-hub.env
  companion hub --json
  companion hub --data-dir ~/.companion-hub --port 0 --model-host-port 0     # take new ports`;

interface HubArgs {
  port?: number;
  modelHostPort?: number;
  dataDir?: string;
  json: boolean;
  env: boolean;
}

function parsePort(value: string | undefined, flag: string): number {
  if (value === undefined || !/^\d{1,5}$/.test(value) || Number(value) > 65535) throw new CliUsageError(`${flag} needs a port number 0-65535`);
  return Number(value);
}

/** Parses the arguments of `companion hub`. @throws CliUsageError */
export function parseHubArgs(args: readonly string[]): HubArgs {
  const out: HubArgs = { json: false, env: false };
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
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
      case '--json':
        out.json = true;
        break;
      case '--env':
        out.env = true;
        break;
      case '--debug':
        break;
      default:
        throw new CliUsageError(arg.startsWith('-') ? `unknown option ${printableOption(arg)}` : 'takes no arguments');
    }
  }
  if (out.json && out.env) throw new CliUsageError('--json and --env cannot be used together');
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

async function run(args: readonly string[], io: Io): Promise<number> {
  const options = parseHubArgs(args);
  // Loaded on use: the other commands never pay for oidc-provider and the certificate code.
  const { startHub } = await import('../hub/index.js');
  const { writePrivateFileAtomic } = await import('../hub/files.js');
  // Listen before starting: a Ctrl-C during start-up still closes the hub cleanly.
  const signals = listenForSignals();
  let tempDir: string | null = null;
  const hub = await startHub({
    ...(options.port === undefined ? {} : { port: options.port }),
    ...(options.modelHostPort === undefined ? {} : { modelHostPort: options.modelHostPort }),
    ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir, rememberPorts: true }),
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
      writePrivateFileAtomic(caPath, hub.caPem);
    }
    const exports = exportLine(hub.hubUrl, caPath, hub.manifestKey);
    if (options.json) {
      io.out(JSON.stringify({ hub: hub.hubUrl, modelHost: hub.modelHostUrl, ca: caPath, manifestKey: hub.manifestKey, user: hub.user, password: hub.password }));
    } else if (options.env) {
      io.out(exports);
      io.err(`companion hub: ready at ${hub.hubUrl}; dev login ${hub.user} / ${hub.password}; stop with Ctrl-C.`);
    } else {
      io.out([
        'companion hub: ready',
        `  hub (issuer)    ${hub.hubUrl}`,
        `  model host      ${hub.modelHostUrl}`,
        `  CA file         ${caPath}`,
        `  manifest key    ${hub.manifestKey}`,
        `  dev login       ${hub.user} / ${hub.password}`,
        `  models          ${hub.models.map((m) => m.id).join(', ')}`,
        '',
        `Sign in once with: companion login --hub ${hub.hubUrl} --ca ${shellWord(caPath)} --manifest-key ${hub.manifestKey}`,
        '(login remembers these in its data dir), or set them for this shell with:',
        `  ${exports}`,
        options.dataDir === undefined ? 'Without --data-dir this hub forgets everything on exit.' : `A restart with --data-dir ${shellWord(options.dataDir)} keeps this URL, CA and key.`,
        'Stop with Ctrl-C.',
      ].join('\n'));
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

export const hubCommand: Command = {
  name: 'hub',
  summary: 'run the reference hub (authorization server, manifest, model host)',
  help: HELP,
  run,
};
