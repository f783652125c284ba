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
import { constants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, rename, rm, statfs, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dispatcher } from 'undici';
import { CompanionError, isCompanionError, CodedTypeError } from '../../core/errors.js';
import { MODEL_ID_PATTERN, SHA256_HEX_PATTERN, type ManifestModel } from '../../core/manifest-format.js';
import { isVerifiedModel, type VerifiedModel } from '../../core/manifest.js';
import { download, isStrongEtag, type DownloadStart } from '../download.js';
import {
  checkPrivateDir,
  ensurePrivateDir,
  readJsonFile as readJson,
  writePrivateJson,
} from '../../common/private-file.js';
import type { WriteFault } from './install-worker.js';
import { InstallSink, diskError, type SinkPlacement } from './install-sink.js';

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

/** What {@link pullModel} installs, from where, and whom it tells. */
export interface PullOptions {
  /** A model entry of a manifest that `verifyManifest()` accepted (`findModel()`); nothing else is taken. */
  readonly model: VerifiedModel;
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
   * Where the sink that hashes and writes runs: on a worker thread (default: receiving, hashing and
   * writing overlap) or on the main thread (the same sink, for the download benchmark's comparison).
   */
  readonly hashOn?: SinkPlacement;
  /**
   * Fault tests only: makes the sink's writes fail from a given batch on (ENOSPC, EIO, a short write),
   * at the same write boundary and through the same error path as a real failure. Never set in production.
   */
  readonly writeFault?: WriteFault;
  readonly now?: () => number;
}

interface PartialMeta {
  readonly format: 'companion-partial-v1';
  readonly url: string;
  readonly size: number;
  readonly digestCheck: string;
  readonly etag: string | null;
}

/** Bytes per read when a file is hashed again (a changed identity). */
const HASH_READ = 4 << 20;
const INSTALLED = 'installed.json';
const RECORDS_DIR = 'records';
const PARTIAL_DIR = '.partial';
const PART_SUFFIX = '.gguf.part';

function digestCheckOf(sha256Hex: string): string {
  return createHash('sha256').update(sha256Hex.toLowerCase()).digest('hex');
}

/** File name of a model inside the models directory. @throws ERR_MANIFEST_MALFORMED for an unsafe id. */
export function modelFileName(id: string): string {
  if (!isModelId(id)) throw new CompanionError('ERR_MANIFEST_MALFORMED', 'a model id is not a safe file name');
  return `${id}.gguf`;
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
    MODEL_ID_PATTERN.test(v.id) &&
    typeof v.name === 'string' &&
    typeof v.file === 'string' &&
    Number.isSafeInteger(v.size) &&
    (v.size as number) > 0 &&
    typeof v.digestCheck === 'string' &&
    SHA256_HEX_PATTERN.test(v.digestCheck) &&
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
  return typeof id === 'string' && MODEL_ID_PATTERN.test(id) && !id.includes('..');
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
  return identityFrom(info);
}

/** The identity in `info`, or 'other' when it is not a regular file. */
function identityFrom(info: BigIntStats): Identity | 'other' {
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
  const buffer = Buffer.allocUnsafe(Math.min(HASH_READ, Math.max(1, bytes)));
  for (let position = 0; position < bytes;) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, bytes - position), position);
    if (bytesRead === 0) throw new CompanionError('ERR_DISK_WRITE', 'the file is shorter than expected');
    update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
}

/** The identity of an open file (what was opened, not what the path names now). */
async function identityOfHandle(handle: FileHandle): Promise<Identity | 'other'> {
  return identityFrom(await handle.stat({ bigint: true }));
}

declare const openedModelBrand: unique symbol;

/**
 * An installed model, opened once and checked through that very descriptor (issue 16 item 8). Only
 * {@link openInstalledModel} makes one: the type brand keeps look-alikes out at compile time and
 * {@link isOpenedModel} at run time, so whoever starts the runtime can require a checked descriptor.
 */
export interface OpenedModel {
  /** Read-only, O_NOFOLLOW; the caller closes it. Its bytes are the ones that were checked. */
  readonly handle: FileHandle;
  readonly path: string;
  readonly installed: InstalledModel;
  readonly [openedModelBrand]: true;
}

// Why a registry: a copy of an OpenedModel (spread, structured clone) is not a checked descriptor.
const openedModels = new WeakSet<object>();

