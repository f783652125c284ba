// companionAvailable (D5.7) with the real bundled runtime and the generated tiny model: true only when the
// model was re-verified for this start, the lifecycle is `ready`, and a health round trip succeeded within
// the recency bound. Each test takes one of the three away and nothing else: a stopped (SIGSTOP) runtime
// whose last success ages past the bound (an injected clock, no sleeping), a model changed in place before
// a restart, a lifecycle moved to `degraded` while health is fresh. The lane selector and the front door
// go by this value, so a runtime in doubt (hung, tampered, over its limits) is never routed to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, openSync, closeSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createRestartPolicy } from '../../src/core/lifecycle.js';
import {
  createSupervisor,
  type Supervisor,
  type SupervisorEvent,
  type SupervisorOptions,
  systemClock,
} from '../../src/runtime/manager/supervisor.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { alive, tempDir, waitFor } from '../helpers/runtime-env.js';

interface Started {
  readonly supervisor: Supervisor;
  readonly events: SupervisorEvent[];
  readonly modelPath: string;
  readonly clock: { offsetMs: number };
}

/** A supervisor over a fresh data dir holding the tiny model as a verified install; started and available. */
async function startSupervisor(
  t: { after(fn: () => unknown): void },
  extra: Partial<SupervisorOptions> = {},
): Promise<Started> {
  const dir = tempDir('companion-avail-');
  const dataDir = join(dir.path, 'data');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const { modelPath } = installTinyModel(dataDir);
  const clock = { offsetMs: 0 };
  const events: SupervisorEvent[] = [];
  const supervisor = createSupervisor({
    dataDir,
    modelsDir: join(dataDir, 'models'),
    threads: 1,
    readyTimeoutMs: 60_000,
    // One check at start, then none for the length of a test: each test decides what health shows.
    healthIntervalMs: 600_000,
    healthRecencyMs: 5_000,
    healthTimeoutMs: 1_000,
    ports: { clock: { ...systemClock, now: () => Date.now() + clock.offsetMs } },
    onEvent: (event) => events.push(event),
    ...extra,
  });
  t.after(async () => {
    await supervisor.stop();
    dir.cleanup();
  });
  await supervisor.start();
  assert.equal(supervisor.companionAvailable(), true, 'available after start');
  assert.notEqual(supervisor.address(), null);
  return { supervisor, events, modelPath, clock };
}

test(
  'P-k companionAvailable() is false once the last health success is older than the recency bound (runtime stopped with SIGSTOP)',
  { timeout: 90_000 },
  async (t) => {
    const { supervisor, clock } = await startSupervisor(t);
    const pid = supervisor.snapshot().pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      stale(supervisor, clock);
    } finally {
      if (alive(pid)) process.kill(pid, 'SIGCONT');
    }
  },
);

function stale(supervisor: Supervisor, clock: { offsetMs: number }): void {
  const lastOk = supervisor.snapshot().lastHealth!;
  assert.equal(lastOk.ok, true);

  // Inside the bound (a frozen runtime is not yet known to be frozen): still available.
  clock.offsetMs = lastOk.at + 4_000 - Date.now();
  assert.equal(supervisor.companionAvailable(), true);
  // Past the bound: doubt. No health check has failed (the lifecycle is still `ready`, the last sample
  // is a success): the recency bound alone decides.
  clock.offsetMs = lastOk.at + 5_001 - Date.now();
  assert.equal(supervisor.companionAvailable(), false);
  assert.equal(supervisor.address(), null, 'the front door gets no upstream');
  const snap = supervisor.snapshot();
  assert.equal(snap.available, false);
  assert.equal(snap.state, 'ready');
  assert.equal(snap.lastHealth?.ok, true);
  assert.deepEqual(snap.model, { id: 'tiny', verified: true });
}

test(
  'P-h P-k companionAvailable() is false after the model fails its re-verification on a restart (changed in place, same size)',
  { timeout: 120_000 },
  async (t) => {
    const { supervisor, events, modelPath } = await startSupervisor(t, {
      healthIntervalMs: 200,
      restartPolicy: createRestartPolicy({ baseDelayMs: 50, maxDelayMs: 50, maxCrashes: 5, windowMs: 60_000 }),
    });
    const firstPid = supervisor.snapshot().pid!;
    // Change model bytes near the end (tensor data: the file would still load) without changing its size.
    const size = statSync(modelPath).size;
    const fd = openSync(modelPath, 'r+');
    const original = Buffer.alloc(64);
    readSync(fd, original, 0, 64, size - 256);
    const replacement = Buffer.alloc(64, original.every((b) => b === 0) ? 1 : 0);
    writeSync(fd, replacement, 0, 64, size - 256);
    closeSync(fd);
    assert.equal(statSync(modelPath).size, size);

    const mark = events.length;
    process.kill(-firstPid, 'SIGKILL');
    // The supervisor restarts after 50 ms, re-checks the model and must stop there. Bounded: whichever
    // comes first, a `failed` state or the runtime coming back.
    await waitFor(
      () =>
        events
          .slice(mark)
          .some((e) => (e.event === 'state' && e.state === 'failed') || (e.event === 'available' && e.available)),
      60_000,
      'the restart to end',
    );
    const after = events.slice(mark);
    assert.deepEqual(
      after.filter((e) => e.event === 'available'),
      [{ event: 'available', available: false }],
      'unavailable once, never available again',
    );
    assert.ok(
      !after.some((e) => e.event === 'state' && (e.state === 'starting' || e.state === 'ready')),
      'no runtime was started on the changed model',
    );
    const snap = supervisor.snapshot();
    assert.equal(snap.state, 'failed');
    assert.equal(snap.code, 'ERR_MODEL_CHANGED');
    assert.deepEqual(snap.model, { id: 'tiny', verified: false });
    assert.equal(snap.pid, null);
    assert.equal(supervisor.companionAvailable(), false);
    assert.equal(supervisor.address(), null);
    assert.equal(await supervisor.waitAvailable(200), false);
  },
);

test(
  'P-k companionAvailable() is false while the lifecycle is not ready (degraded over its resource limit) even with fresh, good health',
  { timeout: 90_000 },
  async (t) => {
    // 64 MiB: above the start floor of the tiny model (its bytes + 32 MiB), so the start is allowed, and
    // below what a loaded runtime holds (node and llama.cpp), so the first probe finds it over the limit.
    const limit = 64 * 1024 * 1024;
    const { supervisor, events } = await startSupervisor(t, { resourceLimits: { maxRssBytes: limit } });
    const mark = events.length;
    const figures = await supervisor.resources();
    assert.ok(figures !== null && figures.rssBytes > limit, 'the probe saw the runtime over its limit');
    const snap = supervisor.snapshot();
    assert.equal(snap.state, 'degraded');
    // Everything else still says yes: verified model, a good and fresh health sample, a live runtime.
    assert.deepEqual(snap.model, { id: 'tiny', verified: true });
    assert.equal(snap.lastHealth?.ok, true);
    assert.ok(Date.now() - snap.lastHealth!.at < 5_000);
    assert.notEqual(snap.pid, null);
    assert.equal(supervisor.companionAvailable(), false);
    assert.equal(supervisor.address(), null);
    assert.deepEqual(
      events.slice(mark).filter((e) => e.event === 'available'),
      [{ event: 'available', available: false }],
    );
  },
);
