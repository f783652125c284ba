// GPU backend selection (issue 17 item 8): gpu auto asks node-llama-cpp for a GPU and falls back to the
// CPU; gpu off never asks; the parent accepts only a well-formed backend report from the runtime. One test
// forces a backend that has no binary here (CUDA on this CPU-only machine) through the real node-llama-cpp.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Llama, LlamaOptions } from 'node-llama-cpp';
import { backendOf, selectLlama } from '../../src/runtime-server/gpu.js';
import { readyBackend } from '../../src/runtime/spawn.js';

function fakeLlama(gpu: Llama['gpu']): Llama {
  return { gpu, dispose: async () => undefined } as unknown as Llama;
}

test('selectLlama("off") asks node-llama-cpp for the CPU only, never downloading or building', async () => {
  const calls: LlamaOptions[] = [];
  const choice = await selectLlama('off', { maxThreads: 1 }, async (options) => {
    calls.push(options);
    return fakeLlama(false);
  });
  assert.equal(choice.backend, 'cpu');
  assert.equal(choice.fallback, undefined);
  assert.deepEqual(
    calls.map((c) => [c.gpu, c.build, c.skipDownload, c.maxThreads]),
    [[false, 'never', true, 1]],
  );
});

test('selectLlama("auto") reports the GPU node-llama-cpp picked', async () => {
  const calls: LlamaOptions[] = [];
  const choice = await selectLlama('auto', {}, async (options) => {
    calls.push(options);
    return fakeLlama('vulkan');
  });
  assert.equal(choice.backend, 'vulkan');
  assert.deepEqual(
    calls.map((c) => c.gpu),
    ['auto'],
  );
  assert.equal(calls[0]!.skipDownload, true);
  assert.equal(calls[0]!.build, 'never');
});

test('selectLlama("auto") retries on the CPU when loading a GPU backend throws, and says why without the message', async () => {
  const calls: LlamaOptions[] = [];
  const logged: string[] = [];
  const choice = await selectLlama(
    'auto',
    {},
    async (options) => {
      calls.push(options);
      if (options.gpu !== false)
        throw Object.assign(new Error('/home/alice/secret/path: libcuda.so.1 not found'), { name: 'GpuLoadError' });
      return fakeLlama(false);
    },
    (line) => logged.push(line),
  );
  assert.equal(choice.backend, 'cpu');
  assert.equal(choice.fallback, 'auto unavailable: GpuLoadError');
  assert.deepEqual(
    calls.map((c) => c.gpu),
    ['auto', false],
  );
  assert.ok(
    logged.every((line) => !line.includes('/home/alice')),
    'the error message (a path) is never repeated',
  );
});

test('selectLlama() gives up only when the CPU binary itself cannot load', async () => {
  await assert.rejects(
    selectLlama('auto', {}, async () => {
      throw new Error('NoBinaryFoundError');
    }),
    /NoBinaryFoundError/,
  );
});

test('a backend that has no binary here (forced CUDA) falls back to the CPU through the real node-llama-cpp', async () => {
  const logged: string[] = [];
  const choice = await selectLlama('cuda', {}, undefined, (line) => logged.push(line));
  try {
    // Either this machine really has CUDA (then it is used), or the CPU binary took over.
    if (choice.backend !== 'cuda') {
      assert.equal(choice.backend, 'cpu');
      assert.match(choice.fallback ?? '', /^cuda unavailable: [A-Za-z0-9_]+$/);
      assert.equal(logged.length, 1);
    }
    assert.equal(backendOf(choice.llama.gpu), choice.backend);
  } finally {
    await choice.llama.dispose();
  }
});

test('readyBackend() accepts only a listed backend, a bounded layer count and a plain reason', () => {
  assert.deepEqual(readyBackend({ backend: 'cpu', gpuLayers: 0 }), { backend: 'cpu', gpuLayers: 0 });
  assert.deepEqual(readyBackend({ backend: 'cuda', gpuLayers: 31, fallback: undefined }), {
    backend: 'cuda',
    gpuLayers: 31,
  });
  assert.deepEqual(readyBackend({ backend: 'cpu', gpuLayers: 0, fallback: 'auto unavailable: NoBinaryFoundError' }), {
    backend: 'cpu',
    gpuLayers: 0,
    fallback: 'auto unavailable: NoBinaryFoundError',
  });
  for (const bad of [
    {},
    { backend: 'rocm', gpuLayers: 0 },
    { backend: 'cpu' },
    { backend: 'cpu', gpuLayers: -1 },
    { backend: 'cpu', gpuLayers: 1.5 },
    { backend: 'cpu', gpuLayers: '0' },
    { backend: 'cpu', gpuLayers: 0, fallback: '\u001b[2Jspoof' },
    { backend: 'cpu', gpuLayers: 0, fallback: 'x'.repeat(500) },
  ]) {
    assert.equal(readyBackend(bad), null, JSON.stringify(bad));
  }
});
