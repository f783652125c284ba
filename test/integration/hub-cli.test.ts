// `companion hub` as a real process: one JSON line once ready, a CA file that a client can trust, a
// clean stop on SIGTERM and SIGINT (exit 0), usage errors with exit 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Agent, fetch } from 'undici';
import { parseTrustedKeys } from '../../src/core/manifest-format.js';
import { repoRoot } from '../helpers/paths.js';

const BIN = join(repoRoot, 'bin', 'companion.js');

interface Ready {
  hub: string;
  modelHost: string;
  ca: string;
  manifestKey: string;
  user: string;
  password: string;
}

async function startCli(
  t: { after(fn: () => Promise<void> | void): void },
  args: string[],
): Promise<{ child: ChildProcessWithoutNullStreams; ready: Ready; stderr: () => string }> {
  const child = spawn(process.execPath, [BIN, 'hub', '--json', ...args], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  const lines = createInterface({ input: child.stdout });
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [line] = (await once(lines, 'line')) as [string];
  clearTimeout(timer);
  return { child, ready: JSON.parse(line) as Ready, stderr: () => stderr };
}

async function exitOf(child: ChildProcessWithoutNullStreams): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return code;
}

test('companion hub --json prints exactly the contract line, serves over the printed CA and stops with exit 0 on SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'companion-hub-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dataDir = join(dir, 'data');
  const { child, ready, stderr } = await startCli(t, ['--data-dir', dataDir]);
  assert.deepEqual(Object.keys(ready), ['hub', 'modelHost', 'ca', 'manifestKey', 'user', 'password']);
  assert.match(ready.hub, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.match(ready.modelHost, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(ready.ca, join(dataDir, 'ca.pem'));
  assert.equal(statSync(ready.ca).mode & 0o077, 0);
  assert.equal(parseTrustedKeys(ready.manifestKey).length, 1);
  assert.equal(ready.password, JSON.parse(readFileSync(join(dataDir, 'dev-login.json'), 'utf8')).password);

  const agent = new Agent({ connect: { ca: readFileSync(ready.ca, 'utf8') } });
  t.after(() => agent.close());
  const discovery = (await (
    await fetch(`${ready.hub}/.well-known/openid-configuration`, { dispatcher: agent })
  ).json()) as { issuer: string };
  assert.equal(discovery.issuer, ready.hub);
  const head = await fetch(`${ready.modelHost}/models/tiny-demo.gguf`, { method: 'HEAD', dispatcher: agent });
  assert.equal(head.status, 200);

  child.kill('SIGTERM');
  assert.equal(await exitOf(child), 0);
  assert.equal(stderr(), '', 'nothing on stderr with --json');
  assert.ok(!existsSync(join(dataDir, 'hub.lock')), 'the data directory lock is released');
});

test('companion hub without --data-dir writes the CA to a private temp folder and removes it on SIGINT', async (t) => {
  const { child, ready } = await startCli(t, []);
  assert.ok(existsSync(ready.ca));
  assert.equal(statSync(join(ready.ca, '..')).mode & 0o777, 0o700);
  child.kill('SIGINT');
  assert.equal(await exitOf(child), 0);
  assert.ok(!existsSync(ready.ca));
});

test('companion hub refuses unknown arguments and bad ports with exit 2', () => {
  for (const args of [['--bogus'], ['--port', 'x'], ['--port', '70000'], ['--data-dir']]) {
    const result = spawnSync(process.execPath, [BIN, 'hub', ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(result.status, 2, args.join(' '));
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /^companion hub: /);
  }
});

test('a second companion hub on a locked data directory fails with ERR_LOCKED_BY_OTHER and exit 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'companion-hub-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { child } = await startCli(t, ['--data-dir', dir]);
  const second = spawnSync(process.execPath, [BIN, 'hub', '--json', '--data-dir', dir], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(second.status, 1);
  // With --json the failure is the one error object on stdout (src/cli/main.ts).
  assert.equal((JSON.parse(second.stdout) as { error: { code: string } }).error.code, 'ERR_LOCKED_BY_OTHER');
  assert.match(second.stderr, /\[ERR_LOCKED_BY_OTHER\]/);
  child.kill('SIGTERM');
  assert.equal(await exitOf(child), 0);
});
