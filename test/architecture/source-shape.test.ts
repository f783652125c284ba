import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repoRoot } from '../helpers/paths.js';
import { checkSourceShape, describeFindings, docGaps, longFunctions, thrownCodes } from './source-shape.js';

test('no function in src/ is over 120 lines, and every export others rely on has a doc comment naming the codes it throws', () => {
  const { long, gaps } = checkSourceShape(repoRoot);
  assert.equal(long.length + gaps.length, 0, describeFindings(long, gaps));
});

test('longFunctions() measures each function, nested ones on their own, and names it', () => {
  const body = Array.from({ length: 8 }, (_, i) => `  const v${i} = ${i};`).join('\n');
  const source = `export function outer() {\n${body}\n  const inner = () => {\n${body}\n  };\n  return inner;\n}\n`;
  const found = longFunctions('x.ts', source, 10).map((f) => `${f.name}:${f.line}:${f.lines}`);
  assert.deepEqual(found, ['outer:1:21']);
  const both = longFunctions('x.ts', source, 9).map((f) => f.name);
  assert.deepEqual(both, ['outer', 'inner (arrow)']);
  assert.deepEqual(longFunctions('x.ts', source, 21), []);
});

test('docGaps() finds a missing comment, a comment that does not name a thrown code, and accepts a full one', () => {
  const source = [
    '/** Documented, and names ERR_A. */',
    "export function good() { throw new CompanionError('ERR_A'); }",
    'export function bare() { return 1; }',
    '/** Says nothing of the code. */',
    "export const arrow = () => { throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'x'); };",
    '// A line comment is not a doc comment.',
    'export class Thing {}',
    'export interface Shape { a: number }',
    'export const LIMIT = 3;',
  ].join('\n');
  const adapter = docGaps('a.ts', source, false).map(
    (g) => `${g.name}:${g.problem === 'missing' ? 'missing' : g.problem.unnamedCodes.join(',')}`,
  );
  assert.deepEqual(adapter, ['bare:missing', 'arrow:ERR_INVALID_ARG_VALUE', 'Thing:missing']);
  const core = docGaps('c.ts', source, true).map((g) => g.name);
  assert.deepEqual(core, ['bare', 'arrow', 'Thing', 'Shape', 'LIMIT']);
});

test('thrownCodes() reads CompanionError and CodedTypeError codes, once each', () => {
  const body =
    "throw new CompanionError('ERR_B', 'm'); reject(new CodedTypeError( 'ERR_A')); new CompanionError('ERR_B');";
  assert.deepEqual(thrownCodes(body), ['ERR_A', 'ERR_B']);
  assert.deepEqual(thrownCodes("new Error('ERR_C')"), []);
});
