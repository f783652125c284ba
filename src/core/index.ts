/** The pure cores, as a library. */
export * from './errors.js';
export { Secret, isSecret } from './secret.js';
export {
  createPkcePair, createState, buildLoopbackRedirectUri, parseLoopbackRedirectUri, discoveryUrl, parseIssuerMetadata,
  discoverIssuerMetadata, isIssuerMetadata, buildAuthorizationUrl, validateAuthorizationResponse, isValidatedCallback,
  exchangeAuthorizationCode, refreshTokens, revokeToken, sanitizeOAuthText, OAUTH_LIMITS,
} from './oauth.js';
export type { OAuthFetch, OAuthFetchInit, IssuerMetadata, PkcePair, ValidatedCallback, IdTokenClaims, TokenSet } from './oauth.js';
export { createCustody, guardKeychain, DEFAULT_SKEW_MS } from './custody.js';
export type { Custody, CustodyOptions, CustodyState, CustodyNextStep, SignOutResult } from './custody.js';
export { verifyManifest, isVerifiedManifest, findModel, DEFAULT_MANIFEST_CLOCK_SKEW_MS, MAX_MANIFEST_BYTES, MAX_MANIFEST_MODELS } from './manifest.js';
export type { VerifiedManifest, VerifyManifestOptions } from './manifest.js';
