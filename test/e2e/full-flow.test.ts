// The whole flow through the CLI, as a user runs it (issue 8): `companion hub` in its own process, the
// real Secret Service (a private gnome-keyring), a real browser on the consent page, then
// login → pull → up → status available → run streams tokens → the runtime is killed → status shows
// unavailable → it restarts → available again → logout removes everything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gate } from '../helpers/gate.js';
import { chromiumPresent, launchChromium } from '../helpers/browser.js';
import { secretServiceAvailable, startSecretService, loginItems } from '../helpers/secret-service.js';
import { runCli, startCli } from '../helpers/cli.js';

/** The server certificate a TLS endpoint presents (verified against `ca`), as PEM. */
function peerCertificate(url: string, ca: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: hostname, port: Number(port), ca, servername: undefined }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.end();
      if (cert === undefined) reject(new Error('no peer certificate'));
      else resolve(cert.toString());
    });
    socket.once('error', reject);
  });
}

async function poll<T>(fn: () => Promise<T>, ok: (value: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await fn();
  while (!ok(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    value = await fn();
  }
  return value;
}

const options = {
  ...gate('chromium', chromiumPresent, 'apt-get install chromium'),
  ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
};

test(
  'the whole flow through the CLI with the real keychain and a real browser',
  { ...options, timeout: 240_000 },
  async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'companion-e2e-'));
    const secrets = await startSecretService();
    t.after(async () => {
      await secrets.stop();
      await rm(root, { recursive: true, force: true });
    });
    const env = { ...process.env, ...secrets.env };

    const hub = startCli(['hub', '--json', '--data-dir', join(root, 'hub')], process.env);
    t.after(() => hub.stop());
    const ready = await hub.waitJson((v) => typeof v.hub === 'string', 30_000);
    const common = [
      '--hub',
      String(ready.hub),
      '--ca',
      String(ready.ca),
      '--manifest-key',
      String(ready.manifestKey),
      '--data-dir',
      join(root, 'companion'),
    ];

    // doctor sees the private Secret Service.
    const doctor = await runCli(['doctor', '--json'], env);
    assert.equal(
      (JSON.parse(doctor.stdout) as { keychain: { state: string } }).keychain.state,
      'available',
      doctor.stderr,
    );

    // login: the CLI prints the URL, a real browser does what a user does.
    const login = startCli(['login', '--no-browser', '--json', ...common], env);
    t.after(() => login.stop());
    const open = await login.waitJson((v) => v.event === 'open', 30_000);
    const caPem = await readFile(String(ready.ca), 'utf8');
    const browser = await launchChromium({ trustCertificates: [await peerCertificate(String(ready.hub), caPem)] });
    t.after(() => browser.close());
    const page = await browser.context.newPage();
    await page.goto(String(open.url));
    await page.fill('#username', String(ready.user));
    await page.fill('#password', String(ready.password));
    await page.click('#sign-in');
    await page.waitForSelector('#allow');
    await page.click('#allow');
    await page.waitForURL(/^http:\/\/127\.0\.0\.1:\d+\/callback/);
    assert.match(await page.content(), /<title>Signed in<\/title>/);
    await login.waitJson((v) => v.event === 'signed-in', 30_000);
    assert.equal(await login.exit(), 0);
    assert.ok((await loginItems(secrets.env)).length >= 2, 'tokens are in the Secret Service');

    // pull
    const pull = await runCli(['pull', '--json', ...common], env, 60_000);
    assert.equal(pull.status, 0, pull.stderr);
    assert.match(pull.stdout.trim().split('\n').at(-1) ?? '', /"event":"verified"/);

    // up
    const up = startCli(['up', '--json', '--threads', '1', ...common], env);
    t.after(() => up.stop());
    const available = await up.waitJson((v) => v.event === 'available', 60_000);
    assert.match(String(available.endpoint), /^http:\/\/127\.0\.0\.1:\d+\/v1$/);

    const status = async (): Promise<Record<string, unknown>> =>
      JSON.parse((await runCli(['status', '--json', ...common], env)).stdout) as Record<string, unknown>;
    const s1 = await poll(status, (s) => s.companionAvailable === true && s.resources !== null, 10_000);
    assert.equal(s1.signedIn, true);
    assert.deepEqual(s1.model, { id: 'tiny-demo', verified: true });
    assert.equal((s1.runtime as { state: string }).state, 'ready');
    assert.ok((s1.resources as { rssBytes: number }).rssBytes > 10 * 1024 * 1024);
    assert.equal(s1.endpoint, available.endpoint);
    assert.ok(
      !JSON.stringify(s1).includes(
        String((JSON.parse((await runCli(['endpoint', '--json', ...common], env)).stdout) as { token: string }).token),
      ),
      'status never shows the token',
    );

    // run streams tokens through the lane selector to the companion
    const run = await runCli(['run', 'Say hello', '--tier', 'local-only', '--max-tokens', '8', ...common], env);
    assert.equal(run.status, 0, run.stderr);
    assert.ok(run.stdout.trim().length > 0);
    assert.match(run.stderr, /lane: companion/);

    // kill the runtime: unavailable, then restarted by the supervisor, then available again. The outage
    // lasts about the restart backoff (500 ms), shorter than a `status` run: it is observed from the event
    // lines `up --json` prints on every change, in order, from the moment of the kill.
    const pid = (s1.runtime as { pid: number }).pid;
    const mark = up.lines.length;
    process.kill(-pid, 'SIGKILL');
    const down = await up.waitJsonLine((v) => v.event === 'unavailable', 10_000, mark);
    const crashed = await up.waitJsonLine((v) => v.event === 'state' && v.state === 'backoff', 10_000, mark);
    assert.equal(crashed.value.code, 'ERR_RUNTIME_GONE');
    const back = await up.waitJsonLine((v) => v.event === 'available', 60_000, down.index + 1);
    assert.equal(back.value.endpoint, available.endpoint, 'the same endpoint serves again');
    const restarted = await up.waitJsonLine((v) => v.event === 'state' && v.state === 'ready', 1_000, down.index + 1);
    assert.ok(restarted.index < back.index, 'ready before available');
    const newPid = restarted.value.pid as number;
    assert.notEqual(newPid, pid, 'a new runtime process');
    // status agrees once the change is published (no race with the outage any more).
    const s3 = await poll(
      status,
      (s) => s.companionAvailable === true && (s.runtime as { pid: number } | null)?.pid === newPid,
      10_000,
    );
    assert.equal(s3.companionAvailable, true);
    assert.equal((s3.runtime as { pid: number }).pid, newPid);

    // stop up: discovery file removed
    assert.equal(await up.stop(), 0);
    await assert.rejects(stat(join(root, 'companion', 'run', 'endpoint.json')));

    // logout removes everything
    const logout = await runCli(['logout', '--json', ...common], env);
    assert.equal(logout.status, 0, logout.stderr);
    assert.equal((JSON.parse(logout.stdout) as { revoked: boolean }).revoked, true);
    assert.deepEqual(await loginItems(secrets.env), []);
    const s4 = await status();
    assert.equal(s4.signedIn, false);
  },
);
