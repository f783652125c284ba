/**
 * Runtime profiles: how to start a runtime child (D5.4). A profile is a value: an absolute binary, an argv
 * builder for the bind target that `spawnRuntime` decides, the extra environment keys it needs, and how
 * the child tells its address. Two profiles exist:
 *
 * - {@link bundledProfile}: `process.execPath` + the compiled `dist/src/runtime-server/main.js` (node-llama-cpp).
 * - {@link llamaServerProfile}: an external llama.cpp `llama-server` binary at an absolute path
 *   (argv per https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md).
 *
 * Secrets never go on argv: the bundled runtime reads its loopback-TCP key from stdin; llama-server gets
 * `--api-key-file` naming a 0600 file in the 0700 run directory (removed once the server is ready), never
 * `--api-key` and never the `LLAMA_API_KEY` environment variable.
 */
import { fileURLToPath } from 'node:url';
import { dirname, isAbsolute, resolve } from 'node:path';
import { assertInteger, assertOneOf, assertString, CompanionError } from '../core/errors.js';

/** The bind target `spawnRuntime` chose for one start. */
export type BindTarget =
  | { readonly kind: 'unix'; readonly path: string }
  /** `keyFile` is set when the profile takes its key from a file (llama-server). */
  | { readonly kind: 'tcp'; readonly keyFile?: string };

/** The program to execute: an absolute file and its argv (without argv[0]). */
export interface SpawnCommand {
  readonly file: string;
  readonly args: readonly string[];
}

export interface RuntimeProfile {
  readonly kind: 'bundled' | 'llama-server' | 'custom';
  /** Absolute path of the binary to execute. */
  readonly file: string;
  /** Absolute path of the model (a sandbox binds it read-only). */
  readonly modelPath: string;
  /** Runtime-specific environment (thread/GPU selection only; names checked by `spawnRuntime`). */
  readonly env: Readonly<Record<string, string>>;
  /**
   * How the child reports its address: `ready-line` = one JSON line on stdout (protocol.ts);
   * `llama-server-log` = llama-server's "server is listening on …" log line, then `/health` turns 200.
   */
  readonly handshake: 'ready-line' | 'llama-server-log';
  /** How the loopback-TCP key reaches the child: one line on stdin, or a 0600 file named on argv. */
  readonly keyDelivery: 'stdin' | 'file';
  /** Paths the child needs to read (binary, code, model): what a sandbox exposes read-only. */
  readonly readOnlyPaths: readonly string[];
  /**
   * How the model reaches the child: `fd` = the spawn adapter opens it and hands it over as descriptor
   * {@link MODEL_FD} (its path never appears on argv, and a sandbox need not show the file); `argv` = the
   * path on the command line (external binaries).
   */
  readonly modelDelivery: 'fd' | 'argv';
  /** The argv (without argv[0]) for a bind target. */
  args(target: BindTarget): string[];
}

/** The descriptor number the model is handed over on (`modelDelivery: 'fd'`). */
export const MODEL_FD = 3;

/** Absolute path of the compiled bundled runtime entry, resolved from this module's own location. */
export function bundledEntryPath(): string {
  // dist/src/runtime/runtime-profile.js → dist/src/runtime-server/main.js
  return fileURLToPath(new URL('../runtime-server/main.js', import.meta.url));
}

/** The package root (the folder holding dist/ and node_modules/). */
function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

function invalidValue(message: string): TypeError {
  const error = new TypeError(message) as TypeError & { code: string };
  error.code = 'ERR_INVALID_ARG_VALUE';
  return error;
}

function assertAbsolute(value: unknown, name: string): asserts value is string {
  assertString(value, name);
  if (!isAbsolute(value)) throw invalidValue(`${name} must be an absolute path`);
}

export interface BundledProfileOptions {
  /** Absolute path of the (verified) GGUF model. */
  readonly modelPath: string;
  /** Context size in tokens (default 2048). */
  readonly contextSize?: number;
  /** CPU threads (default: the runtime uses the physical core count). Tests use 1. */
  readonly threads?: number;
  /** GPU use (default off). */
  readonly gpu?: 'off' | 'auto';
  /** Sequences generating at once (default 1; further requests queue inside the runtime). */
  readonly parallel?: number;
  /** Model id reported by /v1/models (default "local"). */
  readonly modelId?: string;
  /** How long SIGTERM lets in-flight generations finish before cancelling them (default 1000 ms). */
  readonly shutdownGraceMs?: number;
}

/**
 * The bundled runtime: Node itself (`process.execPath`) running the compiled runtime-server entry.
 * Throws `ERR_INVALID_ARG_*` on a bad option.
 */
