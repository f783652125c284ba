import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { checkImportRules, importSpecifiers, RULES } from './import-rules.js';
import { repoRoot } from '../helpers/paths.js';

test('the source tree obeys every import rule (D5.8, cores without I/O)', () => {
  const violations = checkImportRules(join(repoRoot, 'src'));
  assert.deepEqual(violations, [], violations.map((v) => `${v.file} imports ${v.specifier}: ${v.reason}`).join('\n'));
});

test('checkImportRules() reports each kind of violation in the bad fixture tree', () => {
  const violations = checkImportRules(join(repoRoot, 'test/architecture/fixtures/bad-tree/src'));
  const seen = violations.map((v) => `${v.file} -> ${v.specifier}`).sort();
  assert.deepEqual(seen, [
    'authority/drives-runtime.ts -> ../runtime/spawn.js',
    'core/does-io.ts -> node:fs',
    'core/does-io.ts -> node:net',
    'core/uses-adapter.ts -> ../runtime/spawn.js',
    'runtime-server/reads-keychain.ts -> @napi-rs/keyring',
    'runtime/holds-authority.ts -> ../authority/keychain.js',
    'runtime/holds-authority.ts -> ../shell/orchestrator.js',
    'runtime/manager/loads-model.ts -> ../../client/index.js',
    'runtime/manager/loads-model.ts -> node-llama-cpp',
    'runtime/reaches-up.ts -> ./manager/supervisor.js',
    'shell/runs-runtime.ts -> ../runtime/spawn.js',
    'shell/runs-runtime.ts -> node-llama-cpp',
  ]);
  for (const v of violations) assert.ok(v.reason.length > 20, 'every rule carries its reason');
});

test('each rule of the runtime layout is proved by a file of the bad tree that breaks it, and only by it', () => {
  const violations = checkImportRules(join(repoRoot, 'test/architecture/fixtures/bad-tree/src'));
  const byRule = (from: string, file: string): string[] =>
    violations
      .filter((v) => v.rule === from && v.file === file)
      .map((v) => v.specifier)
      .sort();
  // The manager's own rule (the general runtime rule does not forbid these two).
  assert.deepEqual(byRule('runtime/manager', 'runtime/manager/loads-model.ts'), [
    '../../client/index.js',
    'node-llama-cpp',
  ]);
  // Layering: an adapter may not import the manager, and the manager's own imports of adapters are not flagged.
  assert.deepEqual(byRule('runtime', 'runtime/reaches-up.ts'), ['./manager/supervisor.js']);
  assert.deepEqual(
    violations.filter((v) => v.file === 'runtime/manager/supervisor.ts'),
    [],
  );
  // The shell: runtime/manager is allowed, any other runtime folder and the inference library are not.
  assert.deepEqual(byRule('shell', 'shell/runs-runtime.ts'), ['../runtime/spawn.js', 'node-llama-cpp']);
});

test('checkImportRules() fails when a rule names a folder that does not exist', () => {
  assert.throws(
    () =>
      checkImportRules(join(repoRoot, 'src'), [
        { from: 'core', forbidFolders: ['no-such-folder'], forbidModules: [], reason: 'x' },
      ]),
    /does not exist/,
  );
});

test('importSpecifiers() finds static, type-only, re-export, dynamic and require imports', () => {
  const source = [
    "import { a } from './a.js';",
    "import type { B } from '../b.js';",
    "import * as c from 'node:fs';",
    "import './side-effect.js';",
    "export { d } from './d.js';",
    "export * from './e.js';",
    "const f = await import('node:net');",
    "const g = require('child_process');",
  ].join('\n');
  assert.deepEqual(
    importSpecifiers(source).sort(),
    ['../b.js', './a.js', './d.js', './e.js', './side-effect.js', 'child_process', 'node:fs', 'node:net'].sort(),
  );
});

test('every rule has a reason and names folders under src/', () => {
  for (const rule of RULES) {
    assert.ok(rule.reason.length > 20);
    assert.ok(!rule.forbidFolders.includes(rule.from));
  }
});
