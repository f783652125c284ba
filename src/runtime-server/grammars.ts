/**
 * The grammars that constrain a JSON answer (`response_format`, forced tool calls), compiled once per
 * schema: a client sends the same schema on every request.
 */
import type { Llama, LlamaGrammar } from 'node-llama-cpp';
import { ApiError } from './openai.js';

/** Compiled grammars kept at once; the oldest goes first. */
const MAX_GRAMMARS = 32;

/** A bounded cache of compiled grammars by schema. */
export class GrammarCache {
  readonly #llama: Llama;
  readonly #grammars = new Map<string, Promise<LlamaGrammar>>();

  constructor(llama: Llama) {
    this.#llama = llama;
  }

  /**
   * The grammar for `schema` (`'json'`: any JSON object), compiled on first use.
   *
   * Rejects with ApiError 400 `unsupported_schema` (param `param`) when the schema cannot be compiled; a
   * failed compilation is not cached.
   */
  grammarFor(schema: object | 'json', param: string): Promise<LlamaGrammar> {
    const key = schema === 'json' ? 'json' : JSON.stringify(schema);
    const cached = this.#grammars.get(key);
    if (cached !== undefined) return cached;
    const grammar = (
      schema === 'json' ? this.#llama.getGrammarFor('json') : this.#llama.createGrammarForJsonSchema(schema as never)
    ).catch((): never => {
      this.#grammars.delete(key);
      throw new ApiError(
        400,
        'invalid_request_error',
        'unsupported_schema',
        'the schema cannot be compiled to a grammar',
        param,
      );
    });
    if (this.#grammars.size >= MAX_GRAMMARS) this.#grammars.delete(this.#grammars.keys().next().value!);
    this.#grammars.set(key, grammar);
    return grammar;
  }
}
