/**
 * The chat path of the engine: OpenAI messages and tools as node-llama-cpp history and functions, and
 * the three ways an answer is generated: a forced tool call (a grammar-constrained JSON object), free
 * tool calls the model may make, or text (optionally constrained by `response_format`).
 */
import { randomBytes } from 'node:crypto';
import type {
  ChatHistoryItem,
  ChatModelFunctionCall,
  ChatModelFunctions,
  ChatModelResponse,
  GbnfJsonSchema,
  LlamaChat,
  LlamaGrammar,
  Token,
} from 'node-llama-cpp';
import type { ChatOptions, GenerationHooks, GenerationResult } from './engine.js';
import type { GenerationOptions } from './generation-options.js';
import type { GrammarCache } from './grammars.js';
import type { ChatMessage, FinishReason, ToolCall, ToolDefinition } from './openai.js';

/** What a chat request generates from, prepared before it waits for a sequence. */
export interface ChatPlan {
  readonly history: ChatHistoryItem[];
  /** The request forces a call (`tool_choice` required or named): the answer is one JSON call object. */
  readonly forced: boolean;
  /** The functions the model may call (`tool_choice` auto); undefined otherwise. */
  readonly functions: ChatModelFunctions | undefined;
  readonly grammar: LlamaGrammar | undefined;
}

/** One chat generation on a sequence: the plan, its prompt size, the sampling and the streaming hooks. */
export interface ChatRun {
  readonly plan: ChatPlan;
  readonly promptTokens: number;
  readonly sampled: GenerationOptions;
  readonly hooks: GenerationHooks;
  readonly parallelToolCalls: boolean;
}

type CommonOptions = GenerationOptions & { readonly signal: AbortSignal; readonly onToken: (tokens: Token[]) => void };

/** Generated tokens, counted as they come. */
interface TokenCount {
  tokens: number;
}

/**
 * Prepares a chat request: its history, the forced-call instruction, the functions and the grammar.
 *
 * Rejects with ApiError 400 `unsupported_schema` when the tools' or `response_format`'s schema cannot be
 * compiled to a grammar.
 */
export async function planChat(
  messages: readonly ChatMessage[],
  options: ChatOptions,
  grammars: GrammarCache,
): Promise<ChatPlan> {
  const history = toHistory(messages);
  const forced = options.toolChoice === 'required' || typeof options.toolChoice === 'object';
  const choice = options.toolChoice;
  const forcedTools =
    typeof choice === 'object' ? options.tools.filter((tool) => tool.name === choice.name) : options.tools;
  // A forced call is a grammar-constrained JSON answer: deterministic whatever the model would choose.
  if (forced) addSystemPrompt(history, forcedToolPrompt(forcedTools));
  const functions = options.toolChoice === 'auto' ? functionsOf(options.tools) : undefined;
  const grammar = forced
    ? await grammars.grammarFor(forcedToolSchema(forcedTools), 'tools')
    : await formatGrammar(options, grammars);
  return { history, forced, functions, grammar };
}

/** Generates the answer of `run` on `chat` (a sequence's chat generator). */
export function generateChat(chat: LlamaChat, run: ChatRun): Promise<GenerationResult> {
  const count: TokenCount = { tokens: 0 };
  const common: CommonOptions = {
    signal: run.hooks.signal,
    // Never past the end of the context: a context shift would silently drop earlier messages.
    ...run.sampled,
    onToken: (tokens: Token[]) => {
      count.tokens += tokens.length;
    },
  };
  if (run.plan.forced) return generateForcedCall(chat, run, common, count);
  if (run.plan.functions !== undefined) return generateWithFunctions(chat, run, run.plan.functions, common, count);
  return generateText(chat, run, common, count);
}

/** The OpenAI finish reason of a node-llama-cpp stop reason. */
export function finishOf(stopReason: string): FinishReason {
  if (stopReason === 'functionCalls') return 'tool_calls';
  return stopReason === 'maxTokens' ? 'length' : 'stop';
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
    } else addModelMessage(history, message, previous === 'tool', calls);
    previous = message.role;
  }
  // The model completes the last model item: add an empty one unless the caller prefilled it or the
  // last messages are tool results (the model answers after them, in the same response).
  if (previous !== 'assistant' && previous !== 'tool') history.push({ type: 'model', response: [] });
  return history;
}

