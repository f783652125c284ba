/**
 * The runtime lifecycle (CONTRACT §2 "runtime manager", STYLE "one state value, one transition table"):
 * one state value, one explicit transition table, and a restart policy with exponential backoff and a
 * crash-loop cap. Pure: time always comes in as an argument; nothing here sleeps, spawns or kills.
 *
 * The adapter (spawn/health) reports what happened as events; the shell feeds them through
 * {@link transition} and acts on the new state (spawn on `starting`, kill on `stopping`, wait until
 * `restartAt` in `backoff`, then send `retry`). The table is in docs/architecture.md, "Cores".
 */
import { CompanionError, ERROR_CODES, type ErrorCode, assertInteger, CodedTypeError } from './errors.js';

/** Every state of the runtime lifecycle; the table below says how each is left. */
export const LIFECYCLE_STATES = Object.freeze([
  'stopped',
  'verifying',
  'starting',
  'ready',
  'degraded',
  'stopping',
  'backoff',
  'failed',
] as const);
/** One runtime lifecycle state (`ready` is the only one that serves). */
export type LifecycleState = (typeof LIFECYCLE_STATES)[number];

/** Every event the adapters report or the supervisor decides (spawn, health, crash, stop, retry, reset). */
export const LIFECYCLE_EVENTS = Object.freeze([
  'start',
  'verified',
  'verify-failed',
  'spawned-ready',
  'health-ok',
  'health-failed',
  'degrade',
  'recover',
  'crashed',
  'retry',
  'stop',
  'stopped',
  'killed',
  'reset',
] as const);
/** One lifecycle event. */
export type LifecycleEvent = (typeof LIFECYCLE_EVENTS)[number];

/**
 * How long the stop adapter waits after SIGTERM before it sends SIGKILL to the runtime's process group
 * (and reports `killed` instead of `stopped`, so the forced stop is recorded).
 */
export const STOP_GRACE_MS = 5_000;

/** `crash` marks the entries decided by the restart policy: `backoff`, or `failed` on a crash loop. */
type Target = LifecycleState | 'crash';

/**
 * The transition table: state → event → next state. Anything not listed is illegal
 * (`ERR_LIFECYCLE_ILLEGAL_TRANSITION`). Self-loops are listed explicitly where an event is expected
 * to repeat (`stop` while stopping, health results while serving).
 */
export const LIFECYCLE_TABLE: Readonly<Record<LifecycleState, Readonly<Partial<Record<LifecycleEvent, Target>>>>> =
  Object.freeze({
    stopped: Object.freeze({ start: 'verifying', stop: 'stopped' }),
    // Verifying: the installed model is re-checked against the verified record before every (re)start.
    verifying: Object.freeze({ verified: 'starting', 'verify-failed': 'failed', stop: 'stopped' }),
    starting: Object.freeze({ 'spawned-ready': 'ready', crashed: 'crash', stop: 'stopping' }),
    ready: Object.freeze({
      'health-ok': 'ready',
      'health-failed': 'degraded',
      degrade: 'degraded',
      crashed: 'crash',
      stop: 'stopping',
    }),
    // Degraded leaves only on an explicit `recover` (the shell decides health and resources are fine again).
    degraded: Object.freeze({
      'health-ok': 'degraded',
      'health-failed': 'degraded',
      degrade: 'degraded',
      recover: 'ready',
      crashed: 'crash',
      stop: 'stopping',
    }),
    // The exit that a stop causes is not a crash: `crashed` while stopping ends in `stopped`.
    stopping: Object.freeze({ stopped: 'stopped', killed: 'stopped', crashed: 'stopped', stop: 'stopping' }),
    backoff: Object.freeze({ retry: 'verifying', stop: 'stopped' }),
    // No restart out of `failed` until someone asks with `reset`.
    failed: Object.freeze({ reset: 'stopped', stop: 'failed' }),
  });

/** Exponential backoff and crash-loop cap; build with {@link createRestartPolicy}. */
export interface RestartPolicy {
  /** Delay before the first restart after a crash. */
  readonly baseDelayMs: number;
  /** Upper bound of the doubled delay. */
  readonly maxDelayMs: number;
  /** This many crashes within `windowMs` mean a crash loop: `failed`, no more restarts. */
  readonly maxCrashes: number;
  /** The sliding window in which crashes are counted. */
  readonly windowMs: number;
}

