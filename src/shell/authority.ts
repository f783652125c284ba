/**
 * The authority group (D5.8): keychain, custody, sign-in, manifest fetch with the access token. Built by
 * the shell apart from the runtime group; the runtime group only ever receives values from it (a model
 * entry to download, a token *verifier* and an *attestor* for the front door), never this object.
 */
import { openKeychain, keychainServiceFor, type OsKeychain } from '../authority/keychain.js';
import { fetchManifestBytes } from '../authority/manifest-fetch.js';
import {
  DEFAULT_CLIENT_ID,
  DEFAULT_SCOPE,
  freshAccessToken,
  signIn,
  signOut,
  type HubClient,
  type SignInResult,
  type SignOutOutcome,
} from '../authority/signin.js';
import { createCustody, type Custody, type CustodyState } from '../core/custody.js';
import { CompanionError, isCompanionError } from '../core/errors.js';
import { createAttestor, type Attestor } from '../core/attest.js';
import { createTokenVerifier } from '../core/guard.js';
import { parseTrustedKeys } from '../core/manifest-format.js';
import { verifyManifest, type VerifiedManifest } from '../core/manifest.js';
import { Secret } from '../core/secret.js';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { ensurePrivateDir, readJsonFile, writePrivateFileAtomic } from '../common/private-file.js';
import type { OAuthFetch } from '../core/oauth.js';

export interface AuthorityOptions {
  /** The hub's issuer URL (https). */
  readonly hub: string;
  /**
   * The data dir's installation key (src/shell/config.ts `installationKey`): the keychain service is
   * `companion:<hub origin>#<key>`, so two data dirs on one hub keep their own items (loopback token,
   * sign-in, installation id).
   */
  readonly installationKey: string;
  readonly keychain: 'os' | 'memory';
  /** A fetch that verifies TLS against the platform roots plus the extra CA. */
  readonly fetch: typeof globalThis.fetch;
  /** Pinned manifest keys (`ed25519:…`, comma-separated). */
  readonly manifestKeys: string | null;
  /** Where the last accepted manifest version is kept (rollback protection). */
  readonly manifestVersionFile: string;
  readonly announce?: (line: string) => void;
  readonly clientId?: string;
  readonly now?: () => number;
  /** An existing keychain (the demo shares one in-memory store between steps). */
  readonly keychainInstance?: OsKeychain;
}

/** What the front door gets from the loopback token: checks and proofs, never the token itself. */
export interface LoopbackCapabilities {
  readonly verifyToken: (candidate: string) => boolean;
  readonly attest: Attestor;
}

/** The authority group's capabilities, as the shell wires them (it never hands them to the runtime group). */
export interface AuthorityGroup {
  readonly client: HubClient;
  readonly keychain: OsKeychain;
  readonly custody: Custody;
  signIn(options: {
    openBrowser?: (url: string) => Promise<void>;
    onOpen: (url: string, opened: boolean) => void;
    timeoutMs?: number;
    signal?: AbortSignal;
  }): Promise<SignInResult>;
  signOut(): Promise<SignOutOutcome>;
  state(): Promise<CustodyState>;
  /** Fetches and verifies the manifest (refreshing the access token once if the hub refuses it). */
  fetchManifest(): Promise<VerifiedManifest>;
  /** Stores a new random loopback token for this `up` and returns the verifier for the front door. */
  rotateLoopbackToken(): Promise<(candidate: string) => boolean>;
  /**
   * Stores a new random loopback token for this `up` and returns the front door's two capabilities built
   * from it: the token verifier and the attestor (src/core/attest.ts). Neither reveals the token.
   */
  rotateLoopbackCapabilities(): Promise<LoopbackCapabilities>;
  /** The stored loopback token (for `companion endpoint`, which prints it on purpose). */
  loopbackToken(): Promise<Secret | null>;
}

