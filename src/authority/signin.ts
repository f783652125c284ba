/**
 * The sign-in flow driver (D5.2): discovery with the issuer pinned, a one-shot loopback redirect
 * listener, the system browser, the code exchange over verified TLS, and custody. Also refresh (rotation
 * honoured; a refused refresh signs out cleanly) and sign-out (revoke at the hub when possible, delete
 * every keychain item whatever the network does).
 */
import { isTlsError } from '../common/tls.js';
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

/** How long sign-out waits for the hub to confirm the revocation (the local items are deleted first). */
export const DEFAULT_REVOKE_TIMEOUT_MS = 5_000;

/**
 * The injected fetch, with a certificate failure told apart from an unreachable hub: it becomes
 * ERR_HUB_UNREACHABLE with `detail.reason = 'tls'` and a message that names the fix (the core passes our
 * coded errors through; anything else it maps to ERR_HUB_UNREACHABLE with the transport's reason).
 */
function diagnosingFetch(fetch: OAuthFetch): OAuthFetch {
  return async (url, init) => {
    try {
      return await fetch(url, init);
    } catch (error) {
      if (isTlsError(error)) {
        throw new CompanionError('ERR_HUB_UNREACHABLE', 'the hub\'s TLS certificate could not be verified (a hub with a private CA needs --ca FILE)', { detail: { reason: 'tls' } });
      }
      throw error;
    }
  };
}

/** Discovers and validates the hub's metadata (issuer pinned). */
export async function discoverHub(client: HubClient, fetch: OAuthFetch, signal?: AbortSignal): Promise<IssuerMetadata> {
  return discoverIssuerMetadata({ issuer: client.issuer, fetch: diagnosingFetch(fetch), ...(signal ? { signal } : {}) });
}

/**
 * Runs the whole native-app sign-in. Resolves once the tokens are in custody.
 * @throws ERR_OAUTH_* (metadata, denied, timeout, token errors, scope), ERR_SIGNIN_LISTENER,
 * ERR_HUB_UNREACHABLE, ERR_KEYCHAIN_* / ERR_CUSTODY_STORE_FAILED.
 */
export async function signIn(options: SignInOptions): Promise<SignInResult> {
  const now = options.now ?? Date.now;
  const fetch = diagnosingFetch(options.fetch);
  // Discovery first: when the hub is down or not trusted, no listener is ever started.
  const metadata = await discoverHub(options.client, fetch, options.signal);
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
      issuerMetadata: metadata, clientId: options.client.clientId, fetch, redirectUri, callback, verifier: pkce.verifier,
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
  const fetch = diagnosingFetch(options.fetch);
  const metadata = await discoverHub(options.client, fetch, options.signal);
  const state = await options.custody.state();
  let tokens;
  try {
    tokens = await refreshTokens({
      issuerMetadata: metadata, clientId: options.client.clientId, fetch, refreshToken,
      requestedScope: state.scope.length > 0 ? state.scope : options.client.scope, scopeCeiling: options.client.scopeCeiling, now,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (isCompanionError(error, 'ERR_OAUTH_REFRESH_REFUSED')) {
      // The hub says this session is over (reuse detected, revoked or expired): sign out cleanly, say so.
      await options.custody.forgetTokens().catch(() => undefined);
      throw new CompanionError('ERR_OAUTH_REFRESH_REFUSED', 'the hub ended this session (the refresh token was refused); signed out: run `companion login`', error.detail === undefined ? {} : { detail: error.detail });
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

export interface SignOutOptions extends AuthorizedOptions {
  /** Bound on discovery plus revocation at the hub (default {@link DEFAULT_REVOKE_TIMEOUT_MS}). */
  readonly revokeTimeoutMs?: number;
}

/**
 * Signs out (RFC 7009): reads the refresh token, deletes all four keychain items first (so they are gone
 * whatever the network does, even if the process is stopped while the hub is slow), then revokes the
 * refresh token at the hub, bounded by `revokeTimeoutMs`; a failed or slow revocation only makes
 * `revoked` false.
 * @returns `failedAccounts` lists the items that could not be deleted (a locked keychain).
 */
export async function signOut(options: SignOutOptions): Promise<SignOutOutcome> {
  let refreshToken: Secret | null = null;
  try {
    refreshToken = await options.custody.refreshToken();
  } catch {
    refreshToken = null; // a locked keychain: nothing to revoke with, the deletion below says what failed
  }
  let failedAccounts: string[] = [];
  let unexpected: unknown = null;
  try {
    await options.custody.signOut();
  } catch (error) {
    if (isCompanionError(error, 'ERR_CUSTODY_SIGNOUT_INCOMPLETE')) failedAccounts = String(error.detail?.failed ?? '').split(',').filter((s) => s.length > 0);
    else unexpected = error;
  }
  let revoked = false;
  if (refreshToken !== null) {
    const timeout = AbortSignal.timeout(options.revokeTimeoutMs ?? DEFAULT_REVOKE_TIMEOUT_MS);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    try {
      const fetch = diagnosingFetch(options.fetch);
      const metadata = await discoverHub(options.client, fetch, signal);
      revoked = await revokeToken({ issuerMetadata: metadata, clientId: options.client.clientId, token: refreshToken, fetch, tokenTypeHint: 'refresh_token', signal });
    } catch {
      revoked = false;
    }
  }
  if (unexpected !== null) throw unexpected;
  return { revoked, failedAccounts };
}
