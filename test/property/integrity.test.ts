// Property test of the integrity accumulator: any split of the same bytes gives the same verdict as
// hashing them in one piece, for matching, short, long and tampered streams alike.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { createIntegrityAccumulator, isVerifiedIntegrity } from '../../src/core/integrity.js';
import { isCompanionError } from '../../src/core/errors.js';

/** Feeds `chunks` and returns 'verified' or the code the accumulator stopped with. */
function verdict(expectedSize: number, expectedSha256: string, chunks: readonly Uint8Array[]): string {
  const acc = createIntegrityAccumulator({ expectedSize, expectedSha256 });
  try {
    for (const chunk of chunks) acc.update(chunk);
    const result = acc.finalize();
    assert.ok(isVerifiedIntegrity(result));
    assert.equal(result.size, expectedSize);
    return 'verified';
  } catch (error) {
    assert.ok(
      isCompanionError(error, 'ERR_INTEGRITY_SIZE_OVER', 'ERR_INTEGRITY_SIZE_UNDER', 'ERR_INTEGRITY_DIGEST'),
      String(error),
    );
    return error.code;
  }
}

/** Cuts `bytes` at the given points (sorted, deduplicated, within range); empty chunks included. */
function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const point of [...points, bytes.length]) {
    chunks.push(bytes.subarray(start, point));
    start = point;
  }
  return chunks;
}

const caseArb = fc.record({
  bytes: fc.uint8Array({ maxLength: 2_048 }),
  cutsA: fc.array(fc.nat(), { maxLength: 12 }),
  cutsB: fc.array(fc.nat(), { maxLength: 12 }),
  // What the manifest says: the truth, a size off by a little, or the digest of other bytes.
  sizeDelta: fc.oneof(
    { weight: 3, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: -3, max: 3 }) },
  ),
  tamper: fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.nat() }),
});

test('any split of the same bytes gives the same verdict as one chunk (5,000 runs)', () => {
  const seen = new Set<string>();
  fc.assert(
    fc.property(caseArb, ({ bytes, cutsA, cutsB, sizeDelta, tamper }) => {
      const expectedSize = Math.max(0, bytes.length + sizeDelta);
      const reference = Buffer.from(bytes);
      if (tamper !== null && reference.length > 0) reference[tamper % reference.length]! ^= 0xff;
      const expectedSha256 = createHash('sha256')
        .update(tamper !== null && reference.length === 0 ? Buffer.from('x') : reference)
        .digest('hex');
      const whole = verdict(expectedSize, expectedSha256, [bytes]);
      assert.equal(verdict(expectedSize, expectedSha256, split(bytes, cutsA)), whole);
      assert.equal(verdict(expectedSize, expectedSha256, split(bytes, cutsB)), whole);
      // The verdict itself is right: size first, then digest.
      const sameDigest = tamper === null;
      const expected =
        bytes.length > expectedSize
          ? 'ERR_INTEGRITY_SIZE_OVER'
          : bytes.length < expectedSize
            ? 'ERR_INTEGRITY_SIZE_UNDER'
            : sameDigest
              ? 'verified'
              : 'ERR_INTEGRITY_DIGEST';
      assert.equal(whole, expected);
      seen.add(whole);
    }),
    { numRuns: 5_000 },
  );
  assert.deepEqual([...seen].sort(), [
    'ERR_INTEGRITY_DIGEST',
    'ERR_INTEGRITY_SIZE_OVER',
    'ERR_INTEGRITY_SIZE_UNDER',
    'verified',
  ]);
});
