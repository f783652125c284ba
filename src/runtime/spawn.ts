/**
 * The spawn adapter (D5.4, P-i, P-k): starts a runtime child from a {@link RuntimeProfile} and hands back a
 * {@link RuntimeHandle}. It decides nothing about lifecycle policy (restarts, backoff): it reports exits
 * and health, and the lifecycle core decides.
 *
 * - Absolute binary, `shell: false`, an argv array, an allow-listed environment (PATH, HOME, LANG, LC_*,
 *   TMPDIR and the profile's thread/GPU keys; never NODE_OPTIONS or anything else of the parent).
 * - Its own process group (`detached`); stop is SIGTERM to the group, SIGKILL after a bound, `forced`
 *   recorded; on exit whatever is left of the group is swept.
 * - Bind: a Unix socket `rt.sock` in a fresh 0700 run directory (default), or 127.0.0.1:0 with a per-spawn
 *   key written to the child's stdin (bundled) or a 0600 key file (llama-server). stdin stays open: its end
 *   tells the child that the companion is gone.
 * - The address is what the child reports on its stdout pipe, checked against what was asked (the socket
 *   path in the run directory we made, or 127.0.0.1); nothing is guessed or probed.
 * - A state file records the child's identity so that the next start can reclaim it (stale.ts); a stale
 *   runtime is reclaimed before each start.
 * - A sandbox (issue 10) plugs in as `wrap`: it receives the command and the paths to expose and returns
 *   the command to execute (e.g. `bwrap … -- node main.js …`). Callers do not change.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, lstatSync, openSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { CompanionError, assertString, assertInteger, type ErrorCode } from '../core/errors.js';
import { Secret } from '../core/secret.js';
import { CHILD_ERROR_CODES, MAX_PROTOCOL_LINE, type RuntimeEvent } from '../runtime-server/protocol.js';
import { checkHealth, type RuntimeAddress } from './health.js';
import type { BindTarget, RuntimeProfile, SpawnCommand } from './runtime-profile.js';
import { clearRuntimeState, groupHasMembers, reclaimStaleRuntime, recordRuntimeState, type ReclaimOutcome } from './stale.js';

export type { RuntimeAddress } from './health.js';
export type { BindTarget, RuntimeProfile, SpawnCommand } from './runtime-profile.js';

/** What a sandbox wrapper learns about one start. */
export interface WrapContext {
  /** The per-spawn 0700 directory (socket, key file): must stay writable inside the sandbox. */
  readonly runDir: string;
  /** The model file: read-only. */
  readonly modelPath: string;
  /** True when the model is handed over as a descriptor: the sandbox need not (and should not) show it. */
  readonly modelByDescriptor: boolean;
  /** Everything else the runtime reads (binary, code): read-only. */
  readonly readOnlyPaths: readonly string[];
  readonly bind: BindTarget;
}

/** A sandbox hook: turns the runtime's command into the command that runs it confined. */
export type SpawnWrap = (command: SpawnCommand, context: WrapContext) => SpawnCommand;

export interface RuntimeExit {
  readonly code: number | null;
  readonly signal: string | null;
  /** True when the exit followed `stop()` (or the start being abandoned). */
  readonly expected: boolean;
}

export interface SpawnOptions {
  /** The companion's data directory (absolute): holds the 0600 state file. Created 0700 if missing. */
  readonly dataDir: string;
  /**
   * Folder for the per-spawn run directories (absolute; default `<dataDir>/run`). A Unix socket path must
   * fit in 108 bytes: when it would not, the system temp folder is used instead.
   */
  readonly runDir?: string;
  /** `unix` (default) or `tcp` (loopback with a per-spawn key, for systems without Unix sockets). */
  readonly bind?: 'unix' | 'tcp';
  /** How long the child may take to report ready (default 120 000 ms). */
  readonly readyTimeoutMs?: number;
  /** Default bound for `stop()` before SIGKILL (default 5000 ms). */
  readonly stopGraceMs?: number;
  /** Called once when the child exits after it was ready (crash or stop). */
  readonly onExit?: (exit: RuntimeExit) => void;
  /** Each line the child writes to stderr (default: dropped). The runtime never logs prompts there. */
  readonly onStderr?: (line: string) => void;
  /** Sandbox hook (issue 10). */
  readonly wrap?: SpawnWrap;
  /** Reclaim a stale runtime before starting (default true); the outcome goes to `onReclaim`. */
  readonly reclaim?: boolean;
  readonly onReclaim?: (outcome: ReclaimOutcome) => void;
}

