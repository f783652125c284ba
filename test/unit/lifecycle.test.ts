import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  transition,
  canTransition,
  initialLifecycle,
  createRestartPolicy,
  restartDelayMs,
  DEFAULT_RESTART_POLICY,
  LIFECYCLE_STATES,
  LIFECYCLE_EVENTS,
  LIFECYCLE_TABLE,
  STOP_GRACE_MS,
  type LifecycleEvent,
  type LifecycleSnapshot,
  type LifecycleState,
} from '../../src/core/lifecycle.js';

const policy = createRestartPolicy({ baseDelayMs: 100, maxDelayMs: 1_000, maxCrashes: 4, windowMs: 60_000 });

function run(events: readonly LifecycleEvent[], start = initialLifecycle(0, policy), t0 = 0): LifecycleSnapshot {
  let s = start;
  let now = t0;
  for (const event of events) {
    now += 1;
    if (event === 'retry' && s.restartAt !== null) now = Math.max(now, s.restartAt);
    s = transition(s, event, now);
  }
  return s;
}

const REACH: Record<LifecycleState, LifecycleEvent[]> = {
  stopped: [],
  verifying: ['start'],
  starting: ['start', 'verified'],
  ready: ['start', 'verified', 'spawned-ready'],
  degraded: ['start', 'verified', 'spawned-ready', 'degrade'],
  stopping: ['start', 'verified', 'spawned-ready', 'stop'],
  backoff: ['start', 'verified', 'crashed'],
  failed: ['start', 'verify-failed'],
};

// The legal moves, written out independently of LIFECYCLE_TABLE ('crash' = backoff or failed by policy).
const EXPECTED: Record<LifecycleState, Partial<Record<LifecycleEvent, string>>> = {
  stopped: { start: 'verifying', stop: 'stopped' },
  verifying: { verified: 'starting', 'verify-failed': 'failed', stop: 'stopped' },
  starting: { 'spawned-ready': 'ready', crashed: 'backoff', stop: 'stopping' },
  ready: {
    'health-ok': 'ready',
    'health-failed': 'degraded',
    degrade: 'degraded',
    crashed: 'backoff',
    stop: 'stopping',
  },
  degraded: {
    'health-ok': 'degraded',
    'health-failed': 'degraded',
    degrade: 'degraded',
    recover: 'ready',
    crashed: 'backoff',
    stop: 'stopping',
  },
  stopping: { stopped: 'stopped', killed: 'stopped', crashed: 'stopped', stop: 'stopping' },
  backoff: { retry: 'verifying', stop: 'stopped' },
  failed: { reset: 'stopped', stop: 'failed' },
};

for (const state of LIFECYCLE_STATES) {
  test(`transition() from ${state} allows exactly its table row and refuses every other event`, () => {
    const from = run(REACH[state]);
    assert.equal(from.state, state);
    for (const event of LIFECYCLE_EVENTS) {
      const want = EXPECTED[state][event];
      const now = Math.max(from.since + 1, from.restartAt ?? 0);
      if (want === undefined) {
        assert.throws(
          () => transition(from, event, now),
          { name: 'CompanionError', code: 'ERR_LIFECYCLE_ILLEGAL_TRANSITION' },
          `${state} + ${event}`,
        );
        assert.equal(canTransition(from, event, now), false);
        assert.equal(LIFECYCLE_TABLE[state][event], undefined);
      } else {
        assert.equal(transition(from, event, now).state, want, `${state} + ${event}`);
        assert.equal(canTransition(from, event, now), true);
      }
    }
  });
}

test('transition() walks the happy path and records when each state was entered', () => {
  let s = initialLifecycle(1_000, policy);
  s = transition(s, 'start', 1_001);
  s = transition(s, 'verified', 1_002);
  s = transition(s, 'spawned-ready', 1_003);
  assert.deepEqual([s.state, s.since], ['ready', 1_003]);
  s = transition(s, 'health-ok', 1_010);
  assert.deepEqual([s.state, s.since], ['ready', 1_003]);
  s = transition(s, 'health-failed', 1_020);
  assert.deepEqual([s.state, s.since], ['degraded', 1_020]);
  s = transition(s, 'recover', 1_030);
  s = transition(s, 'stop', 1_040);
  s = transition(s, 'stopped', 1_050);
  assert.deepEqual([s.state, s.since, s.forcedStop, s.code, s.restartAt], ['stopped', 1_050, false, null, null]);
});

test('transition() records a forced stop (killed after the grace period) until the next start', () => {
  let s = run(['start', 'verified', 'spawned-ready', 'stop', 'killed']);
  assert.deepEqual([s.state, s.forcedStop], ['stopped', true]);
  s = transition(s, 'stop', 100);
  assert.equal(s.forcedStop, true);
  s = transition(s, 'start', 101);
  assert.equal(s.forcedStop, false);
  assert.ok(STOP_GRACE_MS > 0 && Number.isInteger(STOP_GRACE_MS));
});

test('transition() backs off exponentially after crashes and refuses a retry before restartAt', () => {
  let s = run(['start', 'verified', 'spawned-ready']);
  const delays: number[] = [];
  for (let i = 0; i < 3; i++) {
    const at = s.since + 10;
    s = transition(s, 'crashed', at, 'ERR_SPAWN_EXITED');
    assert.equal(s.state, 'backoff');
    assert.equal(s.code, 'ERR_SPAWN_EXITED');
    delays.push(s.restartAt! - at);
    assert.throws(() => transition(s, 'retry', s.restartAt! - 1), { code: 'ERR_LIFECYCLE_ILLEGAL_TRANSITION' });
    s = transition(s, 'retry', s.restartAt!);
    s = transition(transition(s, 'verified', s.since + 1), 'spawned-ready', s.since + 2);
  }
  assert.deepEqual(delays, [100, 200, 400]);
});

