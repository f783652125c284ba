/**
 * Admission control for the front door (CONTRACT §2 "runtime manager"): at most `maxConcurrent` requests
 * run against the runtime, at most `maxQueue` wait (first in, first out), and a waiting request gives up
 * after `queueTimeoutMs`. Beyond the queue a request is refused at once, so load never piles up behind a
 * local model that answers slowly.
 *
 * The front door maps the codes: `ERR_ADMISSION_QUEUE_FULL` → 429 and `ERR_ADMISSION_NOT_READY` → 503,
 * both with `Retry-After: retryAfterSeconds()` (RFC 9110 §10.2.3, RFC 6585 §4), `ERR_ADMISSION_TIMEOUT`
 * → 503. No I/O: the only effect is a timer per queued request (injectable for tests).
 */
import { CompanionError, assertInteger, CodedTypeError } from './errors.js';

/** Gives the slot back. Idempotent: a second call does nothing. */
export type Release = () => void;

/** The timer functions admission uses; defaults to the global ones. */
export interface AdmissionTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface AdmissionOptions {
  /** Requests running at once (≥ 1). */
  maxConcurrent: number;
  /** Requests allowed to wait for a slot (≥ 0). */
  maxQueue: number;
  /** How long a request may wait in the queue before `ERR_ADMISSION_TIMEOUT` (≥ 1 ms). */
  queueTimeoutMs: number;
  /** Whether requests are admitted from the start. Default false (fail closed until `setReady(true)`). */
  ready?: boolean;
  timers?: AdmissionTimers;
}

export interface AdmissionStats {
  readonly active: number;
  readonly queued: number;
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  readonly ready: boolean;
  /** Counters since creation. */
  readonly admitted: number;
  readonly refusedQueueFull: number;
  readonly refusedNotReady: number;
  readonly timedOut: number;
  readonly aborted: number;
}

export interface Admission {
  /**
   * Waits for a slot. Resolves with its {@link Release}; the caller must call it exactly when the
   * request is done (extra calls are ignored). Rejects with a CompanionError:
   * `ERR_ADMISSION_NOT_READY` (not ready, or readiness withdrawn while queued), `ERR_ADMISSION_QUEUE_FULL`
   * (the queue is full), `ERR_ADMISSION_TIMEOUT` (queued longer than `queueTimeoutMs`),
   * `ERR_ADMISSION_ABORTED` (`signal` aborted before a slot was granted). The NOT_READY and QUEUE_FULL
   * errors carry `detail.retryAfterSeconds`.
   */
  acquire(signal?: AbortSignal): Promise<Release>;
  /** Marks the runtime ready or not. Going not-ready refuses everything queued with NOT_READY. */
  setReady(ready: boolean): void;
  /**
   * Sets how many requests run at once (the runtime's sequences, learnt when it is ready). A larger
   * limit admits queued requests at once; a smaller one lets running requests finish.
   * @throws TypeError `ERR_INVALID_ARG_*` for a bad limit.
   */
  setMaxConcurrent(maxConcurrent: number): void;
  /** The `Retry-After` value (whole seconds, 1–60) to send with a 429 or 503 refusal now. */
  retryAfterSeconds(): number;
  stats(): AdmissionStats;
}

/** Retry-After while the runtime is not ready (it is starting or restarting). */
export const NOT_READY_RETRY_AFTER_SECONDS = 5;

