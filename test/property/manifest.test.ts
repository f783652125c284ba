// Property tests for the manifest verifier: any single-byte change to a signed manifest is refused, and
// any input at all either verifies or fails with one of the ERR_MANIFEST_* codes (never a crash).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { verifyManifest } from '../../src/core/manifest.js';
import { CompanionError } from '../../src/core/errors.js';
import { fromBase64Url, toBase64Url } from '../../src/core/manifest-format.js';
import { envelopeBytes, payload, signValue, verifyOptions } from '../helpers/manifest-fixtures.js';

const good = signValue(payload());
const goodPayload = fromBase64Url(good.payload, 'payload');
const goodSignature = fromBase64Url(good.signature, 'signature');
const goodEnvelope = envelopeBytes(good);

/** Runs verifyManifest and returns the refusal code, or 'verified'. Anything but a CompanionError fails. */
function outcome(input: Uint8Array | string | object): string {
  try {
    verifyManifest(input, verifyOptions);
    return 'verified';
  } catch (error) {
    if (!(error instanceof CompanionError)) throw error;
    return error.code;
  }
}

function flip(bytes: Uint8Array, index: number, xor: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = (copy[index] ?? 0) ^ xor;
  return copy;
}

test('the unmutated fixture verifies (so every refusal below is due to the mutation)', () => {
  assert.equal(outcome(good), 'verified');
  assert.equal(outcome(goodEnvelope), 'verified');
});

test('verifyManifest() refuses every single-byte change of the signed payload bytes (exhaustive over positions)', () => {
  for (let i = 0; i < goodPayload.length; i += 1) {
    for (const xor of [0x01, 0x20, 0x80, 0xff]) {
      const code = outcome({ ...good, payload: toBase64Url(flip(goodPayload, i, xor)) });
      assert.equal(code, 'ERR_MANIFEST_SIGNATURE', `byte ${i} ^ ${xor}`);
    }
  }
});

test('verifyManifest() refuses any single-byte change of the payload or of the signature', () => {
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean(), (at, xor, inSignature) => {
      const changed = inSignature
        ? { ...good, signature: toBase64Url(flip(goodSignature, at % goodSignature.length, xor)) }
        : { ...good, payload: toBase64Url(flip(goodPayload, at % goodPayload.length, xor)) };
      assert.equal(outcome(changed), 'ERR_MANIFEST_SIGNATURE');
    }),
    { numRuns: 2000 },
  );
});

test('verifyManifest() refuses every single-byte change of the envelope bytes with an ERR_MANIFEST_* code', () => {
  for (let i = 0; i < goodEnvelope.length; i += 1) {
    for (const xor of [0x01, 0x02, 0x20]) {
      const code = outcome(flip(goodEnvelope, i, xor));
      assert.match(code, /^ERR_MANIFEST_/, `byte ${i} ^ ${xor}`);
    }
  }
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (at, xor) => {
      assert.match(outcome(flip(goodEnvelope, at % goodEnvelope.length, xor)), /^ERR_MANIFEST_/);
    }),
    { numRuns: 1000 },
  );
});

test('verifyManifest() refuses a single inserted or deleted byte anywhere in the envelope', () => {
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean(), (at, byte, insert) => {
      const i = at % goodEnvelope.length;
      const changed = insert
        ? Buffer.concat([goodEnvelope.subarray(0, i), Buffer.from([byte]), goodEnvelope.subarray(i)])
        : Buffer.concat([goodEnvelope.subarray(0, i), goodEnvelope.subarray(i + 1)]);
      const code = outcome(changed);
      // Inserting JSON whitespace between tokens leaves the same envelope: that one may verify.
      if (code === 'verified') assert.ok(insert && [0x20, 0x09, 0x0a, 0x0d].includes(byte));
      else assert.match(code, /^ERR_MANIFEST_/);
    }),
    { numRuns: 1000 },
  );
});

test('verifyManifest() answers arbitrary bytes, text and JSON with an ERR_MANIFEST_* code', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      assert.match(outcome(bytes), /^ERR_MANIFEST_/);
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      const code = outcome(typeof value === 'object' && value !== null ? value : JSON.stringify(value));
      assert.match(code, /^ERR_MANIFEST_/);
    }),
    { numRuns: 500 },
  );
});

const modelArb = fc.record(
  {
    id: fc.oneof(fc.constantFrom('tiny', 'a.b_c-d', '../x', '', 'A'.repeat(129)), fc.string({ maxLength: 20 })),
    name: fc.oneof(fc.constant('Tiny'), fc.string({ maxLength: 20 })),
    url: fc.oneof(
      fc.constantFrom('https://m.test/x.gguf', 'http://m.test/x.gguf', 'ftp://m.test/x', 'nope'),
      fc.webUrl(),
    ),
    size: fc.oneof(fc.integer({ min: -2, max: 10 }), fc.double(), fc.constant('1')),
    sha256: fc.oneof(fc.constant('c'.repeat(64)), fc.stringMatching(/^[0-9a-fA-F]{60,66}$/)),
    runtime: fc.option(
      fc.dictionary(fc.constantFrom('contextLength', 'chatTemplate', 'minRamMiB', 'threads'), fc.jsonValue()),
      { nil: undefined },
    ),
  },
  { requiredKeys: [] },
);

test('verifyManifest() on any signed payload either verifies a well-formed manifest or refuses with an ERR_MANIFEST_* code', () => {
  fc.assert(
    fc.property(
      fc.record(
        {
          version: fc.oneof(fc.integer({ min: -1, max: 10 }), fc.double(), fc.constant('7')),
          models: fc.array(modelArb, { maxLength: 4 }),
          extra: fc.option(fc.jsonValue(), { nil: undefined }),
        },
        { requiredKeys: [] },
      ),
      (changes) => {
        const code = outcome(signValue(payload(changes)));
        if (code === 'verified') {
          const manifest = verifyManifest(signValue(payload(changes)), verifyOptions);
          assert.ok(Number.isSafeInteger(manifest.version) && manifest.version > 0);
          for (const model of manifest.models) {
            assert.match(model.id, /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/);
            assert.match(model.sha256, /^[0-9a-f]{64}$/);
            assert.equal(new URL(model.url).protocol, 'https:');
            assert.ok(Number.isSafeInteger(model.size) && model.size > 0);
          }
          assert.equal(new Set(manifest.models.map((m) => m.id)).size, manifest.models.length);
        } else {
          assert.match(code, /^ERR_MANIFEST_/);
        }
      },
    ),
    { numRuns: 1000 },
  );
});
