// The production wrap's default package root: the folder holding package.json and node_modules, which
// bubblewrap binds read-only. A wrong root (dist/) makes every sandboxed `up` fail with ERR_SPAWN_EXITED.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { runtimeWrap } from '../../src/runtime/manager/sandbox-choice.js';

test('runtimeWrap binds the package root: package.json and node_modules as they exist', () => {
  const wrap = runtimeWrap({ mode: 'bubblewrap', path: '/usr/bin/bwrap', disableUserns: true });
  const wrapped = wrap({ file: process.execPath, args: ['/entry.js'] }, {
    modelFd: 3,
    gpu: 'off',
  } as unknown as Parameters<typeof wrap>[1]);
  const bound = wrapped.args.filter((arg) => arg.endsWith('/node_modules') || arg.endsWith('/package.json'));
  assert.ok(bound.length >= 2, wrapped.args.join(' '));
  for (const path of bound) assert.ok(existsSync(path), `${path} exists`);
  assert.ok(!bound.some((path) => path.includes('/dist/')), bound.join(' '));
});