export interface RuntimeHandle {
  /** The child's pid (also its process group id). */
  readonly pid: number;
  /** The address the child reported over its stdout pipe, validated. */
  readonly address: RuntimeAddress;
  /** The per-spawn run directory (removed when the child exits). */
  readonly runDir: string;
  /** SIGTERM to the group, SIGKILL after `graceMs`; `forced` tells which ended it. Idempotent. */
  stop(graceMs?: number): Promise<{ forced: boolean }>;
  /** Resolves when the child has exited. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** One `/health` round trip; false once the child has exited. Never throws. */
  healthCheck(timeoutMs?: number): Promise<boolean>;
}

/** Environment names a child may inherit from the companion. Everything else is dropped. */
const INHERITED_ENV = /^(PATH|HOME|LANG|LANGUAGE|LC_[A-Z_]+|TMPDIR|TZ)$/;
/** Runtime-specific keys a profile may set: thread and GPU selection only. */
const PROFILE_ENV = /^(OMP_NUM_THREADS|CUDA_VISIBLE_DEVICES|HIP_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|GGML_VK_VISIBLE_DEVICES|GGML_[A-Z0-9_]+)$/;
/** Names that look like they carry a secret are refused even when a pattern above would allow them. */
const SECRET_NAME = /(KEY|TOKEN|SECRET|PASSW|CREDENTIAL|COOKIE|AUTH)/i;

/**
 * Builds the child's environment from the parent's: the allow-list only, plus the profile's keys.
 * Throws `ERR_INVALID_ARG_VALUE` when the profile asks for a key outside its allow-list.
 */
export function childEnvironment(parent: NodeJS.ProcessEnv, profileEnv: Readonly<Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(parent)) {
    if (value !== undefined && INHERITED_ENV.test(name) && !SECRET_NAME.test(name)) env[name] = value;
  }
  for (const [name, value] of Object.entries(profileEnv)) {
    if (!PROFILE_ENV.test(name) || SECRET_NAME.test(name)) {
      const error = new TypeError(`profile environment key ${name} is not allowed`) as TypeError & { code: string };
      error.code = 'ERR_INVALID_ARG_VALUE';
      throw error;
    }
    env[name] = value;
  }
  return env;
}

const MAX_SOCKET_PATH = 100; // sun_path is 108 bytes on Linux, 104 on macOS; keep a margin.
const SOCKET_NAME = 'rt.sock';
const KEY_FILE = 'api-key';

function ensurePrivateDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  const stats = lstatSync(path);
  const uid = process.getuid?.();
  if (!stats.isDirectory() || (uid !== undefined && stats.uid !== uid)) {
    throw new CompanionError('ERR_SPAWN_FAILED', 'the runtime directory is not a directory owned by this user');
  }
}

function makeRunDir(base: string): string {
  ensurePrivateDir(base);
  // mkdtemp creates the directory with mode 0700.
  return mkdtempSync(join(base, 'rt-'));
}

function checkBinary(file: string): void {
  if (!isAbsolute(file)) throw new CompanionError('ERR_SPAWN_BINARY');
  try {
    if (!statSync(file).isFile()) throw new Error('not a file');
    accessSync(file, constants.X_OK);
  } catch {
    throw new CompanionError('ERR_SPAWN_BINARY');
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // No such group any more.
  }
}

/** Splits a stream into lines, each at most MAX_PROTOCOL_LINE characters (longer ones are cut). */
function onLines(stream: NodeJS.ReadableStream, listener: (line: string) => void): void {
  let buffer = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffer += chunk;
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      listener(buffer.slice(0, newline).slice(0, MAX_PROTOCOL_LINE));
      buffer = buffer.slice(newline + 1);
    }
    if (buffer.length > MAX_PROTOCOL_LINE) {
      listener(buffer.slice(0, MAX_PROTOCOL_LINE));
      buffer = '';
    }
  });
}

