/**
 * Token custody (CONTRACT §2, D5.3; threats P-f, P-g): what is stored under each of the four
 * {@link KEYCHAIN_ACCOUNTS}, when the access token is usable, when to refresh, how a new token set is
 * stored (atomic from the caller's view) and sign-out. Pure: the keychain is an injected port and the
 * clock an injected function; custody keeps no token in memory and has no other store to fall back to.
 *
 * The four accounts (docs/decisions.md, "Keychain accounts"):
 * - `refresh-token`: the refresh token, as is.
 * - `access-token`: JSON `{ v: 1, accessToken, expiresAt, scope, subject?, binding }`; `binding` ties it to
 *   the refresh token stored beside it (a digest prefix), so a half-written pair is detected and not used.
 *   It is always written last: a refresh token with no access item is a store that stopped halfway.
 * - `loopback-token`: the front door's bearer token (base64url, 256 bits).
 * - `installation-id`: a random id of this installation (a UUID), not a secret.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  CompanionError,
  assertFunction,
  assertInteger,
  assertObject,
  isCompanionError,
  CodedTypeError,
} from './errors.js';
import { KEYCHAIN_ACCOUNTS, isKeychainAccount, type Keychain, type KeychainAccount } from './keychain-port.js';
import { Secret, isSecret } from './secret.js';
import type { TokenSet } from './oauth.js';

/** What custody knows about the sign-in, without any secret. */
export interface CustodyState {
  /**
   * True when the stored items belong together and hold a fresh access token or a refresh token.
   * (An expired access token with a refresh token is still signed in: the next call refreshes.)
   */
  readonly signedIn: boolean;
  /** When the stored access token expires (ms since the epoch), or null. */
  readonly expiresAt: number | null;
  /** The ID token's `sub`, when one was received. */
  readonly subject?: string;
  /** The granted scope stored with the access token (pass it as `requestedScope` when refreshing). */
  readonly scope: readonly string[];
  /**
   * True when the keychain holds items that do not belong together (a store that failed halfway and
   * could not be cleaned up) or an unreadable item: nothing is used; sign out and sign in again.
   */
  readonly damaged: boolean;
}

/** What to do next for an authorized call. */
export type CustodyNextStep =
  | { readonly action: 'use'; readonly accessToken: Secret }
  | { readonly action: 'refresh'; readonly refreshToken: Secret }
  | { readonly action: 'sign-in' };

/** Which keychain accounts a sign-out deleted; `failed` is empty when it returns (else it throws). */
export interface SignOutResult {
  readonly deleted: KeychainAccount[];
  readonly failed: KeychainAccount[];
}

/**
 * Token custody (see the file comment). Every method reads the keychain afresh: custody keeps no token in
 * memory. Keychain errors pass up with their codes (ERR_KEYCHAIN_*).
 */
export interface Custody {
  /** Stores the token set of a new sign-in: replaces everything, drops any earlier refresh token. */
  storeTokens(tokenSet: TokenSet): Promise<void>;
  /**
   * Stores the token set of a refresh: the new refresh token replaces the old one (rotation); when the
   * hub did not rotate (`refreshToken: null`), the current one is kept (RFC 6749 §6).
   */
  storeRefreshedTokens(tokenSet: TokenSet): Promise<void>;
  /** The access token when it is valid for more than the skew margin, else null. */
  accessTokenIfFresh(): Promise<Secret | null>;
  /** True when the access token is missing or about to expire and a refresh token is held. */
  needsRefresh(): Promise<boolean>;
  /** The one decision a caller needs before an authorized call. */
  nextStep(): Promise<CustodyNextStep>;
  /** The stored refresh token, or null (also null when the stored items do not belong together). */
  refreshToken(): Promise<Secret | null>;
  /** Deletes all four accounts; throws ERR_CUSTODY_SIGNOUT_INCOMPLETE (detail.failed) if any failed. */
  signOut(): Promise<SignOutResult>;
  /** Deletes the two token accounts only (keeps the installation id and the loopback token). */
  forgetTokens(): Promise<SignOutResult>;
  /** The stored loopback token, or null when there is none or it is not one custody wrote. */
  loopbackToken(): Promise<Secret | null>;
  /**
   * Stores `token` as the loopback token: ERR_INVALID_ARG_TYPE when it is not a Secret,
   * ERR_INVALID_ARG_VALUE when it is not 43 to 128 base64url characters.
   */
  setLoopbackToken(token: Secret): Promise<void>;
  /** The stored loopback token, or a new random one stored first. */
  ensureLoopbackToken(): Promise<Secret>;
  /** This installation's id, created (random UUID) and stored the first time. */
  installationId(): Promise<string>;
  /** What custody knows about the sign-in, without any secret. */
  state(): Promise<CustodyState>;
}

