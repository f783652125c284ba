/**
 * The inference engine of the bundled runtime: node-llama-cpp (pinned 3.21.1) with a pool of context
 * sequences. A sequence generates one request at a time; with `parallel` sequences that many requests
 * run together (llama.cpp batches them) and the rest wait in a bounded FIFO queue. A request whose
 * client goes away is cancelled through its AbortSignal, also while it waits.
 *
 * Nothing here logs a prompt or a completion: they are the user's private data.
 */
import {
  LlamaChat,
  LlamaCompletion,
  LlamaLogLevel,
  type Llama,
  type LlamaContext,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import { generateChat, finishOf, planChat } from './chat-generation.js';
import { Embedder, type EmbeddingResult } from './embedder.js';
import { generationOptions, type GenerationOptions, type ModelLimits } from './generation-options.js';
import { GrammarCache } from './grammars.js';
import {
  contextLengthExceeded,
  shuttingDown,
  type ChatMessage,
  type FinishReason,
  type ResponseFormat,
  type Sampling,
  type ToolCall,
  type ToolCallDelta,
  type ToolChoice,
  type ToolDefinition,
} from './openai.js';
import { SequencePool, type Slot } from './sequence-pool.js';
import { chooseSizing, type Sizing } from './sizing.js';
import { createStopScanner } from './stop-scanner.js';
import { selectLlama, type Backend, type LlamaChoice } from './gpu.js';

export interface EngineOptions {
  readonly modelPath: string;
  /** Per sequence; undefined: chosen from the model and memory ({@link chooseSizing}). */
  readonly contextSize?: number | undefined;
  readonly threads: number;
  readonly gpu: 'off' | 'auto';
  /** Sequences; undefined: chosen from the model and memory ({@link chooseSizing}). */
  readonly parallel?: number | undefined;
  /** Memory the runtime may use in all, bytes (caps the chosen defaults); undefined: no cap. */
  readonly memoryBytes?: number | undefined;
  /** Requests allowed to wait for a free sequence; more are refused with 503. */
  readonly queueLimit?: number;
  /** Where llama.cpp's own warnings go (stderr in the runtime); never request content. */
  readonly log?: (line: string) => void;
}

export interface GenerationHooks {
  readonly signal: AbortSignal;
  /** Called with each piece of generated text (streaming). */
  readonly onText?: (text: string) => void;
  /** Called with each tool-call delta (streaming): first id and name, then argument text. */
  readonly onToolCall?: (delta: ToolCallDelta) => void;
}

export interface GenerationResult {
  readonly text: string;
  readonly finishReason: FinishReason;
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** The calls the model made (`finishReason` `tool_calls`); empty otherwise. */
  readonly toolCalls: readonly ToolCall[];
}

/** What a chat request asks beyond sampling: the output's format and the tools it may call. */
export interface ChatOptions {
  readonly format: ResponseFormat;
  readonly tools: readonly ToolDefinition[];
  readonly toolChoice: ToolChoice;
  readonly parallelToolCalls: boolean;
}

export interface Engine {
  /** Tokens per sequence (what one request's prompt and answer must fit in). */
  readonly contextSize: number;
  /** Sequences generating at once. */
  readonly parallel: number;
  /** Sequences generating right now, and the most that ever did at once (batching, for /health). */
  sequences(): { readonly active: number; readonly peak: number };
  /** What the model runs on and how many of its layers are on the GPU; `fallback` says why a GPU was not used. */
  readonly backend: { readonly gpu: Backend; readonly gpuLayers: number; readonly fallback?: string };
  chat(
    messages: readonly ChatMessage[],
    sampling: Sampling,
    options: ChatOptions,
    hooks: GenerationHooks,
  ): Promise<GenerationResult>;
  complete(prompt: string, sampling: Sampling, hooks: GenerationHooks): Promise<GenerationResult>;
  /** One embedding per input, from an embedding context on the loaded model (created on first use). */
  embed(inputs: readonly (string | readonly number[])[], signal: AbortSignal): Promise<EmbeddingResult>;
  /** Requests generating or waiting right now. */
  readonly busy: number;
  dispose(): Promise<void>;
}

/** Thrown (as the abort reason) when a client disconnects; the server swallows it. */
export class ClientGoneError extends Error {
  constructor() {
    super('client disconnected');
    this.name = 'ClientGoneError';
  }
}

/** Requests allowed to wait for a free sequence unless {@link EngineOptions.queueLimit} says otherwise. */
const DEFAULT_QUEUE_LIMIT = 64;

/** A loaded model, its context, and the sizing they were created with. */
interface LoadedModel {
  readonly model: LlamaModel;
  readonly context: LlamaContext;
  readonly sizing: Sizing;
}

/**
 * Loads the model, chooses the sequences and context size ({@link chooseSizing}) and creates the context.
 * Throws whatever node-llama-cpp throws (main.ts maps it to `ERR_RUNTIME_MODEL_LOAD`); a model that makes
 * llama.cpp abort kills the process instead (exit 134), which the parent sees as a crash.
 */
export async function loadEngine(options: EngineOptions): Promise<Engine> {
  const log = options.log ?? ((): void => undefined);
  const choice = await selectLlama(
    options.gpu,
    {
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => log(`llama.cpp ${level}: ${message.trimEnd()}`),
    },
    undefined,
    log,
  );
  const loaded = await loadModel(choice.llama, options);
  const { sizing } = loaded;
  log(
    `context: ${sizing.parallel} sequence(s) of ${loaded.context.contextSize} tokens (parallel ${sizing.reason.parallel}, context ${sizing.reason.contextSize})`,
  );
  return new LlamaEngine(choice, loaded, options);
}

/** Loads the model and creates its context, sized; on failure disposes what was created (and `llama`). */
async function loadModel(llama: Llama, options: EngineOptions): Promise<LoadedModel> {
  let model: LlamaModel | undefined;
  let context: LlamaContext | undefined;
  try {
    model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: options.gpu === 'off' ? 0 : 'auto' });
    const sizing = sizingOf(model, options);
    context = await model.createContext({
      contextSize: sizing.contextSize,
      sequences: sizing.parallel,
      threads: options.threads,
      batchSize: batchSizeFor(sizing.contextSize, sizing.parallel),
    });
    return { model, context, sizing };
  } catch (error) {
    await context?.dispose().catch(() => undefined);
    await model?.dispose().catch(() => undefined);
    await llama.dispose().catch(() => undefined);
    throw error;
  }
}

