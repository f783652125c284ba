/**
 * The spawn adapter (D5.4, P-i, P-k): starts a runtime child from a {@link RuntimeProfile} and hands back a
 * {@link RuntimeHandle}. It decides nothing about lifecycle policy (restarts, backoff): it reports exits
 * and health, and the lifecycle core decides.
 *
 * - Absolute binary, `shell: false`, an argv array that holds no setting, path or key, an allow-listed
 *   environment (PATH, HOME, LANG, LC_*, TMPDIR and the profile's thread/GPU keys; never NODE_OPTIONS).
 * - The child receives exactly five descriptors: stdin (the start line, then held open: its end tells the
 *   child the companion is gone), stdout (events), stderr, the model (3, read-only) and the listening
 *   socket (4). Whatever else the companion inherited from its own launcher is closed first
 *   (src/common/descriptors.ts).
 * - The listening socket is bound here, by the parent: a Unix socket `rt.sock` in a fresh 0700 folder that
 *   the sandbox does not show (default), or 127.0.0.1:0 with a per-spawn key. The runtime never picks,
 *   creates or reports an address, so it cannot point the companion at another socket (issue 16 item 4).
 * - The model is opened once, O_RDONLY | O_NOFOLLOW — by the caller that verified it (the supervisor
 *   hashes that very descriptor) or here — and handed over as descriptor 3. A sandbox may show it at a
 *   read-only path instead (bubblewrap `--ro-bind-fd 3`), which cannot be reopened for writing.
 * - Its own process group (`detached`); stop is SIGTERM to the group, SIGKILL after a bound, `forced`
 *   recorded; on exit whatever is left of the group is swept.
 * - A state file records the child's identity so that the next start can reclaim it (stale.ts).
 * - A sandbox plugs in as `wrap`: it receives the command and returns the command to execute.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  linkSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { closeInheritedDescriptors } from '../common/descriptors.js';
import { ensurePrivateDirSync } from '../common/private-file.js';
import { CompanionError, assertString, assertInteger, type ErrorCode, CodedTypeError } from '../core/errors.js';
import { Secret } from '../core/secret.js';
import {
  CHILD_ERROR_CODES,
  MAX_PROTOCOL_LINE,
  type RuntimeEvent,
  type StartLine,
  type StartModel,
} from '../runtime-server/protocol.js';
import { checkHealth, socketIdentity, type RuntimeAddress } from './health.js';
import { LISTEN_FD, MODEL_FD, type RuntimeProfile, type SpawnCommand } from './runtime-profile.js';
import {
  clearRuntimeState,
  groupHasMembers,
  reclaimStaleRuntime,
  recordRuntimeState,
  type ReclaimOutcome,
} from './stale.js';

export type { RuntimeAddress } from './health.js';
export type { RuntimeProfile, SpawnCommand } from './runtime-profile.js';

/** What a sandbox wrapper learns about one start. */
export interface WrapContext {
  /** Everything the runtime reads besides the model (binary, code): read-only. */
  readonly readOnlyPaths: readonly string[];
  /** The descriptor the model arrives on ({@link MODEL_FD}). */
  readonly modelFd: number;
  /** The profile's GPU setting: with `auto` a sandbox shows the GPU devices (sandbox-gpu.ts), with `off` none. */
  readonly gpu: 'off' | 'auto';
}

/** A wrapped command; `modelPath` is set when the sandbox shows the model at a path (and took fd 3). */
export interface WrappedCommand extends SpawnCommand {
  readonly modelPath?: string;
}

/** A sandbox hook: turns the runtime's command into the command that runs it confined. */
export type SpawnWrap = (command: SpawnCommand, context: WrapContext) => WrappedCommand;

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
   * fit in 108 bytes: when it would not, a per-user folder is used instead ({@link fallbackRunBase}).
   */
  readonly runDir?: string;
  /** `unix` (default) or `tcp` (loopback with a per-spawn key, for systems without Unix sockets). */
  readonly bind?: 'unix' | 'tcp';
  /**
   * The model as an open, read-only descriptor the caller owns (and verified); it is handed over as
   * descriptor 3 and not closed here. Default: open `profile.modelPath` here.
   */
  readonly modelFd?: number;
  /** How long the child may take to report ready (default 120 000 ms). */
  readonly readyTimeoutMs?: number;
  /** Default bound for `stop()` before SIGKILL (default 5000 ms). */
  readonly stopGraceMs?: number;
  /** Called once when the child exits after it was ready (crash or stop). */
  readonly onExit?: (exit: RuntimeExit) => void;
  /** Each line the child writes to stderr (default: dropped). The runtime never logs prompts there. */
  readonly onStderr?: (line: string) => void;
  /** Sandbox hook. */
  readonly wrap?: SpawnWrap;
  /** Told what became of a stale runtime: every start reclaims one first (stale.ts). */
  readonly onReclaim?: (outcome: ReclaimOutcome) => void;
}

