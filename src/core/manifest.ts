/**
 * The signed model manifest verifier (CONTRACT §2; threat P-h). The hub signs the exact payload bytes
 * with Ed25519 (`manifest-format.ts`); the companion pins the hub's public keys and accepts a manifest
 * only when the signature verifies under a pinned key and every field passes a strict schema. The
 * format, the verification order and key rotation are in docs/manifest.md. Pure: node:crypto only.
 */
import { verify } from 'node:crypto';
import { CompanionError, assertInteger, assertString, type ErrorCode, CodedTypeError } from './errors.js';
import {
  MANIFEST_PURPOSE,
  MAX_MANIFEST_BYTES,
  MODEL_ID_PATTERN,
  SHA256_HEX_PATTERN,
  fromBase64Url,
  type ManifestHeader,
  type ManifestModel,
  type ManifestRuntimeHints,
  type TrustedKey,
} from './manifest-format.js';

declare const verifiedModelBrand: unique symbol;

/**
 * A model entry of a manifest that {@link verifyManifest} accepted. The type brand keeps a plain
 * `ManifestModel` out at compile time; {@link isVerifiedModel} (a private registry, as oauth4webapi keeps
 * its validated values) refuses a copy or a look-alike at run time. The brand does not survive a copy
 * (structured clone, JSON, spread): a value that crossed a boundary must be verified again.
 */
export type VerifiedModel = ManifestModel & { readonly [verifiedModelBrand]: true };

/** A manifest that passed {@link verifyManifest}: deeply frozen and branded. */
export interface VerifiedManifest extends ManifestHeader {
  readonly models: readonly VerifiedModel[];
  /** The id of the pinned key that verified the signature. */
  readonly keyId: string;
}

/** What {@link verifyManifest} checks a manifest against: the pinned keys, the issuer, the clock, the last version. */
export interface VerifyManifestOptions {
  /** The pinned keys (from `parseTrustedKeys`); several at once during a rotation. */
  readonly trustedKeys: readonly TrustedKey[];
  /** The hub's issuer URL, compared exactly with the payload's `issuer`. */
  readonly expectedIssuer: string;
  /** The clock, ms since the epoch. */
  readonly now: number;
  /** The highest version accepted before: a lower one is a rollback (an equal one is fine). */
  readonly lastSeenVersion?: number;
  /** Tolerance for issuedAt/expiresAt against `now` (default 60 000 ms). */
  readonly clockSkewMs?: number;
}

/** The default tolerance for `issuedAt`/`expiresAt` against the clock (60 s). */
export const DEFAULT_MANIFEST_CLOCK_SKEW_MS = 60_000;
/** The most models one manifest may list. */
export const MAX_MANIFEST_MODELS = 256;
const KEY_ID = /^[A-Za-z0-9_-]{22}$/;

/** True when `value` holds a C0/C1 control character or a line/paragraph separator. */
function hasControl(value: string): boolean {
  for (let i = 0; i < value.length; i += 1) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029) return true;
  }
  return false;
}

// Why registries and not a property: a spread or a JSON round trip copies properties, never membership.
const verified = new WeakSet<object>();
const verifiedModels = new WeakSet<object>();

/** True when `value` came from {@link verifyManifest}. */
export function isVerifiedManifest(value: unknown): value is VerifiedManifest {
  return typeof value === 'object' && value !== null && verified.has(value);
}

/** True when `value` is a model entry of a manifest that {@link verifyManifest} returned (not a copy of one). */
export function isVerifiedModel(value: unknown): value is VerifiedModel {
  return typeof value === 'object' && value !== null && verifiedModels.has(value);
}

function refuse(code: ErrorCode, message?: string): CompanionError {
  return new CompanionError(code, message);
}

