import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAdmission, NOT_READY_RETRY_AFTER_SECONDS, type Release } from '../../src/core/admission.js';
import { CompanionError } from '../../src/core/errors.js';
import { flush, manualTimers } from '../helpers/cores-timers.js';

function setup(options: { maxConcurrent?: number; maxQueue?: number; queueTimeoutMs?: number; ready?: boolean } = {}) {
  const timers = manualTimers();
  const admission = createAdmission({
    maxConcurrent: 2,
    maxQueue: 2,
    queueTimeoutMs: 5_000,
    ready: true,
    timers,
    ...options,
  });
  return { admission, timers };
}

/** Tracks how a promise settled without awaiting it. */
function track<T>(promise: Promise<T>): { value?: T; error?: unknown; settled: boolean } {
  const state: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  promise.then(
    (value) => {
      state.value = value;
      state.settled = true;
    },
    (error: unknown) => {
      state.error = error;
      state.settled = true;
    },
  );
  return state;
}

test('createAdmission() is not ready by default: acquire() rejects with ERR_ADMISSION_NOT_READY and a Retry-After', async () => {
  const admission = createAdmission({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 1_000, timers: manualTimers() });
  await assert.rejects(admission.acquire(), (error: CompanionError) => {
    assert.equal(error.code, 'ERR_ADMISSION_NOT_READY');
    assert.equal(error.detail?.retryAfterSeconds, NOT_READY_RETRY_AFTER_SECONDS);
    return true;
  });
  assert.equal(admission.retryAfterSeconds(), NOT_READY_RETRY_AFTER_SECONDS);
  admission.setReady(true);
  const release = await admission.acquire();
  release();
  assert.equal(admission.stats().refusedNotReady, 1);
});

test('acquire() admits up to maxConcurrent at once, queues up to maxQueue, and refuses the next with ERR_ADMISSION_QUEUE_FULL', async () => {
  const { admission } = setup();
  const a = await admission.acquire();
  const b = await admission.acquire();
  const c = track(admission.acquire());
  const d = track(admission.acquire());
  await assert.rejects(admission.acquire(), (error: CompanionError) => {
    assert.equal(error.code, 'ERR_ADMISSION_QUEUE_FULL');
    assert.equal(error.detail?.retryAfterSeconds, 5);
    return true;
  });
  assert.deepEqual([admission.stats().active, admission.stats().queued, admission.stats().refusedQueueFull], [2, 2, 1]);
  await flush();
  assert.equal(c.settled || d.settled, false);
  a();
  await flush();
  assert.equal(c.settled, true);
  assert.equal(d.settled, false, 'first in, first out');
  b();
  await flush();
  assert.equal(d.settled, true);
  c.value!();
  d.value!();
  assert.deepEqual([admission.stats().active, admission.stats().queued, admission.stats().admitted], [0, 0, 4]);
});

test('a release function is idempotent: calling it twice frees one slot', async () => {
  const { admission } = setup({ maxConcurrent: 1, maxQueue: 2 });
  const first = await admission.acquire();
  const second = track(admission.acquire());
  const third = track(admission.acquire());
  first();
  first();
  await flush();
  assert.equal(second.settled, true);
  assert.equal(third.settled, false);
  assert.equal(admission.stats().active, 1);
  second.value!();
  await flush();
  third.value!();
  assert.equal(admission.stats().active, 0);
});

test('acquire() rejects a queued request with ERR_ADMISSION_TIMEOUT after queueTimeoutMs and clears its timer when granted', async () => {
  const { admission, timers } = setup({ maxConcurrent: 1, maxQueue: 2, queueTimeoutMs: 1_000 });
  const held = await admission.acquire();
  const late = track(admission.acquire());
  timers.advance(999);
  await flush();
  assert.equal(late.settled, false);
  timers.advance(1);
  await flush();
  assert.equal((late.error as CompanionError).code, 'ERR_ADMISSION_TIMEOUT');
  const granted = track(admission.acquire());
  held();
  await flush();
  assert.equal(timers.pending(), 0);
  granted.value!();
  assert.deepEqual([admission.stats().active, admission.stats().queued, admission.stats().timedOut], [0, 0, 1]);
});

