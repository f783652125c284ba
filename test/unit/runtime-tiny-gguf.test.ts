// The tiny GGUF generator: valid GGUF v3, deterministic from the seed, with the metadata llama.cpp needs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { CHATML_TEMPLATE } from '../../src/hub/gguf-writer.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { tempDir } from '../helpers/runtime-env.js';

test('generateTinyGguf() gives the same bytes for the same seed and others for another seed', () => {
  const a = generateTinyGguf({ seed: 7 });
  assert.ok(a.equals(generateTinyGguf({ seed: 7 })));
  assert.ok(!a.equals(generateTinyGguf({ seed: 8 })));
  assert.ok(generateTinyGguf().equals(generateTinyGguf({ seed: 1 })));
  assert.equal(a.subarray(0, 4).toString('latin1'), 'GGUF');
  assert.equal(a.readUInt32LE(4), 3);
  assert.ok(a.length > 200_000 && a.length < 700_000, `size ${a.length}`);
});

test('generateTinyGguf() refuses a seed that is not an unsigned 32-bit integer', () => {
  for (const seed of [-1, 1.5, 2 ** 32])
    assert.throws(() => generateTinyGguf({ seed }), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('generateTinyGguf() writes the llama metadata, vocabulary and tensors that llama.cpp requires', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const path = join(dir.path, 'tiny.gguf');
  writeFileSync(path, generateTinyGguf({ seed: 3 }));
  const info = await readGgufFileInfo(path, { readTensorInfo: true });
  const metadata = info.metadata as unknown as Record<string, Record<string, unknown>>;
  assert.equal(info.version, 3);
  assert.equal(metadata.general!.architecture, 'llama');
  const llama = metadata.llama as Record<string, unknown> & { attention: Record<string, unknown> };
  assert.equal(llama.context_length, 2048);
  assert.equal(llama.embedding_length, 64);
  assert.equal(llama.block_count, 2);
  assert.equal(llama.feed_forward_length, 128);
  assert.equal(llama.attention.head_count, 4);
  const tokenizer = metadata.tokenizer as { ggml: Record<string, unknown>; chat_template: string };
  assert.equal(tokenizer.ggml.model, 'llama');
  const tokens = tokenizer.ggml.tokens as string[];
  const types = tokenizer.ggml.token_type as number[];
  assert.deepEqual(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
  assert.equal(tokens[3 + 255], '<0xFF>');
  assert.equal(types.filter((type) => type === 6).length, 256);
  assert.ok(tokens.length - 259 - 2 >= 90, `pieces: ${tokens.length - 261}`);
  assert.equal(tokenizer.chat_template, CHATML_TEMPLATE);
  const names = (info.fullTensorInfo ?? []).map((tensor) => tensor.name);
  for (const name of ['token_embd.weight', 'output_norm.weight', 'blk.0.attn_q.weight', 'blk.1.ffn_down.weight'])
    assert.ok(names.includes(name), name);
  assert.equal(names.length, 3 + 2 * 9);
});

test('generateTinyGguf() leaves out the metadata named in omitMetadata (fault tests)', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const path = join(dir.path, 'broken.gguf');
  writeFileSync(path, generateTinyGguf({ omitMetadata: ['llama.attention.head_count'] }));
  const info = await readGgufFileInfo(path);
  const llama = (info.metadata as unknown as { llama: { attention: Record<string, unknown> } }).llama;
  assert.equal(llama.attention.head_count, undefined);
});
