// Verified model entries for download tests: `pullModel` takes only a model of a manifest that
// `verifyManifest()` accepted. These sign a one-model manifest with a key of their own and verify it with
// the real verifier, so a test can pull any entry it builds (another digest, a scripted host's URL) or one
// that crossed a process boundary (the download child), which loses the brand.
import { findModel, verifyManifest, type VerifiedModel } from '../../src/core/manifest.js';
import {
  MANIFEST_PURPOSE,
  encodeManifestKey,
  encodeManifestPayload,
  generateManifestKeyPair,
  parseTrustedKeys,
  signManifestPayload,
  type ManifestModel,
} from '../../src/core/manifest-format.js';

const ISSUER = 'https://download-tests.invalid';
const key = generateManifestKeyPair();
const trustedKeys = parseTrustedKeys(encodeManifestKey(key.publicKey));

/** `model` as the verified entry of a freshly signed manifest; throws the verifier's code for a bad entry. */
export function verifiedModel(model: ManifestModel): VerifiedModel {
  const now = Date.now();
  const seconds = Math.floor(now / 1000);
  const payload = encodeManifestPayload({
    issuer: ISSUER,
    purpose: MANIFEST_PURPOSE,
    version: 1,
    issuedAt: seconds - 60,
    expiresAt: seconds + 3600,
    models: [model],
  });
  const manifest = verifyManifest(signManifestPayload(payload, key.privateKey), {
    trustedKeys,
    expectedIssuer: ISSUER,
    now,
  });
  return findModel(manifest);
}
