/**
 * Why the companion is not available, as one reason with its code and one line saying what to do
 * (issue 18, items 7 and 8). `status` shows it next to `Available: no`; `run` throws it when the lane
 * selector refuses a call that needed the local companion. It does not decide availability: that is the
 * front door's `/health` (src/shell/discovery.ts `companionAvailableAt`, the supervisor's one decision);
 * asked only once that said no, it explains why. Pure: the callers gather the facts.
 */
import type { ErrorCode } from '../core/errors.js';

/** What the caller found, in the order a user would fix it. */
export interface AvailabilityFacts {
  readonly hubConfigured: boolean;
  /** 'available', or the keychain's error code (only read with a hub configured). */
  readonly keychain: string;
  readonly signedIn: boolean;
  /** The installed model: none, verified, or changed since it was verified. */
  readonly model: 'none' | 'verified' | 'changed';
  /** A live `companion up` recorded its endpoint (identity checked). */
  readonly upRunning: boolean;
  /**
   * The endpoint check: `verified` (attested), `no-token` (no loopback token in this keychain),
   * `unverified` (it failed the attestation), `no-answer` (nothing answers).
   */
  readonly endpoint: 'verified' | 'no-token' | 'unverified' | 'no-answer';
  /** The runtime state `up` published, or null. */
  readonly runtimeState: string | null;
}

/** Reason slugs, stable for `--json` (`unavailableReason`). */
export type UnavailableReason =
  | 'no-hub'
  | 'keychain-locked'
  | 'keychain-unavailable'
  | 'not-signed-in'
  | 'no-model'
  | 'model-changed'
  | 'up-not-running'
  | 'no-loopback-token'
  | 'endpoint-unverified'
  | 'up-not-answering'
  | 'runtime-failed'
  | 'runtime-not-ready'
  | 'runtime-unhealthy';

export interface Unavailability {
  readonly reason: UnavailableReason;
  readonly code: ErrorCode;
  /** One line: what is wrong; what to do. No secret, no path. */
  readonly message: string;
}

/** One reason: when it applies, and its code and line (fixed, or from the facts). */
interface ReasonRule {
  readonly reason: UnavailableReason;
  readonly applies: (facts: AvailabilityFacts) => boolean;
  readonly code: ErrorCode | ((facts: AvailabilityFacts) => ErrorCode);
  readonly message: string | ((facts: AvailabilityFacts) => string);
}

/** The reasons in the order a user would fix them; the first that applies is the one shown. */
const REASONS: readonly ReasonRule[] = [
  {
    reason: 'no-hub',
    applies: (f) => !f.hubConfigured,
    code: 'ERR_USAGE',
    message: 'no hub configured, so the local companion cannot be checked: pass --hub URL or set COMPANION_HUB',
  },
  {
    reason: 'keychain-locked',
    applies: (f) => f.keychain === 'ERR_KEYCHAIN_LOCKED',
    code: 'ERR_KEYCHAIN_LOCKED',
    message: 'the keychain is locked, so the local companion cannot be reached: unlock it and try again',
  },
  {
    reason: 'keychain-unavailable',
    applies: (f) => f.keychain !== 'available',
    code: (f) => (/^ERR_KEYCHAIN_[A-Z_]+$/.test(f.keychain) ? (f.keychain as ErrorCode) : 'ERR_KEYCHAIN_FAILURE'),
    message: 'the keychain cannot be used, so the local companion cannot be reached: run companion doctor',
  },
  {
    reason: 'no-model',
    applies: (f) => f.model === 'none' && f.signedIn,
    code: 'ERR_MODEL_NOT_INSTALLED',
    message: 'no model is installed: run companion pull, then companion up',
  },
  {
    reason: 'not-signed-in',
    applies: (f) => f.model === 'none',
    code: 'ERR_NOT_SIGNED_IN',
    message: 'not signed in and no model installed: run companion login, companion pull, then companion up',
  },
  {
    reason: 'model-changed',
    applies: (f) => f.model === 'changed',
    code: 'ERR_MODEL_CHANGED',
    message: 'the installed model changed since it was verified: run companion pull, then restart companion up',
  },
  {
    reason: 'up-not-running',
    applies: (f) => !f.upRunning,
    code: 'ERR_UPSTREAM_UNAVAILABLE',
    message: 'companion up is not running: start it with companion up',
  },
  {
    reason: 'no-loopback-token',
    applies: (f) => f.endpoint === 'no-token',
    code: 'ERR_ENDPOINT_UNVERIFIED',
    message: 'companion up is running but its loopback token is not in this keychain: restart companion up',
  },
  {
    reason: 'endpoint-unverified',
    applies: (f) => f.endpoint === 'unverified',
    code: 'ERR_ENDPOINT_UNVERIFIED',
    message: 'the recorded endpoint failed the attestation: restart companion up',
  },
  {
    reason: 'up-not-answering',
    applies: (f) => f.endpoint === 'no-answer',
    code: 'ERR_UPSTREAM_UNAVAILABLE',
    message: 'companion up is running but its endpoint does not answer: restart companion up',
  },
  {
    reason: 'runtime-failed',
    applies: (f) => f.runtimeState === 'failed',
    code: 'ERR_UPSTREAM_UNAVAILABLE',
    message: 'the runtime failed and stopped restarting: restart companion up',
  },
  {
    reason: 'runtime-not-ready',
    applies: (f) => f.runtimeState !== 'ready' && f.runtimeState !== 'degraded',
    code: 'ERR_ADMISSION_NOT_READY',
    message: (f) => `the runtime is ${f.runtimeState ?? 'not started'}, not ready yet: wait a moment and try again`,
  },
];

/** When no other reason applies: the runtime runs but the front door's health check said no. */
const UNHEALTHY: ReasonRule = {
  reason: 'runtime-unhealthy',
  applies: () => true,
  code: 'ERR_RUNTIME_UNHEALTHY',
  message: 'the runtime does not pass its health check: wait a moment; if it persists, restart companion up',
};

/**
 * Why the companion is not available, for a caller whose availability check said no: the first reason
 * the facts show, else `runtime-unhealthy` (everything else in order, so the health check failed).
 */
export function unavailability(facts: AvailabilityFacts): Unavailability {
  const rule = REASONS.find((candidate) => candidate.applies(facts)) ?? UNHEALTHY;
  return {
    reason: rule.reason,
    code: typeof rule.code === 'function' ? rule.code(facts) : rule.code,
    message: typeof rule.message === 'function' ? rule.message(facts) : rule.message,
  };
}

/** A time as `YYYY-MM-DD HH:MM:SS (local)` in this machine's time zone. */
export function localTime(epochMs: number): string {
  const d = new Date(epochMs);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} (local)`;
}
