#!/usr/bin/env node
// Regenerates the "## Tests by threat" section of docs/threat-model.md from the test sources, with the
// same reading of test names as test/architecture/threat-model.test.ts (names starting with threat ids).
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

const root = resolve(new URL('..', import.meta.url).pathname);
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (name === 'fixtures') continue;
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith('.test.ts')) files.push(path);
  }
};
walk(join(root, 'test'));
const call = /\b(?:test|it|describe)(?:\.\w+)?\s*\(\s*(['"`])((?:P-[a-k][ ,]+)+)((?:\\.|(?!\1)[^\\])*)\1/g;
const by = new Map();
for (const file of files) {
  const source = readFileSync(file, 'utf8');
  for (const m of source.matchAll(call)) {
    const name = `${m[2]}${m[3]}`.replace(/\$\{[^}]*\}/g, '…').replace(/\\(.)/g, '$1');
    for (const id of m[2].match(/P-[a-k]/g) ?? []) {
      const f = by.get(id) ?? new Map();
      const rel = relative(root, file);
      f.set(rel, [...(f.get(rel) ?? []), name]);
      by.set(id, f);
    }
  }
}
const docPath = join(root, 'docs', 'threat-model.md');
const doc = readFileSync(docPath, 'utf8');
const titles = new Map([...doc.matchAll(/^### (P-[a-k]) — (.*)$/gm)].map((m) => [m[1], m[2]]));
const start = doc.indexOf('## Tests by threat');
const afterStart = doc.indexOf('\n## ', start + 1);
let section =
  '## Tests by threat\n\nNames as they appear in the files (`…` stands for an interpolated part). Regenerate with\n`node scripts/threat-tests.mjs`.\n';
for (const id of 'abcdefghijk'.split('').map((c) => `P-${c}`)) {
  section += `\n### ${id} — ${titles.get(id) ?? ''}\n\n`;
  for (const [file, names] of [...(by.get(id) ?? new Map())].sort()) {
    section += `- \`${file}\`\n${names.map((n) => `  - ${n}`).join('\n')}\n`;
  }
}
writeFileSync(docPath, doc.slice(0, start) + section + (afterStart === -1 ? '' : doc.slice(afterStart)));
console.log('threat tests:', [...by].map(([id, f]) => `${id}:${[...f.values()].flat().length}`).join(' '));
