import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  findModel,
  isVerifiedManifest,
  isVerifiedModel,
  verifyManifest,
  type VerifiedManifest,
} from '../../src/core/manifest.js';
import {
  MAX_MANIFEST_BYTES,
  encodeManifestKey,
  parseTrustedKeys,
  signManifestPayload,
  toBase64Url,
  MANIFEST_PURPOSE,
} from '../../src/core/manifest-format.js';
import {
  MANIFEST_ISSUER,
  MANIFEST_NOW,
  SHA,
  envelopeBytes,
  keyA,
  keyB,
  outsider,
  payload,
  signValue,
  verifyOptions,
} from '../helpers/manifest-fixtures.js';

const nowSeconds = Math.floor(MANIFEST_NOW / 1000);

test('verifyManifest() returns a branded, frozen manifest from envelope bytes, text or object', () => {
  const envelope = signValue(payload());
  for (const input of [
    envelopeBytes(envelope),
    JSON.stringify(envelope),
    envelope,
    new Uint8Array(envelopeBytes(envelope)),
  ]) {
    const manifest = verifyManifest(input, verifyOptions);
    assert.ok(isVerifiedManifest(manifest));
    assert.equal(manifest.version, 7);
    assert.equal(manifest.issuer, MANIFEST_ISSUER);
    assert.equal(manifest.purpose, MANIFEST_PURPOSE);
    assert.equal(manifest.keyId, envelope.keyId);
    assert.equal(manifest.models.length, 2);
    assert.deepEqual(manifest.models[0]?.runtime, { contextLength: 2048, minRamMiB: 256 });
    assert.ok(Object.isFrozen(manifest) && Object.isFrozen(manifest.models) && Object.isFrozen(manifest.models[0]));
  }
  assert.ok(!isVerifiedManifest({ ...verifyManifest(envelope, verifyOptions) }));
});

test('verifyManifest() accepts either pinned key during a rotation', () => {
  assert.equal(verifyManifest(signValue(payload(), keyA.privateKey), verifyOptions).version, 7);
  assert.equal(verifyManifest(signValue(payload(), keyB.privateKey), verifyOptions).version, 7);
  const onlyB = parseTrustedKeys(encodeManifestKey(keyB.publicKey));
  assert.throws(() => verifyManifest(signValue(payload(), keyA.privateKey), { ...verifyOptions, trustedKeys: onlyB }), {
    code: 'ERR_MANIFEST_UNKNOWN_KEY',
  });
});

test('verifyManifest() accepts the same version as last seen and a newer one', () => {
  assert.equal(verifyManifest(signValue(payload()), { ...verifyOptions, lastSeenVersion: 7 }).version, 7);
  assert.equal(verifyManifest(signValue(payload({ version: 8 })), { ...verifyOptions, lastSeenVersion: 7 }).version, 8);
});

test('verifyManifest() accepts times within the clock skew', () => {
  assert.ok(verifyManifest(signValue(payload({ issuedAt: nowSeconds + 59 })), verifyOptions));
  assert.ok(
    verifyManifest(signValue(payload({ expiresAt: nowSeconds - 59, issuedAt: nowSeconds - 100 })), verifyOptions),
  );
  assert.throws(
    () => verifyManifest(signValue(payload({ issuedAt: nowSeconds + 59 })), { ...verifyOptions, clockSkewMs: 0 }),
    { code: 'ERR_MANIFEST_NOT_YET_VALID' },
  );
});

test('verifyManifest() accepts a manifest without models (findModel() then refuses)', () => {
  const manifest = verifyManifest(signValue(payload({ models: [] })), verifyOptions);
  assert.throws(() => findModel(manifest), { code: 'ERR_MODEL_UNKNOWN' });
});

function model(overrides: Record<string, unknown>): Record<string, unknown> {
  return { id: 'm', name: 'M', url: 'https://models.hub.test/m.gguf', size: 10, sha256: SHA, ...overrides };
}

function withModel(overrides: Record<string, unknown>): Record<string, unknown> {
  return payload({ models: [model(overrides)] });
}

