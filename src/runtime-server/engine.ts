/**
 * The inference engine of the bundled runtime: node-llama-cpp (pinned 3.21.1) with a pool of context
 * sequences. A sequence generates one request at a time; with `parallel` sequences that many requests
 * run together (llama.cpp batches them) and the rest wait in a bounded FIFO queue. A request whose
 * client goes away is cancelled through its AbortSignal, also while it waits.
 *
 * Nothing here logs a prompt or a completion: they are the user's private data.
 */
import {
  getLlama,
  LlamaChat,
  LlamaCompletion,
  LlamaLogLevel,
  type ChatHistoryItem,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import { ApiError, type ChatMessage, type FinishReason, type Sampling } from './openai.js';

export interface EngineOptions {
  readonly modelPath: string;
  readonly contextSize: number;
  readonly threads: number;
  readonly gpu: 'off' | 'auto';
  readonly parallel: number;
  /** Requests allowed to wait for a free sequence; more are refused with 503. */
  readonly queueLimit?: number;
  /** Where llama.cpp's own warnings go (stderr in the runtime); never request content. */
  readonly log?: (line: string) => void;
}

export interface GenerationHooks {
  readonly signal: AbortSignal;
  /** Called with each piece of generated text (streaming). */
  readonly onText?: (text: string) => void;
}

export interface GenerationResult {
  readonly text: string;
  readonly finishReason: FinishReason;
  readonly promptTokens: number;
  readonly completionTokens: number;
}

export interface Engine {
  readonly contextSize: number;
  chat(messages: readonly ChatMessage[], sampling: Sampling, hooks: GenerationHooks): Promise<GenerationResult>;
  complete(prompt: string, sampling: Sampling, hooks: GenerationHooks): Promise<GenerationResult>;
  /** Requests generating or waiting right now. */
  readonly busy: number;
  dispose(): Promise<void>;
}

interface Slot {
  readonly sequence: LlamaContextSequence;
  readonly chat: LlamaChat;
  readonly completion: LlamaCompletion;
}

interface Waiter {
  resolve(slot: Slot): void;
  reject(error: unknown): void;
}

/** Thrown (as the abort reason) when a client disconnects; the server swallows it. */
export class ClientGoneError extends Error {
  constructor() {
    super('client disconnected');
    this.name = 'ClientGoneError';
  }
}

function toHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((message): ChatHistoryItem => {
    if (message.role === 'system') return { type: 'system', text: message.content };
    if (message.role === 'user') return { type: 'user', text: message.content };
    return { type: 'model', response: [message.content] };
  });
  // The model completes the last model item: add an empty one unless the caller prefilled it.
  if (messages.at(-1)?.role !== 'assistant') history.push({ type: 'model', response: [] });
  return history;
}

function finishOf(stopReason: string): FinishReason {
  return stopReason === 'maxTokens' ? 'length' : 'stop';
}

/**
 * Loads the model and creates the context. Throws whatever node-llama-cpp throws (main.ts maps it to
 * `ERR_RUNTIME_MODEL_LOAD`); a model that makes llama.cpp abort kills the process instead (exit 134),
 * which the parent sees as a crash.
 */
