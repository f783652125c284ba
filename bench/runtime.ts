/**
 * `npm run bench -- runtime`: the bundled runtime on the generated tiny model, threads 1, started plainly
 * and inside the sandbox (issue 10: bubblewrap, as `companion up` starts it).
 * Per run and per mode: spawn → ready line (readyMs), one non-streamed chat completion and one streamed
 * one (tokens/s over the whole request, and the streamed request's time to first token), then stop. The
 * two modes alternate which goes first. Derived (from the medians, and paired within each run): the
 * sandbox's extra ready time (ms and % of plain) and its tokens/s as a fraction of plain (target: < 10% of ready time, nothing in tokens/s). Without a
 * sandbox tool only the plain figures are printed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Agent, fetch as undiciFetch } from 'undici';
import type { Bench, Figures } from './harness.js';
import { generateTinyGguf } from '../src/hub/tiny-gguf.js';
import { bundledProfile } from '../src/runtime/runtime-profile.js';
import { spawnRuntime, type SpawnWrap } from '../src/runtime/spawn.js';
import { resolveSandbox } from '../src/runtime/manager/sandbox-choice.js';

const TOKENS = 512;
let dir = '';
let model = '';
let wrap: SpawnWrap | undefined;
let round = 0;

async function measure(sandbox: SpawnWrap | undefined): Promise<Figures> {
  const started = performance.now();
  const handle = await spawnRuntime(bundledProfile({ modelPath: model, threads: 1, contextSize: 2048 }), {
    dataDir: join(dir, 'data'),
    readyTimeoutMs: 60_000,
    ...(sandbox === undefined ? {} : { wrap: sandbox }),
  });
  const readyMs = performance.now() - started;
  const agent = new Agent(handle.address.kind === 'unix' ? { connect: { socketPath: handle.address.path } } : {});
  try {
    const client = new OpenAI({
      baseURL: 'http://localhost/v1',
      apiKey: 'unused',
      maxRetries: 0,
      fetch: undiciFetch as unknown as typeof fetch,
      fetchOptions: { dispatcher: agent } as Record<string, unknown>,
    });
    // The runtime answers 404 model_not_found for any model but the one it serves: ask it which.
    const served = (await client.models.list()).data[0]?.id ?? '';
    const messages = [{ role: 'user' as const, content: 'Tell me a long story.' }];
    let t0 = performance.now();
    const plain = await client.chat.completions.create({ model: served, messages, max_tokens: TOKENS, temperature: 0 });
    const plainSeconds = (performance.now() - t0) / 1000;
    const plainTokens = plain.usage?.completion_tokens ?? 0;

    t0 = performance.now();
    let firstTokenMs = Number.NaN;
    let streamTokens = 0;
    const stream = await client.chat.completions.create({
      model: served,
      messages,
      max_tokens: TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      if (Number.isNaN(firstTokenMs) && (chunk.choices[0]?.delta.content ?? '') !== '')
        firstTokenMs = performance.now() - t0;
      if (chunk.usage) streamTokens = chunk.usage.completion_tokens;
    }
    const streamSeconds = (performance.now() - t0) / 1000;
    return {
      readyMs,
      chatTokPerSec: plainTokens / plainSeconds,
      streamTokPerSec: streamTokens / streamSeconds,
      streamFirstTokenMs: firstTokenMs,
    };
  } finally {
    await agent.close();
    await handle.stop(5000);
  }
}

const bench: Bench = {
  name: 'runtime',
  description: `bundled runtime, tiny GGUF, threads 1, plain and in the sandbox: spawn→ready ms, chat tokens/s (${TOKENS} tokens) non-streamed and streamed`,
  runs: 9,
  warmup: 1,
  async setup() {
    dir = mkdtempSync(join(tmpdir(), 'companion-bench-runtime-'));
    model = join(dir, 'tiny.gguf');
    writeFileSync(model, generateTinyGguf({ seed: 1 }));
    try {
      wrap = (await resolveSandbox('required', () => undefined)).wrap;
    } catch {
      wrap = undefined;
    }
    if (wrap === undefined) process.stderr.write('[runtime] no sandbox tool here: plain figures only\n');
  },
  async sample(): Promise<Figures> {
    const modes = wrap === undefined ? [''] : round++ % 2 === 0 ? ['', 'sandbox'] : ['sandbox', ''];
    const figures: Figures = {};
    for (const mode of modes) {
      const measured = await measure(mode === 'sandbox' ? wrap : undefined);
      for (const [key, value] of Object.entries(measured))
        figures[mode === '' ? key : `${mode}${key[0]!.toUpperCase()}${key.slice(1)}`] = value;
    }
    if (figures.sandboxReadyMs !== undefined) {
      // Paired within the run (same machine load for both starts): steadier than a ratio of medians.
      figures.pairedSandboxReadyExtraPct = ((figures.sandboxReadyMs - figures.readyMs!) / figures.readyMs!) * 100;
      figures.pairedSandboxChatTokPerSecRatio = figures.sandboxChatTokPerSec! / figures.chatTokPerSec!;
      figures.pairedSandboxStreamTokPerSecRatio = figures.sandboxStreamTokPerSec! / figures.streamTokPerSec!;
    }
    return figures;
  },
  derive(m: Figures): Figures {
    if (m.sandboxReadyMs === undefined) return {};
    return {
      sandboxReadyExtraMs: m.sandboxReadyMs - m.readyMs!,
      sandboxReadyExtraPct: ((m.sandboxReadyMs - m.readyMs!) / m.readyMs!) * 100,
      sandboxChatTokPerSecRatio: m.sandboxChatTokPerSec! / m.chatTokPerSec!,
      sandboxStreamTokPerSecRatio: m.sandboxStreamTokPerSec! / m.streamTokPerSec!,
    };
  },
  async teardown() {
    rmSync(dir, { recursive: true, force: true });
  },
};

export default bench;
