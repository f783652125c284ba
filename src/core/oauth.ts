/**
 * The OAuth client core (CONTRACT §2, D5.2; threats P-d, P-e, P-f): the native-app authorization code
 * flow of RFC 8252 with PKCE S256 (RFC 7636), the `iss` authorization response parameter (RFC 9207), the
 * token and refresh requests and their checks (RFC 6749 §4.1.3–§6) and revocation (RFC 7009).
 *
 * Built on oauth4webapi (docs/decisions.md, "OAuth client library"). No I/O happens here: HTTP enters as
 * an injected fetch-compatible function (the adapter's, which does TLS with the configured extra CA), the
 * clock as an injected function. Every value that holds a secret (code, verifier, tokens) is a
 * {@link Secret} or lives behind a private brand; every error is a {@link CompanionError} that carries
 * no code, verifier, token or callback parameter and no `cause` from the library (which puts the callback
 * parameters, code included, on its errors' `cause`).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import * as oauth from 'oauth4webapi';
import {
  CompanionError,
  assertFunction,
  assertObject,
  assertString,
  type ErrorCode,
  CodedTypeError,
} from './errors.js';
import { Secret, isSecret } from './secret.js';

// ---------------------------------------------------------------------------------------------------
// Types

/** The fetch the adapter injects: the same shape as `globalThis.fetch` for the calls made here. */
export type OAuthFetch = (url: string, init: OAuthFetchInit) => Promise<Response>;

/** What the core passes to {@link OAuthFetch}: a POST form or a GET, never following redirects. */
export interface OAuthFetchInit {
  method: string;
  headers: Record<string, string>;
  body?: URLSearchParams;
  redirect: 'manual';
  signal?: AbortSignal;
}

/** Validated authorization server metadata (RFC 8414), branded by {@link parseIssuerMetadata}. */
export interface IssuerMetadata {
  readonly issuer: string;
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  /** null when the hub advertises no revocation endpoint (RFC 7009). */
  readonly revocationEndpoint: string | null;
  /** null when the hub does not list them. */
  readonly scopesSupported: readonly string[] | null;
}

/** A PKCE pair (RFC 7636): the verifier stays here, the challenge goes into the authorization URL. */
export interface PkcePair {
  readonly verifier: Secret;
  readonly challenge: string;
  readonly method: 'S256';
}

/**
 * An authorization response that passed every check of {@link validateAuthorizationResponse}. It holds
 * the code behind a private brand: nothing on it reveals the code, and only
 * {@link exchangeAuthorizationCode} (once) can use it.
 */
export interface ValidatedCallback {
  readonly kind: 'validated-authorization-response';
  /** The issuer the response came from (already compared with the expected one). */
  readonly issuer: string;
}

/** Claims of a validated ID token that the companion keeps. */
export interface IdTokenClaims {
  readonly sub: string;
  readonly name?: string;
}

/** The result of a token or refresh request that passed every check. */
export interface TokenSet {
  readonly accessToken: Secret;
  /** null when the hub issued none (or, after a refresh, did not rotate it). */
  readonly refreshToken: Secret | null;
  /** When the access token expires, in ms since the epoch (from `expires_in` and the injected clock). */
  readonly expiresAt: number;
  /** The granted scope (⊆ requested ⊆ ceiling). */
  readonly scope: readonly string[];
  readonly idTokenClaims?: IdTokenClaims;
}

// ---------------------------------------------------------------------------------------------------
// Small helpers

/** RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
/** A callback parameter longer than this is refused (a code from the hub is a few dozen characters). */
const MAX_CALLBACK_VALUE = 4096;
const MAX_TOKEN_LENGTH = 16_384;
/** expires_in above a year is not a sane access-token lifetime. */
const MAX_EXPIRES_IN_SECONDS = 366 * 24 * 3600;
const SAFE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function refuse(code: ErrorCode, message?: string, detail?: Record<string, string | number | boolean>): CompanionError {
  return new CompanionError(code, message, detail === undefined ? {} : { detail });
}

function invalidArg(name: string, expected: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_VALUE', `${name} must be ${expected}`);
}

function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

const NOT_ERROR_CHAR = /[^\x20\x21\x23-\x5B\x5D-\x7E]/g;

/**
 * Makes text from the hub safe to print: printable ASCII except `"` and `\` (the RFC 6749 §4.1.2.1
 * charset of `error`/`error_description`; anything else becomes `?`, so no terminal escape gets through),
 * each value of `hide` replaced by `[redacted]`, truncated to `max` characters plus `...`. If a hidden
 * value could still be read in the result (a short one that overlaps the marker), the result is empty.
 */
export function sanitizeOAuthText(value: string, max: number, hide: readonly string[] = []): string {
  const hidden = hide.filter((h) => h.length > 0).map((h) => h.replace(NOT_ERROR_CHAR, '?'));
  let text = String(value).replace(NOT_ERROR_CHAR, '?');
  for (const h of hidden) text = text.split(h).join('[redacted]');
  if (text.length > max) text = `${text.slice(0, max)}...`;
  // A hidden value that is still readable (it overlaps the marker, or the cut) empties the text.
  return hidden.some((h) => text.includes(h)) ? '' : text;
}