async function readLastVersion(file: string): Promise<number | undefined> {
  const stored = await readJsonFile(file);
  const value = typeof stored === 'object' && stored !== null ? (stored as { version?: unknown }).version : undefined;
  return typeof value === 'number' && Number.isSafeInteger(value) ? value : undefined;
}

async function writeLastVersion(file: string, version: number): Promise<void> {
  await ensurePrivateDir(dirname(file));
  // A random O_EXCL|O_NOFOLLOW temp name: a symlink planted at a predictable one is never followed (P-f).
  await writePrivateFileAtomic(file, JSON.stringify({ version }));
}

/**
 * Builds the authority group (D5.8): the hub client, the keychain, custody, sign-in and sign-out, the
 * manifest fetch and the loopback token, apart from the runtime group. Throws what `openKeychain` and
 * `keychainServiceFor` throw (ERR_KEYCHAIN_UNAVAILABLE, ERR_INVALID_ARG_VALUE). Its `fetchManifest()`
 * rejects with ERR_CONFIG when no manifest key is pinned, and with the codes of the sign-in, the fetch
 * and the manifest check otherwise.
 */
export function createAuthorityGroup(options: AuthorityOptions): AuthorityGroup {
  const now = options.now ?? Date.now;
  const client: HubClient = {
    issuer: options.hub,
    clientId: options.clientId ?? DEFAULT_CLIENT_ID,
    scope: [...DEFAULT_SCOPE],
    scopeCeiling: [...DEFAULT_SCOPE],
  };
  const keychain =
    options.keychainInstance ??
    openKeychain({
      backend: options.keychain,
      service: keychainServiceFor(options.hub, options.installationKey),
      ...(options.announce ? { announce: options.announce } : {}),
    });
  const custody = createCustody({ keychain, now });
  const fetch = options.fetch as unknown as OAuthFetch;
  const authorized = { client, fetch, custody, now };

  async function rotateLoopbackCapabilities(): Promise<LoopbackCapabilities> {
    const token = new Secret(randomBytes(32).toString('base64url'));
    await custody.setLoopbackToken(token);
    return { verifyToken: createTokenVerifier(token), attest: createAttestor(token) };
  }

  return {
    client,
    keychain,
    custody,
    signIn: (o) =>
      signIn({
        client,
        fetch,
        custody,
        now,
        onOpen: o.onOpen,
        ...(o.openBrowser ? { openBrowser: o.openBrowser } : {}),
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
      }),
    signOut: () => signOut(authorized),
    state: () => custody.state(),
    async fetchManifest() {
      if (options.manifestKeys === null)
        throw new CompanionError(
          'ERR_CONFIG',
          'no pinned manifest key: pass --manifest-key or set COMPANION_MANIFEST_KEY',
        );
      const trustedKeys = parseTrustedKeys(options.manifestKeys);
      let token = await freshAccessToken(authorized);
      let bytes: Uint8Array;
      try {
        bytes = await fetchManifestBytes({ hubUrl: options.hub, accessToken: token, fetch: options.fetch });
      } catch (error) {
        if (!isCompanionError(error, 'ERR_NOT_SIGNED_IN')) throw error;
        token = await freshAccessToken(authorized, true);
        bytes = await fetchManifestBytes({ hubUrl: options.hub, accessToken: token, fetch: options.fetch });
      }
      const lastSeenVersion = await readLastVersion(options.manifestVersionFile);
      const manifest = verifyManifest(bytes, {
        trustedKeys,
        expectedIssuer: options.hub,
        now: now(),
        ...(lastSeenVersion !== undefined ? { lastSeenVersion } : {}),
      });
      if (lastSeenVersion === undefined || manifest.version > lastSeenVersion)
        await writeLastVersion(options.manifestVersionFile, manifest.version);
      return manifest;
    },
    async rotateLoopbackToken() {
      return (await rotateLoopbackCapabilities()).verifyToken;
    },
    rotateLoopbackCapabilities,
    loopbackToken: () => custody.loopbackToken(),
  };
}