const POLICIES = new WeakSet<RestartPolicy>();

/**
 * Builds a validated restart policy.
 * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` unless every field is an integer,
 *   `baseDelayMs` ≥ 1, `maxDelayMs` ≥ `baseDelayMs`, `maxCrashes` ≥ 1 and `windowMs` ≥ 1.
 */
export function createRestartPolicy(options: {
  baseDelayMs: number;
  maxDelayMs: number;
  maxCrashes: number;
  windowMs: number;
}): RestartPolicy {
  const { baseDelayMs, maxDelayMs, maxCrashes, windowMs } = options;
  assertInteger(baseDelayMs, 'baseDelayMs', 1);
  assertInteger(maxDelayMs, 'maxDelayMs', baseDelayMs);
  assertInteger(maxCrashes, 'maxCrashes', 1, 10_000);
  assertInteger(windowMs, 'windowMs', 1);
  const policy: RestartPolicy = Object.freeze({ baseDelayMs, maxDelayMs, maxCrashes, windowMs });
  POLICIES.add(policy);
  return policy;
}

/** 0.5 s doubling to 30 s; five crashes within five minutes is a crash loop. */
export const DEFAULT_RESTART_POLICY: RestartPolicy = createRestartPolicy({
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  maxCrashes: 5,
  windowMs: 300_000,
});

/**
 * The delay before the restart that follows the `crashCount`-th crash in the window:
 * `min(maxDelayMs, baseDelayMs × 2^(crashCount − 1))`. Deterministic (no jitter: one local process).
 */
export function restartDelayMs(policy: RestartPolicy, crashCount: number): number {
  const exponent = Math.max(0, Math.min(crashCount - 1, 52));
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** exponent);
}

/** The whole lifecycle value. Treat it as immutable; every transition returns a new one. */
export interface LifecycleSnapshot {
  readonly state: LifecycleState;
  /** When the current state was entered (the `now` of the transition into it). */
  readonly since: number;
  /** Times of the crashes still inside the policy's window, oldest first. */
  readonly crashTimes: readonly number[];
  /** In `backoff`: the earliest time `retry` is allowed; otherwise null. */
  readonly restartAt: number | null;
  /** Why the runtime is in `backoff` or `failed` (e.g. `ERR_LIFECYCLE_CRASH_LOOP`); otherwise null. */
  readonly code: ErrorCode | null;
  /** True when the last stop had to be forced (SIGKILL after {@link STOP_GRACE_MS}). */
  readonly forcedStop: boolean;
  readonly policy: RestartPolicy;
}

function assertTime(now: unknown): asserts now is number {
  if (typeof now !== 'number' || !Number.isFinite(now)) {
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'now must be a finite number (milliseconds)');
  }
}

/**
 * The first snapshot: `stopped`, no crashes.
 * @throws TypeError `ERR_INVALID_ARG_TYPE` for a `now` that is not a finite number, or a policy not made by
 *   {@link createRestartPolicy}.
 */
export function initialLifecycle(now: number, policy: RestartPolicy = DEFAULT_RESTART_POLICY): LifecycleSnapshot {
  assertTime(now);
  if (!POLICIES.has(policy))
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'policy must come from createRestartPolicy()');
  return Object.freeze({
    state: 'stopped',
    since: now,
    crashTimes: Object.freeze([]),
    restartAt: null,
    code: null,
    forcedStop: false,
    policy,
  });
}

function isState(value: unknown): value is LifecycleState {
  return typeof value === 'string' && (LIFECYCLE_STATES as readonly string[]).includes(value);
}

function isEvent(value: unknown): value is LifecycleEvent {
  return typeof value === 'string' && (LIFECYCLE_EVENTS as readonly string[]).includes(value);
}

function illegal(state: unknown, event: unknown, why?: string): CompanionError {
  // Only known names are echoed: an unknown value may come from anywhere.
  const stateName = isState(state) ? state : 'unknown';
  const eventName = isEvent(event) ? event : 'unknown';
  return new CompanionError(
    'ERR_LIFECYCLE_ILLEGAL_TRANSITION',
    `lifecycle: event "${eventName}" is not allowed in state "${stateName}"${why === undefined ? '' : ` (${why})`}`,
    { detail: { state: stateName, event: eventName } },
  );
}

