/**
 * The hub's authorization server for native clients: oidc-provider 8 configured for exactly one public
 * native client (RFC 8252), with the hub's own sign-in and consent pages (not the library's development
 * interactions). Every choice is explained in docs/hub.md.
 *
 * - Issuer = the hub origin (`https://127.0.0.1:P`); endpoints under `/api/v1/auth/native`; discovery at
 *   `/.well-known/openid-configuration` and (the same document) `/.well-known/oauth-authorization-server`.
 * - Authorization code + PKCE S256 only; `plain` and missing PKCE refused; `iss` in every authorization
 *   response (RFC 9207), advertised in discovery.
 * - Redirect URI registered as `http://127.0.0.1/callback`; any port is accepted (RFC 8252 §7.3,
 *   oidc-provider relaxes the port for native clients on loopback); `localhost` and other hosts refused.
 * - Consent is asked on every authorization (no silent re-approval) and each consent makes a new grant.
 * - Opaque access tokens (short TTL) checked in-process by the manifest endpoint; refresh tokens rotate
 *   and a reused one revokes the whole grant.
 */
import { createHmac, createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Provider, { type Configuration, type JWK, type KoaContextWithOIDC } from 'oidc-provider';
import type { OidcStore } from './oidc-store.js';
import { consentPage, loginPage, messagePage, pageHeaders } from './pages.js';
import { MANIFEST_SCOPE, type TokenCheck } from './manifest.js';

/** Path prefix of every authorization-server endpoint. */
export const AUTH_BASE = '/api/v1/auth/native';
/** The one registered client. */
export const COMPANION_CLIENT_ID = 'companion';
/** Its registered redirect URI; the port is free (RFC 8252 §7.3), host and path are exact. */
export const COMPANION_REDIRECT_URI = 'http://127.0.0.1/callback';
/** The most the companion client can be granted (its scope ceiling). */
export const COMPANION_SCOPES: readonly string[] = ['openid', 'offline_access', MANIFEST_SCOPE];

const MAX_LOGIN_FAILURES = 5;
const MAX_FORM_BYTES = 8 * 1024;

export interface AuthServerOptions {
  readonly issuer: string;
  readonly store: OidcStore;
  readonly jwks: { keys: JWK[] };
  readonly cookieKeys: readonly string[];
  readonly user: string;
  readonly password: string;
  /** The companion client's scope ceiling (a subset of {@link COMPANION_SCOPES} plus nothing else). */
  readonly clientScopes: readonly string[];
  readonly accessTokenTtlSeconds: number;
  readonly log: (line: string) => void;
}

export interface AuthServer {
  readonly provider: Provider;
  /** Handles a request when it belongs to the authorization server; returns false otherwise. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>;
  /** Checks a bearer token for the manifest endpoint. */
  checkManifestToken(token: string): Promise<TokenCheck>;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function sameSecret(given: string, expected: string): boolean {
  // Hash both sides so the comparison is constant-time whatever the lengths.
  return timingSafeEqual(digest(given), digest(expected));
}

function send(res: ServerResponse, status: number, html: string): void {
  const body = Buffer.from(html, 'utf8');
  res.writeHead(status, pageHeaders(body.length));
  res.end(body);
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams | null> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') return null;
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req) {
    length += (chunk as Buffer).length;
    if (length > MAX_FORM_BYTES) return null;
    chunks.push(chunk as Buffer);
  }
  const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  for (const name of new Set(form.keys())) if (form.getAll(name).length !== 1) return null;
  return form;
}

/** The companion client, registered once: public (no secret), native, code + refresh only. */
function companionClient(scopes: readonly string[]): NonNullable<Configuration['clients']>[number] {
  return {
    client_id: COMPANION_CLIENT_ID,
    client_name: 'Companion',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    response_modes: ['query'],
    redirect_uris: [COMPANION_REDIRECT_URI],
    scope: scopes.join(' '),
    id_token_signed_response_alg: 'ES256',
  };
}

/** Only what the flow uses is on: no dev interactions, no introspection, no registration, no JAR/JARM. */
const FEATURES: Configuration['features'] = {
  devInteractions: { enabled: false },
  revocation: { enabled: true },
  introspection: { enabled: false },
  resourceIndicators: { enabled: false },
  rpInitiatedLogout: { enabled: false },
  pushedAuthorizationRequests: { enabled: true },
  userinfo: { enabled: true },
  registration: { enabled: false },
  claimsParameter: { enabled: false },
  encryption: { enabled: false },
  jwtResponseModes: { enabled: false },
};

/** Every endpoint under {@link AUTH_BASE} (the disabled ones too, so none lands at the library's default path). */
const ROUTES: Configuration['routes'] = {
  authorization: `${AUTH_BASE}/auth`,
  token: `${AUTH_BASE}/token`,
  revocation: `${AUTH_BASE}/token/revocation`,
  introspection: `${AUTH_BASE}/token/introspection`,
  jwks: `${AUTH_BASE}/jwks`,
  userinfo: `${AUTH_BASE}/me`,
  pushed_authorization_request: `${AUTH_BASE}/request`,
  end_session: `${AUTH_BASE}/session/end`,
  registration: `${AUTH_BASE}/reg`,
  code_verification: `${AUTH_BASE}/device`,
  device_authorization: `${AUTH_BASE}/device/auth`,
  backchannel_authentication: `${AUTH_BASE}/backchannel`,
};

function lifetimes(accessTokenTtlSeconds: number): Configuration['ttl'] {
  return {
    AccessToken: accessTokenTtlSeconds,
    AuthorizationCode: 60,
    IdToken: 300,
    RefreshToken: 14 * 24 * 3600,
    Grant: 30 * 24 * 3600,
    Session: 24 * 3600,
    Interaction: 10 * 60,
    ClientCredentials: 600,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
  };
}

/** The grant and token decisions: one account, no silent re-approval, refresh tokens for the native client. */
function grantPolicy(user: string): Partial<Configuration> {
  return {
    findAccount: (_ctx, sub) => (sub === user ? { accountId: sub, claims: () => ({ sub }) } : undefined),
    // No silent re-approval: only the grant made by this very consent is used, never an earlier one.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId === undefined ? undefined : ctx.oidc.provider.Grant.find(grantId);
    },
    // A native client always passes the consent page, so it gets a refresh token even when it did not
    // send prompt=consent (which OIDC Core §11 asks for before offline_access is echoed in the scope).
    issueRefreshToken: async (_ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') &&
      (code.scopes.has('offline_access') || client.applicationType === 'native'),
    expiresWithSession: async (ctx, code) =>
      ctx.oidc.client?.applicationType !== 'native' && !code.scopes.has('offline_access'),
    rotateRefreshToken: true,
  };
}

/** Errors the provider renders itself: the hub's message page with the page headers (minus the body's). */
const renderError: Configuration['renderError'] = async (ctx, out) => {
  ctx.type = 'html';
  ctx.body = messagePage('Sign-in error', `${String(out.error)}: ${String(out.error_description ?? '')}`);
  for (const [name, value] of Object.entries(pageHeaders(0)))
    if (name !== 'Content-Length' && name !== 'Content-Type') ctx.set(name, value);
};

function providerConfiguration(options: AuthServerOptions): Configuration {
  return {
    adapter: options.store.adapter,
    clients: [companionClient(options.clientScopes)],
    clientDefaults: {
      id_token_signed_response_alg: 'ES256',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    // `profile` exists for other clients of a real hub; the companion client may not ask for it.
    claims: { openid: ['sub'], profile: ['name'] },
    scopes: ['openid', 'offline_access', MANIFEST_SCOPE],
    responseTypes: ['code'],
    clientAuthMethods: ['none'],
    pkce: { methods: ['S256'], required: () => true },
    allowOmittingSingleRegisteredRedirectUri: false,
    acceptQueryParamAccessTokens: false,
    clockTolerance: 0,
    conformIdTokenClaims: true,
    features: FEATURES,
    routes: ROUTES,
    interactions: {
      url: (_ctx: KoaContextWithOIDC, interaction) => `${AUTH_BASE}/interaction/${interaction.uid}`,
    },
    cookies: {
      keys: [...options.cookieKeys],
      names: { session: 'hub_session', interaction: 'hub_interaction', resume: 'hub_resume' },
      // Lax is enough: the flow is top-level GET navigations and same-origin form posts.
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    jwks: options.jwks,
    enabledJWA: { idTokenSigningAlgValues: ['ES256'], userinfoSigningAlgValues: ['ES256'] },
    ttl: lifetimes(options.accessTokenTtlSeconds),
    ...grantPolicy(options.user),
    clientBasedCORS: () => false,
    renderError,
  };
}

/** What the interaction pages share: the provider, the dev login, the CSRF key and the failure counts. */
interface AuthState {
  readonly provider: Provider;
  readonly origin: string;
  readonly user: string;
  readonly password: string;
  readonly log: (line: string) => void;
  readonly csrfKey: Buffer;
  readonly loginFailures: Map<string, number>;
}

type InteractionDetails = Awaited<ReturnType<Provider['interactionDetails']>>;

/** One interaction request: its state, its parties and the details the provider keeps for it. */
interface InteractionRequest {
  readonly state: AuthState;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly uid: string;
  readonly details: InteractionDetails;
  readonly clientName: string;
}

function csrfFor(state: AuthState, uid: string): string {
  return createHmac('sha256', state.csrfKey).update(uid).digest('base64url');
}

function expired(res: ServerResponse, text: string): void {
  send(res, 400, messagePage('Sign-in expired', text));
}

/** Ends the interaction with `access_denied`: the client gets the error at its redirect URI. */
async function deny(request: InteractionRequest, description: string, merge: boolean): Promise<void> {
  await request.state.provider.interactionFinished(
    request.req,
    request.res,
    { error: 'access_denied', error_description: description },
    { mergeWithLastSubmission: merge },
  );
}

/** The provider's details of this browser's interaction, or null (the error page is sent). */
async function loadInteraction(
  state: AuthState,
  req: IncomingMessage,
  res: ServerResponse,
  uid: string,
): Promise<InteractionRequest | null> {
  let details: InteractionDetails;
  try {
    details = await state.provider.interactionDetails(req, res);
  } catch {
    expired(res, 'This sign-in page has expired or belongs to another browser. Start the sign-in again from the app.');
    return null;
  }
  if (details.uid !== uid) {
    expired(res, 'This sign-in page does not match the current sign-in. Start again from the app.');
    return null;
  }
  const client = await state.provider.Client.find(String(details.params.client_id));
  return { state, req, res, uid, details, clientName: client?.clientName ?? 'An app' };
}

/** GET of the interaction: the login page, or the consent page once signed in. */
function showInteraction(request: InteractionRequest): void {
  const { state, res, uid, details, clientName } = request;
  const action = `${AUTH_BASE}/interaction/${uid}`;
  if (details.prompt.name === 'login') {
    send(res, 200, loginPage({ action: `${action}/login`, csrf: csrfFor(state, uid), clientName }));
    return;
  }
  const scopes = String(details.params.scope ?? '')
    .split(' ')
    .filter((s) => s.length > 0);
  const redirect = new URL(String(details.params.redirect_uri));
  send(
    res,
    200,
    consentPage({
      action: `${action}/confirm`,
      csrf: csrfFor(state, uid),
      clientName,
      user: details.session?.accountId ?? state.user,
      scopes,
      redirectTarget: `${redirect.protocol}//${redirect.host}`,
    }),
  );
}

/** The posted form when it passes the CSRF checks, else null (the refusal page is sent). */
async function verifiedForm(request: InteractionRequest): Promise<URLSearchParams | null> {
  const { state, req, res, uid } = request;
  // CSRF: the form must come from this origin (Origin / Sec-Fetch-Site when the browser sends them)
  // and carry the token bound to this interaction; the interaction cookie is SameSite=Lax.
  const requestOrigin = req.headers.origin;
  const fetchSite = req.headers['sec-fetch-site'];
  const form = await readForm(req);
  if (
    (requestOrigin !== undefined && requestOrigin !== state.origin) ||
    (fetchSite !== undefined && fetchSite !== 'same-origin') ||
    form === null ||
    !sameSecret(form.get('csrf') ?? '', csrfFor(state, uid))
  ) {
    send(
      res,
      403,
      messagePage('Request refused', 'The form could not be verified. Start the sign-in again from the app.'),
    );
    return null;
  }
  return form;
}

/** Counts a wrong password for this interaction; returns the count. */
function countFailure(state: AuthState, uid: string): number {
  const failures = (state.loginFailures.get(uid) ?? 0) + 1;
  // Bounded: abandoned interactions must not grow the map without end (oldest entries go first).
  if (state.loginFailures.size >= 10_000) state.loginFailures.delete(state.loginFailures.keys().next().value!);
  state.loginFailures.set(uid, failures);
  return failures;
}

/** POST of the login form: cancel, a wrong password (the page again, then a denial after too many), or sign-in. */
async function submitLogin(request: InteractionRequest, form: URLSearchParams): Promise<void> {
  const { state, res, uid } = request;
  if (request.details.prompt.name !== 'login') {
    expired(res, 'This step is already done. Start again from the app.');
    return;
  }
  if (form.get('action') === 'cancel') {
    state.loginFailures.delete(uid);
    await deny(request, 'the user cancelled the sign-in', false);
    return;
  }
  const name = form.get('username') ?? '';
  const ok = sameSecret(name, state.user) && sameSecret(form.get('password') ?? '', state.password);
  if (!ok) {
    const failures = countFailure(state, uid);
    state.log('sign-in: wrong user name or password');
    if (failures >= MAX_LOGIN_FAILURES) {
      state.loginFailures.delete(uid);
      await deny(request, 'too many failed sign-in attempts', false);
      return;
    }
    const action = `${AUTH_BASE}/interaction/${uid}/login`;
    const page = { action, csrf: csrfFor(state, uid), clientName: request.clientName, username: name.slice(0, 100) };
    send(res, 401, loginPage({ ...page, error: 'Wrong user name or password.' }));
    return;
  }
  state.loginFailures.delete(uid);
  state.log('sign-in: user signed in');
  await state.provider.interactionFinished(
    request.req,
    res,
    { login: { accountId: state.user, remember: true } },
    { mergeWithLastSubmission: false },
  );
}

/** POST of the consent form: a denial, or a new grant of exactly the scopes asked for. */
async function submitConsent(request: InteractionRequest, form: URLSearchParams): Promise<void> {
  const { state, res, details } = request;
  if (details.prompt.name !== 'consent') {
    expired(res, 'This step is not the current one. Start again from the app.');
    return;
  }
  if (form.get('action') !== 'allow') {
    state.log('consent: denied');
    await deny(request, 'the user denied the request', true);
    return;
  }
  const accountId = details.session?.accountId;
  if (accountId === undefined) {
    expired(res, 'You are not signed in any more. Start again from the app.');
    return;
  }
  const grant = new state.provider.Grant({ accountId, clientId: String(details.params.client_id) });
  const missing = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[] };
  if (missing.missingOIDCScope !== undefined) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims !== undefined) grant.addOIDCClaims(missing.missingOIDCClaims);
  const grantId = await grant.save();
  state.log('consent: allowed');
  await state.provider.interactionFinished(
    request.req,
    res,
    { consent: { grantId } },
    { mergeWithLastSubmission: true },
  );
}

/** The hub's own sign-in and consent pages at `<AUTH_BASE>/interaction/<uid>[/login|/confirm]`. */
async function interaction(
  state: AuthState,
  req: IncomingMessage,
  res: ServerResponse,
  uid: string,
  step: string | undefined,
): Promise<void> {
  const request = await loadInteraction(state, req, res, uid);
  if (request === null) return;
  if (req.method === 'GET' && step === undefined) {
    showInteraction(request);
    return;
  }
  if (req.method !== 'POST' || (step !== 'login' && step !== 'confirm')) {
    send(res, 405, messagePage('Not allowed', 'This page only accepts the sign-in form.'));
    return;
  }
  const form = await verifiedForm(request);
  if (form === null) return;
  if (step === 'login') await submitLogin(request, form);
  else await submitConsent(request, form);
}

const INTERACTION = new RegExp(`^${AUTH_BASE}/interaction/([A-Za-z0-9_-]{1,64})(?:/(login|confirm))?$`);

/** Routes a request: the interaction pages, the RFC 8414 alias, then the provider's own endpoints. */
async function handleAuthRequest(
  state: AuthState,
  callback: ReturnType<Provider['callback']>,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<boolean> {
  const path = (req.url ?? '').split('?')[0] ?? '';
  const match = INTERACTION.exec(path);
  if (match !== null) {
    await interaction(state, req, res, match[1]!, match[2]);
    return true;
  }
  if (path === '/.well-known/oauth-authorization-server') {
    // RFC 8414 metadata at its well-known path: the same document as OIDC discovery.
    req.url = '/.well-known/openid-configuration';
    await callback(req, res);
    return true;
  }
  if (path === '/.well-known/openid-configuration' || path.startsWith(`${AUTH_BASE}/`)) {
    await callback(req, res);
    return true;
  }
  return false;
}

/** A bearer token for the manifest: an unexpired grant's access token of the companion client with the scope. */
async function checkManifestToken(provider: Provider, value: string): Promise<TokenCheck> {
  const token = await provider.AccessToken.find(value);
  if (token === undefined || token.clientId !== COMPANION_CLIENT_ID || token.isSenderConstrained())
    return { ok: false, reason: 'invalid_token' };
  const grant = token.grantId === undefined ? undefined : await provider.Grant.find(token.grantId);
  if (grant === undefined || grant.isExpired) return { ok: false, reason: 'invalid_token' };
  if (!token.scopes.has(MANIFEST_SCOPE)) return { ok: false, reason: 'insufficient_scope' };
  return { ok: true };
}

/**
 * Creates the hub's authorization server: oidc-provider for the one companion client, with the hub's
 * sign-in and consent pages (see the file comment and docs/hub.md for every choice).
 *
 * @param options issuer, store, keys, the dev login, the client's scope ceiling, the access token TTL, a log
 * @returns the provider, a request handler for its paths and the manifest endpoint's token check
 */
export function createAuthServer(options: AuthServerOptions): AuthServer {
  const provider = new Provider(options.issuer, providerConfiguration(options));
  provider.on('server_error', (_ctx: unknown, error: Error) =>
    options.log(`authorization server error: ${error.name}`),
  );
  provider.on('grant.revoked', () => options.log('grant revoked'));
  provider.on('authorization.accepted', () => options.log('authorization accepted'));
  const state: AuthState = {
    provider,
    origin: new URL(options.issuer).origin,
    user: options.user,
    password: options.password,
    log: options.log,
    csrfKey: createHmac('sha256', options.cookieKeys[0]!).update('companion-hub-csrf-v1').digest(),
    loginFailures: new Map<string, number>(),
  };
  const callback = provider.callback();
  return {
    provider,
    handle: (req, res) => handleAuthRequest(state, callback, req, res),
    checkManifestToken: (value) => checkManifestToken(provider, value),
  };
}
