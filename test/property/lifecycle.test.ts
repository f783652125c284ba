// Property tests of the runtime lifecycle: no sequence of events and times reaches an undefined state,
// every accepted move is the table's, a refused move leaves the snapshot as it was, and a crash loop
// holds until reset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  transition,
  initialLifecycle,
  createRestartPolicy,
  LIFECYCLE_STATES,
  LIFECYCLE_EVENTS,
  LIFECYCLE_TABLE,
  type LifecycleEvent,
  type LifecycleSnapshot,
} from '../../src/core/lifecycle.js';
import { isCompanionError } from '../../src/core/errors.js';

const policyArb = fc
  .record({
    baseDelayMs: fc.integer({ min: 1, max: 1_000 }),
    extra: fc.integer({ min: 0, max: 100_000 }),
    maxCrashes: fc.integer({ min: 1, max: 8 }),
    windowMs: fc.integer({ min: 1, max: 600_000 }),
  })
  .map(({ baseDelayMs, extra, maxCrashes, windowMs }) =>
    createRestartPolicy({ baseDelayMs, maxDelayMs: baseDelayMs + extra, maxCrashes, windowMs }),
  );

const eventArb = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom(...LIFECYCLE_EVENTS) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'explode',
      '',
      'READY',
      'constructor',
      '__proto__',
      'toString',
    ) as unknown as fc.Arbitrary<LifecycleEvent>,
  },
);
const stepArb = fc.tuple(
  eventArb,
  fc.oneof(fc.integer({ min: 0, max: 2_000 }), fc.integer({ min: 0, max: 1_000_000 })),
);

function checkInvariants(s: LifecycleSnapshot): void {
  assert.ok((LIFECYCLE_STATES as readonly string[]).includes(s.state), `undefined state ${String(s.state)}`);
  assert.equal(s.restartAt !== null, s.state === 'backoff', 'restartAt is set exactly in backoff');
  if (s.state === 'failed' || s.state === 'backoff') assert.notEqual(s.code, null);
  if (s.state !== 'failed') assert.ok(s.crashTimes.length < s.policy.maxCrashes, 'a crash loop always ends in failed');
  assert.ok(Object.isFrozen(s));
}

test('transition() never reaches an undefined state over random event sequences and times (5,000 sequences)', () => {
  fc.assert(
    fc.property(
      policyArb,
      fc.integer({ min: 0, max: 1e12 }),
      fc.array(stepArb, { maxLength: 80 }),
      (policy, t0, steps) => {
        let s = initialLifecycle(t0, policy);
        let now = t0;
        let crashLooped = false;
        for (const [event, dt] of steps) {
          now += dt;
          const before = s;
          let next: LifecycleSnapshot | undefined;
          try {
            next = transition(s, event, now);
          } catch (error) {
            assert.ok(
              isCompanionError(error, 'ERR_LIFECYCLE_ILLEGAL_TRANSITION', 'ERR_LIFECYCLE_CRASH_LOOP'),
              String(error),
            );
            assert.equal(s, before);
            // Refused although the table lists it: only a retry before restartAt.
            if (Object.hasOwn(LIFECYCLE_TABLE[s.state], event)) {
              assert.equal(event, 'retry');
              assert.ok(s.restartAt !== null && now < s.restartAt);
            }
            continue;
          }
          const target = Object.hasOwn(LIFECYCLE_TABLE[before.state], event)
            ? LIFECYCLE_TABLE[before.state][event]
            : undefined;
          assert.ok(target !== undefined, `${before.state} + ${event} was accepted but is not in the table`);
          if (target === 'crash') assert.ok(next.state === 'backoff' || next.state === 'failed');
          else assert.equal(next.state, target);
          if (event === 'retry') assert.ok(before.restartAt !== null && now >= before.restartAt);
          if (next.state === 'failed' && next.code === 'ERR_LIFECYCLE_CRASH_LOOP') crashLooped = true;
          if (crashLooped) {
            // After a crash loop the runtime stays down until an explicit reset.
            assert.ok(next.state === 'failed' || (event === 'reset' && next.state === 'stopped'));
            if (event === 'reset') crashLooped = false;
          }
          checkInvariants(next);
          s = next;
        }
      },
    ),
    { numRuns: 5_000 },
  );
});

test('transition() keeps every snapshot well-formed under arbitrary (even backwards) times (3,000 sequences)', () => {
  const timeArb = fc.oneof(
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(0, -1, Number.MAX_SAFE_INTEGER),
  );
  fc.assert(
    fc.property(policyArb, fc.array(fc.tuple(eventArb, timeArb), { maxLength: 60 }), (policy, steps) => {
      let s = initialLifecycle(0, policy);
      for (const [event, now] of steps) {
        try {
          s = transition(s, event, now);
        } catch (error) {
          assert.ok(
            isCompanionError(error, 'ERR_LIFECYCLE_ILLEGAL_TRANSITION', 'ERR_LIFECYCLE_CRASH_LOOP'),
            String(error),
          );
        }
        checkInvariants(s);
      }
    }),
    { numRuns: 3_000 },
  );
});