test('transition() stops restarting after maxCrashes crashes in the window: failed with ERR_LIFECYCLE_CRASH_LOOP until reset', () => {
  let s = run(['start', 'verified']);
  for (let i = 0; i < 3; i++) {
    s = transition(s, 'crashed', s.since + 1);
    s = transition(transition(s, 'retry', s.restartAt!), 'verified', s.restartAt! + 1);
  }
  s = transition(s, 'crashed', s.since + 1);
  assert.deepEqual(
    [s.state, s.code, s.crashTimes.length, s.restartAt],
    ['failed', 'ERR_LIFECYCLE_CRASH_LOOP', 4, null],
  );
  for (const event of ['start', 'retry'] as const) {
    assert.throws(() => transition(s, event, s.since + 1e9), {
      name: 'CompanionError',
      code: 'ERR_LIFECYCLE_CRASH_LOOP',
    });
  }
  assert.equal(transition(s, 'stop', s.since + 1).state, 'failed');
  s = transition(s, 'reset', s.since + 1);
  assert.deepEqual([s.state, s.code, s.crashTimes.length], ['stopped', null, 0]);
  assert.equal(transition(s, 'start', s.since + 1).state, 'verifying');
});

test('transition() forgets crashes older than the window, so the delay falls back to the base', () => {
  let s = run(['start', 'verified']);
  s = transition(s, 'crashed', 10);
  s = transition(transition(s, 'retry', s.restartAt!), 'verified', s.restartAt! + 1);
  s = transition(s, 'crashed', 20_000);
  assert.equal(s.restartAt! - 20_000, 200);
  s = transition(transition(s, 'retry', s.restartAt!), 'verified', s.restartAt! + 1);
  const late = 20_000 + policy.windowMs + 1;
  s = transition(s, 'crashed', late);
  assert.deepEqual([s.crashTimes, s.restartAt! - late], [[late], 100]);
});

test('transition() does not count the exit caused by a stop as a crash', () => {
  const s = run(['start', 'verified', 'spawned-ready', 'stop', 'crashed']);
  assert.deepEqual([s.state, s.crashTimes.length], ['stopped', 0]);
});

test('transition() records why verification failed, ERR_MODEL_CHANGED by default', () => {
  assert.equal(run(['start', 'verify-failed']).code, 'ERR_MODEL_CHANGED');
  assert.equal(
    transition(run(['start']), 'verify-failed', 5, 'ERR_MODEL_NOT_INSTALLED').code,
    'ERR_MODEL_NOT_INSTALLED',
  );
  assert.equal(run(['start', 'verify-failed', 'reset', 'start']).state, 'verifying');
});

test('transition() returns frozen snapshots and never changes its input', () => {
  const before = run(['start', 'verified', 'spawned-ready']);
  const copy = structuredClone({ ...before, policy: undefined });
  const after = transition(before, 'crashed', 50);
  assert.deepEqual({ ...before, policy: undefined }, copy);
  assert.ok(Object.isFrozen(after) && Object.isFrozen(after.crashTimes));
  assert.throws(() => {
    (after as { state: string }).state = 'ready';
  }, TypeError);
});

test('transition() refuses unknown events and states with ERR_LIFECYCLE_ILLEGAL_TRANSITION, without echoing them', () => {
  const s = initialLifecycle(0, policy);
  assert.throws(
    () => transition(s, 'explode' as LifecycleEvent, 1),
    (error: Error & { code?: string }) => {
      assert.equal(error.code, 'ERR_LIFECYCLE_ILLEGAL_TRANSITION');
      assert.ok(!error.message.includes('explode'));
      return true;
    },
  );
  assert.throws(() => transition({ ...s, state: 'zombie' as LifecycleState }, 'start', 1), {
    code: 'ERR_LIFECYCLE_ILLEGAL_TRANSITION',
  });
});

test('transition() throws a TypeError for a bad time, a forged snapshot or an unknown code', () => {
  const s = initialLifecycle(0, policy);
  for (const now of [Number.NaN, Infinity, '5', undefined]) {
    assert.throws(() => transition(s, 'start', now as number), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  }
  assert.throws(() => transition({ ...s, policy: { ...policy } }, 'start', 1), { name: 'TypeError' });
  assert.throws(() => transition(null as unknown as LifecycleSnapshot, 'start', 1), { name: 'TypeError' });
  assert.throws(() => transition(run(['start', 'verified']), 'crashed', 9, 'ERR_NOPE' as never), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG_VALUE',
  });
  assert.throws(() => initialLifecycle(0, { ...policy }), { name: 'TypeError' });
});

test('createRestartPolicy() validates its numbers and restartDelayMs() doubles up to the cap', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 50].map((n) => restartDelayMs(policy, n)),
    [100, 200, 400, 800, 1_000, 1_000],
  );
  assert.equal(restartDelayMs(DEFAULT_RESTART_POLICY, 1), DEFAULT_RESTART_POLICY.baseDelayMs);
  for (const bad of [
    { baseDelayMs: 0, maxDelayMs: 10, maxCrashes: 1, windowMs: 1 },
    { baseDelayMs: 10, maxDelayMs: 5, maxCrashes: 1, windowMs: 1 },
    { baseDelayMs: 10, maxDelayMs: 10, maxCrashes: 0, windowMs: 1 },
    { baseDelayMs: 10, maxDelayMs: 10, maxCrashes: 1, windowMs: 0 },
    { baseDelayMs: 1.5, maxDelayMs: 10, maxCrashes: 1, windowMs: 1 },
  ]) {
    assert.throws(() => createRestartPolicy(bad), { name: 'TypeError' });
  }
});
