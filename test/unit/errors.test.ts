import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ERROR_CODES,
  CompanionError,
  assertString,
  assertInteger,
  assertOneOf,
  isCompanionError,
} from '../../src/core/errors.js';
import { Secret } from '../../src/core/secret.js';
import { inspect } from 'node:util';
import { repoRoot } from '../helpers/paths.js';

test('every error code is documented in docs/errors.md', () => {
  const doc = readFileSync(join(repoRoot, 'docs/errors.md'), 'utf8');
  const missing = Object.keys(ERROR_CODES).filter((code) => !doc.includes(`\`${code}\``));
  assert.deepEqual(missing, []);
});

test('docs/errors.md documents no code that does not exist', () => {
  const doc = readFileSync(join(repoRoot, 'docs/errors.md'), 'utf8');
  const named = [...doc.matchAll(/`(ERR_[A-Z0-9_]+)`/g)].map((m) => m[1]);
  const unknown = named.filter((code) => code !== undefined && !(code in ERROR_CODES));
  assert.deepEqual(unknown, []);
});

test('CompanionError carries its code and the catalogue message by default', () => {
  const error = new CompanionError('ERR_MANIFEST_EXPIRED');
  assert.equal(error.code, 'ERR_MANIFEST_EXPIRED');
  assert.equal(error.message, ERROR_CODES.ERR_MANIFEST_EXPIRED);
  assert.ok(isCompanionError(error, 'ERR_MANIFEST_EXPIRED'));
  assert.ok(!isCompanionError(error, 'ERR_MANIFEST_SIGNATURE'));
  assert.ok(!isCompanionError(new Error('x')));
});

test('assert helpers throw TypeError with ERR_INVALID_ARG_* codes', () => {
  assert.throws(() => assertString(1, 'name'), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => assertString('', 'name'), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => assertInteger(1.5, 'n'), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => assertInteger(11, 'n', 0, 10), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => assertOneOf('x', 'tier', ['a', 'b']), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.doesNotThrow(() => assertOneOf('a', 'tier', ['a', 'b']));
});

test('Secret does not reveal its value through String, JSON, inspect or template literals', () => {
  const value = 'tok_0123456789abcdef';
  const secret = new Secret(value);
  for (const shown of [
    String(secret),
    `${secret}`,
    JSON.stringify({ secret }),
    inspect(secret),
    inspect({ nested: { secret } }),
  ]) {
    assert.ok(!shown.includes(value), shown);
  }
  assert.equal(secret.reveal(), value);
  assert.throws(() => new Secret(''), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('every row of docs/errors.md has a meaning and a remedy ("what to do")', () => {
  const doc = readFileSync(join(repoRoot, 'docs/errors.md'), 'utf8');
  const rows = doc.split('\n').filter((line) => /^\| `ERR_[A-Z0-9_]+` \|/.test(line));
  assert.equal(rows.length, Object.keys(ERROR_CODES).length, 'one row per code');
  const incomplete = rows.filter((line) => {
    // Cells split on unescaped pipes: code, meaning, remedy.
    const cells = line
      .slice(1, -1)
      .split(/(?<!\\)\|/)
      .map((cell) => cell.trim());
    return cells.length !== 3 || cells.some((cell) => cell.length === 0);
  });
  assert.deepEqual(incomplete, []);
});
