// One `companion up` per data dir (issue 18 item 1), through the real CLI as child processes and the real
// Secret Service (a memory keychain is per process, so the token must cross processes through a real one):
// a second `up` prints one line and exits 1 and leaves the first alone (record, state, lock, token,
// runtime); a stale lock (dead pid, or a pid now another process) does not block; two data dirs on one hub
// keep their own loopback tokens.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keychainServiceFor } from '../../src/authority/keychain.js';
import { readProcessIdentity } from '../../src/common/process-identity.js';
import { installationKey } from '../../src/shell/config.js';
import { UP_LOCK_FORMAT } from '../../src/shell/up-lock.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runCli, startCli, type LongRunning } from '../helpers/cli.js';
import { gate } from '../helpers/gate.js';
import {
  okValue,
  openKeychainChild,
  secretServiceAvailable,
  startSecretService,
  type KeychainChild,
  type SecretServiceHandle,
} from '../helpers/secret-service.js';

// The hub is never contacted by up, endpoint or status: it only names the keychain service.
const HUB = 'https://127.0.0.1:9';
const NODE_EXE = realpathSync(process.execPath);

const options = {
  ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
  timeout: 240_000,
};

let root = '';
let secrets: SecretServiceHandle | null = null;
let env: NodeJS.ProcessEnv = {};
const keychains = new Map<string, KeychainChild>();
const ups: LongRunning[] = [];

function freshDataDir(name: string): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'run'), { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  installTinyModel(dir);
  return dir;
}

/** The real keychain, opened on the data dir's service (hub + installation key), in a child of the private bus. */
async function keychainOf(dataDir: string): Promise<KeychainChild> {
  const service = keychainServiceFor(HUB, installationKey(dataDir));
  let keychain = keychains.get(service);
  if (keychain === undefined) {
    keychain = await openKeychainChild(secrets!.env, { service });
    keychains.set(service, keychain);
  }
  return keychain;
}

async function storedToken(dataDir: string): Promise<string | null> {
  const keychain = await keychainOf(dataDir);
  const value = okValue(
    await keychain.call('get', 'loopback-token'),
    'get loopback-token',
    keychain,
    secrets ?? undefined,
  );
  return typeof value === 'string' ? value : null;
}

/** Starts `companion up --json` on `dataDir` and waits until it is available. */
async function startUp(dataDir: string): Promise<{ up: LongRunning; endpoint: string }> {
  const up = startCli(
    ['up', '--json', '--threads', '1', '--allow-unsandboxed', '--hub', HUB, '--data-dir', dataDir],
    env,
  );
  ups.push(up);
  const available = await up.waitJson((v) => v.event === 'available', 90_000);
  return { up, endpoint: String(available.endpoint) };
}

async function modelsStatus(endpoint: string, token: string): Promise<number> {
  const response = await fetch(`${endpoint}/models`, {
    headers: { authorization: `Bearer ${token}` },
    redirect: 'error',
    signal: AbortSignal.timeout(10_000),
  });
  await response.body?.cancel();
  return response.status;
}

async function endpointOf(dataDir: string): Promise<{ url: string; token: string }> {
  const result = await runCli(['endpoint', '--json', '--hub', HUB, '--data-dir', dataDir], env, 30_000);
  assert.equal(result.status, 0, `${result.stderr}\n${secrets?.log() ?? ''}`);
  return JSON.parse(result.stdout) as { url: string; token: string };
}

async function deadPid(): Promise<number> {
  const child = spawn('/bin/true', [], { stdio: 'ignore' });
  const pid = child.pid!;
  await new Promise<void>((resolve) => child.once('close', () => resolve()));
  return pid;
}

function readRun(dataDir: string, name: string): string {
  return readFileSync(join(dataDir, 'run', name), 'utf8');
}

