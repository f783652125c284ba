// Models as a user handles them (issue 18 item 3), through the real CLI as child processes: `list`
// (installed, the manifest's, the hub down), `rm` (with partials, the served model refused, an unknown one
// listing the choices), `use`, `up --model`, `ps` with and without a running `up`, a second `pull` keeping
// the active model, the clean-up of a superseded download's leftovers, `pull nosuch` listing the ids.
// Installed models without a hub are written as `pullModel` writes them (like installTinyModel); the
// manifest's models come from the reference hub, signed in through the real Secret Service (a memory
// keychain is per process).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTlsAgent, fetchWith } from '../../src/common/tls.js';
import { completeSignInAsDevUser } from '../../src/hub/dev-browser.js';
import { DEMO_MODEL_ID, startHub, type RunningHub } from '../../src/hub/index.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { installTinyModel, TINY_MODEL_ID } from '../helpers/assurance-runtime.js';
import { runCli, startCli, type CliResult } from '../helpers/cli.js';
import { OTHER, SMALL } from '../helpers/download-hub.js';
import { gate } from '../helpers/gate.js';
import { secretServiceAvailable, startSecretService } from '../helpers/secret-service.js';

// Never contacted without a sign-in: it only names the keychain service `up` needs.
const NO_HUB = 'https://127.0.0.1:9';
const MEMORY = ['--keychain', 'memory'];
const keyring = gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus');

interface Row {
  readonly id: string;
  readonly size: number | null;
  readonly installed: boolean;
  readonly verified: boolean;
  readonly active: boolean;
  readonly version: number | null;
  readonly partialBytes: number | null;
}

function baseEnv(home: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home };
}

/** A fresh private data dir holding the tiny model as the active install. */
function dataDirWithTiny(t: { after(fn: () => void): void }): {
  root: string;
  dataDir: string;
  models: string;
  tinySha: string;
} {
  const root = mkdtempSync(join(tmpdir(), 'companion-models-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = join(root, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  chmodSync(dataDir, 0o700);
  const { sha256 } = installTinyModel(dataDir);
  return { root, dataDir, models: join(dataDir, 'models'), tinySha: sha256 };
}

/** A second installed (not active) model `id`, written as `pullModel` writes one: file and records/<id>.json. */
function installOther(models: string, id: string, seed: number): { sha256: string } {
  const bytes = generateTinyGguf({ seed });
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const path = join(models, `${id}.gguf`);
  writeFileSync(path, bytes, { mode: 0o600 });
  const info = statSync(path, { bigint: true });
  const record = {
    id,
    name: `tiny model ${seed}`,
    file: `${id}.gguf`,
    size: bytes.length,
    digestCheck: createHash('sha256').update(sha256).digest('hex'),
    inode: String(info.ino),
    dev: String(info.dev),
    mtimeNs: String(info.mtimeNs),
    ctimeNs: String(info.ctimeNs),
    verifiedAt: Date.now(),
    manifestVersion: 7,
  };
  mkdirSync(join(models, 'records'), { recursive: true, mode: 0o700 });
  writeFileSync(join(models, 'records', `${id}.json`), JSON.stringify(record), { mode: 0o600 });
  return { sha256 };
}

/** A partial download of `id` as an interrupted pull leaves it: `.partial/<id>.gguf.part` and its metadata. */
function plantPartial(models: string, id: string, bytes: number, total: number): void {
  const dir = join(models, '.partial');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, `${id}.gguf.part`), Buffer.alloc(bytes, 7), { mode: 0o600 });
  writeFileSync(
    join(dir, `${id}.gguf.part.json`),
    JSON.stringify({
      format: 'companion-partial-v1',
      url: `https://127.0.0.1:9/models/${id}.gguf`,
      size: total,
      digestCheck: '0'.repeat(64),
      etag: null,
    }),
    { mode: 0o600 },
  );
}