/** The ports custody works over. */
export interface CustodyOptions {
  /** The keychain backend; custody wraps it with {@link guardKeychain}. */
  readonly keychain: Keychain;
  /** The clock, ms since the epoch. */
  readonly now: () => number;
  /** An access token this close to its expiry counts as expired (default 60 000 ms). */
  readonly skewMs?: number;
}

/** How close to its expiry an access token counts as expired by default: one minute, for clock drift and the call's own time. */
export const DEFAULT_SKEW_MS = 60_000;
const MAX_ITEM = 32_768;
const LOOPBACK_TOKEN = /^[A-Za-z0-9_-]{43,128}$/;
const INSTALLATION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Wraps a keychain so that only the four {@link KEYCHAIN_ACCOUNTS} reach it (P-g): any other name (or a
 * non-string) is refused with ERR_KEYCHAIN_ACCOUNT before the backend is called. Errors the backend
 * throws pass up unchanged when they are coded; anything else becomes ERR_KEYCHAIN_FAILURE with no cause.
 */
export function guardKeychain(keychain: Keychain): Keychain {
  assertObject(keychain, 'keychain');
  assertFunction(keychain.get, 'keychain.get');
  assertFunction(keychain.set, 'keychain.set');
  assertFunction(keychain.delete, 'keychain.delete');
  const check = (account: unknown): KeychainAccount => {
    if (!isKeychainAccount(account)) throw new CompanionError('ERR_KEYCHAIN_ACCOUNT');
    return account;
  };
  const call = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      // A backend error without our code might carry anything: keep none of it.
      if (isCompanionError(error)) throw error;
      throw new CompanionError('ERR_KEYCHAIN_FAILURE');
    }
  };
  return Object.freeze({
    async get(account: KeychainAccount): Promise<string | null> {
      const name = check(account);
      const value = await call(() => keychain.get(name));
      if (value !== null && typeof value !== 'string')
        throw new CompanionError('ERR_KEYCHAIN_FAILURE', 'the keychain returned a value that is not text');
      return value;
    },
    async set(account: KeychainAccount, value: string): Promise<void> {
      const name = check(account);
      if (typeof value !== 'string' || value.length === 0)
        throw new CompanionError('ERR_KEYCHAIN_FAILURE', 'refusing to store an empty value');
      await call(() => keychain.set(name, value));
    },
    async delete(account: KeychainAccount): Promise<boolean> {
      const name = check(account);
      return (await call(() => keychain.delete(name))) === true;
    },
  });
}

/** A short digest of the refresh token, stored with the access token to tie the pair together. */
function bindingOf(refreshToken: string | null): string | null {
  return refreshToken === null
    ? null
    : createHash('sha256').update(refreshToken, 'utf8').digest('base64url').slice(0, 22);
}

interface AccessItem {
  readonly accessToken: string;
  readonly expiresAt: number;
  readonly scope: readonly string[];
  readonly subject?: string;
  readonly binding: string | null;
}

function encodeAccessItem(item: AccessItem): string {
  return JSON.stringify({ v: 1, ...item });
}