function checkScopeList(value: unknown, name: string): readonly string[] {
  if (!Array.isArray(value)) {
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', `${name} must be an array of scope tokens`);
  }
  for (const token of value) {
    if (typeof token !== 'string' || !SCOPE_TOKEN.test(token))
      throw invalidArg(name, 'a list of RFC 6749 scope tokens');
  }
  return [...new Set(value as string[])];
}

/** Throws ERR_OAUTH_SCOPE_EXCEEDED unless every scope of `inner` is in `outer`. */
function assertScopeWithin(inner: readonly string[], outer: readonly string[], what: string): void {
  const extra = inner.filter((s) => !outer.includes(s));
  if (extra.length > 0) {
    throw refuse('ERR_OAUTH_SCOPE_EXCEEDED', `${what} has ${extra.length} scope value(s) beyond what is allowed`, {
      count: extra.length,
    });
  }
}

function parseHttpsUrl(value: unknown): URL | null {
  if (typeof value !== 'string') return null;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '' || url.hash !== '') return null;
  return url;
}

// ---------------------------------------------------------------------------------------------------
// PKCE, state, redirect URI

/**
 * A new PKCE pair, S256 only (RFC 7636 §4.1–§4.2): a 43-character verifier from 32 random bytes and
 * its base64url SHA-256 challenge. The verifier is a {@link Secret}.
 */
export function createPkcePair(): PkcePair {
  const verifier = randomToken();
  const challenge = createHash('sha256').update(verifier, 'ascii').digest('base64url');
  return Object.freeze({ verifier: new Secret(verifier), challenge, method: 'S256' as const });
}

/** A fresh `state` value: 256 random bits, base64url (RFC 6749 §10.12). */
export function createState(): string {
  return randomToken();
}

const REDIRECT_PATH = /^[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/;

/**
 * The loopback redirect URI `http://127.0.0.1:<port>/<path>` for the port the sign-in listener really
 * bound (RFC 8252 §7.3: an IP literal, not `localhost`, §8.3). One leading `/` on `path` is accepted.
 * @throws ERR_OAUTH_REDIRECT_URI for a port outside 1–65535 or a path with other characters, empty,
 *   `.`/`..` segments, a query or a fragment.
 */
export function buildLoopbackRedirectUri(port: number, path: string): string {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw refuse('ERR_OAUTH_REDIRECT_URI', 'the redirect port must be the bound port, 1 to 65535');
  }
  if (typeof path !== 'string') throw refuse('ERR_OAUTH_REDIRECT_URI', 'the redirect path must be a string');
  const bare = path.startsWith('/') ? path.slice(1) : path;
  if (bare.length > 128 || !REDIRECT_PATH.test(bare) || bare.split('/').some((s) => s === '.' || s === '..')) {
    throw refuse('ERR_OAUTH_REDIRECT_URI', 'the redirect path must be plain path segments');
  }
  return `http://127.0.0.1:${port}/${bare}`;
}

/**
 * Checks that `uri` is exactly what {@link buildLoopbackRedirectUri} makes and returns its parts.
 * `localhost`, `[::1]`, other hosts, https, port 0 or none, userinfo, query and fragment are refused.
 * @throws ERR_OAUTH_REDIRECT_URI
 */
export function parseLoopbackRedirectUri(uri: string): { port: number; path: string } {
  if (typeof uri !== 'string') throw refuse('ERR_OAUTH_REDIRECT_URI', 'the redirect URI must be a string');
  const match = /^http:\/\/127\.0\.0\.1:([1-9][0-9]{0,4})\/(.*)$/.exec(uri);
  if (match === null) throw refuse('ERR_OAUTH_REDIRECT_URI');
  const port = Number(match[1]);
  const rebuilt = buildLoopbackRedirectUri(port, match[2] ?? '');
  if (rebuilt !== uri) throw refuse('ERR_OAUTH_REDIRECT_URI');
  return { port, path: `/${match[2] ?? ''}` };
}

// ---------------------------------------------------------------------------------------------------
// Issuer metadata

/** oauth4webapi's view of each metadata object this module validated: also the brand. */
const serverOf = new WeakMap<IssuerMetadata, oauth.AuthorizationServer>();

/** True when `value` came from {@link parseIssuerMetadata}. */
export function isIssuerMetadata(value: unknown): value is IssuerMetadata {
  return typeof value === 'object' && value !== null && serverOf.has(value as IssuerMetadata);
}

function assertIssuer(issuer: unknown, name: string): asserts issuer is string {
  assertString(issuer, name);
  const url = parseHttpsUrl(issuer);
  if (url === null || url.search !== '' || issuer.includes('?') || issuer.includes('#')) {
    throw invalidArg(name, 'an https URL without query or fragment (RFC 8414 §2)');
  }
}

/**
 * The metadata discovery URL of an issuer: `oidc` (default) appends `/.well-known/openid-configuration`
 * to the issuer's path (OpenID Connect Discovery §4); `oauth2` inserts
 * `/.well-known/oauth-authorization-server` before it (RFC 8414 §3.1).
 */
