/**
 * The inference engine of the bundled runtime: node-llama-cpp (pinned 3.21.1) with a pool of context
 * sequences. A sequence generates one request at a time; with `parallel` sequences that many requests
 * run together (llama.cpp batches them) and the rest wait in a bounded FIFO queue. A request whose
 * client goes away is cancelled through its AbortSignal, also while it waits.
 *
 * Nothing here logs a prompt or a completion: they are the user's private data.
 */
import { randomBytes } from 'node:crypto';
import {
  LlamaChat,
  LlamaCompletion,
  LlamaLogLevel,
  TokenBias,
  type ChatHistoryItem,
  type ChatModelFunctionCall,
  type ChatModelFunctions,
  type ChatModelResponse,
  type GbnfJsonSchema,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaEmbeddingContext,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import {
  ApiError,
  type ChatMessage,
  type FinishReason,
  type ResponseFormat,
  type Sampling,
  type ToolCall,
  type ToolCallDelta,
  type ToolChoice,
  type ToolDefinition,
} from './openai.js';
import { chooseSizing, type Sizing } from './sizing.js';
import { createStopScanner } from './stop-scanner.js';
import { selectLlama, type Backend } from './gpu.js';

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

export const PLAIN_CHAT: ChatOptions = Object.freeze({
  format: { type: 'text' as const },
  tools: [],
  toolChoice: 'none' as const,
  parallelToolCalls: true,
});

export interface EmbeddingResult {
  readonly vectors: readonly (readonly number[])[];
  readonly promptTokens: number;
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

function parseJsonOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * The OpenAI messages as node-llama-cpp chat history. An assistant message's tool calls become function
 * calls of its model item and the `tool` messages that follow fill their results; the answer after them
 * continues the same model item, as node-llama-cpp renders a call and its result inside one response.
 */
export function toHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  const calls = new Map<string, ChatModelFunctionCall>();
  let previous: ChatMessage['role'] | undefined;
  for (const message of messages) {
    if (message.role === 'system') history.push({ type: 'system', text: message.content });
    else if (message.role === 'user') history.push({ type: 'user', text: message.content });
    else if (message.role === 'tool') {
      const call = calls.get(message.toolCallId);
      if (call !== undefined) call.result = parseJsonOr(message.content);
    } else {
      const last = history.at(-1);
      const item: ChatModelResponse =
        previous === 'tool' && last?.type === 'model' ? last : { type: 'model', response: [] };
      if (item !== last) history.push(item);
      if (message.content.length > 0) item.response.push(message.content);
      for (const call of (message.role === 'assistant' ? message.toolCalls : undefined) ?? []) {
        const functionCall: ChatModelFunctionCall = {
          type: 'functionCall',
          name: call.name,
          params: parseJsonOr(call.arguments),
          result: null,
        };
        calls.set(call.id, functionCall);
        item.response.push(functionCall);
      }
    }
    previous = message.role;
  }
  // The model completes the last model item: add an empty one unless the caller prefilled it or the
  // last messages are tool results (the model answers after them, in the same response).
  if (previous !== 'assistant' && previous !== 'tool') history.push({ type: 'model', response: [] });
  return history;
}

function toolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

/** The instruction added when a call is forced: the grammar then makes the answer one such object. */
function forcedToolPrompt(tools: readonly ToolDefinition[]): string {
  const list = tools.map((tool) =>
    JSON.stringify({
      name: tool.name,
      description: tool.description ?? '',
      parameters: tool.parameters ?? { type: 'object', properties: {} },
    }),
  );
  return `Call exactly one of these functions. Answer with only a JSON object {"name": <function name>, "arguments": <parameters object>}.\n${list.join('\n')}`;
}

/** The schema that forces one call of one of `tools`: {"name": const, "arguments": parameters}. */
function forcedToolSchema(tools: readonly ToolDefinition[]): object {
  const alternative = (tool: ToolDefinition): object => ({
    type: 'object',
    properties: { name: { const: tool.name }, arguments: tool.parameters ?? { type: 'object', properties: {} } },
    required: ['name', 'arguments'],
  });
  return tools.length === 1 ? alternative(tools[0]!) : { oneOf: tools.map(alternative) };
}

function finishOf(stopReason: string): FinishReason {
  if (stopReason === 'functionCalls') return 'tool_calls';
  return stopReason === 'maxTokens' ? 'length' : 'stop';
}

/** The forced-call answer `{"name", "arguments"}` as a call, or null when it was cut short. */
function parseForcedCall(text: string): { name: string; arguments: string } | null {
  try {
    const value = JSON.parse(text) as { name?: unknown; arguments?: unknown };
    if (typeof value.name !== 'string' || typeof value.arguments !== 'object' || value.arguments === null) return null;
    return { name: value.name, arguments: JSON.stringify(value.arguments) };
  } catch {
    return null;
  }
}

/** The batch: up to 512 tokens, never more than the whole context (node-llama-cpp's own default). */
function batchSizeFor(contextSize: number, sequences: number): number {
  return Math.min(512, contextSize * sequences);
}

/**
 * Loads the model, chooses the sequences and context size ({@link chooseSizing}) and creates the context. Throws whatever node-llama-cpp throws (main.ts maps it to
 * `ERR_RUNTIME_MODEL_LOAD`); a model that makes llama.cpp abort kills the process instead (exit 134),
 * which the parent sees as a crash.
 */
export async function loadEngine(options: EngineOptions): Promise<Engine> {
  const log = options.log ?? ((): void => undefined);
  const selected = await selectLlama(
    options.gpu,
    {
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => log(`llama.cpp ${level}: ${message.trimEnd()}`),
    },
    undefined,
    log,
  );
  const llama: Llama = selected.llama;
  let model: LlamaModel | undefined;
  let context: LlamaContext | undefined;
  let sizing: Sizing;
  try {
    model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: options.gpu === 'off' ? 0 : 'auto' });
    const insights = model.fileInsights;
    const gpuLayers = model.gpuLayers;
    sizing = chooseSizing({
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
    context = await model.createContext({
      contextSize: sizing.contextSize,
      sequences: sizing.parallel,
      threads: options.threads,
      batchSize: batchSizeFor(sizing.contextSize, sizing.parallel),
    });
  } catch (error) {
    await context?.dispose().catch(() => undefined);
    await model?.dispose().catch(() => undefined);
    await llama.dispose().catch(() => undefined);
    throw error;
  }
  const loadedModel = model;
  const loadedContext = context;
  const parallel = sizing.parallel;
  log(
    `context: ${parallel} sequence(s) of ${loadedContext.contextSize} tokens (parallel ${sizing.reason.parallel}, context ${sizing.reason.contextSize})`,
  );

  const free: Slot[] = [];
  let chatWrapper: LlamaChat['chatWrapper'] | undefined;
  for (let i = 0; i < parallel; i++) {
    const sequence = loadedContext.getSequence();
    const chat: LlamaChat = new LlamaChat({
      contextSequence: sequence,
      ...(chatWrapper === undefined ? {} : { chatWrapper }),
    });
    chatWrapper ??= chat.chatWrapper;
    free.push({ sequence, chat, completion: new LlamaCompletion({ contextSequence: sequence }) });
  }
  const wrapper = chatWrapper!;
  const waiting: Waiter[] = [];
  const queueLimit = options.queueLimit ?? 64;
  let active = 0;
  let generating = 0;
  let peak = 0;
  let disposed = false;

  function acquire(signal: AbortSignal): Promise<Slot> {
    if (disposed)
      return Promise.reject(new ApiError(503, 'server_error', 'shutting_down', 'the runtime is shutting down'));
    signal.throwIfAborted();
    const slot = free.pop();
    if (slot !== undefined) return Promise.resolve(slot);
    if (waiting.length >= queueLimit) {
      return Promise.reject(
        new ApiError(503, 'server_error', 'server_busy', 'too many requests are waiting; try again later'),
      );
    }
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (s) => {
          signal.removeEventListener('abort', onAbort);
          resolve(s);
        },
        reject: (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
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
      generating++;
      peak = Math.max(peak, generating);
      try {
        return await work(slot);
      } finally {
        generating--;
        release(slot);
      }
    } finally {
      active--;
    }
  }

  function checkPromptFits(promptTokens: number): void {
    if (promptTokens >= loadedContext.contextSize) {
      throw new ApiError(
        400,
        'invalid_request_error',
        'context_length_exceeded',
        `the prompt has ${promptTokens} tokens; the context holds ${loadedContext.contextSize}`,
        'messages',
      );
    }
  }

  // The vocabulary size bounds `logit_bias` token ids: an id past it would index outside llama.cpp's arrays.
  const vocabulary =
    (loadedModel.fileInfo.metadata as { tokenizer?: { ggml?: { tokens?: readonly unknown[] } } }).tokenizer?.ggml
      ?.tokens?.length ?? 0;

  function tokenBiasOf(sampling: Sampling): TokenBias | undefined {
    if (sampling.logitBias.size === 0) return undefined;
    const bias = new TokenBias(loadedModel.tokenizer);
    for (const [token, value] of sampling.logitBias) {
      if (token >= vocabulary)
        throw new ApiError(
          400,
          'invalid_request_error',
          'invalid_value',
          `logit_bias token ids must be below the vocabulary size ${vocabulary}`,
          'logit_bias',
        );
      // OpenAI: -100 bans the token; other values are added to its logit (+100 all but forces it).
      bias.set(token as Token, value <= -100 ? 'never' : { logit: value });
    }
    return bias;
  }

  /** Sampling options shared by chat and completion; never past the end of the context. */
  const generationOptions = (sampling: Sampling, promptTokens: number) => {
    const tokenBias = tokenBiasOf(sampling);
    const penalties = sampling.frequencyPenalty !== 0 || sampling.presencePenalty !== 0;
    return {
      maxTokens: Math.min(sampling.maxTokens ?? Number.MAX_SAFE_INTEGER, loadedContext.contextSize - promptTokens),
      temperature: sampling.temperature,
      ...(sampling.topP === undefined ? {} : { topP: sampling.topP }),
      ...(sampling.topK === undefined ? {} : { topK: sampling.topK }),
      ...(sampling.minP === undefined ? {} : { minP: sampling.minP }),
      ...(sampling.seed === undefined ? {} : { seed: sampling.seed }),
      ...(sampling.stop.length === 0 ? {} : { customStopTriggers: sampling.stop }),
      // OpenAI's penalties are additive over the generated text; llama.cpp's multiplicative one stays off.
      ...(penalties
        ? {
            repeatPenalty: {
              penalty: 1,
              frequencyPenalty: sampling.frequencyPenalty,
              presencePenalty: sampling.presencePenalty,
              penalizeNewLine: true,
            },
          }
        : {}),
      ...(tokenBias === undefined ? {} : { tokenBias }),
    };
  };

  // Grammars are compiled once per schema (a client sends the same schema on every request).
  const grammars = new Map<string, Promise<LlamaGrammar>>();
  function grammarFor(schema: object | 'json', param: string): Promise<LlamaGrammar> {
    const key = schema === 'json' ? 'json' : JSON.stringify(schema);
    let grammar = grammars.get(key);
    if (grammar === undefined) {
      grammar = (
        schema === 'json' ? llama.getGrammarFor('json') : llama.createGrammarForJsonSchema(schema as never)
      ).catch((): never => {
        grammars.delete(key);
        throw new ApiError(
          400,
          'invalid_request_error',
          'unsupported_schema',
          'the schema cannot be compiled to a grammar',
          param,
        );
      });
      if (grammars.size >= 32) grammars.delete(grammars.keys().next().value!);
      grammars.set(key, grammar);
    }
    return grammar;
  }

  let embedding: Promise<LlamaEmbeddingContext> | undefined;
  let embeddingQueue: Promise<unknown> = Promise.resolve();

  return {
    contextSize: loadedContext.contextSize,
    parallel,
    sequences: () => ({ active: generating, peak }),
    backend: {
      gpu: selected.backend,
      gpuLayers: loadedModel.gpuLayers,
      ...(selected.fallback === undefined ? {} : { fallback: selected.fallback }),
    },
    get busy() {
      return active;
    },

    async chat(messages, sampling, options, hooks) {
      const history = toHistory(messages);
      const forced = options.toolChoice === 'required' || typeof options.toolChoice === 'object';
      const forcedTools =
        typeof options.toolChoice === 'object'
          ? options.tools.filter((tool) => tool.name === (options.toolChoice as { name: string }).name)
          : options.tools;
      if (forced) {
        // A forced call is a grammar-constrained JSON answer: deterministic whatever the model would choose.
        const first = history[0];
        const prompt = forcedToolPrompt(forcedTools);
        if (first?.type === 'system')
          history[0] = { type: 'system', text: `${typeof first.text === 'string' ? first.text : ''}\n\n${prompt}` };
        else history.unshift({ type: 'system', text: prompt });
      }
      const functions: ChatModelFunctions | undefined =
        options.toolChoice === 'auto'
          ? Object.fromEntries(
              options.tools.map((tool) => [
                tool.name,
                {
                  ...(tool.description === undefined ? {} : { description: tool.description }),
                  ...(tool.parameters === undefined ? {} : { params: tool.parameters as GbnfJsonSchema }),
                },
              ]),
            )
          : undefined;
      const grammar = forced
        ? await grammarFor(forcedToolSchema(forcedTools), 'tools')
        : options.format.type === 'json_object'
          ? await grammarFor('json', 'response_format')
          : options.format.type === 'json_schema'
            ? await grammarFor(options.format.schema, 'response_format')
            : undefined;
      const promptTokens = wrapper
        .generateContextState({
          chatHistory: history,
          ...(functions === undefined ? {} : { availableFunctions: functions }),
        })
        .contextText.tokenize(loadedModel.tokenizer).length;
      checkPromptFits(promptTokens);
      const sampled = generationOptions(sampling, promptTokens);
      return run(hooks.signal, async (slot) => {
        let completionTokens = 0;
        const common = {
          signal: hooks.signal,
          // Never past the end of the context: a context shift would silently drop earlier messages.
          ...sampled,
          onToken: (tokens: Token[]) => {
            completionTokens += tokens.length;
          },
        };
        if (forced) {
          const result = await slot.chat.generateResponse(history, { ...common, grammar: grammar! });
          const call = parseForcedCall(result.response);
          const finishReason = result.metadata.stopReason === 'maxTokens' ? 'length' : 'tool_calls';
          if (call === null)
            return { text: result.response, finishReason: 'length', promptTokens, completionTokens, toolCalls: [] };
          const toolCall = { id: toolCallId(), ...call };
          hooks.onToolCall?.({
            index: 0,
            id: toolCall.id,
            type: 'function',
            function: { name: toolCall.name, arguments: '' },
          });
          hooks.onToolCall?.({ index: 0, function: { arguments: toolCall.arguments } });
          return { text: '', finishReason, promptTokens, completionTokens, toolCalls: [toolCall] };
        }
        if (functions !== undefined) {
          const ids: string[] = [];
          const result = await slot.chat.generateResponse(history, {
            ...common,
            functions,
            maxParallelFunctionCalls: options.parallelToolCalls ? 8 : 1,
            ...(hooks.onText === undefined ? {} : { onTextChunk: hooks.onText }),
            onFunctionCallParamsChunk: (chunk) => {
              if (hooks.onToolCall === undefined) return;
              if (ids[chunk.callIndex] === undefined) {
                ids[chunk.callIndex] = toolCallId();
                hooks.onToolCall({
                  index: chunk.callIndex,
                  id: ids[chunk.callIndex]!,
                  type: 'function',
                  function: { name: chunk.functionName, arguments: '' },
                });
              }
              if (chunk.paramsChunk.length > 0)
                hooks.onToolCall({ index: chunk.callIndex, function: { arguments: chunk.paramsChunk } });
            },
          });
          const toolCalls = (result.functionCalls ?? []).map((call, i): ToolCall => ({
            id: ids[i] ?? toolCallId(),
            name: call.functionName,
            arguments: JSON.stringify(call.params ?? {}),
          }));
          // A call streamed without parameter chunks (no parameters) still gets its opening delta.
          toolCalls.forEach((call, i) => {
            if (ids[i] === undefined)
              hooks.onToolCall?.({
                index: i,
                id: call.id,
                type: 'function',
                function: { name: call.name, arguments: call.arguments },
              });
          });
          return {
            text: result.response,
            finishReason: toolCalls.length > 0 ? 'tool_calls' : finishOf(result.metadata.stopReason),
            promptTokens,
            completionTokens,
            toolCalls,
          };
        }
        const result = await slot.chat.generateResponse(history, {
          ...common,
          ...(grammar === undefined ? {} : { grammar }),
          ...(hooks.onText === undefined ? {} : { onTextChunk: hooks.onText }),
        });
        const finishReason = finishOf(result.metadata.stopReason);
        return {
          text: result.response,
          finishReason: finishReason === 'tool_calls' ? 'stop' : finishReason,
          promptTokens,
          completionTokens,
          toolCalls: [],
        };
      });
    },

    complete(prompt, sampling, hooks) {
      const promptTokens = loadedModel.tokenize(prompt).length + (loadedModel.tokens.shouldPrependBosToken ? 1 : 0);
      checkPromptFits(promptTokens);
      // Stop sequences are matched on the streamed text (stop-scanner.ts), not by LlamaCompletion.
      const { customStopTriggers: _stops, ...sampled } = generationOptions(sampling, promptTokens);
      const scanner = createStopScanner(sampling.stop);
      const stopped = new AbortController();
      return run(hooks.signal, async (slot) => {
        let completionTokens = 0;
        const result = await slot.completion.generateCompletionWithMeta(prompt, {
          signal: AbortSignal.any([hooks.signal, stopped.signal]),
          stopOnAbortSignal: true,
          ...sampled,
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
          text: sampling.stop.length === 0 ? result.response : scanner.text,
          finishReason: finishOf(result.metadata.stopReason),
          promptTokens,
          completionTokens,
          toolCalls: [],
        };
      });
    },

    embed(inputs, signal) {
      if (disposed)
        return Promise.reject(new ApiError(503, 'server_error', 'shutting_down', 'the runtime is shutting down'));
      for (const input of inputs) {
        if (typeof input !== 'string' && input.some((token) => token >= vocabulary)) {
          return Promise.reject(
            new ApiError(
              400,
              'invalid_request_error',
              'invalid_value',
              `token ids must be below the vocabulary size ${vocabulary}`,
              'input',
            ),
          );
        }
      }
      // One embedding context on the same model weights (no second copy of the model), created on first
      // use with the generation context's size; its one sequence serves one request at a time.
      if (embedding === undefined) {
        const created = loadedModel.createEmbeddingContext({
          contextSize: loadedContext.contextSize,
          threads: options.threads,
          batchSize: loadedContext.contextSize,
        });
        // A failed creation (memory) is retried by the next request instead of failing every one after it.
        created.catch(() => {
          if (embedding === created) embedding = undefined;
        });
        embedding = created;
      }
      const work = embeddingQueue.then(async () => {
        signal.throwIfAborted();
        const context = await embedding!;
        const vectors: number[][] = [];
        let promptTokens = 0;
        for (const input of inputs) {
          signal.throwIfAborted();
          const value = typeof input === 'string' ? input : (input as Token[]);
          const length = context.calculateInputLength(value);
          if (length > loadedContext.contextSize) {
            throw new ApiError(
              400,
              'invalid_request_error',
              'context_length_exceeded',
              `an input has ${length} tokens; the context holds ${loadedContext.contextSize}`,
              'input',
            );
          }
          promptTokens += length;
          vectors.push([...(await context.getEmbeddingFor(value)).vector]);
        }
        return { vectors, promptTokens };
      });
      embeddingQueue = work.catch(() => undefined);
      return work;
    },

    async dispose() {
      disposed = true;
      for (const waiter of waiting.splice(0))
        waiter.reject(new ApiError(503, 'server_error', 'shutting_down', 'the runtime is shutting down'));
      if (embedding !== undefined) await embedding.then((context) => context.dispose()).catch(() => undefined);
      await loadedContext.dispose().catch(() => undefined);
      await loadedModel.dispose().catch(() => undefined);
      await llama.dispose().catch(() => undefined);
    },
  };
}
