// `companion run --model` on the local lane (issue 18, item 4): the decision, apart from the I/O.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { localModelProblem } from '../../src/cli/cmd-run.js';

test('localModelProblem() lets the call go when no --model is given or it names the installed model', () => {
  assert.equal(localModelProblem(undefined, 'tiny-demo'), null);
  assert.equal(localModelProblem(undefined, null), null);
  assert.equal(localModelProblem('tiny-demo', 'tiny-demo'), null);
});

test('localModelProblem() names the installed model when --model names another one', () => {
  assert.equal(
    localModelProblem('llama-70b', 'tiny-demo'),
    '--model llama-70b is not the model the local companion serves (tiny-demo); to serve it: companion up --model llama-70b',
  );
  assert.equal(localModelProblem('llama-70b', null), '--model llama-70b: the local companion has no installed model');
});