export function discoveryUrl(issuer: string, algorithm: 'oidc' | 'oauth2' = 'oidc'): URL {
  assertIssuer(issuer, 'issuer');
  const url = new URL(issuer);
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '');
  url.pathname =
    algorithm === 'oidc'
      ? `${path}/.well-known/openid-configuration`
      : `/.well-known/oauth-authorization-server${path}`;
  return url;
}

function stringList(value: unknown): string[] | null {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) return null;
  return value as string[];
}

/**
 * Validates the hub's authorization server metadata (RFC 8414 §2–§3.3).
 * - `issuer` equals `expectedIssuer` exactly (simple string comparison, RFC 8414 §3.3; P-e).
 * - `authorization_endpoint`, `token_endpoint` (and `revocation_endpoint` if present) are https URLs.
 * - `authorization_response_iss_parameter_supported` is `true` (RFC 9207 §3): the hub promises `iss`
 *   in every authorization response, so a response without one is refused.
 * - `code_challenge_methods_supported` lists `S256`; `response_types_supported` (when listed) has
 *   `code`; `grant_types_supported` (when listed) has `authorization_code`;
 *   `token_endpoint_auth_methods_supported` (when listed) has `none` (a native app is a public client).
 * @throws ERR_OAUTH_METADATA for anything else (TypeError ERR_INVALID_ARG_VALUE for a bad expectedIssuer).
 */
export function parseIssuerMetadata(json: unknown, expectedIssuer: string): IssuerMetadata {
  assertIssuer(expectedIssuer, 'expectedIssuer');
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw refuse('ERR_OAUTH_METADATA', 'the hub metadata is not a JSON object');
  const m = json as Record<string, unknown>;
  if (m.issuer !== expectedIssuer) throw refuse('ERR_OAUTH_METADATA', 'the hub metadata names another issuer');
  const authorizationEndpoint = parseHttpsUrl(m.authorization_endpoint);
  const tokenEndpoint = parseHttpsUrl(m.token_endpoint);
  if (authorizationEndpoint === null || tokenEndpoint === null) {
    throw refuse('ERR_OAUTH_METADATA', 'the hub metadata lacks an https authorization or token endpoint');
  }
  let revocationEndpoint: URL | null = null;
  if (m.revocation_endpoint !== undefined) {
    revocationEndpoint = parseHttpsUrl(m.revocation_endpoint);
    if (revocationEndpoint === null) throw refuse('ERR_OAUTH_METADATA', 'the hub revocation endpoint is not https');
  }
  if (m.authorization_response_iss_parameter_supported !== true) {
    throw refuse('ERR_OAUTH_METADATA', 'the hub does not promise the iss authorization response parameter (RFC 9207)');
  }
  const pkce = stringList(m.code_challenge_methods_supported);
  if (pkce === null || !pkce.includes('S256')) throw refuse('ERR_OAUTH_METADATA', 'the hub does not support PKCE S256');
  const checks: [string, string][] = [
    ['response_types_supported', 'code'],
    ['grant_types_supported', 'authorization_code'],
    ['token_endpoint_auth_methods_supported', 'none'],
  ];
  for (const [field, needed] of checks) {
    if (m[field] === undefined) continue;
    const list = stringList(m[field]);
    if (list === null || !list.includes(needed))
      throw refuse('ERR_OAUTH_METADATA', `the hub metadata ${field} does not include ${needed}`);
  }
  let scopesSupported: string[] | null = null;
  if (m.scopes_supported !== undefined) {
    scopesSupported = stringList(m.scopes_supported);
    if (scopesSupported === null)
      throw refuse('ERR_OAUTH_METADATA', 'the hub metadata scopes_supported is not a list of strings');
  }
  let idTokenAlgs: string[] | undefined;
  if (m.id_token_signing_alg_values_supported !== undefined) {
    const list = stringList(m.id_token_signing_alg_values_supported);
    if (list === null)
      throw refuse(
        'ERR_OAUTH_METADATA',
        'the hub metadata id_token_signing_alg_values_supported is not a list of strings',
      );
    idTokenAlgs = list;
  }

  const metadata: IssuerMetadata = Object.freeze({
    issuer: expectedIssuer,
    authorizationEndpoint: authorizationEndpoint.href,
    tokenEndpoint: tokenEndpoint.href,
    revocationEndpoint: revocationEndpoint === null ? null : revocationEndpoint.href,
    scopesSupported: scopesSupported === null ? null : Object.freeze([...scopesSupported]),
  });
  // Only the fields this module relies on reach the library (no mTLS aliases, no surprises).
  const server: oauth.AuthorizationServer = {
    issuer: expectedIssuer,
    authorization_endpoint: metadata.authorizationEndpoint,
    token_endpoint: metadata.tokenEndpoint,
    authorization_response_iss_parameter_supported: true,
    code_challenge_methods_supported: ['S256'],
    ...(metadata.revocationEndpoint === null ? {} : { revocation_endpoint: metadata.revocationEndpoint }),
    ...(idTokenAlgs === undefined ? {} : { id_token_signing_alg_values_supported: [...idTokenAlgs] }),
  };
  serverOf.set(metadata, server);
  return metadata;
}