export interface RuntimeHandle {
  /** The child's pid (also its process group id). */
  readonly pid: number;
  /** The address the parent bound and handed over. */
  readonly address: RuntimeAddress;
  /** The per-spawn run directory (removed when the child exits). */
  readonly runDir: string;
  /** SIGTERM to the group, SIGKILL after `graceMs`; `forced` tells which ended it. Idempotent. */
  stop(graceMs?: number): Promise<{ forced: boolean }>;
  /** Resolves when the child has exited. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** One `/health` round trip; false once the child has exited. Never throws. */
  healthCheck(timeoutMs?: number): Promise<boolean>;
  /** What the runtime said it computes on in its ready line (checked), or null when it did not say. */
  readonly backend: RuntimeBackend | null;
  /** The sequences and per-sequence context the child reported ready with (bounded integers), or null. */
  readonly shape: RuntimeShape | null;
}

/** The backend a runtime reported: one of a fixed list, a bounded layer count, a plain-text fallback reason. */
export interface RuntimeBackend {
  readonly backend: 'cpu' | 'cuda' | 'vulkan' | 'metal';
  readonly gpuLayers: number;
  readonly fallback?: string;
}

/** The ready line's backend fields, or null unless every one is well formed (the child is not trusted, P-k). */
export function readyBackend(event: {
  backend?: unknown;
  gpuLayers?: unknown;
  fallback?: unknown;
}): RuntimeBackend | null {
  const { backend, gpuLayers, fallback } = event;
  if (backend !== 'cpu' && backend !== 'cuda' && backend !== 'vulkan' && backend !== 'metal') return null;
  if (typeof gpuLayers !== 'number' || !Number.isInteger(gpuLayers) || gpuLayers < 0 || gpuLayers > 100_000)
    return null;
  if (fallback !== undefined && (typeof fallback !== 'string' || !/^[A-Za-z0-9 _.:-]{1,120}$/.test(fallback)))
    return null;
  return { backend, gpuLayers, ...(fallback === undefined ? {} : { fallback }) };
}

/** What a runtime runs: `parallel` sequences of `contextSize` tokens each. */
export interface RuntimeShape {
  readonly parallel: number;
  readonly contextSize: number;
}

/** The shape in a ready event, when both numbers are sane (the child is not trusted: P-k). */
function shapeOf(event: RuntimeEvent): RuntimeShape | null {
  if (event.event !== 'ready') return null;
  const { parallel, contextSize } = event;
  const sane = (value: unknown, max: number): value is number =>
    typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= max;
  return sane(parallel, 64) && sane(contextSize, 1 << 21) ? { parallel, contextSize } : null;
}

/** Environment names a child may inherit from the companion. Everything else is dropped. */
const INHERITED_ENV = /^(PATH|HOME|LANG|LANGUAGE|LC_[A-Z_]+|TMPDIR|TZ)$/;
/** Runtime-specific keys a profile may set: thread and GPU selection only. */
const PROFILE_ENV =
  /^(OMP_NUM_THREADS|CUDA_VISIBLE_DEVICES|HIP_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|GGML_VK_VISIBLE_DEVICES|GGML_[A-Z0-9_]+)$/;
/** Names that look like they carry a secret are refused even when a pattern above would allow them. */
const SECRET_NAME = /(KEY|TOKEN|SECRET|PASSW|CREDENTIAL|COOKIE|AUTH)/i;

function invalidArg(message: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_VALUE', message);
}

