// The supervisor's lifecycle paths with fake ports (no process, no file, no timer): a fake clock whose
// timers run only when a test advances it, a fake runtime whose exits and health the test decides, a
// fake model check and probe. Each path: normal start, crash and restart, crash loop, forced stop,
// stale/failing health and recovery, a model changed on disk, a start refused for its resources, and
// the illegal transitions (thrown where a caller can be told, a `fault` event where none can).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompanionError } from '../../src/core/errors.js';
import { createRestartPolicy } from '../../src/core/lifecycle.js';
import type { HealthMonitor, HealthMonitorOptions, HealthSample } from '../../src/runtime/health.js';
import type { ResourceFigures, ResourceProbe } from '../../src/runtime/probe.js';
import type { RuntimeHandle, SpawnOptions } from '../../src/runtime/spawn.js';
import {
  createSupervisor,
  type CheckedModel,
  type Supervisor,
  type SupervisorClock,
  type SupervisorEvent,
  type SupervisorOptions,
} from '../../src/runtime/manager/supervisor.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** A clock that moves only when told; `after` timers run when it passes them. */
class FakeClock implements SupervisorClock {
  t = 1_000_000;
  timers: { at: number; callback: () => void; cancelled: boolean }[] = [];
  now(): number {
    return this.t;
  }
  after(ms: number, callback: () => void): () => void {
    const timer = { at: this.t + ms, callback, cancelled: false };
    this.timers.push(timer);
    return () => {
      timer.cancelled = true;
    };
  }
  pending(): number {
    return this.timers.filter((timer) => !timer.cancelled).length;
  }
  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((timer) => !timer.cancelled && timer.at <= this.t);
    this.timers = this.timers.filter((timer) => !due.includes(timer));
    for (const timer of due) timer.callback();
  }
}

/** One fake runtime child: the test crashes it; `stop()` reports the exit it causes before it resolves, as spawnRuntime does. */
class FakeRuntime {
  forced = false;
  stops = 0;
  constructor(
    readonly pid: number,
    private readonly options: SpawnOptions,
  ) {}
  crash(): void {
    this.options.onExit?.({ code: null, signal: 'SIGKILL', expected: false });
  }
  handle(): RuntimeHandle {
    return {
      pid: this.pid,
      address: { kind: 'unix', path: `/fake/${this.pid}.sock` },
      runDir: `/fake/${this.pid}`,
      stop: async () => {
        this.stops += 1;
        this.options.onExit?.({ code: null, signal: this.forced ? 'SIGKILL' : 'SIGTERM', expected: true });
        return { forced: this.forced };
      },
      exited: new Promise(() => undefined),
      healthCheck: async () => true,
      backend: null,
      shape: { parallel: 2, contextSize: 512 },
    };
  }
}

/** A health monitor whose samples the test sends (`report`); `checkNow` reports the test's current answer. */
class FakeMonitor implements HealthMonitor {
  answer = true;
  stopped = false;
  last: HealthSample | null = null;
  constructor(
    private readonly options: HealthMonitorOptions,
    private readonly clock: FakeClock,
  ) {}
  start(): void {}
  stop(): void {
    this.stopped = true;
  }
  async checkNow(): Promise<HealthSample> {
    return this.report(this.answer);
  }
  report(ok: boolean): HealthSample {
    const sample = { ok, at: this.clock.now(), latencyMs: 1 };
    this.last = sample;
    this.options.onHealth(sample);
    return sample;
  }
}

interface Rig {
  readonly supervisor: Supervisor;
  readonly clock: FakeClock;
  readonly events: SupervisorEvent[];
  readonly runtimes: FakeRuntime[];
  readonly monitors: FakeMonitor[];
  readonly model: { changed: boolean; closes: number; figures: ResourceFigures };
  states(): string[];
}

