/**
 * Entry of the bundled runtime child: `node dist/src/runtime-server/main.js --model PATH (--socket PATH | --tcp) …`
 * (argv: see args.ts; the spawn-pipe protocol: see protocol.ts).
 *
 * Order: parse argv → (TCP) read the key from stdin → bind (socket 0600 in a 0700 directory, or
 * 127.0.0.1:0) → load the model → one `ready` line on stdout. Any failure before that is one `error` line
 * and a non-zero exit. It exits by itself when the parent is gone (stdin ends, or the parent pid changes),
 * and on SIGTERM/SIGINT stops accepting, lets in-flight work finish within a bound, cancels the rest,
 * removes its socket and exits 0.
 *
 * It reads no token, keychain or hub URL, and never logs a prompt or a completion.
 */
import { chmodSync, lstatSync, readFileSync, unlinkSync, type Stats } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
import { isCompanionError } from '../core/errors.js';
import { parseRuntimeArgs, type RuntimeServerConfig } from './args.js';
import { loadEngine, type Engine } from './engine.js';
import { CHILD_ERROR_CODES, eventLine, KEY_PATTERN, MAX_PROTOCOL_LINE, type ReportedAddress } from './protocol.js';
import { createRuntimeServer, type RuntimeServer } from './server.js';

type ChildErrorCode = (typeof CHILD_ERROR_CODES)[number];

const KEY_TIMEOUT_MS = 10_000;
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
 * Watches stdin: in TCP mode its first line is the key; its end (the parent died or closed the pipe) stops
 * the runtime. Returns the key promise (null in Unix-socket mode).
 */
function watchStdin(expectKey: boolean, onParentGone: () => void): Promise<string | null> {
  let buffered = '';
  let keyDone = !expectKey;
  let resolveKey: (key: string | null) => void = () => undefined;
  const key = new Promise<string | null>((resolve) => {
    resolveKey = resolve;
  });
  if (!expectKey) resolveKey(null);
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    if (keyDone) return;
    buffered += chunk;
    const newline = buffered.indexOf('\n');
    if (newline >= 0) {
      keyDone = true;
      resolveKey(buffered.slice(0, newline).replace(/\r$/, ''));
      buffered = '';
    } else if (buffered.length > MAX_PROTOCOL_LINE) {
      keyDone = true;
      buffered = '';
      resolveKey('');
    }
  });
  process.stdin.on('end', onParentGone);
  process.stdin.on('error', onParentGone);
  return key;
}

function checkSocketDirectory(socketPath: string): boolean {
  let dir: Stats;
  try {
    dir = lstatSync(dirname(socketPath));
  } catch {
    return false;
  }
  const uid = process.getuid?.();
  // The directory is the real access control: ours, a directory (not a link), nobody else may enter.
  return dir.isDirectory() && (uid === undefined || dir.uid === uid) && (dir.mode & 0o077) === 0;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function listen(runtime: RuntimeServer, config: RuntimeServerConfig): Promise<ReportedAddress> {
  return new Promise((resolve, reject) => {
    const { server } = runtime;
    server.once('error', reject);
    if (config.bind.kind === 'unix') {
      const path = config.bind.path;
      // The socket is created with no group/other bits, then set to 0600 explicitly.
      const previous = process.umask(0o177);
      server.listen({ path, exclusive: true }, () => {
        process.umask(previous);
        server.off('error', reject);
        chmodSync(path, 0o600);
        resolve({ kind: 'unix', path });
      });
    } else {
      server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
        server.off('error', reject);
        const address = server.address() as AddressInfo;
        resolve({ kind: 'tcp', host: '127.0.0.1', port: address.port });
      });
    }
  });
}

