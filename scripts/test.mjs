#!/usr/bin/env node
// Runs the test tiers (CONTRACT §5) from the compiled tree under dist/test/<tier>/.
//   node scripts/test.mjs all | unit | property | integration | security | fault | e2e | architecture ...
// Prints node:test's spec report and its closing counts. With COMPANION_REQUIRE_ALL=1, any skipped test
// or suite (a tier whose dependency is missing) and any todo fails the run: CI must not pass on a tier
// that did not run. Skips are counted from the TAP test points themselves (scripts/tap-count.mjs).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { countTap, requireAllProblems } from './tap-count.mjs';

const TIERS = ['unit', 'property', 'architecture', 'integration', 'security', 'fault', 'e2e'];
// Test files run side by side in these tiers: each file makes its own temp dirs, ephemeral ports and
// private D-Bus/keyring, and most of their time is spent waiting on child processes. The fault tier
// (disk full, 500-connection load, crash timing) and e2e (the whole demo, browser) stay one file at a time.
const CONCURRENCY = { integration: 2, security: 2 };
const root = resolve(new URL('..', import.meta.url).pathname);
const args = process.argv.slice(2);
const wanted = args.length === 0 || args.includes('all') ? TIERS : args;
for (const tier of wanted) {
  if (!TIERS.includes(tier)) {
    console.error(`test: unknown tier '${tier}' (known: ${TIERS.join(', ')}, all)`);
    process.exit(2);
  }
}

function findTests(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...findTests(path));
    // Only a compiled test whose source still exists: tsc leaves the output of a deleted test behind.
    else if (name.endsWith('.test.js') && existsSync(sourceOf(path))) out.push(path);
  }
  return out;
}

/** dist/test/x/y.test.js → test/x/y.test.ts */
function sourceOf(compiled) {
  return join(root, relative(join(root, 'dist'), compiled)).replace(/\.js$/, '.ts');
}

const requireAll = process.env.COMPANION_REQUIRE_ALL === '1';
const scratch = mkdtempSync(join(tmpdir(), 'companion-test-report-'));
let failed = false;
const summary = [];
for (const tier of wanted) {
  const files = findTests(join(root, 'dist', 'test', tier));
  if (files.length === 0) {
    summary.push(`${tier}: no tests`);
    if (requireAll) {
      console.error(`test: tier '${tier}' has no tests (COMPANION_REQUIRE_ALL=1)`);
      failed = true;
    }
    continue;
  }
  console.log(`\n=== tier: ${tier} (${files.length} files) ===`);
  const tap = join(scratch, `${tier}.tap`);
  const result = spawnSync(
    process.execPath,
    [
      '--test',
      `--test-concurrency=${CONCURRENCY[tier] ?? 1}`,
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...files,
    ],
    { stdio: 'inherit', cwd: root, env: { ...process.env, COMPANION_TEST_TIER: tier } },
  );
  const report = existsSync(tap) ? readFileSync(tap, 'utf8') : '';
  const count = countTap(report);
  summary.push(
    `${tier}: pass ${count.passed.length}, fail ${count.failed.length}, skipped ${count.skipped.length}, todo ${count.todo.length} (test points, suites included)`,
  );
  if (result.status !== 0) failed = true;
  // A skip whose own reason starts with "optional:" is for an external, optional component (none today):
  // it is reported but does not fail the run. Every other skip, of a test or of a whole suite, does; so
  // does a todo.
  if (count.optionalSkipped.length > 0) {
    console.log(
      `test: tier '${tier}': ${count.optionalSkipped.length} optional test(s) skipped (external component not present)`,
    );
  }
  const problems = requireAllProblems(count);
  if (requireAll && problems.length > 0) {
    console.error(
      `test: tier '${tier}' skipped ${count.realSkipped.length} and left ${count.todo.length} todo with COMPANION_REQUIRE_ALL=1:`,
    );
    for (const line of problems) console.error(`  ${line}`);
    failed = true;
  }
}
rmSync(scratch, { recursive: true, force: true });
console.log('\n=== summary ===');
for (const line of summary) console.log(line);
console.log(failed ? 'FAILED' : 'OK');
process.exit(failed ? 1 : 0);