/**
 * True when {@link transition} would accept `event` in `snapshot` at `now` (for late, racing reports
 * such as a health result that arrives after a stop).
 */
export function canTransition(snapshot: LifecycleSnapshot, event: LifecycleEvent, now: number): boolean {
  try {
    transition(snapshot, event, now);
    return true;
  } catch {
    return false;
  }
}

/**
 * Applies one event.
 *
 * @param snapshot the current value (from {@link initialLifecycle} or an earlier transition).
 * @param event what happened; see {@link LIFECYCLE_TABLE}.
 * @param now the current time in milliseconds (any monotonic clock; the caller owns it).
 * @param code optional reason recorded with `verify-failed` or `crashed` (e.g. `ERR_MODEL_CHANGED`).
 * @returns the next snapshot. A crash while `starting`/`ready`/`degraded` goes to `backoff` with
 *   `restartAt = now + restartDelayMs(...)`, or to `failed` with `code: 'ERR_LIFECYCLE_CRASH_LOOP'` once
 *   `maxCrashes` crashes fall inside `windowMs`.
 * @throws CompanionError `ERR_LIFECYCLE_ILLEGAL_TRANSITION` for an event the table does not allow (also
 *   `retry` before `restartAt`, an unknown state or event); `ERR_LIFECYCLE_CRASH_LOOP` for `start` or
 *   `retry` after a crash loop until `reset`. TypeError `ERR_INVALID_ARG_TYPE` for a bad `now` or a snapshot
 *   without a policy; TypeError `ERR_INVALID_ARG_VALUE` for a `code` that is not one of ERROR_CODES.
 */
export function transition(
  snapshot: LifecycleSnapshot,
  event: LifecycleEvent,
  now: number,
  code?: ErrorCode,
): LifecycleSnapshot {
  assertTime(now);
  if (typeof snapshot !== 'object' || snapshot === null || !POLICIES.has(snapshot.policy)) {
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'snapshot must come from initialLifecycle() or transition()');
  }
  if (code !== undefined && !Object.hasOwn(ERROR_CODES, code)) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'code must be one of ERROR_CODES');
  }
  const { state, policy } = snapshot;
  if (!isState(state) || !isEvent(event)) throw illegal(state, event);
  const target = LIFECYCLE_TABLE[state][event];
  if (target === undefined) {
    if (
      state === 'failed' &&
      snapshot.code === 'ERR_LIFECYCLE_CRASH_LOOP' &&
      (event === 'start' || event === 'retry')
    ) {
      throw new CompanionError('ERR_LIFECYCLE_CRASH_LOOP', undefined, { detail: { state, event } });
    }
    throw illegal(state, event);
  }
  if (event === 'retry' && snapshot.restartAt !== null && now < snapshot.restartAt)
    throw illegal(state, event, 'backoff has not elapsed');

  const recent = snapshot.crashTimes.filter((t) => t > now - policy.windowMs);
  const next = (
    to: LifecycleState,
    changes: { crashTimes?: number[]; restartAt?: number; code?: ErrorCode; forcedStop?: boolean } = {},
  ): LifecycleSnapshot =>
    Object.freeze({
      state: to,
      since: to === state ? snapshot.since : now,
      crashTimes: Object.freeze(changes.crashTimes ?? recent),
      restartAt: changes.restartAt ?? null,
      code: changes.code ?? null,
      forcedStop: changes.forcedStop ?? false,
      policy,
    });

  if (target === 'crash') {
    const crashTimes = [...recent, now];
    // Why: a runtime that keeps dying (e.g. a malformed model aborting llama.cpp) must not be restarted forever.
    if (crashTimes.length >= policy.maxCrashes) return next('failed', { crashTimes, code: 'ERR_LIFECYCLE_CRASH_LOOP' });
    return next('backoff', {
      crashTimes,
      restartAt: now + restartDelayMs(policy, crashTimes.length),
      code: code ?? 'ERR_RUNTIME_GONE',
    });
  }
  switch (event) {
    case 'verify-failed':
      return next('failed', { code: code ?? 'ERR_MODEL_CHANGED' });
    case 'killed':
      return next('stopped', { forcedStop: true });
    case 'reset':
      return next('stopped', { crashTimes: [] });
    case 'stop':
      if (state === 'stopping' || state === 'failed' || state === 'stopped') return snapshot;
      return next(target);
    default:
      return next(target);
  }
}
