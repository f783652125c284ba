// Fixtures for the manifest verifier's tests: pinned key pairs, a valid payload and a signer over exact
// bytes (the hub's side, from manifest-format.ts).
import type { KeyObject } from 'node:crypto';
import {
  MANIFEST_PURPOSE,
  encodeManifestKey,
  encodeManifestPayload,
  generateManifestKeyPair,
  parseTrustedKeys,
  signManifestPayload,
  type ManifestEnvelope,
  type ManifestPayload,
  type TrustedKey,
} from '../../src/core/manifest-format.js';

export const MANIFEST_ISSUER = 'https://hub.test';
/** The verifier's clock: 2031-01-02T03:04:05Z. */
export const MANIFEST_NOW = Date.UTC(2031, 0, 2, 3, 4, 5);
const nowSeconds = Math.floor(MANIFEST_NOW / 1000);

export const keyA = generateManifestKeyPair();
export const keyB = generateManifestKeyPair();
export const outsider = generateManifestKeyPair();
/** Both A and B pinned (a rotation in progress). */
export const trusted: TrustedKey[] = parseTrustedKeys(
  `${encodeManifestKey(keyA.publicKey)},${encodeManifestKey(keyB.publicKey)}`,
);

export const SHA = 'a'.repeat(64);

export function payload(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer: MANIFEST_ISSUER,
    purpose: MANIFEST_PURPOSE,
    version: 7,
    issuedAt: nowSeconds - 3600,
    expiresAt: nowSeconds + 86_400,
    models: [
      {
        id: 'tiny-llama',
        name: 'Tiny Llama (test)',
        url: 'https://models.hub.test/tiny.gguf',
        size: 401_408,
        sha256: SHA,
        runtime: { contextLength: 2048, minRamMiB: 256 },
      },
      {
        id: 'other.model_v2',
        name: 'Other',
        url: 'https://models.hub.test/other.gguf',
        size: 1,
        sha256: 'b'.repeat(64),
      },
    ],
    ...overrides,
  };
}

/** Signs any JSON-able value's bytes (the payload need not be valid: the verifier must still refuse it). */
export function signValue(value: unknown, key: KeyObject = keyA.privateKey): ManifestEnvelope {
  return signManifestPayload(Buffer.from(JSON.stringify(value), 'utf8'), key);
}

export function signPayload(value: ManifestPayload, key: KeyObject = keyA.privateKey): ManifestEnvelope {
  return signManifestPayload(encodeManifestPayload(value), key);
}

export function envelopeBytes(envelope: ManifestEnvelope): Buffer {
  return Buffer.from(JSON.stringify(envelope), 'utf8');
}

export const verifyOptions = { trustedKeys: trusted, expectedIssuer: MANIFEST_ISSUER, now: MANIFEST_NOW };