test('verifyManifest() refuses each bad manifest with its code', () => {
  const good = signValue(payload());
  const otherKeyId = signValue(payload(), outsider.privateKey).keyId;
  const cases: [string, unknown, string, Record<string, unknown>?][] = [
    // Envelope
    ['not JSON bytes', Buffer.from('{'), 'ERR_MANIFEST_MALFORMED'],
    ['not UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), 'ERR_MANIFEST_MALFORMED'],
    ['JSON array', Buffer.from('[]'), 'ERR_MANIFEST_MALFORMED'],
    ['number', 42, 'ERR_MANIFEST_MALFORMED'],
    ['null', null, 'ERR_MANIFEST_MALFORMED'],
    ['too large', Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20), 'ERR_MANIFEST_MALFORMED'],
    ['extra envelope field', { ...good, alg: 'none' }, 'ERR_MANIFEST_MALFORMED'],
    ['missing signature', { payload: good.payload, keyId: good.keyId }, 'ERR_MANIFEST_MALFORMED'],
    ['signature not a string', { ...good, signature: 1 }, 'ERR_MANIFEST_MALFORMED'],
    ['padded base64', { ...good, signature: `${good.signature}==` }, 'ERR_MANIFEST_MALFORMED'],
    [
      'standard base64',
      { ...good, payload: Buffer.from(JSON.stringify(payload())).toString('base64') },
      'ERR_MANIFEST_MALFORMED',
    ],
    ['short signature', { ...good, signature: toBase64Url(Buffer.alloc(63)) }, 'ERR_MANIFEST_MALFORMED'],
    ['key id wrong shape', { ...good, keyId: 'short' }, 'ERR_MANIFEST_MALFORMED'],
    // Keys and signature
    ['unknown key id', { ...good, keyId: otherKeyId }, 'ERR_MANIFEST_UNKNOWN_KEY'],
    [
      'signed by an outsider under a pinned key id',
      { ...signValue(payload(), outsider.privateKey), keyId: good.keyId },
      'ERR_MANIFEST_SIGNATURE',
    ],
    ['zero signature', { ...good, signature: toBase64Url(Buffer.alloc(64)) }, 'ERR_MANIFEST_SIGNATURE'],
    ['payload swapped', { ...good, payload: signValue(payload({ version: 99 })).payload }, 'ERR_MANIFEST_SIGNATURE'],
    [
      'signed with key B, named key A',
      { ...signValue(payload(), keyB.privateKey), keyId: good.keyId },
      'ERR_MANIFEST_SIGNATURE',
    ],
    // Payload
    ['payload not JSON', signManifestPayload(Buffer.from('not json'), keyA.privateKey), 'ERR_MANIFEST_MALFORMED'],
    ['payload not UTF-8', signManifestPayload(Buffer.from([0xc3, 0x28]), keyA.privateKey), 'ERR_MANIFEST_MALFORMED'],
    ['payload an array', signValue([payload()]), 'ERR_MANIFEST_MALFORMED'],
    ['wrong purpose', signValue(payload({ purpose: 'hub-session' })), 'ERR_MANIFEST_PURPOSE'],
    ['no purpose', signValue(payload({ purpose: undefined })), 'ERR_MANIFEST_PURPOSE'],
    ['wrong issuer', signValue(payload({ issuer: 'https://evil.test' })), 'ERR_MANIFEST_ISSUER'],
    ['issuer trailing slash', signValue(payload({ issuer: `${MANIFEST_ISSUER}/` })), 'ERR_MANIFEST_ISSUER'],
    ['unknown field', signValue(payload({ extra: true })), 'ERR_MANIFEST_MALFORMED'],
    ['version missing', signValue(payload({ version: undefined })), 'ERR_MANIFEST_MALFORMED'],
    ['version zero', signValue(payload({ version: 0 })), 'ERR_MANIFEST_MALFORMED'],
    ['version fraction', signValue(payload({ version: 7.5 })), 'ERR_MANIFEST_MALFORMED'],
    ['version text', signValue(payload({ version: '8' })), 'ERR_MANIFEST_MALFORMED'],
    ['version unsafe', signValue(payload({ version: 2 ** 53 })), 'ERR_MANIFEST_MALFORMED'],
    ['issuedAt text', signValue(payload({ issuedAt: 'yesterday' })), 'ERR_MANIFEST_MALFORMED'],
    ['expiresAt before issuedAt', signValue(payload({ expiresAt: nowSeconds - 7200 })), 'ERR_MANIFEST_MALFORMED'],
    ['models not a list', signValue(payload({ models: {} })), 'ERR_MANIFEST_MALFORMED'],
    [
      'too many models',
      signValue(payload({ models: Array.from({ length: 257 }, (_, i) => model({ id: `m${i}` })) })),
      'ERR_MANIFEST_MALFORMED',
    ],
    // Models
    ['model not an object', signValue(payload({ models: ['m'] })), 'ERR_MANIFEST_MALFORMED'],
    ['model unknown field', signValue(withModel({ path: '/etc/passwd' })), 'ERR_MANIFEST_MALFORMED'],
    ['model id missing', signValue(withModel({ id: undefined })), 'ERR_MANIFEST_MALFORMED'],
    ['model id traversal', signValue(withModel({ id: '../evil' })), 'ERR_MANIFEST_MALFORMED'],
    ['model id slash', signValue(withModel({ id: 'a/b' })), 'ERR_MANIFEST_MALFORMED'],
    ['model id leading dot', signValue(withModel({ id: '.hidden' })), 'ERR_MANIFEST_MALFORMED'],
    ['model id space', signValue(withModel({ id: 'a b' })), 'ERR_MANIFEST_MALFORMED'],
    ['model id too long', signValue(withModel({ id: 'a'.repeat(129) })), 'ERR_MANIFEST_MALFORMED'],
    ['model name empty', signValue(withModel({ name: '' })), 'ERR_MANIFEST_MALFORMED'],
    ['model name control', signValue(withModel({ name: 'a\u001b[2Jb' })), 'ERR_MANIFEST_MALFORMED'],
    ['model size zero', signValue(withModel({ size: 0 })), 'ERR_MANIFEST_MALFORMED'],
    ['model size negative', signValue(withModel({ size: -1 })), 'ERR_MANIFEST_MALFORMED'],
    ['model size fraction', signValue(withModel({ size: 1.5 })), 'ERR_MANIFEST_MALFORMED'],
    ['model size text', signValue(withModel({ size: '10' })), 'ERR_MANIFEST_MALFORMED'],
    ['model sha256 upper case', signValue(withModel({ sha256: 'A'.repeat(64) })), 'ERR_MANIFEST_MALFORMED'],
    ['model sha256 short', signValue(withModel({ sha256: 'a'.repeat(63) })), 'ERR_MANIFEST_MALFORMED'],
    ['model sha256 not hex', signValue(withModel({ sha256: 'g'.repeat(64) })), 'ERR_MANIFEST_MALFORMED'],
    ['model url not a URL', signValue(withModel({ url: 'models/m.gguf' })), 'ERR_MANIFEST_MALFORMED'],
    ['model url http', signValue(withModel({ url: 'http://models.hub.test/m.gguf' })), 'ERR_MANIFEST_MODEL_URL'],
    ['model url file', signValue(withModel({ url: 'file:///etc/passwd' })), 'ERR_MANIFEST_MODEL_URL'],
    [
      'model url with credentials',
      signValue(withModel({ url: 'https://u:p@models.hub.test/m.gguf' })),
      'ERR_MANIFEST_MODEL_URL',
    ],
    ['runtime hints unknown field', signValue(withModel({ runtime: { threads: 64 } })), 'ERR_MANIFEST_MALFORMED'],
    ['runtime hints not an object', signValue(withModel({ runtime: 'fast' })), 'ERR_MANIFEST_MALFORMED'],
    ['runtime contextLength zero', signValue(withModel({ runtime: { contextLength: 0 } })), 'ERR_MANIFEST_MALFORMED'],
    [
      'duplicate model ids',
      signValue(payload({ models: [model({}), model({ name: 'again' })] })),
      'ERR_MANIFEST_DUPLICATE_MODEL',
    ],
    // Freshness and rollback
    [
      'expired',
      signValue(payload({ issuedAt: nowSeconds - 7200, expiresAt: nowSeconds - 3600 })),
      'ERR_MANIFEST_EXPIRED',
    ],
    [
      'not yet valid',
      signValue(payload({ issuedAt: nowSeconds + 3600, expiresAt: nowSeconds + 7200 })),
      'ERR_MANIFEST_NOT_YET_VALID',
    ],
    ['rollback', signValue(payload({ version: 6 })), 'ERR_MANIFEST_ROLLBACK', { lastSeenVersion: 7 }],
  ];
  for (const [name, input, code, extra] of cases) {
    assert.throws(() => verifyManifest(input as object, { ...verifyOptions, ...extra }), { code }, name);
  }
});

