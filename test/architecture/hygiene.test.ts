// Hygiene (tier 7): the strict type-check and the linter run clean over the whole tree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { repoRoot } from '../helpers/paths.js';

function run(bin: string, args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [join(repoRoot, 'node_modules', bin), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 300_000,
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

test('tsc --noEmit passes with the strict flags of STYLE.md', () => {
  const tsconfig = JSON.parse(readFileSync(join(repoRoot, 'tsconfig.json'), 'utf8')) as {
    compilerOptions: Record<string, unknown>;
  };
  for (const flag of [
    'strict',
    'noUncheckedIndexedAccess',
    'exactOptionalPropertyTypes',
    'noImplicitOverride',
    'noImplicitReturns',
    'verbatimModuleSyntax',
  ]) {
    assert.equal(tsconfig.compilerOptions[flag], true, `${flag} is on`);
  }
  const { status, output } = run('typescript/bin/tsc', ['-p', 'tsconfig.json', '--noEmit']);
  assert.equal(status, 0, output);
});

test('eslint reports nothing', () => {
  const { status, output } = run('eslint/bin/eslint.js', ['.', '--max-warnings', '0']);
  assert.equal(status, 0, output);
});
