// Service and help conveniences (issue 18 item 8), through the real CLI as child processes: `up --detach`
// then the endpoint serves, `logs` shows its events and the runtime's stderr and never the loopback token,
// `stop` stops it (and never signals a pid that is another process now; SIGKILL after its bound, saying
// so); completion scripts for bash, zsh and fish; `help CMD`; "did you mean"; examples in every --help;
// `demo --data-dir`. The endpoint token crosses processes only through a real keychain, so the detached
// `up` that a client uses runs on the real Secret Service (gated on gnome-keyring, as
// cli-single-instance.test.ts); everything else uses no keychain or the memory one.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMANDS } from '../../src/cli/commands.js';
import type { Io } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { readProcessIdentity } from '../../src/common/process-identity.js';
import { UP_LOCK_FORMAT } from '../../src/shell/up-lock.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runCli, startCli, type CliResult } from '../helpers/cli.js';
import { gate } from '../helpers/gate.js';
import { secretServiceAvailable, startSecretService, type SecretServiceHandle } from '../helpers/secret-service.js';

// The hub is never contacted by up, endpoint, status, logs or stop: it only names the keychain service.
const HUB = 'https://127.0.0.1:9';
const NODE_EXE = realpathSync(process.execPath);
const UP_ARGS = ['--threads', '1', '--allow-unsandboxed', '--hub', HUB];

let root = '';
const cleanups: (() => unknown)[] = [];

before(() => {
  root = mkdtempSync(join(tmpdir(), 'companion-service-'));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  if (root !== '') rmSync(root, { recursive: true, force: true });
});

function baseEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(root, 'home'), LANG: 'C.UTF-8', ...extra };
}

function dataDir(name: string, model = true): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  if (model) installTinyModel(dir);
  return dir;
}

function alive(pid: number): boolean {
  const identity = readProcessIdentity(pid);
  return identity !== null && identity.state !== 'Z';
}

