/**
 * The closed list of error and refusal codes. Callers branch on `code`, never on message text.
 * Every code here is documented in docs/errors.md (a unit test enforces it).
 *
 * Messages never hold a secret: no token, code, verifier, digest or model path. A helper that builds a
 * message from input must only use values that are safe to print (names, counts, status numbers).
 */
export const ERROR_CODES = {
  // Arguments (programmer errors): thrown as TypeError.
  ERR_INVALID_ARG_TYPE: 'an argument has the wrong type',
  ERR_INVALID_ARG_VALUE: 'an argument has a value outside what is accepted',

  // Loopback guard refusals (D5.1, P-a, P-b, P-c).
  ERR_GUARD_PEER_NOT_LOOPBACK: 'the request did not come from a loopback address',
  ERR_GUARD_HOST_MISSING: 'the request has no Host header',
  ERR_GUARD_HOST_DUPLICATE: 'the request has more than one Host header',
  ERR_GUARD_HOST_NOT_ALLOWED: 'the Host header is not one of the bound loopback names',
  ERR_GUARD_TARGET_FORM: 'the request target is not in origin-form',
  ERR_GUARD_ORIGIN: 'the request carries an Origin that is not allowed',
  ERR_GUARD_REFERER: 'the request carries a Referer from another origin',
  ERR_GUARD_FETCH_SITE: 'Sec-Fetch-Site says the request is cross-site',
  ERR_GUARD_METHOD: 'the method is not allowed on this path',
  ERR_GUARD_PATH: 'the path is not served',
  ERR_GUARD_TOKEN_MISSING: 'the request has no bearer token',
  ERR_GUARD_TOKEN_INVALID: 'the bearer token does not match',
  ERR_GUARD_MALFORMED: 'the request is malformed',

  // Lane selector.
  ERR_LANE_LOCAL_ONLY_UNAVAILABLE: 'the call is local-only and the companion is not available',
  ERR_LANE_CLOUD_NOT_ALLOWED: 'the call may not go to the cloud and the companion is not available',

  // Runtime manager core.
  ERR_LIFECYCLE_ILLEGAL_TRANSITION: 'the runtime lifecycle does not allow this event in this state',
  ERR_LIFECYCLE_CRASH_LOOP: 'the runtime crashed too often; restarts stopped until asked',
  ERR_ADMISSION_QUEUE_FULL: 'too many requests are waiting; try again later',
  ERR_ADMISSION_NOT_READY: 'the runtime is not ready',
  ERR_ADMISSION_TIMEOUT: 'the request waited too long for a free slot',
  ERR_ADMISSION_ABORTED: 'the request was cancelled while it waited for a slot',
  ERR_INTEGRITY_SIZE_OVER: 'the download is larger than the manifest says',
  ERR_INTEGRITY_SIZE_UNDER: 'the download is smaller than the manifest says',
  ERR_INTEGRITY_DIGEST: 'the download does not match the manifest digest',
  ERR_INTEGRITY_FINALIZED: 'the integrity check was already finalized',
  ERR_RESOURCE_LIMIT: 'the runtime would exceed its resource limits',

  // OAuth client core and sign-in (D5.2, P-d, P-e).
  ERR_OAUTH_STATE_MISMATCH: 'the authorization response state does not match this sign-in',
  ERR_OAUTH_ISSUER_MISSING: 'the authorization response has no iss parameter',
  ERR_OAUTH_ISSUER_MISMATCH: 'the authorization response comes from another issuer',
  ERR_OAUTH_DUPLICATE_PARAM: 'the authorization response repeats a parameter',
  ERR_OAUTH_CODE_MISSING: 'the authorization response has no code',
  ERR_OAUTH_CALLBACK_MALFORMED: 'the authorization response is malformed or belongs to another flow',
  ERR_OAUTH_AUTHORIZATION_DENIED: 'the hub refused the authorization request',
  ERR_OAUTH_METADATA: 'the hub metadata is invalid or names another issuer',
  ERR_OAUTH_TOKEN_RESPONSE: 'the token response is invalid',
  ERR_OAUTH_TOKEN_ERROR: 'the hub refused the token request',
  ERR_OAUTH_SCOPE_EXCEEDED: 'the hub granted more scope than was asked or allowed',
  ERR_OAUTH_REFRESH_REFUSED: 'the hub refused the refresh token; sign in again',
  ERR_OAUTH_CALLBACK_TIMEOUT: 'no sign-in callback arrived in time',
  ERR_OAUTH_REDIRECT_URI: 'the redirect URI is not a loopback IP literal with a port',
  ERR_SIGNIN_LISTENER: 'the sign-in redirect listener could not start',
  ERR_NOT_SIGNED_IN: 'not signed in; run `companion login`',

  // Token custody and keychain (D5.3, P-g).
  ERR_KEYCHAIN_ACCOUNT: 'the keychain account is not one of the four known accounts',
  ERR_KEYCHAIN_LOCKED: 'the keychain is locked; unlock it and try again',
  ERR_KEYCHAIN_UNAVAILABLE: 'no keychain service is available',
  ERR_KEYCHAIN_TIMEOUT: 'the keychain did not answer in time',
  ERR_KEYCHAIN_VALUE_TOO_LARGE: 'the value is larger than the keychain backend accepts',
  ERR_KEYCHAIN_FAILURE: 'the keychain reported an error',
  ERR_CUSTODY_STORE_FAILED: 'storing the new tokens failed; signed out',
  ERR_CUSTODY_SIGNOUT_INCOMPLETE: 'some keychain items could not be deleted',

  // Manifest (P-h).
  ERR_MANIFEST_MALFORMED: 'the manifest is malformed',
  ERR_MANIFEST_UNKNOWN_KEY: 'the manifest is signed with a key that is not trusted',
  ERR_MANIFEST_SIGNATURE: 'the manifest signature does not verify',
  ERR_MANIFEST_ISSUER: 'the manifest names another issuer',
  ERR_MANIFEST_PURPOSE: 'the manifest is not a companion model manifest',
  ERR_MANIFEST_EXPIRED: 'the manifest has expired',
  ERR_MANIFEST_NOT_YET_VALID: 'the manifest is not valid yet',
  ERR_MANIFEST_ROLLBACK: 'the manifest is older than one already seen',
  ERR_MANIFEST_MODEL_URL: 'a model URL in the manifest is not https',
  ERR_MANIFEST_DUPLICATE_MODEL: 'the manifest lists a model id twice',
  ERR_MANIFEST_FETCH: 'the manifest could not be fetched from the hub',
  ERR_MODEL_UNKNOWN: 'the manifest has no such model',

  // Download and install (D5.5, P-h).
  ERR_DOWNLOAD_NOT_HTTPS: 'the download URL or a redirect is not https',
  ERR_DOWNLOAD_TOO_MANY_REDIRECTS: 'the download was redirected too often',
  ERR_DOWNLOAD_HTTP_STATUS: 'the model host answered with an error status',
  ERR_DOWNLOAD_STALLED: 'the download stalled',
  ERR_DOWNLOAD_TLS: 'the TLS connection could not be verified',
  ERR_DOWNLOAD_NETWORK: 'the download failed on the network',
  ERR_DOWNLOAD_ABORTED: 'the download was cancelled',
  ERR_DISK_SPACE: 'not enough free disk space for the model',
  ERR_DISK_WRITE: 'writing the model to disk failed',
  ERR_MODEL_NOT_INSTALLED: 'no verified model is installed; run `companion pull`',
  ERR_MODEL_CHANGED: 'the installed model file changed since it was verified',
  ERR_MODEL_IN_USE: 'a running `companion up` serves this model; stop it first',

  // Runtime spawn, health and sandbox (D5.4, P-i, P-k).
  ERR_SPAWN_BINARY: 'the runtime binary path is not absolute or not a file',
  ERR_SPAWN_FAILED: 'the runtime process could not start',
  ERR_SPAWN_EXITED: 'the runtime process exited before it was ready',
  ERR_SPAWN_READY_TIMEOUT: 'the runtime did not report ready in time',
  ERR_SPAWN_HANDSHAKE: 'the runtime did not get a valid start line',
  ERR_RUNTIME_MODEL_LOAD: 'the runtime could not load the model',
  ERR_RUNTIME_UNHEALTHY: 'the runtime health check failed',
  ERR_RUNTIME_GONE: 'the runtime process is gone',
  ERR_SANDBOX_UNAVAILABLE: 'no sandbox could be made for the runtime; install bubblewrap or allow an unsandboxed start',
  ERR_PROBE_FAILED: 'the resource probe failed',

  // Front door (D5.1).
  ERR_BIND_NOT_LOOPBACK: 'the listen address is not a loopback address',
  ERR_BIND_FAILED: 'binding the loopback listener failed',
  ERR_UPSTREAM_UNAVAILABLE: 'the local runtime is not reachable',
  ERR_BODY_TOO_LARGE: 'the request body is too large',
  ERR_REQUEST_TIMEOUT: 'the request took too long',
  ERR_ATTEST_NONCE: 'the attestation request has no single well-formed Companion-Nonce header',
  ERR_ENDPOINT_UNVERIFIED:
    'the endpoint in the discovery file did not prove it is this companion; nothing was sent to it',

  // TLS and configuration.
  ERR_TLS_CA: 'the extra CA file could not be read or is not PEM',
  ERR_CONFIG: 'the configuration is invalid',
  ERR_CONFIG_FILE:
    "the config file in the data dir is unsafe (a symlink, another user's, readable by others) or damaged",
  ERR_HUB_PORT_BUSY: 'a port the reference hub remembered in its data dir is in use by another process',
  ERR_HUB_MODEL_FILE: 'a model file given to the reference hub is not a readable GGUF file',
  ERR_HUB_UNREACHABLE: 'the hub could not be reached',
  ERR_STATE_UNSAFE: 'a private state folder or file is a symlink, not a folder, or owned by another user',
  ERR_LOCKED_BY_OTHER: 'another companion is running with this data directory',
  ERR_USAGE: 'the command line is not valid; see --help',
  ERR_INTERRUPTED: 'interrupted (Ctrl-C)',
  ERR_INTERNAL: 'an unexpected internal error',
} as const;

