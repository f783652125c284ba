/**
 * The sign-in flow driver (D5.2): discovery with the issuer pinned, a one-shot loopback redirect
 * listener, the system browser, the code exchange over verified TLS, and custody. Also refresh (rotation
 * honoured; a refused refresh signs out cleanly) and sign-out (revoke at the hub when possible, delete
 * every keychain item whatever the network does).
 */
import type { Custody } from '../core/custody.js';
import { CompanionError, isCompanionError } from '../core/errors.js';
import {
  buildAuthorizationUrl, buildLoopbackRedirectUri, createPkcePair, createState, discoverIssuerMetadata, exchangeAuthorizationCode,
  refreshTokens, revokeToken, validateAuthorizationResponse, type IssuerMetadata, type OAuthFetch,
} from '../core/oauth.js';
import type { Secret } from '../core/secret.js';
import { startRedirectListener } from './redirect-listener.js';

/** The companion client as registered at the hub (docs/hub.md). */
export interface HubClient {
  /** The issuer URL (https); discovery must name exactly this issuer. */
  readonly issuer: string;
  readonly clientId: string;
  /** What is asked for at sign-in. */
  readonly scope: readonly string[];
  /** The most scope this companion may ever hold. */
  readonly scopeCeiling: readonly string[];
}

export const DEFAULT_SCOPE = ['openid', 'offline_access', 'companion:manifest'] as const;
export const DEFAULT_CLIENT_ID = 'companion';

export interface SignInOptions {
  readonly client: HubClient;
  readonly fetch: OAuthFetch;
  readonly custody: Custody;
  /** Opens the system browser; a rejection means "print the URL and wait". */
  readonly openBrowser?: (url: string) => Promise<void>;
  /** Called with the authorization URL once the listener is up (printed, or sent as a JSON event). */
  readonly onOpen: (url: string, browserOpened: boolean) => void;
  readonly timeoutMs?: number;
  readonly now?: () => number;
  readonly signal?: AbortSignal;
  /** Reason codes of refused callbacks (for logs; never the URL). */
  readonly onRefused?: (code: string) => void;
}

export interface SignInResult {
  readonly subject: string | null;
  readonly expiresAt: number;
  readonly scope: readonly string[];
}

/** Discovers and validates the hub's metadata (issuer pinned). */
export async function discoverHub(client: HubClient, fetch: OAuthFetch, signal?: AbortSignal): Promise<IssuerMetadata> {
  return discoverIssuerMetadata({ issuer: client.issuer, fetch, ...(signal ? { signal } : {}) });
}

/**
 * Runs the whole native-app sign-in. Resolves once the tokens are in custody.
 * @throws ERR_OAUTH_* (metadata, denied, timeout, token errors, scope), ERR_SIGNIN_LISTENER,
 * ERR_HUB_UNREACHABLE, ERR_KEYCHAIN_* / ERR_CUSTODY_STORE_FAILED.
 */
export async function signIn(options: SignInOptions): Promise<SignInResult> {
  const now = options.now ?? Date.now;
  const metadata = await discoverHub(options.client, options.fetch, options.signal);
  const pkce = createPkcePair();
  const state = createState();
  const listener = await startRedirectListener({
    validate: (callbackUrl) => validateAuthorizationResponse({
      callbackUrl, expectedState: state, expectedIssuer: options.client.issuer, issuerMetadata: metadata, clientId: options.client.clientId,
    }),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.onRefused ? { onRefused: options.onRefused } : {}),
  });
  const onAbort = (): void => void listener.cancel();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const redirectUri = buildLoopbackRedirectUri(listener.port, listener.path);
    const url = buildAuthorizationUrl({
      issuerMetadata: metadata, clientId: options.client.clientId, redirectUri, scope: [...options.client.scope], state, codeChallenge: pkce.challenge,
      // OpenID Connect issues a refresh token for offline_access only with prompt=consent.
      prompt: 'consent',
    }).href;
    let opened = false;
    if (options.openBrowser) {
      try {
        await options.openBrowser(url);
        opened = true;
      } catch {
        opened = false; // print the URL instead
      }
    }
    options.onOpen(url, opened);
    const callback = await listener.result;
    const tokens = await exchangeAuthorizationCode({
      issuerMetadata: metadata, clientId: options.client.clientId, fetch: options.fetch, redirectUri, callback, verifier: pkce.verifier,
      requestedScope: options.client.scope, scopeCeiling: options.client.scopeCeiling, now,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    await options.custody.storeTokens(tokens);
    return { subject: tokens.idTokenClaims?.sub ?? null, expiresAt: tokens.expiresAt, scope: tokens.scope };
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await listener.cancel();
  }
}

export interface AuthorizedOptions {
  readonly client: HubClient;
  readonly fetch: OAuthFetch;
  readonly custody: Custody;
  readonly now?: () => number;
  readonly signal?: AbortSignal;
}

/**
 * A fresh access token: the stored one, or a refreshed one (rotation stored by custody). A refused
 * refresh (reused, revoked, expired) forgets the tokens and throws ERR_OAUTH_REFRESH_REFUSED.
 * @throws ERR_NOT_SIGNED_IN when there is nothing to use.
 */
export async function freshAccessToken(options: AuthorizedOptions, force = false): Promise<Secret> {
  const now = options.now ?? Date.now;
  const step = await options.custody.nextStep();
  if (step.action === 'use' && !force) return step.accessToken;
  const refreshToken = step.action === 'refresh' ? step.refreshToken : await options.custody.refreshToken();
  if (refreshToken === null) throw new CompanionError('ERR_NOT_SIGNED_IN');
  const metadata = await discoverHub(options.client, options.fetch, options.signal);
  const state = await options.custody.state();
  let tokens;
  try {
    tokens = await refreshTokens({
      issuerMetadata: metadata, clientId: options.client.clientId, fetch: options.fetch, refreshToken,
      requestedScope: state.scope.length > 0 ? state.scope : options.client.scope, scopeCeiling: options.client.scopeCeiling, now,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (isCompanionError(error, 'ERR_OAUTH_REFRESH_REFUSED')) {
      // The hub says this session is over (reuse detected, revoked or expired): sign out cleanly.
      await options.custody.forgetTokens().catch(() => undefined);
    }
    throw error;
  }
  await options.custody.storeRefreshedTokens(tokens);
  return tokens.accessToken;
}

export interface SignOutOutcome {
  /** True when the hub confirmed the revocation. */
  readonly revoked: boolean;
  readonly failedAccounts: readonly string[];
}

/**
 * Signs out: revokes the refresh token at the hub when it can (errors ignored: the local sign-out goes on
 * whatever the network does), then deletes all four keychain items.
 */
export async function signOut(options: AuthorizedOptions): Promise<SignOutOutcome> {
  let revoked = false;
  try {
    const refreshToken = await options.custody.refreshToken();
    if (refreshToken !== null) {
      const metadata = await discoverHub(options.client, options.fetch, options.signal);
      revoked = await revokeToken({ issuerMetadata: metadata, clientId: options.client.clientId, token: refreshToken, fetch: options.fetch, tokenTypeHint: 'refresh_token' });
    }
  } catch {
    revoked = false;
  }
  try {
    await options.custody.signOut();
    return { revoked, failedAccounts: [] };
  } catch (error) {
    if (isCompanionError(error, 'ERR_CUSTODY_SIGNOUT_INCOMPLETE')) {
      const failed = String(error.detail?.failed ?? '').split(',').filter((s) => s.length > 0);
      return { revoked, failedAccounts: failed };
    }
    throw error;
  }
}
