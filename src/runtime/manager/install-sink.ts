/**
 * The main thread's side of the one install sink (install-worker.ts): what `pullModel` feeds the received
 * bytes to. It copies each chunk into a 1 MiB batch and transfers full batches to the sink, which hashes
 * each with the integrity accumulator and then writes it at its offset. Batches are transferred, not
 * copied, and come back for reuse: at most four exist, which bounds the memory and gives backpressure.
 *
 * The sink runs on a worker thread; `hashOn: 'main'` (a benchmark's comparison) runs the very same sink
 * on a `MessageChannel` of the main thread. A fault test passes a {@link WriteFault} that the sink
 * applies at its write boundary, so the fault takes the production path.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import type { FileHandle } from 'node:fs/promises';
import { CompanionError, type ErrorCode } from '../../core/errors.js';
import { startSink, type SinkInit, type SinkReply, type SinkRequest, type WriteFault } from './install-worker.js';

/** Bytes per batch handed to the sink (written in smaller pieces, see install-worker). */
const BATCH = 1 << 20;
/** Batch buffers a sink may have at once (in its hands or in flight): bounds the memory. */
const BATCHES = 4;
const WORKER_URL = new URL('./install-worker.js', import.meta.url);

/** Where the sink runs. */
export type SinkPlacement = 'worker' | 'main';

/** The size and digest a download must match (from the verified manifest entry). */
export interface SinkExpectation {
  readonly expectedSize: number;
  readonly expectedSha256: string;
}

/**
 * A file system failure as a coded error, without the library's message (it quotes paths): returns (does
 * not throw) ERR_DISK_SPACE for ENOSPC/EDQUOT, ERR_DISK_WRITE with the errno name in `detail` otherwise.
 */