export function bundledProfile(options: BundledProfileOptions): RuntimeProfile {
  assertAbsolute(options.modelPath, 'modelPath');
  if (options.contextSize !== undefined) assertInteger(options.contextSize, 'contextSize', 64, 1 << 20);
  if (options.threads !== undefined) assertInteger(options.threads, 'threads', 1, 1024);
  if (options.gpu !== undefined) assertOneOf(options.gpu, 'gpu', ['off', 'auto']);
  if (options.parallel !== undefined) assertInteger(options.parallel, 'parallel', 1, 64);
  if (options.shutdownGraceMs !== undefined) assertInteger(options.shutdownGraceMs, 'shutdownGraceMs', 0, 600_000);
  if (options.modelId !== undefined) {
    assertString(options.modelId, 'modelId');
    if (!/^[A-Za-z0-9._:/-]{1,128}$/.test(options.modelId)) throw invalidValue('modelId must match [A-Za-z0-9._:/-]{1,128}');
  }
  const entry = bundledEntryPath();
  // The model arrives as an inherited descriptor: its path is never on argv (P-f).
  const settings: string[] = ['--model-fd', String(MODEL_FD)];
  if (options.contextSize !== undefined) settings.push('--context', String(options.contextSize));
  if (options.threads !== undefined) settings.push('--threads', String(options.threads));
  settings.push('--gpu', options.gpu ?? 'off');
  if (options.parallel !== undefined) settings.push('--parallel', String(options.parallel));
  if (options.modelId !== undefined) settings.push('--model-id', options.modelId);
  if (options.shutdownGraceMs !== undefined) settings.push('--shutdown-grace-ms', String(options.shutdownGraceMs));
  return {
    kind: 'bundled',
    file: process.execPath,
    modelPath: options.modelPath,
    env: {},
    handshake: 'ready-line',
    keyDelivery: 'stdin',
    readOnlyPaths: [process.execPath, packageRoot()],
    modelDelivery: 'fd',
    args(target) {
      const bind = target.kind === 'unix' ? ['--socket', target.path] : ['--tcp'];
      return [entry, ...settings, ...bind];
    },
  };
}

export interface LlamaServerProfileOptions {
  /** Absolute path of the `llama-server` binary. */
  readonly binary: string;
  /** Absolute path of the (verified) GGUF model. */
  readonly modelPath: string;
  /** `-c`: context size (default: the model's). */
  readonly contextSize?: number;
  /** `-t`: CPU threads (default: llama-server's own). */
  readonly threads?: number;
  /** `-ngl`: layers on the GPU (default 0: CPU only). */
  readonly gpuLayers?: number;
  /** `-np`: parallel slots (default: llama-server's own). */
  readonly parallel?: number;
  /**
   * Further llama-server flags (e.g. `--no-webui`). Flags that carry a key or choose the address are
   * refused: this profile owns them.
   */
  readonly extraArgs?: readonly string[];
}

/** Flags the llama-server profile never lets through `extraArgs`. */
const OWNED_FLAGS = new Set(['--api-key', '--api-key-file', '--host', '--port', '-m', '--model', '--reuse-port', '--ssl-key-file', '--ssl-cert-file', '-hf', '-hfr', '--hf-repo', '-hft', '--hf-token', '-mu', '--model-url']);

/**
 * An external llama.cpp `llama-server` at an absolute path. Binds `--host /run/dir/rt.sock` (its Unix
 * socket form: a host ending in `.sock`) or `--host 127.0.0.1 --port 0` (it then logs the real port).
 * Throws `ERR_INVALID_ARG_*` on a bad option, including any `extraArgs` flag that the profile owns
 * (`ERR_SPAWN_FAILED` from `args()` for a socket path that does not end in `.sock`).
 */
export function llamaServerProfile(options: LlamaServerProfileOptions): RuntimeProfile {
  assertAbsolute(options.binary, 'binary');
  assertAbsolute(options.modelPath, 'modelPath');
  if (options.contextSize !== undefined) assertInteger(options.contextSize, 'contextSize', 64, 1 << 22);
  if (options.threads !== undefined) assertInteger(options.threads, 'threads', 1, 1024);
  if (options.gpuLayers !== undefined) assertInteger(options.gpuLayers, 'gpuLayers', 0, 100_000);
  if (options.parallel !== undefined) assertInteger(options.parallel, 'parallel', 1, 256);
  const extra = [...(options.extraArgs ?? [])];
  for (const arg of extra) {
    assertString(arg, 'extraArgs[]');
    const flag = arg.split('=')[0]!;
    if (OWNED_FLAGS.has(flag)) throw invalidValue(`extraArgs may not hold ${flag}: the profile sets it`);
  }
  const settings: string[] = ['-m', options.modelPath];
  if (options.contextSize !== undefined) settings.push('-c', String(options.contextSize));
  if (options.threads !== undefined) settings.push('-t', String(options.threads));
  settings.push('-ngl', String(options.gpuLayers ?? 0));
  if (options.parallel !== undefined) settings.push('-np', String(options.parallel));
  return {
    kind: 'llama-server',
    file: options.binary,
    modelPath: options.modelPath,
    env: {},
    handshake: 'llama-server-log',
    keyDelivery: 'file',
    readOnlyPaths: [options.binary, options.modelPath],
    modelDelivery: 'argv',
    args(target) {
      if (target.kind === 'unix') {
        if (!target.path.endsWith('.sock')) throw new CompanionError('ERR_SPAWN_FAILED', 'llama-server needs a socket path ending in .sock');
        return [...settings, '--host', target.path, ...extra];
      }
      const key = target.keyFile === undefined ? [] : ['--api-key-file', target.keyFile];
      return [...settings, '--host', '127.0.0.1', '--port', '0', ...key, ...extra];
    },
  };
}