/** Adds an assistant message to `history`, continuing the last model item after tool results. */
function addModelMessage(
  history: ChatHistoryItem[],
  message: { readonly content: string; readonly toolCalls?: readonly ToolCall[] },
  afterTools: boolean,
  calls: Map<string, ChatModelFunctionCall>,
): void {
  const last = history.at(-1);
  const item: ChatModelResponse = afterTools && last?.type === 'model' ? last : { type: 'model', response: [] };
  if (item !== last) history.push(item);
  if (message.content.length > 0) item.response.push(message.content);
  for (const call of message.toolCalls ?? []) {
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

function parseJsonOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function toolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

/** Appends `prompt` to the first system message, or puts it first as one. */
function addSystemPrompt(history: ChatHistoryItem[], prompt: string): void {
  const first = history[0];
  if (first?.type === 'system')
    history[0] = { type: 'system', text: `${typeof first.text === 'string' ? first.text : ''}\n\n${prompt}` };
  else history.unshift({ type: 'system', text: prompt });
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

function functionsOf(tools: readonly ToolDefinition[]): ChatModelFunctions {
  return Object.fromEntries(
    tools.map((tool) => [
      tool.name,
      {
        ...(tool.description === undefined ? {} : { description: tool.description }),
        ...(tool.parameters === undefined ? {} : { params: tool.parameters as GbnfJsonSchema }),
      },
    ]),
  );
}

/** The grammar `response_format` asks for; undefined for plain text. */
function formatGrammar(options: ChatOptions, grammars: GrammarCache): Promise<LlamaGrammar> | undefined {
  if (options.format.type === 'json_object') return grammars.grammarFor('json', 'response_format');
  if (options.format.type === 'json_schema') return grammars.grammarFor(options.format.schema, 'response_format');
  return undefined;
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

async function generateForcedCall(
  chat: LlamaChat,
  run: ChatRun,
  common: CommonOptions,
  count: TokenCount,
): Promise<GenerationResult> {
  const { promptTokens, hooks } = run;
  const result = await chat.generateResponse(run.plan.history, { ...common, grammar: run.plan.grammar! });
  const call = parseForcedCall(result.response);
  const finishReason = result.metadata.stopReason === 'maxTokens' ? 'length' : 'tool_calls';
  if (call === null)
    return {
      text: result.response,
      finishReason: 'length',
      promptTokens,
      completionTokens: count.tokens,
      toolCalls: [],
    };
  const toolCall = { id: toolCallId(), ...call };
  hooks.onToolCall?.({ index: 0, id: toolCall.id, type: 'function', function: { name: toolCall.name, arguments: '' } });
  hooks.onToolCall?.({ index: 0, function: { arguments: toolCall.arguments } });
  return { text: '', finishReason, promptTokens, completionTokens: count.tokens, toolCalls: [toolCall] };
}

async function generateWithFunctions(
  chat: LlamaChat,
  run: ChatRun,
  functions: ChatModelFunctions,
  common: CommonOptions,
  count: TokenCount,
): Promise<GenerationResult> {
  const { hooks } = run;
  const ids: string[] = [];
  const result = await chat.generateResponse(run.plan.history, {
    ...common,
    functions,
    maxParallelFunctionCalls: run.parallelToolCalls ? 8 : 1,
    ...(hooks.onText === undefined ? {} : { onTextChunk: hooks.onText }),
    onFunctionCallParamsChunk: (chunk) => streamCallChunk(hooks, ids, chunk),
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
    promptTokens: run.promptTokens,
    completionTokens: count.tokens,
    toolCalls,
  };
}

/** Streams one parameters chunk of call `callIndex`: its opening delta (id, name) first, once. */
function streamCallChunk(
  hooks: GenerationHooks,
  ids: string[],
  chunk: { callIndex: number; functionName: string; paramsChunk: string },
): void {
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
}

async function generateText(
  chat: LlamaChat,
  run: ChatRun,
  common: CommonOptions,
  count: TokenCount,
): Promise<GenerationResult> {
  const { grammar } = run.plan;
  const result = await chat.generateResponse(run.plan.history, {
    ...common,
    ...(grammar === undefined ? {} : { grammar }),
    ...(run.hooks.onText === undefined ? {} : { onTextChunk: run.hooks.onText }),
  });
  const finishReason = finishOf(result.metadata.stopReason);
  return {
    text: result.response,
    finishReason: finishReason === 'tool_calls' ? 'stop' : finishReason,
    promptTokens: run.promptTokens,
    completionTokens: count.tokens,
    toolCalls: [],
  };
}
