// Remembered settings (issue 18 item 2), through the real CLI as child processes: `companion config
// get|set|unset|list`, bad values refused with exit 2 and nothing written, the precedence flag >
// environment > config file, an unsafe or damaged config file refused with ERR_CONFIG_FILE, `login`
// saving hub, CA and manifest key only after a successful sign-in (the in-memory keychain; the hub's pages
// walked with plain HTTPS requests), and `companion hub --data-dir` keeping its URL across restarts, with
// its `export` line and ERR_HUB_PORT_BUSY when a remembered port is taken.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { rootCertificates } from 'node:tls';
import { runCli, startCli } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { startCompanionHub } from '../helpers/companion-hub.js';
import { callbackFor, deliver } from '../helpers/signin-harness.js';
import { startCli as startSigninCli } from '../helpers/signin-cli.js';

/** A private temp folder removed after the test, and a minimal environment (no COMPANION_* of the runner). */
function sandbox(t: { after(fn: () => void): void }): { dir: string; dataDir: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), 'companion-cli-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const home = join(dir, 'home');
  mkdirSync(home, { mode: 0o700 });
  return { dir, dataDir: join(dir, 'data'), env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home } };
}

/** The JSON lines of stdout. */
function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const KEY = `ed25519:${Buffer.alloc(32, 7).toString('base64url')}`;
/** A real certificate in PEM (any parses; the file is only checked, never trusted here). */
const CA_PEM = `${rootCertificates[0]!}\n`;

test('companion config set, get, list and unset keep the settings in <data-dir>/config.json (0600), with --json output', async (t) => {
  const { dir, dataDir, env } = sandbox(t);
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, CA_PEM);
  const common = ['--data-dir', dataDir];
  const file = join(dataDir, 'config.json');

  const empty = await runCli(['config', 'list', '--json', ...common], env);
  assert.equal(empty.status, 0, empty.stderr);
  assert.deepEqual(jsonLines(empty.stdout), [
    { file, settings: { hub: null, ca: null, 'manifest-key': null, threads: null } },
  ]);
  assert.equal(existsSync(file), false, 'list writes nothing');

  const setHub = await runCli(['config', 'set', 'hub', 'https://hub.example/', '--json', ...common], env);
  assert.equal(setHub.status, 0, setHub.stderr);
  assert.deepEqual(jsonLines(setHub.stdout), [{ event: 'set', key: 'hub', value: 'https://hub.example', file }]);
  // A relative CA path (runCli's cwd is the repo root) is saved absolute, as the flag is resolved.
  const setCa = await runCli(['config', 'set', 'ca', relative(repoRoot, caFile), ...common], env);
  assert.equal(setCa.status, 0, setCa.stderr);
  assert.equal((await runCli(['config', 'set', 'manifest-key', KEY, ...common], env)).status, 0);
  assert.equal((await runCli(['config', 'set', 'threads', '3', ...common], env)).status, 0);

  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(statSync(dataDir).mode & 0o777, 0o700);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), {
    hub: 'https://hub.example',
    ca: caFile,
    'manifest-key': KEY,
    threads: '3',
  });

  const get = await runCli(['config', 'get', 'hub', ...common], env);
  assert.equal(get.status, 0, get.stderr);
  assert.equal(get.stdout, 'https://hub.example\n');
  const getJson = await runCli(['config', 'get', 'manifest-key', '--json', ...common], env);
  assert.deepEqual(jsonLines(getJson.stdout), [{ key: 'manifest-key', value: KEY, source: 'file' }]);

  const list = await runCli(['config', 'list', ...common], env);
  assert.equal(list.status, 0, list.stderr);
  assert.match(list.stdout, /^Config file: .*config\.json$/m);
  assert.match(list.stdout, /^ {2}hub {11}https:\/\/hub\.example {2}\(config file\)$/m);
  assert.match(list.stdout, /^ {2}threads {7}3 {2}\(config file\)$/m);

  const unset = await runCli(['config', 'unset', 'threads', '--json', ...common], env);
  assert.deepEqual(jsonLines(unset.stdout), [{ event: 'unset', key: 'threads', file, removed: true }]);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), {
    hub: 'https://hub.example',
    ca: caFile,
    'manifest-key': KEY,
  });
  const gone = await runCli(['config', 'get', 'threads', '--json', ...common], env);
  assert.deepEqual(jsonLines(gone.stdout), [{ key: 'threads', value: null, source: null }]);
});

