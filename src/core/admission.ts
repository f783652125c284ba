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

/** The limits of an admission controller ({@link createAdmission}). */
export interface AdmissionOptions {
  /** Requests running at once (≥ 1). */
  maxConcurrent: number;
  /** Requests allowed to wait for a slot (≥ 0). */
  maxQueue: number;
  /** How long a request may wait in the queue before `ERR_ADMISSION_TIMEOUT` (≥ 1 ms). */
  queueTimeoutMs: number;
  /** Whether requests are admitted from the start. Default false (fail closed until `setReady(true)`). */
  ready?: boolean;
  /** The timers for the queue timeout (tests inject manual ones); default the global ones. */
  timers?: AdmissionTimers;
}

/** The controller's state now and its counters, for status output and tests. */
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

/** An admission controller: bounds how many requests run at once and how many wait. */
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
  /** The counts now (a fresh object each call). */
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

/** The controller's state: the limits, the running count, the queue (in arrival order) and the counters. */
interface AdmissionState {
  readonly timers: AdmissionTimers;
  readonly maxQueue: number;
  readonly queueTimeoutMs: number;
  maxConcurrent: number;
  ready: boolean;
  active: number;
  readonly queue: Set<Waiter>;
  readonly counts: {
    admitted: number;
    refusedQueueFull: number;
    refusedNotReady: number;
    timedOut: number;
    aborted: number;
  };
}

/**
 * Creates an admission controller.
 * @throws TypeError `ERR_INVALID_ARG_*` for a bad option. `acquire()` rejects with ERR_ADMISSION_NOT_READY,
 *   ERR_ADMISSION_QUEUE_FULL, ERR_ADMISSION_TIMEOUT or ERR_ADMISSION_ABORTED (see {@link Admission.acquire}),
 *   or ERR_INVALID_ARG_TYPE for a `signal` that is not an AbortSignal; `setReady()` throws
 *   ERR_INVALID_ARG_TYPE for a value that is not a boolean.
 */
export function createAdmission(options: AdmissionOptions): Admission {
  const { maxConcurrent, maxQueue, queueTimeoutMs } = options;
  assertInteger(maxConcurrent, 'maxConcurrent', 1, 1_000_000);
  assertInteger(maxQueue, 'maxQueue', 0, 1_000_000);
  assertInteger(queueTimeoutMs, 'queueTimeoutMs', 1, 2_147_483_647);
  const state: AdmissionState = {
    timers: options.timers ?? defaultTimers,
    maxQueue,
    queueTimeoutMs,
    maxConcurrent,
    ready: options.ready === true,
    active: 0,
    queue: new Set<Waiter>(),
    counts: { admitted: 0, refusedQueueFull: 0, refusedNotReady: 0, timedOut: 0, aborted: 0 },
  };
  return {
    acquire: (signal?: AbortSignal) => acquire(state, signal),
    setReady: (ready: boolean) => setReady(state, ready),
    setMaxConcurrent: (value: number) => setMaxConcurrent(state, value),
    retryAfterSeconds: () => retryAfterSeconds(state),
    stats: () => stats(state),
  };
}

function retryAfterSeconds(state: AdmissionState): number {
  return state.ready
    ? Math.min(60, Math.max(1, Math.ceil(state.queueTimeoutMs / 1000)))
    : NOT_READY_RETRY_AFTER_SECONDS;
}

/** Takes a waiter out of the queue and drops its timer and abort listener. */
function settle(state: AdmissionState, waiter: Waiter): void {
  state.queue.delete(waiter);
  state.timers.clearTimeout(waiter.timer);
  if (waiter.onAbort !== undefined) waiter.signal?.removeEventListener('abort', waiter.onAbort);
}

/** Takes a slot; the release gives it back once and admits the next waiter. */
function grant(state: AdmissionState): Release {
  state.active++;
  state.counts.admitted++;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    state.active--;
    pump(state);
  };
}

/** Admits waiters, first in first out, while the runtime is ready and a slot is free. */
function pump(state: AdmissionState): void {
  while (state.ready && state.active < state.maxConcurrent) {
    const first = state.queue.values().next();
    if (first.done === true) return;
    settle(state, first.value);
    first.value.resolve(grant(state));
  }
}

function notReady(state: AdmissionState): CompanionError {
  state.counts.refusedNotReady++;
  return new CompanionError('ERR_ADMISSION_NOT_READY', undefined, {
    detail: { retryAfterSeconds: retryAfterSeconds(state) },
  });
}

/** {@link Admission.acquire}: refuses at once, grants at once, or queues. */
function acquire(state: AdmissionState, signal: AbortSignal | undefined): Promise<Release> {
  if (signal !== undefined && !isSignal(signal)) {
    return Promise.reject(new CodedTypeError('ERR_INVALID_ARG_TYPE', 'signal must be an AbortSignal'));
  }
  if (signal?.aborted === true) {
    state.counts.aborted++;
    return Promise.reject(new CompanionError('ERR_ADMISSION_ABORTED'));
  }
  if (!state.ready) return Promise.reject(notReady(state));
  if (state.active < state.maxConcurrent && state.queue.size === 0) return Promise.resolve(grant(state));
  if (state.queue.size >= state.maxQueue) {
    state.counts.refusedQueueFull++;
    return Promise.reject(
      new CompanionError('ERR_ADMISSION_QUEUE_FULL', undefined, {
        detail: { retryAfterSeconds: retryAfterSeconds(state) },
      }),
    );
  }
  return enqueue(state, signal);
}

/** Waits in the queue until {@link pump} grants a slot, the queue timeout passes or `signal` aborts. */
function enqueue(state: AdmissionState, signal: AbortSignal | undefined): Promise<Release> {
  return new Promise<Release>((resolve, reject) => {
    const waiter: Waiter = { resolve, reject, timer: undefined, signal, onAbort: undefined };
    state.queue.add(waiter);
    waiter.timer = state.timers.setTimeout(() => {
      if (!state.queue.has(waiter)) return;
      settle(state, waiter);
      state.counts.timedOut++;
      reject(
        new CompanionError('ERR_ADMISSION_TIMEOUT', undefined, { detail: { queueTimeoutMs: state.queueTimeoutMs } }),
      );
    }, state.queueTimeoutMs);
    if (signal !== undefined) {
      waiter.onAbort = () => {
        if (!state.queue.has(waiter)) return;
        settle(state, waiter);
        state.counts.aborted++;
        reject(new CompanionError('ERR_ADMISSION_ABORTED'));
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
    }
  });
}

function setReady(state: AdmissionState, value: boolean): void {
  if (typeof value !== 'boolean') throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'ready must be a boolean');
  state.ready = value;
  if (!state.ready) {
    // Why: queued requests would only time out against a runtime that is gone; tell them now.
    for (const waiter of [...state.queue]) {
      settle(state, waiter);
      waiter.reject(notReady(state));
    }
  } else {
    pump(state);
  }
}

function setMaxConcurrent(state: AdmissionState, value: number): void {
  assertInteger(value, 'maxConcurrent', 1, 1_000_000);
  state.maxConcurrent = value;
  pump(state);
}

function stats(state: AdmissionState): AdmissionStats {
  const { active, queue, maxConcurrent, maxQueue, ready, counts } = state;
  return { active, queued: queue.size, maxConcurrent, maxQueue, ready, ...counts };
}