/**
 * Fetches and validates the hub's metadata through the injected fetch (`GET` of {@link discoveryUrl},
 * redirects not followed).
 * @throws ERR_HUB_UNREACHABLE when the fetch fails (or the adapter's own coded error), ERR_OAUTH_METADATA
 *   for a non-200 answer, a body that is not JSON, or metadata that {@link parseIssuerMetadata} refuses.
 */
export async function discoverIssuerMetadata(options: {
  issuer: string;
  fetch: OAuthFetch;
  algorithm?: 'oidc' | 'oauth2';
  signal?: AbortSignal;
}): Promise<IssuerMetadata> {
  assertObject(options, 'options');
  assertFunction(options.fetch, 'fetch');
  const url = discoveryUrl(options.issuer, options.algorithm ?? 'oidc');
  let response: unknown;
  try {
    response = await options.fetch(url.href, {
      method: 'GET',
      headers: { accept: 'application/json' },
      redirect: 'manual',
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } catch (error) {
    throw transportError(error);
  }
  if (!isResponse(response)) throw transportError(new TypeError('fetch did not return a Response'));
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => undefined);
    throw refuse('ERR_OAUTH_METADATA', `the hub metadata answered HTTP ${response.status}`, {
      status: response.status,
    });
  }
  let json: unknown;
  try {
    json = await response.json();
  } catch {
    throw refuse('ERR_OAUTH_METADATA', 'the hub metadata is not JSON');
  }
  return parseIssuerMetadata(json, options.issuer);
}

function serverFor(metadata: unknown): oauth.AuthorizationServer {
  const server =
    typeof metadata === 'object' && metadata !== null ? serverOf.get(metadata as IssuerMetadata) : undefined;
  if (server === undefined) throw invalidArg('issuerMetadata', 'the result of parseIssuerMetadata()');
  return server;
}

// ---------------------------------------------------------------------------------------------------
// Authorization request

/**
 * The authorization URL to open in the system browser (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8252 §6):
 * `response_type=code`, `client_id`, `redirect_uri` (a loopback URI from
 * {@link buildLoopbackRedirectUri}), `scope`, `state`, `code_challenge` and `code_challenge_method=S256`.
 * A query already on the authorization endpoint is kept (RFC 6749 §3.1); these parameters replace any
 * of the same name. `prompt` is passed when given (OpenID Connect asks `prompt=consent` for
 * `offline_access`).
 * @throws TypeError ERR_INVALID_ARG_* for a bad argument, ERR_OAUTH_REDIRECT_URI for a non-loopback URI.
 */
export function buildAuthorizationUrl(options: {
  issuerMetadata: IssuerMetadata;
  clientId: string;
  redirectUri: string;
  scope: readonly string[];
  state: string;
  codeChallenge: string;
  prompt?: 'consent' | 'login';
}): URL {
  assertObject(options, 'options');
  serverFor(options.issuerMetadata);
  assertString(options.clientId, 'clientId');
  parseLoopbackRedirectUri(options.redirectUri);
  const scope = checkScopeList(options.scope, 'scope');
  if (scope.length === 0) throw invalidArg('scope', 'a non-empty list');
  assertString(options.state, 'state');
  if (!/^[A-Za-z0-9_-]{22,128}$/.test(options.state))
    throw invalidArg('state', 'a random base64url value (createState())');
  assertString(options.codeChallenge, 'codeChallenge');
  if (!/^[A-Za-z0-9_-]{43}$/.test(options.codeChallenge))
    throw invalidArg('codeChallenge', 'an S256 challenge (createPkcePair())');
  const url = new URL(options.issuerMetadata.authorizationEndpoint);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', options.clientId);
  url.searchParams.set('redirect_uri', options.redirectUri);
  url.searchParams.set('scope', scope.join(' '));
  url.searchParams.set('state', options.state);
  url.searchParams.set('code_challenge', options.codeChallenge);
  url.searchParams.set('code_challenge_method', 'S256');
  if (options.prompt !== undefined) {
    if (options.prompt !== 'consent' && options.prompt !== 'login') throw invalidArg('prompt', 'consent or login');
    url.searchParams.set('prompt', options.prompt);
  }
  return url;
}

// ---------------------------------------------------------------------------------------------------
// Authorization response

interface CallbackRecord {
  /** Branded by oauth4webapi's validateAuthResponse(): the only thing its token request accepts. */
  readonly params: URLSearchParams;
  readonly issuer: string;
  readonly clientId: string;
}

/** The brand and the hidden content of each {@link ValidatedCallback}; deleted when exchanged. */
const callbacks = new WeakMap<object, CallbackRecord>();
const inspectSymbol = Symbol.for('nodejs.util.inspect.custom');

class ValidatedCallbackValue implements ValidatedCallback {
  readonly kind = 'validated-authorization-response' as const;
  readonly issuer: string;
  constructor(issuer: string) {
    this.issuer = issuer;
    Object.freeze(this);
  }
  toJSON(): object {
    return { kind: this.kind, issuer: this.issuer };
  }
  toString(): string {
    return '[validated authorization response]';
  }
  [inspectSymbol](): string {
    return `ValidatedCallback(${this.issuer})`;
  }
}

