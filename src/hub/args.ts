/** Argument checks of the hub's public functions: a bad argument is a TypeError with a stable code. */
import { CodedTypeError } from '../core/errors.js';

/** A `TypeError` with `code` `ERR_INVALID_ARG_VALUE` (or `_TYPE`), as src/core/errors.ts makes them. */
export function invalidArgument(
  name: string,
  expected: string,
  code: 'ERR_INVALID_ARG_VALUE' | 'ERR_INVALID_ARG_TYPE' = 'ERR_INVALID_ARG_VALUE',
): TypeError {
  return new CodedTypeError(code, `${name} must be ${expected}`);
}