export async function loadEngine(options: EngineOptions): Promise<Engine> {
  const log = options.log ?? ((): void => undefined);
  const llama: Llama = await getLlama({
    gpu: options.gpu === 'off' ? false : 'auto',
    build: 'never',
    skipDownload: true,
    progressLogs: false,
    maxThreads: options.threads,
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => log(`llama.cpp ${level}: ${message.trimEnd()}`),
  });
  let model: LlamaModel | undefined;
  let context: LlamaContext | undefined;
  try {
    model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: options.gpu === 'off' ? 0 : 'auto' });
    context = await model.createContext({
      contextSize: options.contextSize,
      sequences: options.parallel,
      threads: options.threads,
      batchSize: Math.min(512, options.contextSize),
    });
  } catch (error) {
    await context?.dispose().catch(() => undefined);
    await model?.dispose().catch(() => undefined);
    await llama.dispose().catch(() => undefined);
    throw error;
  }
  const loadedModel = model;
  const loadedContext = context;

  const free: Slot[] = [];
  let chatWrapper: LlamaChat['chatWrapper'] | undefined;
  for (let i = 0; i < options.parallel; i++) {
    const sequence = loadedContext.getSequence();
    const chat: LlamaChat = new LlamaChat({ contextSequence: sequence, ...(chatWrapper === undefined ? {} : { chatWrapper }) });
    chatWrapper ??= chat.chatWrapper;
    free.push({ sequence, chat, completion: new LlamaCompletion({ contextSequence: sequence }) });
  }
  const wrapper = chatWrapper!;
  const waiting: Waiter[] = [];
  const queueLimit = options.queueLimit ?? 64;
  let active = 0;
  let disposed = false;

  function acquire(signal: AbortSignal): Promise<Slot> {
    if (disposed) return Promise.reject(new ApiError(503, 'server_error', 'shutting_down', 'the runtime is shutting down'));
    signal.throwIfAborted();
    const slot = free.pop();
    if (slot !== undefined) return Promise.resolve(slot);
    if (waiting.length >= queueLimit) {
      return Promise.reject(new ApiError(503, 'server_error', 'server_busy', 'too many requests are waiting; try again later'));
    }
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (s) => { signal.removeEventListener('abort', onAbort); resolve(s); },
        reject: (e) => { signal.removeEventListener('abort', onAbort); reject(e); },
      };
      const onAbort = (): void => {
        const index = waiting.indexOf(waiter);
        if (index >= 0) waiting.splice(index, 1);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      waiting.push(waiter);
    });
  }

  function release(slot: Slot): void {
    const next = waiting.shift();
    if (next !== undefined) next.resolve(slot);
    else free.push(slot);
  }

  async function run<T>(signal: AbortSignal, work: (slot: Slot) => Promise<T>): Promise<T> {
    active++;
    try {
      const slot = await acquire(signal);
      try {
        return await work(slot);
      } finally {
        release(slot);
      }
    } finally {
      active--;
    }
  }

  function checkPromptFits(promptTokens: number): void {
    if (promptTokens >= loadedContext.contextSize) {
      throw new ApiError(400, 'invalid_request_error', 'context_length_exceeded',
        `the prompt has ${promptTokens} tokens; the context holds ${loadedContext.contextSize}`, 'messages');
    }
  }

  /** Sampling options shared by chat and completion; never past the end of the context. */
  const generationOptions = (sampling: Parameters<Engine['chat']>[1], promptTokens: number) => ({
    maxTokens: Math.min(sampling.maxTokens ?? Number.MAX_SAFE_INTEGER, loadedContext.contextSize - promptTokens),
    temperature: sampling.temperature,
    ...(sampling.topP === undefined ? {} : { topP: sampling.topP }),
    ...(sampling.seed === undefined ? {} : { seed: sampling.seed }),
    ...(sampling.stop.length === 0 ? {} : { customStopTriggers: sampling.stop }),
  });

  return {
    contextSize: loadedContext.contextSize,
    get busy() {
      return active;
    },

    chat(messages, sampling, hooks) {
      const history = toHistory(messages);
      const promptTokens = wrapper.generateContextState({ chatHistory: history }).contextText.tokenize(loadedModel.tokenizer).length;
      checkPromptFits(promptTokens);
      return run(hooks.signal, async (slot) => {
        let completionTokens = 0;
        const result = await slot.chat.generateResponse(history, {
          signal: hooks.signal,
          // Never past the end of the context: a context shift would silently drop earlier messages.
          ...generationOptions(sampling, promptTokens),
          onToken: (tokens: Token[]) => { completionTokens += tokens.length; },
          ...(hooks.onText === undefined ? {} : { onTextChunk: hooks.onText }),
        });
        return { text: result.response, finishReason: finishOf(result.metadata.stopReason), promptTokens, completionTokens };
      });
    },

    complete(prompt, sampling, hooks) {
      const promptTokens = loadedModel.tokenize(prompt).length + (loadedModel.tokens.shouldPrependBosToken ? 1 : 0);
      checkPromptFits(promptTokens);
      return run(hooks.signal, async (slot) => {
        let completionTokens = 0;
        const result = await slot.completion.generateCompletionWithMeta(prompt, {
          signal: hooks.signal,
          ...generationOptions(sampling, promptTokens),
          // Stop when the context is full instead of silently dropping the start of the prompt.
          disableContextShift: true,
          onToken: (tokens: Token[]) => { completionTokens += tokens.length; },
          ...(hooks.onText === undefined ? {} : { onTextChunk: hooks.onText }),
        });
        return { text: result.response, finishReason: finishOf(result.metadata.stopReason), promptTokens, completionTokens };
      });
    },

    async dispose() {
      disposed = true;
      for (const waiter of waiting.splice(0)) waiter.reject(new ApiError(503, 'server_error', 'shutting_down', 'the runtime is shutting down'));
      await loadedContext.dispose().catch(() => undefined);
      await loadedModel.dispose().catch(() => undefined);
      await llama.dispose().catch(() => undefined);
    },
  };
}
