// The health monitor: interval and on-demand checks with injected clocks and timers (no sleeping).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHealthMonitor, type HealthSample } from '../../src/runtime/health.js';

function fakeTimers(): {
  timers: { setTimeout: (cb: () => void, ms: number) => unknown; clearTimeout: (h: unknown) => void };
  fire: () => boolean;
  pending: () => number[];
} {
  let next = 1;
  const queue = new Map<number, { cb: () => void; ms: number }>();
  return {
    timers: {
      setTimeout: (cb, ms) => {
        const id = next++;
        queue.set(id, { cb, ms });
        return id;
      },
      clearTimeout: (h) => {
        queue.delete(h as number);
      },
    },
    fire: () => {
      const first = queue.entries().next();
      if (first.done === true) return false;
      queue.delete(first.value[0]);
      first.value[1].cb();
      return true;
    },
    pending: () => [...queue.values()].map((t) => t.ms),
  };
}

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('createHealthMonitor() reports each check with its time and latency, on an interval', async () => {
  const { timers, fire, pending } = fakeTimers();
  let wall = 1000;
  let mono = 0;
  const answers = [true, false, true];
  const timeouts: number[] = [];
  const samples: HealthSample[] = [];
  const monitor = createHealthMonitor({
    probe: async (timeoutMs) => {
      timeouts.push(timeoutMs);
      mono += 7;
      return answers.shift() ?? true;
    },
    intervalMs: 500,
    timeoutMs: 200,
    onHealth: (sample) => samples.push(sample),
    now: () => (wall += 10),
    monotonic: () => mono,
    timers,
  });
  monitor.start();
  await flush();
  assert.deepEqual(samples, [{ ok: true, at: 1010, latencyMs: 7 }]);
  assert.deepEqual(pending(), [500]);
  assert.ok(fire());
  await flush();
  assert.deepEqual(
    samples.map((s) => s.ok),
    [true, false],
  );
  assert.ok(fire());
  await flush();
  assert.deepEqual(
    samples.map((s) => s.ok),
    [true, false, true],
  );
  assert.deepEqual(timeouts, [200, 200, 200]);
  assert.deepEqual(monitor.last, samples[2]);
  monitor.stop();
  assert.deepEqual(pending(), []);
});

test('createHealthMonitor() counts a throwing or hanging-then-false probe as unhealthy and keeps going', async () => {
  const { timers, fire } = fakeTimers();
  const samples: HealthSample[] = [];
  let calls = 0;
  const monitor = createHealthMonitor({
    probe: async () => {
      calls++;
      if (calls === 1) throw new Error('connect refused');
      return false;
    },
    intervalMs: 100,
    timeoutMs: 50,
    onHealth: (sample) => samples.push(sample),
    timers,
  });
  monitor.start();
  await flush();
  fire();
  await flush();
  assert.deepEqual(
    samples.map((s) => s.ok),
    [false, false],
  );
  monitor.stop();
});

test('checkNow() joins a check in flight instead of starting a second one', async () => {
  const { timers } = fakeTimers();
  let release: (ok: boolean) => void = () => undefined;
  let calls = 0;
  const monitor = createHealthMonitor({
    probe: () => {
      calls++;
      return new Promise<boolean>((resolve) => {
        release = resolve;
      });
    },
    intervalMs: 100,
    timeoutMs: 50,
    onHealth: () => undefined,
    timers,
  });
  const first = monitor.checkNow();
  const second = monitor.checkNow();
  release(true);
  const [a, b] = await Promise.all([first, second]);
  assert.equal(calls, 1);
  assert.equal(a, b);
  assert.equal(a.ok, true);
  assert.equal(monitor.last, a);
});
