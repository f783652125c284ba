/**
 * Models the hub publishes besides its demo: synthetic llamas of a named size (`--synthetic-model`,
 * llama-gguf.ts) and real GGUF files an operator has (`--model FILE`). Each is a file on disk, opened
 * once and served from that descriptor (a later rename or swap of the path does not change what is
 * served), with its size and SHA-256 computed once per start, or not at all when the data directory
 * remembers them:
 *
 *   <dataDir>/synthetic-models/<preset>-s<seed>-v<format>.gguf   the generated file (0600), reused
 *   <dataDir>/synthetic-llama.json                                its size and digest
 *   <dataDir>/model-file-sha256.json                              digests of operator files, keyed by
 *                                                                 device, inode, size and mtime
 *
 * Without a data directory a synthetic model is generated into a private temporary folder that `close()`
 * removes. Log lines name models by id and size, never by digest.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, mkdtempSync, openSync, read, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { CompanionError } from '../core/errors.js';
import { invalidArgument } from './args.js';
import { ensurePrivateDirSync, readJsonFileSync, writePrivateFileAtomicSync } from '../common/private-file.js';
import {
  SYNTHETIC_LLAMA_FORMAT,
  SYNTHETIC_LLAMA_PRESETS,
  isSyntheticLlamaPreset,
  syntheticLlamaGguf,
} from './llama-gguf.js';

/** A synthetic llama to publish (`companion hub --synthetic-model PRESET`). */
export interface SyntheticLlamaSpec {
  /** A preset of llama-gguf.ts: `tiny`, `smol135m`. */
  readonly preset: string;
  /** Seed of the weights (default 1). */
  readonly seed?: number;
  /** Manifest id (default: the preset name). */
  readonly id?: string;
}

/** A GGUF file to publish (`companion hub --model FILE [--model-id ID]`). */
export interface ModelFileSpec {
  readonly path: string;
  /** Manifest id (default: derived from the file name, see {@link modelIdFromFileName}). */
  readonly id?: string;
}

/** One published model: its manifest facts and how to read its bytes. */
export interface PublishedModel {
  readonly id: string;
  readonly name: string;
  readonly size: number;
  readonly sha256: string;
  readonly contextLength?: number;
  /** A stream of the bytes `[start, end]` (inclusive). */
  open(start: number, end: number): Readable;
}

const MODEL_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');
/** Files at least this large get progress lines while they are hashed. */
const PROGRESS_FROM_BYTES = 64 * 1024 * 1024;

/** True when `id` is a valid manifest model id. */
export function isModelId(id: string): boolean {
  return MODEL_ID.test(id);
}

/**
 * A manifest id from a file name: lower-cased, `.gguf` dropped, runs of other characters made `-`,
 * at most 64 characters. Null when nothing usable is left (the caller asks for `--model-id`).
 */
export function modelIdFromFileName(path: string): string | null {
  const stem = basename(path)
    .replace(/\.gguf$/i, '')
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 64)
    .replace(/[-.]+$/, '');
  return isModelId(stem) ? stem : null;
}

/** The manifest ids the specs will have (a file whose name gives none: the empty string). */
export function publishedModelIds(synthetic: readonly SyntheticLlamaSpec[], files: readonly ModelFileSpec[]): string[] {
  return [
    ...synthetic.map((spec) => spec.id ?? spec.preset),
    ...files.map((spec) => spec.id ?? modelIdFromFileName(spec.path) ?? ''),
  ];
}

