/**
 * The hashing and writing half of a verified pull (src/runtime/manager/install.ts): the one sink of a
 * download. It runs on its own thread so that receiving (main thread) overlaps hashing and writing
 * (here): a model download on Node is CPU-bound, and this is what lets the one-pass pull keep up with
 * `curl` + `openssl dgst` (docs/download.md). For a comparison the same sink can answer on a
 * `MessageChannel` of the main thread (`hashOn: 'main'`).
 *
 * It owns the integrity accumulator (the core) for one temp file, whose descriptor the main thread keeps
 * open. Messages are handled strictly in order; each batch is hashed *then* written at its file offset,
 * so what is hashed is what is on disk, bytes past the expected size are refused before any write, and
 * the file is always a prefix of the download (a resume after a kill finds no hole). Batch buffers are
 * transferred both ways (no copy) and returned for reuse.
 *
 * Writes are synchronous and {@link WRITE_PIECE} bytes each: on Linux with large page-cache folios a
 * 1 MiB write into fresh memory costs about five times the CPU of the same bytes in 16 KiB writes
 * (measured in docs/download.md). Every {@link FLUSH_EVERY} bytes a `fdatasync` runs on the thread pool
 * so the disk works during the download and the final `fsync` has little left to do.
 */
import { fdatasync, fsyncSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { createIntegrityAccumulator, type IntegrityAccumulator } from '../../core/integrity.js';
import { isCompanionError } from '../../core/errors.js';

/** What the main thread sends. */
export type SinkRequest =
  | { readonly type: 'adopt'; readonly bytes: number }
  | { readonly type: 'data'; readonly buffer: ArrayBuffer; readonly length: number; readonly position: number }
  | { readonly type: 'reset' }
  | { readonly type: 'drain' }
  | { readonly type: 'verify' };

/**
 * What it answers. Every adopt/reset/drain/verify gets exactly one `done` or `refused`, in order; a batch
 * that could not be hashed or written is reported once with `failed` (and its buffer still comes back).
 * `code` is a CompanionError code, or `fs` with the errno name in `cause` (never a message: it would
 * quote a path).
 */
export type SinkReply =
  | { readonly type: 'free'; readonly buffer: ArrayBuffer }
  | { readonly type: 'done' }
  | { readonly type: 'refused' | 'failed'; readonly code: string; readonly cause?: string };

/**
 * A write fault, for fault tests only (production passes none): the batches after the first
 * `afterBatches` fail, through the same error path a real full disk or I/O error takes.
 */
export interface WriteFault {
  /** Batches written normally before the fault (0: the first batch fails). */
  readonly afterBatches: number;
  /** `short`: the write system call reports 0 bytes written; else the errno name it fails with (ENOSPC, EIO…). */
  readonly error: string;
  /** The failing error's message and `path`, as Node's carry them (neither may ever cross back). */
  readonly message?: string;
  readonly path?: string;
}

/** What a sink is started with (the worker's init data). */
export interface SinkInit {
  readonly fd: number;
  readonly expectedSize: number;
  readonly expectedSha256: string;
  /** Fault tests only: replaces the writes from a given batch on. */
  readonly fault?: WriteFault;
}

/** Where a sink takes requests and answers: the worker's `parentPort`, or one end of a `MessageChannel`. */
export interface SinkPort {
  postMessage(reply: SinkReply, transfer?: ArrayBuffer[]): void;
  on(event: 'message', listener: (request: SinkRequest) => void): unknown;
}

interface Failure {
  readonly code: string;
  readonly cause?: string;
}

/** One positional write system call: `writeSync`'s shape. */
type PieceWrite = (fd: number, bytes: Uint8Array, offset: number, length: number, position: number) => number;

/** Bytes per write system call. */
export const WRITE_PIECE = 16 * 1024;
/** Bytes written between two background flushes. */
export const FLUSH_EVERY = 64 * 1024 * 1024;
/** Bytes per read when a resume hashes the partial already on disk. */
const ADOPT_READ = 4 << 20;

/** Writes all of `bytes` at `position` in pieces (a short write continues; 0 bytes means a full disk). */
function writePieces(fd: number, bytes: Uint8Array, position: number, write: PieceWrite): void {
  for (let done = 0; done < bytes.length;) {
    const written = write(fd, bytes, done, Math.min(WRITE_PIECE, bytes.length - done), position + done);
    if (written === 0) throw Object.assign(new Error('short write'), { code: 'ENOSPC' });
    done += written;
  }
}

/** The write a {@link WriteFault} puts in place of `writeSync`. */
function faultyWrite(fault: WriteFault): PieceWrite {
  return () => {
    if (fault.error === 'short') return 0;
    const error = new Error(fault.message ?? `${fault.error}: injected fault, write`);
    throw Object.assign(error, { code: fault.error }, fault.path === undefined ? {} : { path: fault.path });
  };
}

/** A failure as it may cross back: a CompanionError's code, or a file system error's errno name only. */
function failureOf(error: unknown): Failure {
  if (isCompanionError(error)) return { code: error.code };
  const code = (error as { code?: unknown } | null)?.code;
  return { code: 'fs', ...(typeof code === 'string' ? { cause: code } : {}) };
}

/** The sink: hashes then writes each batch; adopts, resets, drains and verifies on request. */
class HashingWriter {
  readonly #init: SinkInit;
  readonly #port: SinkPort;
  #accumulator: IntegrityAccumulator;
  // After the first failure nothing is hashed or written; control requests are refused with it.
  #failure: Failure | null = null;
  #batches = 0;
  #unflushed = 0;
  #flushing = false;
  // Control requests (and whatever follows them) wait while a background flush runs.
  readonly #held: SinkRequest[] = [];

  constructor(init: SinkInit, port: SinkPort) {
    this.#init = init;
    this.#port = port;
    this.#accumulator = createIntegrityAccumulator(init);
  }

  /** Takes one request: a batch goes straight through unless something is held before it. */
  receive(request: SinkRequest): void {
    if (request.type === 'data' && this.#held.length === 0) {
      this.#data(request);
      return;
    }
    this.#held.push(request);
    this.#release();
  }

  /** Runs held requests while no flush is running (a batch may start one). */
  #release(): void {
    while (this.#held.length > 0 && !this.#flushing) {
      const request = this.#held.shift()!;
      if (request.type === 'data') this.#data(request);
      else this.#control(request);
    }
  }

  #data(request: Extract<SinkRequest, { type: 'data' }>): void {
    if (this.#failure === null) {
      const bytes = new Uint8Array(request.buffer, 0, request.length);
      try {
        // Hashed first: a batch past the expected size is refused before any of it is written.
        this.#accumulator.update(bytes);
        this.#write(bytes, request.position);
      } catch (error) {
        this.#failure = failureOf(error);
        this.#port.postMessage({ type: 'failed', ...this.#failure });
      }
    }
    this.#port.postMessage({ type: 'free', buffer: request.buffer }, [request.buffer]);
  }

  #write(bytes: Uint8Array, position: number): void {
    const fault = this.#init.fault;
    const write = fault !== undefined && this.#batches >= fault.afterBatches ? faultyWrite(fault) : writeSync;
    this.#batches += 1;
    writePieces(this.#init.fd, bytes, position, write);
    this.#unflushed += bytes.length;
    if (this.#unflushed >= FLUSH_EVERY && !this.#flushing) this.#flushInBackground();
  }

  #flushInBackground(): void {
    this.#unflushed = 0;
    this.#flushing = true;
    fdatasync(this.#init.fd, () => {
      // Best effort: the final fsync is the one that counts (and reports).
      this.#flushing = false;
      this.#release();
    });
  }

  #control(request: Exclude<SinkRequest, { type: 'data' }>): void {
    if (this.#failure === null) {
      try {
        this.#apply(request);
        this.#port.postMessage({ type: 'done' });
        return;
      } catch (error) {
        this.#failure = failureOf(error);
      }
    }
    this.#port.postMessage({ type: 'refused', ...this.#failure });
  }

  #apply(request: Exclude<SinkRequest, { type: 'data' }>): void {
    if (request.type === 'adopt') {
      this.#adopt(request.bytes);
    } else if (request.type === 'reset') {
      ftruncateSync(this.#init.fd, 0);
      this.#accumulator = createIntegrityAccumulator(this.#init);
    } else if (request.type === 'verify') {
      this.#accumulator.finalize();
      fsyncSync(this.#init.fd);
    }
  }

  /** Hashes the first `bytes` bytes already in the file (a resume). */
  #adopt(bytes: number): void {
    const buffer = Buffer.allocUnsafe(Math.min(ADOPT_READ, Math.max(1, bytes)));
    for (let position = 0; position < bytes;) {
      const read = readSync(this.#init.fd, buffer, 0, Math.min(buffer.length, bytes - position), position);
      if (read === 0) throw Object.assign(new Error('short read'), { code: 'EIO' });
      this.#accumulator.update(buffer.subarray(0, read));
      position += read;
    }
  }
}

/**
 * Starts the sink for `init`, taking requests from and answering on `port` (the worker does this with
 * its `parentPort`; `hashOn: 'main'` with one end of a `MessageChannel`).
 */
export function startSink(init: SinkInit, port: SinkPort): void {
  const writer = new HashingWriter(init, port);
  port.on('message', (request) => writer.receive(request));
}

if (
  parentPort !== null &&
  typeof workerData === 'object' &&
  workerData !== null &&
  (workerData as { kind?: unknown }).kind === 'companion-install-sink'
) {
  startSink((workerData as { init: SinkInit }).init, parentPort);
}