/** True only for a value that {@link openInstalledModel} returned. */
export function isOpenedModel(value: unknown): value is OpenedModel {
  return typeof value === 'object' && value !== null && openedModels.has(value);
}

function openedModel(handle: FileHandle, path: string, installed: InstalledModel): OpenedModel {
  const opened = Object.freeze({ handle, path, installed }) as OpenedModel;
  openedModels.add(opened);
  return opened;
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
    if (sameIdentity(identity, installed)) return openedModel(handle, path, installed);
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
    return openedModel(handle, path, refreshed);
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

/** The paths and fixed facts of one pull. */
interface PullPlan {
  readonly model: VerifiedModel;
  readonly modelsDir: string;
  readonly finalName: string;
  readonly finalPath: string;
  readonly partialDir: string;
  readonly partialPath: string;
  readonly metaPath: string;
  /** The hash of the expected digest (what the partial metadata and the record keep). */
  readonly digestCheck: string;
  readonly emit: (event: PullEvent) => void;
  readonly now: () => number;
}

/** Where a download starts: 0, or the size of a partial of the same manifest entry (and its ETag). */
interface ResumePoint {
  readonly offset: number;
  readonly etag: string | null;
}

/** Thrown inside `onStart` to drop a ranged response whose ETag is not the one the partial came from. */
class RestartFromZero extends Error {}

/**
 * Downloads, verifies and promotes one model (D5.5). Resolves with the installed record; when that very
 * model (same id, size and digest) is installed and still checks, resolves at once (`reused`). The model
 * becomes the active one only when none is active or it is a new version of the active one.
 *
 * The temp file lives in `<modelsDir>/.partial/`; it is kept for a resume after a transport failure
 * (ERR_DOWNLOAD_*: network, stall, cancel; and after a kill), removed after anything else (integrity,
 * disk full, write error).
 * @throws TypeError ERR_INVALID_ARG_TYPE when `model` is not a {@link VerifiedModel} (a copy or a plain
 * object), ERR_MANIFEST_MALFORMED (a model id that cannot name a file), ERR_DISK_SPACE, ERR_DISK_WRITE,
 * ERR_STATE_UNSAFE, ERR_INTEGRITY_SIZE_OVER, ERR_INTEGRITY_SIZE_UNDER, ERR_INTEGRITY_DIGEST, and the
 * adapter's ERR_DOWNLOAD_* codes. No message names the digest or a path.
 */
export async function pullModel(options: PullOptions): Promise<InstalledModel> {
  // The manifest core checked the entry (id, https URL, size, digest); only its own values are taken.
  if (!isVerifiedModel(options.model))
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'model must come from findModel() of a verified manifest');
  const plan = planPull(options);
  await disk(async () => {
    await privateDir(plan.modelsDir);
    await privateDir(plan.partialDir);
  });
  // The first model installed becomes the active one, and so does a new version of the active one; any
  // other keeps the active model (docs/decisions.md, "a second pull does not switch the active model").
  const activeNow = await readInstalled(plan.modelsDir);
  const makeActive = activeNow === null || activeNow.id === plan.model.id;
  const reused = await reuseInstalled(plan, makeActive);
  if (reused !== null) return reused;
  const start = await resumePoint(plan);
  // Free space for what is still to come (the partial bytes are already on disk).
  const fsInfo = await disk(() => statfs(plan.modelsDir));
  if (fsInfo.bavail * fsInfo.bsize < plan.model.size - start.offset) throw new CompanionError('ERR_DISK_SPACE');
  await fillPartial(options, plan, start);
  return promote(plan, makeActive, options.manifestVersion);
}

function planPull(options: PullOptions): PullPlan {
  const { model, modelsDir } = options;
  const finalName = modelFileName(model.id);
  const partialDir = join(modelsDir, PARTIAL_DIR);
  const partialPath = join(partialDir, `${finalName}.part`);
  return {
    model,
    modelsDir,
    finalName,
    finalPath: join(modelsDir, finalName),
    partialDir,
    partialPath,
    metaPath: `${partialPath}.json`,
    digestCheck: digestCheckOf(model.sha256),
    emit: options.onEvent ?? (() => undefined),
    now: options.now ?? Date.now,
  };
}

