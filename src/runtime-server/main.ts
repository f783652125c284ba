/**
 * Entry of the bundled runtime child: `node dist/src/runtime-server/main.js`, no arguments. Its settings,
 * the model's descriptor (or the sandbox path of the model), the listening socket's descriptor and, for
 * loopback TCP, the per-spawn key come as one start line on stdin (protocol.ts, args.ts).
 *
 * Order: read the start line → serve on the inherited listening socket (the parent bound it; the runtime
 * never picks an address) → load the model → one `ready` line on stdout. Any failure before that is one
 * `error` line and a non-zero exit. It exits by itself when the parent is gone (stdin ends, or the parent
 * pid changes), and on SIGTERM/SIGINT stops accepting, lets in-flight work finish within a bound, cancels
 * the rest and exits 0.
 *
 * It reads no token, keychain or hub URL, and never logs a prompt or a completion.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { AddressInfo } from 'node:net';
import { isCompanionError } from '../core/errors.js';
import { parseStartLine, type RuntimeServerConfig } from './args.js';
import { loadEngine, type Engine } from './engine.js';
import { CHILD_ERROR_CODES, eventLine, MAX_PROTOCOL_LINE } from './protocol.js';
import { createRuntimeServer, type RuntimeServer } from './server.js';

type ChildErrorCode = (typeof CHILD_ERROR_CODES)[number];

const START_TIMEOUT_MS = 10_000;
const PARENT_POLL_MS = 1000;

function log(line: string): void {
  process.stderr.write(`runtime-server: ${line}\n`);
}

function emit(line: string): Promise<void> {
  return new Promise((resolve) => {
    process.stdout.write(line, () => resolve());
  });
}

async function fail(code: ChildErrorCode, exitCode = 1): Promise<never> {
  await emit(eventLine({ event: 'error', code }));
  process.exit(exitCode);
}

/** Physical cores (Linux: distinct physical id / core id pairs), else the logical count. */
function physicalCores(): number {
  try {
    const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    const cores = new Set<string>();
    for (const block of cpuinfo.split(/\n\s*\n/)) {
      const physical = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1];
      const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
      if (physical !== undefined && core !== undefined) cores.add(`${physical}:${core}`);
    }
    if (cores.size > 0) return cores.size;
  } catch {
    // Not Linux, or /proc hidden: fall back to the logical count.
  }
  return Math.max(1, availableParallelism());
}

/**
 * Watches stdin: its first line is the start line; its end (the parent died or closed the pipe) stops
 * the runtime. Resolves with the start line ('' when it never came or was too long).
 */
function watchStdin(onParentGone: () => void): Promise<string> {
  let buffered = '';
  let done = false;
  let resolveLine: (line: string) => void = () => undefined;
  const line = new Promise<string>((resolve) => {
    resolveLine = resolve;
  });
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    if (done) return;
    buffered += chunk;
    const newline = buffered.indexOf('\n');
    if (newline >= 0) {
      done = true;
      resolveLine(buffered.slice(0, newline).replace(/\r$/, ''));
      buffered = '';
    } else if (buffered.length > MAX_PROTOCOL_LINE) {
      done = true;
      buffered = '';
      resolveLine('');
    }
  });
  process.stdin.on('end', () => {
    if (!done) resolveLine('');
    onParentGone();
  });
  process.stdin.on('error', onParentGone);
  return line;
}

/** Serves on the listening socket the parent handed over; resolves with its TCP port (0 for Unix). */
function listen(runtime: RuntimeServer, config: RuntimeServerConfig): Promise<number> {
  return new Promise((resolve, reject) => {
    const { server } = runtime;
    server.once('error', reject);
    server.listen({ fd: config.listen.fd }, () => {
      server.off('error', reject);
      const address = server.address();
      resolve(
        config.listen.kind === 'tcp' && typeof address === 'object' && address !== null
          ? (address as AddressInfo).port
          : 0,
      );
    });
  });
}