/** A live child whose death ends the test's worries: killed at the end whatever happens. */
function track(child: ChildProcess): ChildProcess {
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

/** Stops a detached `up` left by a failed test (by its lock, through the CLI). */
function stopAtEnd(dir: string, env: NodeJS.ProcessEnv): void {
  cleanups.push(() => runCli(['stop', '--timeout', '5', '--data-dir', dir], env, 30_000).catch(() => undefined));
}

function lockRecordOf(pid: number, override: Record<string, unknown> = {}): string {
  const identity = readProcessIdentity(pid);
  assert.ok(identity !== null, 'the process has an identity in /proc');
  return JSON.stringify({ format: UP_LOCK_FORMAT, pid, startTime: identity.startTime, exe: identity.exe, ...override });
}

function sh(script: string): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync('bash', ['-c', script], { encoding: 'utf8', timeout: 30_000, env: baseEnv() });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const has = (name: string): boolean => spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;

/** `companion ARGS` run in this process through the CLI's own main(), with stdout and stderr captured as the binary prints them. */
async function runInProcess(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: Io = {
    out: (line) => (stdout += `${line}\n`),
    err: (line) => (stderr += `${line}\n`),
    write: (text) => (stdout += text),
    isTty: false,
    env: baseEnv(),
  };
  const status = await main(args, io);
  return { status, stdout, stderr };
}

describe('help, "did you mean", examples and completion', () => {
  test('companion help CMD prints exactly what companion CMD --help prints, for every command', async () => {
    // The real binary for the first command (its output is the in-process one, byte for byte); the rest
    // in-process through the same main(), which spares ~30 s of process starts.
    for (const [index, command] of COMMANDS.entries()) {
      const run = index === 0 ? (args: string[]) => runCli(args, baseEnv(), 30_000) : runInProcess;
      const viaHelp = await run(['help', command.name]);
      const viaFlag = await run([command.name, '--help']);
      if (index === 0) assert.equal(viaFlag.stdout, (await runInProcess([command.name, '--help'])).stdout);
      assert.equal(viaHelp.status, 0, viaHelp.stderr);
      assert.equal(viaFlag.status, 0, viaFlag.stderr);
      assert.equal(viaHelp.stdout, viaFlag.stdout, command.name);
      // Every --help has a short description, its options and an Examples: section that runs the command.
      assert.match(viaFlag.stdout, /^Usage: companion /, command.name);
      assert.match(viaFlag.stdout, /\nOptions:\n/, command.name);
      assert.match(
        viaFlag.stdout,
        new RegExp(`\\nExamples:\\n(?: {2}.+\\n)*? {2}.*companion ${command.name}\\b`),
        command.name,
      );
    }
  });

  test('a mistyped command exits 2 with a "did you mean" line (also after help), and with --json one error object', async () => {
    const typo = await runCli(['stauts'], baseEnv(), 30_000);
    assert.equal(typo.status, 2);
    assert.equal(typo.stderr, 'companion: unknown command stauts; did you mean status?\n');
    assert.equal(typo.stdout, '');
    const json = await runCli(['endpiont', '--json'], baseEnv(), 30_000);
    assert.equal(json.status, 2);
    assert.deepEqual(JSON.parse(json.stdout), {
      error: { code: 'ERR_USAGE', message: 'unknown command endpiont; did you mean endpoint?' },
    });
    const help = await runCli(['help', 'lgout'], baseEnv(), 30_000);
    assert.equal(help.status, 2);
    assert.equal(help.stderr, 'companion help: unknown command lgout; did you mean logout?\n');
    const far = await runCli(['xyzzy'], baseEnv(), 30_000);
    assert.equal(far.status, 2);
    assert.equal(far.stderr, 'companion: unknown command xyzzy (see companion --help)\n');
  });

  test('completion bash: the script parses (bash -n), registers `complete -F _companion companion`, and completes commands, options and values', async () => {
    const result = await runCli(['completion', 'bash'], baseEnv(), 30_000);
    assert.equal(result.status, 0, result.stderr);
    const file = join(root, 'companion.bash');
    writeFileSync(file, result.stdout);
    assert.equal(sh(`bash -n ${file}`).status, 0);
    const registered = sh(`source ${file}; complete -p companion`);
    assert.equal(registered.status, 0, registered.stderr);
    assert.equal(registered.stdout.trim(), 'complete -F _companion companion');
    const complete = (words: string[]): string[] => {
      const script = `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _companion; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const out = sh(script);
      assert.equal(out.status, 0, out.stderr);
      return out.stdout.split('\n').filter((line) => line !== '');
    };
    assert.deepEqual(complete(['companion', 'st']), ['status', 'stop']);
    assert.deepEqual(complete(['companion', 'up', '--de']), ['--detach', '--debug']);
    assert.deepEqual(complete(['companion', 'logs', '--f']), ['--follow']);
    assert.deepEqual(complete(['companion', 'completion', '']), ['--help', 'bash', 'zsh', 'fish']);
    assert.deepEqual(complete(['companion', 'up', '--threads', '']), [], 'a value is not completed with options');
    assert.ok(complete(['companion', 'help', '']).includes('endpoint'));
    // Every command of the table, every option of its --help.
    for (const command of COMMANDS) {
      assert.ok(complete(['companion', command.name.slice(0, 2)]).includes(command.name), command.name);
    }
  });

  test('completion zsh and fish: every command with its summary and options (checked by the shell when it is installed)', async () => {
    const zsh = await runCli(['completion', 'zsh'], baseEnv(), 30_000);
    const fish = await runCli(['completion', 'fish'], baseEnv(), 30_000);
    assert.equal(zsh.status, 0, zsh.stderr);
    assert.equal(fish.status, 0, fish.stderr);
    assert.match(zsh.stdout, /^#compdef companion\n/);
    assert.match(zsh.stdout, /compdef _companion companion/);
    for (const command of COMMANDS) {
      assert.match(zsh.stdout, new RegExp(`\\n {4}'${command.name}:[^']+'\\n`), `zsh: ${command.name}`);
      assert.match(fish.stdout, new RegExp(`-a ${command.name} -d '[^']+'\\n`), `fish: ${command.name}`);
    }
    assert.match(zsh.stdout, /up\) _arguments .*'--detach\[[^\]]+\]'/);
    assert.match(zsh.stdout, /'--data-dir\[[^\]]+\]:DIR:_files -\/'/);
    assert.match(fish.stdout, /-n '__fish_seen_subcommand_from logs' -l follow -d /);
    assert.match(fish.stdout, /-n '__fish_seen_subcommand_from stop' -l timeout -r -d /);
    assert.match(fish.stdout, /-n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'/);
    // The shells themselves, where installed (the text checks above hold either way).
    if (has('zsh')) {
      const file = join(root, '_companion');
      writeFileSync(file, zsh.stdout);
      assert.equal(spawnSync('zsh', ['-n', file]).status, 0);
    }
    if (has('fish')) {
      const file = join(root, 'companion.fish');
      writeFileSync(file, fish.stdout);
      assert.equal(spawnSync('fish', ['-n', file]).status, 0);
    }
    const bad = await runCli(['completion', 'tcsh'], baseEnv(), 30_000);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^companion completion: the shell is one of bash, zsh, fish/);
  });
});

