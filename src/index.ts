/** Companion's public library surface: the cores' types and the LLM client. */
export * from './core/errors.js';
export { Secret } from './core/secret.js';
