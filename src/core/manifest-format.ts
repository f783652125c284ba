/**
 * The signed model manifest's wire format (docs/manifest.md), shared by the hub (which signs) and the
 * companion (which verifies in `manifest.ts`). Pure: node:crypto only, no I/O.
 *
 * - The payload is UTF-8 JSON; the signature covers its exact bytes (never a re-serialisation).
 * - The envelope served by `GET /api/v1/companion/manifest` is JSON:
 *   `{ "payload": b64url(payload bytes), "signature": b64url(Ed25519 signature), "keyId": string }`.
 * - A public key is written `ed25519:<b64url of the raw 32-byte key>`; several are joined with commas
 *   (key rotation: the companion trusts all of them at once).
 * - `keyId` is the first 22 characters of b64url(SHA-256(raw public key)) (132 bits).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { CompanionError, assertString } from './errors.js';

/** The `purpose` every companion model manifest carries (a signature for another use is refused). */
export const MANIFEST_PURPOSE = 'companion-model-manifest';
/** The prefix of a public key's text form (`ed25519:<b64url of the raw 32-byte key>`). */
export const MANIFEST_KEY_PREFIX = 'ed25519:';
/**
 * The largest manifest envelope accepted, in bytes: by the fetch (which stops reading there) and by the
 * verifier (for bytes, text and the payload field). A manifest lists a handful of models; the reference
 * hub's is under 2 KiB (docs/manifest.md).
 */
export const MAX_MANIFEST_BYTES = 256 * 1024;
/** Model ids become file and directory names: a conservative charset (no dot segments: see `modelFileName`). */
export const MODEL_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A lower-case hex SHA-256 digest. */
export const SHA256_HEX_PATTERN = /^[0-9a-f]{64}$/;

/** Runtime hints of one model (all optional, all advisory). */
export interface ManifestRuntimeHints {
  readonly contextLength?: number;
  readonly chatTemplate?: string;
  readonly minRamMiB?: number;
}

/** One model entry of a manifest payload (its schema is in docs/manifest.md). */
export interface ManifestModel {
  readonly id: string;
  readonly name: string;
  /** https URL on the model host. */
  readonly url: string;
  /** Exact size in bytes. */
  readonly size: number;
  /** Lower-case hex SHA-256 of the model file (64 characters). */
  readonly sha256: string;
  readonly runtime?: ManifestRuntimeHints;
}

/** The fields of a manifest payload other than its models (shared by the payload and the verified manifest). */
export interface ManifestHeader {
  /** The hub's issuer URL (the OAuth issuer). */
  readonly issuer: string;
  readonly purpose: typeof MANIFEST_PURPOSE;
  /** Monotonic version: a companion refuses one lower than it has seen. */
  readonly version: number;
  /** Unix seconds. */
  readonly issuedAt: number;
  /** Unix seconds. */
  readonly expiresAt: number;
}

/** The signed payload: what the hub serialises and signs ({@link encodeManifestPayload}). */
export interface ManifestPayload extends ManifestHeader {
  readonly models: readonly ManifestModel[];
}

/** The envelope the hub serves: the payload bytes, their signature and the signing key's id, each b64url. */
export interface ManifestEnvelope {
  readonly payload: string;
  readonly signature: string;
  readonly keyId: string;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/** The base64url text (no padding) of `bytes`. */
export function toBase64Url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/**
 * Strict base64url decode: refuses padding, other alphabets and non-canonical encodings.
 * @throws ERR_MANIFEST_MALFORMED (the message names `name`, never the text).
 */
export function fromBase64Url(text: string, name: string): Buffer {
  if (typeof text !== 'string' || !B64URL.test(text))
    throw new CompanionError('ERR_MANIFEST_MALFORMED', `${name} is not base64url`);
  const bytes = Buffer.from(text, 'base64url');
  if (bytes.toString('base64url') !== text)
    throw new CompanionError('ERR_MANIFEST_MALFORMED', `${name} is not canonical base64url`);
  return bytes;
}

/**
 * Raw 32-byte Ed25519 public key of a KeyObject.
 * @throws ERR_INVALID_ARG_VALUE when the key is not an Ed25519 key.
 */
export function rawPublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') {
    throw new CompanionError('ERR_INVALID_ARG_VALUE', 'the key is not an Ed25519 key');
  }
  return Buffer.from(jwk.x, 'base64url');
}

/** The key id of a raw Ed25519 public key. */
export function keyIdOf(raw: Uint8Array): string {
  return createHash('sha256').update(raw).digest('base64url').slice(0, 22);
}

/** `ed25519:<b64url>` text of a public key. */
export function encodeManifestKey(publicKey: KeyObject): string {
  return `${MANIFEST_KEY_PREFIX}${toBase64Url(rawPublicKey(publicKey))}`;
}

/** A pinned manifest key: its key id and public key ({@link parseTrustedKeys}). */
export interface TrustedKey {
  readonly keyId: string;
  readonly publicKey: KeyObject;
}

/**
 * Parses the pinned key list (`--manifest-key` / `COMPANION_MANIFEST_KEY`): one or more
 * `ed25519:<b64url raw key>` joined by commas.
 * @throws ERR_CONFIG for anything else.
 */
export function parseTrustedKeys(text: string): TrustedKey[] {
  assertString(text, 'manifest keys');
  const keys: TrustedKey[] = [];
  for (const part of text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0)) {
    if (!part.startsWith(MANIFEST_KEY_PREFIX))
      throw new CompanionError('ERR_CONFIG', 'a manifest key must start with ed25519:');
    const body = part.slice(MANIFEST_KEY_PREFIX.length);
    let raw: Buffer;
    try {
      raw = fromBase64Url(body, 'manifest key');
    } catch {
      throw new CompanionError('ERR_CONFIG', 'a manifest key is not base64url');
    }
    if (raw.length !== 32) throw new CompanionError('ERR_CONFIG', 'a manifest key must be 32 bytes');
    const publicKey = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') },
      format: 'jwk',
    });
    keys.push({ keyId: keyIdOf(raw), publicKey });
  }
  if (keys.length === 0) throw new CompanionError('ERR_CONFIG', 'no manifest key given');
  return keys;
}

/** A new Ed25519 signing key pair (the hub's; the private key never leaves the hub). */
export function generateManifestKeyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ed25519');
}

/**
 * Loads a PKCS#8 PEM Ed25519 private key.
 * @throws ERR_CONFIG when the key is not Ed25519 (a PEM that does not parse throws Node's own error).
 */
export function loadManifestPrivateKey(pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519')
    throw new CompanionError('ERR_CONFIG', 'the manifest signing key is not Ed25519');
  return key;
}

/** Signs payload bytes: the hub's side. Returns the envelope to serve. */
export function signManifestPayload(payloadBytes: Uint8Array, privateKey: KeyObject): ManifestEnvelope {
  const publicKey = createPublicKey(privateKey);
  const signature = sign(null, payloadBytes, privateKey);
  return {
    payload: toBase64Url(payloadBytes),
    signature: toBase64Url(signature),
    keyId: keyIdOf(rawPublicKey(publicKey)),
  };
}

/** Serialises a payload object to the bytes that get signed. */
export function encodeManifestPayload(payload: ManifestPayload): Buffer {
  return Buffer.from(JSON.stringify(payload), 'utf8');
}
