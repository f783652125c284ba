/**
 * The spawn-pipe protocol between the companion (parent) and a runtime child. One JSON object per line;
 * the parent trusts nothing else the child says or does (P-k).
 *
 *   parent → child   (stdin, first line) the start line: {"v":1,"model":{"fd":3}|{"path":P},
 *                    "listen":{"fd":4,"kind":"unix"|"tcp"},"key"?:K, ...settings}
 *                    The parent bound the listening socket itself, in a folder the runtime cannot see or
 *                    write, and hands it over as descriptor 4: the runtime never chooses or reports an
 *                    address. `key` (loopback TCP only) is the per-spawn key every request must carry.
 *                    stdin stays open afterwards; its end means the parent is gone and the child exits.
 *   child → parent   (stdout) {"event":"ready","pid":N,"backend":"cpu"|"cuda"|"vulkan"|"metal","gpuLayers":N,
 *                    "fallback"?:S,"parallel":P,"contextSize":C} once the model is loaded and it serves
 *                    (P sequences of C tokens each, as chosen or asked),
 *                    or {"event":"error","code":"ERR_…"} (then the child exits non-zero).
 *
 * No messages travel with errors: a code is enough, and a message could carry a model path.
 */

/** The start line's model: an inherited descriptor, or the path where a sandbox shows it read-only. */
export type StartModel = { readonly fd: number } | { readonly path: string };

/** The first line the parent writes to the child's stdin. */
export interface StartLine {
  readonly v: 1;
  readonly model: StartModel;
  readonly listen: { readonly fd: number; readonly kind: 'unix' | 'tcp' };
  /** Loopback TCP only: the per-spawn key. */
  readonly key?: string;
  readonly [setting: string]: unknown;
}

export interface ReadyEvent {
  readonly event: 'ready';
  readonly pid: number;
  /** Sequences generating at once (the parent's admission limit follows it). */
  readonly parallel?: number;
  /** Tokens per sequence. */
  readonly contextSize?: number;
  /** What the model runs on (issue 17 item 8); the parent checks it against a fixed list. */
  readonly backend?: string;
  /** Layers offloaded to the GPU (0 on the CPU). */
  readonly gpuLayers?: number;
  /** Why a GPU that was asked for is not used (`auto unavailable: NoBinaryFoundError`). */
  readonly fallback?: string;
}

export interface ErrorEvent {
  readonly event: 'error';
  readonly code: string;
}

export type RuntimeEvent = ReadyEvent | ErrorEvent;

/** Longest protocol line either side accepts (a guard against a child flooding the pipe). */
export const MAX_PROTOCOL_LINE = 4096;

/** The per-spawn key's shape: base64url, 32 to 256 characters. */
export const KEY_PATTERN = /^[A-Za-z0-9_-]{32,256}$/;

/** Error codes a child may report; anything else is treated as a plain start failure. */
export const CHILD_ERROR_CODES = [
  'ERR_USAGE',
  'ERR_RUNTIME_MODEL_LOAD',
  'ERR_BIND_FAILED',
  'ERR_SPAWN_HANDSHAKE',
  'ERR_INTERNAL',
] as const;

/** Serialises one event line. */
export function eventLine(event: RuntimeEvent): string {
  return `${JSON.stringify(event)}\n`;
}