async function main(argv: string[]): Promise<void> {
  let config: RuntimeServerConfig;
  try {
    config = parseRuntimeArgs(argv);
  } catch (error) {
    log(isCompanionError(error) ? error.message : 'invalid arguments');
    return fail('ERR_USAGE', 2);
  }

  let engine: Engine | null = null;
  let runtime: RuntimeServer | null = null;
  let socketIno: number | undefined;
  let stopping = false;

  const removeSocket = (): void => {
    if (config.bind.kind !== 'unix' || socketIno === undefined) return;
    try {
      // Only our own socket: never a file someone put there after us.
      const stats = lstatSync(config.bind.path);
      if (stats.isSocket() && stats.ino === socketIno) unlinkSync(config.bind.path);
    } catch {
      // Already gone.
    }
  };

  const shutdown = async (reason: string, graceMs: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log(`stopping (${reason})`);
    // Backstop: whatever hangs below, the process ends.
    setTimeout(() => {
      removeSocket();
      process.exit(0);
    }, graceMs + 5000).unref();
    if (runtime !== null) {
      runtime.server.close();
      const idle = runtime.idle();
      await Promise.race([idle, new Promise((resolve) => setTimeout(resolve, graceMs))]);
      runtime.abortAll();
      await Promise.race([idle, new Promise((resolve) => setTimeout(resolve, 1000))]);
      runtime.server.closeAllConnections();
    }
    removeSocket();
    if (engine !== null) await Promise.race([engine.dispose(), new Promise((resolve) => setTimeout(resolve, 2000))]);
    process.exit(0);
  };

  process.on('SIGTERM', () => void shutdown('SIGTERM', config.shutdownGraceMs));
  process.on('SIGINT', () => void shutdown('SIGINT', config.shutdownGraceMs));
  const parentPid = process.ppid;
  const onParentGone = (): void => void shutdown('parent gone', 0);
  setInterval(() => {
    // Reparented (to init or a subreaper): the companion is gone even if stdin is still open somewhere.
    if (process.ppid !== parentPid) onParentGone();
  }, PARENT_POLL_MS).unref();
  const keyPromise = watchStdin(config.bind.kind === 'tcp', onParentGone);

  let key: string | null = null;
  if (config.bind.kind === 'tcp') {
    let timer: NodeJS.Timeout | undefined;
    key = await Promise.race([keyPromise, new Promise<string>((resolve) => { timer = setTimeout(() => resolve(''), KEY_TIMEOUT_MS); })]);
    clearTimeout(timer);
    if (key === null || !KEY_PATTERN.test(key)) {
      log('no valid key on stdin');
      return fail('ERR_SPAWN_HANDSHAKE');
    }
  }
  if (stopping) return;

  if (config.bind.kind === 'unix') {
    if (!checkSocketDirectory(config.bind.path)) {
      log('the socket directory must be ours with mode 0700');
      return fail('ERR_BIND_FAILED');
    }
    if (exists(config.bind.path)) {
      // Never unlink what is there: it may be another process's live socket.
      log('the socket path is already in use');
      return fail('ERR_BIND_FAILED');
    }
  }

  let port = 0;
  runtime = createRuntimeServer({
    modelId: config.modelId,
    engine: () => engine,
    ...(key === null ? {} : { tcp: { key, allowedHosts: () => new Set([`127.0.0.1:${port}`, `localhost:${port}`]) } }),
  });
  let address: ReportedAddress;
  try {
    address = await listen(runtime, config);
    if (address.kind === 'unix') socketIno = lstatSync(address.path).ino;
    else port = address.port;
  } catch {
    log('bind failed');
    return fail('ERR_BIND_FAILED');
  }

  try {
    engine = await loadEngine({
      modelPath: config.modelPath,
      contextSize: config.contextSize,
      threads: config.threads ?? physicalCores(),
      gpu: config.gpu,
      parallel: config.parallel,
      log,
    });
  } catch (error) {
    // The error text can hold the model path: report the kind only.
    log(`model load failed (${error instanceof Error ? error.name : 'error'})`);
    removeSocket();
    return fail('ERR_RUNTIME_MODEL_LOAD');
  }
  if (stopping) return;
  await emit(eventLine({ event: 'ready', address, pid: process.pid }));
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