/** Parses the access-token item; null when it is not one this version wrote. */
function decodeAccessItem(text: string): AccessItem | null {
  if (text.length > MAX_ITEM) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  if (v.v !== 1) return null;
  if (typeof v.accessToken !== 'string' || v.accessToken.length === 0) return null;
  if (typeof v.expiresAt !== 'number' || !Number.isSafeInteger(v.expiresAt)) return null;
  if (!Array.isArray(v.scope) || !v.scope.every((s) => typeof s === 'string')) return null;
  if (v.subject !== undefined && typeof v.subject !== 'string') return null;
  if (v.binding !== null && typeof v.binding !== 'string') return null;
  return {
    accessToken: v.accessToken,
    expiresAt: v.expiresAt,
    scope: Object.freeze([...(v.scope as string[])]),
    ...(typeof v.subject === 'string' ? { subject: v.subject } : {}),
    binding: v.binding,
  };
}

function checkTokenSet(tokenSet: TokenSet): void {
  assertObject(tokenSet, 'tokenSet');
  if (!isSecret(tokenSet.accessToken)) throw typeError('tokenSet.accessToken must be a Secret');
  if (tokenSet.refreshToken !== null && !isSecret(tokenSet.refreshToken))
    throw typeError('tokenSet.refreshToken must be a Secret or null');
  assertInteger(tokenSet.expiresAt, 'tokenSet.expiresAt', 0);
  if (!Array.isArray(tokenSet.scope) || !tokenSet.scope.every((s) => typeof s === 'string'))
    throw typeError('tokenSet.scope must be a list of strings');
}

function typeError(message: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_TYPE', message);
}

/** The code of a keychain error, for `detail` (never the error itself: it is not ours to vouch for). */
function keychainCode(error: unknown): string {
  return isCompanionError(error) ? error.code : 'ERR_KEYCHAIN_FAILURE';
}

/** What custody works over: the guarded keychain, the checked clock and the skew margin. */
interface CustodyContext {
  readonly keychain: Keychain;
  readonly now: () => number;
  readonly skewMs: number;
}

/** Both token items as read, and whether they belong together. */
interface Snapshot {
  readonly access: AccessItem | null;
  readonly refresh: string | null;
  readonly damaged: boolean;
}

/**
 * Custody over the keychain port. Every keychain call goes through {@link guardKeychain}; a locked or
 * unavailable keychain is an error passed up with its code (ERR_KEYCHAIN_LOCKED, …), except while
 * storing new tokens, where it becomes ERR_CUSTODY_STORE_FAILED (see {@link Custody.storeTokens}).
 * @throws TypeError `ERR_INVALID_ARG_*` for a bad option (the methods: ERR_INVALID_ARG_TYPE for a bad token
 *   set or token, ERR_INVALID_ARG_VALUE for a loopback token of the wrong shape); `signOut()` and
 *   `forgetTokens()` reject with ERR_CUSTODY_SIGNOUT_INCOMPLETE when an item could not be deleted.
 */
export function createCustody(options: CustodyOptions): Custody {
  assertObject(options, 'options');
  const keychain = guardKeychain(options.keychain);
  assertFunction(options.now, 'now');
  const skewMs = options.skewMs ?? DEFAULT_SKEW_MS;
  assertInteger(skewMs, 'skewMs', 0, 24 * 3600 * 1000);
  const ctx: CustodyContext = { keychain, now: checkedClock(options.now), skewMs };
  return Object.freeze({
    storeTokens: (tokenSet: TokenSet) => storeTokens(ctx, tokenSet),
    storeRefreshedTokens: (tokenSet: TokenSet) => storeRefreshedTokens(ctx, tokenSet),
    accessTokenIfFresh: () => accessTokenIfFresh(ctx),
    needsRefresh: () => needsRefresh(ctx),
    nextStep: () => nextStep(ctx),
    refreshToken: () => refreshToken(ctx),
    signOut: () => deleteAll(keychain, KEYCHAIN_ACCOUNTS),
    forgetTokens: () => deleteAll(keychain, ['access-token', 'refresh-token']),
    loopbackToken: () => loopbackToken(keychain),
    setLoopbackToken: (token: Secret) => setLoopbackToken(keychain, token),
    ensureLoopbackToken: () => ensureLoopbackToken(keychain),
    installationId: () => installationId(keychain),
    state: () => state(ctx),
  });
}

