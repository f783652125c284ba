/**
 * The verified model install (D5.5, P-h). The orchestrator, not the download adapter, owns integrity:
 * bytes stream into a temp file while the integrity accumulator hashes the same bytes; only a verdict of
 * `finalize()` lets the file be fsynced and renamed to its final name, and the directory fsynced. A final
 * name never holds unverified bytes. An interrupted pull resumes: the bytes on disk are hashed first, then
 * the rest is asked for with `Range` (and `If-Range`); a host that ignores it, or a file whose ETag
 * changed, restarts cleanly from byte 0.
 *
 * Every byte is written at an explicit file offset, the one the accumulator counted it at, so the hash
 * that is checked is the hash of what is on disk.
 *
 * The installed record keeps the model's identity (size, inode, mtime, ctime) and a hash *of* the digest,
 * so a later start can re-check the file without the digest itself being written anywhere. No error or
 * event carries the digest or a path (P-f).
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readdir, rename, rm, statfs, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dispatcher } from 'undici';
import { Worker } from 'node:worker_threads';
import { CompanionError, isCompanionError, type ErrorCode, CodedTypeError } from '../../core/errors.js';
import { createIntegrityAccumulator, type IntegrityAccumulator } from '../../core/integrity.js';
import type { ManifestModel } from '../../core/manifest-format.js';
import { download, isStrongEtag, type DownloadStart } from '../download.js';
import {
  checkPrivateDir,
  ensurePrivateDir,
  readJsonFile as readJson,
  writePrivateJson,
} from '../../common/private-file.js';
import { writePieces, type SinkInit, type SinkReply, type SinkRequest } from './install-worker.js';

export interface PullProgress {
  readonly event: 'progress';
  readonly model: string;
  /** Bytes of the file received so far (including resumed ones). */
  readonly bytes: number;
  readonly total: number;
  /** Rate of this attempt (bytes received by it over its time). */
  readonly bytesPerSecond: number;
  readonly etaSeconds: number | null;
  /** Where this attempt started (0, or the resume offset). */
  readonly resumedFrom: number;
}

export type PullEvent =
  | PullProgress
  | { readonly event: 'resume'; readonly model: string; readonly offset: number }
  | { readonly event: 'restart'; readonly model: string; readonly reason: 'range-ignored' | 'changed' }
  /** `active`: the model is the active one after this pull (the first installed one, or a new version of the active one). */
  | {
      readonly event: 'verified';
      readonly model: string;
      readonly bytes: number;
      readonly reused: boolean;
      readonly active: boolean;
    };

/**
 * What the companion remembers about an installed, verified model: one record per model in
 * `models/records/<id>.json`, and the active model's record in `models/installed.json` (0600 each). A
 * record only in `installed.json` (an install by an older version) counts as installed too.
 */
export interface InstalledModel {
  readonly id: string;
  readonly name: string;
  /** File name inside the models directory. */
  readonly file: string;
  readonly size: number;
  /** SHA-256 of the lower-case hex digest: lets a start re-check the file without storing the digest. */
  readonly digestCheck: string;
  /** Identity of the verified file (decimal, exact): a change means "hash it again before loading". */
  readonly inode: string;
  readonly dev: string;
  readonly mtimeNs: string;
  readonly ctimeNs: string;
  /** Unix milliseconds. */
  readonly verifiedAt: number;
  readonly manifestVersion: number;
}

/** Writes `chunk` at `position` of the temp file; a test may replace it to inject a failure (disk full). */
export type WriteChunk = (handle: FileHandle, chunk: Buffer, position: number) => Promise<void>;

export interface PullOptions {
  /** The model entry of a manifest that `verifyManifest()` accepted. */
  readonly model: ManifestModel;
  readonly manifestVersion: number;
  /** The models directory (created 0700). */
  readonly modelsDir: string;
  /** An undici dispatcher that verifies TLS (see `createTlsAgent`); it never carries credentials. */
  readonly dispatcher: Dispatcher;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: PullEvent) => void;
  /** Minimum time between progress events (default 250 ms). */
  readonly progressIntervalMs?: number;
  /**
   * Where hashing and writing run: on a worker thread (default: receiving, hashing and writing overlap)
   * or on the main thread (for comparison; also what the `writeChunk` hook implies).
   */
  readonly hashOn?: 'worker' | 'main';
  /** Fault-test hook: replaces the positional write of each batch (e.g. to throw ENOSPC). Main thread. */
  readonly writeChunk?: WriteChunk;
  readonly now?: () => number;
}

interface PartialMeta {
  readonly format: 'companion-partial-v1';
  readonly url: string;
  readonly size: number;
  readonly digestCheck: string;
  readonly etag: string | null;
}

/** Bytes per batch handed to the hashing and writing side (written in smaller pieces, see install-worker). */
const BATCH = 1 << 20;
const INSTALLED = 'installed.json';
const RECORDS_DIR = 'records';
const PARTIAL_DIR = '.partial';
const PART_SUFFIX = '.gguf.part';
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function digestCheckOf(sha256Hex: string): string {
  return createHash('sha256').update(sha256Hex.toLowerCase()).digest('hex');
}

