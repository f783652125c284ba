// The generated GGUF files are pinned byte for byte: caches, manifests and published digests depend on
// them, so a change to the shared writer (gguf-writer.ts) must not move a single byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { syntheticLlamaGguf } from '../../src/hub/llama-gguf.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function streamed(file: { size: number; chunks(): Iterable<Buffer> }): { sha256: string; length: number } {
  const hash = createHash('sha256');
  let length = 0;
  for (const chunk of file.chunks()) {
    hash.update(chunk);
    length += chunk.length;
  }
  return { sha256: hash.digest('hex'), length };
}

test('generateTinyGguf() gives the pinned bytes for seeds 0, 1, 5 and 2^32-1, and with a key omitted', () => {
  const pinned: [number, string][] = [
    [0, '911857705e25fc1b0ddbe40a7b94b85f3af3fe7763e3e9b7e54d54c5b9257380'],
    [1, 'ce8df3e669587a04a0aa3e169060e39d4ca8224eabf67741835dae2cadc1b639'],
    [5, '2d73ba9b90e89ee2a10fd0c648d926653c9b823d515c1a97b2918e7e5bd557db'],
    [0xffffffff, 'ce2cd864cae2354ab4e6c189618a43652115a4fca4e4c0fdce7e7346c340c98e'],
  ];
  for (const [seed, digest] of pinned) assert.equal(sha256(generateTinyGguf({ seed })), digest, `seed ${seed}`);
  const broken = generateTinyGguf({ seed: 1, omitMetadata: ['llama.attention.head_count'] });
  assert.equal(sha256(broken), 'b69acfda8a12be8c27c787284c41d3638e2fe6693e77e74ea7ed2d92e28e13e5');
});

test('syntheticLlamaGguf() gives the pinned bytes and size for smol135m (full and reduced) and tiny', () => {
  const pinned: [string, { seed: number; layers?: number }, string, number][] = [
    ['smol135m', { seed: 1 }, '37b38f8aa92ae1fc3b062022ded3e47d15e10729e8079aea95ef00de58271455', 123_155_776],
    [
      'smol135m',
      { seed: 2, layers: 2 },
      '3803bd7a1d6f41428e6edd04298fc310de3ad6c21881ace260a83867c2528749',
      17_728_192,
    ],
    ['tiny', { seed: 7 }, 'd46eb5fcfa1b85c8054752142b3f96ab1f56c723db1ef9f0de03899b242533f5', 539_904],
  ];
  for (const [preset, options, digest, size] of pinned) {
    const file = syntheticLlamaGguf(preset, options);
    assert.equal(file.size, size, `${preset} ${JSON.stringify(options)} size`);
    assert.deepEqual(streamed(file), { sha256: digest, length: size }, `${preset} ${JSON.stringify(options)}`);
  }
});