export function diskError(error: unknown): CompanionError {
  if (error instanceof CompanionError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new CompanionError('ERR_DISK_SPACE');
  return new CompanionError('ERR_DISK_WRITE', undefined, typeof code === 'string' ? { detail: { cause: code } } : {});
}

/** A failure the sink reported, as the coded error `pullModel` throws. */
function sinkFailure(code: string, cause: string | undefined): CompanionError {
  if (code === 'fs') return diskError({ code: cause });
  if (code.startsWith('ERR_INTEGRITY_')) return new CompanionError(code as ErrorCode);
  return new CompanionError('ERR_DISK_WRITE');
}

function overSize(expectedSize: number, received: number): CompanionError {
  return new CompanionError('ERR_INTEGRITY_SIZE_OVER', undefined, { detail: { expectedSize, received } });
}

/** How the main side reaches the sink, wherever it runs. */
interface SinkLink {
  post(request: SinkRequest, transfer?: ArrayBuffer[]): void;
  /** Stops the sink (after a drain: nothing is left running). */
  close(): Promise<void>;
}

interface SinkEvents {
  reply(reply: SinkReply): void;
  lost(error: CompanionError): void;
}

function workerLink(init: SinkInit, events: SinkEvents): SinkLink {
  const worker = new Worker(WORKER_URL, {
    workerData: { kind: 'companion-install-sink', init },
    stdout: false,
    stderr: false,
  });
  worker.on('message', (reply: SinkReply) => events.reply(reply));
  worker.on('error', () => events.lost(new CompanionError('ERR_INTERNAL', 'the hashing thread failed')));
  worker.on('exit', () => events.lost(new CompanionError('ERR_INTERNAL', 'the hashing thread stopped')));
  return {
    post: (request, transfer) => worker.postMessage(request, transfer),
    close: async () => {
      await worker.terminate().catch(() => undefined);
    },
  };
}

function mainThreadLink(init: SinkInit, events: SinkEvents): SinkLink {
  const { port1, port2 } = new MessageChannel();
  startSink(init, port1);
  port2.on('message', (reply: SinkReply) => events.reply(reply));
  return {
    post: (request, transfer) => port2.postMessage(request, transfer),
    close: async () => {
      port2.close();
      port1.close();
    },
  };
}

/** The temp file and the sink that hashes and writes it. */
export class InstallSink {
  readonly #handle: FileHandle;
  readonly #size: number;
  readonly #link: SinkLink;
  readonly #free: ArrayBuffer[] = [];
  #allocated = 0;
  #current: Buffer | null = null;
  #fill = 0;
  #batchStart = 0;
  #failure: CompanionError | null = null;
  #bufferWaiter: (() => void) | null = null;
  readonly #controls: { resolve: () => void; reject: (error: CompanionError) => void }[] = [];
  #gone = false;

  /**
   * Starts a sink for the open temp file `handle` (kept open here, closed by {@link close}).
   * `fault` is for fault tests only.
   */
  constructor(handle: FileHandle, expected: SinkExpectation, placement: SinkPlacement, fault?: WriteFault) {
    this.#handle = handle;
    this.#size = expected.expectedSize;
    const init: SinkInit = { fd: handle.fd, ...expected, ...(fault === undefined ? {} : { fault }) };
    const events: SinkEvents = { reply: (reply) => this.#onReply(reply), lost: (error) => this.#lost(error) };
    this.#link = placement === 'main' ? mainThreadLink(init, events) : workerLink(init, events);
  }

  /** File offset of the next byte (bytes counted, written or queued). */
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
      const error = sinkFailure(reply.code, reply.cause);
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
      this.#link.post(type === 'adopt' ? { type, bytes } : ({ type } satisfies SinkRequest));
    });
  }

  /** Hashes the first `bytes` bytes already in the file (a resume). */
  async adopt(bytes: number): Promise<void> {
    await this.#control('adopt', bytes);
    this.#batchStart = bytes;
  }

  /** Starts over at byte 0 with an empty file. */
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
        this.#free.pop() ?? (this.#allocated < BATCHES ? (this.#allocated++, new ArrayBuffer(BATCH)) : undefined);
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
    const buffer = this.#current!.buffer as ArrayBuffer;
    this.#link.post({ type: 'data', buffer, length: this.#fill, position: this.#batchStart }, [buffer]);
    this.#batchStart += this.#fill;
    this.#fill = 0;
    this.#current = null;
  }

  /** Queues a chunk; returns a promise only when the caller must wait (backpressure). */
  push(chunk: Buffer): void | Promise<void> {
    if (this.#failure !== null) throw this.#failure;
    // The sink's accumulator refuses it too; refusing here stops the transfer at once.
    if (chunk.length > this.#size - this.position) throw overSize(this.#size, this.position + chunk.length);
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#current === null) return this.#pushSlow(chunk, offset);
      offset += this.#copy(chunk, offset);
    }
    return undefined;
  }

  async #pushSlow(chunk: Buffer, from: number): Promise<void> {
    for (let offset = from; offset < chunk.length;) {
      if (this.#current === null) await this.#nextBuffer();
      offset += this.#copy(chunk, offset);
    }
  }

  /** Copies what fits of `chunk` from `offset` into the current batch (sent when full); returns the count. */
  #copy(chunk: Buffer, offset: number): number {
    const n = chunk.copy(this.#current!, this.#fill, offset);
    this.#fill += n;
    if (this.#fill === BATCH) this.#send();
    return n;
  }

  /** Writes whatever is queued (after a network failure too, so a resume keeps those bytes). */
  async drain(): Promise<void> {
    if (this.#fill > 0 && this.#failure === null) this.#send();
    await this.#control('drain');
  }

  /** Drains, checks size and digest (ERR_INTEGRITY_*), fsyncs the file. */
  async verify(): Promise<void> {
    await this.drain();
    await this.#control('verify');
  }

  /** Waits for any write still running, then releases everything (the file handle included). */
  async close(): Promise<void> {
    // Every request before a drain is handled before its answer: no write runs once it comes back.
    if (!this.#gone) await this.#control('drain').catch(() => undefined);
    this.#gone = true;
    await this.#link.close();
    await this.#handle.close().catch(() => undefined);
  }
}