function jsonLines(result: CliResult): Record<string, unknown>[] {
  return result.stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function listRows(args: readonly string[], env: NodeJS.ProcessEnv): Promise<Row[]> {
  const result = await runCli(['list', '--json', ...args], env, 60_000);
  assert.equal(result.status, 0, result.stderr);
  return jsonLines(result) as unknown as Row[];
}

function errorCode(result: CliResult): string | undefined {
  return (jsonLines(result).at(-1) as { error?: { code?: string } } | undefined)?.error?.code;
}

/** No model path and no digest in what a command printed (P-f). */
function assertNoSecrets(result: CliResult, models: string, digests: readonly string[]): void {
  for (const text of [result.stdout, result.stderr]) {
    assert.equal(text.includes(models), false, 'no model path is printed');
    for (const digest of digests) assert.equal(text.includes(digest), false, 'no model digest is printed');
  }
}

test('companion list shows installed models (active marked, verified, sizes, versions) and partial downloads without a hub', async (t) => {
  const { dataDir, models, tinySha, root } = dataDirWithTiny(t);
  const { sha256 } = installOther(models, 'tiny-b', 2);
  plantPartial(models, 'half', 1000, 4000);
  const env = baseEnv(root);
  const rows = await listRows(['--data-dir', dataDir], env);
  assert.deepEqual(
    rows.map((r) => [r.id, r.installed, r.verified, r.active]),
    [
      [TINY_MODEL_ID, true, true, true],
      ['tiny-b', true, true, false],
      ['half', false, false, false],
    ],
  );
  assert.equal(rows[1]!.version, 7);
  assert.equal(rows[1]!.size, statSync(join(models, 'tiny-b.gguf')).size);
  assert.deepEqual([rows[2]!.partialBytes, rows[2]!.size], [1000, 4000]);

  const human = await runCli(['list', '--data-dir', dataDir], env);
  assert.equal(human.status, 0, human.stderr);
  const lines = human.stdout.trim().split('\n');
  assert.match(lines[0]!, /MODEL\s+SIZE\s+VERSION\s+STATUS/);
  assert.match(
    lines.find((l) => l.includes(` ${TINY_MODEL_ID} `))!,
    /^\*\s+tiny\s.*verified/,
  );
  assert.match(
    lines.find((l) => l.includes('tiny-b'))!,
    /^\s+tiny-b\s.*v7\s+verified/,
  );
  assert.match(
    lines.find((l) => l.includes('half'))!,
    /partial 1000 B of 3\.9 KiB/,
  );
  assertNoSecrets(human, models, [tinySha, sha256]);

  // A changed file is listed, not verified.
  writeFileSync(join(models, 'tiny-b.gguf'), 'not the verified bytes');
  const changed = await listRows(['--data-dir', dataDir], env);
  assert.equal(changed.find((r) => r.id === 'tiny-b')?.verified, false);
});

test('companion use makes an installed model the active one; an unknown one fails and lists the installed ones', async (t) => {
  const { dataDir, models, root } = dataDirWithTiny(t);
  installOther(models, 'tiny-b', 2);
  const env = baseEnv(root);
  const used = await runCli(['use', 'tiny-b', '--data-dir', dataDir], env);
  assert.equal(used.status, 0, used.stderr);
  assert.match(used.stdout, /tiny-b is now the active model \(was tiny\)/);
  const rows = await listRows(['--data-dir', dataDir], env);
  assert.deepEqual(
    rows.map((r) => [r.id, r.active]),
    [
      [TINY_MODEL_ID, false],
      ['tiny-b', true],
    ],
    'the former active model stays listed',
  );

  const unknown = await runCli(['use', 'nosuch', '--json', '--data-dir', dataDir], env);
  assert.equal(unknown.status, 1);
  assert.equal(errorCode(unknown), 'ERR_MODEL_NOT_INSTALLED');
  assert.match(
    unknown.stderr,
    /^companion use: no installed model "nosuch"; installed: tiny, tiny-b \[ERR_MODEL_NOT_INSTALLED\]$/m,
  );
  assert.equal(
    (await listRows(['--data-dir', dataDir], env)).find((r) => r.active)?.id,
    'tiny-b',
    'a failed use changes nothing',
  );

  const missing = await runCli(['use', '--data-dir', dataDir], env);
  assert.equal(missing.status, 2, 'no MODEL is a usage error');
});

test('companion rm removes an installed model and its partial download; an unknown one lists the installed ones', async (t) => {
  const { dataDir, models, root } = dataDirWithTiny(t);
  installOther(models, 'tiny-b', 2);
  plantPartial(models, 'tiny-b', 500, 9000);
  writeFileSync(join(models, '.partial', '.tiny-b.gguf.part.json.0123456789abcdef.tmp'), '{}', { mode: 0o600 });
  plantPartial(models, 'kept', 100, 200);
  const env = baseEnv(root);

  const removed = await runCli(['rm', 'tiny-b', '--json', '--data-dir', dataDir], env);
  assert.equal(removed.status, 0, removed.stderr);
  assert.deepEqual(jsonLines(removed), [{ removed: 'tiny-b', wasActive: false, partialFiles: 3 }]);
  assert.equal(existsSync(join(models, 'tiny-b.gguf')), false, 'the file is gone');
  assert.deepEqual(
    readdirSync(join(models, '.partial')).sort(),
    ['kept.gguf.part', 'kept.gguf.part.json'],
    "only another model's partial is left",
  );
  assert.deepEqual(
    (await listRows(['--data-dir', dataDir], env)).map((r) => r.id),
    [TINY_MODEL_ID, 'kept'],
  );

  const unknown = await runCli(['rm', 'tiny-b', '--data-dir', dataDir], env);
  assert.equal(unknown.status, 1);
  assert.match(
    unknown.stderr,
    /^companion rm: no installed model "tiny-b"; installed: tiny \[ERR_MODEL_NOT_INSTALLED\]$/m,
  );

  // The partial of a model that is not installed can be removed too.
  const partialOnly = await runCli(['rm', 'kept', '--data-dir', dataDir], env);
  assert.equal(partialOnly.status, 0, partialOnly.stderr);
  assert.match(partialOnly.stdout, /Removed the partial download of kept\./);
  assert.deepEqual(readdirSync(join(models, '.partial')), []);

  // The active one: removed, and no model is active afterwards (never a silent switch).
  const active = await runCli(['rm', TINY_MODEL_ID, '--data-dir', dataDir], env);
  assert.equal(active.status, 0, active.stderr);
  assert.match(active.stdout, /No model is installed now/);
  assert.deepEqual(await listRows(['--data-dir', dataDir], env), []);
});

test(
  'companion up --model serves the given installed model; ps shows it; rm refuses the served model; ps says nothing running after',
  { timeout: 180_000 },
  async (t) => {
    const { dataDir, models, root, tinySha } = dataDirWithTiny(t);
    const { sha256 } = installOther(models, 'tiny-b', 2);
    const env = baseEnv(root);
    const common = ['--hub', NO_HUB, ...MEMORY, '--data-dir', dataDir];

    const idle = await runCli(['ps', '--data-dir', dataDir], env);
    assert.equal(idle.status, 0, idle.stderr);
    assert.match(idle.stdout, /^nothing running/);
    const idleJson = await runCli(['ps', '--json', '--data-dir', dataDir], env);
    assert.deepEqual([idleJson.status, idleJson.stdout], [0, ''], 'with --json: no line when nothing runs');

    const unknown = await runCli(
      ['up', '--json', '--threads', '1', '--allow-unsandboxed', '--model', 'nosuch', ...common],
      env,
    );
    assert.equal(unknown.status, 1);
    assert.equal(errorCode(unknown), 'ERR_MODEL_NOT_INSTALLED');
    assert.match(unknown.stderr, /installed: tiny, tiny-b/);

    const up = startCli(['up', '--json', '--threads', '1', '--allow-unsandboxed', '--model', 'tiny-b', ...common], env);
    t.after(async () => void (await up.stop()));
    const available = await up.waitJson((v) => v.event === 'available', 90_000);

    const ps = await runCli(['ps', '--json', '--data-dir', dataDir], env);
    assert.equal(ps.status, 0, ps.stderr);
    const [row, ...rest] = jsonLines(ps);
    assert.equal(rest.length, 0);
    assert.equal(row!.model, 'tiny-b', 'up serves the model --model named, not the active one');
    assert.equal(row!.state, 'ready');
    assert.equal(row!.endpoint, available.endpoint);
    assert.equal(row!.backend, 'cpu');
    assert.equal(row!.upPid, up.child.pid);
    assert.equal(typeof row!.pid, 'number');
    assert.notEqual(row!.pid, up.child.pid, "pid is the runtime's");
    assert.ok(typeof row!.rssBytes === 'number' && row!.rssBytes > 0, "the runtime's RSS");
    assert.ok(typeof row!.uptimeSeconds === 'number' && row!.uptimeSeconds >= 0);
    const human = await runCli(['ps', '--data-dir', dataDir], env);
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stdout, /MODEL\s+STATE\s+PID\s+UPTIME\s+RSS\s+BACKEND\s+ENDPOINT/);
    assert.match(
      human.stdout,
      new RegExp(
        `tiny-b\\s+ready\\s+${row!.pid}\\s+\\S+.*\\s+cpu\\s+${String(available.endpoint).replace(/[.]/g, '\\.')}`,
      ),
    );
    assertNoSecrets(human, models, [tinySha, sha256]);
    // status names the served model beside the active one.
    const status = await runCli(['status', '--json', ...common], env);
    const report = jsonLines(status)[0]!;
    assert.equal(report.servedModel, 'tiny-b', status.stderr);
    assert.equal((report.model as { id: string }).id, TINY_MODEL_ID, 'the active model is still the first one');
    const statusHuman = await runCli(['status', ...common], env);
    assert.match(statusHuman.stdout, /Runtime: +ready, serving tiny-b, pid \d+/);

    const refused = await runCli(['rm', 'tiny-b', '--json', '--data-dir', dataDir], env);
    assert.equal(refused.status, 1);
    assert.equal(errorCode(refused), 'ERR_MODEL_IN_USE');
    assert.match(refused.stderr, new RegExp(`companion up \\(pid ${up.child.pid}\\) serves tiny-b; stop it first`));
    assert.equal(existsSync(join(models, 'tiny-b.gguf')), true, 'the served model is untouched');

    // The active model is not the served one: `use` says the running up keeps its model.
    const used = await runCli(['use', 'tiny-b', '--data-dir', dataDir], env);
    assert.equal(used.status, 0, used.stderr);
    const back = await runCli(['use', TINY_MODEL_ID, '--data-dir', dataDir], env);
    assert.match(back.stdout, /keeps serving tiny-b until it is restarted/);

    assert.equal(await up.stop(), 0, up.stderr());
    const after = await runCli(['ps', '--data-dir', dataDir], env);
    assert.equal(after.status, 0, after.stderr);
    assert.match(after.stdout, /^nothing running/);
    const removed = await runCli(['rm', 'tiny-b', '--data-dir', dataDir], env);
    assert.equal(removed.status, 0, `once up stopped, rm works: ${removed.stderr}`);
  },
);

