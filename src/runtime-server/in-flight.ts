/**
 * The requests the runtime is working on (generations and embeddings), each with an AbortController:
 * a client that goes away cancels its own, shutdown cancels them all and waits for them to end.
 */
import type { ServerResponse } from 'node:http';
import { ClientGoneError } from './engine.js';
import { errorFromGeneration, sendError } from './http-reply.js';
import { shuttingDown } from './openai.js';

/** The controllers of the work in flight, and who waits for none to be left. */
export class InFlight {
  readonly #controllers = new Set<AbortController>();
  #idleWaiters: (() => void)[] = [];

  /** Requests in flight. */
  get size(): number {
    return this.#controllers.size;
  }

  /**
   * Runs `work` with a signal that aborts when the client goes away before the response finished; an
   * error is answered in OpenAI's shape, except after the client left (nobody to answer).
   */
  async cancellable(res: ServerResponse, work: (signal: AbortSignal) => Promise<void>): Promise<void> {
    const controller = new AbortController();
    this.#controllers.add(controller);
    const onClose = (): void => {
      if (!res.writableFinished) controller.abort(new ClientGoneError());
    };
    res.on('close', onClose);
    try {
      await work(controller.signal);
    } catch (error) {
      if (controller.signal.reason instanceof ClientGoneError) return;
      sendError(res, errorFromGeneration(controller.signal.aborted ? controller.signal.reason : error));
    } finally {
      res.off('close', onClose);
      this.#untrack(controller);
    }
  }

  /** Cancels every request in flight; their clients get a 503 `shutting_down` error. */
  abortAll(): void {
    for (const controller of this.#controllers) controller.abort(shuttingDown());
  }

  /** Resolves when no request is in flight. */
  idle(): Promise<void> {
    if (this.#controllers.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #untrack(controller: AbortController): void {
    this.#controllers.delete(controller);
    if (this.#controllers.size > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