test('acquire() rejects with ERR_ADMISSION_ABORTED when its signal aborts while queued, or was aborted already', async () => {
  const { admission, timers } = setup({ maxConcurrent: 1, maxQueue: 2 });
  const held = await admission.acquire();
  const controller = new AbortController();
  const queued = track(admission.acquire(controller.signal));
  controller.abort();
  await flush();
  assert.equal((queued.error as CompanionError).code, 'ERR_ADMISSION_ABORTED');
  assert.equal(timers.pending(), 0);
  await assert.rejects(admission.acquire(AbortSignal.abort()), { code: 'ERR_ADMISSION_ABORTED' });
  held();
  assert.deepEqual([admission.stats().active, admission.stats().queued, admission.stats().aborted], [0, 0, 2]);
  await assert.rejects(admission.acquire({} as AbortSignal), { name: 'TypeError' });
});

test('an abort after the slot was granted changes nothing', async () => {
  const { admission } = setup({ maxConcurrent: 1 });
  const controller = new AbortController();
  const release = await admission.acquire(controller.signal);
  controller.abort();
  assert.equal(admission.stats().active, 1);
  release();
  assert.equal(admission.stats().active, 0);
});

test('setReady(false) refuses everything queued with ERR_ADMISSION_NOT_READY and keeps running requests until released', async () => {
  const { admission, timers } = setup({ maxConcurrent: 1, maxQueue: 3 });
  const held = await admission.acquire();
  const queued = [track(admission.acquire()), track(admission.acquire())];
  admission.setReady(false);
  await flush();
  assert.deepEqual(
    queued.map((q) => (q.error as CompanionError).code),
    ['ERR_ADMISSION_NOT_READY', 'ERR_ADMISSION_NOT_READY'],
  );
  assert.equal(timers.pending(), 0);
  assert.deepEqual([admission.stats().active, admission.stats().queued, admission.stats().ready], [1, 0, false]);
  held();
  assert.equal(admission.stats().active, 0);
  admission.setReady(true);
  (await admission.acquire())();
  assert.throws(() => admission.setReady('yes' as unknown as boolean), { name: 'TypeError' });
});

test('maxQueue 0 refuses at once when every slot is busy', async () => {
  const { admission } = setup({ maxConcurrent: 1, maxQueue: 0 });
  const held: Release = await admission.acquire();
  await assert.rejects(admission.acquire(), { code: 'ERR_ADMISSION_QUEUE_FULL' });
  held();
});

test('retryAfterSeconds() is the queue timeout in whole seconds, between 1 and 60', () => {
  assert.equal(setup({ queueTimeoutMs: 1 }).admission.retryAfterSeconds(), 1);
  assert.equal(setup({ queueTimeoutMs: 2_500 }).admission.retryAfterSeconds(), 3);
  assert.equal(setup({ queueTimeoutMs: 600_000 }).admission.retryAfterSeconds(), 60);
});

test('createAdmission() refuses bad options with a TypeError', () => {
  for (const bad of [
    { maxConcurrent: 0, maxQueue: 1, queueTimeoutMs: 1 },
    { maxConcurrent: 1, maxQueue: -1, queueTimeoutMs: 1 },
    { maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 0 },
    { maxConcurrent: 1.5, maxQueue: 1, queueTimeoutMs: 1 },
  ]) {
    assert.throws(() => createAdmission(bad), { name: 'TypeError' });
  }
});

test('createAdmission() with the real timers times a queued request out', async () => {
  const admission = createAdmission({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 20, ready: true });
  const held = await admission.acquire();
  await assert.rejects(admission.acquire(), { code: 'ERR_ADMISSION_TIMEOUT' });
  held();
});

test('setMaxConcurrent() raises the limit and admits queued requests at once, in order', async () => {
  const { admission } = setup({ maxConcurrent: 1, maxQueue: 4 });
  const a = await admission.acquire();
  const b = track(admission.acquire());
  const c = track(admission.acquire());
  await flush();
  assert.equal(b.settled, false);
  admission.setMaxConcurrent(3);
  await flush();
  assert.equal(b.settled, true);
  assert.equal(c.settled, true);
  assert.equal(admission.stats().active, 3);
  assert.equal(admission.stats().maxConcurrent, 3);
  a();
});

test('setMaxConcurrent() lowered lets running requests finish and admits no more until below it', async () => {
  const { admission } = setup({ maxConcurrent: 2, maxQueue: 4 });
  const a = await admission.acquire();
  const b = await admission.acquire();
  admission.setMaxConcurrent(1);
  const c = track(admission.acquire());
  a();
  await flush();
  assert.equal(c.settled, false, 'one still runs: the limit is 1');
  b();
  await flush();
  assert.equal(c.settled, true);
  assert.throws(() => admission.setMaxConcurrent(0), { code: 'ERR_INVALID_ARG_VALUE' });
});