interface SignedIn {
  readonly hub: RunningHub;
  readonly env: NodeJS.ProcessEnv;
  readonly common: string[];
  readonly dataDir: string;
  readonly models: string;
}

/** A hub (demo, small and other models), a private Secret Service and `companion login` completed by the dev browser. */
async function signedIn(t: { after(fn: () => Promise<void>): void }): Promise<SignedIn> {
  const secrets = await startSecretService();
  t.after(() => secrets.stop());
  const hub = await startHub({ extraModels: [SMALL, OTHER] });
  const agent = createTlsAgent({ extraCas: [hub.caPem] });
  const dir = mkdtempSync(join(tmpdir(), 'companion-models-hub-'));
  t.after(async () => {
    await agent.close();
    await hub.close();
    rmSync(dir, { recursive: true, force: true });
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
  return { hub, env, common, dataDir, models: join(dataDir, 'models') };
}

test(
  'companion list with a signed-in hub, a second pull keeping the active model, pull nosuch listing the ids, the hub down',
  { ...keyring, timeout: 240_000 },
  async (t) => {
    const { hub, env, common, models } = await signedIn(t);
    const digests = hub.models.map((m) => m.sha256);

    const before = await listRows(common, env);
    assert.deepEqual(
      before.map((r) => [r.id, r.installed, r.active]),
      [
        [DEMO_MODEL_ID, false, false],
        [SMALL.id, false, false],
        [OTHER.id, false, false],
      ],
    );
    assert.deepEqual(
      before.map((r) => r.size),
      hub.models.map((m) => m.size),
    );
    assert.ok(before.every((r) => r.version === hub.manifestVersion));

    const nosuch = await runCli(['pull', 'nosuch', '--json', ...common], env);
    assert.equal(nosuch.status, 1);
    assert.equal(errorCode(nosuch), 'ERR_MODEL_UNKNOWN');
    assert.match(
      nosuch.stderr,
      /^companion pull: the manifest has no model "nosuch"; it lists: tiny-demo, small, other \[ERR_MODEL_UNKNOWN\]$/m,
    );

    const first = await runCli(['pull', OTHER.id, ...common], env);
    assert.equal(first.status, 0, first.stderr);
    assert.doesNotMatch(first.stdout, /companion use/, 'the first model installed becomes active: nothing to switch');
    const second = await runCli(['pull', DEMO_MODEL_ID, ...common], env);
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stdout, /other stays the active model; run companion use tiny-demo to switch\./);
    const secondJson = await runCli(['pull', DEMO_MODEL_ID, '--json', ...common], env);
    assert.deepEqual(jsonLines(secondJson).at(-1), {
      event: 'verified',
      model: DEMO_MODEL_ID,
      bytes: hub.models[0]!.size,
      reused: true,
      active: false,
    });

    const after = await listRows(common, env);
    assert.deepEqual(
      after.map((r) => [r.id, r.installed, r.verified, r.active]),
      [
        [OTHER.id, true, true, true],
        [DEMO_MODEL_ID, true, true, false],
        [SMALL.id, false, false, false],
      ],
    );
    const human = await runCli(['list', ...common], env);
    assertNoSecrets(human, models, digests);

    // The hub cannot be reached: what is installed, and one line that says the manifest was not fetched.
    await hub.close();
    const down = await runCli(['list', '--json', ...common], env);
    assert.equal(down.status, 0, down.stderr);
    assert.deepEqual(
      jsonLines(down).map((r) => r.id),
      [OTHER.id, DEMO_MODEL_ID],
    );
    const notes = down.stderr.split('\n').filter((line) => line.length > 0);
    assert.equal(notes.length, 1, down.stderr);
    assert.match(
      notes[0]!,
      /^companion list: the hub's manifest could not be fetched \[ERR_[A-Z_]+\]; listing installed models only$/,
    );
  },
);

test(
  'companion pull collects what a superseded download of the same model left, and nothing of another model',
  { ...keyring, timeout: 240_000 },
  async (t) => {
    const { env, common, models } = await signedIn(t);
    const first = await runCli(['pull', OTHER.id, ...common], env);
    assert.equal(first.status, 0, first.stderr);
    // Leftovers of an older build of `other` (its partial, its metadata, temp files of killed writes) and a partial of `small`.
    plantPartial(models, OTHER.id, 4096, OTHER.size + 10);
    writeFileSync(join(models, '.partial', `.${OTHER.id}.gguf.part.json.0123456789abcdef.tmp`), '{}', { mode: 0o600 });
    writeFileSync(join(models, 'records', `.${OTHER.id}.json.fedcba9876543210.tmp`), '{}', { mode: 0o600 });
    plantPartial(models, SMALL.id, 2048, SMALL.size);
    const listed = await listRows(common, env);
    assert.equal(listed.find((r) => r.id === OTHER.id)?.partialBytes, 4096, 'the leftover partial is visible in list');

    const again = await runCli(['pull', OTHER.id, ...common], env);
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(
      readdirSync(join(models, '.partial')).sort(),
      [`${SMALL.id}.gguf.part`, `${SMALL.id}.gguf.part.json`],
      "only small's partial is left",
    );
    assert.deepEqual(readdirSync(join(models, 'records')).sort(), [`${OTHER.id}.json`]);
    assert.deepEqual(
      readdirSync(models).filter((name) => name.endsWith('.gguf')),
      [`${OTHER.id}.gguf`],
      'one file per model',
    );
    const rows = await listRows(common, env);
    assert.equal(rows.find((r) => r.id === OTHER.id)?.partialBytes, null);
    assert.equal(rows.find((r) => r.id === SMALL.id)?.partialBytes, 2048);
  },
);