test('verifyManifest() refuses bad options with ERR_INVALID_ARG_*', () => {
  const envelope = signValue(payload());
  const cases: Record<string, unknown>[] = [
    { trustedKeys: [] },
    { trustedKeys: 'ed25519:x' },
    { expectedIssuer: '' },
    { now: -1 },
    { now: 1.5 },
    { lastSeenVersion: -1 },
    { clockSkewMs: -5 },
  ];
  for (const change of cases) {
    assert.throws(
      () => verifyManifest(envelope, { ...verifyOptions, ...change } as typeof verifyOptions),
      { name: 'TypeError' },
      JSON.stringify(change),
    );
  }
});

test('findModel() returns the named model or the first, and refuses unknown ids and unverified input', () => {
  const manifest = verifyManifest(signValue(payload()), verifyOptions);
  assert.equal(findModel(manifest).id, 'tiny-llama');
  assert.equal(findModel(manifest, 'other.model_v2').size, 1);
  assert.throws(() => findModel(manifest, 'nope'), { code: 'ERR_MODEL_UNKNOWN' });
  assert.throws(() => findModel({ ...manifest } as VerifiedManifest), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('findModel() returns a VerifiedModel that isVerifiedModel() accepts, and a copy of it is refused', () => {
  const manifest = verifyManifest(signValue(payload()), verifyOptions);
  const model = findModel(manifest, 'tiny-llama');
  assert.equal(isVerifiedModel(model), true);
  assert.equal(Object.isFrozen(model), true);
  for (const lookalike of [{ ...model }, JSON.parse(JSON.stringify(model)), structuredClone(model), null, 'tiny-llama'])
    assert.equal(isVerifiedModel(lookalike), false);
});
