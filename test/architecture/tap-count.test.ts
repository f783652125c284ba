// Hygiene: the counting logic of scripts/test.mjs (scripts/tap-count.mjs) under COMPANION_REQUIRE_ALL=1.
// A skipped `describe` counts as a skip; nested skips count at any depth; a skip is optional only when its
// own reason starts with `optional:`, so an optional skip never cancels out a real one. Read from TAP
// fixtures, and from the TAP that node:test itself writes for a small generated test file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../helpers/paths.js';

interface TapPoint {
  name: string;
  depth: number;
  ok: boolean;
  directive: 'skip' | 'todo' | null;
  reason: string;
}
interface TapCount {
  points: TapPoint[];
  passed: TapPoint[];
  failed: TapPoint[];
  skipped: TapPoint[];
  optionalSkipped: TapPoint[];
  realSkipped: TapPoint[];
  todo: TapPoint[];
}
interface TapCountModule {
  countTap(report: string): TapCount;
  requireAllProblems(count: TapCount): string[];
  OPTIONAL_PREFIX: string;
}

const { countTap, requireAllProblems } = (await import(
  pathToFileURL(join(repoRoot, 'scripts', 'tap-count.mjs')).href
)) as TapCountModule;

const names = (points: readonly TapPoint[]): string[] => points.map((p) => p.name);

/** Only a skipped suite: node's closing totals say `# skipped 0` here. */
const SKIPPED_DESCRIBE = `TAP version 13
# Subtest: keychain suite
ok 1 - keychain suite # SKIP gnome-keyring is missing
  ---
  duration_ms: 0.79
  type: 'suite'
  ...
# Subtest: passes
ok 2 - passes
  ---
  duration_ms: 0.2
  ...
1..2
# tests 1
# suites 1
# pass 1
# fail 0
# cancelled 0
# skipped 0
# todo 0
`;

/** An optional skip next to a real one, nested skips and todos, and an error message quoting TAP text. */
const MIXED = `TAP version 13
# Subtest: suite ok
    # Subtest: llama-server
    ok 1 - llama-server # SKIP optional: no llama-server binary
      ---
      duration_ms: 0.7
      ...
    # Subtest: keychain
    ok 2 - keychain # SKIP gnome-keyring is missing
      ---
      duration_ms: 0.1
      ...
    # Subtest: nested
        # Subtest: deep
        ok 1 - deep # SKIP
          ---
          duration_ms: 4.1
          ...
        # Subtest: later
        ok 2 - later # TODO write it
          ---
          duration_ms: 0.1
          ...
        1..2
    ok 3 - nested
      ---
      duration_ms: 4.3
      type: 'suite'
      ...
    1..3
ok 1 - suite ok
  ---
  duration_ms: 5.9
  type: 'suite'
  ...
# Subtest: a \\# in a name
not ok 2 - a \\# in a name
  ---
  duration_ms: 0.3
  failureType: 'testCodeFailure'
  error: |-
    ok 7 - quoted # SKIP optional: not a test point
      ok 8 - quoted too # TODO neither
  code: 'ERR_TEST_FAILURE'
  ...
1..2
# tests 5
# suites 2
# pass 0
# fail 1
# cancelled 0
# skipped 3
# todo 1
`;

test('countTap() counts a skipped describe as a skip (the closing totals do not)', () => {
  const count = countTap(SKIPPED_DESCRIBE);
  assert.deepEqual(names(count.skipped), ['keychain suite']);
  assert.deepEqual(names(count.realSkipped), ['keychain suite']);
  assert.deepEqual(count.skipped[0]!.reason, 'gnome-keyring is missing');
  assert.deepEqual(requireAllProblems(count), ['skipped: keychain suite (gnome-keyring is missing)']);
});

test('countTap() counts skips and todos at any depth, each with its own reason, and ignores TAP text inside diagnostics', () => {
  const count = countTap(MIXED);
  assert.deepEqual(
    count.skipped.map((p) => [p.name, p.depth, p.reason]),
    [
      ['llama-server', 1, 'optional: no llama-server binary'],
      ['keychain', 1, 'gnome-keyring is missing'],
      ['deep', 2, ''],
    ],
  );
  assert.deepEqual(names(count.todo), ['later']);
  assert.deepEqual(names(count.failed), ['a # in a name']);
  assert.deepEqual(names(count.passed), ['nested', 'suite ok']);
});

