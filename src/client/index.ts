/** The LLM client library: `createLlmClient` with lane selection (see README, "Using the client"). */
export {
  createLlmClient,
  type LlmClient,
  type LlmClientOptions,
  type CompleteRequest,
  type CompleteResult,
  type ChatMessage,
  type Endpoint,
} from './llm.js';
