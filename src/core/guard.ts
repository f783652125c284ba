/**
 * The loopback guard (D5.1; threats P-a, P-b, P-c): one pure decision over a request description that
 * the front door makes before any model work. It reads what Node's HTTP parser hands over untouched
 * (`req.socket.remoteAddress`, `req.method`, `req.url`, `req.rawHeaders`), because Node accepts
 * duplicate `Host` headers, absolute-form and `//host` targets and HTTP/1.0 without `Host`
 * (docs/architecture.md, "Cores"; PLATFORM "Node 20 HTTP behaviour").
 *
 * Order of the checks (the first failing check decides the refusal):
 *   peer → request shape → target form → Host → Origin / Referer / Sec-Fetch-Site → OPTIONS →
 *   attestation route (no Authorization header at all) → token → path → method.
 * The token is checked before the route so that an unauthenticated caller learns nothing about which
 * paths exist. The one exception is the policy's `attestRoute` (src/core/attest.ts): a client must be
 * able to ask the door to prove itself before it sends the token, so that exact method and path is served
 * without a token, but only after every other check passed and only to a request that carries no
 * `Authorization` header (one that does is checked like any other request). A refusal carries a status
 * and a code, never the token or any header value.
 */
import { Buffer } from 'node:buffer';
import { timingSafeEqual } from 'node:crypto';
import { type ErrorCode, assertInteger, CodedTypeError } from './errors.js';
import { Secret } from './secret.js';

/** What the guard needs to know about one request, exactly as Node's parser produced it. */
export interface GuardRequest {
  /** The TCP peer (`req.socket.remoteAddress`). */
  peerAddress: string;
  /** The request method (`req.method`), case-sensitive. */
  method: string;
  /** The raw request target (`req.url`), before any URL parsing. */
  target: string;
  /** `req.rawHeaders`: alternating name, value, with every duplicate kept. */
  rawHeaders: readonly string[];
  /** `req.httpVersion` (`1.1` or `1.0`); when given, anything else is refused. */
  httpVersion?: string;
}

/**
 * One served route: an exact method and an exact, normalised path (no query, no `%`). With `segment`,
 * `path` is a prefix ending in `/` and the route serves `path` + exactly one more segment that matches
 * `segment` (no `/`, no `%`, never `.` or `..`); the decision then carries a route whose `path` is the
 * full matched path. `segment` must be anchored (`^…$`) and have neither the `g` nor the `y` flag.
 */
export interface GuardRoute {
  method: string;
  path: string;
  segment?: RegExp;
}

/** What the front door allows. Build `allowedHosts` with {@link allowedHostsFor} from the bound port. */
export interface GuardPolicy {
  /** Lower-case `host:port` values accepted in `Host` (exact match after lower-casing the header). */
  allowedHosts: ReadonlySet<string>;
  /** The token check capability (see {@link createTokenVerifier}); must be constant time. */
  verifyToken: (candidate: string) => boolean;
  /** The served routes. A path that is not listed gets 404, a listed path with another method 405. */
  routes: readonly GuardRoute[];
  /**
   * The one route served WITHOUT a bearer token: the front door's attestation (`ATTEST_ROUTE` of
   * src/core/attest.ts). Only its exact method and path, only after the peer, shape, target, Host and
   * browser checks and the OPTIONS refusal, and only to a request with no `Authorization` header at all;
   * with one, the token is checked as for every route (and the route is then served too). Absent: every
   * route needs the token. It must serve nothing but a proof that needs no secret from the caller.
   */
  attestRoute?: GuardRoute;
  /**
   * Escape hatch: browser origins (exact serialisation, e.g. `http://localhost:5173`) whose requests are
   * let through the Origin/Referer checks. Empty by default. WARNING: every origin listed here can
   * script requests to the front door from a web page; it still needs the token. `null` is never
   * accepted and is refused here with a TypeError.
   */
  allowedOrigins?: readonly string[];
}