function human(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${(bytes / 1e3).toFixed(0)} KB`;
}

/**
 * The bytes `[start, end]` of the open file, by positional reads. Never closes the descriptor (a
 * `createReadStream({ fd })` closes it when destroyed, e.g. when a client goes away): the descriptor
 * serves every range until `close()`.
 */
function rangeOf(fd: number, start: number, end: number, chunkBytes = 1 << 20): Readable {
  let position = start;
  return new Readable({
    highWaterMark: chunkBytes,
    read() {
      const length = Math.min(chunkBytes, end + 1 - position);
      if (length <= 0) {
        this.push(null);
        return;
      }
      const buffer = Buffer.allocUnsafe(length);
      read(fd, buffer, 0, length, position, (error, bytesRead) => {
        if (error !== null) {
          this.destroy(error);
          return;
        }
        if (bytesRead === 0) {
          this.destroy(new CompanionError('ERR_HUB_MODEL_FILE', 'the model file became shorter while it was served'));
          return;
        }
        position += bytesRead;
        this.push(bytesRead === length ? buffer : buffer.subarray(0, bytesRead));
        if (position > end) this.push(null);
      });
    },
  });
}

/** SHA-256 of the open file, streamed, with a progress line about every 2 s for large files. */
async function hashFd(fd: number, size: number, what: string, log: (line: string) => void): Promise<string> {
  const hash = createHash('sha256');
  let done = 0;
  let lastLog = performance.now();
  const started = lastLog;
  const progress = size >= PROGRESS_FROM_BYTES;
  if (progress) log(`${what}: computing the SHA-256 of ${human(size)}…`);
  if (size > 0) {
    for await (const chunk of rangeOf(fd, 0, size - 1, 4 << 20)) {
      hash.update(chunk as Buffer);
      done += (chunk as Buffer).length;
      if (progress && performance.now() - lastLog >= 2000) {
        lastLog = performance.now();
        log(`${what}: hashed ${Math.floor((done / size) * 100)}% (${human(done)} of ${human(size)})`);
      }
    }
  }
  if (done !== size) throw new CompanionError('ERR_HUB_MODEL_FILE', `${what}: the file changed size while it was read`);
  if (progress) log(`${what}: hashed ${human(size)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return hash.digest('hex');
}

interface LlamaCacheFile {
  readonly format: 'companion-hub-synthetic-llama-v1';
  readonly files: Record<string, { readonly size: number; readonly sha256: string }>;
}

interface DigestCacheFile {
  readonly format: 'companion-hub-model-file-sha256-v1';
  readonly digests: Record<string, string>;
}

/** Generates `file` into `path` (0600, created exclusively, fsynced, renamed into place) and returns its digest. */
function generateInto(path: string, file: ReturnType<typeof syntheticLlamaGguf>): string {
  const hash = createHash('sha256');
  writePrivateFileAtomicSync(path, hashed(file.chunks(), hash));
  return hash.digest('hex');
}

/** The chunks of `chunks`, each added to `hash` as it passes on its way to the file. */
function* hashed(chunks: Iterable<Uint8Array>, hash: Hash): Iterable<Uint8Array> {
  for (const chunk of chunks) {
    hash.update(chunk);
    yield chunk;
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Opens our own file without following a symlink and checks it is a regular file of `size` bytes. */
function openOwn(path: string, size: number): number | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
  const stat = fstatSync(fd);
  if (!stat.isFile() || stat.size !== size) {
    closeSync(fd);
    return null;
  }
  return fd;
}

/** Checks every spec before any file is touched. @throws TypeError ERR_INVALID_ARG_VALUE / ERR_INVALID_ARG_TYPE */
function assertSpecs(synthetic: readonly SyntheticLlamaSpec[], files: readonly ModelFileSpec[]): void {
  for (const spec of synthetic) {
    if (!isSyntheticLlamaPreset(spec.preset))
      throw invalidArgument('a synthetic model preset', `one of ${Object.keys(SYNTHETIC_LLAMA_PRESETS).join(', ')}`);
    if (spec.id !== undefined && !isModelId(spec.id))
      throw invalidArgument('a synthetic model id', 'a name matching [a-z0-9][a-z0-9._-]{0,63}');
  }
  for (const spec of files) {
    if (typeof spec.path !== 'string' || spec.path.length === 0)
      throw invalidArgument('a model file path', 'a non-empty string', 'ERR_INVALID_ARG_TYPE');
    if (spec.id !== undefined && !isModelId(spec.id))
      throw invalidArgument('a model file id', 'a name matching [a-z0-9][a-z0-9._-]{0,63}');
    if (spec.id === undefined && modelIdFromFileName(spec.path) === null)
      throw invalidArgument('a model file id', 'given: no id can be derived from the file name');
  }
}

/** The descriptors that serve the models and the temporary folder, held until `close()`. */
class OpenFiles {
  readonly #fds: number[] = [];
  #tempDir: string | null = null;

  keep(fd: number): void {
    this.#fds.push(fd);
  }

  /** A private temporary folder that `close()` removes. */
  tempDir(): string {
    this.#tempDir = mkdtempSync(join(tmpdir(), 'companion-hub-models-'));
    return this.#tempDir;
  }

  close(): void {
    for (const fd of this.#fds.splice(0)) closeSync(fd);
    if (this.#tempDir !== null) rmSync(this.#tempDir, { recursive: true, force: true });
    this.#tempDir = null;
  }
}

/** Where the synthetic llamas go, and the cache of their sizes and digests (null: not remembered). */
interface LlamaStore {
  readonly dir: string;
  readonly cachePath: string | null;
  readonly cache: Record<string, { size: number; sha256: string }>;
}

function openLlamaStore(dataDir: string | null, open: OpenFiles): LlamaStore {
  const dir = dataDir === null ? open.tempDir() : join(dataDir, 'synthetic-models');
  // The generated files are written into it: refuse a planted symlink in place of the folder.
  if (isSymlink(dir)) throw new CompanionError('ERR_HUB_MODEL_FILE', `${dir} is a symlink, not a folder: remove it`);
  ensurePrivateDirSync(dir);
  const cachePath = dataDir === null ? null : join(dataDir, 'synthetic-llama.json');
  const stored = cachePath === null ? null : (readJsonFileSync(cachePath, 'a hub data file') as LlamaCacheFile | null);
  const cache =
    stored?.format === 'companion-hub-synthetic-llama-v1' && typeof stored.files === 'object'
      ? { ...stored.files }
      : {};
  return { dir, cachePath, cache };
}

/**
 * Generates a synthetic llama into the store, or reuses the file generated before when the cache knows
 * its digest and it is still our regular file of the right size.
 * @throws ERR_HUB_MODEL_FILE when the generated file cannot be opened again
 */
function publishSyntheticLlama(
  spec: SyntheticLlamaSpec,
  store: LlamaStore,
  open: OpenFiles,
  log: (line: string) => void,
): PublishedModel {
  const seed = spec.seed ?? 1;
  const id = spec.id ?? spec.preset;
  const file = syntheticLlamaGguf(spec.preset, { seed });
  const fileName = `${spec.preset}-s${seed}-v${SYNTHETIC_LLAMA_FORMAT}.gguf`;
  const path = join(store.dir, fileName);
  const known = store.cache[fileName];
  let sha256 =
    known !== undefined && known.size === file.size && /^[0-9a-f]{64}$/.test(known.sha256) ? known.sha256 : null;
  let fd = sha256 === null ? null : openOwn(path, file.size);
  if (fd === null) {
    const started = performance.now();
    log(`model ${id}: generating the synthetic ${spec.preset} llama (${human(file.size)})…`);
    rmSync(path, { force: true });
    sha256 = generateInto(path, file);
    log(`model ${id}: generated in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    store.cache[fileName] = { size: file.size, sha256 };
    if (store.cachePath !== null)
      writePrivateFileAtomicSync(
        store.cachePath,
        JSON.stringify({ format: 'companion-hub-synthetic-llama-v1', files: store.cache } satisfies LlamaCacheFile),
      );
    fd = openOwn(path, file.size);
    if (fd === null)
      throw new CompanionError('ERR_HUB_MODEL_FILE', `model ${id}: the generated file could not be opened again`);
  } else {
    log(`model ${id}: reusing the generated ${spec.preset} llama (${human(file.size)})`);
  }
  open.keep(fd);
  const servedFd = fd;
  const shape = SYNTHETIC_LLAMA_PRESETS[spec.preset as keyof typeof SYNTHETIC_LLAMA_PRESETS];
  return {
    id,
    name: `Synthetic ${spec.preset} llama (random weights, seed ${seed})`,
    size: file.size,
    sha256: sha256!,
    contextLength: shape.contextLength,
    open: (start, end) => rangeOf(servedFd, start, end),
  };
}

/** Digests of operator files remembered in the data directory (null: not remembered). */
interface DigestStore {
  readonly path: string | null;
  readonly digests: Record<string, string>;
}

function openDigestStore(dataDir: string | null): DigestStore {
  const path = dataDir === null ? null : join(dataDir, 'model-file-sha256.json');
  const stored = path === null ? null : (readJsonFileSync(path, 'a hub data file') as DigestCacheFile | null);
  const digests =
    stored?.format === 'companion-hub-model-file-sha256-v1' && typeof stored.digests === 'object'
      ? { ...stored.digests }
      : {};
  return { path, digests };
}

/**
 * Opens an operator's GGUF file (kept open in `open`) and checks it is a regular file that starts with
 * "GGUF"; returns its descriptor, size and the key its digest is remembered under.
 * @throws ERR_HUB_MODEL_FILE for a file that cannot be opened, is not a regular file or is not GGUF
 */
function openModelFile(spec: ModelFileSpec, open: OpenFiles): { fd: number; size: number; key: string } {
  let fd: number;
  try {
    // Reading may follow a symlink (model caches are often links to blobs); the hub never writes here.
    fd = openSync(spec.path, constants.O_RDONLY);
  } catch (error) {
    throw new CompanionError(
      'ERR_HUB_MODEL_FILE',
      `the model file ${spec.path} cannot be opened (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  open.keep(fd);
  const stat = fstatSync(fd, { bigint: true });
  if (!stat.isFile())
    throw new CompanionError('ERR_HUB_MODEL_FILE', `the model file ${spec.path} is not a regular file`);
  const size = Number(stat.size);
  const magic = Buffer.alloc(4);
  const got = size >= 4 ? readSync(fd, magic, 0, 4, 0) : 0;
  if (got !== 4 || !magic.equals(GGUF_MAGIC))
    throw new CompanionError(
      'ERR_HUB_MODEL_FILE',
      `the model file ${spec.path} is not a GGUF file (it does not start with "GGUF")`,
    );
  return { fd, size, key: `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}` };
}

/** Publishes an operator's GGUF file: its digest is computed once, or recalled from the data directory. */
async function publishModelFile(
  spec: ModelFileSpec,
  store: DigestStore,
  open: OpenFiles,
  log: (line: string) => void,
): Promise<PublishedModel> {
  const id = spec.id ?? modelIdFromFileName(spec.path)!;
  const { fd, size, key } = openModelFile(spec, open);
  let sha256 = store.digests[key];
  if (sha256 === undefined || !/^[0-9a-f]{64}$/.test(sha256)) {
    sha256 = await hashFd(fd, size, `model ${id}`, log);
    store.digests[key] = sha256;
    if (store.path !== null)
      writePrivateFileAtomicSync(
        store.path,
        JSON.stringify({
          format: 'companion-hub-model-file-sha256-v1',
          digests: store.digests,
        } satisfies DigestCacheFile),
      );
  } else {
    log(`model ${id}: digest remembered in the data dir (${human(size)})`);
  }
  return {
    id,
    name: `Model ${id} (a GGUF file published by the operator)`,
    size,
    sha256,
    open: (start, end) => rangeOf(fd, start, end),
  };
}

/**
 * Prepares the files of every spec: generates (or reuses) the synthetic llamas, opens and checks the
 * operator's GGUF files, computes (or recalls) each digest.
 *
 * @returns the published models, in order (synthetic first), and `close()` that closes the descriptors
 *   and removes a temporary folder
 * @throws TypeError ERR_INVALID_ARG_VALUE for a bad spec; ERR_HUB_MODEL_FILE for a file that cannot be
 *   opened, is not a regular file or is not GGUF
 */
export async function preparePublishedModels(
  synthetic: readonly SyntheticLlamaSpec[],
  files: readonly ModelFileSpec[],
  dataDir: string | null,
  log: (line: string) => void,
): Promise<{ models: PublishedModel[]; close(): void }> {
  assertSpecs(synthetic, files);
  const open = new OpenFiles();
  const close = (): void => open.close();
  const models: PublishedModel[] = [];
  try {
    if (synthetic.length > 0) {
      const store = openLlamaStore(dataDir, open);
      for (const spec of synthetic) models.push(publishSyntheticLlama(spec, store, open, log));
    }
    const digests = openDigestStore(dataDir);
    for (const spec of files) models.push(await publishModelFile(spec, digests, open, log));
  } catch (error) {
    close();
    throw error;
  }
  return { models, close };
}
