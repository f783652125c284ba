// The resource decision (D5.6) wired into the supervisor, against the REAL bundled runtime (threads 1, no
// sandbox) on the generated tiny model (~0.5 MB; its floor need is that plus 32 MiB):
// - before a start, a model whose floor need does not fit under min(maxRssBytes, available memory) is
//   refused with ERR_RESOURCE_LIMIT and no runtime is spawned;
// - while running, `resources()` applies the decision to the probe's RSS: past the limit the lifecycle is
//   `degraded` (not available) and health alone does not bring it back;
// - no limit, or a generous one on a machine without a GPU figure, leaves it ready.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { STATE_FILE } from '../../src/runtime/stale.js';
import {
  createSupervisor,
  type Supervisor,
  type SupervisorEvent,
  type SupervisorOptions,
} from '../../src/runtime/manager/supervisor.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runtimeDescendants, tempDir, waitFor } from '../helpers/runtime-env.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const linux = process.platform === 'linux' ? {} : { skip: 'the resource probe reads /proc' };

interface Run {
  readonly supervisor: Supervisor;
  readonly events: SupervisorEvent[];
  readonly dataDir: string;
}

/** A supervisor over a fresh data dir holding the tiny model as a verified install. */
function supervise(t: { after(fn: () => unknown): void }, options: Partial<SupervisorOptions> = {}): Run {
  const dir = tempDir('companion-res-');
  t.after(dir.cleanup);
  const dataDir = join(dir.path, 'data');
  installTinyModel(dataDir);
  const events: SupervisorEvent[] = [];
  const supervisor = createSupervisor({
    dataDir,
    modelsDir: join(dataDir, 'models'),
    threads: 1,
    readyTimeoutMs: 60_000,
    healthIntervalMs: 500,
    autoRestart: false,
    ...options,
    onEvent: (event) => events.push(event),
  });
  t.after(() => supervisor.stop());
  return { supervisor, events, dataDir };
}

/** The start was refused before any runtime existed: no process, no state file, no run folder, never `starting`. */
function assertNothingSpawned(run: Run): void {
  assert.deepEqual(runtimeDescendants(), [], 'no runtime process exists');
  assert.equal(existsSync(join(run.dataDir, STATE_FILE)), false, 'no runtime was recorded');
  const runBase = join(run.dataDir, 'run');
  assert.deepEqual(existsSync(runBase) ? readdirSync(runBase) : [], []);
  const states = run.events.flatMap((e) => (e.event === 'state' ? [e.state] : []));
  assert.deepEqual(states, ['verifying', 'failed']);
}

test(
  "createSupervisor().start() refuses with ERR_RESOURCE_LIMIT when the model's floor need exceeds maxRssBytes (16 MiB), and spawns nothing",
  { ...linux, timeout: 30_000 },
  async (t) => {
    const run = supervise(t, { resourceLimits: { maxRssBytes: 16 * MiB }, availableMemory: () => 64 * GiB });
    await assert.rejects(run.supervisor.start(), { code: 'ERR_RESOURCE_LIMIT' });
    const snapshot = run.supervisor.snapshot();
    assert.equal(snapshot.state, 'failed');
    assert.equal(snapshot.code, 'ERR_RESOURCE_LIMIT');
    assert.equal(snapshot.pid, null);
    assert.equal(run.supervisor.companionAvailable(), false);
    assertNothingSpawned(run);
  },
);

test(
  'createSupervisor().start() refuses with ERR_RESOURCE_LIMIT when the memory available now (1 MiB) is below the floor need, and spawns nothing',
  { ...linux, timeout: 30_000 },
  async (t) => {
    const run = supervise(t, { availableMemory: () => MiB });
    await assert.rejects(run.supervisor.start(), { code: 'ERR_RESOURCE_LIMIT' });
    assert.equal(run.supervisor.snapshot().state, 'failed');
    assert.equal(run.supervisor.companionAvailable(), false);
    assertNothingSpawned(run);
  },
);

test(
  'createSupervisor().resources() moves a ready runtime whose RSS is past maxRssBytes (64 MiB) to degraded, not available, with a resources event; health does not bring it back',
  { ...linux, timeout: 90_000 },
  async (t) => {
    const run = supervise(t, { resourceLimits: { maxRssBytes: 64 * MiB }, availableMemory: () => 64 * GiB });
    await run.supervisor.start();
    assert.equal(
      run.supervisor.snapshot().state,
      'ready',
      'the floor need (model + 32 MiB) fits: the start is allowed',
    );
    assert.equal(run.supervisor.companionAvailable(), true);

    const figures = await run.supervisor.resources();
    assert.ok(
      figures !== null && figures.rssBytes > 64 * MiB,
      `the real runtime holds more than 64 MiB (${((figures?.rssBytes ?? 0) / MiB).toFixed(1)} MiB)`,
    );
    t.diagnostic(`runtime RSS ${(figures.rssBytes / MiB).toFixed(1)} MiB`);
    assert.equal(run.supervisor.snapshot().state, 'degraded');
    assert.equal(run.supervisor.companionAvailable(), false);
    assert.equal(run.supervisor.address(), null, 'the front door gets no address');
    const resourceEvents = run.events.filter((e) => e.event === 'resources');
    assert.deepEqual(resourceEvents, [{ event: 'resources', decision: 'refuse-start', reasons: ['rss-over-limit'] }]);
    assert.ok(run.events.some((e) => e.event === 'available' && !e.available));

    // Health keeps succeeding, but the runtime stays degraded while its RSS is past the limit.
    const healthBefore = run.events.filter((e) => e.event === 'health').length;
    await waitFor(
      () => run.events.filter((e) => e.event === 'health' && e.ok).length > healthBefore,
      10_000,
      'a later successful health check',
    );
    assert.equal(run.supervisor.snapshot().state, 'degraded');
    assert.equal(run.supervisor.companionAvailable(), false);
  },
);

test(
  'createSupervisor().resources() leaves the runtime ready and available when no limit is set',
  { ...linux, timeout: 90_000 },
  async (t) => {
    const run = supervise(t);
    await run.supervisor.start();
    assert.ok((await run.supervisor.resources()) !== null);
    assert.equal(run.supervisor.snapshot().state, 'ready');
    assert.equal(run.supervisor.companionAvailable(), true);
    assert.deepEqual(
      run.events.filter((e) => e.event === 'resources'),
      [],
    );
  },
);

test(
  'createSupervisor().resources() leaves the runtime ready under a generous limit when there is no GPU figure: unknown VRAM is not doubt',
  { ...linux, timeout: 90_000 },
  async (t) => {
    const run = supervise(t, { resourceLimits: { maxRssBytes: 64 * GiB }, availableMemory: () => 128 * GiB });
    await run.supervisor.start();
    const figures = await run.supervisor.resources();
    assert.ok(figures !== null);
    t.diagnostic(`vram figure: ${JSON.stringify(figures.vram)}`);
    assert.equal(run.supervisor.snapshot().state, 'ready');
    assert.equal(run.supervisor.companionAvailable(), true);
    assert.deepEqual(
      run.events.filter((e) => e.event === 'resources'),
      [],
    );
  },
);