/** File name of a model inside the models directory. @throws ERR_MANIFEST_MALFORMED for an unsafe id. */
export function modelFileName(id: string): string {
  if (typeof id !== 'string' || !MODEL_ID.test(id) || id.includes('..'))
    throw new CompanionError('ERR_MANIFEST_MALFORMED', 'a model id is not a safe file name');
  return `${id}.gguf`;
}

/** A file system failure as a coded error, without the library's message (it quotes paths). */
function diskError(error: unknown): CompanionError {
  if (error instanceof CompanionError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new CompanionError('ERR_DISK_SPACE');
  return new CompanionError('ERR_DISK_WRITE', undefined, typeof code === 'string' ? { detail: { cause: code } } : {});
}

/** Runs a file system step; its failure becomes ERR_DISK_SPACE / ERR_DISK_WRITE. */
async function disk<T>(step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    throw diskError(error);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A private folder (created 0700, never a symlink, ours); a bad one is ERR_STATE_UNSAFE. */
const privateDir = (dir: string): Promise<void> => ensurePrivateDir(dir);

const isDecimal = (value: unknown): value is string => typeof value === 'string' && /^\d{1,40}$/.test(value);

function asInstalled(value: unknown): InstalledModel | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  const ok =
    typeof v.id === 'string' &&
    MODEL_ID.test(v.id) &&
    typeof v.name === 'string' &&
    typeof v.file === 'string' &&
    Number.isSafeInteger(v.size) &&
    (v.size as number) > 0 &&
    typeof v.digestCheck === 'string' &&
    SHA256_HEX.test(v.digestCheck) &&
    isDecimal(v.inode) &&
    isDecimal(v.dev) &&
    isDecimal(v.mtimeNs) &&
    isDecimal(v.ctimeNs) &&
    typeof v.verifiedAt === 'number' &&
    Number.isSafeInteger(v.manifestVersion);
  return ok ? (v as unknown as InstalledModel) : null;
}

/** True when `id` is a model id that can name a file (the check {@link modelFileName} throws for). */
export function isModelId(id: unknown): id is string {
  return typeof id === 'string' && MODEL_ID.test(id) && !id.includes('..');
}

/**
 * Reads the record of the active model (no `id`), or of the installed model `id`; null when there is
 * none, it does not have the expected shape, or `id` is not a model id.
 */
export async function readInstalled(modelsDir: string, id?: string): Promise<InstalledModel | null> {
  const active = asInstalled(await readJson(join(modelsDir, INSTALLED)));
  if (id === undefined) return active;
  if (!isModelId(id)) return null;
  if (active !== null && active.id === id) return active;
  // Only from a private records folder: a link there would let someone else choose what is "installed".
  if (!(await checkPrivateDir(join(modelsDir, RECORDS_DIR)).catch(() => false))) return null;
  const own = asInstalled(await readJson(join(modelsDir, RECORDS_DIR, `${id}.json`)));
  return own !== null && own.id === id ? own : null;
}

/**
 * Every installed model's record (the active one's included), sorted by id. Records whose file has
 * gone are listed too: `checkInstalledModel` tells.
 * @throws ERR_STATE_UNSAFE when `modelsDir` or its records folder is a symlink or another user's
 */
export async function listInstalled(modelsDir: string): Promise<InstalledModel[]> {
  if (!(await checkPrivateDir(modelsDir))) return [];
  const byId = new Map<string, InstalledModel>();
  const dir = join(modelsDir, RECORDS_DIR);
  if (await checkPrivateDir(dir)) {
    for (const name of await readdir(dir)) {
      const id = name.endsWith('.json') ? name.slice(0, -'.json'.length) : '';
      if (!isModelId(id)) continue;
      const record = asInstalled(await readJson(join(dir, name)));
      if (record !== null && record.id === id) byId.set(id, record);
    }
  }
  const active = await readInstalled(modelsDir);
  if (active !== null) byId.set(active.id, active);
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** True when `installed` is the very build the manifest entry `model` names (same id, size and digest). */
export function isBuildOf(installed: InstalledModel, model: ManifestModel): boolean {
  return (
    installed.id === model.id &&
    installed.size === model.size &&
    typeof model.sha256 === 'string' &&
    installed.digestCheck === digestCheckOf(model.sha256)
  );
}

/** A download that was started and not finished (kept in `models/.partial/` for a resume). */
export interface PartialDownload {
  readonly id: string;
  /** Bytes received so far. */
  readonly bytes: number;
  /** The size the manifest announced, or null when its metadata is gone. */
  readonly total: number | null;
}

/** The partial downloads in `modelsDir`, sorted by id (none when the folder does not exist). */
export async function listPartials(modelsDir: string): Promise<PartialDownload[]> {
  const dir = join(modelsDir, PARTIAL_DIR);
  if (!(await checkPrivateDir(modelsDir)) || !(await checkPrivateDir(dir))) return [];
  const out: PartialDownload[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const id = name.endsWith(PART_SUFFIX) ? name.slice(0, -PART_SUFFIX.length) : '';
    if (!isModelId(id)) continue;
    const identity = await identityOf(join(dir, name));
    if (typeof identity === 'string') continue;
    const meta = (await readJson(join(dir, `${name}.json`))) as Partial<PartialMeta> | null;
    const total = meta?.format === 'companion-partial-v1' && Number.isSafeInteger(meta.size) ? meta.size! : null;
    out.push({ id, bytes: identity.size, total });
  }
  return out;
}

/**
 * Writes `installed` as its model's record and, when `active` says so, as the active model's record.
 * `'if-active'`: only when it is the active model already (a refresh).
 */
async function saveRecord(modelsDir: string, installed: InstalledModel, active: boolean | 'if-active'): Promise<void> {
  await privateDir(join(modelsDir, RECORDS_DIR));
  await writePrivateJson(join(modelsDir, RECORDS_DIR, `${installed.id}.json`), installed);
  const current = active === 'if-active' ? await readInstalled(modelsDir) : null;
  if (active === true || (active === 'if-active' && current?.id === installed.id))
    await writePrivateJson(join(modelsDir, INSTALLED), installed);
  await fsyncDir(modelsDir);
}

/** Temp names the atomic writer leaves when killed mid-write (src/common/private-file.ts): `.NAME.<16 hex>.tmp`. */
function isTempOf(entry: string, name: string): boolean {
  return entry.startsWith(`.${name}.`) && /^[0-9a-f]{16}\.tmp$/.test(entry.slice(name.length + 2));
}

/** Removes `dir/name` when it is there (a symlink is removed, never followed); true when it was. */
async function removeEntry(dir: string, name: string): Promise<boolean> {
  const path = join(dir, name);
  if ((await lstat(path).catch(() => null)) === null) return false;
  await rm(path, { force: true });
  return true;
}

/**
 * Removes what a download of `id` left in `models/.partial/` (the partial, its metadata, and temp files
 * of an interrupted write) and temp files of its record. Resolves with the number of files removed.
 * @throws ERR_DISK_WRITE, ERR_STATE_UNSAFE
 */
export async function removePartials(modelsDir: string, id: string): Promise<number> {
  const name = modelFileName(id);
  let removed = 0;
  await disk(async () => {
    if (!(await checkPrivateDir(modelsDir))) return;
    for (const [dir, record] of [
      [join(modelsDir, PARTIAL_DIR), `${name}.part`],
      [join(modelsDir, RECORDS_DIR), `${id}.json`],
    ] as const) {
      if (!(await checkPrivateDir(dir))) continue;
      for (const entry of await readdir(dir)) {
        const ours = dir.endsWith(PARTIAL_DIR)
          ? entry === record ||
            entry === `${record}.json` ||
            isTempOf(entry, record) ||
            isTempOf(entry, `${record}.json`)
          : isTempOf(entry, record);
        if (ours && (await removeEntry(dir, entry))) removed += 1;
      }
    }
  });
  return removed;
}

/**
 * The clean-up after a successful pull of `id`: what an earlier, superseded download of it left (its
 * partial and temp files). The verified file itself is never touched: a new version of `id` replaced the
 * older file at the promote, under the same name.
 * @returns the number of files removed. @throws ERR_DISK_WRITE, ERR_STATE_UNSAFE
 */
export function collectSuperseded(modelsDir: string, id: string): Promise<number> {
  return removePartials(modelsDir, id);
}

/**
 * Makes the installed model `id` the active one, after re-checking its file. The record of the model
 * that was active is kept, so it stays listed.
 * @returns the new active record and the id of the one it replaced (or null).
 * @throws ERR_MODEL_NOT_INSTALLED, ERR_MODEL_CHANGED, ERR_DISK_WRITE, ERR_STATE_UNSAFE
 */
export async function useModel(
  modelsDir: string,
  id: string,
): Promise<{ installed: InstalledModel; previous: string | null }> {
  const { installed } = await checkInstalledModel(modelsDir, id);
  const previous = await readInstalled(modelsDir);
  await disk(async () => {
    if (previous !== null && previous.id !== id) await saveRecord(modelsDir, previous, false);
    await saveRecord(modelsDir, installed, true);
  });
  return { installed, previous: previous?.id ?? null };
}

/**
 * Removes the installed model `id`: its file, its partial download files and its record (and the active
 * record when it was the active one: then no model is active). The caller checks that no running `up`
 * serves it. Removing a model that only has a partial download removes that.
 * @returns whether it was installed and active, and how many partial files went.
 * @throws ERR_MODEL_NOT_INSTALLED (nothing of `id` is there), ERR_DISK_WRITE, ERR_STATE_UNSAFE
 */
export async function removeModel(
  modelsDir: string,
  id: string,
): Promise<{ installed: boolean; wasActive: boolean; partials: number }> {
  if (!isModelId(id) || !(await checkPrivateDir(modelsDir))) throw new CompanionError('ERR_MODEL_NOT_INSTALLED');
  const record = await readInstalled(modelsDir, id);
  const active = await readInstalled(modelsDir);
  const wasActive = active?.id === id;
  // The file first: an interruption leaves a record without a file (listed as changed), never a file nobody lists.
  const file = await disk(() => removeEntry(modelsDir, modelFileName(id)));
  const partials = await removePartials(modelsDir, id);
  await disk(async () => {
    if (await checkPrivateDir(join(modelsDir, RECORDS_DIR)))
      await removeEntry(join(modelsDir, RECORDS_DIR), `${id}.json`);
    if (wasActive) await removeEntry(modelsDir, INSTALLED);
    await fsyncDir(modelsDir);
  });
  if (record === null && !file && partials === 0) throw new CompanionError('ERR_MODEL_NOT_INSTALLED');
  return { installed: record !== null || file, wasActive, partials };
}

interface Identity {
  readonly size: number;
  readonly inode: string;
  readonly dev: string;
  readonly mtimeNs: string;
  readonly ctimeNs: string;
}

/** The identity of a regular file, 'missing', or 'other' (a symlink, a folder…: not what was verified). */
async function identityOf(path: string): Promise<Identity | 'missing' | 'other'> {
  const info = await lstat(path, { bigint: true }).catch(() => null);
  if (info === null) return 'missing';
  if (!info.isFile()) return 'other';
  return {
    size: Number(info.size),
    inode: String(info.ino),
    dev: String(info.dev),
    mtimeNs: String(info.mtimeNs),
    ctimeNs: String(info.ctimeNs),
  };
}

function sameIdentity(a: Identity, b: Identity): boolean {
  return (
    a.size === b.size && a.inode === b.inode && a.dev === b.dev && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs
  );
}

/** Feeds the first `bytes` bytes of an open file to `update`, in large reads. */
async function hashFile(handle: FileHandle, bytes: number, update: (chunk: Buffer) => void): Promise<void> {
  const buffer = Buffer.allocUnsafe(Math.min(BATCH * 4, Math.max(1, bytes)));
  for (let position = 0; position < bytes;) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, bytes - position), position);
    if (bytesRead === 0) throw new CompanionError('ERR_DISK_WRITE', 'the file is shorter than expected');
    update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
}

