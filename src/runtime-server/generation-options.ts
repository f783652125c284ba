/**
 * An OpenAI request's sampling parameters as node-llama-cpp generation options, shared by chat and
 * completion.
 */
import { TokenBias, type Token, type Tokenizer } from 'node-llama-cpp';
import { ApiError, type Sampling } from './openai.js';

/** What the options depend on beyond the request: the loaded model and context. */
export interface ModelLimits {
  readonly contextSize: number;
  readonly tokenizer: Tokenizer;
  /** Tokens in the vocabulary; a token id must be below it. */
  readonly vocabulary: number;
}

/**
 * The sampling options for a prompt of `promptTokens` tokens; `maxTokens` never reaches past the end of
 * the context.
 *
 * Throws ApiError 400 `invalid_value` (param `logit_bias`) for a token id outside the vocabulary.
 */
export function generationOptions(sampling: Sampling, promptTokens: number, limits: ModelLimits) {
  const tokenBias = tokenBiasOf(sampling, limits);
  const penalties = sampling.frequencyPenalty !== 0 || sampling.presencePenalty !== 0;
  return {
    maxTokens: Math.min(sampling.maxTokens ?? Number.MAX_SAFE_INTEGER, limits.contextSize - promptTokens),
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
}

/** What {@link generationOptions} returns. */
export type GenerationOptions = ReturnType<typeof generationOptions>;

function tokenBiasOf(sampling: Sampling, limits: ModelLimits): TokenBias | undefined {
  if (sampling.logitBias.size === 0) return undefined;
  const bias = new TokenBias(limits.tokenizer);
  for (const [token, value] of sampling.logitBias) {
    // An id past the vocabulary would index outside llama.cpp's arrays.
    if (token >= limits.vocabulary)
      throw new ApiError(
        400,
        'invalid_request_error',
        'invalid_value',
        `logit_bias token ids must be below the vocabulary size ${limits.vocabulary}`,
        'logit_bias',
      );
    // OpenAI: -100 bans the token; other values are added to its logit (+100 all but forces it).
    bias.set(token as Token, value <= -100 ? 'never' : { logit: value });
  }
  return bias;
}