/** The guard's verdict: the matched route, or a refusal with its HTTP status and reason code. */
export type GuardDecision =
  { ok: true; route: GuardRoute } | { ok: false; status: 400 | 401 | 403 | 404 | 405; code: ErrorCode };

/** Every refusal the guard can return, with its status (docs/errors.md, "Loopback guard refusals"). */
export const GUARD_REFUSALS = {
  ERR_GUARD_PEER_NOT_LOOPBACK: 403,
  ERR_GUARD_MALFORMED: 400,
  ERR_GUARD_TARGET_FORM: 400,
  ERR_GUARD_HOST_MISSING: 400,
  ERR_GUARD_HOST_DUPLICATE: 400,
  ERR_GUARD_HOST_NOT_ALLOWED: 403,
  ERR_GUARD_ORIGIN: 403,
  ERR_GUARD_REFERER: 403,
  ERR_GUARD_FETCH_SITE: 403,
  ERR_GUARD_TOKEN_MISSING: 401,
  ERR_GUARD_TOKEN_INVALID: 401,
  ERR_GUARD_PATH: 404,
  ERR_GUARD_METHOD: 405,
} as const satisfies Record<string, 400 | 401 | 403 | 404 | 405>;

/** The code of one guard refusal: a key of {@link GUARD_REFUSALS}. */
export type GuardRefusalCode = keyof typeof GUARD_REFUSALS;

type Refusal = Extract<GuardDecision, { ok: false }>;

const REFUSALS: { readonly [K in GuardRefusalCode]: Refusal } = Object.freeze(
  Object.fromEntries(
    Object.entries(GUARD_REFUSALS).map(([code, status]) => [
      code,
      Object.freeze({ ok: false as const, status, code: code as ErrorCode }),
    ]),
  ) as { [K in GuardRefusalCode]: Refusal },
);

/** A request target longer than this is refused as malformed (Node's own header limit is 16 KiB). */
export const MAX_TARGET_LENGTH = 8192;
/** A bearer token longer than this is refused without calling the verifier. */
export const MAX_TOKEN_LENGTH = 4096;
/** The shortest loopback token {@link createTokenVerifier} accepts. */
export const MIN_TOKEN_LENGTH = 16;

// 127.0.0.0/8 in canonical dotted-quad form only (what Node reports); no octal, hex or short forms.
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4_LOOPBACK = new RegExp(`^127\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);
// RFC 9110 §5.1 field-name token; RFC 9110 §9.1 method token (we only serve upper-case methods).
const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const METHOD_CHARS = /^[A-Z]+$/;
// CR, LF and NUL in a header value are request-smuggling material: refuse even if a parser let them by.
const VALUE_FORBIDDEN = /[\r\n\0]/;
// An origin-form target (RFC 9112 §3.2.1) is visible ASCII only; `#` and `\` never belong in one.
const TARGET_CHARS = /^[\x21-\x7e]+$/;
// RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive (RFC 9110 §11.1).
const BEARER = /^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)$/;
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const HEX = /^[0-9A-Fa-f]{2}$/;

function invalidPolicy(name: string, expected: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_VALUE', `${name} must be ${expected}`);
}

/**
 * True when `path` is already in normal form (RFC 3986 §6.2.2): no `.`/`..` segment, no empty segment
 * except a trailing one, and no percent-encoding that would decode to an unreserved character, `/`,
 * `\`, `%` or a control character (an encoded dot segment or slash changes the path after decoding).
 */
function isNormalPath(path: string): boolean {
  if (path.length === 0 || path.charCodeAt(0) !== 0x2f) return false;
  let start = 1;
  while (start <= path.length) {
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    const segment = path.slice(start, end);
    if (segment.length === 0 && end !== path.length) return false;
    if (segment === '.' || segment === '..') return false;
    if (segment.includes('%') && !isSafePercentEncoding(segment)) return false;
    start = end + 1;
  }
  return true;
}

