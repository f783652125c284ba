/**
 * Admission of requests to the context's sequences. A sequence generates one request at a time; with
 * `parallel` sequences that many requests run together (llama.cpp batches them) and the rest wait in a
 * bounded FIFO queue. A request whose client goes away leaves the queue through its AbortSignal.
 */
import type { LlamaChat, LlamaCompletion, LlamaContextSequence } from 'node-llama-cpp';
import { ApiError, shuttingDown } from './openai.js';

/** One context sequence with the chat and completion generators bound to it. */
export interface Slot {
  readonly sequence: LlamaContextSequence;
  readonly chat: LlamaChat;
  readonly completion: LlamaCompletion;
}

interface Waiter {
  resolve(slot: Slot): void;
  reject(error: unknown): void;
}

/** The free slots, the requests waiting for one, and the counts /health reports. */
export class SequencePool {
  readonly #free: Slot[];
  readonly #waiting: Waiter[] = [];
  readonly #queueLimit: number;
  #active = 0;
  #generating = 0;
  #peak = 0;
  #closed = false;

  /** `slots` are all free at first; at most `queueLimit` requests wait for one. */
  constructor(slots: readonly Slot[], queueLimit: number) {
    this.#free = [...slots];
    this.#queueLimit = queueLimit;
  }

  /** Requests generating or waiting right now. */
  get busy(): number {
    return this.#active;
  }

  /** Sequences generating right now, and the most that ever did at once. */
  sequences(): { readonly active: number; readonly peak: number } {
    return { active: this.#generating, peak: this.#peak };
  }

  /** True once {@link close} ran: new work is refused with 503 `shutting_down`. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs `work` on a free slot, waiting in the queue for one when all are busy.
   *
   * Rejects with ApiError 503 `shutting_down` after {@link close}, 503 `server_busy` when the queue is
   * full, or the signal's reason when it aborts first.
   */
  async run<T>(signal: AbortSignal, work: (slot: Slot) => Promise<T>): Promise<T> {
    this.#active++;
    try {
      const slot = await this.#acquire(signal);
      this.#generating++;
      this.#peak = Math.max(this.#peak, this.#generating);
      try {
        return await work(slot);
      } finally {
        this.#generating--;
        this.#release(slot);
      }
    } finally {
      this.#active--;
    }
  }

  /** Refuses new work and fails every waiting request with 503 `shutting_down`. */
  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(shuttingDown());
  }

  #acquire(signal: AbortSignal): Promise<Slot> {
    if (this.#closed) return Promise.reject(shuttingDown());
    signal.throwIfAborted();
    const slot = this.#free.pop();
    if (slot !== undefined) return Promise.resolve(slot);
    if (this.#waiting.length >= this.#queueLimit) {
      return Promise.reject(
        new ApiError(503, 'server_error', 'server_busy', 'too many requests are waiting; try again later'),
      );
    }
    return this.#wait(signal);
  }

  #wait(signal: AbortSignal): Promise<Slot> {
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (s) => {
          signal.removeEventListener('abort', onAbort);
          resolve(s);
        },
        reject: (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      const onAbort = (): void => {
        const index = this.#waiting.indexOf(waiter);
        if (index >= 0) this.#waiting.splice(index, 1);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  #release(slot: Slot): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next.resolve(slot);
    else this.#free.push(slot);
  }
}
