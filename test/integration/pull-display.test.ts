// `companion pull` as a user sees it (issue 18 item 5): the real CLI, signed in through the real Secret
// Service (a private gnome-keyring) against the reference hub. On an 80-column terminal (tmux) the
// header and the progress each stay on one line; Ctrl-C (SIGINT) stops with one line that says where,
// exit 130, the partial kept, and the same pull again resumes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createTlsAgent, fetchWith } from '../../src/common/tls.js';
import { completeSignInAsDevUser } from '../../src/hub/dev-browser.js';
import { startHub, type RunningHub } from '../../src/hub/index.js';
import { BIN, runCli, startCli } from '../helpers/cli.js';
import { MIB, SMALL } from '../helpers/download-hub.js';
import { gate } from '../helpers/gate.js';
import { secretServiceAvailable, startSecretService } from '../helpers/secret-service.js';
import { repoRoot } from '../helpers/paths.js';

const execFileP = promisify(execFile);
const tmuxPresent = (process.env.PATH ?? '/usr/bin:/bin')
  .split(':')
  .some((dir) => dir !== '' && existsSync(join(dir, 'tmux')));

interface SignedIn {
  readonly hub: RunningHub;
  readonly env: Record<string, string>;
  readonly common: string[];
  readonly dir: string;
  readonly dataDir: string;
}

/** A hub, a private Secret Service and `companion login` completed by the dev browser; torn down with t. */
async function signedIn(t: { after(fn: () => Promise<void>): void }): Promise<SignedIn> {
  const secrets = await startSecretService();
  t.after(() => secrets.stop());
  const hub = await startHub({ extraModels: [SMALL] });
  const agent = createTlsAgent({ extraCas: [hub.caPem] });
  const dir = await mkdtemp(join(tmpdir(), 'companion-pull-display-'));
  t.after(async () => {
    await agent.close();
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });
  const caFile = join(dir, 'ca.pem');
  await writeFile(caFile, hub.caPem);
  const dataDir = join(dir, 'data');
  const common = ['--hub', hub.hubUrl, '--ca', caFile, '--manifest-key', hub.manifestKey, '--data-dir', dataDir];
  const env = { ...secrets.env };
  const login = startCli(['login', '--no-browser', '--json', ...common], env);
  t.after(async () => void (await login.stop()));
  const open = await login.waitJson((v) => v.event === 'open', 30_000);
  await completeSignInAsDevUser({
    authorizationUrl: String(open.url),
    fetch: fetchWith(agent),
    user: hub.user,
    password: hub.password,
  });
  await login.waitJson((v) => v.event === 'signed-in', 30_000);
  assert.equal(await login.exit(), 0, login.stderr());
  return { hub, env, common, dir, dataDir };
}

/** The bytes of the one `.part` file in the data dir's partial folder (0 when there is none). */
function partialBytes(dataDir: string): number {
  const [name] = partials(dataDir);
  return name === undefined ? 0 : statSync(join(dataDir, 'models', '.partial', name)).size;
}

/** The `.part` files in the data dir's partial folder. */
function partials(dataDir: string): string[] {
  const folder = join(dataDir, 'models', '.partial');
  return existsSync(folder) ? readdirSync(folder).filter((name) => name.endsWith('.part')) : [];
}

