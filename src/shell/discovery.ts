/**
 * Endpoint discovery, the reader's side (local clients: `endpoint`, `status`, `run`, `ps`). The records are
 * written by `up` (src/runtime/manager/discovery.ts): small 0600 JSON files in `<data dir>/run`, atomic
 * and private. Neither holds a secret: the loopback token lives in the
 * keychain and is printed only by `companion endpoint`, on request.
 *
 * Trust (P-k, issue 16 item 3). After an unclean exit the discovery file stays behind, its pid may be
 * reused and its port taken by another local user. So a reader trusts it in two steps, and sends the
 * loopback token (or a prompt) only after both:
 *
 * 1. **Identity** ({@link readDiscovery}): the record names the `up` process by pid, start time (field 22
 *    of /proc/<pid>/stat) and executable (/proc/<pid>/exe), as src/runtime/stale.ts does for the runtime.
 *    A record whose process is gone, or whose pid now belongs to another process, is stale: "not
 *    running". `up` removes a stale record when it starts, and refuses to start over a live one
 *    ({@link claimDiscovery}).
 * 2. **Attestation** ({@link verifyEndpoint}, {@link connectVerified}): the front door proves, without the
 *    token being sent, that it holds the token: the MAC of a fresh nonce and of the Host the client
 *    dialled (src/core/attest.ts). Only then is the URL handed out, branded as verified; the health check
 *    ({@link companionAvailableAt}) takes nothing else.
 *
 * Where there is no /proc (macOS, Windows) identity cannot be read: the record carries no start time and
 * the reader falls back to "the pid is alive", leaving the decision to the attestation.
 */
import { request } from 'node:http';
import { readJsonFile } from '../common/private-file.js';
import { settleOnce } from '../common/settle-once.js';
import { ATTEST_NONCE_HEADER, ATTEST_ROUTE, createAttestNonce, verifyAttestation } from '../core/attest.js';
import type { Secret } from '../core/secret.js';
import { readDiscovery, type DiscoveryRecord, type PublishedState } from '../runtime/manager/discovery.js';

/** A front-door URL that passed the attestation; only {@link verifyEndpoint} makes one. */
export interface VerifiedEndpoint {
  readonly url: string;
}

/** The outcome of {@link connectVerified} / {@link verifyEndpoint}. */
export type EndpointCheck =
  | { readonly ok: true; readonly endpoint: VerifiedEndpoint; readonly record: DiscoveryRecord }
  /** `ERR_UPSTREAM_UNAVAILABLE`: no record, a stale one, or nothing answers; `ERR_ENDPOINT_UNVERIFIED`: something answered and failed the attestation. */
  | { readonly ok: false; readonly code: 'ERR_UPSTREAM_UNAVAILABLE' | 'ERR_ENDPOINT_UNVERIFIED' };

/** How long the attestation round trip may take before the endpoint counts as unverified. */
export const ATTEST_TIMEOUT_MS = 2_000;
/** The largest attestation answer read (a real one is ~55 bytes). */
const MAX_ATTEST_BODY = 1_024;

// Why a WeakSet: the health check must not take a URL that skipped the attestation (STYLE "brand what was validated").
const verified = new WeakSet<VerifiedEndpoint>();

/** The published state of the companion with `pid` (the discovery record's), or null. */
export async function readPublishedState(path: string, pid: number): Promise<PublishedState | null> {
  const value = await readJsonFile(path);
  if (typeof value !== 'object' || value === null || (value as { pid?: unknown }).pid !== pid) return null;
  return value as PublishedState;
}

type AttestOutcome = 'verified' | 'unreachable' | 'refuted';

/**
 * One attestation round trip (docs/front-door.md, "Attestation"): `GET /companion/attest` with a fresh
 * nonce and no Authorization header, on a connection of its own, within `timeoutMs`. `verified` only when
 * the answer is 200 with `{"mac"}` equal (constant time) to the MAC of the Host dialled and the nonce.
 */
