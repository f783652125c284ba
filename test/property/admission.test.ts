// Property test of admission control: under any interleaving of acquire, release (also twice), abort,
// time passing and readiness changes, it never runs more than maxConcurrent, never leaves a slot free
// while someone waits, answers every waiter exactly once with a slot or one of its codes, and leaks
// neither slots nor timers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createAdmission, type Release } from '../../src/core/admission.js';
import { isCompanionError } from '../../src/core/errors.js';
import { flush, manualTimers } from '../helpers/cores-timers.js';

type Op =
  | { t: 'acquire'; withSignal: boolean }
  | { t: 'release'; i: number; twice: boolean }
  | { t: 'abort'; i: number }
  | { t: 'advance'; ms: number }
  | { t: 'ready'; value: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('acquire' as const), withSignal: fc.boolean() }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('release' as const), i: fc.nat(), twice: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('abort' as const), i: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3_000 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('ready' as const), value: fc.boolean() }) },
);

test('admission never exceeds maxConcurrent, never idles while requests wait, and never leaks a slot (3,000 runs)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 0, max: 4 }),
      fc.integer({ min: 1, max: 2_000 }),
      fc.array(opArb, { maxLength: 60 }),
      async (maxConcurrent, maxQueue, queueTimeoutMs, ops) => {
        const timers = manualTimers();
        const admission = createAdmission({ maxConcurrent, maxQueue, queueTimeoutMs, ready: true, timers });
        const held: Release[] = [];
        const waiting = new Set<{ controller: AbortController }>();
        let settledTwice = false;

        const acquire = (withSignal: boolean): void => {
          const entry = { controller: new AbortController() };
          waiting.add(entry);
          let settled = false;
          admission.acquire(withSignal ? entry.controller.signal : undefined).then(
            (release) => {
              if (settled) settledTwice = true;
              settled = true;
              waiting.delete(entry);
              held.push(release);
            },
            (error: unknown) => {
              if (settled) settledTwice = true;
              settled = true;
              waiting.delete(entry);
              assert.ok(
                isCompanionError(
                  error,
                  'ERR_ADMISSION_QUEUE_FULL',
                  'ERR_ADMISSION_NOT_READY',
                  'ERR_ADMISSION_TIMEOUT',
                  'ERR_ADMISSION_ABORTED',
                ),
                String(error),
              );
            },
          );
        };

        const check = (): void => {
          const stats = admission.stats();
          assert.ok(stats.active <= maxConcurrent, 'more running than maxConcurrent');
          assert.ok(stats.queued <= maxQueue, 'more queued than maxQueue');
          assert.equal(stats.active, held.length, 'active slots match the releases handed out');
          assert.equal(stats.queued, waiting.size, 'queued matches the unanswered acquires');
          if (stats.ready && stats.queued > 0)
            assert.equal(stats.active, maxConcurrent, 'a slot is idle while a request waits');
          if (!stats.ready) assert.equal(stats.queued, 0);
          assert.equal(timers.pending(), stats.queued, 'one timer per queued request, none left behind');
          assert.equal(settledTwice, false);
        };

        for (const op of ops) {
          switch (op.t) {
            case 'acquire':
              acquire(op.withSignal);
              break;
            case 'release': {
              if (held.length === 0) break;
              const [release] = held.splice(op.i % held.length, 1);
              release!();
              if (op.twice) release!();
              break;
            }
            case 'abort': {
              const entries = [...waiting];
              if (entries.length > 0) entries[op.i % entries.length]!.controller.abort();
              break;
            }
            case 'advance':
              timers.advance(op.ms);
              break;
            case 'ready':
              admission.setReady(op.value);
              break;
          }
          await flush();
          check();
        }

        // Drain: release everything; whatever waits is then admitted and released in turn.
        for (let round = 0; round < 100 && (held.length > 0 || waiting.size > 0); round++) {
          for (const release of held.splice(0)) release();
          if (waiting.size > 0 && !admission.stats().ready) admission.setReady(true);
          await flush();
          check();
        }
        const stats = admission.stats();
        assert.deepEqual([stats.active, stats.queued, timers.pending(), waiting.size], [0, 0, 0, 0]);
      },
    ),
    { numRuns: 3_000 },
  );
});