test('companion config set refuses a bad value as its flag would (exit 2, one line) and writes nothing', async (t) => {
  const { dir, dataDir, env } = sandbox(t);
  const notPem = join(dir, 'not.pem');
  writeFileSync(notPem, 'hello\n');
  const common = ['--data-dir', dataDir];
  const file = join(dataDir, 'config.json');
  const cases: string[][] = [
    ['hub', 'http://hub.example'],
    ['hub', 'not a url'],
    ['ca', join(dir, 'missing.pem')],
    ['ca', notPem],
    ['manifest-key', 'rsa:AAAA'],
    ['manifest-key', 'ed25519:AAAA'],
    ['threads', '0'],
    ['threads', '1.5'],
    ['color', 'blue'],
  ];
  for (const [key, value] of cases) {
    const result = await runCli(['config', 'set', key!, value!, '--json', ...common], env);
    assert.equal(result.status, 2, `${key} ${value}: ${result.stderr}`);
    assert.deepEqual(
      jsonLines(result.stdout).map((v) => (v.error as { code?: string }).code),
      ['ERR_USAGE'],
      `${key} ${value}`,
    );
    assert.match(result.stderr, /^companion config: [^\n]+ \(see companion config --help\)\n$/);
    assert.equal(existsSync(file), false, `${key} ${value} wrote nothing`);
  }
  // A good value first, then a bad one: the file keeps the good one, unchanged.
  assert.equal((await runCli(['config', 'set', 'hub', 'https://hub.example', ...common], env)).status, 0);
  const before = readFileSync(file, 'utf8');
  assert.equal((await runCli(['config', 'set', 'hub', 'http://evil.example', ...common], env)).status, 2);
  assert.equal(readFileSync(file, 'utf8'), before);
  for (const args of [
    ['config'],
    ['config', 'frob'],
    ['config', 'get'],
    ['config', 'set', 'hub'],
    ['config', 'get', 'hub', 'extra'],
  ]) {
    const result = await runCli([...args, ...common], env);
    assert.equal(result.status, 2, args.join(' '));
  }
});

test("settings resolve flag > environment > config file, and a command uses the file's hub without flags or environment", async (t) => {
  const { dataDir, env } = sandbox(t);
  const common = ['--data-dir', dataDir];
  assert.equal((await runCli(['config', 'set', 'hub', 'https://file.example', ...common], env)).status, 0);
  const source = async (extraArgs: string[], extraEnv: NodeJS.ProcessEnv): Promise<unknown> => {
    const result = await runCli(['config', 'get', 'hub', '--json', ...common, ...extraArgs], { ...env, ...extraEnv });
    assert.equal(result.status, 0, result.stderr);
    return jsonLines(result.stdout)[0];
  };
  assert.deepEqual(await source([], {}), { key: 'hub', value: 'https://file.example', source: 'file' });
  assert.deepEqual(await source([], { COMPANION_HUB: 'https://env.example' }), {
    key: 'hub',
    value: 'https://env.example',
    source: 'env',
  });
  assert.deepEqual(await source(['--hub', 'https://flag.example'], { COMPANION_HUB: 'https://env.example' }), {
    key: 'hub',
    value: 'https://flag.example',
    source: 'flag',
  });
  // The data dir comes from COMPANION_HOME as well as --data-dir.
  const viaHome = await runCli(['config', 'get', 'hub'], { ...env, COMPANION_HOME: dataDir });
  assert.equal(viaHome.stdout, 'https://file.example\n');

  // A real command: without a hub, logout is a usage error (exit 2, "no hub configured"); with the file's
  // hub it goes on to the hub (unreachable here) and fails there instead.
  const other = join(dataDir, '..', 'other');
  const noHub = await runCli(['logout', '--keychain', 'memory', '--json', '--data-dir', other], env);
  assert.equal(noHub.status, 2, noHub.stderr);
  assert.match(noHub.stderr, /no hub configured/);
  assert.equal((await runCli(['config', 'set', 'hub', 'https://127.0.0.1:1', '--data-dir', other], env)).status, 0);
  const withFile = await runCli(['logout', '--keychain', 'memory', '--json', '--data-dir', other], env);
  assert.equal(withFile.status, 0, withFile.stderr);
  assert.doesNotMatch(withFile.stderr, /no hub configured/);
  assert.equal(jsonLines(withFile.stdout)[0]?.event, 'signed-out');
  // And the environment's (bad) hub beats the file's good one: the http URL is refused as a usage error.
  const envWins = await runCli(['logout', '--keychain', 'memory', '--data-dir', other], {
    ...env,
    COMPANION_HUB: 'http://plain.example',
  });
  assert.equal(envWins.status, 2);
  assert.match(envWins.stderr, /must be https/);
});