/** The sequences and context size for `model`: as asked, or chosen from the model and memory. */
function sizingOf(model: LlamaModel, options: EngineOptions): Sizing {
  const insights = model.fileInsights;
  const gpuLayers = model.gpuLayers;
  return chooseSizing({
    parallel: options.parallel,
    contextSize: options.contextSize,
    trainContextSize: model.trainContextSize,
    modelBytes: insights.modelSize,
    memoryBytes: options.memoryBytes,
    // node-llama-cpp's own estimate of the KV caches and compute buffers (CPU side; GPU layers aside).
    // (The V1 estimate: a formula; V2 simulates a context, which is slow.)
    contextBytes: (contextSize, sequences) =>
      insights.estimateContextResourceRequirements({
        contextSize,
        sequences,
        modelGpuLayers: gpuLayers,
        batchSize: batchSizeFor(contextSize, sequences),
      }).cpuRam,
  });
}

/** The batch: up to 512 tokens, never more than the whole context (node-llama-cpp's own default). */
function batchSizeFor(contextSize: number, sequences: number): number {
  return Math.min(512, contextSize * sequences);
}

/** One slot per sequence of `context`, every chat sharing the first one's chat wrapper. */
function createSlots(context: LlamaContext, parallel: number): Slot[] {
  const slots: Slot[] = [];
  let chatWrapper: LlamaChat['chatWrapper'] | undefined;
  for (let i = 0; i < parallel; i++) {
    const sequence = context.getSequence();
    const chat: LlamaChat = new LlamaChat({
      contextSequence: sequence,
      ...(chatWrapper === undefined ? {} : { chatWrapper }),
    });
    chatWrapper ??= chat.chatWrapper;
    slots.push({ sequence, chat, completion: new LlamaCompletion({ contextSequence: sequence }) });
  }
  return slots;
}

/** The vocabulary size, which bounds token ids: an id past it would index outside llama.cpp's arrays. */
function vocabularyOf(model: LlamaModel): number {
  return (
    (model.fileInfo.metadata as { tokenizer?: { ggml?: { tokens?: readonly unknown[] } } }).tokenizer?.ggml?.tokens
      ?.length ?? 0
  );
}

/** The engine over a loaded model: admission through a {@link SequencePool}, generation on its slots. */
class LlamaEngine implements Engine {
  readonly contextSize: number;
  readonly parallel: number;
  readonly backend: Engine['backend'];
  readonly #llama: Llama;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #wrapper: LlamaChat['chatWrapper'];
  readonly #pool: SequencePool;
  readonly #limits: ModelLimits;
  readonly #grammars: GrammarCache;
  readonly #embedder: Embedder;

