/**
 * The resource probe (CONTRACT D5.6, threat P-j): what the runtime costs — RSS and CPU of the runtime's
 * own process group, and aggregate per-GPU memory — read without privilege and without looking at any
 * other process. It produces figures only; the decision (ok / degraded / refuse start) is the pure core
 * `src/core/resources.ts`.
 *
 * - Linux: `/proc` files of the group's own members, found by walking down from the leader
 *   (`probe-linux.ts`). macOS: one `ps -g` call (`probe-darwin.ts`). Windows: one PowerShell CIM walk of
 *   the root's tree (`probe-win32.ts`). VRAM: one `nvidia-smi --query-gpu` call (`probe-vram.ts`);
 *   Apple silicon reports unified memory.
 * - Results are cached for at most `cacheMs` (≤ 500 ms) on the injected clock; concurrent callers share
 *   one in-flight probe; a failed probe is not cached.
 * - Nothing is written, nothing is elevated, every command is an argv array with a timeout, a fixed
 *   environment and no shell.
 *
 * See docs/probe.md for the exact files and commands.
 */
import { execFile as nodeExecFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { delimiter } from 'node:path';
import {
  CompanionError,
  assertFunction,
  assertInteger,
  assertObject,
  assertString,
  isCompanionError,
} from '../core/errors.js';
import { LINUX_DEFAULTS, parseAuxv, sampleLinuxGroup } from './probe-linux.js';
import { DARWIN_PS, darwinPsArgs, darwinPsEnv, parseDarwinPs } from './probe-darwin.js';
import { parseWin32Output, win32Args, win32Env, win32PowerShellPath } from './probe-win32.js';
import { NVIDIA_SMI_ARGS, findOnPath, parseNvidiaSmiCsv, type GpuMemory } from './probe-vram.js';
import type { GroupSample } from './probe-sample.js';

/** What one probe reports. Frozen: callers that share a cached result cannot change it for each other. */
export interface ResourceFigures {
  /** When the sample was taken, on the probe's clock (ms). */
  readonly at: number;
  /** Resident set of all the group's live processes, bytes. */
  readonly rssBytes: number;
  /**
   * CPU use of the group over the interval since the previous sample of this probe, in percent of one
   * core (2 cores fully busy = 200), rounded to 0.01; `null` on the first sample.
   */
  readonly cpuPercent: number | null;
  /** How many live processes the group has. No pids or names are exposed. */
  readonly processes: number;
  /** Aggregate memory per GPU; `null` when there is no tool or GPU to ask (not an error). */
  readonly vram: {
    readonly gpus: ReadonlyArray<GpuMemory>;
    /** True on Apple silicon: the GPU shares system memory, so `rssBytes` already covers it. */
    readonly unifiedMemory: boolean;
  } | null;
}

/** One file, directory or command the probe touched (for the P-j tests and for audit). */
export interface ProbeAccess {
  readonly kind: 'read' | 'list' | 'exec';
  /** A path, or for `exec` the file and its arguments joined by single spaces. */
  readonly target: string;
}

/** What the probe passes to `execFile`. An injected runner may ignore `env` and `signal`. */
export interface ProbeExecOptions {
  readonly timeoutMs: number;
  /** The complete environment of the child (nothing of the parent's beyond it). */
  readonly env: Readonly<Record<string, string>>;
  /** Aborted by `close()`. */
  readonly signal: AbortSignal;
}

export interface ResourceProbeOptions {
  /** The runtime's process group (= its pid: it is spawned detached). */
  readonly pgid: number;
  /** The clock for `at`, the cache bound and the CPU interval (ms). Default: monotonic, epoch-based. */
  readonly now?: () => number;
  /** How long a result is reused, ms, 0–500. Default 500. */
  readonly cacheMs?: number;
  /** Reads a file as text (Linux). Default: `fs.readFileSync(path, 'latin1')` (see below). Rejects with the fs error. */
  readonly readFile?: (path: string) => Promise<string>;
  /** Lists a directory (Linux). Default: `fs.readdirSync`. */
  readonly listDir?: (path: string) => Promise<string[]>;
  /**
   * Runs a program without a shell. Resolves with its stdout when it exits 0; otherwise rejects, with
   * `code` (the exit status, a number) and `stdout` on the error when there are any.
   */
  readonly execFile?: (file: string, args: string[], opts: ProbeExecOptions) => Promise<{ stdout: string }>;
  /** Default `process.platform`. Supported: linux, darwin, win32. */
  readonly platform?: NodeJS.Platform;
  /** Default `process.arch` (`arm64` on darwin means Apple silicon). */
  readonly arch?: string;
  /** Finds a program on PATH (absolute entries only). Default: a lookup in `process.env.PATH`. */
  readonly findExecutable?: (name: string) => Promise<string | null>;
  /** Called before every read, listing and command, with what is touched. */
  readonly recorder?: (access: ProbeAccess) => void;
}

export interface ResourceProbe {
  /**
   * The current figures, or the cached ones when younger than `cacheMs`.
   * @throws CompanionError ERR_RUNTIME_GONE when the group's leader is gone (or its pid now names
   *   another process); ERR_PROBE_FAILED when the figures cannot be read (treat as doubt), or after close.
   */
  probe(): Promise<ResourceFigures>;
  /** Drops the cache and aborts running commands; later calls reject with ERR_PROBE_FAILED. */
  close(): void;
}

/** Upper bound of the cache (D5.6). */
export const MAX_CACHE_MS = 500;
/** Timeout of `ps` and `nvidia-smi`. */
export const EXEC_TIMEOUT_MS = 2000;
/** Timeout of the PowerShell walk (PowerShell alone takes ~0.5 s to start on a cold machine). */
export const POWERSHELL_TIMEOUT_MS = 5000;
/** Largest pgid accepted (Windows pids are 32-bit). */
const MAX_PGID = 0xffff_ffff;

function failed(step: string): CompanionError {
  return new CompanionError('ERR_PROBE_FAILED', undefined, { detail: { step } });
}

function gone(): CompanionError {
  return new CompanionError('ERR_RUNTIME_GONE');
}

function defaultNow(): number {
  // Monotonic (a wall-clock step cannot fake a CPU interval) and close to Date.now() for display.
  return performance.timeOrigin + performance.now();
}

// Why synchronous: procfs files are generated in memory by the kernel and never wait on a disk; a read
// costs ~10 µs here, while a thread-pool round trip (fs/promises) costs ~80 µs per file (measured), and a
// probe reads ~20 files. stat, statm, task/ and children take no lock that a stuck process can hold (unlike
// cmdline, environ or maps, which the probe never reads). Errors surface as a rejected promise.
function defaultReadFile(path: string): Promise<string> {
  try {
    return Promise.resolve(readFileSync(path, 'latin1'));
  } catch (error) {
    return Promise.reject(error);
  }
}

function defaultListDir(path: string): Promise<string[]> {
  try {
    return Promise.resolve(readdirSync(path));
  } catch (error) {
    return Promise.reject(error);
  }
}

function defaultExecFile(file: string, args: string[], opts: ProbeExecOptions): Promise<{ stdout: string }> {
  return new Promise((resolve, reject) => {
    nodeExecFile(
      file,
      args,
      {
        timeout: opts.timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 1 << 20,
        env: { ...opts.env },
        windowsHide: true,
        encoding: 'utf8',
        signal: opts.signal,
        shell: false,
      },
      (error, stdout) => {
        if (error === null) {
          resolve({ stdout });
          return;
        }
        // Only the exit status and stdout travel on: the error's message holds the command line.
        const status = typeof error.code === 'number' ? error.code : undefined;
        reject(Object.assign(new Error('command failed'), { code: status, stdout }));
      },
    );
  });
}

function exitStatus(error: unknown): { code: unknown; stdout: string } {
  const record = (typeof error === 'object' && error !== null ? error : {}) as { code?: unknown; stdout?: unknown };
  return { code: record.code, stdout: typeof record.stdout === 'string' ? record.stdout : '' };
}

function freeze(figures: ResourceFigures): ResourceFigures {
  if (figures.vram !== null) {
    for (const gpu of figures.vram.gpus) Object.freeze(gpu);
    Object.freeze(figures.vram.gpus);
    Object.freeze(figures.vram);
  }
  return Object.freeze(figures);
}

/**
 * Creates the resource probe of one runtime process group. Its `probe()` rejects with ERR_RUNTIME_GONE or
 * ERR_PROBE_FAILED (see {@link ResourceProbe}).
 * @throws TypeError ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE on a bad option (pgid not an integer
 *   ≥ 2, cacheMs outside 0–500, a hook that is not a function).
 */
export function createResourceProbe(options: ResourceProbeOptions): ResourceProbe {
  const group = new GroupProbe(probeSettings(options));
  return {
    probe: (): Promise<ResourceFigures> => group.probe(),
    close: (): void => group.close(),
  };
}

/** The probe's file and command access, each reported to the recorder first. */
interface ProbeIo {
  readFile(path: string): Promise<string>;
  listDir(path: string): Promise<string[]>;
  exec(file: string, args: string[], timeoutMs: number, env: Record<string, string>): Promise<{ stdout: string }>;
}

/** The checked options with their defaults. */
interface ProbeSettings {
  readonly pgid: number;
  readonly cacheMs: number;
  readonly platform: string;
  readonly arch: string;
  readonly now: () => number;
  readonly findExecutable: (name: string) => Promise<string | null>;
  readonly io: ProbeIo;
  /** Aborted by `close()`: ends running commands. */
  readonly abort: AbortController;
}

/** Checks the options (TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE`) and fills in defaults. */
function probeSettings(options: ResourceProbeOptions): ProbeSettings {
  assertObject(options, 'options');
  assertInteger(options.pgid, 'options.pgid', 2, MAX_PGID);
  const cacheMs = options.cacheMs ?? MAX_CACHE_MS;
  assertInteger(cacheMs, 'options.cacheMs', 0, MAX_CACHE_MS);
  for (const hook of ['now', 'readFile', 'listDir', 'execFile', 'findExecutable', 'recorder'] as const) {
    if (options[hook] !== undefined) assertFunction(options[hook], `options.${hook}`);
  }
  const platform = options.platform ?? process.platform;
  assertString(platform, 'options.platform');
  const arch = options.arch ?? process.arch;
  assertString(arch, 'options.arch');
  const abort = new AbortController();
  return {
    pgid: options.pgid,
    cacheMs,
    platform,
    arch,
    now: options.now ?? defaultNow,
    findExecutable: options.findExecutable ?? ((name: string) => findOnPath(name, process.env.PATH, delimiter)),
    io: recordedIo(options, abort.signal),
    abort,
  };
}

function recordedIo(options: ResourceProbeOptions, signal: AbortSignal): ProbeIo {
  const readFile = options.readFile ?? defaultReadFile;
  const listDir = options.listDir ?? defaultListDir;
  const execFile = options.execFile ?? defaultExecFile;
  const recorder = options.recorder;
  return {
    readFile(path: string): Promise<string> {
      recorder?.({ kind: 'read', target: path });
      return readFile(path);
    },
    listDir(path: string): Promise<string[]> {
      recorder?.({ kind: 'list', target: path });
      return listDir(path);
    },
    exec(file: string, args: string[], timeoutMs: number, env: Record<string, string>): Promise<{ stdout: string }> {
      recorder?.({ kind: 'exec', target: [file, ...args].join(' ') });
      return execFile(file, args, { timeoutMs, env, signal });
    },
  };
}

/** macOS: one `ps -g` call. ERR_RUNTIME_GONE when no member is left, ERR_PROBE_FAILED when ps fails. */
async function sampleDarwinGroup(io: ProbeIo, pgid: number): Promise<GroupSample> {
  let stdout: string;
  try {
    ({ stdout } = await io.exec(DARWIN_PS, darwinPsArgs(pgid), EXEC_TIMEOUT_MS, darwinPsEnv()));
  } catch (error) {
    const status = exitStatus(error);
    // ps exits 1 with nothing printed when no process matched: the group is gone.
    if (status.code === 1 && status.stdout.trim() === '') throw gone();
    throw failed('exec');
  }
  const sample = parseDarwinPs(stdout, pgid);
  if (sample === null) throw gone();
  return sample;
}

/** Windows: one PowerShell walk. ERR_RUNTIME_GONE when the root is gone, ERR_PROBE_FAILED when it fails. */
async function sampleWin32Group(io: ProbeIo, pgid: number): Promise<GroupSample> {
  const systemRoot = process.env.SystemRoot ?? 'C:\\Windows';
  let stdout: string;
  try {
    ({ stdout } = await io.exec(
      win32PowerShellPath(systemRoot),
      win32Args(pgid),
      POWERSHELL_TIMEOUT_MS,
      win32Env(process.env),
    ));
  } catch {
    throw failed('exec');
  }
  const sample = parseWin32Output(stdout);
  if (sample === null) throw gone();
  return sample;
}

/**
 * The state of one probe: the cache, the one probe in flight, the previous sample (for the CPU interval),
 * the leader's identity, and the per-platform facts read once.
 */
class GroupProbe {
  private cache: ResourceFigures | null = null;
  private inflight: Promise<ResourceFigures> | null = null;
  private previous: { readonly at: number; readonly cpuSeconds: number } | null = null;
  /** The leader's start time from the first sample: a pid reused later is not the runtime. */
  private leaderStart: string | undefined;
  private linuxUnits: Promise<{ pageSize: number; clockTicks: number }> | null = null;
  private nvidiaSmi: Promise<string | null> | null = null;
  private closed = false;
  private readonly settings: ProbeSettings;

  constructor(settings: ProbeSettings) {
    this.settings = settings;
  }

  /** See {@link ResourceProbe.probe}: rejects with ERR_PROBE_FAILED after close. */
  probe(): Promise<ResourceFigures> {
    if (this.closed)
      return Promise.reject(
        new CompanionError('ERR_PROBE_FAILED', 'the resource probe is closed', { detail: { step: 'closed' } }),
      );
    const { now, cacheMs } = this.settings;
    const t = now();
    const cache = this.cache;
    if (cache !== null && t >= cache.at && t - cache.at < cacheMs) return Promise.resolve(cache);
    if (this.inflight !== null) return this.inflight;
    const running = this.collect().then((figures) => {
      if (!this.closed) this.cache = figures;
      return figures;
    });
    this.inflight = running;
    const clear = (): void => {
      if (this.inflight === running) this.inflight = null;
    };
    running.then(clear, clear);
    return running;
  }

  close(): void {
    this.closed = true;
    this.cache = null;
    this.settings.abort.abort();
  }

  private async collect(): Promise<ResourceFigures> {
    const { now } = this.settings;
    const at = now();
    let group: GroupSample;
    let vram: ResourceFigures['vram'];
    try {
      [group, vram] = await Promise.all([this.sampleGroup(), this.sampleVram()]);
    } catch (error) {
      if (isCompanionError(error, 'ERR_RUNTIME_GONE', 'ERR_PROBE_FAILED')) throw error;
      // Anything else (a hook that threw): coded, without its message, which may hold a path.
      throw failed('internal');
    }
    if (this.leaderStart !== undefined && group.leaderStart !== this.leaderStart) throw gone();
    this.leaderStart = group.leaderStart;
    const cpuPercent = this.cpuPercentSince(at, group.cpuSeconds);
    this.previous = { at, cpuSeconds: group.cpuSeconds };
    return freeze({ at, rssBytes: group.rssBytes, cpuPercent, processes: group.processes, vram });
  }

  /** The group's CPU use since the previous sample, in percent of one core; null on the first sample. */
  private cpuPercentSince(at: number, cpuSeconds: number): number | null {
    const previous = this.previous;
    if (previous === null || at <= previous.at) return null;
    // A member that exited and was not reaped by a member takes its CPU time with it: never below 0.
    const percent = ((cpuSeconds - previous.cpuSeconds) / ((at - previous.at) / 1000)) * 100;
    return Math.max(0, Math.round(percent * 100) / 100);
  }

  /** The platform's group sample. ERR_PROBE_FAILED on an unsupported platform. */
  private async sampleGroup(): Promise<GroupSample> {
    const { platform, io, pgid } = this.settings;
    if (platform === 'linux') {
      const units = await this.unitsOnLinux();
      const expected = this.leaderStart === undefined ? undefined : Number(this.leaderStart);
      const sample = await sampleLinuxGroup(io, pgid, units, expected);
      return { ...sample, leaderStart: String(sample.leaderStart) };
    }
    if (platform === 'darwin') return sampleDarwinGroup(io, pgid);
    if (platform === 'win32') return sampleWin32Group(io, pgid);
    throw new CompanionError('ERR_PROBE_FAILED', 'the resource probe does not support this platform', {
      detail: { step: 'platform', platform },
    });
  }

  private unitsOnLinux(): Promise<{ pageSize: number; clockTicks: number }> {
    this.linuxUnits ??= this.settings.io.readFile('/proc/self/auxv').then(
      (text) => {
        const facts = parseAuxv(text);
        return {
          pageSize: facts.pageSize ?? LINUX_DEFAULTS.pageSize,
          clockTicks: facts.clockTicks ?? LINUX_DEFAULTS.clockTicks,
        };
      },
      () => ({ ...LINUX_DEFAULTS }),
    );
    return this.linuxUnits;
  }

  private async sampleVram(): Promise<ResourceFigures['vram']> {
    const { platform, arch, io, findExecutable } = this.settings;
    if (platform === 'darwin') return arch === 'arm64' ? { gpus: [], unifiedMemory: true } : null;
    if (platform !== 'linux' && platform !== 'win32') return null;
    this.nvidiaSmi ??= findExecutable(platform === 'win32' ? 'nvidia-smi.exe' : 'nvidia-smi').catch(() => null);
    const file = await this.nvidiaSmi;
    if (file === null) return null;
    const env = platform === 'win32' ? win32Env(process.env) : { LC_ALL: 'C', PATH: '/usr/bin:/bin' };
    try {
      const { stdout } = await io.exec(file, [...NVIDIA_SMI_ARGS], EXEC_TIMEOUT_MS, env);
      const gpus = parseNvidiaSmiCsv(stdout);
      return gpus === null ? null : { gpus, unifiedMemory: false };
    } catch {
      // No driver, no GPU, a hang: VRAM is unknown, which is not a probe failure.
      return null;
    }
  }
}