/** Every code a Companion error can carry: a key of {@link ERROR_CODES} (docs/errors.md lists them). */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Options for {@link CompanionError}. `cause` must already be free of secrets. */
export interface CompanionErrorOptions {
  readonly cause?: unknown;
  /** A safe, structured detail for callers (a status number, a check name). Never a secret. */
  readonly detail?: Readonly<Record<string, string | number | boolean>>;
}

/**
 * A domain error with a stable `code` from {@link ERROR_CODES}.
 * The default message is the catalogue text; a custom message must hold no secret.
 */
export class CompanionError extends Error {
  readonly code: ErrorCode;
  readonly detail: Readonly<Record<string, string | number | boolean>> | undefined;

  constructor(code: ErrorCode, message?: string, options: CompanionErrorOptions = {}) {
    super(message ?? ERROR_CODES[code], options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CompanionError';
    this.code = code;
    this.detail = options.detail;
  }
}

/** True when `value` is a {@link CompanionError} with one of the given codes (or any code). */
export function isCompanionError(value: unknown, ...codes: ErrorCode[]): value is CompanionError {
  return value instanceof CompanionError && (codes.length === 0 || codes.includes(value.code));
}

/**
 * A caller's bad argument (a programming error, not a user's): a `TypeError` with a stable `code`, the way
 * Node's own `ERR_INVALID_ARG_TYPE` errors are. The one definition of it; the message must hold no secret.
 */
export class CodedTypeError extends TypeError {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

function invalidArg(code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE', name: string, expected: string): TypeError {
  return new CodedTypeError(code, `${name} must be ${expected}`);
}

/** Throws `ERR_INVALID_ARG_TYPE` unless `value` is a string (non-empty unless `allowEmpty`). */
export function assertString(value: unknown, name: string, allowEmpty = false): asserts value is string {
  if (typeof value !== 'string') throw invalidArg('ERR_INVALID_ARG_TYPE', name, 'a string');
  if (!allowEmpty && value.length === 0) throw invalidArg('ERR_INVALID_ARG_VALUE', name, 'a non-empty string');
}

/** Throws unless `value` is an integer in [min, max]. */
export function assertInteger(
  value: unknown,
  name: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value))
    throw invalidArg('ERR_INVALID_ARG_TYPE', name, 'an integer');
  if (value < min || value > max) throw invalidArg('ERR_INVALID_ARG_VALUE', name, `an integer from ${min} to ${max}`);
}

/** Throws unless `value` is a finite number in [min, max]. */
export function assertNumber(value: unknown, name: string, min = -Infinity, max = Infinity): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value))
    throw invalidArg('ERR_INVALID_ARG_TYPE', name, 'a finite number');
  if (value < min || value > max) throw invalidArg('ERR_INVALID_ARG_VALUE', name, `a number from ${min} to ${max}`);
}

/** Throws unless `value` is a plain object. */
export function assertObject(value: unknown, name: string): asserts value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidArg('ERR_INVALID_ARG_TYPE', name, 'an object');
  }
}

/** Throws unless `value` is a function. */
export function assertFunction(value: unknown, name: string): asserts value is (...args: never[]) => unknown {
  if (typeof value !== 'function') throw invalidArg('ERR_INVALID_ARG_TYPE', name, 'a function');
}

/** Throws `ERR_INVALID_ARG_VALUE` unless `value` is one of `allowed`. */
export function assertOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): asserts value is T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidArg('ERR_INVALID_ARG_VALUE', name, `one of ${allowed.join(', ')}`);
  }
}
