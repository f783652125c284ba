/**
 * The lane selector (CONTRACT §1.5, D5.7): routes one LLM call to the companion (local) or the cloud,
 * honouring the data's context tier. Pure; never throws.
 *
 * Fail closed: any value that is not exactly one of the known literals counts as the most restrictive
 * case — an unknown tier is `local-only`, an unknown preference is `local-only`, `companionAvailable`
 * is true only for the boolean `true`, and `privateMayUseCloud` only for the boolean `true`.
 * `local-only` data never goes to the cloud (docs/architecture.md, "Cores"; docs/decisions.md "Lanes").
 */
import type { ErrorCode } from './errors.js';

/** How sensitive the call's context is. */
export type ContextTier = 'public' | 'private' | 'local-only';
/** The user's routing preference. `local-only` keeps every call on this machine. */
export type LanePreference = 'prefer-local' | 'prefer-cloud' | 'local-only';
/** Where one call goes: this machine's companion or the cloud. */
export type Lane = 'companion' | 'cloud';

/** Every {@link ContextTier}, most open first. */
export const CONTEXT_TIERS: readonly ContextTier[] = Object.freeze(['public', 'private', 'local-only']);
/** Every {@link LanePreference}. */
export const LANE_PREFERENCES: readonly LanePreference[] = Object.freeze([
  'prefer-local',
  'prefer-cloud',
  'local-only',
]);

/** The user's lane settings. */
export interface LanePolicy {
  preference: LanePreference;
  /** Whether `private` calls may fall back to the cloud when the companion is not available. */
  privateMayUseCloud: boolean;
}

/** What {@link selectLane} decides over: the call's tier, the companion's availability and the policy. */
export interface LaneRequest {
  tier: ContextTier;
  /** The shell's `companionAvailable` (D5.7); only `true` counts as available. */
  companionAvailable: boolean;
  policy: LanePolicy;
}

/** The chosen lane, or a refusal with `ERR_LANE_LOCAL_ONLY_UNAVAILABLE` / `ERR_LANE_CLOUD_NOT_ALLOWED`. */
export type LaneDecision = { lane: Lane } | { refused: true; code: ErrorCode };

const COMPANION: LaneDecision = Object.freeze({ lane: 'companion' });
const CLOUD: LaneDecision = Object.freeze({ lane: 'cloud' });
const LOCAL_ONLY_UNAVAILABLE: LaneDecision = Object.freeze({ refused: true, code: 'ERR_LANE_LOCAL_ONLY_UNAVAILABLE' });
const CLOUD_NOT_ALLOWED: LaneDecision = Object.freeze({ refused: true, code: 'ERR_LANE_CLOUD_NOT_ALLOWED' });

function field(value: unknown, name: string): unknown {
  try {
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[name] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Chooses the lane for one call.
 *
 * Rules, in order:
 * 1. `local-only` tier or `local-only` preference: the companion if available, else refused with
 *    `ERR_LANE_LOCAL_ONLY_UNAVAILABLE` (never the cloud).
 * 2. `private` tier without `privateMayUseCloud`: the companion if available, else refused with
 *    `ERR_LANE_CLOUD_NOT_ALLOWED`.
 * 3. Otherwise the cloud is allowed: `prefer-cloud` → cloud; `prefer-local` → companion if available,
 *    else cloud.
 *
 * @param request `{ tier, companionAvailable, policy: { preference, privateMayUseCloud } }`; unknown or
 *   missing values are read as the most restrictive case.
 * @returns `{ lane: 'companion' | 'cloud' }` or `{ refused: true, code }`.
 */
export function selectLane(request: LaneRequest): LaneDecision {
  const rawTier = field(request, 'tier');
  const tier: ContextTier = rawTier === 'public' || rawTier === 'private' ? rawTier : 'local-only';
  const available = field(request, 'companionAvailable') === true;
  const policy = field(request, 'policy');
  const rawPreference = field(policy, 'preference');
  const preference: LanePreference =
    rawPreference === 'prefer-local' || rawPreference === 'prefer-cloud' ? rawPreference : 'local-only';
  const privateMayUseCloud = field(policy, 'privateMayUseCloud') === true;

  if (tier === 'local-only' || preference === 'local-only') return available ? COMPANION : LOCAL_ONLY_UNAVAILABLE;
  if (tier === 'private' && !privateMayUseCloud) return available ? COMPANION : CLOUD_NOT_ALLOWED;
  if (preference === 'prefer-cloud') return CLOUD;
  return available ? COMPANION : CLOUD;
}
