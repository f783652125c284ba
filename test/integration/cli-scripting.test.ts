// The CLI as scripts see it (issue 18, items 6 and 7), driven as child processes: a reader that closes
// early, --json failures (exactly one JSON error line on stdout), the exit-status table, readable
// unknown-option lines, and `status` exiting 1 on a fault.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, runCli } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'companion-scripting-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A bare environment: no hub, no keychain bus, state under `dir`. */
function bareEnv(dir: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    COMPANION_HOME: join(dir, 'data'),
    DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(dir, 'no-such-bus')}`,
    XDG_RUNTIME_DIR: join(dir, 'no-such-runtime-dir'),
  };
}

function nonEmptyLines(text: string): string[] {
  return text.split('\n').filter((line) => line.length > 0);
}

/** Every stdout line parsed; fails when one is not JSON. */
function jsonLines(stdout: string): Record<string, unknown>[] {
  return nonEmptyLines(stdout).map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Human stderr lines, without the announcement that --keychain memory is in use (by design). */
function humanLines(stderr: string): string[] {
  return nonEmptyLines(stderr).filter((line) => !line.startsWith('companion: using the in-memory keychain'));
}

test('companion status piped into a reader that closes after one line exits 0 with nothing on stderr (EPIPE)', async (t) => {
  const dir = tempDir(t);
  for (let round = 0; round < 3; round += 1) {
    const child = spawn(process.execPath, [BIN, 'status'], {
      cwd: repoRoot,
      env: bareEnv(dir),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let seen = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.stdout.on('data', (c: Buffer) => {
      seen += c.toString('utf8');
      // As `head -1` does: read the first line, then close the pipe.
      if (seen.includes('\n')) child.stdout.destroy();
    });
    const status = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('companion status did not exit')), 30_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    assert.equal(status, 0, stderr);
    assert.equal(stderr, '', 'no stack trace, no line at all');
    assert.match(seen, /^Signed in: /);
  }
});

test('--json failures of pull, run, up, status and an unknown command print exactly one JSON error line on stdout', async (t) => {
  const dir = tempDir(t);
  const env = bareEnv(dir);
  const hub = ['--hub', 'https://127.0.0.1:9', '--keychain', 'memory'];
  const cases: { args: string[]; code: string; status: number }[] = [
    {
      args: ['pull', ...hub, '--manifest-key', `ed25519:${'A'.repeat(43)}`, '--json'],
      code: 'ERR_NOT_SIGNED_IN',
      status: 1,
    },
    { args: ['run', 'hello', '--tier', 'secret', '--json'], code: 'ERR_USAGE', status: 2 },
    { args: ['up', '--threads', '0', '--json'], code: 'ERR_USAGE', status: 2 },
    { args: ['status', '--thread', '2', '--json'], code: 'ERR_USAGE', status: 2 },
    { args: ['endpoint', ...hub, '--json'], code: 'ERR_UPSTREAM_UNAVAILABLE', status: 1 },
    { args: ['nosuch', '--json'], code: 'ERR_USAGE', status: 2 },
  ];
  for (const { args, code, status } of cases) {
    const result = await runCli(args, env, 30_000);
    const label = `${args.join(' ')}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
    assert.equal(result.status, status, label);
    const lines = jsonLines(result.stdout);
    assert.equal(lines.length, 1, label);
    const error = lines[0]!.error as { code?: unknown; message?: unknown };
    assert.deepEqual(Object.keys(lines[0]!), ['error'], label);
    assert.equal(error.code, code, label);
    assert.equal(typeof error.message, 'string', label);
    // The same message is the one human line on stderr.
    const human = humanLines(result.stderr);
    assert.equal(human.length, 1, label);
    assert.ok(human[0]!.includes(String(error.message)), label);
  }
});

