/**
 * The integrity accumulator (D5.5, P-h): the orchestrator feeds it every byte of a model download as it
 * streams and gets back a branded {@link VerifiedIntegrity} only when the size and SHA-256 match the
 * signed manifest. The download adapter makes no integrity decision; promotion to the final name needs
 * the brand.
 *
 * Bytes past the expected size are refused at once (a hostile model host cannot fill the disk). The
 * expected digest never appears in an error message or detail. `update` hashes the caller's chunk in
 * place (no copy); `finalize()` may be called once.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import { Buffer } from 'node:buffer';
import { CompanionError, type ErrorCode, assertInteger, CodedTypeError } from './errors.js';

/** The proof that a byte stream matched its manifest entry. Only {@link createIntegrityAccumulator} makes one. */
export interface VerifiedIntegrity {
  /** The verified size in bytes. */
  readonly size: number;
}

const VERIFIED = new WeakSet<object>();

/** True only for a value returned by a successful `finalize()` of this module. */
export function isVerifiedIntegrity(value: unknown): value is VerifiedIntegrity {
  return typeof value === 'object' && value !== null && VERIFIED.has(value);
}

/** Hashes one download as it streams and says, once, whether it matched ({@link createIntegrityAccumulator}). */
export interface IntegrityAccumulator {
  /**
   * Hashes one chunk. Throws `ERR_INTEGRITY_SIZE_OVER` as soon as the total would pass the expected
   * size (nothing of that chunk is counted, and the accumulator is spent: `finalize()` throws the same
   * code), `ERR_INTEGRITY_FINALIZED` after `finalize()`, TypeError for a non-Uint8Array.
   */
  update(chunk: Uint8Array): void;
  /** Bytes accepted so far. */
  readonly bytes: number;
  /**
   * Checks size then digest, once. Returns the branded result, or throws `ERR_INTEGRITY_SIZE_UNDER`,
   * `ERR_INTEGRITY_SIZE_OVER` (if `update` refused bytes), `ERR_INTEGRITY_DIGEST`, or
   * `ERR_INTEGRITY_FINALIZED` on a second call.
   */
  finalize(): VerifiedIntegrity;
}

const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

/**
 * Creates an accumulator for one download.
 *
 * @param expected `expectedSize` (bytes, a safe integer ≥ 0) and `expectedSha256` (64 hex characters)
 *   from the verified manifest.
 * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` (the message never shows the digest).
 *   Its methods throw `ERR_INTEGRITY_SIZE_OVER`, `ERR_INTEGRITY_SIZE_UNDER`, `ERR_INTEGRITY_DIGEST` and
 *   `ERR_INTEGRITY_FINALIZED` as {@link IntegrityAccumulator} says.
 */
export function createIntegrityAccumulator(expected: {
  expectedSize: number;
  expectedSha256: string;
}): IntegrityAccumulator {
  const { expectedSize, expectedSha256 } = expected;
  assertInteger(expectedSize, 'expectedSize', 0);
  if (typeof expectedSha256 !== 'string' || !SHA256_HEX.test(expectedSha256)) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'expectedSha256 must be 64 hexadecimal characters');
  }
  const expectedDigest = Buffer.from(expectedSha256, 'hex');
  const hash = createHash('sha256');
  let bytes = 0;
  let finalized = false;
  let spent: ErrorCode | null = null;

  return {
    update(chunk: Uint8Array): void {
      if (finalized) throw new CompanionError('ERR_INTEGRITY_FINALIZED');
      if (!(chunk instanceof Uint8Array)) {
        throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'chunk must be a Uint8Array');
      }
      if (spent !== null) throw new CompanionError(spent, undefined, { detail: { expectedSize, received: bytes } });
      if (chunk.byteLength > expectedSize - bytes) {
        spent = 'ERR_INTEGRITY_SIZE_OVER';
        throw new CompanionError('ERR_INTEGRITY_SIZE_OVER', undefined, {
          detail: { expectedSize, received: bytes + chunk.byteLength },
        });
      }
      hash.update(chunk);
      bytes += chunk.byteLength;
    },

    get bytes(): number {
      return bytes;
    },

    finalize(): VerifiedIntegrity {
      if (finalized) throw new CompanionError('ERR_INTEGRITY_FINALIZED');
      finalized = true;
      if (spent !== null) throw new CompanionError(spent, undefined, { detail: { expectedSize, received: bytes } });
      if (bytes < expectedSize)
        throw new CompanionError('ERR_INTEGRITY_SIZE_UNDER', undefined, { detail: { expectedSize, received: bytes } });
      const actual = hash.digest();
      // Equal lengths (32 bytes) by construction. Neither digest goes into the error.
      if (!timingSafeEqual(actual, expectedDigest))
        throw new CompanionError('ERR_INTEGRITY_DIGEST', undefined, { detail: { size: bytes } });
      const verified: VerifiedIntegrity = Object.freeze({ size: bytes });
      VERIFIED.add(verified);
      return verified;
    },
  };
}
