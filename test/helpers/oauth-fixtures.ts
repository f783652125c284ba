// Fixtures for the OAuth core's tests: hub metadata shaped like oidc-provider 8's, a recording fetch that
// answers with `new Response(...)`, and ID tokens signed with a throw-away RS256 key.
import { generateKeyPairSync, sign } from 'node:crypto';
import { inspect } from 'node:util';
import {
  buildLoopbackRedirectUri,
  createPkcePair,
  createState,
  parseIssuerMetadata,
  validateAuthorizationResponse,
  type IssuerMetadata,
  type OAuthFetch,
  type OAuthFetchInit,
  type PkcePair,
  type ValidatedCallback,
} from '../../src/core/oauth.js';

export const ISSUER = 'https://hub.test';
export const OTHER_ISSUER = 'https://evil.test';
export const CLIENT_ID = 'companion-desktop';
export const SCOPE = ['openid', 'models:read'] as const;
export const CEILING = ['openid', 'offline_access', 'models:read'] as const;
/** A fixed clock far from the real one, so nothing depends on when the test runs. */
export const NOW = Date.UTC(2031, 0, 2, 3, 4, 5);
export const CODE = 'SplxlOBeZQQYbYS6WxSbIA-the-authorization-code';

/** Metadata shaped like oidc-provider 8's discovery document. */
export function metadataJson(issuer = ISSUER, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
    revocation_endpoint: `${issuer}/token/revocation`,
    jwks_uri: `${issuer}/jwks`,
    userinfo_endpoint: `${issuer}/me`,
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'none'],
    code_challenge_methods_supported: ['S256'],
    id_token_signing_alg_values_supported: ['RS256'],
    scopes_supported: ['openid', 'offline_access', 'models:read'],
    authorization_response_iss_parameter_supported: true,
    ...overrides,
  };
}

export function metadata(issuer = ISSUER): IssuerMetadata {
  return parseIssuerMetadata(metadataJson(issuer), issuer);
}

export interface RecordedRequest {
  readonly url: string;
  readonly method: string;
  readonly headers: Record<string, string>;
  readonly body: URLSearchParams;
  readonly redirect: string;
}

export interface RecordingFetch {
  readonly fetch: OAuthFetch;
  readonly requests: RecordedRequest[];
}

/** A fetch that records each request and answers with `answer(request)`. */
export function recordingFetch(answer: (request: RecordedRequest) => Response | Promise<Response>): RecordingFetch {
  const requests: RecordedRequest[] = [];
  const fetch: OAuthFetch = async (url: string, init: OAuthFetchInit) => {
    const request: RecordedRequest = {
      url,
      method: init.method,
      headers: { ...init.headers },
      body: new URLSearchParams(init.body ?? ''),
      redirect: init.redirect,
    };
    requests.push(request);
    return answer(request);
  };
  return { fetch, requests };
}

export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers },
  });
}

export const ACCESS_TOKEN = 'at-0123456789abcdefghijklmnopqrstuvwxyzABCDEF';
export const REFRESH_TOKEN = 'rt-0123456789abcdefghijklmnopqrstuvwxyzABCDEF';
export const ROTATED_REFRESH_TOKEN = 'rt2-ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponm';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

/** An RS256 ID token with sane claims for ISSUER/CLIENT_ID at NOW, overridable. */
export function idToken(overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}): string {
  const iat = Math.floor(NOW / 1000);
  const claims = { iss: ISSUER, aud: CLIENT_ID, sub: 'user-42', name: 'Ada', iat, exp: iat + 3600, ...overrides };
  const h = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: 'k1', ...header })).toString('base64url');
  const p = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const s = sign('sha256', Buffer.from(`${h}.${p}`), rsa.privateKey).toString('base64url');
  return `${h}.${p}.${s}`;
}

/** A token endpoint body that passes every check (for SCOPE at NOW). */
export function tokenBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    access_token: ACCESS_TOKEN,
    token_type: 'Bearer',
    expires_in: 3600,
    refresh_token: REFRESH_TOKEN,
    scope: SCOPE.join(' '),
    id_token: idToken(),
    ...overrides,
  };
}

export interface SignInFixture {
  readonly metadata: IssuerMetadata;
  readonly pkce: PkcePair;
  readonly state: string;
  readonly redirectUri: string;
  /** The valid callback URL the hub would send. */
  readonly callbackUrl: URL;
  validate(url?: string | URL): ValidatedCallback;
}

/** One sign-in's values and its valid callback. */
export function signIn(code = CODE): SignInFixture {
  const md = metadata();
  const pkce = createPkcePair();
  const state = createState();
  const redirectUri = buildLoopbackRedirectUri(49152, 'callback');
  const callbackUrl = new URL(redirectUri);
  callbackUrl.searchParams.set('code', code);
  callbackUrl.searchParams.set('state', state);
  callbackUrl.searchParams.set('iss', ISSUER);
  return {
    metadata: md,
    pkce,
    state,
    redirectUri,
    callbackUrl,
    validate(url = callbackUrl) {
      return validateAuthorizationResponse({
        callbackUrl: url,
        expectedState: state,
        expectedIssuer: ISSUER,
        issuerMetadata: md,
        clientId: CLIENT_ID,
      });
    },
  };
}

/** Every way to print an error, for leak checks. */
export function renderings(value: unknown): string[] {
  const out: string[] = [];
  out.push(String(value));
  try {
    out.push(JSON.stringify(value) ?? '');
  } catch {
    out.push('');
  }
  out.push(inspect(value, { depth: Infinity, showHidden: true, getters: true }));
  if (value instanceof Error) {
    out.push(value.message, value.stack ?? '');
    out.push(String((value as { cause?: unknown }).cause ?? ''));
    out.push(JSON.stringify((value as { detail?: unknown }).detail ?? null));
    out.push(
      JSON.stringify(
        Object.getOwnPropertyNames(value).map((k) => [k, String((value as unknown as Record<string, unknown>)[k])]),
      ),
    );
  }
  return out;
}
