/**
 * One line for a hub that could not be talked to: what happened, where, and what to do (issue 18, item 7).
 * A transport failure from fetch (undici) is reduced to its error code (`ECONNREFUSED`, a certificate
 * code, …) and turned into ERR_HUB_UNREACHABLE with a message that names the hub's URL and the fix, so
 * "the hub is down" and "the hub's certificate is not trusted (--ca)" read differently. Nothing from the
 * library's message is copied: it may quote request details.
 */
import { isTlsError } from '../common/tls.js';
import { CompanionError } from '../core/errors.js';

/** Error codes that are safe to print: upper-case letters, digits and `_` only. */
const SAFE_CODE = /^[A-Z][A-Z0-9_]{1,63}$/;

/** The first safe `code` (or `TimeoutError` / `AbortError` name, or BAD_PORT) along the cause chain, or null. */
export function transportCode(error: unknown): string | null {
  for (
    let e = error, depth = 0;
    e !== null && typeof e === 'object' && depth < 5;
    e = (e as { cause?: unknown }).cause, depth++
  ) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && SAFE_CODE.test(code)) return code;
    const name = (e as { name?: unknown }).name;
    if (name === 'TimeoutError' || name === 'AbortError') return name;
    // The fetch standard's blocked ports (9, 25, 6000, …): undici says only "bad port", a fixed text.
    if ((e as { message?: unknown }).message === 'bad port') return 'BAD_PORT';
  }
  return null;
}

/** The hub URL as it may be shown: scheme, host, port and path, never userinfo, query or fragment. */
export function printableHub(hubUrl: string): string {
  try {
    const url = new URL(hubUrl);
    return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
  } catch {
    return 'the configured address';
  }
}

/**
 * What to do about a transport failure, each with the failures it answers (transport code → what
 * happened). One table of fixes: the same advice is written once, however many codes lead to it.
 */
const FIXES: readonly (readonly [fix: string, failures: Readonly<Record<string, string>>])[] = [
  ['is the hub running (companion hub)? check --hub', { ECONNREFUSED: 'connection refused' }],
  ['check the host name in --hub', { ENOTFOUND: 'host name not found' }],
  ['check the network and the host name in --hub', { EAI_AGAIN: 'host name lookup failed' }],
  [
    'check the network and --hub',
    {
      ETIMEDOUT: 'timed out',
      UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
      TimeoutError: 'timed out',
      EHOSTUNREACH: 'host unreachable',
    },
  ],
  ['check that the hub is healthy', { UND_ERR_HEADERS_TIMEOUT: 'no answer in time' }],
  ['run the command again', { AbortError: 'cancelled' }],
  [
    'check the network and that --hub names an https hub',
    { ECONNRESET: 'connection reset', UND_ERR_SOCKET: 'connection closed' },
  ],
  ['check the network', { ENETUNREACH: 'network unreachable' }],
  ['give the hub another port in --hub', { BAD_PORT: 'a port that fetch refuses to use' }],
];

/** Transport code → [what happened, what to do], read from {@link FIXES}. */
const CONNECT_REASONS: ReadonlyMap<string, readonly [string, string]> = new Map(
  FIXES.flatMap(([fix, failures]) => Object.entries(failures).map(([code, what]) => [code, [what, fix]] as const)),
);

/**
 * ERR_HUB_UNREACHABLE for a transport failure talking to the hub at `hubUrl`. A certificate failure gets
 * `detail.reason = 'tls'` and names `--ca`; anything else gets `detail.reason` = the transport code.
 * An error that is already a CompanionError is returned as it is.
 */
export function hubUnreachable(hubUrl: string, error: unknown): CompanionError {
  if (error instanceof CompanionError) return error;
  const where = printableHub(hubUrl);
  const code = transportCode(error);
  if (isTlsError(error)) {
    const shown = code ?? 'TLS';
    const message =
      shown === 'CERT_HAS_EXPIRED' || shown === 'CERT_NOT_YET_VALID'
        ? `the hub's TLS certificate at ${where} is not valid now (${shown}); check the hub's certificate and this machine's clock`
        : shown === 'ERR_TLS_CERT_ALTNAME_INVALID'
          ? `the hub's TLS certificate does not name the host in --hub ${where} (${shown}); use the hub's own host name`
          : `the hub's TLS certificate at ${where} could not be verified: it is not trusted (${shown}); a hub with a private CA needs --ca FILE`;
    return new CompanionError('ERR_HUB_UNREACHABLE', message, { detail: { reason: 'tls', code: shown } });
  }
  const [what, fix] = (code !== null ? CONNECT_REASONS.get(code) : undefined) ?? [
    code ?? 'network error',
    'check the network and --hub',
  ];
  return new CompanionError('ERR_HUB_UNREACHABLE', `the hub at ${where} could not be reached (${what}); ${fix}`, {
    detail: { reason: code ?? 'network' },
  });
}
