/**
 * Embeddings from the loaded model: one embedding context on the same weights (no second copy of the
 * model), created on first use with the generation context's size. Its one sequence serves one request
 * at a time, in arrival order.
 */
import type { LlamaContext, LlamaEmbeddingContext, LlamaModel, Token } from 'node-llama-cpp';
import { ApiError, contextLengthExceeded } from './openai.js';

/** One vector per input, and the tokens they took. */
export interface EmbeddingResult {
  readonly vectors: readonly (readonly number[])[];
  readonly promptTokens: number;
}

/** The embedding context (created lazily) and the queue of requests for it. */
export class Embedder {
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #threads: number;
  readonly #vocabulary: number;
  #embedding: Promise<LlamaEmbeddingContext> | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  /** Embeds with `model`, sized like the generation `context`; token ids must be below `vocabulary`. */
  constructor(model: LlamaModel, context: LlamaContext, threads: number, vocabulary: number) {
    this.#model = model;
    this.#context = context;
    this.#threads = threads;
    this.#vocabulary = vocabulary;
  }

  /**
   * One embedding per input, after the requests before it.
   *
   * Rejects with ApiError 400 `invalid_value` for a token id outside the vocabulary and 400
   * `context_length_exceeded` for an input longer than the context (both param `input`), or the signal's
   * reason when it aborts first.
   */
  embed(inputs: readonly (string | readonly number[])[], signal: AbortSignal): Promise<EmbeddingResult> {
    const outside = this.#checkTokenIds(inputs);
    if (outside !== null) return Promise.reject(outside);
    const embedding = this.#embeddingContext();
    const work = this.#queue.then(async () => {
      signal.throwIfAborted();
      return this.#embedAll(await embedding, inputs, signal);
    });
    this.#queue = work.catch(() => undefined);
    return work;
  }

  /** Disposes the embedding context, if one was created. */
  async dispose(): Promise<void> {
    if (this.#embedding !== undefined)
      await this.#embedding.then((context) => context.dispose()).catch(() => undefined);
  }

  #checkTokenIds(inputs: readonly (string | readonly number[])[]): ApiError | null {
    for (const input of inputs) {
      if (typeof input !== 'string' && input.some((token) => token >= this.#vocabulary)) {
        return new ApiError(
          400,
          'invalid_request_error',
          'invalid_value',
          `token ids must be below the vocabulary size ${this.#vocabulary}`,
          'input',
        );
      }
    }
    return null;
  }

  #embeddingContext(): Promise<LlamaEmbeddingContext> {
    if (this.#embedding !== undefined) return this.#embedding;
    const created = this.#model.createEmbeddingContext({
      contextSize: this.#context.contextSize,
      threads: this.#threads,
      batchSize: this.#context.contextSize,
    });
    // A failed creation (memory) is retried by the next request instead of failing every one after it.
    created.catch(() => {
      if (this.#embedding === created) this.#embedding = undefined;
    });
    this.#embedding = created;
    return created;
  }

  async #embedAll(
    context: LlamaEmbeddingContext,
    inputs: readonly (string | readonly number[])[],
    signal: AbortSignal,
  ): Promise<EmbeddingResult> {
    const vectors: number[][] = [];
    let promptTokens = 0;
    for (const input of inputs) {
      signal.throwIfAborted();
      const value = typeof input === 'string' ? input : (input as Token[]);
      const length = context.calculateInputLength(value);
      if (length > this.#context.contextSize)
        throw contextLengthExceeded('an input', length, this.#context.contextSize, 'input');
      promptTokens += length;
      vectors.push([...(await context.getEmbeddingFor(value)).vector]);
    }
    return { vectors, promptTokens };
  }
}
