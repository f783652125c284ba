// Load (issue 11, short form; `npm run bench -- assurance` runs the full one): 500 concurrent connections
// through the front door against the real bundled runtime (tiny GGUF, threads 1, max_tokens 2), with the
// production admission limits. Every request must end with 200, or 429/503 with Retry-After; none may hang;
// the companion's RSS stays bounded; /health stays green throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runLoad } from '../helpers/assurance-load.js';
import { startTestCompanion } from '../helpers/assurance-runtime.js';
import { handleCounts, settleHandles } from '../helpers/fuzz-http.js';

const CONNECTIONS = 500;
const PER_CONNECTION = Number(process.env.COMPANION_LOAD_REQUESTS_PER_CONNECTION ?? 6);
/** The companion may grow by this much under the load (it measured ~50 MiB here). */
const RSS_GROWTH_BOUND = 256 * 1024 * 1024;

test(
  `500 concurrent connections × ${PER_CONNECTION} requests through the front door to the real runtime: 200 or 429/503 with Retry-After, no hang, bounded RSS, health green`,
  { timeout: 240_000 },
  async (t) => {
    const baseline = handleCounts();
    const companion = await startTestCompanion();
    t.after(() => companion.close());
    const figures = await runLoad(companion, {
      connections: CONNECTIONS,
      requestsPerConnection: PER_CONNECTION,
      maxTokens: 2,
    });
    t.diagnostic(`load: ${JSON.stringify(figures)}`);
    assert.equal(figures.requests, CONNECTIONS * PER_CONNECTION);
    assert.equal(figures.hung, 0, 'no request outlived its timeout');
    assert.equal(figures.transportErrors, 0, 'no connection was reset or refused');
    assert.deepEqual(figures.otherStatus, {}, 'only 200, 429 and 503');
    assert.equal(figures.incomplete, 0, 'every 200 carried a complete answer');
    assert.equal(figures.missingRetryAfter, 0, 'every 429/503 said when to come back');
    assert.equal(figures.served + figures.refused429 + figures.refused503, figures.requests);
    assert.ok(figures.served > 0, 'the runtime served some of the load');
    assert.ok(figures.healthChecks > 0);
    assert.equal(
      figures.healthNotOk,
      0,
      'the front door /health answered 200 and the companion stayed available throughout',
    );
    assert.ok(
      figures.companionPeakRssBytes - figures.companionRssBeforeBytes < RSS_GROWTH_BOUND,
      "the companion's RSS stayed bounded",
    );
    assert.equal(
      figures.servesAfter,
      true,
      'a request right after the load is served: no admission slot was left behind',
    );
    assert.equal(figures.availableAfter, true);
    await companion.close();
    assert.deepEqual(await settleHandles(baseline), {}, 'no socket left open after closing');
  },
);
