// companionAvailable (D5.7), the one decision, and the CLI's explanation of a "no" (which decides nothing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { companionAvailable, type AvailabilityInputs } from '../../src/core/availability.js';
import { LIFECYCLE_STATES } from '../../src/core/lifecycle.js';
import { unavailability, type AvailabilityFacts } from '../../src/cli/availability.js';

const good: AvailabilityInputs = {
  state: 'ready',
  runtimeRunning: true,
  modelVerified: true,
  lastHealth: { ok: true, at: 1_000 },
  now: 1_000,
  recencyMs: 5_000,
};

test('companionAvailable: true only when ready, running, verified, and a success within the recency bound', () => {
  assert.equal(companionAvailable(good), true);
  assert.equal(companionAvailable({ ...good, now: 6_000 }), true, 'at the bound');
  assert.equal(companionAvailable({ ...good, now: 6_001 }), false, 'past the bound');
  assert.equal(companionAvailable({ ...good, runtimeRunning: false }), false);
  assert.equal(companionAvailable({ ...good, modelVerified: false }), false);
  assert.equal(companionAvailable({ ...good, lastHealth: null }), false);
  assert.equal(companionAvailable({ ...good, lastHealth: { ok: false, at: 1_000 } }), false);
  for (const state of LIFECYCLE_STATES)
    assert.equal(companionAvailable({ ...good, state }), state === 'ready', `state ${state}`);
});

const inOrder: AvailabilityFacts = {
  hubConfigured: true,
  keychain: 'available',
  signedIn: true,
  model: 'verified',
  upRunning: true,
  endpoint: 'verified',
  runtimeState: 'ready',
};

test('unavailability: the first reason in the order a user fixes them; with every fact in order, the health check', () => {
  const reason = (facts: Partial<AvailabilityFacts>): string => unavailability({ ...inOrder, ...facts }).reason;
  assert.equal(reason({}), 'runtime-unhealthy');
  assert.equal(reason({ hubConfigured: false, keychain: 'ERR_KEYCHAIN_LOCKED' }), 'no-hub');
  assert.equal(reason({ keychain: 'ERR_KEYCHAIN_LOCKED', model: 'none' }), 'keychain-locked');
  assert.deepEqual(
    unavailability({ ...inOrder, keychain: 'ERR_KEYCHAIN_UNAVAILABLE' }).code,
    'ERR_KEYCHAIN_UNAVAILABLE',
  );
  assert.deepEqual(unavailability({ ...inOrder, keychain: 'weird' }).code, 'ERR_KEYCHAIN_FAILURE');
  assert.equal(reason({ model: 'none' }), 'no-model');
  assert.equal(reason({ model: 'none', signedIn: false }), 'not-signed-in');
  assert.equal(reason({ model: 'changed', upRunning: false }), 'model-changed');
  assert.equal(reason({ upRunning: false, endpoint: 'no-answer' }), 'up-not-running');
  assert.equal(reason({ endpoint: 'no-token' }), 'no-loopback-token');
  assert.equal(reason({ endpoint: 'unverified' }), 'endpoint-unverified');
  assert.equal(reason({ endpoint: 'no-answer' }), 'up-not-answering');
  assert.equal(reason({ runtimeState: 'failed' }), 'runtime-failed');
  assert.deepEqual(unavailability({ ...inOrder, runtimeState: null }), {
    reason: 'runtime-not-ready',
    code: 'ERR_ADMISSION_NOT_READY',
    message: 'the runtime is not started, not ready yet: wait a moment and try again',
  });
  assert.equal(reason({ runtimeState: 'degraded' }), 'runtime-unhealthy');
});
