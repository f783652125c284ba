import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import { createIntegrityAccumulator, isVerifiedIntegrity } from '../../src/core/integrity.js';
import { CompanionError } from '../../src/core/errors.js';

const DATA = Buffer.from('a tiny model file, standing in for gigabytes of GGUF');
const SHA = createHash('sha256').update(DATA).digest('hex');

/** Asserts that nothing an error shows holds the expected digest (hex, upper hex, base64, base64url). */
function assertNoDigest(error: unknown, digest = SHA): void {
  const raw = Buffer.from(digest, 'hex');
  const shown = [
    String(error),
    inspect(error, { depth: 5 }),
    JSON.stringify(error),
    JSON.stringify((error as CompanionError).detail ?? {}),
    (error as Error).stack ?? '',
  ].join('\n');
  for (const form of [
    digest.toLowerCase(),
    digest.toUpperCase(),
    raw.toString('base64'),
    raw.toString('base64url'),
    digest.slice(0, 16),
  ]) {
    assert.ok(!shown.includes(form), 'the expected digest leaked into an error');
  }
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assertNoDigest(error);
    return (error as CompanionError).code;
  }
  return 'none';
}

test('finalize() returns a branded VerifiedIntegrity with the size when size and digest match', () => {
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA });
  acc.update(DATA.subarray(0, 10));
  acc.update(DATA.subarray(10));
  assert.equal(acc.bytes, DATA.length);
  const verified = acc.finalize();
  assert.equal(verified.size, DATA.length);
  assert.ok(isVerifiedIntegrity(verified));
  assert.ok(Object.isFrozen(verified));
  assert.ok(!JSON.stringify(verified).includes(SHA));
});

test('isVerifiedIntegrity() refuses look-alikes', () => {
  for (const value of [{ size: DATA.length }, Object.freeze({ size: 1 }), null, undefined, 'verified', 1]) {
    assert.equal(isVerifiedIntegrity(value), false);
  }
});

test('createIntegrityAccumulator() accepts an upper-case digest and an empty file', () => {
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA.toUpperCase() });
  acc.update(DATA);
  assert.ok(isVerifiedIntegrity(acc.finalize()));
  const empty = createIntegrityAccumulator({ expectedSize: 0, expectedSha256: createHash('sha256').digest('hex') });
  empty.update(new Uint8Array(0));
  assert.equal(empty.finalize().size, 0);
});

test('update() hashes exactly the bytes of a view, not its whole backing buffer', () => {
  const backing = Buffer.concat([Buffer.from('junk-before'), DATA, Buffer.from('junk-after')]);
  const view = new Uint8Array(backing.buffer, backing.byteOffset + 11, DATA.length);
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA });
  acc.update(view);
  assert.ok(isVerifiedIntegrity(acc.finalize()));
});

test('update() throws ERR_INTEGRITY_SIZE_OVER at once for bytes past the expected size, and the accumulator stays spent', () => {
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA });
  acc.update(DATA.subarray(0, 20));
  assert.equal(
    codeOf(() => acc.update(DATA)),
    'ERR_INTEGRITY_SIZE_OVER',
  );
  assert.equal(acc.bytes, 20, 'nothing of the refused chunk is counted');
  assert.equal(
    codeOf(() => acc.update(DATA.subarray(20))),
    'ERR_INTEGRITY_SIZE_OVER',
  );
  assert.equal(
    codeOf(() => acc.finalize()),
    'ERR_INTEGRITY_SIZE_OVER',
  );
  assert.equal(
    codeOf(() => acc.finalize()),
    'ERR_INTEGRITY_FINALIZED',
  );
});

test('update() refuses one byte too many even when it comes alone', () => {
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA });
  acc.update(DATA);
  assert.equal(
    codeOf(() => acc.update(new Uint8Array(1))),
    'ERR_INTEGRITY_SIZE_OVER',
  );
  assert.deepEqual(
    (() => {
      try {
        acc.update(new Uint8Array(1));
      } catch (e) {
        return (e as CompanionError).detail;
      }
      return null;
    })(),
    { expectedSize: DATA.length, received: DATA.length },
  );
});

test('finalize() throws ERR_INTEGRITY_SIZE_UNDER for a short stream', () => {
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA });
  acc.update(DATA.subarray(0, DATA.length - 1));
  assert.equal(
    codeOf(() => acc.finalize()),
    'ERR_INTEGRITY_SIZE_UNDER',
  );
});

test('finalize() throws ERR_INTEGRITY_DIGEST for one flipped bit, without showing either digest', () => {
  const tampered = Buffer.from(DATA);
  tampered[7]! ^= 1;
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA });
  acc.update(tampered);
  try {
    acc.finalize();
    assert.fail('accepted tampered bytes');
  } catch (error) {
    assert.equal((error as CompanionError).code, 'ERR_INTEGRITY_DIGEST');
    assertNoDigest(error);
    assertNoDigest(error, createHash('sha256').update(tampered).digest('hex'));
  }
});

test('finalize() can be called once; update() after it throws ERR_INTEGRITY_FINALIZED', () => {
  const acc = createIntegrityAccumulator({ expectedSize: DATA.length, expectedSha256: SHA });
  acc.update(DATA);
  acc.finalize();
  assert.equal(
    codeOf(() => acc.finalize()),
    'ERR_INTEGRITY_FINALIZED',
  );
  assert.equal(
    codeOf(() => acc.update(DATA)),
    'ERR_INTEGRITY_FINALIZED',
  );
});

test('createIntegrityAccumulator() and update() refuse bad arguments with a TypeError that shows no digest', () => {
  for (const bad of [
    { expectedSize: -1, expectedSha256: SHA },
    { expectedSize: 1.5, expectedSha256: SHA },
    { expectedSize: '3', expectedSha256: SHA },
    { expectedSize: 3, expectedSha256: SHA.slice(1) },
    { expectedSize: 3, expectedSha256: `${SHA.slice(1)}g` },
    { expectedSize: 3, expectedSha256: undefined },
    { expectedSize: 3, expectedSha256: Buffer.from(SHA, 'hex').toString('base64') },
  ]) {
    assert.throws(
      () => createIntegrityAccumulator(bad as never),
      (error: Error) => {
        assert.equal(error.name, 'TypeError');
        assertNoDigest(error);
        return true;
      },
    );
  }
  const acc = createIntegrityAccumulator({ expectedSize: 3, expectedSha256: SHA });
  for (const chunk of ['abc', [1, 2, 3], new ArrayBuffer(3), new DataView(new ArrayBuffer(3)), null]) {
    assert.throws(() => acc.update(chunk as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  }
  assert.equal(acc.bytes, 0);
});
