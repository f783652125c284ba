/**
 * `npm run bench -- workloads [--json] [--quick]`: what the runtime does for real workloads (issue 17),
 * on the synthetic SmolLM2-135M-shaped llama (`smol135m`, Q8_0, src/hub/llama-gguf.ts), threads = the
 * physical cores (2 here), context 4096, greedy (temperature 0), all in one run:
 *
 *   companionOverInProcess   chat tokens/s through the front door and the bundled runtime (a child
 *                            process, not sandboxed: bench/runtime.ts measures the sandbox) ÷ the same
 *                            generation with node-llama-cpp in this process (same model, threads,
 *                            context, batch size, sampling, LlamaChat as the runtime uses)   target ≥ 0.95
 *   streamOverInProcess      the same for a streamed request                                  target ≥ 0.95
 *   addedTtftMs              streamed time to first token through the companion − in-process  reported
 *   parallel4OverSerial      aggregate tokens/s of 4 concurrent clients ÷ 1 client            target ≥ 1.8
 *   secondTurnTtftRatio      time to first token of a follow-up turn sharing a ≥ 1,000-token prefix ÷
 *                            the first turn's                                                 target ≤ 0.3
 *   jsonSchemaOverPlain      tokens/s with `response_format: json_schema` ÷ plain             reported; null
 *                            with a reason while the runtime refuses response_format (400)
 *
 * In-process generation runs before and after the companion's two requests in each run (A B B A) and the
 * two are pooled, so a load that drifts during a run weighs on both sides; ratios are paired within a run.
 * Each field is printed with its target and `met`. The runtime is started as `companion up` starts it
 * (its default sequences), so the figures say what the product does today. `--quick` takes a 2-layer model
 * of the same widths, 16 tokens and one run: it checks the bench works (a test runs it), its figures mean
 * nothing. The bench measures and prints; it asserts nothing.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  getLlama,
  LlamaChat,
  LlamaLogLevel,
  type ChatHistoryItem,
  type Llama,
  type LlamaContext,
  type LlamaModel,
} from 'node-llama-cpp';
import OpenAI from 'openai';
import { createAdmission } from '../src/core/admission.js';
import { createTokenVerifier } from '../src/core/guard.js';
import { syntheticLlamaGguf } from '../src/hub/llama-gguf.js';
import { startFrontDoor, type FrontDoor } from '../src/runtime/front-door.js';
import { bundledProfile } from '../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeHandle } from '../src/runtime/spawn.js';
import type { Bench, Figures } from './harness.js';

const QUICK = process.argv.includes('--quick');
/** Physical cores (distinct physical id / core id pairs), as the runtime counts them for its default threads. */
function physicalCores(): number {
  try {
    const cores = new Set<string>();
    for (const block of readFileSync('/proc/cpuinfo', 'utf8').split(/\n\s*\n/)) {
      const physical = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1];
      const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
      if (physical !== undefined && core !== undefined) cores.add(`${physical}:${core}`);
    }
    if (cores.size > 0) return cores.size;
  } catch {
    // Not Linux: the logical count.
  }
  return Math.max(1, availableParallelism());
}

const THREADS = physicalCores();
const CONTEXT = 4096;
const TOKENS = QUICK ? 16 : 128;
const CLIENTS = 4;

let dir = '';
let handle: RuntimeHandle | undefined;
let door: FrontDoor | undefined;
let client: OpenAI | undefined;
let llama: Llama | undefined;
let model: LlamaModel | undefined;
let context: LlamaContext | undefined;
let chat: LlamaChat | undefined;
/** The profile for `parallel4OverSerial`: node-llama-cpp in-process with CLIENTS sequences on one context. */
let context4: LlamaContext | undefined;
let chats4: LlamaChat[] = [];
let round = 0;
let longPrefixTokens = 0;
let jsonSchema: { supported: boolean; reason: string | null } = { supported: false, reason: null };

const TOPICS = [
  'the sea',
  'a lighthouse',
  'the mountains',
  'a city at night',
  'an old library',
  'a long journey',
  'the first snow',
  'a small garden',
];
const LONG_TEXT = [
  'The local model reads the whole of this document before it answers, and a follow-up question about it',
  'should not pay for reading it again. This paragraph is plain English text of the kind a user pastes:',
  'notes from a meeting, a page of a report, the first part of a story, or the code of a small function.',
  'It has ordinary words, numbers such as 12, 345 and 2026, punctuation, and sentences of different length.',
].join(' ');

function longSystemPrompt(run: number): string {
  // Unique per run (the run number comes first), so the first turn never finds it cached.
  return `Document ${run}. ${Array.from({ length: 7 }, (_, i) => `Part ${i + 1}. ${LONG_TEXT}`).join('\n')}`;
}

