/**
 * Endpoint discovery for local clients and the state `up` publishes for `status`: two small 0600 JSON
 * files in `<data dir>/run` (0700), written with the private-file helpers (random temp name opened
 * `O_CREAT | O_EXCL | O_NOFOLLOW`, fsync, rename). Neither holds a secret: the loopback token lives in the
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
 *    ({@link endpointHealthy}) takes nothing else.
 *
 * Where there is no /proc (macOS, Windows) identity cannot be read: the record carries no start time and
 * the reader falls back to "the pid is alive", leaving the decision to the attestation.
 */
import { lstatSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { request } from 'node:http';
import { dirname } from 'node:path';
import { ensurePrivateDir, readJsonFile, writePrivateJson } from '../common/private-file.js';
import { ATTEST_NONCE_HEADER, ATTEST_ROUTE, createAttestNonce, verifyAttestation } from '../core/attest.js';
import { CompanionError } from '../core/errors.js';
import { isLoopbackAddress } from '../core/guard.js';
import type { Secret } from '../core/secret.js';
import { readProcessIdentity } from '../runtime/stale.js';

/** The format of the discovery record; a record without it (written before identity was recorded) is stale. */
export const DISCOVERY_FORMAT = 'companion-endpoint-v1';

export interface DiscoveryRecord {
  readonly format: typeof DISCOVERY_FORMAT;
  /** The OpenAI-compatible base URL, `http://127.0.0.1:P/v1`. */
  readonly url: string;
  /** The `up` process (not the runtime). */
  readonly pid: number;
  /** /proc/<pid>/stat field 22 of that process (clock ticks since boot), or null without /proc. */
  readonly startTime: string | null;
  /** readlink /proc/<pid>/exe of that process, or null without /proc. */
  readonly exe: string | null;
  readonly startedAt: number;
}

export interface PublishedState {
  readonly pid: number;
  readonly updatedAt: number;
  readonly runtime: { readonly state: string; readonly pid: number | null } | null;
  readonly model: { readonly id: string; readonly verified: boolean } | null;
  readonly companionAvailable: boolean;
  readonly resources: Record<string, unknown> | null;
  readonly endpoint: string | null;
  readonly sandbox: string;
  /** The runtime's sequences and tokens per sequence (issue 17 items 6–7); null before it is ready. */
  readonly parallel?: number | null;
  readonly contextSize?: number | null;
  /** What the runtime computes on (`cpu`, `cuda`, `vulkan`, `metal`) and the layers it offloaded; absent before ready. */
  readonly backend?: string;
  readonly gpuLayers?: number;
  /** Why a GPU that was asked for is not used. */
  readonly gpuFallback?: string;
}

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

function procAvailable(): boolean {
  try {
    lstatSync('/proc/self/stat');
    return true;
  } catch {
    return false;
  }
}

/** True when `pid` is a live process (signal 0; EPERM counts as alive). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

/** The record `up` writes for its front door at `url`: this process's pid, start time and executable. */
export function discoveryRecordFor(url: string, now = Date.now()): DiscoveryRecord {
  const identity = procAvailable() ? readProcessIdentity(process.pid) : null;
  return { format: DISCOVERY_FORMAT, url, pid: process.pid, startTime: identity?.startTime ?? null, exe: identity?.exe ?? null, startedAt: now };
}

/** A front-door base URL as `up` writes it: `http://<loopback literal>:<port>/v1`, nothing else. */
function isFrontDoorUrl(value: unknown): value is string {
  if (typeof value !== 'string' || value.length > 64) return false;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return url.protocol === 'http:' && isLoopbackAddress(host) && url.port !== '' && url.pathname === '/v1'
    && url.username === '' && url.password === '' && url.search === '' && url.hash === '' && url.href === value;
}

/** The validated record, or null for anything that is not one (including a record without identity). */
export function parseDiscoveryRecord(value: unknown): DiscoveryRecord | null {
  if (typeof value !== 'object' || value === null) return null;
  const r = value as Record<string, unknown>;
  if (r.format !== DISCOVERY_FORMAT || !isFrontDoorUrl(r.url)) return null;
  if (typeof r.pid !== 'number' || !Number.isSafeInteger(r.pid) || r.pid <= 1) return null;
  if (r.startTime !== null && (typeof r.startTime !== 'string' || !/^\d{1,20}$/.test(r.startTime))) return null;
  if (r.exe !== null && (typeof r.exe !== 'string' || !r.exe.startsWith('/'))) return null;
  if (typeof r.startedAt !== 'number' || !Number.isFinite(r.startedAt)) return null;
  return { format: DISCOVERY_FORMAT, url: r.url, pid: r.pid, startTime: r.startTime as string | null, exe: r.exe as string | null, startedAt: r.startedAt };
}

/**
 * True when the record's process is alive and is the one that wrote it: same pid, start time and
 * executable (not a zombie). Without /proc: the pid is alive (the attestation decides). Any doubt is false.
 */
export function recordIsLive(record: DiscoveryRecord): boolean {
  if (!procAvailable()) return processAlive(record.pid);
  // Why all three: a pid alone is reused; the start time tells a new process apart, the executable a new program.
  if (record.startTime === null || record.exe === null) return false;
  const identity = readProcessIdentity(record.pid);
  return identity !== null && identity.state !== 'Z' && identity.startTime === record.startTime && identity.exe === record.exe;
}

/**
 * The discovery record of a running companion, or null: missing, unreadable, malformed, written before
 * records carried identity, or its process gone or replaced (a reused pid). Not yet proof that the URL is
 * ours: call {@link verifyEndpoint} before sending the token there.
 */
export async function readDiscovery(path: string): Promise<DiscoveryRecord | null> {
  const record = parseDiscoveryRecord(await readJsonFile(path));
  return record !== null && recordIsLive(record) ? record : null;
}

/**
 * Called by `up` before it starts anything: removes a stale record (unreadable, malformed, or naming a
 * process that is gone or replaced), and refuses to start over a live one.
 * @throws ERR_LOCKED_BY_OTHER when the record names a live process with the recorded identity (another
 *   companion on this data dir: its record is left alone). ERR_STATE_UNSAFE for an unsafe `run/` folder.
 */
export async function claimDiscovery(path: string): Promise<void> {
  await ensurePrivateDir(dirname(path));
  const record = parseDiscoveryRecord(await readJsonFile(path));
  if (record !== null && record.pid !== process.pid && recordIsLive(record)) {
    throw new CompanionError('ERR_LOCKED_BY_OTHER', `another companion (pid ${record.pid}) is running with this data directory; stop it first or use another --data-dir`, { detail: { pid: record.pid } });
  }
  await rm(path, { force: true });
}

/** Writes this process's discovery record for the front door at `url` (0600, atomic, in a 0700 folder). */
export async function writeDiscovery(path: string, url: string): Promise<DiscoveryRecord> {
  const record = discoveryRecordFor(url);
  await ensurePrivateDir(dirname(path));
  await writePrivateJson(path, record);
  return record;
}

/** Removes the discovery record if it is this process's own (a newer companion's record is left alone). */
export async function removeDiscovery(path: string): Promise<void> {
  const record = parseDiscoveryRecord(await readJsonFile(path));
  if (record !== null && record.pid !== process.pid) return;
  await rm(path, { force: true });
}

/** Writes the state `up` publishes for `status` (0600, atomic, in a 0700 folder). */
export async function writePublishedState(path: string, state: PublishedState): Promise<void> {
  await ensurePrivateDir(dirname(path));
  await writePrivateJson(path, state);
}

/** The published state of the companion with `pid` (the discovery record's), or null. */
export async function readPublishedState(path: string, pid: number): Promise<PublishedState | null> {
  const value = await readJsonFile(path);
  if (typeof value !== 'object' || value === null || (value as { pid?: unknown }).pid !== pid) return null;
  return value as PublishedState;
}

export async function removeFile(path: string): Promise<void> {
  await rm(path, { force: true });
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
    let done = false;
    const finish = (outcome: AttestOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(outcome);
    };
    const req = request({
      host: target.hostname.startsWith('[') ? target.hostname.slice(1, -1) : target.hostname,
      port: Number(target.port),
      method: ATTEST_ROUTE.method,
      path: ATTEST_ROUTE.path,
      // Exactly these headers: the Host the MAC must name, the nonce, and no credential of any kind.
      headers: { host, [ATTEST_NONCE_HEADER]: nonce, connection: 'close' },
      agent: false,
      maxHeaderSize: 16 * 1024,
    }, (res) => {
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
    });
    // A listener that accepts and never answers is as bad as a wrong answer.
    const timer = setTimeout(() => finish('refuted'), timeoutMs);
    req.on('error', (error: Error & { code?: string }) => finish(error.code === 'ECONNREFUSED' ? 'unreachable' : 'refuted'));
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
export async function verifyEndpoint(record: DiscoveryRecord, token: string | Secret, options: { timeoutMs?: number } = {}): Promise<EndpointCheck> {
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
export async function connectVerified(discoveryPath: string, token: string | Secret, options: { timeoutMs?: number } = {}): Promise<EndpointCheck> {
  const record = await readDiscovery(discoveryPath);
  if (record === null) return { ok: false, code: 'ERR_UPSTREAM_UNAVAILABLE' };
  return verifyEndpoint(record, token, options);
}

/** True for an endpoint object that {@link verifyEndpoint} produced. */
export function isVerifiedEndpoint(value: unknown): value is VerifiedEndpoint {
  return typeof value === 'object' && value !== null && verified.has(value as VerifiedEndpoint);
}

/**
 * One `/health` round trip through the front door with the loopback token: true only on 200 within the
 * bound; false on any doubt (refused, timeout, not ready), and false without a request for an endpoint
 * that did not pass the attestation. Used by `status` and `run`.
 */
export async function endpointHealthy(endpoint: VerifiedEndpoint, token: string, timeoutMs = 2_000): Promise<boolean> {
  // Why: the token goes only to a door that proved it is ours.
  if (!isVerifiedEndpoint(endpoint)) return false;
  try {
    const response = await fetch(new URL('/health', endpoint.url), { headers: { authorization: `Bearer ${token}` }, redirect: 'error', signal: AbortSignal.timeout(timeoutMs) });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}
