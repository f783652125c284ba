import { test } from 'node:test';
import assert from 'node:assert/strict';
import { verify } from 'node:crypto';
import {
  encodeManifestKey,
  encodeManifestPayload,
  fromBase64Url,
  generateManifestKeyPair,
  keyIdOf,
  parseTrustedKeys,
  rawPublicKey,
  signManifestPayload,
  MANIFEST_PURPOSE,
} from '../../src/core/manifest-format.js';

test('signManifestPayload() signs the exact payload bytes with the key named by keyId', () => {
  const { privateKey, publicKey } = generateManifestKeyPair();
  const bytes = encodeManifestPayload({
    issuer: 'https://hub.example',
    purpose: MANIFEST_PURPOSE,
    version: 1,
    issuedAt: 1,
    expiresAt: 2,
    models: [],
  });
  const envelope = signManifestPayload(bytes, privateKey);
  assert.deepEqual(fromBase64Url(envelope.payload, 'payload'), bytes);
  assert.ok(verify(null, bytes, publicKey, fromBase64Url(envelope.signature, 'signature')));
  assert.equal(envelope.keyId, keyIdOf(rawPublicKey(publicKey)));
  assert.equal(envelope.keyId.length, 22);
});

test('parseTrustedKeys() reads one or several ed25519 keys and their ids', () => {
  const a = generateManifestKeyPair().publicKey;
  const b = generateManifestKeyPair().publicKey;
  const keys = parseTrustedKeys(`${encodeManifestKey(a)}, ${encodeManifestKey(b)}`);
  assert.deepEqual(
    keys.map((k) => k.keyId),
    [keyIdOf(rawPublicKey(a)), keyIdOf(rawPublicKey(b))],
  );
});

test('parseTrustedKeys() refuses other prefixes, bad base64url, wrong lengths and empty lists with ERR_CONFIG', () => {
  for (const text of [
    '',
    ' , ',
    'rsa:AAAA',
    'ed25519:not*base64',
    'ed25519:AAAA',
    `ed25519:${Buffer.alloc(33).toString('base64url')}`,
  ]) {
    assert.throws(() => parseTrustedKeys(text), { code: text === '' ? 'ERR_INVALID_ARG_VALUE' : 'ERR_CONFIG' }, text);
  }
});

test('fromBase64Url() refuses padding and non-canonical text', () => {
  assert.throws(() => fromBase64Url('AA==', 'x'), { code: 'ERR_MANIFEST_MALFORMED' });
  assert.throws(() => fromBase64Url('AB', 'x'), { code: 'ERR_MANIFEST_MALFORMED' });
  assert.deepEqual(fromBase64Url('AA', 'x'), Buffer.from([0]));
});