/** True when `value` is a {@link ValidatedCallback} that has not been exchanged yet. */
export function isValidatedCallback(value: unknown): value is ValidatedCallback {
  return typeof value === 'object' && value !== null && callbacks.has(value);
}

function stateMatches(actual: string, expected: string): boolean {
  // Compare digests so the comparison takes the same time whatever the lengths.
  const a = createHash('sha256').update(actual, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b) && actual === expected;
}

/** Parameters an authorization code flow never receives: implicit, hybrid and JARM responses. */
const FOREIGN_RESPONSE_PARAMS = ['access_token', 'id_token', 'token', 'response'];

/**
 * Checks the redirect the browser delivered to the loopback listener (RFC 6749 §4.1.2, RFC 9207 §2.4),
 * in this order, and returns a {@link ValidatedCallback} holding the code:
 * 1. every parameter appears once (RFC 6749 §3.1) → else ERR_OAUTH_DUPLICATE_PARAM;
 * 2. `iss` is present → else ERR_OAUTH_ISSUER_MISSING (the hub advertises
 *    `authorization_response_iss_parameter_supported`), and equals `expectedIssuer` and the metadata
 *    issuer exactly → else ERR_OAUTH_ISSUER_MISMATCH (mix-up defence, P-e);
 * 3. `state` equals `expectedState` → else ERR_OAUTH_STATE_MISMATCH (P-d; also for error responses, so
 *    a forged error cannot end a sign-in);
 * 4. an `error` response → ERR_OAUTH_AUTHORIZATION_DENIED with `detail.error` and
 *    `detail.errorDescription`, sanitised (printable ASCII, truncated) and never holding the code;
 * 5. implicit/hybrid/JARM parameters or an over-long value → ERR_OAUTH_CALLBACK_MALFORMED;
 * 6. a non-empty `code` → else ERR_OAUTH_CODE_MISSING.
 * oauth4webapi's `validateAuthResponse` then runs too; whatever it refuses becomes
 * ERR_OAUTH_CALLBACK_MALFORMED with its `cause` (the parameters) dropped.
 */
export function validateAuthorizationResponse(options: {
  callbackUrl: string | URL;
  expectedState: string;
  expectedIssuer: string;
  issuerMetadata: IssuerMetadata;
  clientId: string;
}): ValidatedCallback {
  assertObject(options, 'options');
  const server = serverFor(options.issuerMetadata);
  assertString(options.expectedState, 'expectedState');
  assertString(options.expectedIssuer, 'expectedIssuer');
  assertString(options.clientId, 'clientId');
  if (server.issuer !== options.expectedIssuer)
    throw refuse('ERR_OAUTH_METADATA', 'the hub metadata names another issuer');

  let url: URL;
  if (options.callbackUrl instanceof URL) url = options.callbackUrl;
  else {
    assertString(options.callbackUrl, 'callbackUrl');
    try {
      url = new URL(options.callbackUrl);
    } catch {
      throw refuse('ERR_OAUTH_CALLBACK_MALFORMED', 'the authorization response URL does not parse');
    }
  }
  const params = url.searchParams;

  const seen = new Set<string>();
  for (const name of params.keys()) {
    if (seen.has(name))
      throw refuse('ERR_OAUTH_DUPLICATE_PARAM', 'the authorization response repeats a parameter', {
        parameter: SAFE_NAME.test(name) ? name : '?',
      });
    seen.add(name);
  }

  const iss = params.get('iss');
  if (iss === null || iss === '') throw refuse('ERR_OAUTH_ISSUER_MISSING');
  if (iss !== options.expectedIssuer) throw refuse('ERR_OAUTH_ISSUER_MISMATCH');

  const state = params.get('state');
  if (state === null || !stateMatches(state, options.expectedState)) throw refuse('ERR_OAUTH_STATE_MISMATCH');

  const code = params.get('code');
  const error = params.get('error');
  if (error !== null) {
    // The hub's text is shown to the user: it must not echo the code or the state back.
    const hide = [code ?? '', state];
    const detail: Record<string, string> = { error: sanitizeOAuthText(error, 64, hide) };
    const description = params.get('error_description');
    if (description !== null) detail.errorDescription = sanitizeOAuthText(description, 200, hide);
    throw refuse(
      'ERR_OAUTH_AUTHORIZATION_DENIED',
      `the hub refused the authorization request (${detail.error})`,
      detail,
    );
  }

  for (const name of FOREIGN_RESPONSE_PARAMS) {
    if (params.has(name))
      throw refuse('ERR_OAUTH_CALLBACK_MALFORMED', 'the authorization response carries parameters of another flow');
  }
  for (const value of params.values()) {
    if (value.length > MAX_CALLBACK_VALUE)
      throw refuse('ERR_OAUTH_CALLBACK_MALFORMED', 'the authorization response has an over-long parameter');
  }
  if (code === null || code === '') throw refuse('ERR_OAUTH_CODE_MISSING');

  let branded: URLSearchParams;
  try {
    branded = oauth.validateAuthResponse(
      server,
      { client_id: options.clientId },
      new URLSearchParams(params),
      options.expectedState,
    );
  } catch {
    // The library's error carries the parameters (the code) on `cause`: never let it out.
    throw refuse('ERR_OAUTH_CALLBACK_MALFORMED');
  }
  const value = new ValidatedCallbackValue(iss);
  callbacks.set(value, { params: branded, issuer: iss, clientId: options.clientId });
  return value;
}