function rig(options: Partial<SupervisorOptions> = {}, spawnError?: Error): Rig {
  const clock = new FakeClock();
  const events: SupervisorEvent[] = [];
  const runtimes: FakeRuntime[] = [];
  const monitors: FakeMonitor[] = [];
  const model = {
    changed: false,
    closes: 0,
    figures: { rssBytes: 100 * MiB, cpuPercent: 1, processes: 1, vram: null } as unknown as ResourceFigures,
  };
  const checkModel = async (): Promise<CheckedModel> => {
    if (model.changed) throw new CompanionError('ERR_MODEL_CHANGED');
    return {
      id: 'tiny',
      size: MiB,
      fd: 42,
      close: async () => {
        model.closes += 1;
      },
    };
  };
  const probe = (): ResourceProbe => ({ probe: async () => model.figures, close: () => undefined });
  const supervisor = createSupervisor({
    dataDir: '/fake/data',
    modelsDir: '/fake/data/models',
    healthIntervalMs: 1_000,
    availableMemory: () => 64 * GiB,
    restartPolicy: createRestartPolicy({ baseDelayMs: 500, maxDelayMs: 500, maxCrashes: 3, windowMs: 60_000 }),
    onEvent: (event) => events.push(event),
    ...options,
    ports: {
      clock,
      checkModel,
      probe,
      health: (monitorOptions) => {
        const monitor = new FakeMonitor(monitorOptions, clock);
        monitors.push(monitor);
        return monitor;
      },
      spawn: async (_profile, spawnOptions) => {
        if (spawnError !== undefined) throw spawnError;
        const runtime = new FakeRuntime(1000 + runtimes.length, spawnOptions);
        runtimes.push(runtime);
        return runtime.handle();
      },
      ...options.ports,
    },
  });
  const states = (): string[] => events.flatMap((e) => (e.event === 'state' ? [e.state] : []));
  return { supervisor, clock, events, runtimes, monitors, model, states };
}