function isSafePercentEncoding(segment: string): boolean {
  for (let i = segment.indexOf('%'); i !== -1; i = segment.indexOf('%', i + 1)) {
    const hex = segment.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return false;
    const byte = Number.parseInt(hex, 16);
    const unreserved =
      (byte >= 0x30 && byte <= 0x39) ||
      (byte >= 0x41 && byte <= 0x5a) ||
      (byte >= 0x61 && byte <= 0x7a) ||
      byte === 0x2d ||
      byte === 0x2e ||
      byte === 0x5f ||
      byte === 0x7e;
    if (unreserved || byte === 0x2f || byte === 0x5c || byte === 0x25 || byte < 0x20 || byte === 0x7f) return false;
  }
  return true;
}

/** True for a canonical loopback peer address: 127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`. */
export function isLoopbackAddress(address: unknown): boolean {
  if (typeof address !== 'string') return false;
  if (address === '::1') return true;
  const v4 = address.length > 7 && address.slice(0, 7).toLowerCase() === '::ffff:' ? address.slice(7) : address;
  return IPV4_LOOPBACK.test(v4);
}

function isRoute(route: unknown): route is GuardRoute {
  const r = route as Partial<GuardRoute> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.method === 'string' &&
    METHOD_CHARS.test(r.method) &&
    typeof r.path === 'string' &&
    !r.path.includes('%') &&
    !r.path.includes('?') &&
    !r.path.startsWith('//') &&
    TARGET_CHARS.test(r.path) &&
    !r.path.includes('\\') &&
    !r.path.includes('#') &&
    isNormalPath(r.path) &&
    (r.segment === undefined ||
      (r.segment instanceof RegExp &&
        r.path.endsWith('/') &&
        !r.segment.global &&
        !r.segment.sticky &&
        r.segment.source.startsWith('^') &&
        r.segment.source.endsWith('$')))
  );
}

/**
 * True when `path` is `route.path` plus one segment that `route.segment` accepts. Why so narrow: the
 * segment is forwarded upstream inside the path, so it may hold no `/` (another route), no `%` (an
 * encoding the upstream would decode) and no dot segment (a parent path after normalisation).
 */
function segmentMatches(route: GuardRoute, path: string): boolean {
  const pattern = route.segment;
  if (pattern === undefined || path.length <= route.path.length || !path.startsWith(route.path)) return false;
  const segment = path.slice(route.path.length);
  if (segment.includes('/') || segment.includes('%') || segment === '.' || segment === '..') return false;
  return pattern.test(segment);
}

