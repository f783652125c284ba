/**
 * Large synthetic model files, generated on the fly from a seed: the AES-128-CTR keystream of a key
 * derived from the seed. Deterministic, random-access (any byte range without generating what comes
 * before it), about a GiB per second, and never held in memory.
 *
 * Their SHA-256 is computed by streaming the whole file once and cached: per process in memory, and in
 * the hub's data directory (`synthetic-sha256.json`, keyed by seed and size) when there is one. A spec
 * may also carry its digest (for benchmarks that start many hubs).
 */
import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { assertInteger } from '../core/errors.js';
import { invalidArgument } from './args.js';
import { readJsonFileSync, writePrivateFileAtomicSync } from '../common/private-file.js';

/** A synthetic model to serve and list in the manifest. */
export interface SyntheticModelSpec {
  /** Manifest id; `[a-z0-9][a-z0-9._-]*`, at most 64 characters. */
  readonly id: string;
  readonly name?: string;
  /** Exact size in bytes (0 … 2^53-1). */
  readonly size: number;
  /** Any integer or string; the same seed and size give the same bytes. */
  readonly seed: number | string;
  readonly contextLength?: number;
  /** The digest, when already known (skips the hashing pass; a wrong value is served as given). */
  readonly sha256?: string;
}

const CHUNK = 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);
const MAX_SIZE = Number.MAX_SAFE_INTEGER;

function keyFor(seed: number | string): Buffer {
  return createHash('sha256')
    .update(`companion-synthetic-v1\0${String(seed)}`, 'utf8')
    .digest()
    .subarray(0, 16);
}

function counterBlock(blockIndex: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(blockIndex), 8);
  return iv;
}

/** Validates a spec. @throws TypeError ERR_INVALID_ARG_VALUE / ERR_INVALID_ARG_TYPE */
export function assertSyntheticSpec(spec: SyntheticModelSpec): void {
  if (typeof spec.id !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(spec.id))
    throw invalidArgument('a synthetic model id', 'a name matching [a-z0-9][a-z0-9._-]{0,63}');
  assertInteger(spec.size, 'a synthetic model size', 0, MAX_SIZE);
  if (typeof spec.seed !== 'string' && !Number.isSafeInteger(spec.seed))
    throw invalidArgument('a synthetic model seed', 'an integer or a string');
  if (spec.sha256 !== undefined && (typeof spec.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(spec.sha256)))
    throw invalidArgument('a synthetic model sha256', '64 lower-case hex digits');
}

/** The bytes `[start, endInclusive]` of the synthetic file (seed, size) as a stream. */
export function syntheticRange(seed: number | string, size: number, start: number, endInclusive: number): Readable {
  if (!(start >= 0 && endInclusive < size && start <= endInclusive + 1))
    throw new RangeError('range outside the synthetic file');
  const cipher = createCipheriv('aes-128-ctr', keyFor(seed), counterBlock(Math.floor(start / 16)));
  const skip = start % 16;
  if (skip > 0) cipher.update(ZEROS.subarray(0, skip));
  let remaining = endInclusive - start + 1;
  return new Readable({
    highWaterMark: CHUNK,
    read() {
      if (remaining <= 0) {
        this.push(null);
        return;
      }
      const length = Math.min(CHUNK, remaining);
      remaining -= length;
      this.push(cipher.update(ZEROS.subarray(0, length)));
      if (remaining <= 0) this.push(null);
    },
  });
}

const digestCache = new Map<string, Promise<string>>();

/** SHA-256 (lower hex) of a synthetic file, computed by streaming it once. */
export function syntheticSha256(seed: number | string, size: number): Promise<string> {
  const cacheKey = `${typeof seed}:${String(seed)}:${size}`;
  let pending = digestCache.get(cacheKey);
  if (pending === undefined) {
    pending = (async () => {
      const hash = createHash('sha256');
      if (size > 0) for await (const chunk of syntheticRange(seed, size, 0, size - 1)) hash.update(chunk as Buffer);
      return hash.digest('hex');
    })();
    digestCache.set(cacheKey, pending);
    pending.catch(() => digestCache.delete(cacheKey));
  }
  return pending;
}

interface DigestFile {
  readonly format: 'companion-hub-synthetic-sha256-v1';
  readonly digests: Record<string, string>;
}

/**
 * Digest of each spec, in order: the spec's own, then the data directory's cache, then a hashing pass
 * (whose result is added to the cache file).
 */
export async function resolveSyntheticDigests(
  specs: readonly SyntheticModelSpec[],
  dataDir: string | null,
): Promise<string[]> {
  const path = dataDir === null ? null : join(dataDir, 'synthetic-sha256.json');
  const stored = path === null ? null : (readJsonFileSync(path, 'a hub data file') as DigestFile | null);
  const digests: Record<string, string> =
    stored?.format === 'companion-hub-synthetic-sha256-v1' ? { ...stored.digests } : {};
  let changed = false;
  const out: string[] = [];
  for (const spec of specs) {
    const cacheKey = `${typeof spec.seed}:${String(spec.seed)}:${spec.size}`;
    let digest = spec.sha256 ?? digests[cacheKey];
    if (digest === undefined || !/^[0-9a-f]{64}$/.test(digest)) {
      digest = await syntheticSha256(spec.seed, spec.size);
      if (spec.sha256 === undefined) {
        digests[cacheKey] = digest;
        changed = true;
      }
    }
    out.push(digest);
  }
  if (path !== null && changed)
    writePrivateFileAtomicSync(
      path,
      JSON.stringify({ format: 'companion-hub-synthetic-sha256-v1', digests } satisfies DigestFile),
    );
  return out;
}
