// P-h tampered or substituted model, at the manifest verifier: only a manifest signed by a pinned key,
// for this hub, fresh, not rolled back and well-formed names a model the companion will download.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findModel, verifyManifest } from '../../src/core/manifest.js';
import { fromBase64Url, signManifestPayload, toBase64Url } from '../../src/core/manifest-format.js';
import { MANIFEST_NOW, keyA, outsider, payload, signValue, verifyOptions } from '../helpers/manifest-fixtures.js';

const nowSeconds = Math.floor(MANIFEST_NOW / 1000);
const good = signValue(payload());

function retarget(change: (p: Record<string, unknown>) => void): { payload: string; signature: string; keyId: string } {
  const body = JSON.parse(fromBase64Url(good.payload, 'payload').toString('utf8')) as Record<string, unknown>;
  change(body);
  return { ...good, payload: toBase64Url(Buffer.from(JSON.stringify(body))) };
}

test('P-h a manifest whose model digest, URL or size was changed after signing is refused', () => {
  const edits: ((p: Record<string, unknown>) => void)[] = [
    (p) => {
      (p.models as Record<string, unknown>[])[0]!.sha256 = 'e'.repeat(64);
    },
    (p) => {
      (p.models as Record<string, unknown>[])[0]!.url = 'https://evil.test/backdoored.gguf';
    },
    (p) => {
      (p.models as Record<string, unknown>[])[0]!.size = 1;
    },
    (p) => {
      (p.models as Record<string, unknown>[]).reverse();
    },
  ];
  for (const edit of edits)
    assert.throws(() => verifyManifest(retarget(edit), verifyOptions), { code: 'ERR_MANIFEST_SIGNATURE' });
});

test('P-h a substituted manifest signed by a key that is not pinned is refused, whatever key id it claims', () => {
  const forged = signValue(
    payload({
      models: [{ id: 'tiny-llama', name: 'T', url: 'https://evil.test/x.gguf', size: 1, sha256: 'f'.repeat(64) }],
    }),
    outsider.privateKey,
  );
  assert.throws(() => verifyManifest(forged, verifyOptions), { code: 'ERR_MANIFEST_UNKNOWN_KEY' });
  assert.throws(() => verifyManifest({ ...forged, keyId: good.keyId }, verifyOptions), {
    code: 'ERR_MANIFEST_SIGNATURE',
  });
});

test('P-h a replayed older manifest is refused (rollback), an expired one too', () => {
  const old = signValue(payload({ version: 3 }));
  assert.throws(() => verifyManifest(old, { ...verifyOptions, lastSeenVersion: 7 }), { code: 'ERR_MANIFEST_ROLLBACK' });
  const stale = signValue(payload({ issuedAt: nowSeconds - 10 * 86_400, expiresAt: nowSeconds - 86_400 }));
  assert.throws(() => verifyManifest(stale, verifyOptions), { code: 'ERR_MANIFEST_EXPIRED' });
});

test('P-h a manifest signed for another hub or another purpose is refused', () => {
  assert.throws(() => verifyManifest(signValue(payload({ issuer: 'https://other-hub.test' })), verifyOptions), {
    code: 'ERR_MANIFEST_ISSUER',
  });
  assert.throws(() => verifyManifest(signValue(payload({ purpose: 'companion-session' })), verifyOptions), {
    code: 'ERR_MANIFEST_PURPOSE',
  });
  // A signature by the pinned key over some other document is not a manifest.
  assert.throws(
    () => verifyManifest(signManifestPayload(Buffer.from('{"hello":"world"}'), keyA.privateKey), verifyOptions),
    { code: 'ERR_MANIFEST_PURPOSE' },
  );
});

test('P-h a model URL that is not https is refused, so the download never starts in clear text', () => {
  const plain = signValue(
    payload({
      models: [{ id: 'm', name: 'M', url: 'http://models.hub.test/m.gguf', size: 1, sha256: 'a'.repeat(64) }],
    }),
  );
  assert.throws(() => verifyManifest(plain, verifyOptions), { code: 'ERR_MANIFEST_MODEL_URL' });
});

test('P-h a duplicated model id cannot shadow a model, and an id cannot leave the models folder', () => {
  const m = { name: 'M', url: 'https://models.hub.test/m.gguf', size: 1, sha256: 'a'.repeat(64) };
  assert.throws(
    () =>
      verifyManifest(
        signValue(
          payload({
            models: [
              { id: 'tiny', ...m },
              { id: 'tiny', ...m, sha256: 'b'.repeat(64) },
            ],
          }),
        ),
        verifyOptions,
      ),
    { code: 'ERR_MANIFEST_DUPLICATE_MODEL' },
  );
  for (const id of ['../tiny', '..', 'a/b', 'a\\b', '.', '/abs']) {
    assert.throws(
      () => verifyManifest(signValue(payload({ models: [{ id, ...m }] })), verifyOptions),
      { code: 'ERR_MANIFEST_MALFORMED' },
      id,
    );
  }
});

test('P-h findModel() only reads manifests that verifyManifest() produced', () => {
  const verified = verifyManifest(good, verifyOptions);
  assert.equal(findModel(verified).id, 'tiny-llama');
  const lookalike = JSON.parse(JSON.stringify(verified)) as typeof verified;
  assert.throws(() => findModel(lookalike), { code: 'ERR_INVALID_ARG_VALUE' });
});