function assertPolicy(policy: unknown): asserts policy is GuardPolicy {
  if (typeof policy !== 'object' || policy === null) throw invalidPolicy('policy', 'an object');
  const p = policy as Partial<Record<keyof GuardPolicy, unknown>>;
  const hosts = p.allowedHosts as { has?: unknown } | null | undefined;
  if (typeof hosts !== 'object' || hosts === null || typeof hosts.has !== 'function') {
    throw invalidPolicy('policy.allowedHosts', 'a Set of host:port strings');
  }
  if (typeof p.verifyToken !== 'function') throw invalidPolicy('policy.verifyToken', 'a function');
  if (!Array.isArray(p.routes)) throw invalidPolicy('policy.routes', 'an array of { method, path }');
  for (const route of p.routes as unknown[]) {
    if (!isRoute(route))
      throw invalidPolicy(
        'policy.routes[]',
        'a { method, path, segment? } with an upper-case method, a normalised path and an anchored segment pattern',
      );
  }
  if (
    p.attestRoute !== undefined &&
    (!isRoute(p.attestRoute) || p.attestRoute.method === 'OPTIONS' || p.attestRoute.segment !== undefined)
  ) {
    throw invalidPolicy(
      'policy.attestRoute',
      'a { method, path } with an upper-case method other than OPTIONS and a normalised path',
    );
  }
  if (p.allowedOrigins !== undefined) {
    if (!Array.isArray(p.allowedOrigins)) throw invalidPolicy('policy.allowedOrigins', 'an array of origins');
    for (const origin of p.allowedOrigins as unknown[]) {
      // Why: `Origin: null` is sent by sandboxed frames, file: pages and redirects; it names no one.
      if (typeof origin !== 'string' || origin === 'null' || !/^https?:\/\/[^/?#\s]+$/.test(origin)) {
        throw invalidPolicy('policy.allowedOrigins[]', 'a serialised http(s) origin other than null');
      }
    }
  }
}

/** True when `referer` is a URL on `origin` (scheme and authority compared case-insensitively). */
function refererIsOn(referer: string, origin: string): boolean {
  if (referer.length < origin.length || referer.slice(0, origin.length).toLowerCase() !== origin.toLowerCase())
    return false;
  // Why: the next character must end the authority, else `http://127.0.0.1:P@evil` or `:PPP` would pass.
  const next = referer.charCodeAt(origin.length);
  return referer.length === origin.length || next === 0x2f || next === 0x3f || next === 0x23;
}

/**
 * Decides whether the front door may serve a request.
 *
 * @param request what Node parsed: peer address, method, raw target (`req.url`), `req.rawHeaders`.
 * @param policy the allowed hosts (from the bound port), the token check and the served routes.
 * @returns `{ ok: true, route }`, or `{ ok: false, status, code }` with one of {@link GUARD_REFUSALS}:
 *   `ERR_GUARD_PEER_NOT_LOOPBACK` 403, `ERR_GUARD_MALFORMED` 400 (bad shape, control characters,
 *   backslash, fragment, non-normal path), `ERR_GUARD_TARGET_FORM` 400 (absolute-form, `//host`, `*`),
 *   `ERR_GUARD_HOST_MISSING` / `ERR_GUARD_HOST_DUPLICATE` 400, `ERR_GUARD_HOST_NOT_ALLOWED` 403 (P-a),
 *   `ERR_GUARD_ORIGIN` / `ERR_GUARD_REFERER` / `ERR_GUARD_FETCH_SITE` 403 (P-b), `ERR_GUARD_METHOD` 405
 *   (OPTIONS, or a served path with another method), `ERR_GUARD_TOKEN_MISSING` /
 *   `ERR_GUARD_TOKEN_INVALID` 401 (P-c), `ERR_GUARD_PATH` 404. `policy.attestRoute` is accepted without a
 *   token when the request has no `Authorization` header and passed every check before the token (P-k).
 * Never throws on any request value; throws a TypeError (`ERR_INVALID_ARG_VALUE`) only for a bad policy.
 * @see RFC 9112 §3.2 (request target), RFC 9110 §7.2 (Host), RFC 6454 (Origin), RFC 6750 §2.1 (Bearer),
 *   Fetch Metadata (Sec-Fetch-Site), docs/decisions.md "Loopback guard".
 */
export function verifyLoopbackRequest(request: GuardRequest, policy: GuardPolicy): GuardDecision {
  assertPolicy(policy);
  try {
    return decide(request, policy);
  } catch {
    // A request object whose getters throw, or a policy Set that misbehaves: refuse, never crash.
    return REFUSALS.ERR_GUARD_MALFORMED;
  }
}

/** The checks of {@link verifyLoopbackRequest}, in the order of the file comment; the first refusal decides. */
function decide(request: GuardRequest, policy: GuardPolicy): GuardDecision {
  if (typeof request !== 'object' || request === null) return REFUSALS.ERR_GUARD_MALFORMED;
  const { peerAddress, method, target, rawHeaders, httpVersion } = request;

  // 1. Peer: only a loopback socket may talk to the front door (P-c, defence in depth to the bind).
  if (!isLoopbackAddress(peerAddress)) return REFUSALS.ERR_GUARD_PEER_NOT_LOOPBACK;

  // 2. Shape: method, version and a well-formed raw header list.
  if (typeof method !== 'string' || !METHOD_CHARS.test(method)) return REFUSALS.ERR_GUARD_MALFORMED;
  if (httpVersion !== undefined && httpVersion !== '1.1' && httpVersion !== '1.0') return REFUSALS.ERR_GUARD_MALFORMED;
  const headers = readHeaders(rawHeaders);
  if (headers === null) return REFUSALS.ERR_GUARD_MALFORMED;

  // 3. Target: origin-form only, in normal form; the path is the target without its query.
  const path = checkTarget(target);
  if (typeof path !== 'string') return path;

  // 4. Host (P-a) and 5. browser context (P-b).
  const host = checkHost(headers.values[HOST], headers.counts[HOST], policy.allowedHosts);
  if (typeof host !== 'string') return host;
  const browser = checkBrowserContext(headers, host, policy.allowedOrigins ?? []);
  if (browser !== null) return browser;

  // 6. No CORS preflight is ever answered (D5.1): OPTIONS gets 405 and no CORS headers.
  if (method === 'OPTIONS') return REFUSALS.ERR_GUARD_METHOD;

  // 7. Attestation (P-k): a client proves the door is ours before it sends the token, so this one route
  //    cannot need the token. Why no Authorization at all: a request that sends a token gets it checked.
  const attest = policy.attestRoute;
  if (attest !== undefined && headers.counts[AUTHORIZATION] === 0 && method === attest.method && path === attest.path)
    return { ok: true, route: attest };

  // 8. Token (P-c), then 9. route.
  const token = checkToken(headers.values[AUTHORIZATION], headers.counts[AUTHORIZATION], policy.verifyToken);
  if (token !== null) return token;
  return matchRoute(policy.routes, attest, method, path);
}

/** Where {@link readHeaders} keeps each header the guard reads. */
const HOST = 0;
const ORIGIN = 1;
const REFERER = 2;
const FETCH_SITE = 3;
const AUTHORIZATION = 4;

/** The headers the guard reads, by slot: the last value of each and how many times it came. */
interface SeenHeaders {
  readonly values: [string | undefined, string | undefined, string | undefined, string | undefined, string | undefined];
  readonly counts: [number, number, number, number, number];
}

/** The slot of a header the guard reads, or -1. Only a name of a length that can match is lower-cased. */
function slotOf(
  name: string,
): -1 | typeof HOST | typeof ORIGIN | typeof REFERER | typeof FETCH_SITE | typeof AUTHORIZATION {
  switch (name.length) {
    case 4:
      return name.toLowerCase() === 'host' ? HOST : -1;
    case 6:
      return name.toLowerCase() === 'origin' ? ORIGIN : -1;
    case 7:
      return name.toLowerCase() === 'referer' ? REFERER : -1;
    case 13:
      return name.toLowerCase() === 'authorization' ? AUTHORIZATION : -1;
    case 14:
      return name.toLowerCase() === 'sec-fetch-site' ? FETCH_SITE : -1;
    default:
      return -1;
  }
}

/**
 * The headers the guard reads, with every name and value checked (a token name, no CR, LF or NUL); null
 * when the list is not an even list of such strings.
 */
function readHeaders(rawHeaders: unknown): SeenHeaders | null {
  if (!Array.isArray(rawHeaders) || rawHeaders.length % 2 !== 0) return null;
  const seen: SeenHeaders = {
    values: [undefined, undefined, undefined, undefined, undefined],
    counts: [0, 0, 0, 0, 0],
  };
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name: unknown = rawHeaders[i];
    const value: unknown = rawHeaders[i + 1];
    if (typeof name !== 'string' || typeof value !== 'string' || !TOKEN_CHARS.test(name) || VALUE_FORBIDDEN.test(value))
      return null;
    const slot = slotOf(name);
    if (slot === -1) continue;
    seen.values[slot] = value;
    seen.counts[slot]++;
  }
  return seen;
}

