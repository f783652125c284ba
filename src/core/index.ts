/** The pure cores, as a library. */
export * from './errors.js';
export { Secret, isSecret } from './secret.js';
export {
  verifyLoopbackRequest,
  allowedHostsFor,
  createTokenVerifier,
  isLoopbackAddress,
  GUARD_REFUSALS,
  MAX_TARGET_LENGTH,
  MAX_TOKEN_LENGTH,
  MIN_TOKEN_LENGTH,
  type GuardRequest,
  type GuardRoute,
  type GuardPolicy,
  type GuardDecision,
  type GuardRefusalCode,
} from './guard.js';
export {
  selectLane,
  CONTEXT_TIERS,
  LANE_PREFERENCES,
  type ContextTier,
  type LanePreference,
  type Lane,
  type LanePolicy,
  type LaneRequest,
  type LaneDecision,
} from './lane.js';
export {
  transition,
  canTransition,
  initialLifecycle,
  createRestartPolicy,
  restartDelayMs,
  DEFAULT_RESTART_POLICY,
  LIFECYCLE_STATES,
  LIFECYCLE_EVENTS,
  LIFECYCLE_TABLE,
  STOP_GRACE_MS,
  type LifecycleState,
  type LifecycleEvent,
  type LifecycleSnapshot,
  type RestartPolicy,
} from './lifecycle.js';
export {
  createAdmission,
  NOT_READY_RETRY_AFTER_SECONDS,
  type Admission,
  type AdmissionOptions,
  type AdmissionStats,
  type AdmissionTimers,
  type Release,
} from './admission.js';
export {
  createIntegrityAccumulator,
  isVerifiedIntegrity,
  type IntegrityAccumulator,
  type VerifiedIntegrity,
} from './integrity.js';
export {
  decideResources,
  RESOURCE_REASONS,
  DEFAULT_DEGRADE_AT,
  type ResourceFigures,
  type ResourceLimits,
  type ResourceDecision,
  type ResourceDecisionKind,
  type ResourceReason,
} from './resources.js';
export {
  createPkcePair,
  createState,
  buildLoopbackRedirectUri,
  parseLoopbackRedirectUri,
  discoveryUrl,
  parseIssuerMetadata,
  discoverIssuerMetadata,
  isIssuerMetadata,
  buildAuthorizationUrl,
  validateAuthorizationResponse,
  isValidatedCallback,
  exchangeAuthorizationCode,
  refreshTokens,
  revokeToken,
  sanitizeOAuthText,
  OAUTH_LIMITS,
} from './oauth.js';
export type {
  OAuthFetch,
  OAuthFetchInit,
  IssuerMetadata,
  PkcePair,
  ValidatedCallback,
  IdTokenClaims,
  TokenSet,
} from './oauth.js';
export { createCustody, guardKeychain, DEFAULT_SKEW_MS } from './custody.js';
export type { Custody, CustodyOptions, CustodyState, CustodyNextStep, SignOutResult } from './custody.js';
export {
  verifyManifest,
  isVerifiedManifest,
  isVerifiedModel,
  findModel,
  DEFAULT_MANIFEST_CLOCK_SKEW_MS,
  MAX_MANIFEST_MODELS,
} from './manifest.js';
export type { VerifiedManifest, VerifiedModel, VerifyManifestOptions } from './manifest.js';
export { MAX_MANIFEST_BYTES } from './manifest-format.js';
