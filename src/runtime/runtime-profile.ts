/**
 * Runtime profiles: how to start a runtime child (D5.4). A profile is a value: an absolute binary, a fixed
 * argv, the extra environment keys it needs, and the settings the child reads from its stdin.
 *
 * Nothing that says where the model or the sockets are travels on argv (world-readable in
 * /proc/<pid>/cmdline; issue 16 item 6): the bundled runtime's argv is `node main.js`, and everything
 * else — the settings, the model's descriptor (or the path where a sandbox shows it), the listening
 * descriptor, the loopback-TCP key — is one JSON line the parent writes to the child's stdin
 * (src/runtime-server/protocol.ts).
 *
 * Only the bundled runtime exists. An external `llama-server` was supported in the first wave; it binds
 * its own socket in a folder it can write and takes the model by path on argv, so it cannot meet P-i/P-k
 * as they now stand (docs/decisions.md, "One runtime: the bundled one").
 */
import { fileURLToPath } from 'node:url';
import { dirname, isAbsolute, resolve } from 'node:path';
import { assertInteger, assertOneOf, assertString, CodedTypeError } from '../core/errors.js';

/** The descriptor the model is handed over on. */
export const MODEL_FD = 3;
/** The descriptor of the listening socket the parent bound for the runtime. */
export const LISTEN_FD = 4;
/** Where the bubblewrap sandbox shows the model, read-only (`--ro-bind-fd 3`). */
export const SANDBOX_MODEL_PATH = '/run/companion/model.gguf';

/** The program to execute: an absolute file and its argv (without argv[0]). */
export interface SpawnCommand {
  readonly file: string;
  readonly args: readonly string[];
}

/** Runtime settings: plain, non-secret values sent to the child on stdin. */
export type RuntimeSettings = Readonly<Record<string, string | number>>;

export interface RuntimeProfile {
  readonly kind: 'bundled' | 'custom';
  /** Absolute path of the binary to execute. */
  readonly file: string;
  /** The whole argv (without argv[0]): fixed, never a path of the model or the sockets, never a key. */
  readonly args: readonly string[];
  /** Runtime-specific environment (thread/GPU selection only; names checked by `spawnRuntime`). */
  readonly env: Readonly<Record<string, string>>;
  /** Paths the child needs to read (binary, code): what a sandbox exposes read-only. */
  readonly readOnlyPaths: readonly string[];
  /**
   * The model file, opened by `spawnRuntime` (O_RDONLY | O_NOFOLLOW) when its caller hands over no
   * descriptor of its own. The supervisor always hands over the descriptor it verified.
   */
  readonly modelPath?: string;
  /** Settings for the child (context, threads, …), sent on stdin with the model and listener. */
  readonly settings: RuntimeSettings;
}

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
  return new CodedTypeError('ERR_INVALID_ARG_VALUE', message);
}

export interface BundledProfileOptions {
  /** Absolute path of the model, for a caller that does not hand `spawnRuntime` a descriptor. */
  readonly modelPath?: string;
  /** Context size per sequence in tokens (default: the runtime's choice, src/runtime-server/sizing.ts). */
  readonly contextSize?: number;
  /** CPU threads (default: the runtime uses the physical core count). Tests use 1. */
  readonly threads?: number;
  /** GPU use (default auto: node-llama-cpp picks CUDA, Vulkan or Metal and falls back to the CPU). */
  readonly gpu?: 'off' | 'auto';
  /** Sequences generating at once (default: the runtime's choice, at most 4; further requests queue). */
  readonly parallel?: number;
  /** Memory the runtime may use in all, bytes: caps the default sequences and context. */
  readonly memoryBytes?: number;
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
  if (options.modelPath !== undefined) {
    assertString(options.modelPath, 'modelPath');
    if (!isAbsolute(options.modelPath)) throw invalidValue('modelPath must be an absolute path');
  }
  const settings: Record<string, string | number> = {};
  if (options.contextSize !== undefined) {
    assertInteger(options.contextSize, 'contextSize', 64, 1 << 20);
    settings.contextSize = options.contextSize;
  }
  if (options.threads !== undefined) {
    assertInteger(options.threads, 'threads', 1, 1024);
    settings.threads = options.threads;
  }
  if (options.gpu !== undefined) assertOneOf(options.gpu, 'gpu', ['off', 'auto']);
  settings.gpu = options.gpu ?? 'auto';
  if (options.parallel !== undefined) {
    assertInteger(options.parallel, 'parallel', 1, 64);
    settings.parallel = options.parallel;
  }
  if (options.memoryBytes !== undefined) {
    assertInteger(options.memoryBytes, 'memoryBytes', 1, Number.MAX_SAFE_INTEGER);
    settings.memoryBytes = options.memoryBytes;
  }
  if (options.shutdownGraceMs !== undefined) {
    assertInteger(options.shutdownGraceMs, 'shutdownGraceMs', 0, 600_000);
    settings.shutdownGraceMs = options.shutdownGraceMs;
  }
  if (options.modelId !== undefined) {
    assertString(options.modelId, 'modelId');
    if (!/^[A-Za-z0-9._:/-]{1,128}$/.test(options.modelId))
      throw invalidValue('modelId must match [A-Za-z0-9._:/-]{1,128}');
    settings.modelId = options.modelId;
  }
  return {
    kind: 'bundled',
    file: process.execPath,
    args: [bundledEntryPath()],
    env: {},
    readOnlyPaths: [process.execPath, packageRoot()],
    ...(options.modelPath === undefined ? {} : { modelPath: options.modelPath }),
    settings: Object.freeze(settings),
  };
}
