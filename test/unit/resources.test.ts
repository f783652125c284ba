import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RUNTIME_FLOOR_BYTES,
  decideResources,
  startFigures,
  type ResourceFigures,
  type ResourceLimits,
  type ResourceDecision,
} from '../../src/core/resources.js';

const GiB = 1024 ** 3;
const LIMITS: ResourceLimits = { maxRssBytes: 4 * GiB, maxCpuPercent: 200, minFreeVramBytes: 2 * GiB };
const vram = (usedGiB: number, totalGiB = 8): { usedBytes: number; totalBytes: number } => ({
  usedBytes: usedGiB * GiB,
  totalBytes: totalGiB * GiB,
});

const CASES: [string, ResourceFigures, ResourceLimits, ResourceDecision][] = [
  [
    'every figure well inside',
    { rssBytes: 1 * GiB, cpuPercent: 50, vram: vram(2) },
    LIMITS,
    { decision: 'ok', reasons: [] },
  ],
  ['no limits and known figures', { rssBytes: 100 * GiB, cpuPercent: 900 }, {}, { decision: 'ok', reasons: [] }],
  [
    'no GPU figure and no VRAM limit',
    { rssBytes: GiB, cpuPercent: 1 },
    { maxRssBytes: 4 * GiB },
    { decision: 'ok', reasons: [] },
  ],
  [
    'before a start (nothing running yet)',
    { rssBytes: 0, cpuPercent: 0, vram: vram(0) },
    LIMITS,
    { decision: 'ok', reasons: [] },
  ],
  [
    'RSS exactly at the limit is not over it',
    { rssBytes: 4 * GiB, cpuPercent: 0 },
    { maxRssBytes: 4 * GiB, degradeAt: 1 },
    { decision: 'ok', reasons: [] },
  ],
  [
    'RSS near the limit',
    { rssBytes: 3.8 * GiB, cpuPercent: 10, vram: vram(1) },
    LIMITS,
    { decision: 'degraded', reasons: ['rss-near-limit'] },
  ],
  [
    'RSS over the limit',
    { rssBytes: 5 * GiB, cpuPercent: 10, vram: vram(1) },
    LIMITS,
    { decision: 'refuse-start', reasons: ['rss-over-limit'] },
  ],
  [
    'CPU near the limit',
    { rssBytes: GiB, cpuPercent: 190, vram: vram(1) },
    LIMITS,
    { decision: 'degraded', reasons: ['cpu-near-limit'] },
  ],
  [
    'CPU over the limit',
    { rssBytes: GiB, cpuPercent: 250, vram: vram(1) },
    LIMITS,
    { decision: 'refuse-start', reasons: ['cpu-over-limit'] },
  ],
  [
    'free VRAM below the minimum',
    { rssBytes: GiB, cpuPercent: 10, vram: vram(7) },
    LIMITS,
    { decision: 'refuse-start', reasons: ['vram-below-minimum'] },
  ],
  [
    'free VRAM just above the minimum',
    { rssBytes: GiB, cpuPercent: 10, vram: vram(5.9) },
    LIMITS,
    { decision: 'degraded', reasons: ['vram-near-minimum'] },
  ],
  [
    'unknown RSS',
    { rssBytes: null, cpuPercent: 10, vram: vram(1) },
    LIMITS,
    { decision: 'degraded', reasons: ['rss-unknown'] },
  ],
  [
    'unknown RSS without an RSS limit',
    { rssBytes: null, cpuPercent: 10 },
    {},
    { decision: 'degraded', reasons: ['rss-unknown'] },
  ],
  [
    'unknown CPU',
    { rssBytes: GiB, cpuPercent: null, vram: vram(1) },
    LIMITS,
    { decision: 'degraded', reasons: ['cpu-unknown'] },
  ],
  [
    'VRAM probe failed',
    { rssBytes: GiB, cpuPercent: 10, vram: null },
    LIMITS,
    { decision: 'degraded', reasons: ['vram-unknown'] },
  ],
  [
    'VRAM probe failed, no VRAM limit',
    { rssBytes: GiB, cpuPercent: 10, vram: null },
    {},
    { decision: 'degraded', reasons: ['vram-unknown'] },
  ],
  [
    'no VRAM figure but a VRAM limit',
    { rssBytes: GiB, cpuPercent: 10 },
    LIMITS,
    { decision: 'degraded', reasons: ['vram-unknown'] },
  ],
  [
    'VRAM used above total',
    { rssBytes: GiB, cpuPercent: 10, vram: vram(9) },
    LIMITS,
    { decision: 'degraded', reasons: ['vram-unknown'] },
  ],
  [
    'negative or NaN figures',
    { rssBytes: -1, cpuPercent: Number.NaN, vram: { usedBytes: Infinity, totalBytes: 1 } },
    LIMITS,
    { decision: 'degraded', reasons: ['rss-unknown', 'cpu-unknown', 'vram-unknown'] },
  ],
  [
    'one over and one unknown: the most severe wins, both reasons kept',
    { rssBytes: 5 * GiB, cpuPercent: null, vram: vram(1) },
    LIMITS,
    { decision: 'refuse-start', reasons: ['rss-over-limit', 'cpu-unknown'] },
  ],
  [
    'everything over',
    { rssBytes: 5 * GiB, cpuPercent: 300, vram: vram(8) },
    LIMITS,
    { decision: 'refuse-start', reasons: ['rss-over-limit', 'cpu-over-limit', 'vram-below-minimum'] },
  ],
  [
    'a custom degradeAt',
    { rssBytes: 2.5 * GiB, cpuPercent: 0 },
    { maxRssBytes: 4 * GiB, degradeAt: 0.5 },
    { decision: 'degraded', reasons: ['rss-near-limit'] },
  ],
];