/**
 * The path of an origin-form target in normal form, or the refusal. After `GET http://evil/x` or
 * `GET //evil/x`, `new URL(req.url, base)` yields the attacker's host; `*` is only for OPTIONS, which is
 * refused anyway.
 */
function checkTarget(target: unknown): string | Refusal {
  if (
    typeof target !== 'string' ||
    target.length === 0 ||
    target.charCodeAt(0) !== 0x2f ||
    target.charCodeAt(1) === 0x2f
  ) {
    return REFUSALS.ERR_GUARD_TARGET_FORM;
  }
  if (
    target.length > MAX_TARGET_LENGTH ||
    !TARGET_CHARS.test(target) ||
    target.includes('\\') ||
    target.includes('#')
  ) {
    return REFUSALS.ERR_GUARD_MALFORMED;
  }
  const query = target.indexOf('?');
  const path = query === -1 ? target : target.slice(0, query);
  return isNormalPath(path) ? path : REFUSALS.ERR_GUARD_MALFORMED;
}

/**
 * The lower-cased `Host`, or the refusal (P-a, DNS rebinding): exactly one, equal to a name of the bound
 * port. Why exact: a rebound name (`evil.example:P`, `127.0.0.1.nip.io:P`), a trailing dot, userinfo or a
 * numeric IP variant (`2130706433`, `127.1`) all mean the browser thinks it talks to another origin.
 */