/** The installed record when this very build is installed and its file still checks; else null. */
async function reuseInstalled(plan: PullPlan, makeActive: boolean): Promise<InstalledModel | null> {
  const { model, modelsDir } = plan;
  const existing = await readInstalled(modelsDir, model.id);
  if (existing === null || !isBuildOf(existing, model)) return null;
  const checked = await checkInstalledModel(modelsDir, model.id).catch((error: unknown) => {
    if (isCompanionError(error, 'ERR_MODEL_CHANGED', 'ERR_MODEL_NOT_INSTALLED')) return null;
    throw error;
  });
  if (checked === null) return null;
  // Written again: an install by an older version has no record of its own yet.
  await disk(() => saveRecord(modelsDir, checked.installed, makeActive));
  plan.emit({ event: 'verified', model: model.id, bytes: model.size, reused: true, active: makeActive });
  return checked.installed;
}

/** A partial from an earlier pull of the same manifest entry is resumed; anything else is discarded. */
async function resumePoint(plan: PullPlan): Promise<ResumePoint> {
  const { model } = plan;
  const meta = (await readJson(plan.metaPath)) as Partial<PartialMeta> | null;
  const partial = await identityOf(plan.partialPath);
  if (
    meta?.format === 'companion-partial-v1' &&
    typeof partial !== 'string' &&
    meta.url === model.url &&
    meta.size === model.size &&
    meta.digestCheck === plan.digestCheck &&
    partial.size <= model.size
  ) {
    return { offset: partial.size, etag: typeof meta.etag === 'string' && isStrongEtag(meta.etag) ? meta.etag : null };
  }
  await disk(async () => {
    await rm(plan.partialPath, { force: true });
    await rm(plan.metaPath, { force: true });
  });
  return { offset: 0, etag: null };
}

/** Opens the partial for writing: as it is for a resume, else created empty. */
function openPartial(partialPath: string, offset: number): Promise<FileHandle> {
  // O_NOFOLLOW: the partial written is the partial in our folder, never a link planted there.
  const flags =
    offset > 0
      ? constants.O_RDWR | constants.O_NOFOLLOW
      : constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  return disk(() => open(partialPath, flags, 0o600));
}

/** Brings the partial to the whole, verified and fsynced file; on failure keeps or removes it. */
async function fillPartial(options: PullOptions, plan: PullPlan, start: ResumePoint): Promise<void> {
  const { model } = plan;
  const handle = await openPartial(plan.partialPath, start.offset);
  const expected = { expectedSize: model.size, expectedSha256: model.sha256 };
  const sink = new InstallSink(handle, expected, options.hashOn ?? 'worker', options.writeFault);
  try {
    if (start.offset > 0) {
      await sink.adopt(start.offset);
      plan.emit({ event: 'resume', model: model.id, offset: start.offset });
    }
    // A partial that is already whole (killed before the promote) needs no request.
    if (sink.position < model.size) await receive(options, plan, sink, start.etag);
    await sink.verify();
  } catch (error) {
    await abandon(plan, sink, error);
    throw error;
  }
  await sink.close();
}

/** After a failed fill: closes the sink, and removes the partial unless a resume can use it. */
async function abandon(plan: PullPlan, sink: InstallSink, error: unknown): Promise<void> {
  // Only a transport failure keeps the partial for a resume, and only once it holds bytes: after an
  // integrity or disk failure its bytes are not worth keeping (a full disk also gets its space back).
  const resumable = isCompanionError(error) && error.code.startsWith('ERR_DOWNLOAD_');
  if (resumable) await sink.drain().catch(() => undefined);
  const keep = resumable && sink.position > 0;
  await sink.close();
  if (!keep) {
    await rm(plan.partialPath, { force: true }).catch(() => undefined);
    await rm(plan.metaPath, { force: true }).catch(() => undefined);
  }
}

/** Gives the verified, fsynced partial its final name and writes the record. */
function promote(plan: PullPlan, makeActive: boolean, manifestVersion: number): Promise<InstalledModel> {
  const { model, modelsDir } = plan;
  // Verified and fsynced: only now does the file get its final name.
  return disk(async () => {
    await rename(plan.partialPath, plan.finalPath);
    await fsyncDir(modelsDir);
    await rm(plan.metaPath, { force: true });
    const identity = await identityOf(plan.finalPath);
    if (typeof identity === 'string' || identity.size !== model.size)
      throw new CompanionError('ERR_DISK_WRITE', 'the promoted file is not there');
    const installed: InstalledModel = {
      id: model.id,
      name: model.name,
      file: plan.finalName,
      size: model.size,
      digestCheck: plan.digestCheck,
      inode: identity.inode,
      dev: identity.dev,
      mtimeNs: identity.mtimeNs,
      ctimeNs: identity.ctimeNs,
      verifiedAt: plan.now(),
      manifestVersion,
    };
    await saveRecord(modelsDir, installed, makeActive);
    plan.emit({ event: 'verified', model: model.id, bytes: model.size, reused: false, active: makeActive });
    return installed;
  });
}

