/**
 * `companionAvailable` (D5.7), the one decision of whether the local companion may take a request. The
 * supervisor computes it from what it holds; the front door answers `/health` 200 exactly when it is true
 * (it gets an upstream address only then); `status` and `run` read it only through that `/health`
 * (src/shell/discovery.ts). Pure: time comes in as an argument.
 *
 * Why a file of its own, not src/core/lifecycle.ts: the lifecycle is one of four inputs here (with the
 * model's re-verification, a running runtime and the health recency), and the lifecycle core stays a
 * transition table that knows nothing of health samples or models.
 */
import type { LifecycleState } from './lifecycle.js';

/** What the supervisor knows at one moment; every field is a reason to say no. */
export interface AvailabilityInputs {
  /** The lifecycle state: only `ready` serves (`degraded` is doubt). */
  readonly state: LifecycleState;
  /** A runtime process is running (a handle is held). */
  readonly runtimeRunning: boolean;
  /** The installed model was re-verified for this start. */
  readonly modelVerified: boolean;
  /** The latest health sample (ok and when it finished), or null before the first one. */
  readonly lastHealth: { readonly ok: boolean; readonly at: number } | null;
  /** The current time, on the clock `lastHealth.at` was taken with. */
  readonly now: number;
  /** A health success older than this is doubt. */
  readonly recencyMs: number;
}

/**
 * True only when the lifecycle is `ready`, a runtime runs, its model was re-verified for this start, and
 * the latest health sample is a success no older than `recencyMs`. False on any doubt.
 */
export function companionAvailable(inputs: AvailabilityInputs): boolean {
  if (inputs.state !== 'ready' || !inputs.runtimeRunning || !inputs.modelVerified) return false;
  const health = inputs.lastHealth;
  if (health === null || !health.ok) return false;
  return inputs.now - health.at <= inputs.recencyMs;
}
