/**
 * Runtime health: one `GET /health` round trip over the runtime's own address, bounded by a timeout, and a
 * monitor that runs it on an interval and on demand and reports each result with a timestamp. The monitor
 * decides nothing: its samples feed the lifecycle core (D5.7: `companionAvailable` needs a recent success).
 */
import { lstatSync } from 'node:fs';
import { request } from 'node:http';
import { settleOnce } from '../common/settle-once.js';
import type { Secret } from '../core/secret.js';

/**
 * Where a runtime listens: a Unix socket the parent bound (with the identity of the socket file it
 * made, when known), or 127.0.0.1 with its per-spawn key.
 */
export type RuntimeAddress =
  | { readonly kind: 'unix'; readonly path: string; readonly identity?: SocketIdentity }
  | { readonly kind: 'tcp'; readonly host: '127.0.0.1'; readonly port: number; readonly key: Secret };

export interface HealthResult {
  readonly ok: boolean;
  /** HTTP status, when a response arrived. */
  readonly status?: number;
  /** Why it failed: `status`, `body`, `timeout` or `connect`. */
  readonly reason?: 'status' | 'body' | 'timeout' | 'connect';
}

const MAX_BODY = 4096;

/**
 * The socket file the parent bound, as lstat saw it once it was final: inode and device, and the
 * inode's change time in nanoseconds, so that a socket re-created at the same path (which may get the
 * freed inode number back) does not pass for it.
 */
export interface SocketIdentity {
  readonly ino: bigint;
  readonly dev: bigint;
  readonly ctimeNs: bigint;
}

/** The identity of the socket file at `path` (lstat: a symlink is not followed). */
export function socketIdentity(path: string): SocketIdentity {
  const stats = lstatSync(path, { bigint: true });
  return { ino: stats.ino, dev: stats.dev, ctimeNs: stats.ctimeNs };
}

/** True when `path` is still the socket file with this identity (not a symlink, not replaced). */
export function sameSocket(path: string, identity: SocketIdentity): boolean {
  try {
    const stats = lstatSync(path, { bigint: true });
    return (
      stats.isSocket() && stats.ino === identity.ino && stats.dev === identity.dev && stats.ctimeNs === identity.ctimeNs
    );
  } catch {
    return false;
  }
}

/**
 * `GET /health` on the runtime; ok only for a 200 whose body is `{"status":"ok"}`. Never throws.
 * A fresh connection each time (no keep-alive): the probe proves the runtime accepts connections now.
 */
export function checkHealth(address: RuntimeAddress, timeoutMs: number): Promise<HealthResult> {
  // Why: a socket file that is no longer the one the parent bound (replaced, or a link to another
  // socket) is not the runtime: fail closed without connecting (issue 16 item 4).
  if (address.kind === 'unix' && address.identity !== undefined && !sameSocket(address.path, address.identity)) {
    return Promise.resolve({ ok: false, reason: 'connect' });
  }
  return new Promise((resolvePromise) => {
    const settle = settleOnce<HealthResult>(resolvePromise, () => clearTimeout(timer));
    const target =
      address.kind === 'unix'
        ? { socketPath: address.path, headers: { host: 'localhost' } }
        : {
            host: address.host,
            port: address.port,
            headers: { host: `${address.host}:${address.port}`, authorization: `Bearer ${address.key.reveal()}` },
          };
    const req = request({ ...target, method: 'GET', path: '/health', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY) {
          req.destroy();
          settle({ ok: false, status: res.statusCode ?? 0, reason: 'body' });
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          settle({ ok: false, status, reason: 'status' });
          return;
        }
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
          const ok = typeof body === 'object' && body !== null && (body as { status?: unknown }).status === 'ok';
          settle(ok ? { ok: true, status } : { ok: false, status, reason: 'body' });
        } catch {
          settle({ ok: false, status, reason: 'body' });
        }
      });
      res.on('error', () => settle({ ok: false, status: res.statusCode ?? 0, reason: 'connect' }));
    });
    const timer = setTimeout(() => {
      settle({ ok: false, reason: 'timeout' });
      req.destroy();
    }, timeoutMs);
    req.on('error', () => settle({ ok: false, reason: 'connect' }));
    req.end();
  });
}

/** One monitor sample. `at` is wall-clock milliseconds (Date.now()) when the check finished. */
export interface HealthSample {
  readonly ok: boolean;
  readonly at: number;
  readonly latencyMs: number;
}

export interface HealthMonitorOptions {
  /** One health round trip with this timeout; resolves true when healthy. A throw counts as unhealthy. */
  readonly probe: (timeoutMs: number) => Promise<boolean>;
  /** Time between the end of one check and the start of the next. */
  readonly intervalMs: number;
  /** Timeout of each check. */
  readonly timeoutMs: number;
  /** Called with every sample (interval and on-demand checks). */
  readonly onHealth: (sample: HealthSample) => void;
  /** Wall clock (default Date.now). */
  readonly now?: () => number;
  /** Monotonic clock for latency (default performance.now). */
  readonly monotonic?: () => number;
  /** Timer functions (default the global ones); tests inject their own. */
  readonly timers?: {
    readonly setTimeout: (callback: () => void, ms: number) => unknown;
    readonly clearTimeout: (handle: unknown) => void;
  };
}

export interface HealthMonitor {
  /** Starts interval checks; the first runs at once. */
  start(): void;
  /** Stops interval checks (a check in flight still reports). */
  stop(): void;
  /** Runs a check now (or joins the one in flight) and resolves with its sample. */
  checkNow(): Promise<HealthSample>;
  /** The latest sample, if any. */
  readonly last: HealthSample | null;
}

/** Creates a health monitor around a probe (see {@link checkHealth} and `RuntimeHandle.healthCheck`). */
export function createHealthMonitor(options: HealthMonitorOptions): HealthMonitor {
  const now = options.now ?? Date.now;
  const monotonic = options.monotonic ?? (() => performance.now());
  const timers = options.timers ?? {
    setTimeout: (callback: () => void, ms: number): unknown => {
      const handle = setTimeout(callback, ms);
      handle.unref();
      return handle;
    },
    clearTimeout: (handle: unknown): void => clearTimeout(handle as NodeJS.Timeout),
  };
  let running = false;
  let timer: unknown;
  let inFlight: Promise<HealthSample> | null = null;
  let last: HealthSample | null = null;

  function schedule(): void {
    if (!running) return;
    timer = timers.setTimeout(() => {
      timer = undefined;
      void check().finally(schedule);
    }, options.intervalMs);
  }

  function check(): Promise<HealthSample> {
    if (inFlight !== null) return inFlight;
    const started = monotonic();
    inFlight = (async () => {
      let ok = false;
      try {
        ok = await options.probe(options.timeoutMs);
      } catch {
        ok = false;
      }
      const sample: HealthSample = { ok: ok === true, at: now(), latencyMs: monotonic() - started };
      last = sample;
      inFlight = null;
      try {
        options.onHealth(sample);
      } catch {
        // A listener's failure must not stop the monitor.
      }
      return sample;
    })();
    return inFlight;
  }

  return {
    start() {
      if (running) return;
      running = true;
      void check().finally(schedule);
    },
    stop() {
      running = false;
      if (timer !== undefined) timers.clearTimeout(timer);
      timer = undefined;
    },
    checkNow: check,
    get last() {
      return last;
    },
  };
}