/** The ETag the partial's bytes came with; updated when a download starts at byte 0. */
interface EtagState {
  etag: string | null;
}

/** The network part: one request, or two when a ranged answer comes from a file that changed. */
async function receive(
  options: PullOptions,
  plan: PullPlan,
  sink: InstallSink,
  knownEtag: string | null,
): Promise<void> {
  const state: EtagState = { etag: knownEtag };
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      await requestOnce(options, plan, sink, state);
      return;
    } catch (error) {
      if (!(error instanceof RestartFromZero) || attempt > 0) throw error;
      plan.emit({ event: 'restart', model: plan.model.id, reason: 'changed' });
      await sink.reset();
      state.etag = null;
    }
  }
}

/** One request from the sink's position on (with `If-Range` when resuming with a known ETag). */
async function requestOnce(options: PullOptions, plan: PullPlan, sink: InstallSink, state: EtagState): Promise<void> {
  const from = sink.position;
  const meter = new ProgressMeter(plan, sink, options.progressIntervalMs ?? 250);
  await download(plan.model.url, {
    dispatcher: options.dispatcher,
    offset: from,
    ...(state.etag !== null && from > 0 ? { ifRange: state.etag } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    onStart: async (start: DownloadStart) => {
      await acceptStart(plan, sink, state, from, start);
      meter.report(true);
    },
    onChunk: (chunk: Buffer) => {
      meter.report(false);
      return sink.push(chunk);
    },
  });
  meter.report(true);
}

/** Checks a response's start against the partial and the manifest, before any of its bytes is taken. */
async function acceptStart(
  plan: PullPlan,
  sink: InstallSink,
  state: EtagState,
  from: number,
  start: DownloadStart,
): Promise<void> {
  const { model } = plan;
  const etag = state.etag;
  if (from > 0 && start.rangeHonoured && etag !== null && start.etag !== etag) throw new RestartFromZero();
  if (from > 0 && !start.rangeHonoured) {
    // The whole file came back (Range ignored, or If-Range saw another ETag): start over.
    const reason = etag !== null && start.etag !== etag ? 'changed' : 'range-ignored';
    plan.emit({ event: 'restart', model: model.id, reason });
    await sink.reset();
  }
  if (start.totalSize !== null && start.totalSize !== model.size) {
    // The host says the file has another size than the signed manifest: refuse before writing.
    throw new CompanionError(start.totalSize > model.size ? 'ERR_INTEGRITY_SIZE_OVER' : 'ERR_INTEGRITY_SIZE_UNDER');
  }
  if (sink.position === 0) {
    // Written before the first byte, so a partial on disk always names the ETag its bytes came with.
    state.etag = start.etag !== null && isStrongEtag(start.etag) ? start.etag : null;
    const meta: PartialMeta = {
      format: 'companion-partial-v1',
      url: model.url,
      size: model.size,
      digestCheck: plan.digestCheck,
      etag: state.etag,
    };
    await disk(() => writePrivateJson(plan.metaPath, meta));
  }
}

/** Progress events of one request, at most one per interval (unless forced). */
class ProgressMeter {
  readonly #plan: PullPlan;
  readonly #sink: InstallSink;
  readonly #interval: number;
  readonly #from: number;
  readonly #started: number;
  #last: number;

  constructor(plan: PullPlan, sink: InstallSink, interval: number) {
    this.#plan = plan;
    this.#sink = sink;
    this.#interval = interval;
    this.#from = sink.position;
    this.#started = plan.now();
    this.#last = this.#started;
  }

  report(force: boolean): void {
    const t = this.#plan.now();
    if (!force && t - this.#last < this.#interval) return;
    this.#last = t;
    const { model } = this.#plan;
    const position = this.#sink.position;
    const rate = (position - this.#from) / (Math.max(1, t - this.#started) / 1000);
    this.#plan.emit({
      event: 'progress',
      model: model.id,
      bytes: position,
      total: model.size,
      bytesPerSecond: Math.round(rate),
      etaSeconds: rate > 0 ? Math.round((model.size - position) / rate) : null,
      resumedFrom: this.#from,
    });
  }
}
