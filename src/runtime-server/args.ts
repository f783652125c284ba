/**
 * The bundled runtime's start line (protocol.ts): the one JSON line the parent writes to its stdin. The
 * runtime takes no argv at all (argv is world-readable in /proc/<pid>/cmdline: no model path, socket
 * path or model id may be rebuilt from it).
 *
 *   v                   1
 *   model               {"fd": N} (an inherited descriptor, N ≥ 3) or {"path": P} (absolute: where a sandbox
 *                       shows the model read-only)
 *   listen              {"fd": N, "kind": "unix"|"tcp"}: the listening socket the parent bound
 *   key                 loopback TCP only: the per-spawn key (base64url, 32–256 characters)
 *   contextSize         context size per sequence in tokens (default: sizing.ts chooses, from the model's
 *                       trained context and `memoryBytes`)
 *   threads             CPU threads (default: physical cores)
 *   gpu                 "off" | "auto" (default off)
 *   parallel            sequences generating at once (default: sizing.ts chooses, at most 4; more requests
 *                       wait in a queue)
 *   memoryBytes         memory the runtime may use in all, bytes (default: no cap); caps the defaults above
 *   modelId             the id reported by /v1/models and in responses (default "local")
 *   shutdownGraceMs     how long SIGTERM lets in-flight generations finish before cancelling them
 */
import { CompanionError } from '../core/errors.js';
import { KEY_PATTERN } from './protocol.js';

export interface RuntimeServerConfig {
  /** What node-llama-cpp opens: `/proc/self/fd/N` for a descriptor, or the sandbox's read-only path. */
  readonly modelPath: string;
  readonly listen: { readonly fd: number; readonly kind: 'unix' | 'tcp' };
  /** Loopback TCP: the per-spawn key every request must carry; null for a Unix socket. */
  readonly key: string | null;
  /** Per sequence; `undefined` means "chosen from the model and memory" (sizing.ts). */
  readonly contextSize: number | undefined;
  /** `undefined` means "physical cores" (resolved in main.ts, which may read /proc). */
  readonly threads: number | undefined;
  readonly gpu: 'off' | 'auto';
  /** `undefined` means "chosen from the model and memory" (sizing.ts). */
  readonly parallel: number | undefined;
  /** Memory the runtime may use in all, bytes; `undefined` means no cap. */
  readonly memoryBytes: number | undefined;
  readonly modelId: string;
  readonly shutdownGraceMs: number;
}

const MODEL_ID = /^[A-Za-z0-9._:/-]{1,128}$/;
const KNOWN = new Set([
  'v',
  'model',
  'listen',
  'key',
  'contextSize',
  'threads',
  'gpu',
  'parallel',
  'memoryBytes',
  'modelId',
  'shutdownGraceMs',
]);

function usage(message: string): CompanionError {
  return new CompanionError('ERR_USAGE', message);
}

function integer(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    throw usage(`${name} must be an integer from ${min} to ${max}`);
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The path a descriptor is reopened by: `/proc/self/fd/N` on Linux, `/dev/fd/N` elsewhere. */
export function descriptorPath(fd: number, platform: NodeJS.Platform = process.platform): string {
  return platform === 'linux' ? `/proc/self/fd/${fd}` : `/dev/fd/${fd}`;
}

/**
 * Parses the start line. Throws `ERR_USAGE` on anything unknown, missing or malformed; the message names
 * the field, never a value.
 */
export function parseStartLine(line: string): RuntimeServerConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw usage('the start line is not JSON');
  }
  if (!isRecord(raw)) throw usage('the start line is not an object');
  for (const name of Object.keys(raw)) if (!KNOWN.has(name)) throw usage(`unknown setting ${name.slice(0, 40)}`);
  if (raw.v !== 1) throw usage('v must be 1');

  let modelPath: string;
  const model = raw.model;
  if (isRecord(model) && Object.keys(model).length === 1 && 'fd' in model) {
    modelPath = descriptorPath(integer('model.fd', model.fd, 3, 1023));
  } else if (isRecord(model) && Object.keys(model).length === 1 && typeof model.path === 'string') {
    if (!model.path.startsWith('/') || model.path.includes('\0')) throw usage('model.path must be an absolute path');
    modelPath = model.path;
  } else {
    throw usage('model must be {fd} or {path}');
  }

  const listen = raw.listen;
  if (!isRecord(listen) || (listen.kind !== 'unix' && listen.kind !== 'tcp'))
    throw usage('listen must be {fd, kind: unix|tcp}');
  const listenFd = integer('listen.fd', listen.fd, 3, 1023);

  let key: string | null = null;
  if (listen.kind === 'tcp') {
    if (typeof raw.key !== 'string' || !KEY_PATTERN.test(raw.key))
      throw usage('key is required for tcp and must be base64url');
    key = raw.key;
  } else if (raw.key !== undefined) {
    throw usage('key is only for tcp');
  }

  const gpu = raw.gpu ?? 'off';
  if (gpu !== 'off' && gpu !== 'auto') throw usage('gpu must be off or auto');
  const modelId = raw.modelId ?? 'local';
  if (typeof modelId !== 'string' || !MODEL_ID.test(modelId))
    throw usage('modelId has characters outside [A-Za-z0-9._:/-]');
  return {
    modelPath,
    listen: { fd: listenFd, kind: listen.kind },
    key,
    contextSize: raw.contextSize === undefined ? undefined : integer('contextSize', raw.contextSize, 64, 1 << 20),
    threads: raw.threads === undefined ? undefined : integer('threads', raw.threads, 1, 1024),
    gpu,
    parallel: raw.parallel === undefined ? undefined : integer('parallel', raw.parallel, 1, 64),
    memoryBytes:
      raw.memoryBytes === undefined ? undefined : integer('memoryBytes', raw.memoryBytes, 1, Number.MAX_SAFE_INTEGER),
    modelId,
    shutdownGraceMs:
      raw.shutdownGraceMs === undefined ? 1000 : integer('shutdownGraceMs', raw.shutdownGraceMs, 0, 600_000),
  };
}