interface Waiter {
  resolve(release: Release): void;
  reject(error: CompanionError): void;
  timer: unknown;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

// Timers stay referenced: a caller awaiting acquire() must get its answer. setReady(false) clears them all.
const defaultTimers: AdmissionTimers = {
  setTimeout(callback, ms) {
    return setTimeout(callback, ms);
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

function isSignal(value: unknown): value is AbortSignal {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as AbortSignal).addEventListener === 'function' &&
    typeof (value as AbortSignal).aborted === 'boolean'
  );
}

/**
 * Creates an admission controller.
 * @throws TypeError `ERR_INVALID_ARG_*` for a bad option.
 */
export function createAdmission(options: AdmissionOptions): Admission {
  const { maxQueue, queueTimeoutMs } = options;
  let maxConcurrent = options.maxConcurrent;
  assertInteger(maxConcurrent, 'maxConcurrent', 1, 1_000_000);
  assertInteger(maxQueue, 'maxQueue', 0, 1_000_000);
  assertInteger(queueTimeoutMs, 'queueTimeoutMs', 1, 2_147_483_647);
  const timers = options.timers ?? defaultTimers;
  let ready = options.ready === true;
  let active = 0;
  const queue = new Set<Waiter>();
  let admitted = 0,
    refusedQueueFull = 0,
    refusedNotReady = 0,
    timedOut = 0,
    aborted = 0;

  const retryAfterSeconds = (): number =>
    ready ? Math.min(60, Math.max(1, Math.ceil(queueTimeoutMs / 1000))) : NOT_READY_RETRY_AFTER_SECONDS;

  function settle(waiter: Waiter): void {
    queue.delete(waiter);
    timers.clearTimeout(waiter.timer);
    if (waiter.onAbort !== undefined) waiter.signal?.removeEventListener('abort', waiter.onAbort);
  }

  function grant(): Release {
    active++;
    admitted++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      active--;
      pump();
    };
  }

  function pump(): void {
    while (ready && active < maxConcurrent) {
      const first = queue.values().next();
      if (first.done === true) return;
      settle(first.value);
      first.value.resolve(grant());
    }
  }

  function notReady(): CompanionError {
    refusedNotReady++;
    return new CompanionError('ERR_ADMISSION_NOT_READY', undefined, {
      detail: { retryAfterSeconds: retryAfterSeconds() },
    });
  }

  return {
    acquire(signal?: AbortSignal): Promise<Release> {
      if (signal !== undefined && !isSignal(signal)) {
        return Promise.reject(new CodedTypeError('ERR_INVALID_ARG_TYPE', 'signal must be an AbortSignal'));
      }
      if (signal?.aborted === true) {
        aborted++;
        return Promise.reject(new CompanionError('ERR_ADMISSION_ABORTED'));
      }
      if (!ready) return Promise.reject(notReady());
      if (active < maxConcurrent && queue.size === 0) return Promise.resolve(grant());
      if (queue.size >= maxQueue) {
        refusedQueueFull++;
        return Promise.reject(
          new CompanionError('ERR_ADMISSION_QUEUE_FULL', undefined, {
            detail: { retryAfterSeconds: retryAfterSeconds() },
          }),
        );
      }
      return new Promise<Release>((resolve, reject) => {
        const waiter: Waiter = { resolve, reject, timer: undefined, signal, onAbort: undefined };
        queue.add(waiter);
        waiter.timer = timers.setTimeout(() => {
          if (!queue.has(waiter)) return;
          settle(waiter);
          timedOut++;
          reject(new CompanionError('ERR_ADMISSION_TIMEOUT', undefined, { detail: { queueTimeoutMs } }));
        }, queueTimeoutMs);
        if (signal !== undefined) {
          waiter.onAbort = () => {
            if (!queue.has(waiter)) return;
            settle(waiter);
            aborted++;
            reject(new CompanionError('ERR_ADMISSION_ABORTED'));
          };
          signal.addEventListener('abort', waiter.onAbort, { once: true });
        }
      });
    },

    setReady(value: boolean): void {
      if (typeof value !== 'boolean') throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'ready must be a boolean');
      ready = value;
      if (!ready) {
        // Why: queued requests would only time out against a runtime that is gone; tell them now.
        for (const waiter of [...queue]) {
          settle(waiter);
          waiter.reject(notReady());
        }
      } else {
        pump();
      }
    },

    setMaxConcurrent(value: number): void {
      assertInteger(value, 'maxConcurrent', 1, 1_000_000);
      maxConcurrent = value;
      pump();
    },

    retryAfterSeconds,

    stats(): AdmissionStats {
      return {
        active,
        queued: queue.size,
        maxConcurrent,
        maxQueue,
        ready,
        admitted,
        refusedQueueFull,
        refusedNotReady,
        timedOut,
        aborted,
      };
    },
  };
}
