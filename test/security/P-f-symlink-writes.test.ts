// P-f symlink-safe writes (issue 16 item 7): another local user (or anything that could write in one of
// our folders) plants symlinks where the companion writes — at every temp name it used to predict
// (`installed.json.tmp`, `<meta>.tmp`, `<path>.<pid>.tmp`, `<file>.tmp`) and at the target names — or
// swaps a private folder for a link or for a folder of its own. A real pull against the reference hub,
// the published-state writer, the manifest-version record and the runtime state file must never write
// through such a link: the victim stays byte for byte what it was, the target is a regular 0600 file, and
// a bad folder is refused with ERR_STATE_UNSAFE. Real files, real TLS, real inotify.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDir, writePrivateJson } from '../../src/common/private-file.js';
import { STATE_FILE, readRuntimeState, writeRuntimeState, type RuntimeState } from '../../src/runtime/stale.js';
import { writePublishedState, type PublishedState } from '../../src/runtime/manager/discovery.js';

/** The published-state writer `up` uses, fed arbitrary JSON. */
const writePublishedJson = (path: string, value: unknown): Promise<void> =>
  writePublishedState(path, value as PublishedState);
import { readInstalled } from '../../src/runtime/manager/install.js';
import { startCompanionHub } from '../helpers/companion-hub.js';
import { SMALL, hostGets, listTree, startDownloadHub } from '../helpers/download-hub.js';
import { tempDir } from '../helpers/runtime-env.js';

const NOBODY = 65534;
const root = process.getuid?.() === 0 ? {} : { skip: 'needs root to make a folder owned by another user' };

/** A victim file outside the companion's folders, and a check that it is exactly as planted. */
function plantVictims(
  dir: string,
  names: readonly string[],
): { paths: Record<string, string>; assertUntouched(): void } {
  const victims = join(dir, 'victims');
  mkdirSync(victims, { recursive: true });
  const paths: Record<string, string> = {};
  for (const name of names) {
    paths[name] = join(victims, `${name}.txt`);
    writeFileSync(paths[name], `victim ${name}: must never be written by the companion\n`, { mode: 0o644 });
    chmodSync(paths[name], 0o644);
  }
  return {
    paths,
    assertUntouched() {
      for (const name of names) {
        assert.equal(
          readFileSync(paths[name]!, 'utf8'),
          `victim ${name}: must never be written by the companion\n`,
          `victim ${name} was written through a link`,
        );
        assert.equal(lstatSync(paths[name]!).mode & 0o777, 0o644, `victim ${name} was chmodded`);
      }
    },
  };
}

function assertPrivateRegularFile(path: string): void {
  const stats = lstatSync(path);
  assert.ok(stats.isFile() && !stats.isSymbolicLink(), `${path} is a regular file`);
  assert.equal(stats.mode & 0o777, 0o600);
  assert.equal(stats.uid, process.getuid?.() ?? stats.uid);
}

test('P-f a real pull writes installed.json and the partial metadata through none of the symlinks planted at their old temp names and target names', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const victims = plantVictims(dh.dir, ['installedTmp', 'installed', 'metaTmp', 'meta', 'finalModel']);
  const partialDir = join(dh.modelsDir, '.partial');
  mkdirSync(partialDir, { recursive: true, mode: 0o700 });
  const meta = join(partialDir, `${model.id}.gguf.part.json`);
  symlinkSync(victims.paths.installedTmp!, join(dh.modelsDir, 'installed.json.tmp'));
  symlinkSync(victims.paths.installed!, join(dh.modelsDir, 'installed.json'));
  symlinkSync(victims.paths.metaTmp!, `${meta}.tmp`);
  symlinkSync(victims.paths.meta!, meta);
  symlinkSync(victims.paths.finalModel!, join(dh.modelsDir, `${model.id}.gguf`));

  // The partial metadata is written before the first byte: a cut leaves it on disk to be inspected.
  dh.hub.setMisbehaviour({ cutAfterBytes: 4096 });
  const cut = await dh.pull(model);
  assert.equal(cut.error?.code, 'ERR_DOWNLOAD_NETWORK');
  victims.assertUntouched();
  assertPrivateRegularFile(meta);
  assert.equal((JSON.parse(readFileSync(meta, 'utf8')) as { format: string }).format, 'companion-partial-v1');

  dh.hub.setMisbehaviour({});
  const run = await dh.pull(model);
  assert.equal(run.error, null);
  victims.assertUntouched();
  assertPrivateRegularFile(join(dh.modelsDir, 'installed.json'));
  assertPrivateRegularFile(join(dh.modelsDir, `${model.id}.gguf`));
  assert.equal((await readInstalled(dh.modelsDir))?.id, model.id);
  assert.equal(hostGets(dh.hub, model).length, 2);
});

