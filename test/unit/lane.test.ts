import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  selectLane,
  CONTEXT_TIERS,
  LANE_PREFERENCES,
  type LaneDecision,
  type LaneRequest,
} from '../../src/core/lane.js';

// C = companion, X = cloud, L = refused ERR_LANE_LOCAL_ONLY_UNAVAILABLE, N = refused ERR_LANE_CLOUD_NOT_ALLOWED.
// Columns: tier, companionAvailable, privateMayUseCloud, then prefer-local / prefer-cloud / local-only.
const TABLE: readonly (readonly [string, boolean, boolean, string])[] = [
  ['public', true, true, 'CXC'],
  ['public', true, false, 'CXC'],
  ['public', false, true, 'XXL'],
  ['public', false, false, 'XXL'],
  ['private', true, true, 'CXC'],
  ['private', true, false, 'CCC'],
  ['private', false, true, 'XXL'],
  ['private', false, false, 'NNL'],
  ['local-only', true, true, 'CCC'],
  ['local-only', true, false, 'CCC'],
  ['local-only', false, true, 'LLL'],
  ['local-only', false, false, 'LLL'],
];

const DECISIONS: Record<string, LaneDecision> = {
  C: { lane: 'companion' },
  X: { lane: 'cloud' },
  L: { refused: true, code: 'ERR_LANE_LOCAL_ONLY_UNAVAILABLE' },
  N: { refused: true, code: 'ERR_LANE_CLOUD_NOT_ALLOWED' },
};

function expected(tier: string, available: boolean, privateMayUseCloud: boolean, preference: string): LaneDecision {
  const row = TABLE.find((r) => r[0] === tier && r[1] === available && r[2] === privateMayUseCloud);
  assert.ok(row, `no table row for ${tier}/${available}/${privateMayUseCloud}`);
  return DECISIONS[row[3][LANE_PREFERENCES.indexOf(preference as never)]!]!;
}

test('selectLane() follows the table for every known combination (36 cases)', () => {
  let count = 0;
  for (const tier of CONTEXT_TIERS) {
    for (const companionAvailable of [true, false]) {
      for (const preference of LANE_PREFERENCES) {
        for (const privateMayUseCloud of [true, false]) {
          const decision = selectLane({ tier, companionAvailable, policy: { preference, privateMayUseCloud } });
          assert.deepEqual(
            decision,
            expected(tier, companionAvailable, privateMayUseCloud, preference),
            `${tier}/${companionAvailable}/${preference}/${privateMayUseCloud}`,
          );
          count++;
        }
      }
    }
  }
  assert.equal(count, 36);
});

// Unknown values and what they must count as (the most restrictive case).
const TIERS: [unknown, string][] = [
  ...CONTEXT_TIERS.map((t): [unknown, string] => [t, t]),
  [undefined, 'local-only'],
  [null, 'local-only'],
  ['PUBLIC', 'local-only'],
  ['secret', 'local-only'],
  [0, 'local-only'],
  [{}, 'local-only'],
];
const AVAILABLE: [unknown, boolean][] = [
  [true, true],
  [false, false],
  ['true', false],
  [1, false],
  [undefined, false],
  [null, false],
  [{}, false],
];
const PREFERENCES: [unknown, string][] = [
  ...LANE_PREFERENCES.map((p): [unknown, string] => [p, p]),
  [undefined, 'local-only'],
  ['Prefer-Cloud', 'local-only'],
  ['cloud', 'local-only'],
  [null, 'local-only'],
];
const PRIVATE_CLOUD: [unknown, boolean][] = [
  [true, true],
  [false, false],
  ['true', false],
  [1, false],
  [undefined, false],
  [null, false],
];

test('selectLane() reads every unknown tier, availability, preference or flag as the most restrictive case (2,646 cases)', () => {
  let count = 0;
  for (const [tier, tierAs] of TIERS) {
    for (const [available, availableAs] of AVAILABLE) {
      for (const [preference, preferenceAs] of PREFERENCES) {
        for (const [privateMayUseCloud, privateAs] of PRIVATE_CLOUD) {
          const request = {
            tier,
            companionAvailable: available,
            policy: { preference, privateMayUseCloud },
          } as unknown as LaneRequest;
          assert.deepEqual(selectLane(request), expected(tierAs, availableAs, privateAs, preferenceAs));
          count++;
        }
      }
    }
  }
  assert.equal(count, 2646);
});

test('selectLane() never sends local-only data to the cloud, whatever the policy', () => {
  for (const [available] of AVAILABLE) {
    for (const [preference] of PREFERENCES) {
      for (const [privateMayUseCloud] of PRIVATE_CLOUD) {
        const decision = selectLane({
          tier: 'local-only',
          companionAvailable: available,
          policy: { preference, privateMayUseCloud },
        } as unknown as LaneRequest);
        assert.notDeepEqual(decision, { lane: 'cloud' });
      }
    }
  }
});

test('selectLane() treats a missing or hostile request or policy as local-only and never throws', () => {
  const hostile = new Proxy(
    {},
    {
      get() {
        throw new Error('trap');
      },
    },
  );
  for (const request of [
    undefined,
    null,
    42,
    {},
    { tier: 'public' },
    { tier: 'public', companionAvailable: true },
    hostile,
    { tier: 'public', companionAvailable: false, policy: hostile },
    { tier: 'public', companionAvailable: false, policy: null },
  ]) {
    const decision = selectLane(request as unknown as LaneRequest);
    assert.ok('refused' in decision || decision.lane === 'companion', JSON.stringify(decision));
  }
  assert.deepEqual(selectLane({ tier: 'public', companionAvailable: true } as unknown as LaneRequest), {
    lane: 'companion',
  });
  assert.deepEqual(selectLane(undefined as unknown as LaneRequest), {
    refused: true,
    code: 'ERR_LANE_LOCAL_ONLY_UNAVAILABLE',
  });
});
