// Errors name the real cause and the fix (issue 18, item 7) and `status` says why the companion is not
// available (item 8), driven through the real CLI as child processes: pull with the hub down vs a wrong
// CA, run's causes, login refused with a locked keychain before any URL, the loopback page's real
// outcomes (signed in, denied, store failure), logout with a locked keychain, status reasons and fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runCli, startCli as startLong } from '../helpers/cli.js';
import { startCompanionHub, type CompanionHub } from '../helpers/companion-hub.js';
import { gate } from '../helpers/gate.js';
import { loginItems, secretServiceAvailable, startSecretService } from '../helpers/secret-service.js';
import { startCli } from '../helpers/signin-cli.js';
import { callbackFor, deliver, type Delivered } from '../helpers/signin-harness.js';

const MEMORY_NOTE = 'companion: using the in-memory keychain';
const LOCAL_TIME = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(local\)$/;
const keyring = gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus');

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'companion-errors-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** No hub, no keychain bus, state under `dir`. */
function bareEnv(dir: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    COMPANION_HOME: join(dir, 'data'),
    DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(dir, 'no-such-bus')}`,
    XDG_RUNTIME_DIR: join(dir, 'no-such-runtime-dir'),
  };
}

/** The human stderr lines, without the in-memory keychain's announcement (by design). */
function errLines(stderr: string): string[] {
  return stderr.split('\n').filter((line) => line.length > 0 && !line.startsWith(MEMORY_NOTE));
}

/** The one stderr line of a failed command (fails when there is not exactly one). */
function oneLine(result: { stderr: string }, label: string): string {
  const lines = errLines(result.stderr);
  assert.equal(lines.length, 1, `${label}: one line on stderr, got ${JSON.stringify(lines)}`);
  return lines[0]!;
}

function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** An installed model as `pull` leaves it: models/<id>.gguf and models/installed.json with its identity. */
function installModel(dataDir: string, id = 'tiny'): string {
  const models = join(dataDir, 'models');
  mkdirSync(models, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
  const file = join(models, `${id}.gguf`);
  const bytes = Buffer.from('GGUF not really a model, but the right size');
  writeFileSync(file, bytes, { mode: 0o600 });
  const info = statSync(file, { bigint: true });
  const digest = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(
    join(models, 'installed.json'),
    JSON.stringify({
      id,
      name: 'Tiny',
      file: `${id}.gguf`,
      size: bytes.length,
      digestCheck: createHash('sha256').update(digest).digest('hex'),
      inode: String(info.ino),
      dev: String(info.dev),
      mtimeNs: String(info.mtimeNs),
      ctimeNs: String(info.ctimeNs),
      verifiedAt: Date.now(),
      manifestVersion: 1,
    }),
    { mode: 0o600 },
  );
  return file;
}

/** The hub's CA in a file, for --ca. */
function caFile(ch: CompanionHub, dir: string): string {
  const path = join(dir, 'hub-ca.pem');
  writeFileSync(path, ch.hub.caPem);
  return path;
}

/** The loopback page keeps its security headers and shows neither the code nor the state. */
function assertSafePage(page: Delivered, callback: URL, label: string): void {
  assert.equal(page.headers['cache-control'], 'no-store', label);
  assert.equal(page.headers['referrer-policy'], 'no-referrer', label);
  assert.match(String(page.headers['content-security-policy']), /default-src 'none'/, label);
  assert.equal(page.headers.location, undefined, label);
  for (const name of ['code', 'state']) {
    const value = callback.searchParams.get(name);
    if (value !== null) assert.ok(!page.body.includes(value), `${label}: the page does not show the ${name}`);
  }
}

function title(body: string): string {
  return /<title>([^<]*)<\/title>/.exec(body)?.[1] ?? '';
}

test('companion run names the real cause when no lane may take the call: no hub, not signed in, up not running, model changed', async (t) => {
  const dir = tempDir(t);
  const env = bareEnv(dir);
  const hub = ['--hub', 'https://127.0.0.1:9', '--keychain', 'memory'];

  const noHub = await runCli(['run', 'hello', '--tier', 'local-only'], env, 30_000);
  assert.equal(noHub.status, 2, noHub.stderr);
  assert.match(
    oneLine(noHub, 'no hub'),
    /^companion run: no hub configured, so there is no local companion to use: pass --hub URL or set COMPANION_HUB/,
  );

  const fresh = await runCli(['run', 'hello', ...hub], env, 30_000);
  assert.equal(fresh.status, 1, fresh.stderr);
  assert.equal(
    oneLine(fresh, 'not signed in'),
    'companion run: not signed in and no model installed: run companion login, companion pull, then companion up [ERR_NOT_SIGNED_IN]',
  );

  const file = installModel(join(dir, 'data'));
  const notUp = await runCli(['run', 'hello', '--json', ...hub], env, 30_000);
  assert.equal(notUp.status, 1, notUp.stderr);
  assert.equal(
    oneLine(notUp, 'up not running'),
    'companion run: companion up is not running: start it with companion up [ERR_UPSTREAM_UNAVAILABLE]',
  );
  assert.deepEqual(jsonLines(notUp.stdout), [
    { error: { code: 'ERR_UPSTREAM_UNAVAILABLE', message: 'companion up is not running: start it with companion up' } },
  ]);

  writeFileSync(file, 'a different file of another size');
  const changed = await runCli(['run', 'hello', '--tier', 'local-only', ...hub], env, 30_000);
  assert.equal(changed.status, 1, changed.stderr);
  assert.match(
    oneLine(changed, 'model changed'),
    /^companion run: the installed model changed since it was verified: run companion pull.* \[ERR_MODEL_CHANGED\]$/,
  );
  for (const result of [noHub, fresh, notUp, changed])
    assert.doesNotMatch(result.stderr, /ERR_LANE_/, 'never a bare lane code');
});

test('companion status shows the hub, the data dir and why the companion is not available (human and --json)', async (t) => {
  const dir = tempDir(t);
  const env = bareEnv(dir);
  const dataDir = join(dir, 'data');

  const noHub = await runCli(['status', '--json'], env, 30_000);
  assert.equal(noHub.status, 0, noHub.stderr);
  const [bare] = jsonLines(noHub.stdout);
  assert.equal(bare?.hub, null);
  assert.equal(bare?.dataDir, dataDir);
  assert.equal(bare?.upSince, null);
  assert.deepEqual(bare?.unavailable, {
    reason: 'no-hub',
    code: 'ERR_USAGE',
    message: 'no hub configured, so the local companion cannot be checked: pass --hub URL or set COMPANION_HUB',
  });

  const hub = ['--hub', 'https://127.0.0.1:9', '--keychain', 'memory'];
  const human = await runCli(['status', ...hub], env, 30_000);
  assert.equal(human.status, 0, human.stderr);
  const lines = human.stdout.split('\n');
  assert.match(lines[0] ?? '', /^Signed in: {2}no$/);
  assert.ok(lines.includes('Hub:        https://127.0.0.1:9'), human.stdout);
  assert.ok(lines.includes(`Data dir:   ${dataDir}`), human.stdout);
  assert.ok(
    lines.includes(
      'Available:  no (not signed in and no model installed: run companion login, companion pull, then companion up)',
    ),
    human.stdout,
  );
  assert.ok(!lines.some((line) => line.startsWith('Up since:')), 'no up, no start time');

  const file = installModel(dataDir);
  const installed = await runCli(['status', '--json', ...hub], env, 30_000);
  assert.equal(installed.status, 0, installed.stderr);
  const [report] = jsonLines(installed.stdout);
  assert.deepEqual(report?.model, { id: 'tiny', verified: true });
  assert.equal(report?.modelCheck, 'verified');
  assert.equal((report?.unavailable as { reason?: unknown }).reason, 'up-not-running');
  assert.equal(report?.hub, 'https://127.0.0.1:9');

  // Touched, same size: status cannot tell without hashing, and does not hash (nor rewrite installed.json).
  const before = statSync(join(dataDir, 'models', 'installed.json')).mtimeMs;
  const now = new Date();
  const { utimesSync } = await import('node:fs');
  utimesSync(file, now, new Date(now.getTime() + 5_000));
  const touched = await runCli(['status', '--json', ...hub], env, 30_000);
  assert.equal(touched.status, 0, touched.stderr);
  assert.deepEqual(jsonLines(touched.stdout)[0]?.model, { id: 'tiny', verified: false });
  assert.equal(jsonLines(touched.stdout)[0]?.modelCheck, 'unconfirmed');
  assert.equal(statSync(join(dataDir, 'models', 'installed.json')).mtimeMs, before, 'installed.json was not rewritten');

  writeFileSync(file, 'another size');
  const changed = await runCli(['status', ...hub], env, 30_000);
  assert.equal(changed.status, 1, 'a changed model is a fault');
  assert.ok(
    changed.stdout.includes(
      'Available:  no (the installed model changed since it was verified: run companion pull, then restart companion up)',
    ),
    changed.stdout,
  );
});

test('companion login: after Deny the page says you denied access and nothing was stored; the line says so too', async (t) => {
  const dir = tempDir(t);
  const ch = await startCompanionHub(t);
  const common = [
    '--hub',
    ch.hub.issuer,
    '--ca',
    caFile(ch, dir),
    '--data-dir',
    join(dir, 'data'),
    '--keychain',
    'memory',
  ];
  const login = startCli(t, ['login', '--no-browser', '--json', ...common], { env: bareEnv(dir) });
  const url = String((await login.nextJson((v) => v.event === 'open')).url);
  const callback = await callbackFor(ch, url, 'deny');
  const page = await deliver(callback);
  assert.equal(page.status, 400);
  assert.equal(title(page.body), 'Sign-in cancelled');
  assert.match(page.body, /You denied access, so nothing was stored/);
  assert.doesNotMatch(page.body, /did not authorize/);
  assertSafePage(page, callback, 'deny');
  const error = (await login.nextJson((v) => v.error !== undefined)).error as { code?: string; message?: string };
  assert.equal(error.code, 'ERR_OAUTH_AUTHORIZATION_DENIED');
  assert.equal(
    error.message,
    'you denied access at the hub, so nothing was stored; run companion login again to sign in',
  );
  assert.equal(await login.exited(), 1);
  assert.deepEqual(errLines(login.stderr()), [`companion login: ${error.message} [ERR_OAUTH_AUTHORIZATION_DENIED]`]);
});

test(
  'with the real Secret Service: login is refused before any URL while locked; the page says "Signed in" only once stored and names a store failure; logout and run while locked say what was not done',
  keyring,
  async (t) => {
    const dir = tempDir(t);
    const ch = await startCompanionHub(t);
    const secretService = await startSecretService();
    t.after(() => secretService.stop());
    const env = { ...secretService.env };
    const dataDir = join(dir, 'data');
    const common = [
      '--hub',
      ch.hub.issuer,
      '--ca',
      caFile(ch, dir),
      '--data-dir',
      dataDir,
      '--manifest-key',
      ch.hub.manifestKey,
    ];

    // Locked: refused before the listener, the browser or a URL (nothing on stdout, no "open" event).
    await secretService.lock();
    for (const json of [false, true]) {
      const refused = await runCli(['login', '--no-browser', ...(json ? ['--json'] : []), ...common], env, 30_000);
      assert.equal(refused.status, 1, refused.stderr);
      assert.match(
        oneLine(refused, 'locked login'),
        /^companion login: not signed in \(nothing was opened\): secret-service: .*locked.*unlock it.* \[ERR_KEYCHAIN_LOCKED\]$/,
      );
      assert.doesNotMatch(refused.stdout + refused.stderr, /https:\/\/|"open"/, 'no URL was printed');
      if (json)
        assert.deepEqual(
          jsonLines(refused.stdout).map((line) => Object.keys(line)),
          [['error']],
        );
      else assert.equal(refused.stdout, '');
    }
    await secretService.unlock();

    // Unlocked: the page says "Signed in" once the tokens are stored.
    const login = startCli(t, ['login', '--no-browser', '--json', ...common], { env });
    const url = String((await login.nextJson((v) => v.event === 'open')).url);
    const callback = await callbackFor(ch, url);
    const page = await deliver(callback);
    assert.equal(page.status, 200);
    assert.equal(title(page.body), 'Signed in');
    assert.match(page.body, /tokens are in the keychain/);
    assertSafePage(page, callback, 'signed in');
    await login.nextJson((v) => v.event === 'signed-in');
    assert.equal(await login.exited(), 0);
    const items = (await loginItems(env)).length;
    assert.ok(items >= 2, 'the tokens are in the Secret Service');

    // status: signed in, local times, the hub and the data dir; the reason is "no model".
    const status = await runCli(['status', '--json', ...common], env, 30_000);
    assert.equal(status.status, 0, status.stderr);
    const [report] = jsonLines(status.stdout);
    assert.equal(report?.signedIn, true);
    assert.match(String(report?.expiresAtLocal), LOCAL_TIME);
    assert.equal(report?.hub, ch.hub.issuer);
    assert.equal(report?.dataDir, dataDir);
    assert.equal((report?.unavailable as { reason?: unknown }).reason, 'no-model');
    const statusHuman = await runCli(['status', ...common], env, 30_000);
    assert.match(
      statusHuman.stdout,
      /^Signed in: {2}yes as .+ \(access until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(local\)\)$/m,
    );
    assert.match(
      statusHuman.stdout,
      /^Available: {2}no \(no model is installed: run companion pull, then companion up\)$/m,
    );

    await secretService.lock();
    // status while locked: the reason and a fault.
    const lockedStatus = await runCli(['status', '--json', ...common], env, 30_000);
    assert.equal(lockedStatus.status, 1);
    assert.equal((jsonLines(lockedStatus.stdout)[0]?.unavailable as { reason?: unknown }).reason, 'keychain-locked');
    // run while locked: the keychain's code and its fix, not a lane code.
    const run = await runCli(['run', 'hello', ...common], env, 30_000);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(
      oneLine(run, 'locked run'),
      'companion run: the keychain is locked, so the local companion cannot be reached: unlock it and try again [ERR_KEYCHAIN_LOCKED]',
    );
    // logout while locked: no "Signed out" line; one line saying nothing was done and what to do.
    for (const json of [false, true]) {
      const logout = await runCli(['logout', ...(json ? ['--json'] : []), ...common], env, 30_000);
      assert.equal(logout.status, 1, logout.stderr);
      assert.doesNotMatch(logout.stdout, /Signed out|signed-out/);
      assert.match(
        oneLine(logout, 'locked logout'),
        /^companion logout: not signed out: nothing was deleted and the session was not revoked: .*unlock it.* \[ERR_KEYCHAIN_LOCKED\]$/,
      );
    }
    await secretService.unlock();
    assert.equal((await loginItems(env)).length, items, 'logout deleted nothing while locked');

    // A keychain locked between the URL and the callback: the page names the store failure, the line too.
    const second = startCli(t, ['login', '--no-browser', '--json', ...common], { env });
    const secondUrl = String((await second.nextJson((v) => v.event === 'open')).url);
    await secretService.lock();
    const secondCallback = await callbackFor(ch, secondUrl);
    const failed = await deliver(secondCallback);
    assert.equal(failed.status, 500);
    assert.equal(title(failed.body), 'Sign-in not completed');
    assert.match(failed.body, /could not store the tokens in the keychain, so nothing was kept/);
    assert.match(failed.body, /<code>ERR_KEYCHAIN_[A-Z_]+<\/code>/);
    assertSafePage(failed, secondCallback, 'store failure');
    const error = (await second.nextJson((v) => v.error !== undefined)).error as { code?: string; message?: string };
    assert.equal(error.code, 'ERR_CUSTODY_STORE_FAILED');
    assert.match(
      String(error.message),
      /^the hub signed you in, but the tokens could not be stored \(.*ERR_KEYCHAIN_[A-Z_]+\), so nothing (usable )?was kept; .*then run companion login again$/,
    );
    assert.equal(await second.exited(), 1);
    await secretService.unlock();

    // Unlocked again: logout signs out and says so.
    const logout = await runCli(['logout', ...common], env, 30_000);
    assert.equal(logout.status, 0, logout.stderr);
    assert.match(logout.stdout, /^Signed out/);
  },
);

test(
  'with the real Secret Service: companion pull tells a wrong CA from a hub that is down, each line naming the hub URL and the fix',
  keyring,
  async (t) => {
    const dir = tempDir(t);
    const ch = await startCompanionHub(t);
    const secretService = await startSecretService();
    t.after(() => secretService.stop());
    const env = { ...secretService.env };
    const dataDir = join(dir, 'data');
    const ca = caFile(ch, dir);
    const base = ['--hub', ch.hub.issuer, '--data-dir', dataDir, '--manifest-key', ch.hub.manifestKey];
    const login = startCli(t, ['login', '--no-browser', '--json', '--ca', ca, ...base], { env });
    const url = String((await login.nextJson((v) => v.event === 'open')).url);
    await deliver(await callbackFor(ch, url));
    await login.nextJson((v) => v.event === 'signed-in');
    assert.equal(await login.exited(), 0);
    const where = `https://${new URL(ch.hub.issuer).host}`;

    // Another hub's CA (login remembered the right one; a flag overrides it): the certificate is not trusted.
    const other = await startCompanionHub(t);
    const otherCa = join(dir, 'other-ca.pem');
    writeFileSync(otherCa, other.hub.caPem);
    const wrongCa = await runCli(['pull', '--ca', otherCa, ...base], env, 30_000);
    assert.equal(wrongCa.status, 1, wrongCa.stderr);
    const tlsLine = oneLine(wrongCa, 'wrong CA');
    assert.ok(
      tlsLine.startsWith(
        `companion pull: the hub's TLS certificate at ${where} could not be verified: it is not trusted (`,
      ),
      tlsLine,
    );
    assert.match(tlsLine, /a hub with a private CA needs --ca FILE \[ERR_HUB_UNREACHABLE\]$/);

    await ch.hub.close();
    const down = await runCli(['pull', '--ca', ca, ...base], env, 30_000);
    assert.equal(down.status, 1, down.stderr);
    const downLine = oneLine(down, 'hub down');
    assert.equal(
      downLine,
      `companion pull: the hub at ${where} could not be reached (connection refused); is the hub running (companion hub)? check --hub [ERR_HUB_UNREACHABLE]`,
    );
    assert.notEqual(tlsLine, downLine);
  },
);