  constructor(choice: LlamaChoice, loaded: LoadedModel, options: EngineOptions) {
    const { model, context, sizing } = loaded;
    const slots = createSlots(context, sizing.parallel);
    this.contextSize = context.contextSize;
    this.parallel = sizing.parallel;
    this.backend = {
      gpu: choice.backend,
      gpuLayers: model.gpuLayers,
      ...(choice.fallback === undefined ? {} : { fallback: choice.fallback }),
    };
    this.#llama = choice.llama;
    this.#model = model;
    this.#context = context;
    this.#wrapper = slots[0]!.chat.chatWrapper;
    this.#pool = new SequencePool(slots, options.queueLimit ?? DEFAULT_QUEUE_LIMIT);
    const vocabulary = vocabularyOf(model);
    this.#limits = { contextSize: context.contextSize, tokenizer: model.tokenizer, vocabulary };
    this.#grammars = new GrammarCache(choice.llama);
    this.#embedder = new Embedder(model, context, options.threads, vocabulary);
  }

  get busy(): number {
    return this.#pool.busy;
  }

  sequences(): { readonly active: number; readonly peak: number } {
    return this.#pool.sequences();
  }

  async chat(
    messages: readonly ChatMessage[],
    sampling: Sampling,
    options: ChatOptions,
    hooks: GenerationHooks,
  ): Promise<GenerationResult> {
    const plan = await planChat(messages, options, this.#grammars);
    const promptTokens = this.#wrapper
      .generateContextState({
        chatHistory: plan.history,
        ...(plan.functions === undefined ? {} : { availableFunctions: plan.functions }),
      })
      .contextText.tokenize(this.#model.tokenizer).length;
    this.#checkPromptFits(promptTokens);
    const sampled = generationOptions(sampling, promptTokens, this.#limits);
    const run = { plan, promptTokens, sampled, hooks, parallelToolCalls: options.parallelToolCalls };
    return this.#pool.run(hooks.signal, (slot) => generateChat(slot.chat, run));
  }

  complete(prompt: string, sampling: Sampling, hooks: GenerationHooks): Promise<GenerationResult> {
    const promptTokens = this.#model.tokenize(prompt).length + (this.#model.tokens.shouldPrependBosToken ? 1 : 0);
    this.#checkPromptFits(promptTokens);
    // Stop sequences are matched on the streamed text (stop-scanner.ts), not by LlamaCompletion.
    const { customStopTriggers: _stops, ...sampled } = generationOptions(sampling, promptTokens, this.#limits);
    const job: CompletionJob = { prompt, promptTokens, sampled, stop: sampling.stop, hooks };
    return this.#pool.run(hooks.signal, (slot) => generateCompletion(slot.completion, job));
  }

  embed(inputs: readonly (string | readonly number[])[], signal: AbortSignal): Promise<EmbeddingResult> {
    if (this.#pool.closed) return Promise.reject(shuttingDown());
    return this.#embedder.embed(inputs, signal);
  }

  async dispose(): Promise<void> {
    this.#pool.close();
    await this.#embedder.dispose();
    await this.#context.dispose().catch(() => undefined);
    await this.#model.dispose().catch(() => undefined);
    await this.#llama.dispose().catch(() => undefined);
  }

  #checkPromptFits(promptTokens: number): void {
    if (promptTokens >= this.contextSize)
      throw contextLengthExceeded('the prompt', promptTokens, this.contextSize, 'messages');
  }
}

/** One completion request, ready to run on a sequence. */
interface CompletionJob {
  readonly prompt: string;
  readonly promptTokens: number;
  readonly sampled: Omit<GenerationOptions, 'customStopTriggers'>;
  readonly stop: readonly string[];
  readonly hooks: GenerationHooks;
}

/** Generates a completion, ending it at the first stop sequence in the streamed text. */
async function generateCompletion(completion: LlamaCompletion, job: CompletionJob): Promise<GenerationResult> {
  const { promptTokens, hooks } = job;
  const scanner = createStopScanner(job.stop);
  const stopped = new AbortController();
  let completionTokens = 0;
  const result = await completion.generateCompletionWithMeta(job.prompt, {
    signal: AbortSignal.any([hooks.signal, stopped.signal]),
    stopOnAbortSignal: true,
    ...job.sampled,
    // Stop when the context is full instead of silently dropping the start of the prompt.
    disableContextShift: true,
    onToken: (tokens: Token[]) => {
      completionTokens += tokens.length;
    },
    onTextChunk: (text: string) => {
      const scan = scanner.push(text);
      if (scan.emit.length > 0) hooks.onText?.(scan.emit);
      if (scan.stopped && !stopped.signal.aborted) stopped.abort();
    },
  });
  hooks.signal.throwIfAborted();
  if (stopped.signal.aborted)
    return { text: scanner.text, finishReason: 'stop', promptTokens, completionTokens, toolCalls: [] };
  const rest = scanner.flush();
  if (rest.length > 0) hooks.onText?.(rest);
  return {
    text: job.stop.length === 0 ? result.response : scanner.text,
    finishReason: finishOf(result.metadata.stopReason),
    promptTokens,
    completionTokens,
    toolCalls: [],
  };
}