describe('companion stop without a running up', () => {
  test('stop when nothing runs: one line, exit 0; with --json {"stopped":false}', async () => {
    const dir = dataDir('idle', false);
    const human = await runCli(['stop', '--data-dir', dir], baseEnv(), 30_000);
    assert.equal(human.status, 0, human.stderr);
    assert.equal(human.stdout, `companion is not running (data dir ${dir})\n`);
    assert.equal(human.stderr, '');
    const json = await runCli(['stop', '--json', '--data-dir', dir], baseEnv(), 30_000);
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { stopped: false });
  });

  test('stop never signals a pid that another process has now (a stale lock: other start time, other program, dead pid)', async () => {
    const dir = dataDir('reused', false);
    mkdirSync(join(dir, 'run'), { mode: 0o700 });
    const lockPath = join(dir, 'run', 'up.lock');
    // A process that ignores nothing: any SIGTERM would end it, which the test would see.
    const sleeper = track(spawn('/bin/sleep', ['120'], { stdio: 'ignore' }));
    const identity = readProcessIdentity(sleeper.pid!);
    assert.ok(identity !== null);
    const dead = spawn('/bin/true', [], { stdio: 'ignore' });
    await new Promise((resolve) => dead.once('close', resolve));
    const stale: [string, string][] = [
      ['another start time', lockRecordOf(sleeper.pid!, { startTime: String(Number(identity.startTime) - 1) })],
      ['another program', lockRecordOf(sleeper.pid!, { exe: NODE_EXE })],
      ['a dead pid', JSON.stringify({ format: UP_LOCK_FORMAT, pid: dead.pid, startTime: '4242', exe: NODE_EXE })],
      ['not a lock', 'garbage'],
    ];
    for (const [name, text] of stale) {
      writeFileSync(lockPath, text, { mode: 0o600 });
      const result = await runCli(['stop', '--data-dir', dir], baseEnv(), 30_000);
      assert.equal(result.status, 0, `${name}: ${result.stderr}`);
      assert.equal(result.stdout, `companion is not running (data dir ${dir})\n`, name);
      assert.ok(alive(sleeper.pid!), `${name}: the process with that pid was not signalled`);
      assert.equal(sleeper.exitCode, null, name);
      assert.equal(sleeper.signalCode, null, name);
    }
  });

  test('stop sends SIGKILL after --timeout to a holder that ignores SIGTERM, says so, and removes its lock', async () => {
    const dir = dataDir('stubborn', false);
    mkdirSync(join(dir, 'run'), { mode: 0o700 });
    const lockPath = join(dir, 'run', 'up.lock');
    // A node process standing in for a hung `up`: the lock names it with its real identity.
    const stubborn = track(
      spawn(
        process.execPath,
        ['-e', 'process.on("SIGTERM", () => console.log("term")); console.log("ready"); setInterval(() => {}, 1000);'],
        { stdio: ['ignore', 'pipe', 'ignore'] },
      ),
    );
    let out = '';
    await new Promise<void>((resolve) =>
      stubborn.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
        if (out.includes('ready')) resolve();
      }),
    );
    writeFileSync(lockPath, lockRecordOf(stubborn.pid!), { mode: 0o600 });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      stubborn.once('exit', (_code, signal) => resolve(signal)),
    );
    const result = await runCli(['stop', '--timeout', '1', '--data-dir', dir], baseEnv(), 60_000);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(
      result.stderr,
      `companion (pid ${stubborn.pid}) did not exit within 1 s of SIGTERM; sending SIGKILL\n`,
    );
    assert.equal(result.stdout, `Stopped companion (pid ${stubborn.pid}) with SIGKILL.\n`);
    assert.equal(await exited, 'SIGKILL');
    assert.ok(out.includes('term'), 'it got SIGTERM first');
    assert.equal(existsSync(lockPath), false, 'the stale lock is gone');
  });

  test('up --detach that cannot start (no model) prints the failure with its code, exits 1, and leaves nothing running', async () => {
    const dir = dataDir('detach-fails', false);
    const env = baseEnv();
    stopAtEnd(dir, env);
    const result = await runCli(
      ['up', '--detach', ...UP_ARGS, '--keychain', 'memory', '--data-dir', dir],
      env,
      120_000,
    );
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^companion up: .+ \[ERR_MODEL_NOT_INSTALLED\]\n$/);
    assert.equal(result.stdout, '');
    assert.equal(existsSync(join(dir, 'run', 'up.lock')), false, 'no up holds the data dir');
    const logs = await runCli(['logs', '--data-dir', dir], env, 30_000);
    assert.equal(logs.status, 0, logs.stderr);
    assert.match(logs.stdout, / up: starting in the background/);
    assert.match(logs.stdout, / up: failed: .+ \[ERR_MODEL_NOT_INSTALLED\]\n/);
  });
});