/** Lets the supervisor's promise chains (a restart's launch) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i += 1) await Promise.resolve();
  await new Promise((resolve) => setImmediate(resolve));
}

test('supervisor: a start re-checks the model, spawns once, and is available after the first health success', async () => {
  const r = rig();
  await r.supervisor.start();
  assert.deepEqual(r.states(), ['verifying', 'starting', 'ready']);
  assert.equal(r.runtimes.length, 1);
  assert.equal(r.supervisor.companionAvailable(), true);
  assert.deepEqual(r.supervisor.address(), { kind: 'unix', path: '/fake/1000.sock' });
  assert.deepEqual(
    r.events.filter((e) => e.event === 'available'),
    [{ event: 'available', available: true, parallel: 2, contextSize: 512 }],
  );
  assert.equal(r.model.closes, 1, 'the model descriptor is closed once the runtime holds its copy');
  const snap = r.supervisor.snapshot();
  assert.equal(snap.state, 'ready');
  assert.equal(snap.pid, 1000);
  assert.deepEqual(snap.model, { id: 'tiny', verified: true });
  assert.equal(snap.forcedStop, false);
  assert.equal(await r.supervisor.waitAvailable(10), true);
});

test('supervisor: a crash leaves ready at once (not available), backs off, and restarts after the delay', async () => {
  const r = rig();
  await r.supervisor.start();
  r.runtimes[0]!.crash();
  assert.equal(r.supervisor.snapshot().state, 'backoff');
  assert.equal(r.supervisor.snapshot().code, 'ERR_RUNTIME_GONE');
  assert.equal(r.supervisor.companionAvailable(), false);
  assert.equal(r.supervisor.address(), null);
  assert.ok(r.events.some((e) => e.event === 'restart-scheduled' && e.inMs === 500));
  r.clock.advance(400);
  await settle();
  assert.equal(r.runtimes.length, 1, 'no restart before the backoff elapsed');
  r.clock.advance(200);
  await settle();
  assert.equal(r.runtimes.length, 2);
  assert.equal(r.supervisor.snapshot().state, 'ready');
  assert.equal(r.supervisor.snapshot().pid, 1001);
  assert.equal(r.supervisor.companionAvailable(), true);
  assert.deepEqual(r.states(), ['verifying', 'starting', 'ready', 'backoff', 'verifying', 'starting', 'ready']);
});

test('supervisor: a crash loop ends in failed (ERR_LIFECYCLE_CRASH_LOOP) and nothing is restarted any more', async () => {
  const r = rig();
  await r.supervisor.start();
  for (let crash = 1; crash < 3; crash += 1) {
    r.runtimes.at(-1)!.crash();
    r.clock.advance(501);
    await settle();
    assert.equal(r.supervisor.snapshot().state, 'ready');
  }
  r.runtimes.at(-1)!.crash();
  const snap = r.supervisor.snapshot();
  assert.equal(snap.state, 'failed');
  assert.equal(snap.code, 'ERR_LIFECYCLE_CRASH_LOOP');
  assert.equal(r.clock.pending(), 0, 'no restart is scheduled');
  r.clock.advance(60_000);
  await settle();
  assert.equal(r.runtimes.length, 3);
  const waiting = r.supervisor.waitAvailable(10);
  r.clock.advance(10);
  assert.equal(await waiting, false);
});

test('supervisor: a stop that had to SIGKILL records forcedStop in the snapshot (killed lands in stopping, not after stopped)', async () => {
  const r = rig();
  await r.supervisor.start();
  r.runtimes[0]!.forced = true;
  await r.supervisor.stop();
  const snap = r.supervisor.snapshot();
  assert.equal(snap.state, 'stopped');
  assert.equal(snap.forcedStop, true);
  assert.equal(snap.pid, null);
  assert.equal(r.runtimes[0]!.stops, 1);
  assert.deepEqual(r.states().slice(-2), ['stopping', 'stopped']);
  assert.ok(!r.events.some((e) => e.event === 'fault'));
});

test('supervisor: a graceful stop is not a forced one, and the exit it causes is not a crash', async () => {
  const r = rig();
  await r.supervisor.start();
  await r.supervisor.stop();
  const snap = r.supervisor.snapshot();
  assert.equal(snap.state, 'stopped');
  assert.equal(snap.forcedStop, false);
  assert.equal(r.clock.pending(), 0, 'no restart');
  assert.ok(!r.events.some((e) => e.event === 'restart-scheduled'));
  assert.equal(r.monitors[0]!.stopped, true);
});

test('supervisor: a health success older than the recency bound is doubt: not available while still ready', async () => {
  const r = rig({ healthRecencyMs: 5_000 });
  await r.supervisor.start();
  r.clock.advance(5_000);
  assert.equal(r.supervisor.companionAvailable(), true, 'at the bound');
  r.clock.advance(1);
  assert.equal(r.supervisor.companionAvailable(), false);
  assert.equal(r.supervisor.address(), null);
  assert.equal(r.supervisor.snapshot().state, 'ready');
  r.monitors[0]!.report(true);
  assert.equal(r.supervisor.companionAvailable(), true, 'a fresh success brings it back');
});

test('supervisor: a failing health check degrades (not available) and a success recovers', async () => {
  const r = rig();
  await r.supervisor.start();
  r.monitors[0]!.report(false);
  assert.equal(r.supervisor.snapshot().state, 'degraded');
  assert.equal(r.supervisor.companionAvailable(), false);
  r.monitors[0]!.report(true);
  assert.equal(r.supervisor.snapshot().state, 'ready');
  assert.equal(r.supervisor.companionAvailable(), true);
  assert.deepEqual(
    r.events.filter((e) => e.event === 'available').map((e) => (e.event === 'available' ? e.available : null)),
    [true, false, true],
  );
});

test('supervisor: a health sample that arrives after its runtime was stopped changes nothing', async () => {
  const r = rig();
  await r.supervisor.start();
  await r.supervisor.stop();
  const before = r.events.length;
  r.monitors[0]!.report(false);
  r.monitors[0]!.report(true);
  assert.equal(r.events.length, before);
  assert.equal(r.supervisor.snapshot().state, 'stopped');
  assert.equal(r.supervisor.snapshot().lastHealth, null);
});

test('supervisor: a model changed on disk fails its re-check on restart: failed, not available, nothing spawned', async () => {
  const r = rig();
  await r.supervisor.start();
  r.model.changed = true;
  r.runtimes[0]!.crash();
  r.clock.advance(501);
  await settle();
  const snap = r.supervisor.snapshot();
  assert.equal(snap.state, 'failed');
  assert.equal(snap.code, 'ERR_MODEL_CHANGED');
  assert.deepEqual(snap.model, { id: 'tiny', verified: false });
  assert.equal(r.runtimes.length, 1, 'no runtime on the changed model');
  assert.equal(r.supervisor.companionAvailable(), false);
  assert.deepEqual(r.states().slice(-2), ['verifying', 'failed']);
});

test('supervisor: a model changed before the first start rejects the start with its code', async () => {
  const r = rig();
  r.model.changed = true;
  await assert.rejects(r.supervisor.start(), { code: 'ERR_MODEL_CHANGED' });
  assert.equal(r.runtimes.length, 0);
  assert.equal(r.supervisor.snapshot().state, 'failed');
});

test('supervisor: a model that does not fit the memory available is refused (ERR_RESOURCE_LIMIT) and nothing is spawned', async () => {
  const r = rig({ availableMemory: () => MiB });
  await assert.rejects(r.supervisor.start(), { code: 'ERR_RESOURCE_LIMIT' });
  assert.equal(r.runtimes.length, 0);
  assert.deepEqual(r.states(), ['verifying', 'failed']);
  assert.equal(r.supervisor.snapshot().code, 'ERR_RESOURCE_LIMIT');
  assert.equal(r.model.closes, 1, 'the opened model is closed');
});

test('supervisor: an RSS past the limit degrades; health alone does not bring it back; back inside recovers', async () => {
  const r = rig({ resourceLimits: { maxRssBytes: 512 * MiB } });
  await r.supervisor.start();
  r.model.figures = { ...r.model.figures, rssBytes: 600 * MiB };
  await r.supervisor.resources();
  assert.equal(r.supervisor.snapshot().state, 'degraded');
  r.monitors[0]!.report(true);
  assert.equal(r.supervisor.snapshot().state, 'degraded');
  assert.equal(r.supervisor.companionAvailable(), false);
  r.model.figures = { ...r.model.figures, rssBytes: 100 * MiB };
  await r.supervisor.resources();
  assert.equal(r.supervisor.snapshot().state, 'ready');
  assert.equal(r.supervisor.companionAvailable(), true);
});

test('supervisor: a failed spawn is a crash (backoff) and the start rejects with its code', async () => {
  const r = rig({}, new CompanionError('ERR_SPAWN_FAILED'));
  await assert.rejects(r.supervisor.start(), { code: 'ERR_SPAWN_FAILED' });
  assert.equal(r.supervisor.snapshot().state, 'backoff');
  assert.equal(r.supervisor.snapshot().code, 'ERR_SPAWN_FAILED');
  await r.supervisor.stop();
  assert.equal(r.clock.pending(), 0, 'the stop cancelled the restart');
});

test('supervisor: start() while running is ERR_LIFECYCLE_ILLEGAL_TRANSITION, and the runtime is left alone', async () => {
  const r = rig();
  await r.supervisor.start();
  await assert.rejects(r.supervisor.start(), { code: 'ERR_LIFECYCLE_ILLEGAL_TRANSITION' });
  assert.equal(r.runtimes.length, 1);
  assert.equal(r.supervisor.snapshot().state, 'ready');
});

test('supervisor: a restart timer that fires before the backoff elapsed is reported as a fault event, not dropped', async () => {
  const early: SupervisorClock = {
    now: () => 5_000_000,
    // A broken timer: fires at once, whatever the delay.
    after: (_ms, callback) => {
      queueMicrotask(callback);
      return () => undefined;
    },
  };
  const r = rig({ ports: { clock: early } });
  await r.supervisor.start();
  r.runtimes[0]!.crash();
  await settle();
  const faults = r.events.filter((e) => e.event === 'fault');
  assert.equal(faults.length, 1);
  assert.equal(faults[0]!.event === 'fault' && faults[0]!.code, 'ERR_LIFECYCLE_ILLEGAL_TRANSITION');
  assert.equal(r.supervisor.snapshot().state, 'backoff', 'the lifecycle is left as it was');
  assert.equal(r.runtimes.length, 1, 'nothing was spawned');
});

test('supervisor: a stop during the model check ends the start without a spawn', async () => {
  let release: () => void = () => undefined;
  const r = rig({
    ports: {
      checkModel: () =>
        new Promise<CheckedModel>((resolve) => {
          release = () => resolve({ id: 'tiny', size: MiB, fd: 42, close: async () => undefined });
        }),
    },
  });
  const starting = r.supervisor.start();
  await settle();
  await r.supervisor.stop();
  release();
  await starting;
  assert.equal(r.runtimes.length, 0);
  assert.equal(r.supervisor.snapshot().state, 'stopped');
  assert.ok(!r.events.some((e) => e.event === 'fault'));
});
