/**
 * The spawn-pipe protocol between the companion (parent) and a runtime child. One JSON object per line on
 * the child's stdout; the parent trusts nothing else the child says or does (P-k).
 *
 *   child → parent   {"event":"ready","address":{"kind":"unix","path":P}|{"kind":"tcp","host":"127.0.0.1","port":N},"pid":N}
 *                    {"event":"error","code":"ERR_…"}           (then the child exits non-zero)
 *   parent → child   in loopback-TCP mode only: the per-spawn key, one line, before anything else (stdin).
 *                    stdin stays open; its end means the parent is gone and the child exits.
 *
 * No messages travel with errors: a code is enough, and a message could carry a model path.
 */
export type ReportedAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

export interface ReadyEvent {
  readonly event: 'ready';
  readonly address: ReportedAddress;
  readonly pid: number;
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
export const CHILD_ERROR_CODES = ['ERR_USAGE', 'ERR_RUNTIME_MODEL_LOAD', 'ERR_BIND_FAILED', 'ERR_SPAWN_HANDSHAKE', 'ERR_INTERNAL'] as const;

/** Serialises one event line. */
export function eventLine(event: RuntimeEvent): string {
  return `${JSON.stringify(event)}\n`;
}
