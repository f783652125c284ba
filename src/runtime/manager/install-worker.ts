/**
 * The hashing and writing half of a verified pull (src/runtime/manager/install.ts), on its own thread so that
 * receiving (main thread) overlaps hashing and writing (here): a model download on Node is CPU-bound, and
 * this is what lets the one-pass pull keep up with `curl` + `openssl dgst` (docs/download.md).
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
 */
export type SinkReply =
  | { readonly type: 'free'; readonly buffer: ArrayBuffer }
  | { readonly type: 'done' }
  | { readonly type: 'refused' | 'failed'; readonly code: string; readonly cause?: string };

export interface SinkInit {
  readonly fd: number;
  readonly expectedSize: number;
  readonly expectedSha256: string;
}

interface Failure {
  readonly code: string;
  readonly cause?: string;
}

/** Bytes per write system call. */
export const WRITE_PIECE = 16 * 1024;
/** Bytes written between two background flushes. */
export const FLUSH_EVERY = 64 * 1024 * 1024;

/** Writes all of `bytes` at `position` in pieces (a short write continues; 0 bytes means a full disk). */
export function writePieces(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length;) {
    const written = writeSync(fd, bytes, done, Math.min(WRITE_PIECE, bytes.length - done), position + done);
    if (written === 0) throw Object.assign(new Error('short write'), { code: 'ENOSPC' });
    done += written;
  }
}

function run(init: SinkInit, port: NonNullable<typeof parentPort>): void {
  const expected = { expectedSize: init.expectedSize, expectedSha256: init.expectedSha256 };
  let accumulator: IntegrityAccumulator = createIntegrityAccumulator(expected);
  // After the first failure nothing is hashed or written; control requests are refused with it.
  let failure: Failure | null = null;
  let unflushed = 0;
  let flushing = false;
  // Control requests (and whatever follows them) wait while a background flush runs.
  const held: SinkRequest[] = [];

  const failureOf = (error: unknown): Failure => {
    if (isCompanionError(error)) return { code: error.code };
    // A file system error: only its errno name crosses back (the message would quote a path).
    const code = (error as { code?: unknown } | null)?.code;
    return { code: 'fs', ...(typeof code === 'string' ? { cause: code } : {}) };
  };

  const data = (request: Extract<SinkRequest, { type: 'data' }>): void => {
    if (failure === null) {
      const bytes = new Uint8Array(request.buffer, 0, request.length);
      try {
        // Hashed first: a batch past the expected size is refused before any of it is written.
        accumulator.update(bytes);
        writePieces(init.fd, bytes, request.position);
        unflushed += bytes.length;
        if (unflushed >= FLUSH_EVERY && !flushing) {
          unflushed = 0;
          flushing = true;
          fdatasync(init.fd, () => {
            // Best effort: the final fsync is the one that counts (and reports).
            flushing = false;
            release();
          });
        }
      } catch (error) {
        failure = failureOf(error);
        port.postMessage({ type: 'failed', ...failure } satisfies SinkReply);
      }
    }
    port.postMessage({ type: 'free', buffer: request.buffer } satisfies SinkReply, [request.buffer]);
  };

  const control = (request: Exclude<SinkRequest, { type: 'data' }>): void => {
    if (failure !== null) {
      port.postMessage({ type: 'refused', ...failure } satisfies SinkReply);
      return;
    }
    try {
      if (request.type === 'adopt') {
        const buffer = Buffer.allocUnsafe(4 << 20);
        for (let position = 0; position < request.bytes;) {
          const read = readSync(init.fd, buffer, 0, Math.min(buffer.length, request.bytes - position), position);
          if (read === 0) throw Object.assign(new Error('short read'), { code: 'EIO' });
          accumulator.update(buffer.subarray(0, read));
          position += read;
        }
      } else if (request.type === 'reset') {
        ftruncateSync(init.fd, 0);
        accumulator = createIntegrityAccumulator(expected);
      } else if (request.type === 'verify') {
        accumulator.finalize();
        fsyncSync(init.fd);
      }
      port.postMessage({ type: 'done' } satisfies SinkReply);
    } catch (error) {
      failure = failureOf(error);
      port.postMessage({ type: 'refused', ...failure } satisfies SinkReply);
    }
  };

  /** Runs held requests while no flush is running (a data request may start one). */
  const release = (): void => {
    while (held.length > 0 && !flushing) {
      const request = held.shift()!;
      if (request.type === 'data') data(request);
      else control(request);
    }
  };

  port.on('message', (request: SinkRequest) => {
    if (request.type === 'data' && held.length === 0) {
      data(request);
      return;
    }
    held.push(request);
    release();
  });
}

if (
  parentPort !== null &&
  typeof workerData === 'object' &&
  workerData !== null &&
  (workerData as { kind?: unknown }).kind === 'companion-install-sink'
) {
  run((workerData as { init: SinkInit }).init, parentPort);
}
