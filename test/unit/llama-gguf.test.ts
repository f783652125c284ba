// The synthetic llama presets: deterministic bytes, SmolLM2-135M's shape in the header, Q8_0 tensors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { SYNTHETIC_LLAMA_PRESETS, syntheticLlamaGguf } from '../../src/hub/llama-gguf.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { tempDir } from '../helpers/runtime-env.js';

function digestOf(file: { chunks(): Iterable<Buffer> }): { sha256: string; length: number } {
  const hash = createHash('sha256');
  let length = 0;
  for (const chunk of file.chunks()) {
    hash.update(chunk);
    length += chunk.length;
  }
  return { sha256: hash.digest('hex'), length };
}

test('syntheticLlamaGguf("smol135m") gives the same digest on two generations, its announced size, and another digest for another seed', () => {
  const file = syntheticLlamaGguf('smol135m', { seed: 1 });
  const first = digestOf(file);
  const second = digestOf(syntheticLlamaGguf('smol135m', { seed: 1 }));
  assert.equal(first.sha256, second.sha256);
  assert.equal(first.length, file.size);
  // Q8_0: about 1.06 bytes per weight; SmolLM2-135M's widths with an 8,192-token untied vocabulary.
  assert.ok(file.size > 100_000_000 && file.size < 150_000_000, `size ${file.size}`);
  assert.equal(file.name, 'companion-smol135m-1');
  const reduced = syntheticLlamaGguf('smol135m', { seed: 2, layers: 2 });
  assert.notEqual(digestOf(reduced).sha256, first.sha256);
  assert.equal(reduced.name, 'companion-smol135m-2-l2');
});

test('syntheticLlamaGguf("tiny") is byte for byte the demo model of generateTinyGguf()', () => {
  const file = syntheticLlamaGguf('tiny', { seed: 5 });
  const bytes = Buffer.concat([...file.chunks()]);
  assert.ok(bytes.equals(generateTinyGguf({ seed: 5 })));
  assert.equal(file.size, bytes.length);
});

test('syntheticLlamaGguf() refuses an unknown preset, a bad seed and a bad layer count with ERR_INVALID_ARG_VALUE', () => {
  assert.throws(() => syntheticLlamaGguf('huge'), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => syntheticLlamaGguf('__proto__'), { code: 'ERR_INVALID_ARG_VALUE' });
  for (const seed of [-1, 1.5, 2 ** 32])
    assert.throws(() => syntheticLlamaGguf('smol135m', { seed }), { code: 'ERR_INVALID_ARG_VALUE' });
  for (const layers of [0, 31, 2.5])
    assert.throws(() => syntheticLlamaGguf('smol135m', { layers }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => syntheticLlamaGguf('tiny', { layers: 1 }), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('syntheticLlamaGguf("smol135m") header, read back by node-llama-cpp, has SmolLM2-135M\'s shape and Q8_0 tensors', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const path = join(dir.path, 'smol-header.gguf');
  // The first chunk is the whole header (metadata and tensor infos): the reader needs nothing more.
  const first = syntheticLlamaGguf('smol135m', { seed: 3 }).chunks().next();
  assert.equal(first.done, false);
  writeFileSync(path, first.value as Buffer);
  const info = await readGgufFileInfo(path, { readTensorInfo: true });
  const metadata = info.metadata as unknown as Record<string, Record<string, unknown>>;
  assert.equal(info.version, 3);
  assert.equal(metadata.general!.architecture, 'llama');
  assert.equal(metadata.general!.file_type, 7, 'MOSTLY_Q8_0');
  const llama = metadata.llama as Record<string, unknown> & { attention: Record<string, unknown> };
  const shape = SYNTHETIC_LLAMA_PRESETS.smol135m;
  assert.equal(llama.embedding_length, 576);
  assert.equal(llama.block_count, 30);
  assert.equal(llama.feed_forward_length, 1536);
  assert.equal(llama.attention.head_count, 9);
  assert.equal(llama.attention.head_count_kv, 3);
  assert.equal(llama.context_length, shape.contextLength);
  const tokenizer = metadata.tokenizer as { ggml: Record<string, unknown> };
  const tokens = tokenizer.ggml.tokens as string[];
  assert.equal(tokens.length, 8192);
  assert.equal(llama.vocab_size, 8192);
  assert.equal(new Set(tokens).size, tokens.length, 'no duplicate piece');
  assert.equal((tokenizer.ggml.token_type as number[]).filter((type) => type === 6).length, 256);
  assert.ok(tokens.includes('<|im_start|>') && tokens.includes('<|im_end|>'));
  const tensors = info.fullTensorInfo ?? [];
  assert.equal(tensors.length, 3 + 30 * 9);
  const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
  assert.deepEqual(byName.get('blk.0.attn_k.weight')?.dimensions.map(Number), [576, 192]);
  assert.deepEqual(byName.get('blk.29.ffn_down.weight')?.dimensions.map(Number), [1536, 576]);
  assert.deepEqual(byName.get('token_embd.weight')?.dimensions.map(Number), [576, 8192]);
  assert.equal(byName.get('blk.0.attn_q.weight')?.ggmlType, 8, 'Q8_0');
  assert.equal(byName.get('blk.0.attn_norm.weight')?.ggmlType, 0, 'F32 norms');
});