/** The default write: synchronous, in small pieces (cheap on Linux page-cache folios, see install-worker). */
const positionalWrite: WriteChunk = async (handle, chunk, position) => {
  writePieces(handle.fd, chunk, position);
};

/** The temp file plus its integrity accumulator: what `pullModel` feeds the received bytes to. */
interface Sink {
  /** File offset of the next byte (bytes counted, written or queued). */
  readonly position: number;
  /** Hashes the first `bytes` bytes already in the file (a resume). */
  adopt(bytes: number): Promise<void>;
  /** Starts over at byte 0 with an empty file. */
  reset(): Promise<void>;
  /** Hashes and queues a chunk; returns a promise only when the caller must wait (backpressure). */
  push(chunk: Buffer): void | Promise<void>;
  /** Writes whatever is queued (after a network failure too, so a resume keeps those bytes). */
  drain(): Promise<void>;
  /** Drains, checks size and digest (ERR_INTEGRITY_*), fsyncs the file. */
  verify(): Promise<void>;
  /** Waits for any write still running, then releases everything (the file handle included). */
  close(): Promise<void>;
}

/**
 * The sink on the main thread: chunks are copied into a 1 MiB batch; a full batch is hashed and then
 * written at its file offset before more is taken (the caller waits). Used with the `writeChunk` fault
 * hook, and with `hashOn: 'main'`.
 */
