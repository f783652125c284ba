/**
 * The hashing and writing half of a verified pull (src/shell/install.ts), on its own thread so that
 * receiving (main thread) overlaps hashing and writing (here): a model download on Node is CPU-bound, and
 * this is what lets the one-pass pull keep up with `curl` + `openssl dgst` (docs/download.md).
 *
 * It owns the integrity accumulator (the core) for one temp file, whose descriptor the main thread keeps
 * open. Messages are handled strictly in order; each batch is hashed *then* written at its file offset,
 * so what is hashed is what is on disk, and bytes past the expected size are refused before any write.
 * Batch buffers are transferred both ways (no copy) and returned for reuse.
 */
import { fsyncSync, ftruncateSync, readSync, write } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { createIntegrityAccumulator, type IntegrityAccumulator } from '../core/integrity.js';
import { isCompanionError } from '../core/errors.js';

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

interface Failure {
  readonly code: string;
  readonly cause?: string;
}

export interface SinkInit {
  readonly fd: number;
  readonly expectedSize: number;
  readonly expectedSha256: string;
}

function run(init: SinkInit, port: NonNullable<typeof parentPort>): void {
  const expected = { expectedSize: init.expectedSize, expectedSha256: init.expectedSha256 };
  let accumulator: IntegrityAccumulator = createIntegrityAccumulator(expected);
  // After the first failure nothing is hashed or written; control requests are refused with it.
  let failure: Failure | null = null;
  // One write at a time, in file order, on the thread pool, while the next batches are hashed here: the
  // temp file is always a prefix of the download (a resume after a kill finds no hole).
  const writes: { readonly bytes: Uint8Array; readonly position: number; readonly buffer: ArrayBuffer }[] = [];
  let writing = false;
  // Requests that wait for the writes before them (a control request, and whatever came after it).
  const held: SinkRequest[] = [];

  const failureOf = (error: unknown): Failure => {
    if (isCompanionError(error)) return { code: error.code };
    // A file system error: only its errno name crosses back (the message would quote a path).
    const code = (error as { code?: unknown } | null)?.code;
    return { code: 'fs', ...(typeof code === 'string' ? { cause: code } : {}) };
  };
  const failed = (error: unknown): void => {
    if (failure !== null) return;
    failure = failureOf(error);
    port.postMessage({ type: 'failed', ...failure } satisfies SinkReply);
  };
  const giveBack = (buffer: ArrayBuffer): void => port.postMessage({ type: 'free', buffer } satisfies SinkReply, [buffer]);

  /** Writes all of `bytes` at `position` (a short write continues), then calls `done`. */
  const writeAll = (bytes: Uint8Array, position: number, done: (error: unknown) => void): void => {
    write(init.fd, bytes, 0, bytes.length, position, (error, written) => {
      if (error !== null) done(error);
      else if (written === 0) done(Object.assign(new Error('short write'), { code: 'ENOSPC' }));
      else if (written < bytes.length) writeAll(bytes.subarray(written), position + written, done);
      else done(null);
    });
  };

  const nextWrite = (): void => {
    if (writing) return;
    const next = writes.shift();
    if (next === undefined) {
      release();
      return;
    }
    if (failure !== null) {
      giveBack(next.buffer);
      nextWrite();
      return;
    }
    writing = true;
    writeAll(next.bytes, next.position, (error) => {
      writing = false;
      if (error !== null) failed(error);
      giveBack(next.buffer);
      nextWrite();
    });
  };

  const data = (request: Extract<SinkRequest, { type: 'data' }>): void => {
    if (failure !== null) {
      giveBack(request.buffer);
      return;
    }
    const bytes = new Uint8Array(request.buffer, 0, request.length);
    try {
      // Hashed first: a batch past the expected size is refused before any of it is written.
      accumulator.update(bytes);
    } catch (error) {
      failed(error);
      giveBack(request.buffer);
      return;
    }
    writes.push({ bytes, position: request.position, buffer: request.buffer });
    nextWrite();
  };

  /** Runs held requests while no write is pending. */
  const release = (): void => {
    while (held.length > 0 && !writing && writes.length === 0) {
      const request = held.shift()!;
      if (request.type === 'data') data(request);
      else control(request);
    }
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

  port.on('message', (request: SinkRequest) => {
    if (request.type === 'data' && held.length === 0) data(request);
    else {
      held.push(request);
      release();
    }
  });
}

if (parentPort !== null && typeof workerData === 'object' && workerData !== null && (workerData as { kind?: unknown }).kind === 'companion-install-sink') {
  run((workerData as { init: SinkInit }).init, parentPort);
}
