/**
 * Endpoint discovery for local clients and the state `up` publishes for `status`: two small 0600 JSON
 * files in `<data dir>/run` (0700). Neither holds a secret: the loopback token lives in the keychain and
 * is printed only by `companion endpoint`, on request.
 */
import { readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ensurePrivateDir, writePrivateFileAtomic } from '../common/private-file.js';

export interface DiscoveryRecord {
  /** The OpenAI-compatible base URL, `http://127.0.0.1:P/v1`. */
  readonly url: string;
  readonly pid: number;
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
}

/**
 * Writes `value` as JSON to a 0600 file in a private 0700 folder (src/common/private-file.ts): a random
 * O_EXCL|O_NOFOLLOW temp name, never a predictable one a planted symlink could redirect (P-f).
 * @throws ERR_STATE_UNSAFE when the folder is a symlink or another user's; the I/O error otherwise.
 */
export async function writePrivateJson(path: string, value: unknown): Promise<void> {
  await ensurePrivateDir(dirname(path));
  await writePrivateFileAtomic(path, JSON.stringify(value));
}

export async function readJsonFile<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return null;
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

/** The discovery record of a running companion, or null (missing, unreadable, or its process is gone). */
export async function readDiscovery(path: string): Promise<DiscoveryRecord | null> {
  const record = await readJsonFile<DiscoveryRecord>(path);
  if (record === null || typeof record.url !== 'string' || !processAlive(record.pid)) return null;
  return record;
}

export async function removeFile(path: string): Promise<void> {
  await rm(path, { force: true });
}

/**
 * One `/health` round trip through the front door with the loopback token: true only on 200 within the
 * bound; false on any doubt (refused, timeout, not ready). Used by `status` and `run`.
 */
export async function endpointHealthy(endpoint: string, token: string, timeoutMs = 2_000): Promise<boolean> {
  try {
    const response = await fetch(new URL('/health', endpoint), { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(timeoutMs) });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}