class MainThreadSink implements Sink {
  readonly #handle: FileHandle;
  readonly #write: WriteChunk;
  readonly #expected: { expectedSize: number; expectedSha256: string };
  #accumulator: IntegrityAccumulator;
  readonly #batch = Buffer.allocUnsafe(BATCH);
  #fill = 0;
  #batchStart = 0;
  #failure: CompanionError | null = null;

  constructor(handle: FileHandle, write: WriteChunk, expected: { expectedSize: number; expectedSha256: string }) {
    this.#handle = handle;
    this.#write = write;
    this.#expected = expected;
    this.#accumulator = createIntegrityAccumulator(expected);
  }

  get position(): number {
    return this.#batchStart + this.#fill;
  }

  async adopt(bytes: number): Promise<void> {
    await disk(() => hashFile(this.#handle, bytes, (chunk) => this.#accumulator.update(chunk)));
    this.#batchStart = bytes;
  }

  async reset(): Promise<void> {
    await this.drain();
    await disk(() => this.#handle.truncate(0));
    this.#accumulator = createIntegrityAccumulator(this.#expected);
    this.#batchStart = 0;
  }

  push(chunk: Buffer): void | Promise<void> {
    if (this.#failure !== null) throw this.#failure;
    // Bytes past the expected size are refused before any of them is kept.
    if (chunk.length > this.#expected.expectedSize - this.position)
      throw overSize(this.#expected.expectedSize, this.position + chunk.length);
    const n = chunk.copy(this.#batch, this.#fill);
    this.#fill += n;
    if (this.#fill < BATCH) return undefined;
    return this.#flush().then(() => {
      if (n < chunk.length) return this.push(chunk.subarray(n));
      return undefined;
    });
  }

  /** Hashes the batch, then writes it at its offset. */
  async #flush(): Promise<void> {
    if (this.#fill === 0) return;
    const batch = this.#batch.subarray(0, this.#fill);
    try {
      this.#accumulator.update(batch);
      await this.#write(this.#handle, batch, this.#batchStart);
    } catch (error) {
      this.#failure = diskError(error);
      throw this.#failure;
    }
    this.#batchStart += this.#fill;
    this.#fill = 0;
  }

  async drain(): Promise<void> {
    if (this.#failure !== null) throw this.#failure;
    await this.#flush();
  }

  async verify(): Promise<void> {
    await this.drain();
    this.#accumulator.finalize();
    await disk(() => this.#handle.sync());
  }

  async close(): Promise<void> {
    await this.#handle.close().catch(() => undefined);
  }
}

function overSize(expectedSize: number, received: number): CompanionError {
  return new CompanionError('ERR_INTEGRITY_SIZE_OVER', undefined, { detail: { expectedSize, received } });
}

/** Batch buffers a worker sink may have at once (in its hands or in flight): bounds the memory. */
const WORKER_BATCHES = 4;
const WORKER_URL = new URL('./install-worker.js', import.meta.url);

/**
 * The sink on a worker thread (src/runtime/manager/install-worker.ts): the main thread only receives and copies
 * each chunk into a 1 MiB batch; the worker hashes each batch with the accumulator and then writes it at
 * its offset. Batches are transferred, not copied, and come back for reuse: at most four exist.
 */
class WorkerSink implements Sink {
  readonly #handle: FileHandle;
  readonly #size: number;
  readonly #worker: Worker;
  readonly #free: ArrayBuffer[] = [];
  #allocated = 0;
  #current: Buffer | null = null;
  #fill = 0;
  #batchStart = 0;
  #failure: CompanionError | null = null;
  #bufferWaiter: (() => void) | null = null;
  readonly #controls: { resolve: () => void; reject: (error: CompanionError) => void }[] = [];
  #gone = false;

  constructor(handle: FileHandle, expected: { expectedSize: number; expectedSha256: string }) {
    this.#handle = handle;
    this.#size = expected.expectedSize;
    const init: SinkInit = { fd: handle.fd, ...expected };
    this.#worker = new Worker(WORKER_URL, {
      workerData: { kind: 'companion-install-sink', init },
      stdout: false,
      stderr: false,
    });
    this.#worker.on('message', (reply: SinkReply) => this.#onReply(reply));
    this.#worker.on('error', () => this.#lost(new CompanionError('ERR_INTERNAL', 'the hashing thread failed')));
    this.#worker.on('exit', () => this.#lost(new CompanionError('ERR_INTERNAL', 'the hashing thread stopped')));
  }

  get position(): number {
    return this.#batchStart + this.#fill;
  }

  #onReply(reply: SinkReply): void {
    if (reply.type === 'free') {
      this.#free.push(reply.buffer);
      this.#wake();
    } else if (reply.type === 'done') {
      this.#controls.shift()?.resolve();
    } else {
      const error = workerFailure(reply.code, reply.cause);
      this.#failure ??= error;
      if (reply.type === 'refused') this.#controls.shift()?.reject(error);
      this.#wake();
    }
  }

  #lost(error: CompanionError): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#failure ??= error;
    for (const control of this.#controls.splice(0)) control.reject(this.#failure);
    this.#wake();
  }

  #wake(): void {
    const waiter = this.#bufferWaiter;
    this.#bufferWaiter = null;
    waiter?.();
  }

  #control(type: 'adopt' | 'reset' | 'drain' | 'verify', bytes = 0): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise<void>((resolve, reject) => {
      this.#controls.push({ resolve, reject });
      this.#worker.postMessage(type === 'adopt' ? { type, bytes } : ({ type } satisfies SinkRequest));
    });
  }

  async adopt(bytes: number): Promise<void> {
    await this.#control('adopt', bytes);
    this.#batchStart = bytes;
  }

  async reset(): Promise<void> {
    await this.drain();
    await this.#control('reset');
    this.#batchStart = 0;
  }

  /** A free batch buffer, allocating up to the bound, else waiting for one to come back. */
  async #nextBuffer(): Promise<void> {
    for (;;) {
      if (this.#failure !== null) throw this.#failure;
      const buffer =
        this.#free.pop() ??
        (this.#allocated < WORKER_BATCHES ? (this.#allocated++, new ArrayBuffer(BATCH)) : undefined);
      if (buffer !== undefined) {
        this.#current = Buffer.from(buffer);
        return;
      }
      await new Promise<void>((resolve) => {
        this.#bufferWaiter = resolve;
      });
    }
  }

  #send(): void {
    const current = this.#current!;
    const request: SinkRequest = {
      type: 'data',
      buffer: current.buffer as ArrayBuffer,
      length: this.#fill,
      position: this.#batchStart,
    };
    this.#worker.postMessage(request, [current.buffer as ArrayBuffer]);
    this.#batchStart += this.#fill;
    this.#fill = 0;
    this.#current = null;
  }

  push(chunk: Buffer): void | Promise<void> {
    if (this.#failure !== null) throw this.#failure;
    // The worker's accumulator refuses it too; refusing here stops the transfer at once.
    if (chunk.length > this.#size - this.position) throw overSize(this.#size, this.position + chunk.length);
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#current === null) return this.#pushSlow(chunk, offset);
      const n = chunk.copy(this.#current, this.#fill, offset);
      this.#fill += n;
      offset += n;
      if (this.#fill === BATCH) this.#send();
    }
    return undefined;
  }

  async #pushSlow(chunk: Buffer, from: number): Promise<void> {
    for (let offset = from; offset < chunk.length;) {
      if (this.#current === null) await this.#nextBuffer();
      const n = chunk.copy(this.#current!, this.#fill, offset);
      this.#fill += n;
      offset += n;
      if (this.#fill === BATCH) this.#send();
    }
  }

  async drain(): Promise<void> {
    if (this.#fill > 0 && this.#failure === null) this.#send();
    await this.#control('drain');
  }

  async verify(): Promise<void> {
    await this.drain();
    await this.#control('verify');
  }

  async close(): Promise<void> {
    // Every request before a drain is handled before its answer: no write runs once it comes back.
    if (!this.#gone) await this.#control('drain').catch(() => undefined);
    this.#gone = true;
    await this.#worker.terminate().catch(() => undefined);
    await this.#handle.close().catch(() => undefined);
  }
}

function workerFailure(code: string, cause: string | undefined): CompanionError {
  if (code === 'fs') return diskError({ code: cause });
  if (code.startsWith('ERR_INTEGRITY_')) return new CompanionError(code as ErrorCode);
  return new CompanionError('ERR_DISK_WRITE');
}

/** Thrown inside `onStart` to drop a ranged response whose ETag is not the one the partial came from. */
class RestartFromZero extends Error {}

function assertModel(model: ManifestModel): void {
  if (typeof model !== 'object' || model === null)
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'model must be a manifest model');
  modelFileName(model.id);
  if (!Number.isSafeInteger(model.size) || model.size <= 0)
    throw new CompanionError('ERR_MANIFEST_MALFORMED', 'a model size must be a positive integer');
  if (typeof model.sha256 !== 'string' || !SHA256_HEX.test(model.sha256))
    throw new CompanionError('ERR_MANIFEST_MALFORMED', 'a model sha256 must be 64 lower-case hex characters');
  let url: URL;
  try {
    url = new URL(model.url);
  } catch {
    throw new CompanionError('ERR_MANIFEST_MODEL_URL');
  }
  // The manifest core refuses it already; refusing again here keeps the promise local (P-h).
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '')
    throw new CompanionError('ERR_MANIFEST_MODEL_URL');
}

/** The identity of an open file (what was opened, not what the path names now). */
async function identityOfHandle(handle: FileHandle): Promise<Identity | 'other'> {
  const info = await handle.stat({ bigint: true });
  if (!info.isFile()) return 'other';
  return {
    size: Number(info.size),
    inode: String(info.ino),
    dev: String(info.dev),
    mtimeNs: String(info.mtimeNs),
    ctimeNs: String(info.ctimeNs),
  };
}

/** An installed model, opened once and checked through that very descriptor (issue 16 item 8). */
export interface OpenedModel {
  /** Read-only, O_NOFOLLOW; the caller closes it. Its bytes are the ones that were checked. */
  readonly handle: FileHandle;
  readonly path: string;
  readonly installed: InstalledModel;
}

/**
 * Opens the active model (or the installed model `id`) once (O_RDONLY | O_NOFOLLOW) and checks that
 * descriptor against its record:
 * same size and identity (inode, device, mtime, ctime, from fstat) passes at once; otherwise the
 * descriptor is hashed and must still match the verified digest (then the record is refreshed). The
 * caller hands this same descriptor to the runtime: there is no window between check and use.
 * @throws ERR_MODEL_NOT_INSTALLED (no record, or no file), ERR_MODEL_CHANGED (a link, size or digest differ),
 *   ERR_STATE_UNSAFE (`modelsDir` is a symlink or another user's)
 */
export async function openInstalledModel(modelsDir: string, id?: string): Promise<OpenedModel> {
  // O_NOFOLLOW guards the file name only: a `models/` that became a link would redirect record and file.
  if (!(await checkPrivateDir(modelsDir))) throw new CompanionError('ERR_MODEL_NOT_INSTALLED');
  const installed = await readInstalled(modelsDir, id);
  if (installed === null) throw new CompanionError('ERR_MODEL_NOT_INSTALLED');
  const path = join(modelsDir, modelFileName(installed.id));
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    // ELOOP: a symlink where the verified file was.
    throw new CompanionError(
      (error as { code?: unknown }).code === 'ENOENT' ? 'ERR_MODEL_NOT_INSTALLED' : 'ERR_MODEL_CHANGED',
    );
  }
  try {
    const identity = await identityOfHandle(handle);
    if (identity === 'other' || identity.size !== installed.size) throw new CompanionError('ERR_MODEL_CHANGED');
    if (sameIdentity(identity, installed)) return { handle, path, installed };
    const hash = createHash('sha256');
    await hashFile(handle, installed.size, (chunk) => hash.update(chunk)).catch(() => {
      throw new CompanionError('ERR_MODEL_CHANGED');
    });
    // A file that changed while it was hashed is not the one that was hashed.
    const after = await identityOfHandle(handle);
    if (after === 'other' || !sameIdentity(after, identity)) throw new CompanionError('ERR_MODEL_CHANGED');
    if (digestCheckOf(hash.digest('hex')) !== installed.digestCheck) throw new CompanionError('ERR_MODEL_CHANGED');
    const refreshed: InstalledModel = {
      ...installed,
      inode: identity.inode,
      dev: identity.dev,
      mtimeNs: identity.mtimeNs,
      ctimeNs: identity.ctimeNs,
    };
    await disk(() => saveRecord(modelsDir, refreshed, 'if-active'));
    return { handle, path, installed: refreshed };
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
}

/**
 * Re-checks the active model, or the installed model `id` ({@link openInstalledModel}), and closes it again.
 * @returns the absolute model path and the (possibly refreshed) record.
 * @throws ERR_MODEL_NOT_INSTALLED, ERR_MODEL_CHANGED
 */
export async function checkInstalledModel(
  modelsDir: string,
  id?: string,
): Promise<{ path: string; installed: InstalledModel }> {
  const opened = await openInstalledModel(modelsDir, id);
  await opened.handle.close();
  return { path: opened.path, installed: opened.installed };
}

/**
 * Downloads, verifies and promotes one model (D5.5). Resolves with the installed record; when that very
 * model (same id, size and digest) is installed and still checks, resolves at once (`reused`). The model
 * becomes the active one only when none is active or it is a new version of the active one.
 *
 * The temp file lives in `<modelsDir>/.partial/`; it is kept for a resume after a transport failure
 * (ERR_DOWNLOAD_*: network, stall, cancel; and after a kill), removed after anything else (integrity,
 * disk full, write error).
 * @throws ERR_MANIFEST_MALFORMED / ERR_MANIFEST_MODEL_URL (a bad model entry), ERR_DISK_SPACE,
 * ERR_DISK_WRITE, ERR_INTEGRITY_SIZE_OVER, ERR_INTEGRITY_SIZE_UNDER, ERR_INTEGRITY_DIGEST, and the
 * adapter's ERR_DOWNLOAD_* codes. No message names the digest or a path.
 */
export async function pullModel(options: PullOptions): Promise<InstalledModel> {
  const { model, modelsDir } = options;
  assertModel(model);
  const now = options.now ?? Date.now;
  const emit = options.onEvent ?? (() => undefined);
  const finalName = modelFileName(model.id);
  const finalPath = join(modelsDir, finalName);
  const partialDir = join(modelsDir, PARTIAL_DIR);
  const partialPath = join(partialDir, `${finalName}.part`);
  const metaPath = `${partialPath}.json`;
  const digestCheck = digestCheckOf(model.sha256);
  await disk(async () => {
    await privateDir(modelsDir);
    await privateDir(partialDir);
  });

  // The first model installed becomes the active one, and so does a new version of the active one; any
  // other keeps the active model (docs/decisions.md, "a second pull does not switch the active model").
  const activeNow = await readInstalled(modelsDir);
  const makeActive = activeNow === null || activeNow.id === model.id;

  // Already installed and unchanged: nothing to fetch.
  const existing = await readInstalled(modelsDir, model.id);
  if (
    existing !== null &&
    existing.id === model.id &&
    existing.size === model.size &&
    existing.digestCheck === digestCheck
  ) {
    const checked = await checkInstalledModel(modelsDir, model.id).catch((error: unknown) => {
      if (isCompanionError(error, 'ERR_MODEL_CHANGED', 'ERR_MODEL_NOT_INSTALLED')) return null;
      throw error;
    });
    if (checked !== null) {
      // Written again: an install by an older version has no record of its own yet.
      await disk(() => saveRecord(modelsDir, checked.installed, makeActive));
      emit({ event: 'verified', model: model.id, bytes: model.size, reused: true, active: makeActive });
      return checked.installed;
    }
  }

  // A partial from an earlier pull of the same manifest entry is resumed; anything else is discarded.
  let offset = 0;
  let etag: string | null = null;
  const meta = (await readJson(metaPath)) as Partial<PartialMeta> | null;
  const partial = await identityOf(partialPath);
  if (
    meta?.format === 'companion-partial-v1' &&
    typeof partial !== 'string' &&
    meta.url === model.url &&
    meta.size === model.size &&
    meta.digestCheck === digestCheck &&
    partial.size <= model.size
  ) {
    offset = partial.size;
    etag = typeof meta.etag === 'string' && isStrongEtag(meta.etag) ? meta.etag : null;
  } else {
    await disk(async () => {
      await rm(partialPath, { force: true });
      await rm(metaPath, { force: true });
    });
  }

  // Free space for what is still to come (the partial bytes are already on disk).
  const fsInfo = await disk(() => statfs(modelsDir));
  if (fsInfo.bavail * fsInfo.bsize < model.size - offset) throw new CompanionError('ERR_DISK_SPACE');

  // O_NOFOLLOW: the partial written is the partial in our folder, never a link planted there.
  const handle = await disk(() =>
    open(
      partialPath,
      offset > 0
        ? constants.O_RDWR | constants.O_NOFOLLOW
        : constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
      0o600,
    ),
  );
  const expected = { expectedSize: model.size, expectedSha256: model.sha256 };
  const writer: Sink =
    options.writeChunk !== undefined || options.hashOn === 'main'
      ? new MainThreadSink(handle, options.writeChunk ?? positionalWrite, expected)
      : new WorkerSink(handle, expected);
  try {
    if (offset > 0) {
      await writer.adopt(offset);
      emit({ event: 'resume', model: model.id, offset });
    }
    // A partial that is already whole (killed before the promote) needs no request.
    if (writer.position < model.size) await receive(options, writer, etag, metaPath, digestCheck, emit, now);
    await writer.verify();
  } catch (error) {
    // Only a transport failure keeps the partial for a resume, and only once it holds bytes: after an
    // integrity or disk failure its bytes are not worth keeping (a full disk also gets its space back).
    const resumable = isCompanionError(error) && error.code.startsWith('ERR_DOWNLOAD_');
    if (resumable) await writer.drain().catch(() => undefined);
    const keep = resumable && writer.position > 0;
    await writer.close();
    if (!keep) {
      await rm(partialPath, { force: true }).catch(() => undefined);
      await rm(metaPath, { force: true }).catch(() => undefined);
    }
    throw error;
  }
  await writer.close();

  // Verified and fsynced: only now does the file get its final name.
  return disk(async () => {
    await rename(partialPath, finalPath);
    await fsyncDir(modelsDir);
    await rm(metaPath, { force: true });
    const identity = await identityOf(finalPath);
    if (typeof identity === 'string' || identity.size !== model.size)
      throw new CompanionError('ERR_DISK_WRITE', 'the promoted file is not there');
    const installed: InstalledModel = {
      id: model.id,
      name: model.name,
      file: finalName,
      size: model.size,
      digestCheck,
      inode: identity.inode,
      dev: identity.dev,
      mtimeNs: identity.mtimeNs,
      ctimeNs: identity.ctimeNs,
      verifiedAt: now(),
      manifestVersion: options.manifestVersion,
    };
    await saveRecord(modelsDir, installed, makeActive);
    emit({ event: 'verified', model: model.id, bytes: model.size, reused: false, active: makeActive });
    return installed;
  });
}

/** The network part: one request, or two when a ranged answer comes from a file that changed. */
async function receive(
  options: PullOptions,
  writer: Sink,
  knownEtag: string | null,
  metaPath: string,
  digestCheck: string,
  emit: (event: PullEvent) => void,
  now: () => number,
): Promise<void> {
  const { model } = options;
  const interval = options.progressIntervalMs ?? 250;
  let etag = knownEtag;
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const from = writer.position;
    const started = now();
    let lastProgress = started;
    const progress = (force: boolean): void => {
      const t = now();
      if (!force && t - lastProgress < interval) return;
      lastProgress = t;
      const rate = (writer.position - from) / (Math.max(1, t - started) / 1000);
      emit({
        event: 'progress',
        model: model.id,
        bytes: writer.position,
        total: model.size,
        bytesPerSecond: Math.round(rate),
        etaSeconds: rate > 0 ? Math.round((model.size - writer.position) / rate) : null,
        resumedFrom: from,
      });
    };
    try {
      await download(model.url, {
        dispatcher: options.dispatcher,
        offset: from,
        ...(etag !== null && from > 0 ? { ifRange: etag } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        onStart: async (start: DownloadStart) => {
          if (from > 0 && start.rangeHonoured && etag !== null && start.etag !== etag) throw new RestartFromZero();
          if (from > 0 && !start.rangeHonoured) {
            // The whole file came back (Range ignored, or If-Range saw another ETag): start over.
            emit({
              event: 'restart',
              model: model.id,
              reason: etag !== null && start.etag !== etag ? 'changed' : 'range-ignored',
            });
            await writer.reset();
          }
          if (start.totalSize !== null && start.totalSize !== model.size) {
            // The host says the file has another size than the signed manifest: refuse before writing.
            throw new CompanionError(
              start.totalSize > model.size ? 'ERR_INTEGRITY_SIZE_OVER' : 'ERR_INTEGRITY_SIZE_UNDER',
            );
          }
          if (writer.position === 0) {
            // Written before the first byte, so a partial on disk always names the ETag its bytes came with.
            etag = start.etag !== null && isStrongEtag(start.etag) ? start.etag : null;
            await disk(() =>
              writePrivateJson(metaPath, {
                format: 'companion-partial-v1',
                url: model.url,
                size: model.size,
                digestCheck,
                etag,
              } satisfies PartialMeta),
            );
          }
          progress(true);
        },
        onChunk: (chunk: Buffer) => {
          progress(false);
          return writer.push(chunk);
        },
      });
      progress(true);
      return;
    } catch (error) {
      if (!(error instanceof RestartFromZero) || attempt > 0) throw error;
      emit({ event: 'restart', model: model.id, reason: 'changed' });
      await writer.reset();
      etag = null;
    }
  }
}