/** The injected clock, checked on every call (a clock that returns nonsense must not make a token fresh). */
function checkedClock(clock: () => number): () => number {
  return () => {
    const t = clock();
    if (typeof t !== 'number' || !Number.isFinite(t)) throw typeError('now() must return a finite number');
    return t;
  };
}

/** Reads both token items and checks that they belong together. Keychain errors pass up. */
async function readSnapshot(keychain: Keychain): Promise<Snapshot> {
  const accessText = await keychain.get('access-token');
  const refresh = await keychain.get('refresh-token');
  // Every store writes the access item last: a refresh token without one is a store that stopped halfway.
  if (accessText === null) return { access: null, refresh: null, damaged: refresh !== null };
  const access = decodeAccessItem(accessText);
  if (access === null) return { access: null, refresh: null, damaged: true };
  // Written together; a mismatch means a store failed halfway: use neither.
  if (access.binding !== bindingOf(refresh)) return { access: null, refresh: null, damaged: true };
  return { access, refresh, damaged: false };
}

function isFresh(ctx: CustodyContext, access: AccessItem | null): access is AccessItem {
  return access !== null && ctx.now() < access.expiresAt - ctx.skewMs;
}

/** Deletes the token items after a failed store; returns whether everything could be deleted. */
async function scrubTokens(keychain: Keychain): Promise<boolean> {
  let clean = true;
  for (const account of ['access-token', 'refresh-token'] as const) {
    try {
      await keychain.delete(account);
    } catch {
      clean = false;
    }
  }
  return clean;
}

/** The failed store, after scrubbing: which account failed, the keychain's code, whether the scrub worked. */
async function storeFailed(keychain: Keychain, account: KeychainAccount, error: unknown): Promise<CompanionError> {
  const scrubbed = await scrubTokens(keychain);
  return new CompanionError('ERR_CUSTODY_STORE_FAILED', undefined, {
    detail: { account, keychain: keychainCode(error), scrubbed },
  });
}

/**
 * Writes the refresh token first, then the access item bound to it. Any failure scrubs both items and
 * throws ERR_CUSTODY_STORE_FAILED (signed out with an error); if even the scrub fails, the binding
 * makes the leftover pair unusable (state().damaged).
 */
async function writeTokens(keychain: Keychain, tokenSet: TokenSet, refresh: string | null): Promise<void> {
  const item: AccessItem = {
    accessToken: tokenSet.accessToken.reveal(),
    expiresAt: tokenSet.expiresAt,
    scope: [...tokenSet.scope],
    ...(tokenSet.idTokenClaims === undefined ? {} : { subject: tokenSet.idTokenClaims.sub }),
    binding: bindingOf(refresh),
  };
  let step: 'refresh-token' | 'access-token' = 'refresh-token';
  try {
    if (refresh === null) await keychain.delete('refresh-token');
    else await keychain.set('refresh-token', refresh);
    step = 'access-token';
    await keychain.set('access-token', encodeAccessItem(item));
  } catch (error) {
    throw await storeFailed(keychain, step, error);
  }
}

/** Deletes `accounts`; throws ERR_CUSTODY_SIGNOUT_INCOMPLETE (naming the accounts and codes) if any failed. */
async function deleteAll(keychain: Keychain, accounts: readonly KeychainAccount[]): Promise<SignOutResult> {
  const deleted: KeychainAccount[] = [];
  const failed: KeychainAccount[] = [];
  const codes: string[] = [];
  for (const account of accounts) {
    try {
      await keychain.delete(account);
      deleted.push(account);
    } catch (error) {
      failed.push(account);
      codes.push(keychainCode(error));
    }
  }
  if (failed.length > 0) {
    throw new CompanionError(
      'ERR_CUSTODY_SIGNOUT_INCOMPLETE',
      `${failed.length} keychain item(s) could not be deleted: ${failed.join(', ')}`,
      {
        detail: { failed: failed.join(','), deleted: deleted.join(','), keychain: [...new Set(codes)].join(',') },
      },
    );
  }
  return { deleted, failed };
}