// ---------------------------------------------------------------------------------------------------
// Token requests

/** Thrown by the fetch wrapper so a transport failure is never mistaken for a protocol error. */
class TransportFailure extends Error {
  readonly original: unknown;
  constructor(original: unknown) {
    super('transport failure');
    this.original = original;
  }
}

function safeName(value: unknown): string | null {
  return typeof value === 'string' && SAFE_NAME.test(value) ? value : null;
}

/** Maps a fetch failure: the adapter's own coded errors pass up; anything else is ERR_HUB_UNREACHABLE. */
function transportError(error: unknown): CompanionError {
  if (error instanceof CompanionError) return error;
  const e = error as { code?: unknown; name?: unknown; cause?: { code?: unknown } } | null;
  const reason = safeName(e?.cause?.code) ?? safeName(e?.code) ?? safeName(e?.name);
  return refuse('ERR_HUB_UNREACHABLE', undefined, reason === null ? undefined : { reason });
}

/**
 * True for a fetch `Response` from any realm: undici's own `fetch` (which the adapter may use for its
 * dispatcher) returns instances of its `Response` class, not of Node's global one.
 */
function isResponse(value: unknown): value is Response {
  if (value instanceof Response) return true;
  if (typeof value !== 'object' || value === null) return false;
  try {
    return (Object.getPrototypeOf(value) as { [Symbol.toStringTag]?: unknown })[Symbol.toStringTag] === 'Response';
  } catch {
    return false;
  }
}

function wrapFetch(
  fetch: OAuthFetch,
): NonNullable<oauth.HttpRequestOptions<'POST', URLSearchParams>[typeof oauth.customFetch]> {
  return async (url, init) => {
    let response: unknown;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new TransportFailure(error);
    }
    if (!isResponse(response)) throw new TransportFailure(new TypeError('fetch did not return a Response'));
    return response;
  };
}

type Grant = 'authorization_code' | 'refresh_token' | 'revocation';

/**
 * Turns anything the library or the transport threw into a coded error without a cause. `hide` lists the
 * secrets this request sent (code, verifier, token): the hub's error text may not echo them.
 */
function mapFailure(error: unknown, grant: Grant, hide: readonly string[]): CompanionError {
  if (error instanceof CompanionError) return error;
  if (error instanceof TransportFailure) return transportError(error.original);
  const failed: ErrorCode = grant === 'revocation' ? 'ERR_OAUTH_TOKEN_ERROR' : 'ERR_OAUTH_TOKEN_RESPONSE';
  if (error instanceof oauth.ResponseBodyError) {
    const name = sanitizeOAuthText(String(error.error), 64, hide);
    const detail: Record<string, string | number> = { status: error.status, error: name };
    if (typeof error.error_description === 'string')
      detail.errorDescription = sanitizeOAuthText(error.error_description, 200, hide);
    const code: ErrorCode =
      grant === 'refresh_token' && error.error === 'invalid_grant'
        ? 'ERR_OAUTH_REFRESH_REFUSED'
        : 'ERR_OAUTH_TOKEN_ERROR';
    return refuse(
      code,
      `${code === 'ERR_OAUTH_REFRESH_REFUSED' ? 'the hub refused the refresh token' : 'the hub refused the token request'} (${name})`,
      detail,
    );
  }
  if (error instanceof oauth.WWWAuthenticateChallengeError) {
    return refuse('ERR_OAUTH_TOKEN_ERROR', `the hub refused the token request (HTTP ${error.status})`, {
      status: error.status,
    });
  }
  const e = error as { code?: unknown; cause?: unknown } | null;
  const detail: Record<string, string | number> = {};
  const library = safeName(e?.code);
  if (library !== null) detail.library = library;
  // A non-conform status: the library puts the Response on cause; keep only its status.
  if (e !== null && isResponse(e.cause)) detail.status = e.cause.status;
  return refuse(failed, undefined, detail);
}

interface TokenRequestCommon {
  issuerMetadata: IssuerMetadata;
  clientId: string;
  fetch: OAuthFetch;
  /** The scope asked for (⊆ scopeCeiling). */
  requestedScope: readonly string[];
  /** The most scope this companion may ever hold (configuration). */
  scopeCeiling: readonly string[];
  /** The clock, ms since the epoch; read when the response arrives. */
  now: () => number;
  signal?: AbortSignal;
}