test(
  'companion pull on an 80-column terminal keeps the header and the progress on one line each',
  {
    ...gate('tmux', tmuxPresent, 'apt-get install tmux'),
    ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
  },
  async (t) => {
    const { env, common, dir } = await signedIn(t);
    const socket = join(dir, 'tmux.sock');
    const script = join(dir, 'pull.sh');
    const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    await writeFile(
      script,
      `cd ${quote(repoRoot)}\n${[process.execPath, BIN, 'pull', SMALL.id, ...common].map(quote).join(' ')}\necho "EXIT=$?"\nsleep 60\n`,
    );
    const tmux = (...args: string[]): Promise<{ stdout: string }> =>
      execFileP('tmux', ['-S', socket, ...args], { env: { ...env, TERM: 'xterm-256color' }, timeout: 10_000 });
    await tmux('-f', '/dev/null', 'new-session', '-d', '-x', '80', '-y', '24', `sh ${quote(script)}`);
    t.after(async () => void (await tmux('kill-server').catch(() => undefined)));
    let screen = '';
    const deadline = Date.now() + 60_000;
    while (!/EXIT=\d+/.test(screen) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      screen = (await tmux('capture-pane', '-p', '-t', '0')).stdout;
    }
    const lines = screen
      .split('\n')
      .map((line) => line.trimEnd())
      .filter((line) => line.length > 0);
    assert.match(screen, /EXIT=0/, screen);
    for (const line of lines) assert.ok(line.length <= 80, `a line longer than 80 columns:\n${screen}`);
    // Header, the one progress line (redrawn in place), the result, the exit status: no scrolled or
    // wrapped progress (a wrapped line would show up as an extra line here).
    const index = lines.findIndex((line) => line.startsWith('Pulling '));
    assert.ok(index >= 0, screen);
    const ours = lines.slice(index);
    assert.equal(ours.length, 4, screen);
    assert.match(ours[1]!, /100%/, screen);
    assert.ok(ours[1]!.includes(`/${(SMALL.size / MIB).toFixed(1)} MiB`), screen);
    assert.equal(ours[2], `${SMALL.id}: verified and installed.`, screen);
    assert.equal(lines.filter((line) => line.includes('%')).length, 1, screen);
  },
);

for (const json of [false, true]) {
  test(
    `companion pull${json ? ' --json' : ''}: SIGINT stops with one line, exit 130, keeps the partial, and the same pull resumes`,
    gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
    async (t) => {
      const { hub, env, common, dataDir } = await signedIn(t);
      // A slow host: the first MiB, then nothing (a stall) until the pull is interrupted.
      hub.setMisbehaviour({ stallAfterBytes: MIB, onlyModel: SMALL.id });
      const pull = startCli(['pull', SMALL.id, ...(json ? ['--json'] : []), ...common], env);
      t.after(async () => void (await pull.stop()));
      // Interrupted once the first MiB is on disk (the host then stalls).
      const deadline = Date.now() + 30_000;
      while (partialBytes(dataDir) < MIB && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(partialBytes(dataDir), MIB, pull.stderr());
      pull.child.kill('SIGINT');
      assert.equal(await pull.exit(), 130, pull.stderr());
      const stderrLines = pull
        .stderr()
        .split('\n')
        .filter((line) => line.length > 0);
      assert.equal(stderrLines.length, 1, pull.stderr());
      assert.match(
        stderrLines[0]!,
        /^interrupted at \d+(\.\d)? (B|KiB|MiB) of 3\.0 MiB; run the same pull again to resume$/,
      );
      if (json) {
        // JSON lines only, the last one the one error object.
        for (const line of pull.lines) JSON.parse(line);
        assert.deepEqual(JSON.parse(pull.lines.at(-1)!), {
          error: { code: 'ERR_INTERRUPTED', message: stderrLines[0] },
        });
        assert.equal(pull.lines.filter((line) => line.includes('"error"')).length, 1);
      } else {
        assert.ok(
          pull.lines.every((line) => !line.startsWith('{')),
          pull.lines.join('\n'),
        );
      }
      assert.equal(partials(dataDir).length, 1, 'the partial is kept');
      // The same pull again, the host behaving: it resumes from the partial.
      hub.setMisbehaviour({});
      const again = await runCli(['pull', SMALL.id, ...(json ? ['--json'] : []), ...common], env, 60_000);
      assert.equal(again.status, 0, again.stderr);
      assert.match(again.stdout, json ? /"event":"resume"/ : /resuming at 1\.0 MiB/, again.stdout);
      assert.match(again.stdout, json ? /"event":"verified"/ : /verified and installed/, again.stdout);
      assert.deepEqual(partials(dataDir), []);
    },
  );
}