test('every usage error exits 2 with one readable line on stderr and nothing on stdout', async (t) => {
  const dir = tempDir(t);
  const env = bareEnv(dir);
  const cases: string[][] = [
    ['up', '--threads', '0'],
    ['up', '--threads', 'many'],
    ['run', 'hello', '--max-tokens', '0'],
    ['run', 'hello', '--max-tokens', '1.5'],
    ['run', 'hello', '--tier', 'secret'],
    ['run', 'hello', '--tier'],
    ['run'],
    ['run', 'one', 'two'],
    ['pull', 'a', 'b'],
    ['status', '--bogus'],
    ['status', '-x'],
    ['status', '--json=yes'],
    ['status', 'extra'],
    ['endpoint', '--hub'],
    ['login', '--timeout', '0', '--hub', 'https://127.0.0.1:9', '--keychain', 'memory'],
    ['login', '--hub', 'http://127.0.0.1:9'],
    ['logout'],
    ['demo', '--threads', '0'],
    ['doctor', '--bogus'],
    ['hub', '--bogus'],
    ['nosuch'],
  ];
  for (const args of cases) {
    const result = await runCli(args, env, 30_000);
    const label = `${args.join(' ')}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
    assert.equal(result.status, 2, label);
    assert.equal(result.stdout, '', label);
    const human = humanLines(result.stderr);
    assert.equal(human.length, 1, label);
    assert.match(human[0]!, /^companion( [a-z]+)?: .+ \(see companion( [a-z]+)? --help\)$/, label);
  }
});

test('an unknown option is one readable line naming it (never node:util text, never an =value)', async (t) => {
  const dir = tempDir(t);
  const env = bareEnv(dir);
  const up = await runCli(['up', '--thread', '2'], env, 30_000);
  assert.equal(up.status, 2);
  assert.equal(up.stderr, 'companion up: unknown option --thread (see companion up --help)\n');
  const secret = await runCli(['run', 'hello', '--token=sk-secret-value'], env, 30_000);
  assert.equal(secret.status, 2);
  assert.equal(secret.stderr, 'companion run: unknown option --token (see companion run --help)\n');
  const missing = await runCli(['status', '--data-dir'], env, 30_000);
  assert.equal(missing.stderr, 'companion status: --data-dir needs a value (see companion status --help)\n');
  const flag = await runCli(['status', '--json=1'], env, 30_000);
  assert.equal(flag.stderr, 'companion status: --json takes no value (see companion status --help)\n');
  for (const result of [up, secret, missing, flag])
    assert.doesNotMatch(result.stderr, /TypeError|ERR_PARSE_ARGS|To specify a positional/);
});

test('companion status exits 1 when the keychain is unavailable, and 0 when nothing is set up (not a fault)', async (t) => {
  const dir = tempDir(t);
  const env = bareEnv(dir);
  const fresh = await runCli(['status', '--json'], env, 30_000);
  assert.equal(fresh.status, 0, fresh.stderr);
  assert.equal(jsonLines(fresh.stdout).length, 1);
  assert.equal(fresh.stderr, '');

  // A hub is configured, the OS keychain cannot be reached (the bus address points nowhere).
  const faulty = await runCli(['status', '--json', '--hub', 'https://127.0.0.1:9'], env, 30_000);
  assert.equal(faulty.status, 1, faulty.stderr);
  const [report, error] = jsonLines(faulty.stdout);
  assert.equal(report?.signedIn, false);
  assert.match(String(report?.keychain), /^ERR_KEYCHAIN_/);
  assert.equal((error?.error as { code?: unknown } | undefined)?.code, report?.keychain);
  assert.equal(humanLines(faulty.stderr).length, 1, faulty.stderr);

  const human = await runCli(['status', '--hub', 'https://127.0.0.1:9'], env, 30_000);
  assert.equal(human.status, 1);
  assert.match(human.stdout, /^Signed in: {2}no \(keychain: ERR_KEYCHAIN_/);
  assert.match(human.stderr, /^companion status: the keychain is not usable .*\[ERR_KEYCHAIN_[A-Z]+\]\n$/);
});
