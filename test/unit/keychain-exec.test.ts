// runCommand(): the bounded runner the keychain backends use for dbus-send, busctl, security, PowerShell.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCommand, pickEnv } from '../../src/authority/keychain-exec.js';

test('runCommand() passes stdin, returns stdout and the exit status', async () => {
  const result = await runCommand(
    process.execPath,
    [
      '-e',
      'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{process.stdout.write(s.toUpperCase());process.exit(3)})',
    ],
    { input: 'abc', timeoutMs: 10_000, env: {} },
  );
  assert.deepEqual(result, { kind: 'exited', status: 3, stdout: 'ABC', stderr: '' });
});

test('runCommand() gives the child only the environment it is handed', async () => {
  const result = await runCommand(
    process.execPath,
    ['-e', 'process.stdout.write(JSON.stringify(Object.keys(process.env).filter(k=>!k.startsWith("__CF"))))'],
    { timeoutMs: 10_000, env: { ONLY: '1' } },
  );
  assert.equal(result.kind, 'exited');
  if (result.kind === 'exited') assert.deepEqual(JSON.parse(result.stdout), ['ONLY']);
});

test('runCommand() kills a child that outlives the timeout and reports timeout', async () => {
  const result = await runCommand(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { timeoutMs: 200, env: {} });
  assert.deepEqual(result, { kind: 'timeout' });
});

test('runCommand() reports not-found for a missing program', async () => {
  assert.deepEqual(await runCommand('/nonexistent/companion-no-such-tool', [], { timeoutMs: 1_000, env: {} }), {
    kind: 'not-found',
  });
});

test('pickEnv() copies only the named, non-empty variables', () => {
  assert.deepEqual(pickEnv({ A: '1', B: '', C: '3', SECRET: 'x' }, ['A', 'B', 'C', 'D']), { A: '1', C: '3' });
});