test('countTap() never lets an optional skip cancel out a real skip: only a reason starting with "optional:" is optional', () => {
  const count = countTap(MIXED);
  assert.deepEqual(names(count.optionalSkipped), ['llama-server']);
  assert.deepEqual(names(count.realSkipped), ['keychain', 'deep']);
  assert.deepEqual(requireAllProblems(count), [
    'skipped: keychain (gnome-keyring is missing)',
    'skipped: deep',
    'todo: later (write it)',
  ]);
  // Only optional skips: nothing to refuse.
  const onlyOptional = countTap('TAP version 13\nok 1 - llama-server # SKIP optional: no llama-server binary\n1..1\n');
  assert.deepEqual(requireAllProblems(onlyOptional), []);
  // "optional" elsewhere in the reason, or in the test's name, does not make a skip optional.
  const lookalikes = countTap(
    [
      'TAP version 13',
      'ok 1 - optional: in the name # SKIP needs root',
      'ok 2 - x # SKIP not optional: a real dependency',
      'ok 3 - y # skip Optional: upper case is not the reserved prefix',
      '1..3',
    ].join('\n'),
  );
  assert.deepEqual(names(lookalikes.realSkipped), ['optional: in the name', 'x', 'y']);
  assert.deepEqual(lookalikes.optionalSkipped, []);
});

test('countTap() reads the TAP that node:test writes: a skipped describe, nested skips, an optional skip next to a real skip, a todo', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'companion-tap-count-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'fixture.test.mjs');
  writeFileSync(
    file,
    [
      "import { describe, it, test } from 'node:test';",
      "describe('skipped suite', { skip: 'dependency missing' }, () => { it('never runs', () => {}); it('nor this', () => {}); });",
      "describe('outer', () => {",
      "  it('optional one', { skip: 'optional: no llama-server binary' }, () => {});",
      "  it('real one', { skip: 'chromium is missing' }, () => {});",
      "  describe('inner', () => { it('deep skip', { skip: true }, () => {}); it('runs', () => {}); });",
      '});',
      "test('with subtests', async (t) => { await t.test('sub optional', { skip: 'optional: external' }, () => {}); await t.test('sub todo', { todo: 'later' }, () => {}); });",
      "test('skips itself', (t) => { t.skip('decided at run time'); });",
      "test('passes', () => {});",
    ].join('\n'),
  );
  const run = spawnSync(process.execPath, ['--test', '--test-reporter=tap', file], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: process.env.PATH ?? '' },
  });
  assert.equal(run.status, 0, run.stderr);
  const count = countTap(run.stdout);
  assert.deepEqual(
    names(count.skipped).sort(),
    ['deep skip', 'optional one', 'real one', 'skipped suite', 'skips itself', 'sub optional'].sort(),
  );
  assert.deepEqual(names(count.optionalSkipped).sort(), ['optional one', 'sub optional']);
  assert.deepEqual(names(count.realSkipped).sort(), ['deep skip', 'real one', 'skipped suite', 'skips itself']);
  assert.deepEqual(names(count.todo), ['sub todo']);
  assert.deepEqual(count.failed, []);
  // node's own closing total misses the skipped suite: the count does not.
  const nodeSkipped = Number(/^# skipped (\d+)$/m.exec(run.stdout)?.[1]);
  assert.equal(count.skipped.length, nodeSkipped + 1);
  assert.equal(requireAllProblems(count).length, 5);
});

test('scripts/test.mjs counts with scripts/tap-count.mjs, not with the closing totals', () => {
  const script = readFileSync(join(repoRoot, 'scripts', 'test.mjs'), 'utf8');
  assert.match(script, /from '\.\/tap-count\.mjs'/);
  assert.match(script, /requireAllProblems\(count\)/);
  assert.doesNotMatch(script, /# skipped|# SKIP optional/);
});