function checkCommon(options: TokenRequestCommon): { server: oauth.AuthorizationServer; requested: readonly string[] } {
  assertObject(options, 'options');
  const server = serverFor(options.issuerMetadata);
  assertString(options.clientId, 'clientId');
  assertFunction(options.fetch, 'fetch');
  assertFunction(options.now, 'now');
  const requested = checkScopeList(options.requestedScope, 'requestedScope');
  const ceiling = checkScopeList(options.scopeCeiling, 'scopeCeiling');
  if (requested.length === 0) throw invalidArg('requestedScope', 'a non-empty list');
  // Asking for more than the ceiling is refused before anything is sent.
  assertScopeWithin(requested, ceiling, 'the requested scope');
  return { server, requested };
}

function clientFor(clientId: string, now: () => number): oauth.Client {
  // oauth4webapi checks ID token times against its own clock; align it with the injected one.
  const skew = Math.round((now() - Date.now()) / 1000);
  return { client_id: clientId, token_endpoint_auth_method: 'none', [oauth.clockSkew]: skew };
}

/**
 * The checks every token response gets after oauth4webapi's own (RFC 6749 §5.1): `token_type` is
 * `bearer`; `expires_in` is present, an integer from 1 s to a year; the access token is non-empty and
 * bounded; the granted scope ⊆ requested ⊆ ceiling (a response that grants more is refused and nothing
 * of it is returned). An omitted `scope` means the requested scope was granted (RFC 6749 §5.1).
 */
function toTokenSet(
  result: oauth.TokenEndpointResponse,
  requested: readonly string[],
  ceiling: readonly string[],
  now: () => number,
): TokenSet {
  if (result.token_type !== 'bearer') throw refuse('ERR_OAUTH_TOKEN_RESPONSE', 'the token type is not bearer');
  const expiresIn = result.expires_in;
  if (
    typeof expiresIn !== 'number' ||
    !Number.isInteger(expiresIn) ||
    expiresIn < 1 ||
    expiresIn > MAX_EXPIRES_IN_SECONDS
  ) {
    throw refuse('ERR_OAUTH_TOKEN_RESPONSE', 'the token response has no sane expires_in');
  }
  if (result.access_token.length === 0 || result.access_token.length > MAX_TOKEN_LENGTH) {
    throw refuse('ERR_OAUTH_TOKEN_RESPONSE', 'the access token is empty or too long');
  }
  if (
    result.refresh_token !== undefined &&
    (result.refresh_token.length === 0 || result.refresh_token.length > MAX_TOKEN_LENGTH)
  ) {
    throw refuse('ERR_OAUTH_TOKEN_RESPONSE', 'the refresh token is empty or too long');
  }
  let granted: readonly string[];
  if (result.scope === undefined) granted = requested;
  else {
    const tokens = result.scope.split(' ').filter((s) => s.length > 0);
    if (!tokens.every((s) => SCOPE_TOKEN.test(s)))
      throw refuse('ERR_OAUTH_TOKEN_RESPONSE', 'the granted scope is malformed');
    granted = [...new Set(tokens)];
  }
  assertScopeWithin(granted, requested, 'the granted scope');
  assertScopeWithin(granted, ceiling, 'the granted scope');
  const claims = oauth.getValidatedIdTokenClaims(result);
  let idTokenClaims: IdTokenClaims | undefined;
  if (claims !== undefined) {
    idTokenClaims = Object.freeze(
      typeof claims.name === 'string' ? { sub: claims.sub, name: claims.name } : { sub: claims.sub },
    );
  }
  const expiresAt = now() + expiresIn * 1000;
  if (!Number.isSafeInteger(expiresAt)) throw refuse('ERR_OAUTH_TOKEN_RESPONSE', 'the clock gave no usable time');
  const set: TokenSet = {
    accessToken: new Secret(result.access_token),
    refreshToken: result.refresh_token === undefined ? null : new Secret(result.refresh_token),
    expiresAt,
    scope: Object.freeze([...granted]),
    ...(idTokenClaims === undefined ? {} : { idTokenClaims }),
  };
  return Object.freeze(set);
}

/**
 * Exchanges a validated authorization code for tokens (RFC 6749 §4.1.3–§4.1.4, RFC 7636 §4.5) as a
 * public client (`client_id`, no secret), through the injected fetch. The callback is consumed: it cannot
 * be exchanged twice (sign in again after a failure).
 *
 * When `openid` is in the requested scope an ID token is required; any ID token is validated by
 * oauth4webapi (issuer, audience, expiry against the injected clock, no nonce) and its `sub`/`name` are
 * returned. Its signature is not checked: it came over the verified TLS connection from the token
 * endpoint (OpenID Connect Core §3.1.3.7 item 6) and nothing here grants access on it.
 * @throws ERR_OAUTH_SCOPE_EXCEEDED (requested ⊄ ceiling before sending; granted ⊄ requested after),
 *   ERR_OAUTH_TOKEN_ERROR (an OAuth error answer: `detail.error`, `detail.status`),
 *   ERR_OAUTH_TOKEN_RESPONSE (anything malformed), ERR_HUB_UNREACHABLE (or the adapter's coded error)
 *   when the fetch fails; TypeError ERR_INVALID_ARG_VALUE for a callback that is not validated or was
 *   already exchanged.
 */
