// P-d: the one-shot redirect listener under generated raw HTTP (issue 11): callbacks around its allow-list
// (GET of the exact path, origin-form, exactly one Host 127.0.0.1:<port>) with odd Host forms, duplicates,
// absolute-form and `//` targets, CR/LF/NUL tricks, obs-fold, huge heads, header floods, other methods
// and versions, slow senders. Every generated target carries its id, so each `validate` call is
// attributed to the request that caused it. COMPANION_FUZZ_LISTENER_REQUESTS / COMPANION_FUZZ_SEED
// change the sample.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompanionError } from '../../src/core/errors.js';
import { startRedirectListener } from '../../src/authority/redirect-listener.js';
import { rawRequest } from '../helpers/cores-guard-server.js';
import { fuzzRedirectListener } from '../helpers/fuzz-run.js';

const REQUESTS = Number(process.env.COMPANION_FUZZ_LISTENER_REQUESTS ?? 100_000);
const SEED = Number(process.env.COMPANION_FUZZ_SEED ?? 20_261_129);

test(
  `P-d fuzz: the redirect listener hands validate exactly the allowed callbacks over ${REQUESTS} generated raw requests (seed ${SEED}), then completes and frees its port`,
  { timeout: 240_000 },
  async (t) => {
    const figures = await fuzzRedirectListener({ requests: REQUESTS, seed: SEED });
    t.diagnostic(`redirect listener fuzz: ${JSON.stringify({ ...figures, examples: undefined })}`);
    const why = figures.examples.join('\n');
    assert.ok(figures.requests >= REQUESTS, 'the whole sample was judged');
    assert.equal(figures.reachedButShouldRefuse, 0, `validate saw requests the allow-list refuses:\n${why}`);
    assert.equal(figures.acceptedButShouldRefuse, 0, `answered as validated although refused:\n${why}`);
    assert.equal(figures.unattributed, 0, `validate calls no generated request explains:\n${why}`);
    assert.equal(figures.refusedButShouldAccept, 0, `refused although the allow-list lets them through:\n${why}`);
    assert.ok(
      figures.accepted > REQUESTS / 5 && figures.refused > REQUESTS / 3,
      'the sample exercises both sides of the allow-list',
    );
    assert.equal(figures.hung, 0, 'no connection outlived its deadline');
    assert.equal(figures.garbled, 0, 'every response parsed');
    assert.equal(figures.servesAfter, true, 'a valid callback afterwards completes the sign-in');
    assert.deepEqual(figures.leakedHandles, {}, 'no TCP socket or server handle left after the flow');
  },
);

test('P-d a second Host after 2,000 header fields is seen by the redirect listener', async (t) => {
  let calls = 0;
  const listener = await startRedirectListener<string>({
    timeoutMs: 30_000,
    validate: () => {
      calls++;
      throw new CompanionError('ERR_OAUTH_STATE_MISMATCH');
    },
  });
  t.after(() => listener.cancel());
  const filler = Array.from({ length: 2_100 }, (_, i) => `x${i % 10}:`);
  const response = await rawRequest(listener.port, [
    'GET /callback?code=a&state=b HTTP/1.1',
    `Host: 127.0.0.1:${listener.port}`,
    ...filler,
    'Host: evil.example',
  ]);
  assert.equal(response.status, 400);
  assert.equal(calls, 0, 'validate never ran');
});