function checkHost(host: string | undefined, count: number, allowedHosts: ReadonlySet<string>): string | Refusal {
  if (count === 0 || host === undefined) return REFUSALS.ERR_GUARD_HOST_MISSING;
  if (count > 1) return REFUSALS.ERR_GUARD_HOST_DUPLICATE;
  const hostLower = host.toLowerCase();
  return allowedHosts.has(hostLower) ? hostLower : REFUSALS.ERR_GUARD_HOST_NOT_ALLOWED;
}

/** The refusal of a cross-origin browser context (P-b), or null: no such page may drive the front door. */
function checkBrowserContext(
  headers: SeenHeaders,
  hostLower: string,
  allowedOrigins: readonly string[],
): Refusal | null {
  const { values, counts } = headers;
  const origin = values[ORIGIN];
  if (counts[ORIGIN] > 1) return REFUSALS.ERR_GUARD_ORIGIN;
  if (origin !== undefined && (origin === 'null' || !allowedOrigins.includes(origin))) return REFUSALS.ERR_GUARD_ORIGIN;
  const referer = values[REFERER];
  if (counts[REFERER] > 1) return REFUSALS.ERR_GUARD_REFERER;
  if (
    referer !== undefined &&
    !refererIsOn(referer, `http://${hostLower}`) &&
    !allowedOrigins.some((o) => refererIsOn(referer, o))
  ) {
    return REFUSALS.ERR_GUARD_REFERER;
  }
  const fetchSite = values[FETCH_SITE];
  if (counts[FETCH_SITE] > 1) return REFUSALS.ERR_GUARD_FETCH_SITE;
  if (fetchSite !== undefined && fetchSite !== 'same-origin' && fetchSite !== 'none')
    return REFUSALS.ERR_GUARD_FETCH_SITE;
  return null;
}

/**
 * The refusal of a missing or wrong token (P-c), or null when exactly one `Authorization: Bearer
 * <b64token>` passes the constant-time verifier.
 */
