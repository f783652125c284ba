// The full smol135m preset (30 layers, Q8_0, about 120 MB) loads in node-llama-cpp, tokenizes ordinary
// English and generates tokens deterministically at temperature 0. The file is streamed to disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { getLlama, LlamaChatSession, LlamaLogLevel } from 'node-llama-cpp';
import { syntheticLlamaGguf } from '../../src/hub/llama-gguf.js';
import { tempDir } from '../helpers/runtime-env.js';

test('the smol135m preset loads in node-llama-cpp, tokenizes English and generates the same tokens twice at temperature 0', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const path = join(dir.path, 'smol135m.gguf');
  const file = syntheticLlamaGguf('smol135m', { seed: 1 });
  const fd = openSync(path, 'wx', 0o600);
  try {
    for (const chunk of file.chunks()) writeSync(fd, chunk);
  } finally {
    closeSync(fd);
  }

  const llama = await getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    progressLogs: false,
    maxThreads: 2,
    logLevel: LlamaLogLevel.error,
  });
  t.after(() => llama.dispose());
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  assert.equal(model.trainContextSize, 8192);
  assert.equal(model.fileInsights.totalLayers, 31, '30 blocks and the output layer');

  const sentence = 'Hello world, this is an ordinary English sentence about the local model.';
  const tokens = model.tokenize(sentence);
  // Pieces, not bytes: several characters per token on average, and the text comes back unchanged.
  assert.ok(tokens.length > 5 && tokens.length < sentence.length / 2, `${tokens.length} tokens`);
  assert.equal(model.detokenize(tokens), sentence);

  const context = await model.createContext({ contextSize: 2048, threads: 2, sequences: 2 });
  const answers: string[] = [];
  for (let i = 0; i < 2; i++) {
    const session = new LlamaChatSession({ contextSequence: context.getSequence() });
    let count = 0;
    answers.push(
      await session.prompt('Tell me a story about the sea.', {
        maxTokens: 16,
        temperature: 0,
        onToken: (chunk) => (count += chunk.length),
      }),
    );
    assert.equal(count, 16, 'generates up to max tokens without stopping early');
    session.dispose();
  }
  assert.ok(answers[0]!.length > 0);
  assert.equal(answers[0], answers[1]);
});
