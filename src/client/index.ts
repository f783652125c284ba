/** The LLM client library (filled in by the shell issue). */
export {};