export async function exchangeAuthorizationCode(
  options: TokenRequestCommon & {
    redirectUri: string;
    callback: ValidatedCallback;
    verifier: Secret;
  },
): Promise<TokenSet> {
  const { server, requested } = checkCommon(options);
  parseLoopbackRedirectUri(options.redirectUri);
  if (!isSecret(options.verifier)) throw invalidArg('verifier', 'the Secret from createPkcePair()');
  const record =
    typeof options.callback === 'object' && options.callback !== null ? callbacks.get(options.callback) : undefined;
  if (record === undefined) throw invalidArg('callback', 'an unused result of validateAuthorizationResponse()');
  if (record.issuer !== server.issuer || record.clientId !== options.clientId) {
    throw refuse('ERR_OAUTH_ISSUER_MISMATCH', 'the callback was validated for another issuer or client');
  }
  // One shot: the code is forgotten before it is sent.
  callbacks.delete(options.callback);
  const ceiling = checkScopeList(options.scopeCeiling, 'scopeCeiling');
  const client = clientFor(options.clientId, options.now);
  try {
    const response = await oauth.authorizationCodeGrantRequest(
      server,
      client,
      oauth.None(),
      record.params,
      options.redirectUri,
      options.verifier.reveal(),
      {
        [oauth.customFetch]: wrapFetch(options.fetch),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
    );
    const result = await oauth.processAuthorizationCodeResponse(server, client, response, {
      requireIdToken: requested.includes('openid'),
    });
    return toTokenSet(result, requested, ceiling, options.now);
  } catch (error) {
    throw mapFailure(error, 'authorization_code', [record.params.get('code') ?? '', options.verifier.reveal()]);
  }
}

/**
 * Refreshes the tokens (RFC 6749 §6), sending `scope` = `requestedScope` (pass the scope granted before:
 * the hub refuses more with `invalid_scope`). The result carries the rotated refresh token when the hub
 * rotates (custody then forgets the old one), or `refreshToken: null` when it does not.
 * @throws ERR_OAUTH_REFRESH_REFUSED when the hub answers `invalid_grant` (expired, revoked or reused:
 *   sign in again), ERR_OAUTH_TOKEN_ERROR for other OAuth errors, and the same as
 *   {@link exchangeAuthorizationCode} otherwise.
 */
export async function refreshTokens(options: TokenRequestCommon & { refreshToken: Secret }): Promise<TokenSet> {
  const { server, requested } = checkCommon(options);
  if (!isSecret(options.refreshToken)) throw invalidArg('refreshToken', 'a Secret');
  const ceiling = checkScopeList(options.scopeCeiling, 'scopeCeiling');
  const client = clientFor(options.clientId, options.now);
  try {
    const response = await oauth.refreshTokenGrantRequest(server, client, oauth.None(), options.refreshToken.reveal(), {
      [oauth.customFetch]: wrapFetch(options.fetch),
      additionalParameters: { scope: requested.join(' ') },
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    const result = await oauth.processRefreshTokenResponse(server, client, response);
    return toTokenSet(result, requested, ceiling, options.now);
  } catch (error) {
    throw mapFailure(error, 'refresh_token', [options.refreshToken.reveal()]);
  }
}

/**
 * Revokes a token at the hub (RFC 7009 §2.1) as a public client. Returns false, sending nothing, when
 * the hub advertises no revocation endpoint.
 * @throws ERR_OAUTH_TOKEN_ERROR when the hub answers with an error, ERR_HUB_UNREACHABLE (or the
 *   adapter's coded error) when the fetch fails.
 */
export async function revokeToken(options: {
  issuerMetadata: IssuerMetadata;
  clientId: string;
  token: Secret;
  fetch: OAuthFetch;
  tokenTypeHint?: 'refresh_token' | 'access_token';
  signal?: AbortSignal;
}): Promise<boolean> {
  assertObject(options, 'options');
  const server = serverFor(options.issuerMetadata);
  assertString(options.clientId, 'clientId');
  assertFunction(options.fetch, 'fetch');
  if (!isSecret(options.token)) throw invalidArg('token', 'a Secret');
  if (options.issuerMetadata.revocationEndpoint === null) return false;
  const client: oauth.Client = { client_id: options.clientId, token_endpoint_auth_method: 'none' };
  try {
    const response = await oauth.revocationRequest(server, client, oauth.None(), options.token.reveal(), {
      [oauth.customFetch]: wrapFetch(options.fetch),
      ...(options.tokenTypeHint === undefined
        ? {}
        : { additionalParameters: { token_type_hint: options.tokenTypeHint } }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    await oauth.processRevocationResponse(response);
    return true;
  } catch (error) {
    throw mapFailure(error, 'revocation', [options.token.reveal()]);
  }
}

/** The bounds this module applies (for tests and docs). */
export const OAUTH_LIMITS = Object.freeze({
  maxCallbackValue: MAX_CALLBACK_VALUE,
  maxTokenLength: MAX_TOKEN_LENGTH,
  maxExpiresInSeconds: MAX_EXPIRES_IN_SECONDS,
});