describe(
  'companion up --detach, logs and stop on the real Secret Service',
  { ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'), timeout: 240_000 },
  () => {
    let secrets: SecretServiceHandle | null = null;
    let env: NodeJS.ProcessEnv = {};

    before(async () => {
      secrets = await startSecretService();
      env = baseEnv(secrets.env);
    });

    after(async () => {
      await secrets?.stop();
    });

    async function cli(args: string[], timeoutMs = 60_000): Promise<CliResult> {
      return runCli(args, env, timeoutMs);
    }

    test('up --detach returns once available with URL and pid; the endpoint serves; logs show events and runtime stderr, never the token; stop stops it', async () => {
      const dir = dataDir('detached', false);
      const { sha256, modelPath } = installTinyModel(dir);
      stopAtEnd(dir, env);
      const started = await cli(['up', '--detach', '--json', ...UP_ARGS, '--data-dir', dir], 180_000);
      assert.equal(started.status, 0, started.stderr);
      const event = JSON.parse(started.stdout) as { event: string; endpoint: string; pid: number };
      assert.equal(event.event, 'available');
      assert.match(event.endpoint, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
      assert.ok(alive(event.pid), 'the background up runs after the command returned');
      const lock = JSON.parse(readFileSync(join(dir, 'run', 'up.lock'), 'utf8')) as { pid: number };
      assert.equal(lock.pid, event.pid, 'the background up holds the lock');

      // A client in another process gets URL and token from `endpoint` and is served.
      const handed = await cli(['endpoint', '--json', '--hub', HUB, '--data-dir', dir]);
      assert.equal(handed.status, 0, handed.stderr);
      const { url, token } = JSON.parse(handed.stdout) as { url: string; token: string };
      assert.equal(url, event.endpoint);
      const models = await fetch(`${url}/models`, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(models.status, 200);
      await models.body?.cancel();

      // A second --detach on the same data dir reports the running one and leaves it alone.
      const second = await cli(['up', '--detach', ...UP_ARGS, '--data-dir', dir], 60_000);
      assert.equal(second.status, 1);
      assert.equal(second.stderr, `companion is already running at ${url} (pid ${event.pid})\n`);
      assert.ok(alive(event.pid));

      // The log: private, its events and the runtime's stderr, no secret.
      const logFile = join(dir, 'logs', 'companion.log');
      assert.equal(statSync(join(dir, 'logs')).mode & 0o777, 0o700);
      assert.equal(statSync(logFile).mode & 0o777, 0o600);
      const logs = await cli(['logs', '--lines', '1000', '--data-dir', dir]);
      assert.equal(logs.status, 0, logs.stderr);
      assert.match(logs.stdout, new RegExp(` up: started \\(pid ${event.pid}, in the background\\)\\n`));
      assert.match(logs.stdout, new RegExp(` up: listening at ${url.replace(/[.]/g, '\\.')}\\n`));
      assert.match(logs.stdout, / up: runtime ready \(pid \d+\)\n/);
      assert.match(logs.stdout, / up: available \(\d+ parallel sequences? of \d+ tokens\)\n/);
      assert.match(logs.stdout, / runtime: \S/, "the runtime's stderr is in the log");
      for (const [what, text] of [
        ['logs output', logs.stdout],
        ['log file', readFileSync(logFile, 'utf8')],
      ] as const) {
        assert.ok(!text.includes(token), `${what}: no loopback token`);
        assert.ok(!text.includes(encodeURIComponent(token)), `${what}: no encoded loopback token`);
        assert.ok(!text.includes(modelPath) && !text.includes(join(dir, 'models')), `${what}: no model path`);
        assert.ok(!text.toLowerCase().includes(sha256), `${what}: no model digest`);
      }
      const tail = await cli(['logs', '--lines', '2', '--json', '--data-dir', dir]);
      assert.equal(tail.status, 0, tail.stderr);
      const tailLines = tail.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { time: string; source: string; text: string });
      assert.equal(tailLines.length, 2);
      for (const line of tailLines)
        assert.ok(
          !Number.isNaN(Date.parse(line.time)) && /^(up|runtime)$/.test(line.source) && line.text.length > 0,
          JSON.stringify(line),
        );

      // logs --follow prints what is written while it runs: the stop's lines.
      const follower = startCli(['logs', '--follow', '--lines', '1', '--data-dir', dir], env);
      cleanups.push(() => follower.stop());
      // Its first line is the last one written so far: from then on it follows (nothing is lost in between).
      const ready = Date.now() + 30_000;
      while (follower.lines.length === 0 && Date.now() < ready) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(follower.lines.length, 1, follower.stderr());
      const stopped = await cli(['stop', '--data-dir', dir], 60_000);
      assert.equal(stopped.status, 0, stopped.stderr);
      assert.equal(stopped.stdout, `Stopped companion (pid ${event.pid}).\n`);
      assert.equal(stopped.stderr, '');
      assert.equal(alive(event.pid), false, 'the background up exited');
      assert.equal(existsSync(join(dir, 'run', 'up.lock')), false, 'its lock is released');
      assert.equal(existsSync(join(dir, 'run', 'endpoint.json')), false, 'its discovery record is removed');
      const runtimePid = Number(/ up: runtime ready \(pid (\d+)\)/.exec(logs.stdout)?.[1]);
      assert.equal(alive(runtimePid), false, 'its runtime is gone too');
      const deadline = Date.now() + 30_000;
      while (!follower.lines.some((line) => / up: stopped$/.test(line)) && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(
        follower.lines.some((line) => / up: SIGTERM: stopping$/.test(line)),
        follower.lines.join('\n'),
      );
      assert.ok(
        follower.lines.some((line) => / up: stopped$/.test(line)),
        follower.lines.join('\n'),
      );
      assert.equal(
        follower.lines.filter((line) => / up: (started|listening at) /.test(line)).length,
        0,
        '--lines 1 printed only the last line from before',
      );
      assert.equal(await follower.stop(), 0, 'logs --follow ends with 0 on SIGTERM');

      const again = await cli(['stop', '--data-dir', dir]);
      assert.equal(again.status, 0);
      assert.equal(again.stdout, `companion is not running (data dir ${dir})\n`);
    });

    test('logout stops the running up of its data dir first, then deletes the keychain items; the endpoint no longer serves', async () => {
      const dir = dataDir('logout', false);
      installTinyModel(dir);
      stopAtEnd(dir, env);
      const started = await cli(['up', '--detach', '--json', ...UP_ARGS, '--data-dir', dir], 180_000);
      assert.equal(started.status, 0, started.stderr);
      const event = JSON.parse(started.stdout) as { endpoint: string; pid: number };
      const handed = await cli(['endpoint', '--json', '--hub', HUB, '--data-dir', dir]);
      assert.equal(handed.status, 0, handed.stderr);

      const logout = await cli(['logout', '--json', '--hub', HUB, '--data-dir', dir], 90_000);
      assert.equal(logout.status, 0, logout.stderr);
      const events = logout.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      assert.deepEqual(events[0], { event: 'stopped', pid: event.pid });
      assert.equal(events[1]?.event, 'signed-out');
      assert.equal(alive(event.pid), false, 'the up exited before logout returned');
      assert.equal(existsSync(join(dir, 'run', 'up.lock')), false, 'its lock is released');
      await assert.rejects(
        fetch(`${event.endpoint}/models`, { signal: AbortSignal.timeout(5_000) }),
        'nothing listens on the endpoint any more',
      );
      const after = await cli(['endpoint', '--json', '--hub', HUB, '--data-dir', dir]);
      assert.notEqual(after.status, 0, 'endpoint has nothing to hand out');
      assert.ok(
        !after.stdout.includes((JSON.parse(handed.stdout) as { token: string }).token),
        'the old token is gone',
      );

      // Without a running up, logout says nothing about stopping.
      const human = await cli(['logout', '--hub', HUB, '--data-dir', dir], 60_000);
      assert.equal(human.status, 0, human.stderr);
      assert.doesNotMatch(human.stdout, /Stopped/);
    });
  },
);

describe('companion demo --data-dir', () => {
  test(
    "demo --data-dir keeps its state (model, log) in a new folder, runs again on it, and refuses a folder that is not a demo's",
    { timeout: 300_000 },
    async () => {
      const env = baseEnv({ XDG_RUNTIME_DIR: join(root, 'xdg-run'), TMPDIR: join(root, 'tmp') });
      mkdirSync(join(root, 'xdg-run'), { recursive: true, mode: 0o700 });
      mkdirSync(join(root, 'tmp'), { recursive: true, mode: 0o700 });
      const dir = join(root, 'demo-state');
      const first = await runCli(['demo', '--keychain', 'memory', '--threads', '1', '--data-dir', dir], env, 240_000);
      assert.equal(first.status, 0, first.stderr);
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      assert.ok(
        readdirSync(join(dir, 'models')).some((name) => name.endsWith('.gguf')),
        'the model stays in the data dir',
      );
      const log = readFileSync(join(dir, 'logs', 'companion.log'), 'utf8');
      assert.match(log, / demo: started/);
      assert.match(log, / up: available \(\d+ parallel sequences? of \d+ tokens\)\n/);
      assert.deepEqual(
        readdirSync(join(root, 'tmp')).filter((name) => name.startsWith('companion-demo-')),
        [],
        'no temp data dir was used',
      );
      assert.equal(existsSync(join(dir, 'run', 'up.lock')), false, 'the demo released the data dir');

      const second = await runCli(['demo', '--keychain', 'memory', '--threads', '1', '--data-dir', dir], env, 240_000);
      assert.equal(second.status, 0, second.stderr);
      assert.equal(
        readFileSync(join(dir, 'logs', 'companion.log'), 'utf8').split(' demo: started').length,
        3,
        'the second run appended to the same log',
      );

      // A folder with other files (an installation, a home folder…) is refused before anything starts.
      const foreign = dataDir('not-a-demo');
      const before = readdirSync(foreign).sort();
      const refused = await runCli(['demo', '--keychain', 'memory', '--data-dir', foreign], env, 60_000);
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(
        refused.stderr,
        /^companion demo: .*not-a-demo is not empty and is not a folder an earlier demo made; .* \(see companion demo --help\)\n$/,
      );
      assert.deepEqual(readdirSync(foreign).sort(), before, 'nothing was written there');
    },
  );
});