function checkToken(value: string | undefined, count: number, verifyToken: GuardPolicy['verifyToken']): Refusal | null {
  if (count === 0 || value === undefined) return REFUSALS.ERR_GUARD_TOKEN_MISSING;
  // Why: two Authorization headers are ambiguous (which one would a proxy forward?); check neither.
  if (count > 1) return REFUSALS.ERR_GUARD_TOKEN_INVALID;
  if (value.length < 7 || value.slice(0, 7).toLowerCase() !== 'bearer ') return REFUSALS.ERR_GUARD_TOKEN_MISSING;
  const bearer = value.length > MAX_TOKEN_LENGTH + 16 ? null : BEARER.exec(value);
  const candidate = bearer?.[1];
  if (candidate === undefined || candidate.length > MAX_TOKEN_LENGTH) return REFUSALS.ERR_GUARD_TOKEN_INVALID;
  let verified = false;
  try {
    verified = verifyToken(candidate) === true;
  } catch {
    verified = false;
  }
  return verified ? null : REFUSALS.ERR_GUARD_TOKEN_INVALID;
}

/** The served route: exact path (or a prefix route's one segment), then exact method; else 404 or 405. */
function matchRoute(
  routes: readonly GuardRoute[],
  attest: GuardRoute | undefined,
  method: string,
  path: string,
): GuardDecision {
  let pathServed = false;
  for (const route of routes) {
    if (route.segment !== undefined) {
      if (!segmentMatches(route, path)) continue;
      pathServed = true;
      if (route.method === method) return { ok: true, route: Object.freeze({ method: route.method, path }) };
      continue;
    }
    if (route.path !== path) continue;
    pathServed = true;
    if (route.method === method) return { ok: true, route };
  }
  if (attest !== undefined && attest.path === path) {
    pathServed = true;
    if (attest.method === method) return { ok: true, route: attest };
  }
  return pathServed ? REFUSALS.ERR_GUARD_METHOD : REFUSALS.ERR_GUARD_PATH;
}

/**
 * The `Host` values a front door bound to `port` accepts: `127.0.0.1:P`, `localhost:P` and `[::1]:P`
 * (lower-case). D5.1 builds the allow list from the bound port, never from configuration.
 *
 * @param port the port read back from the bound socket (1–65535).
 * @param options `ipv6: false` leaves out `[::1]:P` (for a listener bound to 127.0.0.1 only); default true.
 * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` for a bad port.
 */
export function allowedHostsFor(port: number, options: { ipv6?: boolean } = {}): ReadonlySet<string> {
  assertInteger(port, 'port', 1, 65535);
  const hosts = [`127.0.0.1:${port}`, `localhost:${port}`];
  if (options.ipv6 !== false) hosts.push(`[::1]:${port}`);
  return new Set(hosts);
}

/**
 * A constant-time check of a bearer token against the expected loopback token (P-c).
 * Lengths are compared first (the token's length is fixed by its format and not secret), then the bytes
 * with `crypto.timingSafeEqual`; a length mismatch still does one comparison of equal cost.
 *
 * @param expected the loopback token (a string or a {@link Secret}), RFC 6750 b64token syntax, at least
 *   {@link MIN_TOKEN_LENGTH} characters.
 * @returns a verifier that never throws and returns `true` only for the exact token.
 * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` (the message never holds the token).
 */
export function createTokenVerifier(expected: string | Secret): (candidate: string) => boolean {
  const value = expected instanceof Secret ? expected.reveal() : expected;
  if (typeof value !== 'string') throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'expected token must be a string');
  if (value.length < MIN_TOKEN_LENGTH || value.length > MAX_TOKEN_LENGTH || !B64TOKEN.test(value)) {
    throw invalidPolicy(
      'expected token',
      `a bearer token (b64token syntax, ${MIN_TOKEN_LENGTH}-${MAX_TOKEN_LENGTH} characters)`,
    );
  }
  const expectedBytes = Buffer.from(value, 'utf8');
  return (candidate: string): boolean => {
    try {
      if (typeof candidate !== 'string' || candidate.length > MAX_TOKEN_LENGTH) return false;
      const candidateBytes = Buffer.from(candidate, 'utf8');
      if (candidateBytes.length !== expectedBytes.length) {
        timingSafeEqual(expectedBytes, expectedBytes);
        return false;
      }
      return timingSafeEqual(candidateBytes, expectedBytes);
    } catch {
      return false;
    }
  };
}
