/**
 * Why the companion is not available, as one reason with its code and one line saying what to do
 * (issue 18, items 7 and 8). `status` shows it next to `Available: no`; `run` throws it when the lane
 * selector refuses a call that needed the local companion. Pure: the callers gather the facts.
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
  /** The health round trip through the endpoint succeeded, and `up` says it is available. */
  readonly healthy: boolean;
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

/** The first reason the companion is not available, or null when every fact says it is. */
export function unavailability(facts: AvailabilityFacts): Unavailability | null {
  if (!facts.hubConfigured) {
    return {
      reason: 'no-hub',
      code: 'ERR_USAGE',
      message: 'no hub configured, so the local companion cannot be checked: pass --hub URL or set COMPANION_HUB',
    };
  }
  if (facts.keychain !== 'available') {
    return facts.keychain === 'ERR_KEYCHAIN_LOCKED'
      ? {
          reason: 'keychain-locked',
          code: 'ERR_KEYCHAIN_LOCKED',
          message: 'the keychain is locked, so the local companion cannot be reached: unlock it and try again',
        }
      : {
          reason: 'keychain-unavailable',
          code: /^ERR_KEYCHAIN_[A-Z_]+$/.test(facts.keychain) ? (facts.keychain as ErrorCode) : 'ERR_KEYCHAIN_FAILURE',
          message: 'the keychain cannot be used, so the local companion cannot be reached: run companion doctor',
        };
  }
  if (facts.model === 'none') {
    return facts.signedIn
      ? {
          reason: 'no-model',
          code: 'ERR_MODEL_NOT_INSTALLED',
          message: 'no model is installed: run companion pull, then companion up',
        }
      : {
          reason: 'not-signed-in',
          code: 'ERR_NOT_SIGNED_IN',
          message: 'not signed in and no model installed: run companion login, companion pull, then companion up',
        };
  }
  if (facts.model === 'changed') {
    return {
      reason: 'model-changed',
      code: 'ERR_MODEL_CHANGED',
      message: 'the installed model changed since it was verified: run companion pull, then restart companion up',
    };
  }
  if (!facts.upRunning)
    return {
      reason: 'up-not-running',
      code: 'ERR_UPSTREAM_UNAVAILABLE',
      message: 'companion up is not running: start it with companion up',
    };
  if (facts.endpoint === 'no-token') {
    return {
      reason: 'no-loopback-token',
      code: 'ERR_ENDPOINT_UNVERIFIED',
      message: 'companion up is running but its loopback token is not in this keychain: restart companion up',
    };
  }
  if (facts.endpoint === 'unverified') {
    return {
      reason: 'endpoint-unverified',
      code: 'ERR_ENDPOINT_UNVERIFIED',
      message: 'the recorded endpoint failed the attestation: restart companion up',
    };
  }
  if (facts.endpoint === 'no-answer') {
    return {
      reason: 'up-not-answering',
      code: 'ERR_UPSTREAM_UNAVAILABLE',
      message: 'companion up is running but its endpoint does not answer: restart companion up',
    };
  }
  if (facts.runtimeState === 'failed') {
    return {
      reason: 'runtime-failed',
      code: 'ERR_UPSTREAM_UNAVAILABLE',
      message: 'the runtime failed and stopped restarting: restart companion up',
    };
  }
  if (facts.runtimeState !== 'ready' && facts.runtimeState !== 'degraded') {
    return {
      reason: 'runtime-not-ready',
      code: 'ERR_ADMISSION_NOT_READY',
      message: `the runtime is ${facts.runtimeState ?? 'not started'}, not ready yet: wait a moment and try again`,
    };
  }
  if (!facts.healthy) {
    return {
      reason: 'runtime-unhealthy',
      code: 'ERR_RUNTIME_UNHEALTHY',
      message: 'the runtime does not pass its health check: wait a moment; if it persists, restart companion up',
    };
  }
  return null;
}

/** A time as `YYYY-MM-DD HH:MM:SS (local)` in this machine's time zone. */
export function localTime(epochMs: number): string {
  const d = new Date(epochMs);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} (local)`;
}