for (const [name, figures, limits, expected] of CASES) {
  test(`decideResources() says ${expected.decision} for ${name}`, () => {
    assert.deepEqual(decideResources(figures, limits), expected);
  });
}

test('decideResources() reads missing or hostile figures as unknown and never throws on them', () => {
  const hostile = new Proxy(
    {},
    {
      get() {
        throw new Error('trap');
      },
    },
  );
  for (const figures of [null, undefined, {}, 'x', hostile]) {
    const result = decideResources(figures as unknown as ResourceFigures, LIMITS);
    assert.equal(result.decision, 'degraded');
    assert.deepEqual(result.reasons, ['rss-unknown', 'cpu-unknown', 'vram-unknown']);
  }
});

test('decideResources() refuses bad limits with a TypeError', () => {
  for (const limits of [
    { maxRssBytes: -1 },
    { maxCpuPercent: Number.NaN },
    { minFreeVramBytes: Infinity },
    { degradeAt: 0 },
    { degradeAt: 1.5 },
    { maxRssBytes: '4G' },
  ]) {
    assert.throws(() => decideResources({ rssBytes: 1, cpuPercent: 1 }, limits as ResourceLimits), {
      name: 'TypeError',
    });
  }
});

const MiB = 1024 ** 2;

test("startFigures() is the model's bytes plus the 32 MiB runtime floor, with no CPU yet", () => {
  assert.equal(RUNTIME_FLOOR_BYTES, 32 * MiB);
  assert.deepEqual(startFigures(0), { rssBytes: 32 * MiB, cpuPercent: 0 });
  assert.deepEqual(startFigures(500_000), { rssBytes: 500_000 + 32 * MiB, cpuPercent: 0 });
  assert.deepEqual(startFigures(4 * GiB), { rssBytes: 4 * GiB + 32 * MiB, cpuPercent: 0 });
});

test('startFigures() refuses a negative, infinite, NaN or non-number size with a TypeError', () => {
  for (const bad of [-1, Number.NaN, Infinity, '500', null, undefined]) {
    assert.throws(
      () => startFigures(bad as number),
      (error: Error & { code?: string }) => error instanceof TypeError && /^ERR_INVALID_ARG_/.test(error.code ?? ''),
    );
  }
});

const START_CASES: [string, number, ResourceLimits, ResourceDecision['decision']][] = [
  ['a tiny model under a 64 MiB limit', 500_000, { maxRssBytes: 64 * MiB }, 'ok'],
  ['a tiny model under a 16 MiB limit (below the floor alone)', 500_000, { maxRssBytes: 16 * MiB }, 'refuse-start'],
  ['a model exactly filling the limit with the floor', 100 * MiB, { maxRssBytes: 132 * MiB, degradeAt: 1 }, 'ok'],
  [
    'a model one byte over the limit with the floor',
    100 * MiB + 1,
    { maxRssBytes: 132 * MiB, degradeAt: 1 },
    'refuse-start',
  ],
  ['a 4 GiB model under 8 GiB', 4 * GiB, { maxRssBytes: 8 * GiB }, 'ok'],
  ['a 4 GiB model under 4 GiB', 4 * GiB, { maxRssBytes: 4 * GiB }, 'refuse-start'],
  ['a model near the limit (past degradeAt, still under it)', 100 * MiB, { maxRssBytes: 140 * MiB }, 'degraded'],
  ['any model without an RSS limit', 64 * GiB, {}, 'ok'],
];

for (const [name, modelBytes, limits, expected] of START_CASES) {
  test(`decideResources(startFigures()) says ${expected} for ${name}`, () => {
    assert.equal(decideResources(startFigures(modelBytes), limits).decision, expected);
  });
}