/** {@link Custody.storeTokens}. */
async function storeTokens(ctx: CustodyContext, tokenSet: TokenSet): Promise<void> {
  checkTokenSet(tokenSet);
  await writeTokens(ctx.keychain, tokenSet, tokenSet.refreshToken === null ? null : tokenSet.refreshToken.reveal());
}

/** {@link Custody.storeRefreshedTokens}. */
async function storeRefreshedTokens(ctx: CustodyContext, tokenSet: TokenSet): Promise<void> {
  checkTokenSet(tokenSet);
  let refresh: string | null;
  if (tokenSet.refreshToken !== null) refresh = tokenSet.refreshToken.reveal();
  else {
    // Not rotated: keep the current refresh token, but only one that belongs to the stored pair.
    let current: Snapshot;
    try {
      current = await readSnapshot(ctx.keychain);
    } catch (error) {
      throw await storeFailed(ctx.keychain, 'refresh-token', error);
    }
    refresh = current.damaged ? null : current.refresh;
  }
  await writeTokens(ctx.keychain, tokenSet, refresh);
}

async function accessTokenIfFresh(ctx: CustodyContext): Promise<Secret | null> {
  const { access } = await readSnapshot(ctx.keychain);
  return isFresh(ctx, access) ? new Secret(access.accessToken) : null;
}

async function needsRefresh(ctx: CustodyContext): Promise<boolean> {
  const { access, refresh } = await readSnapshot(ctx.keychain);
  return !isFresh(ctx, access) && refresh !== null;
}

async function nextStep(ctx: CustodyContext): Promise<CustodyNextStep> {
  const { access, refresh } = await readSnapshot(ctx.keychain);
  if (isFresh(ctx, access)) return { action: 'use', accessToken: new Secret(access.accessToken) };
  if (refresh !== null) return { action: 'refresh', refreshToken: new Secret(refresh) };
  return { action: 'sign-in' };
}

async function refreshToken(ctx: CustodyContext): Promise<Secret | null> {
  const { refresh } = await readSnapshot(ctx.keychain);
  return refresh === null ? null : new Secret(refresh);
}

async function loopbackToken(keychain: Keychain): Promise<Secret | null> {
  const value = await keychain.get('loopback-token');
  return value === null || !LOOPBACK_TOKEN.test(value) ? null : new Secret(value);
}

/** {@link Custody.setLoopbackToken}: ERR_INVALID_ARG_TYPE for a non-Secret, ERR_INVALID_ARG_VALUE for a bad shape. */
async function setLoopbackToken(keychain: Keychain, token: Secret): Promise<void> {
  if (!isSecret(token)) throw typeError('token must be a Secret');
  if (!LOOPBACK_TOKEN.test(token.reveal())) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'the loopback token must be 43 to 128 base64url characters');
  }
  await keychain.set('loopback-token', token.reveal());
}

async function ensureLoopbackToken(keychain: Keychain): Promise<Secret> {
  const current = await keychain.get('loopback-token');
  if (current !== null && LOOPBACK_TOKEN.test(current)) return new Secret(current);
  const fresh = randomBytes(32).toString('base64url');
  await keychain.set('loopback-token', fresh);
  return new Secret(fresh);
}

async function installationId(keychain: Keychain): Promise<string> {
  const current = await keychain.get('installation-id');
  if (current !== null && INSTALLATION_ID.test(current)) return current;
  // Absent or not one we wrote: a new id (it identifies nothing but this installation).
  const id = randomUUID();
  await keychain.set('installation-id', id);
  return id;
}

async function state(ctx: CustodyContext): Promise<CustodyState> {
  const { access, refresh, damaged } = await readSnapshot(ctx.keychain);
  const signedIn = !damaged && (isFresh(ctx, access) || refresh !== null);
  return Object.freeze({
    signedIn,
    expiresAt: access === null ? null : access.expiresAt,
    ...(access?.subject === undefined ? {} : { subject: access.subject }),
    scope: access === null ? Object.freeze([]) : access.scope,
    damaged,
  });
}
