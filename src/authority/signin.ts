/**
 * The sign-in flow driver (D5.2): discovery with the issuer pinned, a one-shot loopback redirect
 * listener, the system browser, the code exchange over verified TLS, and custody. Also refresh (rotation
 * honoured; a refused refresh signs out cleanly) and sign-out (revoke at the hub when possible, delete
 * every keychain item whatever the network does).
 */
import type { Custody } from '../core/custody.js';
import { CompanionError, isCompanionError } from '../core/errors.js';
import {
  buildAuthorizationUrl,
  buildLoopbackRedirectUri,
  createPkcePair,
  createState,
  discoverIssuerMetadata,
  exchangeAuthorizationCode,
  refreshTokens,
  revokeToken,
  validateAuthorizationResponse,
  type IssuerMetadata,
  type OAuthFetch,
} from '../core/oauth.js';
import type { Secret } from '../core/secret.js';
import { hubUnreachable } from './hub-errors.js';
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
 * The injected fetch, with every transport failure named: a certificate failure and an unreachable hub
 * become ERR_HUB_UNREACHABLE with the hub's URL, the cause (`connection refused`, `not trusted`, …) and
 * the fix in one line (src/authority/hub-errors.ts). The core passes our coded errors through.
 */
function diagnosingFetch(fetch: OAuthFetch, hubUrl: string): OAuthFetch {
  return async (url, init) => {
    try {
      return await fetch(url, init);
    } catch (error) {
      throw hubUnreachable(hubUrl, error);
    }
  };
}

/** Discovers and validates the hub's metadata (issuer pinned). */
export async function discoverHub(client: HubClient, fetch: OAuthFetch, signal?: AbortSignal): Promise<IssuerMetadata> {
  return discoverIssuerMetadata({
    issuer: client.issuer,
    fetch: diagnosingFetch(fetch, client.issuer),
    ...(signal ? { signal } : {}),
  });
}

/**
 * Runs the whole native-app sign-in. Resolves once the tokens are in custody.
 * @throws ERR_OAUTH_* (metadata, denied, timeout, token errors, scope), ERR_SIGNIN_LISTENER,
 * ERR_HUB_UNREACHABLE, ERR_KEYCHAIN_* / ERR_CUSTODY_STORE_FAILED.
 */