/**
 * Builds the child's environment from the parent's: the allow-list only, plus the profile's keys.
 * Throws `ERR_INVALID_ARG_VALUE` when the profile asks for a key outside its allow-list.
 */
export function childEnvironment(
  parent: NodeJS.ProcessEnv,
  profileEnv: Readonly<Record<string, string>>,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(parent)) {
    if (value !== undefined && INHERITED_ENV.test(name) && !SECRET_NAME.test(name)) env[name] = value;
  }
  for (const [name, value] of Object.entries(profileEnv)) {
    if (!PROFILE_ENV.test(name) || SECRET_NAME.test(name))
      throw invalidArg(`profile environment key ${name} is not allowed`);
    env[name] = value;
  }
  return env;
}

const MAX_SOCKET_PATH = 100; // sun_path is 108 bytes on Linux, 104 on macOS; keep a margin.
const SOCKET_NAME = 'rt.sock';
/** O_ACCMODE as /proc/self/fdinfo prints the flags (octal). */
const ACCESS_MODE_MASK = 0o3;

/**
 * The per-user folder for run directories when the data dir's path is too long for a socket:
 * `$XDG_RUNTIME_DIR/companion` when that is a private folder of ours, else `<tmp>/companion-<uid>`
 * (0700, ours). When that name is taken by someone else, a fresh `<tmp>/companion-<uid>-XXXXXX`: another
 * user can neither share nor block it (issue 16 item 5).
 */
export function fallbackRunBase(env: NodeJS.ProcessEnv = process.env): string {
  const uid = process.getuid?.() ?? 0;
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg !== undefined && isAbsolute(xdg)) {
    try {
      const stats = lstatSync(xdg);
      if (stats.isDirectory() && stats.uid === uid && (stats.mode & 0o077) === 0) {
        const base = join(xdg, 'companion');
        ensurePrivateDirSync(base, 'ERR_SPAWN_FAILED');
        return base;
      }
    } catch {
      // Not usable: fall through to the temp folder.
    }
  }
  const named = join(tmpdir(), `companion-${uid}`);
  try {
    ensurePrivateDirSync(named, 'ERR_SPAWN_FAILED');
    return named;
  } catch {
    // Another user holds the name (or planted a link): a fresh, unguessable folder of our own.
    return mkdtempSync(join(tmpdir(), `companion-${uid}-`));
  }
}