function attest(url: string, token: string, timeoutMs: number): Promise<AttestOutcome> {
  const target = new URL(url);
  const host = target.host;
  const nonce = createAttestNonce();
  return new Promise((resolve) => {
    const finish = settleOnce<AttestOutcome>(resolve, () => {
      clearTimeout(timer);
      req.destroy();
    });
    const req = request(
      {
        host: target.hostname.startsWith('[') ? target.hostname.slice(1, -1) : target.hostname,
        port: Number(target.port),
        method: ATTEST_ROUTE.method,
        path: ATTEST_ROUTE.path,
        // Exactly these headers: the Host the MAC must name, the nonce, and no credential of any kind.
        headers: { host, [ATTEST_NONCE_HEADER]: nonce, connection: 'close' },
        agent: false,
        maxHeaderSize: 16 * 1024,
      },
      (res) => {
        if (res.statusCode !== 200) {
          finish('refuted');
          return;
        }
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
          if (body.length > MAX_ATTEST_BODY) finish('refuted');
        });
        res.on('end', () => {
          let mac: unknown;
          try {
            const parsed = JSON.parse(body) as unknown;
            mac = typeof parsed === 'object' && parsed !== null ? (parsed as { mac?: unknown }).mac : undefined;
          } catch {
            mac = undefined;
          }
          finish(verifyAttestation(token, host, nonce, mac) ? 'verified' : 'refuted');
        });
        res.on('error', () => finish('refuted'));
      },
    );
    // A listener that accepts and never answers is as bad as a wrong answer.
    const timer = setTimeout(() => finish('refuted'), timeoutMs);
    req.on('error', (error: Error & { code?: string }) =>
      finish(error.code === 'ECONNREFUSED' ? 'unreachable' : 'refuted'),
    );
    req.end();
  });
}

/**
 * Makes the front door named by an identity-checked record prove that it holds `token`, without sending
 * the token (or anything but a nonce). Returns the branded endpoint on success.
 *
 * @param record from {@link readDiscovery}.
 * @param token the loopback token the caller will use there.
 * @returns `{ ok: true, endpoint, record }`, or `{ ok: false, code }`: `ERR_UPSTREAM_UNAVAILABLE` when
 *   nothing listens, `ERR_ENDPOINT_UNVERIFIED` when something answered and failed (wrong or no MAC, an error
 *   status, too slow or too large).
 */
export async function verifyEndpoint(
  record: DiscoveryRecord,
  token: string | Secret,
  options: { timeoutMs?: number } = {},
): Promise<EndpointCheck> {
  const secret = typeof token === 'string' ? token : token.reveal();
  const outcome = await attest(record.url, secret, options.timeoutMs ?? ATTEST_TIMEOUT_MS);
  if (outcome === 'unreachable') return { ok: false, code: 'ERR_UPSTREAM_UNAVAILABLE' };
  if (outcome === 'refuted') return { ok: false, code: 'ERR_ENDPOINT_UNVERIFIED' };
  const endpoint: VerifiedEndpoint = Object.freeze({ url: record.url });
  verified.add(endpoint);
  return { ok: true, endpoint, record };
}

/**
 * The one way a client gets a URL to use with the loopback token: the discovery record at
 * `discoveryPath`, identity-checked ({@link readDiscovery}), then attested ({@link verifyEndpoint}).
 * Nothing is sent to the endpoint but the attestation challenge.
 */
export async function connectVerified(
  discoveryPath: string,
  token: string | Secret,
  options: { timeoutMs?: number } = {},
): Promise<EndpointCheck> {
  const record = await readDiscovery(discoveryPath);
  if (record === null) return { ok: false, code: 'ERR_UPSTREAM_UNAVAILABLE' };
  return verifyEndpoint(record, token, options);
}

/** True for an endpoint object that {@link verifyEndpoint} produced. */
export function isVerifiedEndpoint(value: unknown): value is VerifiedEndpoint {
  return typeof value === 'object' && value !== null && verified.has(value as VerifiedEndpoint);
}

/**
 * `companionAvailable` as a client reads it (D5.7): one `/health` round trip through the front door with
 * the loopback token. The front door answers 200 exactly when the supervisor's one decision
 * (src/core/availability.ts) says available, so this is the only availability a client sees: true only
 * on 200 within the bound; false on any doubt (refused, timeout, 503), and false without a request for
 * an endpoint that did not pass the attestation. Used by `status` and `run`.
 */
export async function companionAvailableAt(
  endpoint: VerifiedEndpoint,
  token: string,
  timeoutMs = 2_000,
): Promise<boolean> {
  // Why: the token goes only to a door that proved it is ours.
  if (!isVerifiedEndpoint(endpoint)) return false;
  try {
    const response = await fetch(new URL('/health', endpoint.url), {
      headers: { authorization: `Bearer ${token}` },
      redirect: 'error',
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}