function malformed(message: string): CompanionError {
  return refuse('ERR_MANIFEST_MALFORMED', message);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Parses JSON text that must be one plain object. */
function parseObject(bytes: Uint8Array, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw malformed(`the ${what} is not UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformed(`the ${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw malformed(`the ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

function exactKeys(
  value: Record<string, unknown>,
  required: readonly string[],
  optional: readonly string[],
  what: string,
): void {
  for (const key of Object.keys(value)) {
    if (!required.includes(key) && !optional.includes(key)) throw malformed(`the ${what} has an unknown field`);
  }
  for (const key of required) {
    if (!(key in value)) throw malformed(`the ${what} lacks ${key}`);
  }
}

function positiveInteger(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0)
    throw malformed(`${what} must be a positive integer`);
  return value;
}

function text(value: unknown, what: string, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max || hasControl(value)) {
    throw malformed(`${what} must be a non-empty single-line string of at most ${max} characters`);
  }
  return value;
}

function checkHints(value: unknown): ManifestRuntimeHints {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw malformed('model runtime hints must be an object');
  const v = value as Record<string, unknown>;
  exactKeys(v, [], ['contextLength', 'chatTemplate', 'minRamMiB'], 'model runtime hints');
  const hints: { contextLength?: number; chatTemplate?: string; minRamMiB?: number } = {};
  if (v.contextLength !== undefined) hints.contextLength = positiveInteger(v.contextLength, 'runtime.contextLength');
  if (v.minRamMiB !== undefined) hints.minRamMiB = positiveInteger(v.minRamMiB, 'runtime.minRamMiB');
  if (v.chatTemplate !== undefined) {
    // A chat template is multi-line by nature; only its type and size are checked.
    if (typeof v.chatTemplate !== 'string' || v.chatTemplate.length === 0 || v.chatTemplate.length > 65_536) {
      throw malformed('runtime.chatTemplate must be a string of at most 65536 characters');
    }
    hints.chatTemplate = v.chatTemplate;
  }
  return Object.freeze(hints);
}

function checkModel(value: unknown): ManifestModel {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('a model must be an object');
  const v = value as Record<string, unknown>;
  exactKeys(v, ['id', 'name', 'url', 'size', 'sha256'], ['runtime'], 'model');
  if (typeof v.id !== 'string' || !MODEL_ID_PATTERN.test(v.id))
    throw malformed('a model id must be 1 to 128 of A-Z a-z 0-9 . _ - and start with a letter or digit');
  const name = text(v.name, 'a model name', 200);
  if (typeof v.url !== 'string' || v.url.length > 2048)
    throw malformed('a model url must be a string of at most 2048 characters');
  let url: URL;
  try {
    url = new URL(v.url);
  } catch {
    throw malformed('a model url does not parse');
  }
  // The download adapter refuses anything else too; refusing here keeps the manifest honest (P-h).
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '') throw refuse('ERR_MANIFEST_MODEL_URL');
  const size = positiveInteger(v.size, 'a model size');
  if (typeof v.sha256 !== 'string' || !SHA256_HEX_PATTERN.test(v.sha256))
    throw malformed('a model sha256 must be 64 lower-case hex characters');
  const model: ManifestModel = {
    id: v.id,
    name,
    url: v.url,
    size,
    sha256: v.sha256,
    ...(v.runtime === undefined ? {} : { runtime: checkHints(v.runtime) }),
  };
  return Object.freeze(model);
}

interface Envelope {
  readonly payload: Buffer;
  readonly signature: Buffer;
  readonly keyId: string;
}

function readEnvelope(input: unknown): Envelope {
  let value: Record<string, unknown>;
  if (input instanceof Uint8Array) {
    if (input.byteLength > MAX_MANIFEST_BYTES) throw malformed('the manifest envelope is too large');
    value = parseObject(input, 'manifest envelope');
  } else if (typeof input === 'string') {
    if (input.length > MAX_MANIFEST_BYTES) throw malformed('the manifest envelope is too large');
    value = parseObject(Buffer.from(input, 'utf8'), 'manifest envelope');
  } else if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    value = input as Record<string, unknown>;
  } else {
    throw malformed('the manifest envelope is not an object');
  }
  exactKeys(value, ['payload', 'signature', 'keyId'], [], 'manifest envelope');
  const { payload, signature, keyId } = value;
  if (typeof payload !== 'string' || typeof signature !== 'string' || typeof keyId !== 'string') {
    throw malformed('the manifest envelope fields must be strings');
  }
  if (payload.length > MAX_MANIFEST_BYTES) throw malformed('the manifest payload is too large');
  if (!KEY_ID.test(keyId)) throw malformed('the manifest key id is not 22 base64url characters');
  const signatureBytes = fromBase64Url(signature, 'signature');
  if (signatureBytes.length !== 64) throw malformed('the manifest signature is not 64 bytes');
  return { payload: fromBase64Url(payload, 'payload'), signature: signatureBytes, keyId };
}

/**
 * Verifies a signed manifest envelope (bytes or text of its JSON, or the parsed object) and returns the
 * branded, frozen manifest. Nothing in the payload is parsed before its signature verifies. Order:
 * 1. envelope: exactly `payload`, `signature`, `keyId`, strict base64url, 64-byte signature → else
 *    ERR_MANIFEST_MALFORMED;
 * 2. `keyId` names a pinned key → else ERR_MANIFEST_UNKNOWN_KEY;
 * 3. Ed25519 signature over the exact payload bytes → else ERR_MANIFEST_SIGNATURE;
 * 4. payload is a UTF-8 JSON object → else ERR_MANIFEST_MALFORMED;
 * 5. `purpose` is {@link MANIFEST_PURPOSE} → else ERR_MANIFEST_PURPOSE;
 * 6. `issuer` equals `expectedIssuer` exactly → else ERR_MANIFEST_ISSUER;
 * 7. strict schema (no unknown field; integers > 0; `expiresAt` > `issuedAt`; models as in
 *    docs/manifest.md) → ERR_MANIFEST_MALFORMED, a model URL that is not https → ERR_MANIFEST_MODEL_URL;
 * 8. `issuedAt` ≤ now + skew → else ERR_MANIFEST_NOT_YET_VALID; now − skew < `expiresAt` → else
 *    ERR_MANIFEST_EXPIRED;
 * 9. `version` ≥ `lastSeenVersion` → else ERR_MANIFEST_ROLLBACK;
 * 10. model ids are unique → else ERR_MANIFEST_DUPLICATE_MODEL.
 *
 * Its models are {@link VerifiedModel}s: only a manifest that passed every step brands them.
 * @throws the codes above; TypeError ERR_INVALID_ARG_TYPE (options not an object), ERR_INVALID_ARG_VALUE
 *   (no trusted key, a trusted key that is not Ed25519, a bad option value).
 */
export function verifyManifest(
  envelope: Uint8Array | string | object,
  options: VerifyManifestOptions,
): VerifiedManifest {
  if (typeof options !== 'object' || options === null)
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'options must be an object');
  if (!Array.isArray(options.trustedKeys) || options.trustedKeys.length === 0) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'trustedKeys must be a non-empty list (parseTrustedKeys())');
  }
  assertString(options.expectedIssuer, 'expectedIssuer');
  assertInteger(options.now, 'now', 0);
  if (options.lastSeenVersion !== undefined) assertInteger(options.lastSeenVersion, 'lastSeenVersion', 0);
  const skewMs = options.clockSkewMs ?? DEFAULT_MANIFEST_CLOCK_SKEW_MS;
  assertInteger(skewMs, 'clockSkewMs', 0, 24 * 3600 * 1000);

  // 1–3: authenticate before reading anything the hub says.
  const { payload, signature, keyId } = readEnvelope(envelope);
  const key = options.trustedKeys.find((k) => k.keyId === keyId);
  if (key === undefined) throw refuse('ERR_MANIFEST_UNKNOWN_KEY');
  if (key.publicKey.asymmetricKeyType !== 'ed25519')
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'trusted keys must be Ed25519');
  let ok = false;
  try {
    ok = verify(null, payload, key.publicKey, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw refuse('ERR_MANIFEST_SIGNATURE');

  // 4–6
  const body = parseObject(payload, 'manifest payload');
  if (body.purpose !== MANIFEST_PURPOSE) throw refuse('ERR_MANIFEST_PURPOSE');
  if (body.issuer !== options.expectedIssuer) throw refuse('ERR_MANIFEST_ISSUER');

  // 7
  exactKeys(body, ['issuer', 'purpose', 'version', 'issuedAt', 'expiresAt', 'models'], [], 'manifest payload');
  const version = positiveInteger(body.version, 'version');
  const issuedAt = positiveInteger(body.issuedAt, 'issuedAt');
  const expiresAt = positiveInteger(body.expiresAt, 'expiresAt');
  if (expiresAt <= issuedAt) throw malformed('expiresAt must be after issuedAt');
  if (!Array.isArray(body.models)) throw malformed('models must be a list');
  if (body.models.length > MAX_MANIFEST_MODELS) throw malformed('the manifest lists too many models');
  const models = body.models.map(checkModel);

  // 8
  if (issuedAt * 1000 > options.now + skewMs) throw refuse('ERR_MANIFEST_NOT_YET_VALID');
  if (expiresAt * 1000 <= options.now - skewMs) throw refuse('ERR_MANIFEST_EXPIRED');

  // 9
  if (options.lastSeenVersion !== undefined && version < options.lastSeenVersion) throw refuse('ERR_MANIFEST_ROLLBACK');

  // 10
  const ids = new Set<string>();
  for (const model of models) {
    if (ids.has(model.id)) throw refuse('ERR_MANIFEST_DUPLICATE_MODEL');
    ids.add(model.id);
  }

  const manifest: VerifiedManifest = Object.freeze({
    issuer: options.expectedIssuer,
    purpose: MANIFEST_PURPOSE,
    version,
    issuedAt,
    expiresAt,
    models: Object.freeze(models) as readonly VerifiedModel[],
    keyId,
  });
  for (const model of models) verifiedModels.add(model);
  verified.add(manifest);
  return manifest;
}

/**
 * The model named `id` in a verified manifest, or its first model when `id` is omitted: a
 * {@link VerifiedModel}, what `pullModel` requires.
 * @throws ERR_MODEL_UNKNOWN when there is no such model (or none at all); TypeError ERR_INVALID_ARG_VALUE
 *   when `manifest` did not come from {@link verifyManifest}.
 */
export function findModel(manifest: VerifiedManifest, id?: string): VerifiedModel {
  if (!isVerifiedManifest(manifest)) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'manifest must be the result of verifyManifest()');
  }
  if (id !== undefined) assertString(id, 'id');
  const model = id === undefined ? manifest.models[0] : manifest.models.find((m) => m.id === id);
  if (model === undefined) throw new CompanionError('ERR_MODEL_UNKNOWN');
  return model;
}