async function main(argv: string[]): Promise<void> {
  // Why: argv is world-readable; every setting comes on stdin, so any argument is a caller's mistake.
  if (argv.length > 0) {
    log('the runtime takes no arguments (settings come on stdin)');
    return fail('ERR_USAGE', 2);
  }
  let engine: Engine | null = null;
  let runtime: RuntimeServer | null = null;
  let stopping = false;
  let graceMs = 1000;

  const shutdown = async (reason: string, grace: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log(`stopping (${reason})`);
    // Backstop: whatever hangs below, the process ends.
    setTimeout(() => process.exit(0), grace + 5000).unref();
    if (runtime !== null) {
      runtime.server.close();
      const idle = runtime.idle();
      await Promise.race([idle, new Promise((resolve) => setTimeout(resolve, grace))]);
      runtime.abortAll();
      await Promise.race([idle, new Promise((resolve) => setTimeout(resolve, 1000))]);
      runtime.server.closeAllConnections();
    }
    if (engine !== null) await Promise.race([engine.dispose(), new Promise((resolve) => setTimeout(resolve, 2000))]);
    process.exit(0);
  };

  process.on('SIGTERM', () => void shutdown('SIGTERM', graceMs));
  process.on('SIGINT', () => void shutdown('SIGINT', graceMs));
  const parentPid = process.ppid;
  const onParentGone = (): void => void shutdown('parent gone', 0);
  setInterval(() => {
    // Reparented (to init or a subreaper): the companion is gone even if stdin is still open somewhere.
    if (process.ppid !== parentPid) onParentGone();
  }, PARENT_POLL_MS).unref();

  let timer: NodeJS.Timeout | undefined;
  const line = await Promise.race([
    watchStdin(onParentGone),
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(''), START_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  if (stopping) return;
  let config: RuntimeServerConfig;
  try {
    config = parseStartLine(line);
  } catch (error) {
    log(line === '' ? 'no start line on stdin' : isCompanionError(error) ? error.message : 'invalid start line');
    return fail(line === '' ? 'ERR_SPAWN_HANDSHAKE' : 'ERR_USAGE', line === '' ? 1 : 2);
  }
  graceMs = config.shutdownGraceMs;

  let port = 0;
  const key = config.key;
  runtime = createRuntimeServer({
    modelId: config.modelId,
    engine: () => engine,
    ...(key === null ? {} : { tcp: { key, allowedHosts: () => new Set([`127.0.0.1:${port}`, `localhost:${port}`]) } }),
  });
  try {
    port = await listen(runtime, config);
  } catch {
    log('the inherited listening socket is not usable');
    return fail('ERR_BIND_FAILED');
  }

  try {
    engine = await loadEngine({
      modelPath: config.modelPath,
      contextSize: config.contextSize,
      threads: config.threads ?? physicalCores(),
      gpu: config.gpu,
      parallel: config.parallel,
      memoryBytes: config.memoryBytes,
      log,
    });
  } catch (error) {
    // The error text can hold the model path: report the kind only.
    log(`model load failed (${error instanceof Error ? error.name : 'error'})`);
    return fail('ERR_RUNTIME_MODEL_LOAD');
  }
  if (stopping) return;
  const { gpu: backend, gpuLayers, fallback } = engine.backend;
  await emit(
    eventLine({
      event: 'ready',
      pid: process.pid,
      backend,
      gpuLayers,
      ...(fallback === undefined ? {} : { fallback }),
      parallel: engine.parallel,
      contextSize: engine.contextSize,
    }),
  );
  log(`backend ${backend} (${gpuLayers} layers offloaded)${fallback === undefined ? '' : `; ${fallback}`}`);
  log('ready');
}

process.on('uncaughtException', (error) => {
  log(`fatal: ${error.name}`);
  process.exit(1);
});
process.on('unhandledRejection', (reason) => {
  log(`fatal: ${reason instanceof Error ? reason.name : 'rejection'}`);
  process.exit(1);
});

await main(process.argv.slice(2));