describe('companion up: one instance per data dir', options, () => {
  let first = { dataDir: '', endpoint: '', up: null as LongRunning | null };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'companion-single-'));
    secrets = await startSecretService();
    env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...secrets.env };
    const dataDir = freshDataDir('first');
    const started = await startUp(dataDir);
    first = { dataDir, endpoint: started.endpoint, up: started.up };
  });

  after(async () => {
    for (const up of ups) await up.stop();
    for (const keychain of keychains.values()) await keychain.close();
    await secrets?.stop();
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  test('a second up on a running data dir prints one line, exits 1 and leaves the first one serving with its record, state, lock and token', async () => {
    const { dataDir, endpoint } = first;
    const pid = first.up!.child.pid!;
    const record = readRun(dataDir, 'endpoint.json');
    const lock = readRun(dataDir, 'up.lock');
    const token = await storedToken(dataDir);
    assert.ok(token !== null, 'the first up stored a loopback token');
    const runtimeBefore = (JSON.parse(readRun(dataDir, 'state.json')) as { runtime: { pid: number } | null }).runtime;
    assert.ok(runtimeBefore !== null);

    const second = await runCli(
      ['up', '--threads', '1', '--allow-unsandboxed', '--hub', HUB, '--data-dir', dataDir],
      env,
      30_000,
    );
    assert.equal(second.status, 1, second.stderr);
    assert.equal(second.stderr, `companion is already running at ${endpoint} (pid ${pid})\n`);
    assert.equal(second.stdout, '');

    const json = await runCli(
      ['up', '--json', '--threads', '1', '--allow-unsandboxed', '--hub', HUB, '--data-dir', dataDir],
      env,
      30_000,
    );
    assert.equal(json.status, 1, json.stderr);
    assert.equal(json.stderr, `companion is already running at ${endpoint} (pid ${pid})\n`);
    assert.deepEqual(
      json.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as unknown),
      [
        {
          error: {
            code: 'ERR_LOCKED_BY_OTHER',
            message: `companion is already running at ${endpoint} (pid ${pid})`,
            pid,
            endpoint,
          },
        },
      ],
    );

    // Nothing the first one owns was deleted or replaced.
    assert.equal(readRun(dataDir, 'endpoint.json'), record);
    assert.equal(readRun(dataDir, 'up.lock'), lock);
    assert.equal(await storedToken(dataDir), token, 'the loopback token is unchanged');
    const state = JSON.parse(readRun(dataDir, 'state.json')) as { pid: number; runtime: { pid: number } | null };
    assert.equal(state.pid, pid);
    assert.equal(state.runtime?.pid, runtimeBefore.pid, 'the same runtime serves');
    assert.equal(first.up!.child.exitCode, null, 'the first up still runs');

    // `endpoint` hands out the token the first one accepts.
    const handed = await endpointOf(dataDir);
    assert.deepEqual(handed, { url: endpoint, token });
    assert.equal(await modelsStatus(handed.url, handed.token), 200);
    const status = await runCli(['status', '--json', '--hub', HUB, '--data-dir', dataDir], env, 30_000);
    assert.equal(status.status, 0, status.stderr);
    assert.equal((JSON.parse(status.stdout) as { endpoint: unknown }).endpoint, endpoint);
  });

  test('a stale up.lock (a dead pid, a pid another process now has, or not a lock) does not block up; the lock is released on stop and on a failed start', async () => {
    const dataDir = freshDataDir('stale');
    const lockPath = join(dataDir, 'run', 'up.lock');
    const sleeper = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    try {
      const identity = readProcessIdentity(sleeper.pid!);
      assert.ok(identity !== null);
      const stale: [string, string][] = [
        [
          'a dead pid',
          JSON.stringify({ format: UP_LOCK_FORMAT, pid: await deadPid(), startTime: '4242', exe: NODE_EXE }),
        ],
        // Same pid and start time, another program: the pid was reused.
        [
          'a reused pid (another program)',
          JSON.stringify({ format: UP_LOCK_FORMAT, pid: sleeper.pid!, startTime: identity.startTime, exe: NODE_EXE }),
        ],
        [
          'a reused pid (another start time)',
          JSON.stringify({
            format: UP_LOCK_FORMAT,
            pid: sleeper.pid!,
            startTime: String(Number(identity.startTime) - 1),
            exe: identity.exe,
          }),
        ],
        ['a file that is not a lock', 'garbage'],
      ];
      for (const [name, text] of stale) {
        writeFileSync(lockPath, text, { mode: 0o600 });
        const { up, endpoint } = await startUp(dataDir);
        const lock = JSON.parse(readRun(dataDir, 'up.lock')) as { pid: number };
        assert.equal(lock.pid, up.child.pid, `${name}: the new up holds the lock`);
        const handed = await endpointOf(dataDir);
        assert.equal(await modelsStatus(endpoint, handed.token), 200, name);
        assert.equal(await up.stop(), 0, up.stderr());
        assert.equal(existsSync(lockPath), false, `${name}: released on stop`);
        assert.equal(sleeper.exitCode, null, `${name}: the process that reused the pid was not touched`);
      }
    } finally {
      sleeper.kill('SIGKILL');
    }

    // A failed start (no model installed) releases the lock too.
    const empty = join(root, 'no-model');
    mkdirSync(empty, { mode: 0o700 });
    const failed = await runCli(
      ['up', '--threads', '1', '--allow-unsandboxed', '--hub', HUB, '--data-dir', empty],
      env,
      60_000,
    );
    assert.notEqual(failed.status, 0);
    assert.equal(existsSync(join(empty, 'run', 'up.lock')), false, 'released after a failed start');
  });

  test('two data dirs on one hub keep distinct loopback tokens, and each door accepts only its own', async () => {
    const other = freshDataDir('second');
    assert.notEqual(installationKey(other), installationKey(first.dataDir));
    const before = await storedToken(first.dataDir);
    const { endpoint } = await startUp(other);
    const a = await endpointOf(first.dataDir);
    const b = await endpointOf(other);
    assert.equal(a.token, before, "the second data dir did not replace the first one's token");
    assert.notEqual(a.token, b.token);
    assert.equal(b.url, endpoint);
    assert.equal(await modelsStatus(a.url, a.token), 200);
    assert.equal(await modelsStatus(b.url, b.token), 200);
    assert.equal(await modelsStatus(a.url, b.token), 401);
    assert.equal(await modelsStatus(b.url, a.token), 401);
    // Each installation's keychain service holds its own token.
    assert.equal(await storedToken(first.dataDir), a.token);
    assert.equal(await storedToken(other), b.token);
  });
});