test('P-f writePrivateJson() and the published-state writer replace links planted at <path>.tmp, <path>.<pid>.tmp and the target, and write through none', async (t) => {
  const dir = tempDir('companion-pf-');
  t.after(dir.cleanup);
  const victims = plantVictims(dir.path, ['tmp', 'pidTmp', 'target']);
  const run = join(dir.path, 'data', 'run');
  mkdirSync(run, { recursive: true, mode: 0o700 });
  for (const [writer, file] of [
    [writePrivateJson, 'record.json'],
    [writePublishedJson, 'state.json'],
  ] as const) {
    const path = join(run, file);
    symlinkSync(victims.paths.tmp!, `${path}.tmp`);
    symlinkSync(victims.paths.pidTmp!, `${path}.${process.pid}.tmp`);
    symlinkSync(victims.paths.target!, path);
    await writer(path, { written: file });
    victims.assertUntouched();
    assertPrivateRegularFile(path);
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { written: file });
  }
  // Only what was planted and the two targets: no temp file was left behind.
  assert.deepEqual(
    readdirSync(run).sort(),
    [
      'record.json',
      'record.json.tmp',
      `record.json.${process.pid}.tmp`,
      'state.json',
      'state.json.tmp',
      `state.json.${process.pid}.tmp`,
    ].sort(),
  );
});

test('P-f the published-state writer refuses a symlinked run folder with ERR_STATE_UNSAFE and writes nothing through it', async (t) => {
  const dir = tempDir('companion-pf-');
  t.after(dir.cleanup);
  const elsewhere = join(dir.path, 'elsewhere');
  mkdirSync(elsewhere, { mode: 0o755 });
  mkdirSync(join(dir.path, 'data'), { mode: 0o700 });
  symlinkSync(elsewhere, join(dir.path, 'data', 'run'));
  await assert.rejects(writePublishedJson(join(dir.path, 'data', 'run', 'state.json'), { x: 1 }), {
    code: 'ERR_STATE_UNSAFE',
  });
  assert.deepEqual(readdirSync(elsewhere), []);
});

test('P-f the manifest-version record is written through no link planted at its old temp name or its own name', async (t) => {
  const ch = await startCompanionHub(t);
  const victims = plantVictims(ch.dir, ['tmp', 'target']);
  const file = join(ch.dir, 'manifest-version.json');
  symlinkSync(victims.paths.tmp!, `${file}.tmp`);
  symlinkSync(victims.paths.target!, file);
  const authority = ch.authority();
  await authority.signIn({ openBrowser: ch.browser(), onOpen: () => undefined });
  const manifest = await authority.fetchManifest();
  victims.assertUntouched();
  assertPrivateRegularFile(file);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { version: manifest.version });
});

test('P-f writeRuntimeState() replaces a link planted at runtime.state.json and writes nothing through it', (t) => {
  const dir = tempDir('companion-pf-');
  t.after(dir.cleanup);
  const victims = plantVictims(dir.path, ['state']);
  const dataDir = join(dir.path, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  symlinkSync(victims.paths.state!, join(dataDir, STATE_FILE));
  const state: RuntimeState = {
    version: 1,
    pid: 4242,
    startTime: '123',
    exe: process.execPath,
    cmdline: [process.execPath, 'main.js'],
    runDir: join(dataDir, 'run', 'rt-abcdef'),
  };
  writeRuntimeState(dataDir, state);
  victims.assertUntouched();
  assertPrivateRegularFile(join(dataDir, STATE_FILE));
  assert.deepEqual(readRuntimeState(dataDir), state);
  assert.deepEqual(readdirSync(dataDir), [STATE_FILE], 'no temp file left');
});

test(
  'P-f ensurePrivateDir() refuses a symlinked folder and a folder owned by another user with ERR_STATE_UNSAFE',
  root,
  async (t) => {
    const dir = tempDir('companion-pf-');
    t.after(dir.cleanup);
    const elsewhere = join(dir.path, 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o755 });
    chmodSync(elsewhere, 0o755);
    symlinkSync(elsewhere, join(dir.path, 'linked'));
    await assert.rejects(ensurePrivateDir(join(dir.path, 'linked')), { code: 'ERR_STATE_UNSAFE' });
    assert.equal(lstatSync(elsewhere).mode & 0o777, 0o755);
    const theirs = join(dir.path, 'theirs');
    mkdirSync(theirs);
    chmodSync(theirs, 0o777);
    chownSync(theirs, NOBODY, NOBODY);
    await assert.rejects(ensurePrivateDir(theirs), { code: 'ERR_STATE_UNSAFE' });
    assert.equal(lstatSync(theirs).mode & 0o777, 0o777);
    assert.equal(lstatSync(theirs).uid, NOBODY);
  },
);

