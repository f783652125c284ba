/**
 * The signed model manifest (docs/hub.md, src/core/manifest-format.ts): what the hub serves at
 * `GET /api/v1/companion/manifest` to a bearer of an access token with the `companion:manifest` scope.
 *
 * The payload is re-signed on every request with a fresh `issuedAt`/`expiresAt`; its `version` changes
 * only when the model list changes (and never goes down, also across restarts with a data directory).
 */
import { createHash, type KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import {
  MANIFEST_PURPOSE,
  encodeManifestPayload,
  signManifestPayload,
  type ManifestEnvelope,
  type ManifestModel,
  type ManifestPayload,
} from '../core/manifest-format.js';
import { readJsonFileSync, writePrivateFileAtomicSync } from '../common/private-file.js';

/** The scope an access token needs to read the manifest. */
export const MANIFEST_SCOPE = 'companion:manifest';
/** Path of the manifest endpoint on the hub origin. */
export const MANIFEST_PATH = '/api/v1/companion/manifest';

interface VersionFile {
  readonly format: 'companion-hub-manifest-state-v1';
  readonly version: number;
  readonly contentDigest: string;
}

/**
 * The manifest version for this content: the stored one when the content is unchanged, otherwise
 * max(stored + 1, now in seconds). Without a data directory: now in seconds, so a restarted in-memory hub
 * does not go below what a companion saw from the last run (given a clock that does not go back).
 */
export function resolveManifestVersion(
  models: readonly ManifestModel[],
  issuer: string,
  dataDir: string | null,
  nowSeconds: number,
): number {
  const contentDigest = createHash('sha256').update(JSON.stringify({ issuer, models })).digest('hex');
  if (dataDir === null) return nowSeconds;
  const path = join(dataDir, 'manifest-state.json');
  const stored = readJsonFileSync(path, 'a hub data file') as VersionFile | null;
  if (stored?.format === 'companion-hub-manifest-state-v1' && Number.isSafeInteger(stored.version)) {
    if (stored.contentDigest === contentDigest) return stored.version;
    const version = Math.max(stored.version + 1, nowSeconds);
    writePrivateFileAtomicSync(
      path,
      JSON.stringify({ format: 'companion-hub-manifest-state-v1', version, contentDigest } satisfies VersionFile),
    );
    return version;
  }
  writePrivateFileAtomicSync(
    path,
    JSON.stringify({
      format: 'companion-hub-manifest-state-v1',
      version: nowSeconds,
      contentDigest,
    } satisfies VersionFile),
  );
  return nowSeconds;
}

/** Builds and signs manifests. */
export class ManifestSigner {
  readonly #issuer: string;
  readonly #privateKey: KeyObject;
  readonly #ttlSeconds: number;
  readonly #models: readonly ManifestModel[];
  readonly #version: number;

  constructor(options: {
    issuer: string;
    privateKey: KeyObject;
    ttlSeconds: number;
    models: readonly ManifestModel[];
    version: number;
  }) {
    this.#issuer = options.issuer;
    this.#privateKey = options.privateKey;
    this.#ttlSeconds = options.ttlSeconds;
    this.#models = options.models;
    this.#version = options.version;
  }

  get version(): number {
    return this.#version;
  }

  get models(): readonly ManifestModel[] {
    return this.#models;
  }

  /** The payload as of `nowSeconds`. */
  payload(nowSeconds: number): ManifestPayload {
    return {
      issuer: this.#issuer,
      purpose: MANIFEST_PURPOSE,
      version: this.#version,
      issuedAt: nowSeconds,
      expiresAt: nowSeconds + this.#ttlSeconds,
      models: this.#models,
    };
  }

  /** A freshly signed envelope. */
  envelope(nowSeconds = Math.floor(Date.now() / 1000)): ManifestEnvelope {
    return signManifestPayload(encodeManifestPayload(this.payload(nowSeconds)), this.#privateKey);
  }
}

/** Outcome of checking a bearer token for the manifest. */
export type TokenCheck =
  { readonly ok: true } | { readonly ok: false; readonly reason: 'invalid_token' | 'insufficient_scope' };

function challenge(
  res: ServerResponse,
  status: 400 | 401 | 403,
  error?: 'invalid_request' | 'invalid_token' | 'insufficient_scope',
): void {
  // RFC 6750 §3: the challenge names the realm and the scope needed; no description that helps probing.
  const parts = ['realm="companion-hub"', `scope="${MANIFEST_SCOPE}"`];
  if (error !== undefined) parts.push(`error="${error}"`);
  const body = Buffer.from(JSON.stringify({ error: error ?? 'unauthorized' }));
  res.writeHead(status, {
    'WWW-Authenticate': `Bearer ${parts.join(', ')}`,
    'Content-Type': 'application/json',
    'Content-Length': String(body.length),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

/**
 * Serves the manifest endpoint: only `GET`, only `Authorization: Bearer` (never a query or body token),
 * 401 with `WWW-Authenticate` for a missing/invalid token, 403 `insufficient_scope` without the scope.
 */
export async function handleManifestRequest(
  req: IncomingMessage,
  res: ServerResponse,
  signer: ManifestSigner,
  checkToken: (token: string) => Promise<TokenCheck>,
): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': '0' });
    res.end();
    return;
  }
  if (req.url !== MANIFEST_PATH) {
    // A query string could carry an access_token; RFC 6750 §2.3 is not supported on purpose.
    challenge(res, 400, 'invalid_request');
    return;
  }
  const authorization = req.headers.authorization;
  const authCount = req.rawHeaders.filter(
    (_, i) => i % 2 === 0 && req.rawHeaders[i]!.toLowerCase() === 'authorization',
  ).length;
  if (authorization === undefined) {
    challenge(res, 401);
    return;
  }
  const match = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/.exec(authorization);
  if (authCount !== 1 || match === null) {
    challenge(res, 400, 'invalid_request');
    return;
  }
  const verdict = await checkToken(match[1]!);
  if (!verdict.ok) {
    challenge(res, verdict.reason === 'insufficient_scope' ? 403 : 401, verdict.reason);
    return;
  }
  const body = Buffer.from(JSON.stringify(signer.envelope()), 'utf8');
  res.writeHead(200, {
    'Content-Type': 'application/json',
    'Content-Length': String(body.length),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}