test('an unsafe or damaged config file is refused with ERR_CONFIG_FILE naming the file and the fix, never ignored', async (t) => {
  const { dir, dataDir, env } = sandbox(t);
  const common = ['--data-dir', dataDir];
  const file = join(dataDir, 'config.json');
  assert.equal((await runCli(['config', 'set', 'hub', 'https://hub.example', ...common], env)).status, 0);
  const refused = async (fix: RegExp, what: string): Promise<void> => {
    for (const args of [
      ['status', '--keychain', 'memory', '--json'],
      ['config', 'list', '--json'],
      ['config', 'set', 'threads', '2', '--json'],
    ]) {
      const result = await runCli([...args, ...common], env);
      assert.equal(result.status, 1, `${what}: ${args.join(' ')}: ${result.stderr}`);
      const lines = jsonLines(result.stdout);
      assert.equal(
        (lines.at(-1)?.error as { code?: string } | undefined)?.code,
        'ERR_CONFIG_FILE',
        `${what}: ${args.join(' ')}`,
      );
      assert.ok(result.stderr.includes(file), `${what}: the message names the file`);
      assert.match(result.stderr, fix, what);
    }
  };

  chmodSync(file, 0o644);
  await refused(/chmod 600/, 'mode 0644');
  assert.equal(statSync(file).mode & 0o777, 0o644, 'nothing rewrote the file');
  chmodSync(file, 0o600);

  writeFileSync(file, '{"hub": "https://hub.example",', { mode: 0o600 });
  await refused(/damaged \(not valid JSON\).*rm /, 'not JSON');
  writeFileSync(file, '{"hub": "http://plain.example"}', { mode: 0o600 });
  await refused(/damaged \(hub is not valid\)/, 'a bad value');
  writeFileSync(file, '{"token": "x"}', { mode: 0o600 });
  await refused(/damaged \(unknown key token\)/, 'an unknown key');

  rmSync(file);
  const elsewhere = join(dir, 'planted.json');
  writeFileSync(elsewhere, '{"hub": "https://attacker.example"}', { mode: 0o600 });
  symlinkSync(elsewhere, file);
  await refused(/is a symlink.*rm /, 'a symlink');
  assert.equal(
    readFileSync(elsewhere, 'utf8'),
    '{"hub": "https://attacker.example"}',
    'the symlink target was not written',
  );
});

