// Test helpers for the reference hub: start one that is torn down with the test, talk to it over real
// TLS trusting only its generated CA, and drive its sign-in and consent pages by hand (a cookie jar,
// manual redirects) the way a browser would.
import { createHash, randomBytes } from 'node:crypto';
import {
  Agent,
  fetch as undiciFetch,
  type RequestInit as UndiciRequestInit,
  type Response as UndiciResponse,
} from 'undici';
import * as oauth from 'oauth4webapi';
import { startHub, type HubOptions, type RunningHub } from '../../src/hub/index.js';

/** A customFetch that oauth4webapi accepts for its GET and POST requests. */
export type OauthFetch = (
  url: string,
  options: oauth.CustomFetchOptions<'GET', undefined> | oauth.CustomFetchOptions<'POST', URLSearchParams>,
) => Promise<Response>;

/** Anything with `after` (node:test's TestContext). */
export interface AfterHook {
  after(fn: () => Promise<void> | void): void;
}

/** A hub for one test, with an undici Agent that trusts exactly its CA. */
export interface TestHub extends RunningHub {
  readonly agent: Agent;
  /** undici fetch through `agent`; never follows redirects unless asked. */
  fetch(url: string | URL, init?: UndiciRequestInit): Promise<UndiciResponse>;
  /** oauth4webapi options with `customFetch` going through `agent`. */
  readonly oauthOptions: { [oauth.customFetch]: OauthFetch };
}

/** Starts a hub (in memory unless `dataDir` is given) that `t.after` closes, with its Agent. */
export async function startTestHub(t: AfterHook, options: HubOptions = {}): Promise<TestHub> {
  const hub = await startHub(options);
  const agent = new Agent({ connect: { ca: hub.caPem }, keepAliveTimeout: 1000 });
  t.after(async () => {
    await agent.close();
    await hub.close();
  });
  return withAgent(hub, agent);
}

/** Wraps an already running hub with an Agent trusting its CA (the caller closes both). */
export function withAgent(hub: RunningHub, agent: Agent): TestHub {
  const fetchVia = (url: string | URL, init: UndiciRequestInit = {}): Promise<UndiciResponse> =>
    undiciFetch(url, { redirect: 'manual', ...init, dispatcher: agent });
  const custom = ((url: string, init: UndiciRequestInit) =>
    undiciFetch(url, { ...init, dispatcher: agent })) as unknown as OauthFetch;
  return { ...hub, agent, fetch: fetchVia, oauthOptions: { [oauth.customFetch]: custom } };
}

/** A minimal cookie jar: name/value/path per the hub origin (enough for one host). */
export class CookieJar {
  readonly #cookies = new Map<string, { value: string; path: string }>();

  store(response: UndiciResponse): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = false;
      for (const attribute of attributes) {
        const [key = '', val = ''] = attribute.split('=');
        if (key.toLowerCase() === 'path') path = val;
        if (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) expired = true;
        if (key.toLowerCase() === 'max-age' && Number(val) <= 0) expired = true;
      }
      const key = `${name}\0${path}`;
      if (expired || value === '') this.#cookies.delete(key);
      else this.#cookies.set(key, { value, path });
    }
  }

  header(url: URL): string | undefined {
    const parts: string[] = [];
    for (const [key, { value, path }] of this.#cookies) {
      if (url.pathname === path || url.pathname.startsWith(path.endsWith('/') ? path : `${path}/`) || path === '/')
        parts.push(`${key.split('\0')[0]}=${value}`);
    }
    return parts.length === 0 ? undefined : parts.join('; ');
  }

  get size(): number {
    return this.#cookies.size;
  }
}

/** What the browser-side walk through the hub ended with. */
export type BrowserOutcome =
  | { readonly kind: 'redirect'; readonly location: URL }
  | { readonly kind: 'page'; readonly status: number; readonly html: string; readonly url: URL };

/** A scripted user: what to answer on the pages. */
export interface UserScript {
  readonly user?: string;
  readonly password?: string;
  readonly consent?: 'allow' | 'deny';
  /** Cookie jar to reuse (a browser that already has a hub session). */
  readonly jar?: CookieJar;
}

/** The hidden CSRF token of a hub form page. */
export function csrfOf(html: string): string {
  const match = /name="csrf" value="([^"]+)"/.exec(html);
  if (match === null) throw new Error('no csrf field in page');
  return match[1]!;
}

/** The form action of a hub page. */
export function actionOf(html: string): string {
  const match = /<form method="post" action="([^"]+)"/.exec(html);
  if (match === null) throw new Error('no form in page');
  return match[1]!.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)));
}

/**
 * Opens `authorizationUrl` like a browser and follows the hub's redirects and pages: fills the login
 * form, answers the consent form, until a redirect leaves the hub origin (the loopback callback) or a
 * page that is neither form is shown.
 */