function makeRunDir(base: string): string {
  ensurePrivateDirSync(base, 'ERR_SPAWN_FAILED');
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
  // Why: kill(-0) would signal the companion's own process group.
  if (!Number.isInteger(pid) || pid <= 1) return;
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

/** A listening socket the parent bound: its descriptor, the address to reach it, and its release. */
interface Listener {
  readonly fd: number;
  readonly address: RuntimeAddress;
  readonly key: Secret | null;
  /** Closes the parent's copy (the child keeps its own). */
  release(): Promise<void>;
}

function descriptorOf(server: Server): number {
  // Node exposes no public accessor for a listening socket's descriptor; `_handle.fd` is it on POSIX.
  const fd = (server as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0)
    throw new CompanionError('ERR_BIND_FAILED', 'the runtime socket has no descriptor');
  return fd;
}

function listenOn(server: Server, options: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ ...options, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Binds the runtime's listening socket in the parent (issue 16 item 4). A Unix socket is bound under a
 * temporary name and hard-linked to `rt.sock`: closing the parent's copy unlinks only the temporary name
 * (libuv unlinks a pipe server's bound path on close), and `rt.sock` stays, owned by the parent, in a
 * 0700 folder the sandbox never shows.
 */
async function bindListener(bind: 'unix' | 'tcp', runDir: string): Promise<Listener> {
  // No connection handler: nothing connects before the child holds its copy and this one is closed.
  const server = createServer();
  const release = (): Promise<void> => new Promise((resolve) => server.close(() => resolve()));
  try {
    if (bind === 'unix') {
      const path = join(runDir, SOCKET_NAME);
      const temp = join(runDir, `bind-${randomBytes(6).toString('hex')}.sock`);
      if (path.length > MAX_SOCKET_PATH || temp.length > MAX_SOCKET_PATH)
        throw new CompanionError('ERR_SPAWN_FAILED', 'the runtime socket path is too long');
      await listenOn(server, { path: temp });
      chmodSync(temp, 0o600);
      linkSync(temp, path);
      // Unlinked now (libuv's own unlink on close then finds nothing), so that the inode's change time
      // is final before it is recorded.
      unlinkSync(temp);
      return {
        fd: descriptorOf(server),
        address: { kind: 'unix', path, identity: socketIdentity(path) },
        key: null,
        release,
      };
    }
    await listenOn(server, { host: '127.0.0.1', port: 0 });
    const key = new Secret(randomBytes(32).toString('base64url'));
    const { port } = server.address() as AddressInfo;
    return { fd: descriptorOf(server), address: { kind: 'tcp', host: '127.0.0.1', port, key }, key, release };
  } catch (error) {
    await release().catch(() => undefined);
    throw error instanceof CompanionError ? error : new CompanionError('ERR_BIND_FAILED');
  }
}

/** True when descriptor `fd` of this process is open read-only (Linux; elsewhere trusted). */
function isReadOnlyDescriptor(fd: number): boolean {
  if (process.platform !== 'linux') return true;
  try {
    const match = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    return match !== null && (parseInt(match[1]!, 8) & ACCESS_MODE_MASK) === constants.O_RDONLY;
  } catch {
    return false;
  }
}

/** The model descriptor for the child: the caller's (checked read-only), or one opened here. */
function openModel(profile: RuntimeProfile, modelFd: number | undefined): { fd: number; owned: boolean } {
  if (modelFd !== undefined) {
    assertInteger(modelFd, 'options.modelFd', 0, 1 << 20);
    // Why: the runtime must never be able to write the model through the descriptor it is given.
    if (!isReadOnlyDescriptor(modelFd)) throw invalidArg('options.modelFd must be open read-only');
    return { fd: modelFd, owned: false };
  }
  if (profile.modelPath === undefined) throw invalidArg('profile.modelPath or options.modelFd is required');
  try {
    return { fd: openSync(profile.modelPath, constants.O_RDONLY | constants.O_NOFOLLOW), owned: true };
  } catch {
    throw new CompanionError('ERR_RUNTIME_MODEL_LOAD', 'the model file could not be opened');
  }
}

/** The per-spawn run folder: in `<dataDir>/run`, or the per-user fallback when a socket path would be too long. */
function prepareRunDir(options: SpawnOptions, bind: 'unix' | 'tcp'): { runBase: string; runDir: string } {
  let runBase = options.runDir ?? join(options.dataDir, 'run');
  if (bind === 'unix' && join(runBase, 'rt-XXXXXX', 'bind-XXXXXXXXXXXX.sock').length > MAX_SOCKET_PATH)
    runBase = fallbackRunBase();
  try {
    return { runBase, runDir: makeRunDir(runBase) };
  } catch (error) {
    if (error instanceof CompanionError) throw error;
    throw new CompanionError('ERR_SPAWN_FAILED', 'the runtime directory could not be made');
  }
}

function checkOptions(options: SpawnOptions): { readyTimeoutMs: number; stopGraceMs: number; bind: 'unix' | 'tcp' } {
  assertString(options.dataDir, 'options.dataDir');
  if (!isAbsolute(options.dataDir)) throw invalidArg('options.dataDir must be absolute');
  if (options.runDir !== undefined && !isAbsolute(options.runDir)) throw invalidArg('options.runDir must be absolute');
  const readyTimeoutMs = options.readyTimeoutMs ?? 120_000;
  const stopGraceMs = options.stopGraceMs ?? 5000;
  assertInteger(readyTimeoutMs, 'options.readyTimeoutMs', 1, 3_600_000);
  assertInteger(stopGraceMs, 'options.stopGraceMs', 0, 600_000);
  const bind = options.bind ?? 'unix';
  if (bind !== 'unix' && bind !== 'tcp') throw invalidArg('options.bind must be unix or tcp');
  return { readyTimeoutMs, stopGraceMs, bind };
}

/**
 * Starts a runtime and resolves once it reported ready. Rejects with a {@link CompanionError}:
 * `ERR_SPAWN_BINARY`, `ERR_SPAWN_FAILED`, `ERR_SPAWN_EXITED` (detail: exit code / signal),
 * `ERR_SPAWN_READY_TIMEOUT`, `ERR_SPAWN_HANDSHAKE`, `ERR_RUNTIME_MODEL_LOAD` or `ERR_BIND_FAILED`; a
 * TypeError `ERR_INVALID_ARG_*` for bad options (a model descriptor that is not read-only among them).
 * On rejection nothing of the child is left running.
 */
export async function spawnRuntime(profile: RuntimeProfile, options: SpawnOptions): Promise<RuntimeHandle> {
  const { readyTimeoutMs, stopGraceMs, bind } = checkOptions(options);
  checkBinary(profile.file);
  const env = childEnvironment(process.env, profile.env);
  ensurePrivateDirSync(options.dataDir, 'ERR_SPAWN_FAILED');
  options.onReclaim?.(
    await reclaimStaleRuntime(options.dataDir, { runBase: options.runDir ?? join(options.dataDir, 'run') }),
  );
  const { runDir } = prepareRunDir(options, bind);
  const removeRunDir = (): void => rmSync(runDir, { recursive: true, force: true });
  let listener: Listener;
  try {
    listener = await bindListener(bind, runDir);
  } catch (error) {
    removeRunDir();
    throw error;
  }
  let child: ChildProcess;
  try {
    child = startChild(profile, options, { env, runDir, listener });
  } catch (error) {
    await listener.release();
    removeRunDir();
    throw error;
  }
  const handle = handshake(child, {
    options,
    readyTimeoutMs,
    stopGraceMs,
    runDir,
    address: listener.address,
    removeRunDir,
  });
  await listener.release();
  return handle;
}

/**
 * Opens the model, wraps the command, launches it and writes its start line. A model descriptor opened
 * here is closed before returning (the child holds its own copy).
 */
function startChild(
  profile: RuntimeProfile,
  options: SpawnOptions,
  place: { env: Record<string, string>; runDir: string; listener: Listener },
): ChildProcess {
  const { env, runDir, listener } = place;
  const model = openModel(profile, options.modelFd);
  let child: ChildProcess;
  let start: StartLine;
  try {
    const command = wrapCommand(profile, options.wrap);
    start = startLine(profile, command, listener);
    child = launch(command, env, runDir, model.fd, listener.fd);
  } finally {
    // The child has its own copies; ours are not needed any more.
    if (model.owned) closeSync(model.fd);
  }
  child.stdin?.on('error', () => undefined);
  child.stdin?.write(`${JSON.stringify(start)}\n`);
  return child;
}

/** The profile's command, through the sandbox hook when there is one (its binary checked again). */
function wrapCommand(profile: RuntimeProfile, wrap: SpawnWrap | undefined): WrappedCommand {
  const command: SpawnCommand = { file: profile.file, args: [...profile.args] };
  if (wrap === undefined) return command;
  const wrapped = wrap(command, {
    readOnlyPaths: profile.readOnlyPaths,
    modelFd: MODEL_FD,
    gpu: profile.settings.gpu === 'auto' ? 'auto' : 'off',
  });
  checkBinary(wrapped.file);
  return wrapped;
}

/** The one line the child reads on stdin: its settings, where the model and the socket are, the TCP key. */
function startLine(profile: RuntimeProfile, command: WrappedCommand, listener: Listener): StartLine {
  const model: StartModel = command.modelPath === undefined ? { fd: MODEL_FD } : { path: command.modelPath };
  return {
    ...profile.settings,
    v: 1,
    model,
    listen: { fd: LISTEN_FD, kind: listener.address.kind },
    ...(listener.key === null ? {} : { key: listener.key.reveal() }),
  };
}

/**
 * Spawns the (wrapped) command with exactly stdin, stdout, stderr, the model (3) and the listener (4).
 * Synchronous up to exec: nothing else of ours runs between the descriptor sweep and the fork.
 */
function launch(
  command: SpawnCommand,
  env: Record<string, string>,
  runDir: string,
  modelFd: number,
  listenFd: number,
): ChildProcess {
  // Why: a descriptor the companion inherited without close-on-exec would reach the runtime (P-i).
  closeInheritedDescriptors(new Set([modelFd, listenFd]));
  // The child inherits umask 077: whatever it creates is private.
  let previousUmask: number | undefined;
  try {
    previousUmask = process.umask(0o077);
  } catch {
    // Worker threads may not change the umask.
  }
  try {
    return spawn(command.file, [...command.args], {
      shell: false,
      detached: true,
      env,
      cwd: runDir,
      stdio: ['pipe', 'pipe', 'pipe', modelFd, listenFd],
      windowsHide: true,
    });
  } catch {
    throw new CompanionError('ERR_SPAWN_FAILED');
  } finally {
    if (previousUmask !== undefined) process.umask(previousUmask);
  }
}

interface HandshakeContext {
  readonly options: SpawnOptions;
  readonly readyTimeoutMs: number;
  readonly stopGraceMs: number;
  readonly runDir: string;
  readonly address: RuntimeAddress;
  readonly removeRunDir: () => void;
}

/** How a child ended: its exit code or the signal that ended it. */
interface ExitStatus {
  readonly code: number | null;
  readonly signal: string | null;
}

/** Waits for the child's `ready` (or `error`, exit, timeout) and builds the handle. */
function handshake(child: ChildProcess, context: HandshakeContext): Promise<RuntimeHandle> {
  return new RuntimeProcess(child, context).handshake();
}

/**
 * One started child, from its first protocol line to its exit. The start settles once (`outcome`): ready,
 * or failed by the child's error line and exit, its exit alone, or the ready timeout. Whatever way it
 * ends, the exit sweeps the group, clears the state file and removes the run folder.
 */
class RuntimeProcess {
  private outcome: 'pending' | 'ready' | 'failed' = 'pending';
  /** Set once the exit is ours (stop, or an abandoned start): `onExit` reports it as expected. */
  private stopping = false;
  private exitStatus: ExitStatus | null = null;
  /** The code of the child's `error` line; the exit that follows rejects with it. */
  private reportedError: ErrorCode | null = null;
  private readyTimer: NodeJS.Timeout | undefined;
  private stopPromise: Promise<{ forced: boolean }> | null = null;
  private resolveExited: (status: ExitStatus) => void = () => undefined;
  private resolveHandle: (handle: RuntimeHandle) => void = () => undefined;
  private rejectHandle: (error: CompanionError) => void = () => undefined;
  private readonly exited: Promise<ExitStatus>;
  private readonly child: ChildProcess;
  private readonly context: HandshakeContext;
  /** Known synchronously after spawn() (the 'spawn' event may already have fired). */
  private readonly pid: number;

  constructor(child: ChildProcess, context: HandshakeContext) {
    this.child = child;
    this.context = context;
    this.pid = child.pid ?? 0;
    this.exited = new Promise<ExitStatus>((resolve) => {
      this.resolveExited = resolve;
    });
  }

  /** Wires the child's events, stdout (protocol lines) and stderr, and arms the ready timeout. */
  handshake(): Promise<RuntimeHandle> {
    const settled = new Promise<RuntimeHandle>((resolve, reject) => {
      this.resolveHandle = resolve;
      this.rejectHandle = reject;
    });
    this.child.on('error', () => this.onSpawnError());
    if (this.pid > 0) this.record();
    this.child.on('exit', (code, signal) => this.onExit({ code, signal }));
    this.readyTimer = setTimeout(
      () => this.abandon(new CompanionError('ERR_SPAWN_READY_TIMEOUT')),
      this.context.readyTimeoutMs,
    );
    if (this.child.stdout !== null) onLines(this.child.stdout, (line) => this.onProtocolLine(line));
    const { onStderr } = this.context.options;
    if (this.child.stderr !== null) onLines(this.child.stderr, (line) => onStderr?.(line));
    return settled;
  }

  /** The state file for the next start's reclaim; best effort (the runtime also exits when we die). */
  private record(): void {
    try {
      recordRuntimeState(this.context.options.dataDir, this.pid, this.context.runDir);
    } catch {
      // Not recorded: reclaim falls back to the runtime's own parent-death exit.
    }
  }

  /** spawn failed (ENOENT, EACCES...): no 'exit' follows when there is no pid. */
  private onSpawnError(): void {
    if (this.child.pid !== undefined) return;
    this.context.removeRunDir();
    this.outcome = 'failed';
    clearTimeout(this.readyTimer);
    this.rejectHandle(new CompanionError('ERR_SPAWN_FAILED'));
  }

  /** Ends a start that did not become ready: kills the group, rejects once it is really gone. */
  private abandon(error: CompanionError): void {
    if (this.outcome !== 'pending') return;
    this.outcome = 'failed';
    clearTimeout(this.readyTimer);
    this.stopping = true;
    if (this.exitStatus === null && this.pid > 0) killGroup(this.pid, 'SIGKILL');
    // Reject once the child is really gone: a rejected start leaves nothing running.
    void this.exited.then(() => this.rejectHandle(error));
  }

  /** One stdout line: `ready` settles the start, `error` names the code the exit rejects with. */
  private onProtocolLine(line: string): void {
    if (this.outcome !== 'pending') return;
    const event = parseEvent(line);
    if (event === null) return;
    if (event.event === 'ready') {
      this.becomeReady(readyBackend(event), shapeOf(event));
      return;
    }
    const code = (CHILD_ERROR_CODES as readonly string[]).includes(event.code) ? event.code : 'ERR_SPAWN_FAILED';
    // ERR_USAGE / ERR_INTERNAL from the child are our bug, not the user's command line.
    this.reportedError = code === 'ERR_USAGE' || code === 'ERR_INTERNAL' ? 'ERR_SPAWN_FAILED' : (code as ErrorCode);
    // The child exits next; 'exit' rejects with this code.
  }

  private becomeReady(backend: RuntimeBackend | null, shape: RuntimeShape | null): void {
    this.outcome = 'ready';
    clearTimeout(this.readyTimer);
    // Again now that the child is settled: a wrapper that execs is recorded as what it became.
    this.record();
    const { address, runDir } = this.context;
    this.resolveHandle({
      pid: this.pid,
      address,
      runDir,
      stop: (graceMs) => this.stop(graceMs),
      exited: this.exited,
      shape,
      healthCheck: (timeoutMs) => this.healthCheck(timeoutMs),
      backend,
    });
  }

  private onExit(status: ExitStatus): void {
    this.exitStatus = status;
    clearTimeout(this.readyTimer);
    this.cleanUpAfterExit();
    this.resolveExited(status);
    if (this.outcome === 'pending') {
      this.outcome = 'failed';
      const detail = { exitCode: status.code ?? -1, signal: status.signal ?? '' };
      this.rejectHandle(new CompanionError(this.reportedError ?? 'ERR_SPAWN_EXITED', undefined, { detail }));
      return;
    }
    if (this.outcome === 'ready') this.context.options.onExit?.({ ...status, expected: this.stopping });
  }

  /** After the exit: sweep the group, clear the state file, remove the run folder, drop stdin. */
  private cleanUpAfterExit(): void {
    const { pid } = this;
    // Sweep what is left of the group (forks, helpers); the number is pinned while members remain.
    if (pid > 0 && groupHasMembers(pid)) killGroup(pid, 'SIGKILL');
    if (pid > 0) {
      try {
        clearRuntimeState(this.context.options.dataDir, pid);
      } catch {
        // Nothing to clear.
      }
    }
    this.context.removeRunDir();
    this.child.stdin?.destroy();
  }

  /** SIGTERM to the group, SIGKILL after `graceMs`. Idempotent: every call gets the first call's result. */
  private stop(graceMs: number = this.context.stopGraceMs): Promise<{ forced: boolean }> {
    this.stopPromise ??= this.terminate(graceMs);
    return this.stopPromise;
  }

  private async terminate(graceMs: number): Promise<{ forced: boolean }> {
    this.stopping = true;
    if (this.exitStatus !== null) return { forced: false };
    killGroup(this.pid, 'SIGTERM');
    if (await this.exitsWithin(graceMs)) return { forced: false };
    killGroup(this.pid, 'SIGKILL');
    await this.exited;
    return { forced: true };
  }

  /** True when the child exits within `ms`. */
  private async exitsWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), ms);
      }),
    ]);
    clearTimeout(timer);
    return !timedOut;
  }

  private async healthCheck(timeoutMs = 2000): Promise<boolean> {
    if (this.exitStatus !== null) return false;
    const result = await checkHealth(this.context.address, timeoutMs);
    return result.ok && this.exitStatus === null;
  }
}