test('login --hub --ca --manifest-key saves them after a successful sign-in; a denied login saves nothing', async (t) => {
  const ch = await startCompanionHub(t);
  const { dir, env } = sandbox(t);
  const caFile = join(dir, 'hub-ca.pem');
  writeFileSync(caFile, ch.hub.caPem);
  const login = (dataDir: string) =>
    startSigninCli(
      t,
      [
        'login',
        '--no-browser',
        '--json',
        '--keychain',
        'memory',
        '--hub',
        ch.hub.issuer,
        '--ca',
        caFile,
        '--manifest-key',
        ch.hub.manifestKey,
        '--data-dir',
        dataDir,
      ],
      { env: env as Record<string, string> },
    );

  const deniedDir = join(dir, 'denied');
  const denied = login(deniedDir);
  const deniedCallback = await callbackFor(ch, String((await denied.nextJson((v) => v.event === 'open')).url), 'deny');
  await deliver(deniedCallback);
  assert.equal(
    ((await denied.nextJson((v) => v.error !== undefined)).error as { code?: string }).code,
    'ERR_OAUTH_AUTHORIZATION_DENIED',
  );
  assert.equal(await denied.exited(), 1);
  assert.equal(existsSync(join(deniedDir, 'config.json')), false, 'a failed login saves nothing');

  const dataDir = join(dir, 'ok');
  const ok = login(dataDir);
  const callback = await callbackFor(ch, String((await ok.nextJson((v) => v.event === 'open')).url));
  assert.equal((await deliver(callback)).status, 200);
  const signedIn = await ok.nextJson((v) => v.event === 'signed-in');
  assert.equal(await ok.exited(), 0, ok.stderr());
  const file = join(dataDir, 'config.json');
  assert.equal(signedIn.config, file);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), {
    hub: ch.hub.issuer,
    ca: caFile,
    'manifest-key': ch.hub.manifestKey,
  });

  // A new terminal: no flags, no environment, the settings are there.
  const list = await runCli(['config', 'list', '--json', '--data-dir', dataDir], env);
  const settings = jsonLines(list.stdout)[0]?.settings as Record<string, { value: string; source: string } | null>;
  assert.deepEqual(settings.hub, { value: ch.hub.issuer, source: 'file' });
  assert.deepEqual(settings['manifest-key'], { value: ch.hub.manifestKey, source: 'file' });

  // A login with a malformed manifest key stops before the sign-in starts (exit 2) and saves nothing.
  const badDir = join(dir, 'bad');
  const bad = await runCli(
    [
      'login',
      '--no-browser',
      '--json',
      '--keychain',
      'memory',
      '--hub',
      ch.hub.issuer,
      '--ca',
      caFile,
      '--manifest-key',
      'ed25519:AAAA',
      '--data-dir',
      badDir,
    ],
    env,
  );
  assert.equal(bad.status, 2, bad.stderr);
  assert.deepEqual(
    jsonLines(bad.stdout).map((v) => Object.keys(v)[0]),
    ['error'],
    'no open event: no sign-in started',
  );
  assert.equal(existsSync(join(badDir, 'config.json')), false);
});

test('companion hub --data-dir keeps its URL across restarts, prints the export line with --env, and refuses a busy remembered port', async (t) => {
  const { dir, env } = sandbox(t);
  const hubDir = join(dir, 'hub');
  const first = startCli(['hub', '--json', '--data-dir', hubDir], env);
  t.after(async () => void (await first.stop()));
  const ready = await first.waitJson((v) => typeof v.hub === 'string', 30_000);
  assert.equal(await first.stop(), 0);

  // Restart with --env: one export line on stdout with the same URL, CA and key.
  const second = startCli(['hub', '--env', '--data-dir', hubDir], env);
  t.after(async () => void (await second.stop()));
  for (let i = 0; i < 400 && second.lines.length === 0 && second.child.exitCode === null; i += 1)
    await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(
    second.lines[0],
    `export COMPANION_HUB=${String(ready.hub)} COMPANION_CA=${String(ready.ca)} COMPANION_MANIFEST_KEY=${String(ready.manifestKey)}`,
  );
  assert.equal(second.lines.length, 1, 'only the export line on stdout');
  assert.equal(await second.stop(), 0);

  // The human output carries the same line.
  const third = startCli(['hub', '--data-dir', hubDir], env);
  t.after(async () => void (await third.stop()));
  for (
    let i = 0;
    i < 400 && third.child.exitCode === null && !third.lines.some((l) => l.startsWith('Stop with'));
    i += 1
  )
    await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(
    third.lines.includes(
      `  export COMPANION_HUB=${String(ready.hub)} COMPANION_CA=${String(ready.ca)} COMPANION_MANIFEST_KEY=${String(ready.manifestKey)}`,
    ),
    third.lines.join('\n'),
  );
  assert.equal(await third.stop(), 0);

  // Something else takes the remembered hub port: the hub says so and does not pick another.
  const squatter = createServer();
  await new Promise<void>((resolve, reject) => {
    squatter.once('error', reject);
    squatter.listen({ port: Number(new URL(String(ready.hub)).port), host: '127.0.0.1', exclusive: true }, () =>
      resolve(),
    );
  });
  t.after(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
  const busy = await runCli(['hub', '--json', '--data-dir', hubDir], env, 30_000);
  assert.equal(busy.status, 1, busy.stderr);
  assert.deepEqual(
    jsonLines(busy.stdout).map((v) => (v.error as { code?: string } | undefined)?.code),
    ['ERR_HUB_PORT_BUSY'],
  );
  assert.match(busy.stderr, /port \d+ that this hub remembered .* is in use.*--port 0 --model-host-port 0/);
  assert.ok(!existsSync(join(hubDir, 'hub.lock')), 'the failed start released its lock');
});
