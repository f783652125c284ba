/**
 * Resource limits (CONTRACT §2 "runtime manager", D5.6): a pure decision from the resource probe's
 * figures (the runtime's own RSS and CPU, aggregate VRAM) and the configured limits.
 *
 * - `refuse-start`: a hard limit is crossed. Before a start: do not start. While running: the shell
 *   stops admitting work and does not restart the runtime until the decision is `ok` again.
 * - `degraded`: a figure is near a limit (past `degradeAt` of it), or a figure is unknown.
 * - `ok`: every figure is known and inside its limits.
 *
 * Unknown is doubt (D5.7 "false on any doubt"): `rssBytes: null` or `cpuPercent: null` (the probe could
 * not read the runtime's own process) is always at least `degraded`; `vram: null` (the probe failed) is
 * `degraded`; `vram` left out means "no GPU figure", which is only doubt when `minFreeVramBytes` is set.
 * A negative, NaN or infinite figure, or VRAM used above total, counts as unknown. Before a start there
 * is no runtime process yet: pass `0` for its RSS and CPU, not null.
 */
import { assertNumber } from './errors.js';

/** What the resource probe measured; `null` is a figure it could not read. */
export interface ResourceFigures {
  /** Resident memory of the runtime's process tree, in bytes. */
  rssBytes: number | null;
  /** CPU of the runtime's process tree, in percent of one core (may exceed 100 on several cores). */
  cpuPercent: number | null;
  /** Aggregate GPU memory; `null` when the probe failed, left out when there is no GPU figure. */
  vram?: { usedBytes: number; totalBytes: number } | null | undefined;
}

/** The configured limits; a limit left out is not checked. */
export interface ResourceLimits {
  maxRssBytes?: number;
  maxCpuPercent?: number;
  /** Free VRAM (total − used) needed to run. */
  minFreeVramBytes?: number;
  /** Fraction of a limit past which the decision is `degraded` (0 < degradeAt ≤ 1; default 0.9). */
  degradeAt?: number;
}

/** The three outcomes, from best to worst (see the file comment). */
export type ResourceDecisionKind = 'ok' | 'degraded' | 'refuse-start';

/** Stable reason strings, in the order they are checked. */
export const RESOURCE_REASONS = Object.freeze([
  'rss-unknown',
  'rss-over-limit',
  'rss-near-limit',
  'cpu-unknown',
  'cpu-over-limit',
  'cpu-near-limit',
  'vram-unknown',
  'vram-below-minimum',
  'vram-near-minimum',
] as const);
/** One of {@link RESOURCE_REASONS}. */
export type ResourceReason = (typeof RESOURCE_REASONS)[number];

/** The decision and the reasons for it. */
export interface ResourceDecision {
  decision: ResourceDecisionKind;
  /** Why, when not `ok` (empty when `ok`). */
  reasons: ResourceReason[];
}

/** The default `degradeAt`: a figure past 90% of its limit is `degraded`. */
export const DEFAULT_DEGRADE_AT = 0.9;

function known(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

function read(value: unknown, name: string): unknown {
  try {
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[name] : undefined;
  } catch {
    return null;
  }
}

/**
 * Decides from probe figures and limits.
 * @param figures the probe's figures; anything missing or invalid is unknown (never throws on them).
 * @param limits the configured limits; each is optional.
 * @returns `{ decision, reasons }`; the decision is the most severe of all reasons.
 * @throws TypeError `ERR_INVALID_ARG_*` for a bad limit (negative, NaN, `degradeAt` outside (0, 1]).
 */
export function decideResources(figures: ResourceFigures, limits: ResourceLimits = {}): ResourceDecision {
  const { maxRssBytes, maxCpuPercent, minFreeVramBytes } = limits;
  const degradeAt = limits.degradeAt ?? DEFAULT_DEGRADE_AT;
  if (maxRssBytes !== undefined) assertNumber(maxRssBytes, 'maxRssBytes', 0);
  if (maxCpuPercent !== undefined) assertNumber(maxCpuPercent, 'maxCpuPercent', 0);
  if (minFreeVramBytes !== undefined) assertNumber(minFreeVramBytes, 'minFreeVramBytes', 0);
  assertNumber(degradeAt, 'degradeAt', Number.MIN_VALUE, 1);

  const refuse: ResourceReason[] = [];
  const degrade: ResourceReason[] = [];

  const checkMax = (
    value: unknown,
    max: number | undefined,
    unknown: ResourceReason,
    over: ResourceReason,
    near: ResourceReason,
  ): void => {
    if (!known(value)) degrade.push(unknown);
    else if (max === undefined) return;
    else if (value > max) refuse.push(over);
    else if (value > max * degradeAt) degrade.push(near);
  };
  checkMax(read(figures, 'rssBytes'), maxRssBytes, 'rss-unknown', 'rss-over-limit', 'rss-near-limit');
  checkMax(read(figures, 'cpuPercent'), maxCpuPercent, 'cpu-unknown', 'cpu-over-limit', 'cpu-near-limit');

  const vram = read(figures, 'vram');
  if (vram !== undefined || minFreeVramBytes !== undefined) {
    const used = read(vram, 'usedBytes');
    const total = read(vram, 'totalBytes');
    if (!known(used) || !known(total) || used > total) degrade.push('vram-unknown');
    else if (minFreeVramBytes !== undefined) {
      const free = total - used;
      if (free < minFreeVramBytes) refuse.push('vram-below-minimum');
      else if (free * degradeAt < minFreeVramBytes) degrade.push('vram-near-minimum');
    }
  }

  const reasons = RESOURCE_REASONS.filter((r) => refuse.includes(r) || degrade.includes(r));
  const decision: ResourceDecisionKind = refuse.length > 0 ? 'refuse-start' : degrade.length > 0 ? 'degraded' : 'ok';
  return { decision, reasons };
}

/**
 * Memory a runtime needs at least, before it starts: the model's bytes (llama.cpp maps or loads them
 * whole) plus {@link RUNTIME_FLOOR_BYTES} for the runtime itself and a small context. A floor, not a
 * forecast: it refuses a model that cannot fit at all; the running check ({@link decideResources} on the
 * probe's RSS) catches the rest. Grows with a larger context in issue 17's context sizing.
 */
export const RUNTIME_FLOOR_BYTES = 32 * 1024 * 1024;

/** The start-time figures for {@link decideResources}: the runtime's floor need, no CPU yet. */
export function startFigures(modelBytes: number): ResourceFigures {
  assertNumber(modelBytes, 'modelBytes', 0);
  return { rssBytes: modelBytes + RUNTIME_FLOOR_BYTES, cpuPercent: 0 };
}
