/**
 * The discovery record and the published state, the writer's side (`up`): two small 0600 JSON files in
 * `<data dir>/run` (0700), written with the private-file helpers. Neither holds a secret. The record names
 * the `up` process by pid, start time and executable, so a reader can tell a stale record from a live one;
 * readers then attest the front door before they send the token (src/shell/discovery.ts, P-k).
 */
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ensurePrivateDir, readJsonFile, writePrivateJson } from '../../common/private-file.js';
import { CompanionError } from '../../core/errors.js';
import { isLoopbackAddress } from '../../core/guard.js';
import { procAvailable, readProcessIdentity, recordedProcessIsLive } from '../../common/process-identity.js';

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

/** The record `up` writes for its front door at `url`: this process's pid, start time and executable. */
export function discoveryRecordFor(url: string, now = Date.now()): DiscoveryRecord {
  const identity = procAvailable() ? readProcessIdentity(process.pid) : null;
  return {
    format: DISCOVERY_FORMAT,
    url,
    pid: process.pid,
    startTime: identity?.startTime ?? null,
    exe: identity?.exe ?? null,
    startedAt: now,
  };
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
  return (
    url.protocol === 'http:' &&
    isLoopbackAddress(host) &&
    url.port !== '' &&
    url.pathname === '/v1' &&
    url.username === '' &&
    url.password === '' &&
    url.search === '' &&
    url.hash === '' &&
    url.href === value
  );
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
  return {
    format: DISCOVERY_FORMAT,
    url: r.url,
    pid: r.pid,
    startTime: r.startTime as string | null,
    exe: r.exe as string | null,
    startedAt: r.startedAt,
  };
}

/**
 * The discovery record of a running companion, or null: missing, unreadable, malformed, written before
 * records carried identity, or its process gone or replaced (a reused pid). Not yet proof that the URL is
 * ours: call {@link verifyEndpoint} before sending the token there.
 */
export async function readDiscovery(path: string): Promise<DiscoveryRecord | null> {
  const record = parseDiscoveryRecord(await readJsonFile(path));
  return record !== null && recordedProcessIsLive(record) ? record : null;
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
  if (record !== null && record.pid !== process.pid && recordedProcessIsLive(record)) {
    throw new CompanionError(
      'ERR_LOCKED_BY_OTHER',
      `another companion (pid ${record.pid}) is running with this data directory; stop it first or use another --data-dir`,
      { detail: { pid: record.pid } },
    );
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

/** Removes the file at `path` if there is one (the published state, when `up` closes). */
export async function removeFile(path: string): Promise<void> {
  await rm(path, { force: true });
}
