/**
 * How many sequences the runtime runs at once and how large each one's context is (issue 17 items 6
 * and 7). A pure decision: the model's trained context, the memory the runtime may use, the model's size
 * and an estimate of a context's memory (node-llama-cpp's `GgufInsights` in the runtime, a formula in
 * tests) in; the shape out.
 *
 * - Context (per sequence): the one asked for, else the model's trained context capped by what fits in
 *   memory next to the model, never below {@link MIN_AUTO_CONTEXT}.
 * - Sequences: the number asked for, else the most of {@link DEFAULT_MAX_PARALLEL} down to 1 whose KV
 *   caches all fit at that context. When even one sequence does not fit at the trained context, the
 *   context shrinks instead (one sequence, the largest context that fits, at least the floor).
 * - A shape asked for in full (both numbers) is taken as is: the user chose it, and a context that cannot
 *   be created fails the start with ERR_RUNTIME_MODEL_LOAD.
 *
 * The context's total size is `parallel × contextSize` (each sequence has its own cells).
 */

/** The most sequences chosen by default. */
export const DEFAULT_MAX_PARALLEL = 4;
/** The most sequences accepted (`up --parallel`, COMPANION_PARALLEL). */
export const MAX_PARALLEL = 16;
/** The smallest context chosen by default (a user may ask for less, down to {@link MIN_CONTEXT}). */
export const MIN_AUTO_CONTEXT = 512;
/** The smallest context accepted. */
export const MIN_CONTEXT = 64;
/** The largest context accepted. */
export const MAX_CONTEXT = 1 << 20;
/** The context used when the model does not say what it was trained on. */
export const FALLBACK_TRAIN_CONTEXT = 2048;
/** Memory the runtime itself needs beside the model and its contexts (Node, llama.cpp, buffers). */
export const RUNTIME_OVERHEAD_BYTES = 128 * 1024 * 1024;

export interface SizingInput {
  /** `up --parallel` / COMPANION_PARALLEL, when given. */
  readonly parallel?: number | undefined;
  /** `up --context` / COMPANION_CONTEXT (per sequence), when given. */
  readonly contextSize?: number | undefined;
  /** The model's trained context (GGUF `<arch>.context_length`); undefined when the file does not say. */
  readonly trainContextSize: number | undefined;
  /** The model's size in memory, bytes. */
  readonly modelBytes: number;
  /** Memory the runtime may use in all (model, contexts, itself), bytes; undefined: no memory cap. */
  readonly memoryBytes: number | undefined;
  /** Memory a context of `sequences` sequences of `contextSize` tokens each needs, bytes. */
  readonly contextBytes: (contextSize: number, sequences: number) => number;
}

export interface Sizing {
  readonly parallel: number;
  /** Per sequence. */
  readonly contextSize: number;
  /** Why it was chosen: each part `asked`, `trained`, `memory` (capped or reduced to fit) or `fallback`. */
  readonly reason: {
    readonly parallel: 'asked' | 'default' | 'memory';
    readonly contextSize: 'asked' | 'trained' | 'fallback' | 'memory';
  };
}

const clampContext = (value: number): number => Math.max(MIN_CONTEXT, Math.min(MAX_CONTEXT, Math.floor(value)));

/**
 * Chooses the runtime's sequences and per-sequence context (see the module comment).
 * @throws RangeError when `parallel` or `contextSize` is outside its range (the CLI and the start line
 *   check them first).
 */
export function chooseSizing(input: SizingInput): Sizing {
  if (input.parallel !== undefined && (!Number.isInteger(input.parallel) || input.parallel < 1 || input.parallel > 64))
    throw new RangeError('parallel out of range');
  if (
    input.contextSize !== undefined &&
    (!Number.isInteger(input.contextSize) || input.contextSize < MIN_CONTEXT || input.contextSize > MAX_CONTEXT)
  )
    throw new RangeError('contextSize out of range');
  const trained =
    input.trainContextSize !== undefined &&
    Number.isFinite(input.trainContextSize) &&
    input.trainContextSize >= MIN_CONTEXT;
  const target = input.contextSize ?? clampContext(trained ? input.trainContextSize! : FALLBACK_TRAIN_CONTEXT);
  const contextReason = input.contextSize !== undefined ? 'asked' : trained ? 'trained' : 'fallback';
  if (input.parallel !== undefined && input.contextSize !== undefined) {
    return {
      parallel: input.parallel,
      contextSize: input.contextSize,
      reason: { parallel: 'asked', contextSize: 'asked' },
    };
  }
  const budget =
    input.memoryBytes === undefined
      ? Number.POSITIVE_INFINITY
      : input.memoryBytes - input.modelBytes - RUNTIME_OVERHEAD_BYTES;
  const fits = (contextSize: number, sequences: number): boolean =>
    input.contextBytes(contextSize, sequences) <= budget;

  if (input.parallel === undefined) {
    for (let n = DEFAULT_MAX_PARALLEL; n >= 1; n--) {
      if (fits(target, n))
        return {
          parallel: n,
          contextSize: target,
          reason: { parallel: n === DEFAULT_MAX_PARALLEL ? 'default' : 'memory', contextSize: contextReason },
        };
    }
    // An asked context that does not fit even once: one sequence, and the start tells if it fails.
    if (input.contextSize !== undefined)
      return { parallel: 1, contextSize: input.contextSize, reason: { parallel: 'memory', contextSize: 'asked' } };
  }
  const parallel = input.parallel ?? 1;
  const parallelReason = input.parallel !== undefined ? 'asked' : 'memory';
  if (fits(target, parallel))
    return { parallel, contextSize: target, reason: { parallel: parallelReason, contextSize: contextReason } };
  // The largest context that fits (binary search on the monotonic estimate), never below the floor.
  const floor = Math.min(MIN_AUTO_CONTEXT, target);
  let low = floor;
  let high = target;
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (fits(middle, parallel)) low = middle;
    else high = middle;
  }
  // llama.cpp aligns a context to 256 cells: round down so the aligned size still fits.
  const aligned = low >= 256 ? low - (low % 256) : low;
  return {
    parallel,
    contextSize: Math.max(floor, aligned),
    reason: { parallel: parallelReason, contextSize: 'memory' },
  };
}
