// Soak (issue 11, short form; `npm run bench -- assurance --minutes N` runs the long one): mixed streamed
// and plain completions through the front door (official openai SDK) while the runtime child is SIGKILLed
// at random moments and the supervisor restarts it with backoff. Every call must end with a result or a
// clear error; what the companion reports must follow reality within one health interval; nothing of the
// runtime (process, socket, run directory entry) may remain afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRestartPolicy } from '../../src/core/lifecycle.js';
import { entriesUnder, runtimeDescendants, startTestCompanion } from '../helpers/assurance-runtime.js';
import { runSoak } from '../helpers/assurance-soak.js';
import { handleCounts, settleHandles } from '../helpers/fuzz-http.js';

const SECONDS = Number(process.env.COMPANION_SOAK_SECONDS ?? 40);
const HEALTH_INTERVAL_MS = 250;

test(
  `soak ${SECONDS} s: runtime SIGKILLed at random, every call ends with a result or a clear error, availability follows reality within one health interval, nothing left behind`,
  { timeout: (SECONDS + 120) * 1000 },
  async (t) => {
    const baseline = handleCounts();
    const companion = await startTestCompanion({
      healthIntervalMs: HEALTH_INTERVAL_MS,
      // Restart quickly and never give up: the soak kills far more often than a real runtime crashes.
      restartPolicy: createRestartPolicy({ baseDelayMs: 200, maxDelayMs: 2_000, maxCrashes: 10_000, windowMs: 60_000 }),
    });
    t.after(() => companion.close());
    const figures = await runSoak(companion, {
      durationMs: SECONDS * 1000,
      healthIntervalMs: HEALTH_INTERVAL_MS,
      seed: Number(process.env.COMPANION_SOAK_SEED ?? 7),
    });
    t.diagnostic(`soak: ${JSON.stringify(figures)}`);
    assert.equal(figures.hung, 0, 'no call hung');
    assert.equal(figures.silentTruncations, 0, 'no stream ended early without an error');
    assert.equal(
      figures.otherErrors,
      0,
      `every error was an HTTP status, a cut stream or a connection error: ${figures.otherErrorSamples.join(' | ')}`,
    );
    for (const status of Object.keys(figures.httpErrors))
      assert.ok(['429', '502', '503'].includes(status), `HTTP ${status} is a clear refusal`);
    assert.ok(figures.ok > 0, 'calls were served between the kills');
    assert.ok(figures.kills >= 3, 'the runtime was killed several times');
    assert.equal(figures.restarts, figures.kills, 'the supervisor restarted the runtime after every kill');
    // The lag is measured between samples; one sampling cycle is added to the bound.
    const cycle = figures.durationMs / Math.max(1, figures.samples);
    assert.ok(
      figures.maxAvailabilityLagMs <= HEALTH_INTERVAL_MS + 2 * cycle,
      `companionAvailable() lagged reality by ${figures.maxAvailabilityLagMs} ms`,
    );
    assert.ok(
      figures.maxHealthLagMs <= HEALTH_INTERVAL_MS + 2 * cycle,
      `the front door /health lagged reality by ${figures.maxHealthLagMs} ms`,
    );

    await companion.running.close();
    assert.deepEqual(runtimeDescendants(), [], 'no runtime process left');
    assert.deepEqual(
      entriesUnder(`${companion.dataDir}/run`),
      [],
      'the run directory is empty: no socket, lock or state file',
    );
    assert.deepEqual(await settleHandles(baseline), {}, 'no socket left open in the companion');
  },
);
