/**
 * A value that holds a secret (a token, a code, a verifier). Printing it, logging it, serialising it or
 * inspecting it shows `[redacted]`; only `reveal()` gives the value, at the one place that sends it.
 */
import { CodedTypeError } from './errors.js';

const REDACTED = '[redacted]';
const inspectSymbol = Symbol.for('nodejs.util.inspect.custom');

/**
 * A secret string that never shows itself: `toString`, `toJSON` and `util.inspect` give `[redacted]`;
 * `reveal()` gives the value.
 * @throws TypeError ERR_INVALID_ARG_TYPE (from the constructor) unless the value is a non-empty string.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    if (typeof value !== 'string' || value.length === 0) {
      throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'a secret must be a non-empty string');
    }
    this.#value = value;
  }

  /** The secret itself. Call it only where the value leaves for its one legitimate recipient. */
  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspectSymbol](): string {
    return `Secret(${REDACTED})`;
  }

  get [Symbol.toStringTag](): string {
    return 'Secret';
  }
}

/** True when `value` is a {@link Secret}. */
export function isSecret(value: unknown): value is Secret {
  return value instanceof Secret;
}
