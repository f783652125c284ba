// The README's "step by step" section, run as written (issue 18, "done when"): its code block is read from
// README.md and each command runs in a fresh `bash -c` whose environment is what a new terminal on a
// desktop has — HOME, PATH with `companion` on it (as `npm link` puts it there), the session bus with the
// Secret Service, and BROWSER — and no COMPANION_* variable, so every step after `login` must find the hub,
// CA and key in the remembered config. The README's placeholders (PORT, `ed25519:...`) are filled from the
// hub's own output; the browser is real headless Chromium (BROWSER only hands it the URL). Long-running
// steps (`hub`, `up`) stay up while the later terminals run; `logout` stops the running `up`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromiumPresent, launchChromium, serverCertificate } from '../helpers/browser.js';
import { gate } from '../helpers/gate.js';
import { repoRoot } from '../helpers/paths.js';
import { bwrapPresent } from '../helpers/sandbox-run.js';
import { secretServiceAvailable, startSecretService } from '../helpers/secret-service.js';

const options = {
  ...gate('chromium', chromiumPresent, 'apt-get install chromium'),
  ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
  ...gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap'),
  timeout: 240_000,
};

interface Step {
  readonly terminal: number;
  readonly command: string;
}

/** The commands of the README's step-by-step block, each with the terminal it is typed in. */
export function readmeSteps(readme: string): Step[] {
  const section = readme.split('\n## The CLI against the reference hub, step by step\n')[1];
  assert.ok(section !== undefined, 'README has the step-by-step section');
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block !== undefined, 'the section has a sh code block');
  const steps: Step[] = [];
  let terminal = 0;
  for (const raw of block.split('\n')) {
    const heading = /^#\s*terminal (\d+)/.exec(raw.trim());
    if (heading) {
      terminal = Number(heading[1]);
      continue;
    }
    const command = raw.replace(/\s+#\s.*$/, '').trim();
    if (command === '' || command.startsWith('#')) continue;
    steps.push({ terminal, command });
  }
  return steps;
}

interface Running {
  readonly child: ChildProcess;
  out(): string;
  err(): string;
  /** Resolves once stdout+stderr match `pattern`; rejects when the process exits first or after `ms`. */
  waitFor(pattern: RegExp, ms: number): Promise<RegExpExecArray>;
  exited(ms: number): Promise<number | null>;
}

function shell(command: string, env: NodeJS.ProcessEnv, cwd: string): Running {
  const child = spawn('bash', ['-c', command], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  let err = '';
  const wakers = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...wakers]) w();
  };
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    out += c;
    wake();
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    err += c;
    wake();
  });
  child.once('exit', wake);
  return {
    child,
    out: () => out,
    err: () => err,
    waitFor: (pattern, ms) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => done(new Error(`timed out waiting for ${String(pattern)} from \`${command}\`:\n${out}\n${err}`)),
          ms,
        );
        const done = (error: Error | null, match?: RegExpExecArray): void => {
          clearTimeout(timer);
          wakers.delete(check);
          if (error) reject(error);
          else resolve(match!);
        };
        const check = (): void => {
          const match = pattern.exec(`${out}\n${err}`);
          if (match) done(null, match);
          else if (child.exitCode !== null || child.signalCode !== null)
            done(
              new Error(
                `\`${command}\` exited (${child.exitCode ?? child.signalCode}) before ${String(pattern)}:\n${out}\n${err}`,
              ),
            );
        };
        wakers.add(check);
        check();
      }),
    exited: (ms) =>
      new Promise((resolve, reject) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        const timer = setTimeout(
          () => reject(new Error(`\`${command}\` did not exit within ${ms} ms:\n${out}\n${err}`)),
          ms,
        );
        child.once('exit', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      }),
  };
}

function stopGroup(running: Running): Promise<void> {
  if (running.child.exitCode !== null || running.child.signalCode !== null) return Promise.resolve();
  try {
    process.kill(-running.child.pid!, 'SIGINT');
  } catch {
    return Promise.resolve();
  }
  return running.exited(20_000).then(
    () => undefined,
    () => {
      try {
        process.kill(-running.child.pid!, 'SIGKILL');
      } catch {
        // gone
      }
    },
  );
}