function parseEvent(line: string): RuntimeEvent | null {
  if (!line.startsWith('{')) return null;
  try {
    const value = JSON.parse(line) as unknown;
    if (typeof value !== 'object' || value === null) return null;
    const event = (value as { event?: unknown }).event;
    return event === 'ready' || event === 'error' ? (value as RuntimeEvent) : null;
  } catch {
    return null;
  }
}

/** Validates a reported address against what this start asked for (P-k). */
function validateReported(reported: unknown, target: BindTarget, key: Secret | null): RuntimeAddress {
  if (typeof reported !== 'object' || reported === null) throw new CompanionError('ERR_SPAWN_HANDSHAKE');
  const address = reported as Record<string, unknown>;
  if (target.kind === 'unix') {
    if (address.kind !== 'unix' || address.path !== target.path) throw new CompanionError('ERR_SPAWN_HANDSHAKE');
    let mode: number;
    try {
      const stats = lstatSync(target.path);
      if (!stats.isSocket()) throw new Error('not a socket');
      mode = stats.mode;
    } catch {
      throw new CompanionError('ERR_SPAWN_HANDSHAKE');
    }
    if ((mode & 0o077) !== 0) throw new CompanionError('ERR_SPAWN_HANDSHAKE', 'the runtime socket is open to other users');
    return { kind: 'unix', path: target.path };
  }
  const port = address.port;
  if (address.kind !== 'tcp' || address.host !== '127.0.0.1' || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535 || key === null) {
    throw new CompanionError('ERR_SPAWN_HANDSHAKE');
  }
  return { kind: 'tcp', host: '127.0.0.1', port, key };
}

const LISTENING = /server is listening on (?:http:\/\/127\.0\.0\.1:(\d+)|unix:\/\/(\S+))/;

/**
 * Starts a runtime and resolves once it reported a valid address (and, for llama-server, `/health` is
 * 200). Rejects with a {@link CompanionError}: `ERR_SPAWN_BINARY`, `ERR_SPAWN_FAILED`, `ERR_SPAWN_EXITED`
 * (detail: exit code / signal), `ERR_SPAWN_READY_TIMEOUT`, `ERR_SPAWN_HANDSHAKE`, `ERR_RUNTIME_MODEL_LOAD`
 * or `ERR_BIND_FAILED`. On rejection nothing of the child is left running.
 */
