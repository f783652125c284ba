/**
 * The verified model install (D5.5, P-h). The orchestrator, not the download adapter, owns integrity:
 * bytes stream into a temp file while the integrity accumulator hashes the same bytes; only a verdict of
 * `finalize()` lets the file be fsynced and renamed to its final name, and the directory fsynced. A final
 * name never holds unverified bytes. An interrupted pull resumes: the bytes on disk are hashed first, then
 * the rest is asked for with `Range` (and `If-Range`), and a host that ignores it restarts cleanly.
 *
 * The installed record keeps the model's identity (size, inode, mtime) and a hash *of* the digest, so a
 * later start can re-check the file without the digest itself being written anywhere.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, statfs, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dispatcher } from 'undici';
import { CompanionError } from '../core/errors.js';
import { createIntegrityAccumulator } from '../core/integrity.js';
import type { ManifestModel } from '../core/manifest-format.js';
import { download, type DownloadStart } from '../runtime/download.js';

export interface PullProgress {
  readonly event: 'progress';
  readonly model: string;
  readonly bytes: number;
  readonly total: number;
  readonly bytesPerSecond: number;
  readonly etaSeconds: number | null;
  readonly resumedFrom: number;
}

export type PullEvent =
  | PullProgress
  | { readonly event: 'resume'; readonly model: string; readonly offset: number }
  | { readonly event: 'restart'; readonly model: string; readonly reason: 'range-ignored' | 'changed' }
  | { readonly event: 'verified'; readonly model: string };

/** What the companion remembers about an installed, verified model (models/installed.json, 0600). */
export interface InstalledModel {
  readonly id: string;
  readonly name: string;
  readonly file: string;
  readonly size: number;
  /** SHA-256 of the lower-case hex digest: lets a start re-check the file without storing the digest. */
  readonly digestCheck: string;
  readonly inode: number;
  readonly mtimeMs: number;
  readonly verifiedAt: number;
  readonly manifestVersion: number;
}

export interface PullOptions {
  readonly model: ManifestModel;
  readonly manifestVersion: number;
  readonly modelsDir: string;
  readonly dispatcher: Dispatcher;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: PullEvent) => void;
  /** Minimum time between progress events (default 250 ms). */
  readonly progressIntervalMs?: number;
  /** Write path hook for fault tests (disk full): defaults to the file handle's write. */
  readonly writeChunk?: (handle: FileHandle, chunk: Buffer) => Promise<void>;
  readonly now?: () => number;
}

interface PartialMeta {
  readonly url: string;
  readonly size: number;
  readonly digestCheck: string;
  readonly etag: string | null;
}

const WRITE_BATCH = 1 << 20;

function digestCheckOf(sha256Hex: string): string {
  return createHash('sha256').update(sha256Hex.toLowerCase()).digest('hex');
}

/** File name of a model inside the models directory (ids are checked by the manifest core). */
export function modelFileName(id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id) || id.includes('..')) throw new CompanionError('ERR_MANIFEST_MALFORMED', 'a model id is not a safe file name');
  return `${id}.gguf`;
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function hashExisting(path: string, bytes: number, update: (chunk: Buffer) => void): Promise<void> {
  if (bytes === 0) return;
  const stream = createReadStream(path, { start: 0, end: bytes - 1, highWaterMark: WRITE_BATCH });
  for await (const chunk of stream as AsyncIterable<Buffer>) update(chunk);
}

async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return null;
  }
}

/** Reads the installed record, or null. */
export async function readInstalled(modelsDir: string): Promise<InstalledModel | null> {
  return readJson<InstalledModel>(join(modelsDir, 'installed.json'));
}

async function writePrivateJson(path: string, value: unknown): Promise<void> {
  const temp = `${path}.tmp`;
  await writeFile(temp, JSON.stringify(value), { mode: 0o600 });
  await rename(temp, path);
}

/**
 * Downloads, verifies and promotes one model. Resolves with the installed record; rejects with a coded
 * error (ERR_INTEGRITY_*, ERR_DOWNLOAD_*, ERR_DISK_SPACE, ERR_DISK_WRITE) and never leaves a final file
 * holding unverified bytes. A partial file is kept for resume after network errors and removed after an
 * integrity failure.
 */