test(
  'with the real Secret Service: status of a running companion shows "Up since" in local time, Available: yes and no reason; once up stops, the reason is "up not running"',
  keyring,
  async (t) => {
    const dir = tempDir(t);
    const secretService = await startSecretService();
    t.after(() => secretService.stop());
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...secretService.env };
    const dataDir = join(dir, 'data');
    mkdirSync(join(dataDir, 'run'), { recursive: true, mode: 0o700 });
    chmodSync(dataDir, 0o700);
    installTinyModel(dataDir);
    // No hub is contacted by up, status or run here: the hub URL only names the keychain service.
    const common = ['--hub', 'https://127.0.0.1:9', '--data-dir', dataDir];
    const up = startLong(['up', '--json', '--threads', '1', '--allow-unsandboxed', ...common], env);
    t.after(() => up.stop());
    await up.waitJson((v) => v.event === 'available', 90_000);

    const json = await runCli(['status', '--json', ...common], env, 30_000);
    assert.equal(json.status, 0, json.stderr);
    const [report] = jsonLines(json.stdout);
    assert.equal(report?.companionAvailable, true);
    assert.equal(report?.unavailable, null);
    assert.match(String(report?.upSince), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.match(String(report?.upSinceLocal), LOCAL_TIME);
    const human = await runCli(['status', ...common], env, 30_000);
    assert.match(human.stdout, /^Up since: {3}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(local\)$/m);
    assert.match(human.stdout, /^Available: {2}yes$/m);
    assert.match(human.stdout, new RegExp(`^Data dir: {3}${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));

    assert.equal(await up.stop(), 0);
    const stopped = await runCli(['status', '--json', ...common], env, 30_000);
    assert.equal(stopped.status, 0, stopped.stderr);
    const [after] = jsonLines(stopped.stdout);
    assert.equal(after?.upSince, null);
    assert.equal((after?.unavailable as { reason?: unknown }).reason, 'up-not-running');
    const run = await runCli(['run', 'hello', ...common], env, 30_000);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(
      oneLine(run, 'run after up stopped'),
      'companion run: companion up is not running: start it with companion up [ERR_UPSTREAM_UNAVAILABLE]',
    );
  },
);