export async function spawnRuntime(profile: RuntimeProfile, options: SpawnOptions): Promise<RuntimeHandle> {
  assertString(options.dataDir, 'options.dataDir');
  if (!isAbsolute(options.dataDir)) throw Object.assign(new TypeError('options.dataDir must be absolute'), { code: 'ERR_INVALID_ARG_VALUE' });
  if (options.runDir !== undefined && !isAbsolute(options.runDir)) throw Object.assign(new TypeError('options.runDir must be absolute'), { code: 'ERR_INVALID_ARG_VALUE' });
  const readyTimeoutMs = options.readyTimeoutMs ?? 120_000;
  const stopGraceMs = options.stopGraceMs ?? 5000;
  assertInteger(readyTimeoutMs, 'options.readyTimeoutMs', 1, 3_600_000);
  assertInteger(stopGraceMs, 'options.stopGraceMs', 0, 600_000);
  const bind = options.bind ?? 'unix';
  checkBinary(profile.file);
  const env = childEnvironment(process.env, profile.env);

  ensurePrivateDir(options.dataDir);
  let runBase = options.runDir ?? join(options.dataDir, 'run');
  if (options.reclaim !== false) {
    const outcome = await reclaimStaleRuntime(options.dataDir, { runBase });
    options.onReclaim?.(outcome);
  }
  // Keep the socket path short enough for sun_path.
  if (bind === 'unix' && join(runBase, 'rt-XXXXXX', SOCKET_NAME).length > MAX_SOCKET_PATH) runBase = join(tmpdir(), 'companion-run');
  let runDir: string;
  try {
    runDir = makeRunDir(runBase);
  } catch (error) {
    if (error instanceof CompanionError) throw error;
    throw new CompanionError('ERR_SPAWN_FAILED', 'the runtime directory could not be made');
  }
  const removeRunDir = (): void => rmSync(runDir, { recursive: true, force: true });

  let key: Secret | null = null;
  let keyFile: string | undefined;
  let target: BindTarget;
  let command: SpawnCommand;
  try {
    if (bind === 'unix') {
      target = { kind: 'unix', path: join(runDir, SOCKET_NAME) };
      if (target.path.length > MAX_SOCKET_PATH) throw new CompanionError('ERR_SPAWN_FAILED', 'the runtime socket path is too long');
    } else {
      key = new Secret(randomBytes(32).toString('base64url'));
      if (profile.keyDelivery === 'file') {
        keyFile = join(runDir, KEY_FILE);
        writeFileSync(keyFile, `${key.reveal()}\n`, { mode: 0o600, flag: 'wx' });
      }
      target = keyFile === undefined ? { kind: 'tcp' } : { kind: 'tcp', keyFile };
    }
    command = { file: profile.file, args: profile.args(target) };
    if (options.wrap !== undefined) {
      command = options.wrap(command, { runDir, modelPath: profile.modelPath, modelByDescriptor: profile.modelDelivery === 'fd', readOnlyPaths: profile.readOnlyPaths, bind: target });
      checkBinary(command.file);
    }
  } catch (error) {
    removeRunDir();
    throw error;
  }

  // The model as descriptor 3, opened read-only here: its path never reaches the child's argv.
  let modelFd: number | undefined;
  if (profile.modelDelivery === 'fd') {
    try {
      modelFd = openSync(profile.modelPath, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      removeRunDir();
      throw new CompanionError('ERR_RUNTIME_MODEL_LOAD', 'the model file could not be opened');
    }
  }
  let child: ChildProcess;
  // The child inherits umask 077: whatever it creates (its socket, for llama-server too) is private.
  // spawn() is synchronous up to exec, so no other file creation of ours sees this umask.
  let previousUmask: number | undefined;
  try {
    previousUmask = process.umask(0o077);
  } catch {
    // Worker threads may not change the umask; the bundled runtime sets its own socket mode anyway.
  }
  try {
    child = spawn(command.file, [...command.args], {
      shell: false,
      detached: true,
      env,
      cwd: runDir,
      stdio: modelFd === undefined ? ['pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe', modelFd],
      windowsHide: true,
    });
  } catch {
    removeRunDir();
    throw new CompanionError('ERR_SPAWN_FAILED');
  } finally {
    if (previousUmask !== undefined) process.umask(previousUmask);
    // The child has its own copy; ours is not needed any more.
    if (modelFd !== undefined) closeSync(modelFd);
  }

  return new Promise<RuntimeHandle>((resolveHandle, rejectHandle) => {
    let ready = false;
    let settled = false;
    let stopping = false;
    let exitInfo: { code: number | null; signal: string | null } | null = null;
    let reportedError: ErrorCode | null = null;
    let resolveExited: (value: { code: number | null; signal: string | null }) => void = () => undefined;
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      resolveExited = resolve;
    });
    let pid = 0;

    // The state file for the next start's reclaim; best effort (the runtime also exits when we die).
    const record = (): void => {
      try {
        recordRuntimeState(options.dataDir, pid, runDir);
      } catch {
        // Not recorded: reclaim falls back to the runtime's own parent-death exit.
      }
    };

    const abandon = (error: CompanionError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(readyTimer);
      stopping = true;
      if (exitInfo === null && pid > 0) killGroup(pid, 'SIGKILL');
      // Reject once the child is really gone: a rejected start leaves nothing running.
      void exited.then(() => rejectHandle(error));
    };

    child.on('error', () => {
      // spawn failed (ENOENT, EACCES...): no 'exit' follows when there is no pid.
      if (child.pid === undefined) {
        removeRunDir();
        settled = true;
        clearTimeout(readyTimer);
        rejectHandle(new CompanionError('ERR_SPAWN_FAILED'));
      }
    });
    child.stdin?.on('error', () => undefined);

    child.on('spawn', () => {
      pid = child.pid!;
      record();
      if (key !== null && profile.keyDelivery === 'stdin') child.stdin?.write(`${key.reveal()}\n`);
    });

    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      clearTimeout(readyTimer);
      // Sweep what is left of the group (forks, helpers); the number is pinned while members remain.
      if (pid > 0 && groupHasMembers(pid)) killGroup(pid, 'SIGKILL');
      if (pid > 0) {
        try {
          clearRuntimeState(options.dataDir, pid);
        } catch {
          // Nothing to clear.
        }
      }
      removeRunDir();
      child.stdin?.destroy();
      resolveExited(exitInfo);
      if (!settled) {
        const detail = { exitCode: code ?? -1, signal: signal ?? '' };
        settled = true;
        rejectHandle(reportedError !== null
          ? new CompanionError(reportedError, undefined, { detail })
          : new CompanionError('ERR_SPAWN_EXITED', undefined, { detail }));
        return;
      }
      if (ready) options.onExit?.({ code, signal, expected: stopping });
    });

    // Handlers above only run from events, after this line.
    const readyTimer = setTimeout(() => abandon(new CompanionError('ERR_SPAWN_READY_TIMEOUT')), readyTimeoutMs);

    const stop = (() => {
      let stopPromise: Promise<{ forced: boolean }> | null = null;
      return (graceMs: number = stopGraceMs): Promise<{ forced: boolean }> => {
        stopPromise ??= (async () => {
          stopping = true;
          if (exitInfo !== null) return { forced: false };
          killGroup(pid, 'SIGTERM');
          let timer: NodeJS.Timeout | undefined;
          const timedOut = await Promise.race([
            exited.then(() => false),
            new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), graceMs); }),
          ]);
          clearTimeout(timer);
          if (!timedOut) return { forced: false };
          killGroup(pid, 'SIGKILL');
          await exited;
          return { forced: true };
        })();
        return stopPromise;
      };
    })();

    const becomeReady = (address: RuntimeAddress): void => {
      if (settled) return;
      settled = true;
      ready = true;
      clearTimeout(readyTimer);
      if (keyFile !== undefined) rmSync(keyFile, { force: true });
      // Again now that the child is settled: a wrapper that execs is recorded as what it became.
      record();
      resolveHandle({
        pid,
        address,
        runDir,
        stop,
        exited,
        async healthCheck(timeoutMs = 2000) {
          if (exitInfo !== null) return false;
          const result = await checkHealth(address, timeoutMs);
          return result.ok && exitInfo === null;
        },
      });
    };

    const onEventLine = (line: string): void => {
      if (settled) return;
      const event = parseEvent(line);
      if (event === null) return;
      if (event.event === 'error') {
        const code = (CHILD_ERROR_CODES as readonly string[]).includes(event.code) ? event.code : 'ERR_SPAWN_FAILED';
        // ERR_USAGE / ERR_INTERNAL from the child are our bug, not the user's command line.
        reportedError = code === 'ERR_USAGE' || code === 'ERR_INTERNAL' ? 'ERR_SPAWN_FAILED' : (code as ErrorCode);
        return; // The child exits next; 'exit' rejects with this code.
      }
      try {
        becomeReady(validateReported(event.address, target, key));
      } catch (error) {
        abandon(error instanceof CompanionError ? error : new CompanionError('ERR_SPAWN_HANDSHAKE'));
      }
    };

    let llamaListening = false;
    const onLlamaLog = (line: string): void => {
      if (settled || llamaListening) return;
      const match = LISTENING.exec(line);
      if (match === null) return;
      llamaListening = true;
      const reported = match[1] !== undefined
        ? { kind: 'tcp', host: '127.0.0.1', port: Number(match[1]) }
        : { kind: 'unix', path: match[2] };
      let address: RuntimeAddress;
      try {
        address = validateReported(reported, target, key);
      } catch (error) {
        abandon(error instanceof CompanionError ? error : new CompanionError('ERR_SPAWN_HANDSHAKE'));
        return;
      }
      // llama-server listens before the model is loaded: ready once /health says so.
      const poll = async (): Promise<void> => {
        while (!settled) {
          const result = await checkHealth(address, 2000);
          if (result.ok) {
            becomeReady(address);
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      };
      void poll();
    };

    if (child.stdout !== null) {
      onLines(child.stdout, (line) => {
        if (profile.handshake === 'ready-line') onEventLine(line);
        else onLlamaLog(line);
      });
    }
    if (child.stderr !== null) {
      onLines(child.stderr, (line) => {
        if (profile.handshake === 'llama-server-log') onLlamaLog(line);
        options.onStderr?.(line);
      });
    }
  });
}