test('P-f pullModel() refuses a symlinked models folder with ERR_STATE_UNSAFE before any request, and writes nothing through the link', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const elsewhere = join(dh.dir, 'elsewhere');
  mkdirSync(elsewhere, { mode: 0o755 });
  chmodSync(elsewhere, 0o755);
  symlinkSync(elsewhere, dh.modelsDir);
  const run = await dh.pull(model);
  assert.equal(run.error?.code, 'ERR_STATE_UNSAFE');
  assert.deepEqual(await listTree(elsewhere), []);
  assert.equal(lstatSync(elsewhere).mode & 0o777, 0o755);
  assert.ok(lstatSync(dh.modelsDir).isSymbolicLink(), 'the link is left for the user to look at');
  assert.deepEqual(hostGets(dh.hub, model), []);
});

test(
  'P-f pullModel() refuses a models folder (or its .partial folder) owned by another user with ERR_STATE_UNSAFE and writes nothing there',
  root,
  async (t) => {
    const dh = await startDownloadHub(t);
    const model = dh.model(SMALL.id);
    mkdirSync(dh.modelsDir, { mode: 0o777 });
    chmodSync(dh.modelsDir, 0o777);
    chownSync(dh.modelsDir, NOBODY, NOBODY);
    assert.equal((await dh.pull(model)).error?.code, 'ERR_STATE_UNSAFE');
    assert.deepEqual(await listTree(dh.modelsDir), []);
    assert.equal(lstatSync(dh.modelsDir).mode & 0o777, 0o777);

    chownSync(dh.modelsDir, process.getuid!(), process.getgid!());
    chmodSync(dh.modelsDir, 0o700);
    const partialDir = join(dh.modelsDir, '.partial');
    mkdirSync(partialDir, { mode: 0o777 });
    chmodSync(partialDir, 0o777);
    chownSync(partialDir, NOBODY, NOBODY);
    assert.equal((await dh.pull(model)).error?.code, 'ERR_STATE_UNSAFE');
    assert.deepEqual(await listTree(dh.modelsDir), ['.partial']);
    assert.deepEqual(hostGets(dh.hub, model), []);
  },
);

test('P-f a symlink planted at the partial download path is removed, not followed: the pull ends verified and the victim is unchanged', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const victims = plantVictims(dh.dir, ['partial']);
  const partialDir = join(dh.modelsDir, '.partial');
  mkdirSync(partialDir, { recursive: true, mode: 0o700 });
  symlinkSync(victims.paths.partial!, join(partialDir, `${model.id}.gguf.part`));
  const run = await dh.pull(model);
  assert.equal(run.error, null);
  victims.assertUntouched();
  assertPrivateRegularFile(join(dh.modelsDir, `${model.id}.gguf`));
});

test('P-f a symlink re-planted at the partial download path right after the stale one is removed is not followed (O_NOFOLLOW): the pull fails and the victim is unchanged', async (t) => {
  const dh = await startDownloadHub(t);
  const model = dh.model(SMALL.id);
  const victims = plantVictims(dh.dir, ['partial']);
  const partialDir = join(dh.modelsDir, '.partial');
  const partName = `${model.id}.gguf.part`;
  const partialPath = join(partialDir, partName);
  mkdirSync(partialDir, { recursive: true, mode: 0o700 });
  symlinkSync(victims.paths.partial!, partialPath);
  // The attacker watches the folder (inotify) and puts the link back the moment the pull removes it:
  // the pull's next steps (removing the metadata, statfs) give the watcher its turn before the open.
  let replanted = false;
  const watcher = watch(partialDir, (_event, name) => {
    if (replanted || name !== partName) return;
    try {
      lstatSync(partialPath);
    } catch {
      symlinkSync(victims.paths.partial!, partialPath);
      replanted = true;
    }
  });
  t.after(() => watcher.close());
  const run = await dh.pull(model);
  watcher.close();
  assert.equal(replanted, true, 'the attack ran: the link was put back after the pull removed it');
  victims.assertUntouched();
  assert.equal(run.error?.code, 'ERR_DISK_WRITE');
  assert.equal((run.error as { detail?: { cause?: string } }).detail?.cause, 'ELOOP');
  assert.ok(lstatSync(partialPath).isSymbolicLink(), 'the link was not written through nor promoted');
  assert.deepEqual(readdirSync(dh.modelsDir).sort(), ['.partial']);
  assert.deepEqual(hostGets(dh.hub, model), []);
});