export async function pullModel(options: PullOptions): Promise<InstalledModel> {
  const { model, modelsDir } = options;
  const now = options.now ?? Date.now;
  const finalName = modelFileName(model.id);
  const finalPath = join(modelsDir, finalName);
  const partialDir = join(modelsDir, '.partial');
  const partialPath = join(partialDir, `${finalName}.part`);
  const metaPath = `${partialPath}.json`;
  await mkdir(modelsDir, { recursive: true, mode: 0o700 });
  await mkdir(partialDir, { recursive: true, mode: 0o700 });

  const digestCheck = digestCheckOf(model.sha256);
  let offset = 0;
  let etag: string | null = null;
  const meta = await readJson<PartialMeta>(metaPath);
  const partial = await stat(partialPath).catch(() => null);
  if (meta && partial && meta.url === model.url && meta.size === model.size && meta.digestCheck === digestCheck && partial.size <= model.size) {
    offset = partial.size;
    etag = meta.etag;
  } else {
    await rm(partialPath, { force: true });
    await rm(metaPath, { force: true });
  }

  // Free space for what is still to come (the partial bytes are already on disk).
  const fsInfo = await statfs(modelsDir);
  if (fsInfo.bavail * fsInfo.bsize < model.size - offset) throw new CompanionError('ERR_DISK_SPACE');

  let accumulator = createIntegrityAccumulator({ expectedSize: model.size, expectedSha256: model.sha256 });
  if (offset > 0) {
    await hashExisting(partialPath, offset, (chunk) => accumulator.update(chunk));
    options.onEvent?.({ event: 'resume', model: model.id, offset });
  }

  const handle = await open(partialPath, offset > 0 ? 'r+' : 'w', 0o600);
  const writeChunk = options.writeChunk ?? (async (h: FileHandle, chunk: Buffer) => {
    await h.write(chunk);
  });
  let position = offset;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async (): Promise<void> => {
    if (pendingBytes === 0) return;
    const batch = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    try {
      await writeChunk(handle, batch);
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (code === 'ENOSPC' || code === 'EDQUOT') throw new CompanionError('ERR_DISK_SPACE');
      throw new CompanionError('ERR_DISK_WRITE');
    }
  };

  const started = now();
  let lastProgress = 0;
  const interval = options.progressIntervalMs ?? 250;
  const progress = (force: boolean): void => {
    const t = now();
    if (!force && t - lastProgress < interval) return;
    lastProgress = t;
    const elapsed = Math.max(1, t - started) / 1000;
    const rate = (position - offset) / elapsed;
    options.onEvent?.({
      event: 'progress', model: model.id, bytes: position, total: model.size, bytesPerSecond: Math.round(rate),
      etaSeconds: rate > 0 ? Math.round((model.size - position) / rate) : null, resumedFrom: offset,
    });
  };

  let integrityFailed = false;
  try {
    await download(model.url, {
      dispatcher: options.dispatcher,
      offset,
      ...(etag !== null && offset > 0 ? { ifRange: etag } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      onStart: async (start: DownloadStart) => {
        if (offset > 0 && !start.rangeHonoured) {
          // The host sent the whole file (Range ignored, or If-Range saw a changed ETag): start over.
          options.onEvent?.({ event: 'restart', model: model.id, reason: etag !== null && start.etag !== etag ? 'changed' : 'range-ignored' });
          await handle.truncate(0);
          position = 0;
          offset = 0;
          accumulator = createIntegrityAccumulator({ expectedSize: model.size, expectedSha256: model.sha256 });
        }
        if (start.totalSize !== null && start.totalSize !== model.size) {
          // The host says the file has another size than the signed manifest: refuse before writing.
          integrityFailed = true;
          throw new CompanionError(start.totalSize > model.size ? 'ERR_INTEGRITY_SIZE_OVER' : 'ERR_INTEGRITY_SIZE_UNDER');
        }
        await writePrivateJson(metaPath, { url: model.url, size: model.size, digestCheck, etag: start.etag } satisfies PartialMeta);
      },
      onChunk: async (chunk: Buffer) => {
        try {
          accumulator.update(chunk);
        } catch (error) {
          integrityFailed = true;
          throw error;
        }
        pending.push(chunk);
        pendingBytes += chunk.length;
        position += chunk.length;
        if (pendingBytes >= WRITE_BATCH) await flush();
        progress(false);
      },
    });
    await flush();
    progress(true);
    try {
      accumulator.finalize();
    } catch (error) {
      integrityFailed = true;
      throw error;
    }
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    if (integrityFailed) {
      await rm(partialPath, { force: true });
      await rm(metaPath, { force: true });
    }
    throw error;
  }
  await handle.close();
  // Verified: only now does the file get its final name.
  await rename(partialPath, finalPath);
  await fsyncDir(modelsDir);
  await rm(metaPath, { force: true });
  const info = await stat(finalPath);
  const installed: InstalledModel = {
    id: model.id, name: model.name, file: finalName, size: model.size, digestCheck,
    inode: info.ino, mtimeMs: info.mtimeMs, verifiedAt: now(), manifestVersion: options.manifestVersion,
  };
  await writePrivateJson(join(modelsDir, 'installed.json'), installed);
  await fsyncDir(modelsDir);
  options.onEvent?.({ event: 'verified', model: model.id });
  return installed;
}

/**
 * Re-checks an installed model before the runtime loads it: size and identity (inode, mtime) must match
 * the record; if the identity changed, the file is re-hashed and must still match the digest.
 * @returns the absolute model path. @throws ERR_MODEL_NOT_INSTALLED, ERR_MODEL_CHANGED
 */
export async function checkInstalledModel(modelsDir: string): Promise<{ path: string; installed: InstalledModel }> {
  const installed = await readInstalled(modelsDir);
  if (installed === null) throw new CompanionError('ERR_MODEL_NOT_INSTALLED');
  const path = join(modelsDir, modelFileName(installed.id));
  const info = await stat(path).catch(() => null);
  if (info === null || !info.isFile()) throw new CompanionError('ERR_MODEL_NOT_INSTALLED');
  if (info.size !== installed.size) throw new CompanionError('ERR_MODEL_CHANGED');
  if (info.ino === installed.inode && info.mtimeMs === installed.mtimeMs) return { path, installed };
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: WRITE_BATCH }) as AsyncIterable<Buffer>) hash.update(chunk);
  if (digestCheckOf(hash.digest('hex')) !== installed.digestCheck) throw new CompanionError('ERR_MODEL_CHANGED');
  const refreshed: InstalledModel = { ...installed, inode: info.ino, mtimeMs: info.mtimeMs };
  await writePrivateJson(join(modelsDir, 'installed.json'), refreshed);
  return { path, installed: refreshed };
}
