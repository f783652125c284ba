// Hygiene: the threat model (docs/threat-model.md) maps every threat of CONTRACT §4 to tests that exist.
// A test belongs to a threat when its name starts with the threat's id (several ids may lead a name:
// `P-a P-b P-c fuzz: …`). Names are read from the test sources themselves (test/**/*.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from '../helpers/paths.js';

const THREATS = ['P-a', 'P-b', 'P-c', 'P-d', 'P-e', 'P-f', 'P-g', 'P-h', 'P-i', 'P-j', 'P-k'] as const;
const DOC = join(repoRoot, 'docs', 'threat-model.md');

function testFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      if (name !== 'fixtures') out.push(...testFiles(path));
    } else if (name.endsWith('.test.ts')) {
      out.push(path);
    }
  }
  return out;
}

/**
 * Test names that start with threat ids, per id and file: `test(`, `it(` or `describe(` with a string or
 * template literal whose first words are ids. An interpolation `${…}` reads as `…`.
 */
function threatTests(): Map<string, Map<string, string[]>> {
  const byThreat = new Map<string, Map<string, string[]>>();
  const call = /\b(?:test|it|describe)(?:\.\w+)?\s*\(\s*(['"`])((?:P-[a-k][ ,]+)+)((?:\\.|(?!\1)[^\\])*)\1/g;
  for (const file of testFiles(join(repoRoot, 'test'))) {
    const source = readFileSync(file, 'utf8');
    for (const match of source.matchAll(call)) {
      const name = `${match[2]}${match[3]}`.replace(/\$\{[^}]*\}/g, '…').replace(/\\(.)/g, '$1');
      for (const id of match[2]!.match(/P-[a-k]/g) ?? []) {
        const files = byThreat.get(id) ?? new Map<string, string[]>();
        const rel = relative(repoRoot, file);
        files.set(rel, [...(files.get(rel) ?? []), name]);
        byThreat.set(id, files);
      }
    }
  }
  return byThreat;
}

/** The per-threat lists of the document: `### P-x …`, then "- `file`" lines each followed by "  - name" lines. */
function documentedTests(doc: string): { id: string; file: string; name: string }[] {
  const out: { id: string; file: string; name: string }[] = [];
  let id: string | null = null;
  let file: string | null = null;
  for (const line of doc.split('\n')) {
    const heading = /^#{2,3} (P-[a-k])\b/.exec(line);
    if (heading !== null) {
      id = heading[1]!;
      file = null;
      continue;
    }
    if (/^#{1,3} /.test(line)) {
      id = null;
      continue;
    }
    const fileLine = /^- `(test\/[^`]+\.test\.ts)`\s*$/.exec(line);
    if (id !== null && fileLine !== null) {
      file = fileLine[1]!;
      continue;
    }
    const nameLine = /^ {2}- (.+)$/.exec(line);
    if (id !== null && file !== null && nameLine !== null) out.push({ id, file, name: nameLine[1]!.trimEnd() });
  }
  return out;
}

test('every threat P-a … P-k has at least one test whose name starts with its id', () => {
  const byThreat = threatTests();
  const missing = THREATS.filter((id) => [...(byThreat.get(id)?.values() ?? [])].flat().length === 0);
  assert.deepEqual(missing, [], `threats without a test named after them: ${missing.join(', ')}`);
});

test('docs/threat-model.md has one table row per threat, each naming at least one test file', () => {
  const doc = readFileSync(DOC, 'utf8');
  const rows = doc.split('\n').filter((line) => /^\| P-[a-k] \|/.test(line));
  assert.deepEqual(
    rows.map((row) => row.slice(2, 5)),
    [...THREATS],
  );
  for (const row of rows) assert.match(row, /`test\/[^`]+\.test\.ts`/, `${row.slice(2, 5)} names its tests`);
});

test('every test file docs/threat-model.md names exists', () => {
  const doc = readFileSync(DOC, 'utf8');
  const named = [...new Set([...doc.matchAll(/`(test\/[^`\s]+\.test\.ts)`/g)].map((m) => m[1]!))];
  assert.ok(named.length > 0);
  const absent = named.filter((path) => !existsSync(join(repoRoot, path)));
  assert.deepEqual(absent, [], `named in the threat model but not in the tree: ${absent.join(', ')}`);
});

test('every test name docs/threat-model.md lists is a test of that threat in that file', () => {
  const byThreat = threatTests();
  const listed = documentedTests(readFileSync(DOC, 'utf8'));
  assert.ok(listed.length >= THREATS.length, 'the document lists test names');
  const stale = listed.filter(({ id, file, name }) => !(byThreat.get(id)?.get(file) ?? []).includes(name));
  assert.deepEqual(
    stale.map((s) => `${s.id} ${s.file}: ${s.name}`),
    [],
    'listed names that no test carries (renamed or removed?)',
  );
});