test('the README step-by-step section, run as written in a fresh shell per step, works', options, async (t) => {
  const steps = readmeSteps(readFileSync(join(repoRoot, 'README.md'), 'utf8'));
  const names = steps.map((s) => s.command.split(/\s+/)[1]);
  assert.deepEqual(
    names,
    ['hub', 'login', 'status', 'pull', 'up', 'status', 'run', 'logout'],
    'the README walks through these commands',
  );

  const root = mkdtempSync(join(tmpdir(), 'companion-readme-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const home = join(root, 'home');
  const bin = join(root, 'bin');
  mkdirSync(home, { mode: 0o700 });
  mkdirSync(bin);
  // What `npm link` puts on the PATH: a `companion` that runs this checkout's bin.
  writeFileSync(
    join(bin, 'companion'),
    `#!/bin/sh\nexec '${process.execPath}' '${join(repoRoot, 'bin', 'companion.js')}' "$@"\n`,
  );
  chmodSync(join(bin, 'companion'), 0o755);
  // The desktop's browser: hands the URL to the test, which opens it in headless Chromium.
  const urls = join(root, 'opened-urls');
  writeFileSync(join(bin, 'browser'), `#!/bin/sh\nprintf '%s\\n' "$1" >> '${urls}'\n`);
  chmodSync(join(bin, 'browser'), 0o755);

  const secrets = await startSecretService();
  t.after(() => secrets.stop());
  const env: NodeJS.ProcessEnv = {
    HOME: home,
    PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    DBUS_SESSION_BUS_ADDRESS: secrets.env.DBUS_SESSION_BUS_ADDRESS,
    XDG_RUNTIME_DIR: secrets.env.XDG_RUNTIME_DIR,
    BROWSER: join(bin, 'browser'),
  };
  const running: Running[] = [];
  t.after(async () => {
    for (const r of running.reverse()) await stopGroup(r);
  });

  let hubUrl = '';
  let manifestKey = '';
  let devLogin: { user: string; password: string } | null = null;
  let up: Running | null = null;
  const fill = (command: string): string =>
    command.replace('https://127.0.0.1:PORT', hubUrl).replace('ed25519:...', manifestKey);

  for (const step of steps) {
    const command = fill(step.command);
    const name = command.split(/\s+/)[1];
    const label = `terminal ${step.terminal}: ${command}`;
    if (name === 'hub') {
      const hub = shell(command, env, home);
      running.push(hub);
      const ready = await hub.waitFor(/Sign in once with: (companion login .*)\n/, 60_000);
      hubUrl = /hub \(issuer\)\s+(\S+)/.exec(hub.out())![1]!;
      manifestKey = /manifest key\s+(\S+)/.exec(hub.out())![1]!;
      const login = /dev login\s+(\S+) \/ (\S+)/.exec(hub.out())!;
      devLogin = { user: login[1]!, password: login[2]! };
      // The README's login line, filled in, is the one the hub tells the user to type.
      const readmeLogin = fill(steps.find((s) => s.command.startsWith('companion login'))!.command).replace('~', home);
      assert.equal(ready[1]!.trim(), readmeLogin, 'the README login line matches what the hub prints');
      continue;
    }
    if (name === 'login') {
      const login = shell(command, env, home);
      running.push(login);
      await login.waitFor(/./, 30_000);
      const deadline = Date.now() + 30_000;
      while (!existsSync(urls) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const url = readFileSync(urls, 'utf8').trim().split('\n').at(-1)!;
      const hubCa = readFileSync(join(home, '.companion-hub', 'ca.pem'), 'utf8');
      const chromium = await launchChromium({ trustCertificates: [await serverCertificate(hubUrl, hubCa)] });
      try {
        const page = await chromium.context.newPage();
        page.setDefaultTimeout(15_000);
        await page.goto(url);
        await page.fill('#username', devLogin!.user);
        await page.fill('#password', devLogin!.password);
        await page.click('#sign-in');
        await page.click('#allow');
        await page.waitForURL((u) => u.hostname === '127.0.0.1' && u.pathname === '/callback');
      } finally {
        await chromium.close();
      }
      assert.equal(await login.exited(30_000), 0, `${label}\n${login.out()}\n${login.err()}`);
      continue;
    }
    if (name === 'up') {
      up = shell(command, env, home);
      running.push(up);
      await up.waitFor(/Available at http:\/\/127\.0\.0\.1:\d+/, 90_000);
      continue;
    }
    const result = shell(command, env, home);
    const status = await result.exited(120_000);
    assert.equal(status, 0, `${label} exited ${status}:\n${result.out()}\n${result.err()}`);
    if (name === 'status' && up !== null)
      assert.match(result.out(), /Available:\s+yes/, `${label}: the companion is available`);
    if (name === 'status')
      assert.match(result.out(), /Signed in:\s+yes/, `${label}: signed in without flags or environment`);
    if (name === 'run') assert.ok(result.out().trim().length > 0, `${label} printed an answer`);
    if (name === 'logout') {
      assert.ok(up !== null);
      assert.equal(await up.exited(30_000), 0, 'logout stopped the running up');
    }
  }
});