export async function signIn(options: SignInOptions): Promise<SignInResult> {
  const now = options.now ?? Date.now;
  const fetch = diagnosingFetch(options.fetch, options.client.issuer);
  // Discovery first: when the hub is down or not trusted, no listener is ever started.
  const metadata = await discoverHub(options.client, fetch, options.signal);
  const pkce = createPkcePair();
  const state = createState();
  const listener = await startRedirectListener({
    validate: (callbackUrl) =>
      validateAuthorizationResponse({
        callbackUrl,
        expectedState: state,
        expectedIssuer: options.client.issuer,
        issuerMetadata: metadata,
        clientId: options.client.clientId,
      }),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.onRefused ? { onRefused: options.onRefused } : {}),
    // The browser's page waits for the real outcome: "Signed in" only once the tokens are stored.
    awaitOutcome: true,
  });
  const onAbort = (): void => void listener.cancel();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const redirectUri = buildLoopbackRedirectUri(listener.port, listener.path);
    const url = buildAuthorizationUrl({
      issuerMetadata: metadata,
      clientId: options.client.clientId,
      redirectUri,
      scope: [...options.client.scope],
      state,
      codeChallenge: pkce.challenge,
      // OpenID Connect issues a refresh token for offline_access only with prompt=consent.
      prompt: 'consent',
    }).href;
    let opened = false;
    if (options.openBrowser) {
      // A launcher resolves once the browser started; a browser driven in this process (the demo's) resolves
      // only after the page, which is held until the outcome is known. So the flow never waits for more than
      // the first of the two: the launch's result, or the callback arriving (the browser evidently opened).
      // A launch that fails means: print the URL instead.
      const launched = options.openBrowser(url).then(
        () => true,
        () => false,
      );
      opened = await Promise.race([
        launched,
        listener.result.then(
          () => true,
          () => true,
        ),
      ]);
    }
    options.onOpen(url, opened);
    let callback;
    try {
      callback = await listener.result;
    } catch (error) {
      throw explainDenied(error);
    }
    try {
      const tokens = await exchangeAuthorizationCode({
        issuerMetadata: metadata,
        clientId: options.client.clientId,
        fetch,
        redirectUri,
        callback,
        verifier: pkce.verifier,
        requestedScope: options.client.scope,
        scopeCeiling: options.client.scopeCeiling,
        now,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      try {
        await options.custody.storeTokens(tokens);
      } catch (error) {
        throw explainStoreFailure(error);
      }
      listener.complete({ ok: true });
      return { subject: tokens.idTokenClaims?.sub ?? null, expiresAt: tokens.expiresAt, scope: tokens.scope };
    } catch (error) {
      // The page names what went wrong by our code only (a keychain code when storing failed).
      const code = isCompanionError(error)
        ? error.code === 'ERR_CUSTODY_STORE_FAILED' &&
          typeof error.detail?.keychain === 'string' &&
          error.detail.keychain.startsWith('ERR_KEYCHAIN_')
          ? error.detail.keychain
          : error.code
        : 'ERR_INTERNAL';
      listener.complete({ ok: false, code });
      throw error;
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await listener.cancel();
  }
}

/** The user's own "Deny" at the consent page reads as such, not as a hub failure (RFC 6749 §4.1.2.1). */
function explainDenied(error: unknown): unknown {
  if (isCompanionError(error, 'ERR_OAUTH_AUTHORIZATION_DENIED') && error.detail?.error === 'access_denied') {
    return new CompanionError(
      'ERR_OAUTH_AUTHORIZATION_DENIED',
      'you denied access at the hub, so nothing was stored; run companion login again to sign in',
      { detail: error.detail },
    );
  }
  return error;
}

/**
 * A failed store after a successful exchange: one line that says the hub signed the user in, the
 * keychain did not keep the tokens (and why, by code), nothing was kept, and what to do.
 */
function explainStoreFailure(error: unknown): unknown {
  if (!isCompanionError(error, 'ERR_CUSTODY_STORE_FAILED')) return error;
  const keychain = String(error.detail?.keychain ?? '');
  const why =
    keychain === 'ERR_KEYCHAIN_LOCKED'
      ? 'the keychain is locked'
      : keychain === 'ERR_KEYCHAIN_UNAVAILABLE'
        ? 'no keychain service is available'
        : keychain === 'ERR_KEYCHAIN_TIMEOUT'
          ? 'the keychain did not answer in time'
          : 'the keychain reported an error';
  const fix = keychain === 'ERR_KEYCHAIN_LOCKED' ? 'unlock the keychain' : 'check the keychain with companion doctor';
  // A scrub that failed too leaves an item whose binding makes it unusable (custody): nothing *usable* is kept.
  const kept = error.detail?.scrubbed === false ? 'nothing usable was kept' : 'nothing was kept';
  return new CompanionError(
    'ERR_CUSTODY_STORE_FAILED',
    `the hub signed you in, but the tokens could not be stored (${why}${keychain.startsWith('ERR_') ? `: ${keychain}` : ''}), so ${kept}; ${fix}, then run companion login again`,
    error.detail === undefined ? {} : { detail: error.detail },
  );
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
  const fetch = diagnosingFetch(options.fetch, options.client.issuer);
  const metadata = await discoverHub(options.client, fetch, options.signal);
  const state = await options.custody.state();
  let tokens;
  try {
    tokens = await refreshTokens({
      issuerMetadata: metadata,
      clientId: options.client.clientId,
      fetch,
      refreshToken,
      requestedScope: state.scope.length > 0 ? state.scope : options.client.scope,
      scopeCeiling: options.client.scopeCeiling,
      now,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (isCompanionError(error, 'ERR_OAUTH_REFRESH_REFUSED')) {
      // The hub says this session is over (reuse detected, revoked or expired): sign out cleanly, say so.
      await options.custody.forgetTokens().catch(() => undefined);
      throw new CompanionError(
        'ERR_OAUTH_REFRESH_REFUSED',
        'the hub ended this session (the refresh token was refused); signed out: run `companion login`',
        error.detail === undefined ? {} : { detail: error.detail },
      );
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
  /** The keychain's codes for the failed deletions (`ERR_KEYCHAIN_LOCKED`, …); empty when none failed. */
  readonly keychainCodes: readonly string[];
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
  let keychainCodes: string[] = [];
  let unexpected: unknown = null;
  try {
    await options.custody.signOut();
  } catch (error) {
    if (isCompanionError(error, 'ERR_CUSTODY_SIGNOUT_INCOMPLETE')) {
      failedAccounts = String(error.detail?.failed ?? '')
        .split(',')
        .filter((s) => s.length > 0);
      keychainCodes = String(error.detail?.keychain ?? '')
        .split(',')
        .filter((s) => s.length > 0);
    } else {
      unexpected = error;
    }
  }
  let revoked = false;
  if (refreshToken !== null) {
    const timeout = AbortSignal.timeout(options.revokeTimeoutMs ?? DEFAULT_REVOKE_TIMEOUT_MS);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    try {
      const fetch = diagnosingFetch(options.fetch, options.client.issuer);
      const metadata = await discoverHub(options.client, fetch, signal);
      revoked = await revokeToken({
        issuerMetadata: metadata,
        clientId: options.client.clientId,
        token: refreshToken,
        fetch,
        tokenTypeHint: 'refresh_token',
        signal,
      });
    } catch {
      revoked = false;
    }
  }
  if (unexpected !== null) throw unexpected;
  return { revoked, failedAccounts, keychainCodes };
}
