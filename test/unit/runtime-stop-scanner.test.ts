// Stop sequences over streamed text (the completions path): what is emitted, what is held back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStopScanner } from '../../src/runtime-server/stop-scanner.js';

function run(stops: string[], pieces: string[]): { emitted: string[]; stopped: boolean; text: string } {
  const scanner = createStopScanner(stops);
  const emitted: string[] = [];
  let stopped = false;
  for (const piece of pieces) {
    const scan = scanner.push(piece);
    emitted.push(scan.emit);
    if (scan.stopped) {
      stopped = true;
      break;
    }
  }
  if (!stopped) emitted.push(scanner.flush());
  return { emitted, stopped, text: scanner.text };
}

test('createStopScanner() ends at a stop with a space that spans pieces and excludes it', () => {
  const result = run(['o w'], ['hell', 'o', ' wor', 'ld']);
  assert.equal(result.stopped, true);
  assert.equal(result.text, 'hell');
  assert.deepEqual(result.emitted, ['hell', '', 'hell'.slice(4)]);
});

test('createStopScanner() holds back a possible stop prefix and releases it when it is not one', () => {
  const result = run(['ab c'], ['x a', 'b', 'd']);
  assert.equal(result.stopped, false);
  assert.deepEqual(result.emitted, ['x ', '', 'abd', '']);
  assert.equal(result.text, 'x abd');
});

test('createStopScanner() stops at the earliest of several stops', () => {
  const result = run(['zz', 'b c', 'q'], ['a b c q zz']);
  assert.equal(result.text, 'a ');
  assert.equal(result.stopped, true);
});

test('createStopScanner() without stops emits every piece at once', () => {
  const result = run([], ['a', ' b']);
  assert.deepEqual(result.emitted, ['a', ' b', '']);
  assert.equal(result.text, 'a b');
});