export async function walkAuthorization(
  hub: TestHub,
  authorizationUrl: URL,
  script: UserScript = {},
): Promise<BrowserOutcome> {
  const jar = script.jar ?? new CookieJar();
  const origin = new URL(hub.issuer).origin;
  let url = authorizationUrl;
  let method: 'GET' | 'POST' = 'GET';
  let body: string | undefined;
  for (let step = 0; step < 20; step += 1) {
    const headers: Record<string, string> = { accept: 'text/html' };
    const cookie = jar.header(url);
    if (cookie !== undefined) headers.cookie = cookie;
    if (method === 'POST') {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers.origin = origin;
      headers['sec-fetch-site'] = 'same-origin';
    }
    const response = await hub.fetch(url, { method, headers, ...(body === undefined ? {} : { body }) });
    jar.store(response);
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      const location = new URL(response.headers.get('location') ?? '', url);
      if (location.origin !== origin) return { kind: 'redirect', location };
      url = location;
      method = 'GET';
      body = undefined;
      continue;
    }
    const html = await response.text();
    if (response.status === 200 && html.includes('id="sign-in"')) {
      url = new URL(actionOf(html), origin);
      method = 'POST';
      body = new URLSearchParams({
        csrf: csrfOf(html),
        username: script.user ?? hub.user,
        password: script.password ?? hub.password,
        action: 'login',
      }).toString();
      continue;
    }
    if (response.status === 200 && html.includes('id="allow"')) {
      url = new URL(actionOf(html), origin);
      method = 'POST';
      body = new URLSearchParams({ csrf: csrfOf(html), action: script.consent ?? 'allow' }).toString();
      continue;
    }
    return { kind: 'page', status: response.status, html, url };
  }
  throw new Error('too many steps in the authorization walk');
}

/** A PKCE pair (S256). */
export async function pkcePair(): Promise<{ verifier: string; challenge: string }> {
  const verifier = oauth.generateRandomCodeVerifier();
  return { verifier, challenge: await oauth.calculatePKCECodeChallenge(verifier) };
}

/** The authorization server metadata via oauth4webapi discovery (issuer checked). */
export async function discover(hub: TestHub): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(hub.issuer);
  return oauth.processDiscoveryResponse(
    issuer,
    await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...hub.oauthOptions }),
  );
}

/** A loopback redirect URI for the registered client, with a made-up port (nothing needs to listen). */
export function loopbackRedirect(port = 40_000 + (randomBytes(2).readUInt16BE(0) % 20_000)): string {
  return `http://127.0.0.1:${port}/callback`;
}

export interface AuthorizationRequestParams {
  readonly redirectUri?: string;
  readonly scope?: string;
  readonly state?: string;
  readonly codeChallenge?: string | null;
  readonly codeChallengeMethod?: string | null;
  readonly prompt?: string;
  readonly extra?: Readonly<Record<string, string>>;
}

/** Builds an authorization URL for the hub's client (null drops a parameter). */
export function authorizationUrl(
  as: oauth.AuthorizationServer,
  hub: TestHub,
  params: AuthorizationRequestParams & { codeChallenge: string | null },
): URL {
  const url = new URL(as.authorization_endpoint!);
  url.searchParams.set('client_id', hub.clientId);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('redirect_uri', params.redirectUri ?? loopbackRedirect());
  url.searchParams.set('scope', params.scope ?? hub.scopes.join(' '));
  url.searchParams.set('state', params.state ?? oauth.generateRandomState());
  if (params.codeChallenge !== null) url.searchParams.set('code_challenge', params.codeChallenge);
  if (params.codeChallengeMethod !== null)
    url.searchParams.set('code_challenge_method', params.codeChallengeMethod ?? 'S256');
  if (params.prompt !== undefined) url.searchParams.set('prompt', params.prompt);
  for (const [key, value] of Object.entries(params.extra ?? {})) url.searchParams.set(key, value);
  return url;
}

export interface SignedIn {
  readonly as: oauth.AuthorizationServer;
  readonly client: oauth.Client;
  readonly tokens: oauth.TokenEndpointResponse;
  readonly callback: URL;
  readonly redirectUri: string;
}

/**
 * The whole native-app flow with oauth4webapi as the client: discovery, PKCE S256, authorization through
 * the hub's pages, `iss`-checked callback, code exchange. Returns the tokens.
 */
export async function signIn(
  hub: TestHub,
  options: { scope?: string; prompt?: string; script?: UserScript } = {},
): Promise<SignedIn> {
  const as = await discover(hub);
  const client: oauth.Client = { client_id: hub.clientId };
  const { verifier, challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const redirectUri = loopbackRedirect();
  const outcome = await walkAuthorization(
    hub,
    authorizationUrl(as, hub, {
      redirectUri,
      scope: options.scope ?? hub.scopes.join(' '),
      state,
      codeChallenge: challenge,
      ...(options.prompt === undefined ? {} : { prompt: options.prompt }),
    }),
    options.script,
  );
  if (outcome.kind !== 'redirect') throw new Error(`sign-in ended on a page (status ${outcome.status})`);
  const params = oauth.validateAuthResponse(as, client, outcome.location, state);
  const response = await oauth.authorizationCodeGrantRequest(
    as,
    client,
    oauth.None(),
    params,
    redirectUri,
    verifier,
    hub.oauthOptions,
  );
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, response);
  return { as, client, tokens, callback: outcome.location, redirectUri };
}

/** GET the manifest with a bearer token (or none). */
export async function fetchManifest(hub: TestHub, accessToken?: string): Promise<UndiciResponse> {
  return hub.fetch(new URL('/api/v1/companion/manifest', hub.issuer), {
    headers: accessToken === undefined ? {} : { authorization: `Bearer ${accessToken}` },
  });
}

/** SHA-256 (hex) of bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
