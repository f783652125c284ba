// The runtime's default sequences and per-sequence context (issue 17 items 6-7): a pure choice over the
// model's size, its trained context and the memory budget.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chooseSizing,
  DEFAULT_MAX_PARALLEL,
  FALLBACK_TRAIN_CONTEXT,
  MIN_AUTO_CONTEXT,
  RUNTIME_OVERHEAD_BYTES,
  type SizingInput,
} from '../../src/runtime-server/sizing.js';

const MiB = 2 ** 20;
/** A context's memory as llama.cpp's KV cache grows: bytes per cell × cells, plus a fixed compute buffer. */
const linear =
  (bytesPerToken: number, fixed = 8 * MiB) =>
  (contextSize: number, sequences: number): number =>
    fixed + bytesPerToken * contextSize * sequences;

function input(overrides: Partial<SizingInput>): SizingInput {
  return {
    trainContextSize: 8192,
    modelBytes: 200 * MiB,
    memoryBytes: 16 * 1024 * MiB,
    contextBytes: linear(24 * 1024),
    ...overrides,
  };
}

/** The memory that exactly holds `sequences` caches of `contextSize` beside a 200 MiB model. */
const budgetFor = (contextSize: number, sequences: number, bytesPerToken = 24 * 1024): number =>
  200 * MiB + RUNTIME_OVERHEAD_BYTES + linear(bytesPerToken)(contextSize, sequences);

test('chooseSizing() gives 4 sequences of the trained context when memory holds 4 caches', () => {
  assert.deepEqual(chooseSizing(input({})), {
    parallel: DEFAULT_MAX_PARALLEL,
    contextSize: 8192,
    reason: { parallel: 'default', contextSize: 'trained' },
  });
  // Exactly enough memory is enough.
  assert.equal(chooseSizing(input({ memoryBytes: budgetFor(8192, 4) })).parallel, 4);
});

test('chooseSizing() runs fewer sequences when memory holds fewer caches of the trained context', () => {
  assert.deepEqual(chooseSizing(input({ memoryBytes: budgetFor(8192, 4) - 1 })), {
    parallel: 3,
    contextSize: 8192,
    reason: { parallel: 'memory', contextSize: 'trained' },
  });
  assert.equal(chooseSizing(input({ memoryBytes: budgetFor(8192, 2) })).parallel, 2);
  assert.equal(chooseSizing(input({ memoryBytes: budgetFor(8192, 1) })).parallel, 1);
});

test('chooseSizing() shrinks the context of one sequence when even one trained-size cache does not fit', () => {
  const sizing = chooseSizing(input({ memoryBytes: budgetFor(3000, 1) }));
  assert.equal(sizing.parallel, 1);
  assert.deepEqual(sizing.reason, { parallel: 'memory', contextSize: 'memory' });
  // The largest multiple of 256 (llama.cpp's alignment) that fits.
  assert.equal(sizing.contextSize, 2816);
  assert.ok(linear(24 * 1024)(sizing.contextSize, 1) + 200 * MiB + RUNTIME_OVERHEAD_BYTES <= budgetFor(3000, 1));
});

test('chooseSizing() never goes below the floor of 512 tokens by default, even when nothing fits', () => {
  const sizing = chooseSizing(input({ memoryBytes: 100 * MiB }));
  assert.deepEqual(sizing, {
    parallel: 1,
    contextSize: MIN_AUTO_CONTEXT,
    reason: { parallel: 'memory', contextSize: 'memory' },
  });
});

test('chooseSizing() caps by a larger model: the same memory holds fewer caches beside it', () => {
  const memoryBytes = budgetFor(8192, 4);
  assert.equal(chooseSizing(input({ memoryBytes })).parallel, 4);
  assert.equal(
    chooseSizing(input({ memoryBytes, modelBytes: 200 * MiB + 2 * linear(24 * 1024, 0)(8192, 1) })).parallel,
    2,
  );
});

test('chooseSizing() keeps an asked number of sequences and shrinks their context to fit', () => {
  const sizing = chooseSizing(input({ parallel: 8, memoryBytes: budgetFor(4096, 8) }));
  assert.equal(sizing.parallel, 8);
  assert.equal(sizing.contextSize, 4096);
  assert.deepEqual(sizing.reason, { parallel: 'asked', contextSize: 'memory' });
  assert.deepEqual(chooseSizing(input({ parallel: 2 })), {
    parallel: 2,
    contextSize: 8192,
    reason: { parallel: 'asked', contextSize: 'trained' },
  });
});

test('chooseSizing() keeps an asked context and runs as many sequences of it as fit (at least 1)', () => {
  assert.deepEqual(chooseSizing(input({ contextSize: 256 })), {
    parallel: 4,
    contextSize: 256,
    reason: { parallel: 'default', contextSize: 'asked' },
  });
  assert.equal(chooseSizing(input({ contextSize: 16384, memoryBytes: budgetFor(16384, 2) })).parallel, 2);
  assert.deepEqual(chooseSizing(input({ contextSize: 16384, memoryBytes: 100 * MiB })), {
    parallel: 1,
    contextSize: 16384,
    reason: { parallel: 'memory', contextSize: 'asked' },
  });
});

test('chooseSizing() takes a shape asked in full as is', () => {
  assert.deepEqual(chooseSizing(input({ parallel: 16, contextSize: 65536, memoryBytes: 100 * MiB })), {
    parallel: 16,
    contextSize: 65536,
    reason: { parallel: 'asked', contextSize: 'asked' },
  });
});

test('chooseSizing() uses 2048 when the model does not say its trained context, and no cap without a budget', () => {
  assert.deepEqual(chooseSizing(input({ trainContextSize: undefined })), {
    parallel: 4,
    contextSize: FALLBACK_TRAIN_CONTEXT,
    reason: { parallel: 'default', contextSize: 'fallback' },
  });
  assert.deepEqual(chooseSizing(input({ trainContextSize: 131072, memoryBytes: undefined })), {
    parallel: 4,
    contextSize: 131072,
    reason: { parallel: 'default', contextSize: 'trained' },
  });
});

test('chooseSizing() refuses out-of-range asks with a RangeError', () => {
  for (const ask of [
    { parallel: 0 },
    { parallel: 65 },
    { parallel: 1.5 },
    { contextSize: 10 },
    { contextSize: 2 ** 21 },
  ]) {
    assert.throws(() => chooseSizing(input(ask)), RangeError);
  }
});