type Message = { role: 'system' | 'user' | 'assistant'; content: string };

function historyOf(messages: readonly Message[]): ChatHistoryItem[] {
  // As the runtime's engine builds it (src/runtime-server/engine.ts).
  const history: ChatHistoryItem[] = messages.map((m): ChatHistoryItem =>
    m.role === 'system'
      ? { type: 'system', text: m.content }
      : m.role === 'user'
        ? { type: 'user', text: m.content }
        : { type: 'model', response: [m.content] },
  );
  history.push({ type: 'model', response: [] });
  return history;
}

async function inProcess(
  messages: readonly Message[],
  on: LlamaChat = chat!,
): Promise<{ tokens: number; seconds: number; ttftMs: number }> {
  let tokens = 0;
  let ttftMs = Number.NaN;
  const t0 = performance.now();
  await on.generateResponse(historyOf(messages), {
    maxTokens: TOKENS,
    temperature: 0,
    onToken: (chunk) => {
      tokens += chunk.length;
    },
    onTextChunk: (text) => {
      if (Number.isNaN(ttftMs) && text !== '') ttftMs = performance.now() - t0;
    },
  });
  return { tokens, seconds: (performance.now() - t0) / 1000, ttftMs };
}

async function companionPlain(
  messages: readonly Message[],
  extra: Record<string, unknown> = {},
): Promise<{ tokens: number; seconds: number; text: string }> {
  const t0 = performance.now();
  const response = await client!.chat.completions.create({
    model: 'smol135m',
    messages: [...messages],
    max_tokens: TOKENS,
    temperature: 0,
    ...extra,
  } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  return {
    tokens: response.usage?.completion_tokens ?? 0,
    seconds: (performance.now() - t0) / 1000,
    text: response.choices[0]?.message.content ?? '',
  };
}

/**
 * The profile of `streamOverInProcess`: the same streamed request straight to the runtime's socket (no
 * front door, no SDK): raw SSE counted by the usage chunk. Its gap to in-process is the runtime's own.
 */
function runtimeStream(messages: readonly Message[]): Promise<{ tokens: number; seconds: number }> {
  const address = handle!.address;
  if (address.kind !== 'unix') return Promise.reject(new Error('the bundled runtime listens on a unix socket'));
  const body = JSON.stringify({
    model: 'smol135m',
    messages,
    max_tokens: TOKENS,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        socketPath: address.path,
        method: 'POST',
        path: '/v1/chat/completions',
        headers: { host: 'localhost', 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.once('end', () => {
          const usage = /"completion_tokens":(\d+)/.exec(text);
          if (res.statusCode !== 200 || usage === null)
            return reject(new Error(`runtime stream: status ${res.statusCode ?? 0}`));
          resolve({ tokens: Number(usage[1]), seconds: (performance.now() - t0) / 1000 });
        });
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

async function companionStream(
  messages: readonly Message[],
  maxTokens = TOKENS,
): Promise<{ tokens: number; seconds: number; ttftMs: number; text: string; promptTokens: number }> {
  const t0 = performance.now();
  let ttftMs = Number.NaN;
  let tokens = 0;
  let promptTokens = 0;
  let text = '';
  const stream = await client!.chat.completions.create({
    model: 'smol135m',
    messages: [...messages],
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta.content ?? '';
    if (Number.isNaN(ttftMs) && delta !== '') ttftMs = performance.now() - t0;
    text += delta;
    if (chunk.usage) {
      tokens = chunk.usage.completion_tokens;
      promptTokens = chunk.usage.prompt_tokens;
    }
  }
  return { tokens, seconds: (performance.now() - t0) / 1000, ttftMs, text, promptTokens };
}

const SCHEMA = {
  type: 'object',
  properties: { title: { type: 'string' }, year: { type: 'integer' } },
  required: ['title', 'year'],
  additionalProperties: false,
};
const JSON_SCHEMA_FORMAT = {
  response_format: { type: 'json_schema', json_schema: { name: 'book', schema: SCHEMA, strict: true } },
};

/** One request with response_format: 200 means supported; a 400 is today's refusal (its message is the reason). */
async function probeJsonSchema(): Promise<{ supported: boolean; reason: string | null }> {
  try {
    await client!.chat.completions.create({
      model: 'smol135m',
      messages: [{ role: 'user', content: 'A book as JSON.' }],
      max_tokens: 8,
      temperature: 0,
      ...JSON_SCHEMA_FORMAT,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    return { supported: true, reason: null };
  } catch (error) {
    if (error instanceof OpenAI.APIError && error.status === 400)
      return { supported: false, reason: `the runtime answers 400 to response_format: ${error.message}` };
    throw error;
  }
}

const bench: Bench = {
  name: 'workloads',
  description: `workloads on the synthetic smol135m llama${QUICK ? ' (QUICK: 2 layers, figures meaningless)' : ''}, threads ${THREADS}, context ${CONTEXT}, greedy, ${TOKENS} tokens: companion vs in-process, streaming, 4 parallel clients, second-turn prefix reuse, json_schema`,
  runs: QUICK ? 1 : 3,
  warmup: QUICK ? 0 : 1,
  async setup() {
    dir = mkdtempSync(join(tmpdir(), 'companion-bench-workloads-'));
    const path = join(dir, 'smol135m.gguf');
    const file = syntheticLlamaGguf('smol135m', { seed: 1, ...(QUICK ? { layers: 2 } : {}) });
    const fd = openSync(path, 'wx', 0o600);
    try {
      for (const chunk of file.chunks()) writeSync(fd, chunk);
    } finally {
      closeSync(fd);
    }
    handle = await spawnRuntime(
      bundledProfile({ modelPath: path, modelId: 'smol135m', threads: THREADS, contextSize: CONTEXT }),
      { dataDir: join(dir, 'data'), readyTimeoutMs: 120_000 },
    );
    const token = randomBytes(32).toString('base64url');
    const address = handle.address;
    door = await startFrontDoor({
      verifyToken: createTokenVerifier(token),
      upstream: () => address,
      // As `companion up` admits: 4 at once, a bounded queue.
      admission: createAdmission({ maxConcurrent: 4, maxQueue: 32, queueTimeoutMs: 300_000, ready: true }),
    });
    client = new OpenAI({ baseURL: `${door.url}/v1`, apiKey: token, maxRetries: 0, timeout: 600_000 });
    llama = await getLlama({
      gpu: false,
      build: 'never',
      skipDownload: true,
      progressLogs: false,
      maxThreads: THREADS,
      logLevel: LlamaLogLevel.error,
    });
    model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
    context = await model.createContext({
      contextSize: CONTEXT,
      sequences: 1,
      threads: THREADS,
      batchSize: Math.min(512, CONTEXT),
    });
    chat = new LlamaChat({ contextSequence: context.getSequence() });
    context4 = await model.createContext({
      contextSize: CONTEXT,
      sequences: CLIENTS,
      threads: THREADS,
      batchSize: Math.min(512, CONTEXT * CLIENTS),
    });
    chats4 = Array.from({ length: CLIENTS }, () => new LlamaChat({ contextSequence: context4!.getSequence() }));
    jsonSchema = await probeJsonSchema();
  },
  async sample(): Promise<Figures> {
    const run = round++;
    const topic = (i: number): string => TOPICS[(run * CLIENTS + i) % TOPICS.length]!;
    const messages = (i: number): Message[] => [
      { role: 'user', content: `Tell me a long story about ${topic(i)} (${run}).` },
    ];
    const figures: Figures = {};

    // In-process before and after the two companion requests (A B B A), averaged: a load that drifts
    // during the run weighs on both sides alike.
    const before = await inProcess(messages(0));
    const plain = await companionPlain(messages(1));
    const stream = await companionStream(messages(2));
    const after = await inProcess(messages(3));
    figures.inProcessTokPerSec = (before.tokens + after.tokens) / (before.seconds + after.seconds);
    figures.inProcessTtftMs = (before.ttftMs + after.ttftMs) / 2;
    figures.companionTokPerSec = plain.tokens / plain.seconds;
    figures.companionStreamTokPerSec = stream.tokens / stream.seconds;
    figures.companionTtftMs = stream.ttftMs;
    figures.pairedCompanionOverInProcess = figures.companionTokPerSec! / figures.inProcessTokPerSec!;
    figures.pairedStreamOverInProcess = figures.companionStreamTokPerSec! / figures.inProcessTokPerSec!;
    const direct = await runtimeStream(messages(2));
    figures.runtimeStreamTokPerSec = direct.tokens / direct.seconds;
    figures.pairedRuntimeStreamOverInProcess = figures.runtimeStreamTokPerSec / figures.inProcessTokPerSec;

    // Parallel: 1 client, then 4 at once (distinct prompts), aggregate completion tokens / wall time.
    const single = await companionPlain(messages(4));
    figures.serialTokPerSec = single.tokens / single.seconds;
    const t0 = performance.now();
    const together = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) =>
        companionPlain([{ role: 'user', content: `Tell me a long story about ${topic(i)} (${run}, client ${i}).` }]),
      ),
    );
    figures.parallel4TokPerSec = together.reduce((sum, r) => sum + r.tokens, 0) / ((performance.now() - t0) / 1000);
    figures.pairedParallel4OverSerial = figures.parallel4TokPerSec / figures.serialTokPerSec;
    // The profile of that ratio: what llama.cpp's batching gives in-process, with no runtime or front door.
    const t1 = performance.now();
    const local4 = await Promise.all(
      chats4.map((c, i) =>
        inProcess([{ role: 'user', content: `Tell me a long story about ${topic(i)} (${run}, in-process ${i}).` }], c),
      ),
    );
    figures.inProcessParallel4TokPerSec =
      local4.reduce((sum, r) => sum + r.tokens, 0) / ((performance.now() - t1) / 1000);
    figures.pairedInProcessParallel4OverSerial = figures.inProcessParallel4TokPerSec / figures.inProcessTokPerSec!;

    // Prompt reuse: a long system prompt, then a follow-up turn that repeats it and the first answer.
    const first: Message[] = [
      { role: 'system', content: longSystemPrompt(run) },
      { role: 'user', content: 'Summarise the document.' },
    ];
    const turn1 = await companionStream(first, 8);
    longPrefixTokens = turn1.promptTokens;
    const turn2 = await companionStream(
      [...first, { role: 'assistant', content: turn1.text }, { role: 'user', content: 'And what came after that?' }],
      8,
    );
    figures.firstTurnTtftMs = turn1.ttftMs;
    figures.secondTurnTtftMs = turn2.ttftMs;
    figures.pairedSecondTurnTtftRatio = turn2.ttftMs / turn1.ttftMs;

    if (jsonSchema.supported) {
      const structured = await companionPlain(messages(0), JSON_SCHEMA_FORMAT);
      figures.jsonSchemaTokPerSec = structured.tokens / structured.seconds;
      figures.pairedJsonSchemaOverPlain = figures.jsonSchemaTokPerSec / figures.companionTokPerSec!;
    }
    return figures;
  },
  derive(m: Figures): Figures {
    return {
      companionOverInProcessOfMedians: m.companionTokPerSec! / m.inProcessTokPerSec!,
      addedTtftMsOfMedians: m.companionTtftMs! - m.inProcessTtftMs!,
    };
  },
  report(m: Figures): Record<string, unknown> {
    const atLeast = (
      value: number | undefined,
      target: number,
    ): { value: number | null; target: string; met: boolean } => ({
      value: value ?? null,
      target: `>=${target}`,
      met: value !== undefined && value >= target,
    });
    const round3 = (value: number | undefined): number | undefined =>
      value === undefined ? undefined : Math.round(value * 1000) / 1000;
    const secondTurn = round3(m.pairedSecondTurnTtftRatio);
    return {
      model: QUICK
        ? 'smol135m, 2 layers (quick: figures meaningless)'
        : 'smol135m (synthetic SmolLM2-135M shape, Q8_0)',
      threads: THREADS,
      contextSize: CONTEXT,
      maxTokens: TOKENS,
      runtimeSequences: 'the runtime default (as companion up starts it)',
      loadAverage1m: Math.round(loadavg()[0]! * 100) / 100,
      longPrefixTokens,
      companionOverInProcess: atLeast(round3(m.pairedCompanionOverInProcess), 0.95),
      streamOverInProcess: atLeast(round3(m.pairedStreamOverInProcess), 0.95),
      // Profile: the same stream straight to the runtime's socket (no front door, no SDK).
      runtimeStreamOverInProcess: round3(m.pairedRuntimeStreamOverInProcess) ?? null,
      addedTtftMs: {
        value: round3((m.companionTtftMs ?? Number.NaN) - (m.inProcessTtftMs ?? Number.NaN)) ?? null,
        target: 'report',
        met: m.companionTtftMs !== undefined,
      },
      parallel4OverSerial: atLeast(round3(m.pairedParallel4OverSerial), 1.8),
      // Profile: the same ratio in-process (node-llama-cpp, 4 sequences on one context, no runtime).
      inProcessParallel4OverSerial: round3(m.pairedInProcessParallel4OverSerial) ?? null,
      secondTurnTtftRatio: {
        value: secondTurn ?? null,
        target: '<=0.3',
        met: secondTurn !== undefined && secondTurn <= 0.3,
      },
      jsonSchemaOverPlain: jsonSchema.supported
        ? {
            value: round3(m.pairedJsonSchemaOverPlain) ?? null,
            target: 'report',
            met: m.pairedJsonSchemaOverPlain !== undefined,
          }
        : { value: null, target: 'report', met: false, reason: jsonSchema.reason },
    };
  },
  async teardown() {
    for (const c of chats4) await c.dispose();
    await context4?.dispose();
    await chat?.dispose();
    await context?.dispose();
    await model?.dispose();
    await llama?.dispose();
    await door?.close();
    await handle?.stop(10_000);
    rmSync(dir, { recursive: true, force: true });
  },
};

export default bench;
