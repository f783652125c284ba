// The private-file helper (src/common/private-file.ts; issue 16 item 7) on real temp files: atomic 0600
// writes that replace a planted symlink instead of following it, reads that refuse a symlink, and private
// folders that refuse a symlink, a non-folder or another user's folder. Another user is `nobody` (we are
// root in the test environment; the ownership cases are skipped otherwise).
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
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  ensurePrivateDir,
  ensurePrivateDirSync,
  readJsonFile,
  readJsonFileSync,
  writePrivateFileAtomic,
  writePrivateFileAtomicSync,
  writePrivateJson,
} from '../../src/common/private-file.js';
import { tempDir } from '../helpers/runtime-env.js';

const NOBODY = 65534;
const root = process.getuid?.() === 0 ? {} : { skip: 'needs root to make a folder owned by another user' };
const VICTIM_TEXT = 'the victim file, outside the private folder\n';

type Writer = (path: string, data: string) => Promise<void> | void;
const WRITERS: [string, Writer][] = [
  ['writePrivateFileAtomic()', (path, data) => writePrivateFileAtomic(path, data)],
  ['writePrivateFileAtomicSync()', (path, data) => writePrivateFileAtomicSync(path, data)],
];

/** A scratch folder with a private `state/` folder and a victim file beside it (outside `state/`). */
function scratch(t: { after(fn: () => void): void }): { state: string; victim: string } {
  const dir = tempDir('companion-private-');
  t.after(dir.cleanup);
  const state = join(dir.path, 'state');
  mkdirSync(state, { mode: 0o700 });
  const victim = join(dir.path, 'victim.txt');
  writeFileSync(victim, VICTIM_TEXT, { mode: 0o644 });
  return { state, victim };
}

const modeOf = (path: string): number => lstatSync(path).mode & 0o777;

for (const [name, write] of WRITERS) {
  test(`${name} writes a regular 0600 file and leaves no temp file behind`, async (t) => {
    const { state } = scratch(t);
    const target = join(state, 'record.json');
    const previous = process.umask(0);
    try {
      await write(target, '{"a":1}');
    } finally {
      process.umask(previous);
    }
    assert.equal(readFileSync(target, 'utf8'), '{"a":1}');
    assert.ok(lstatSync(target).isFile());
    assert.equal(modeOf(target), 0o600, 'private even with umask 0');
    assert.deepEqual(readdirSync(state), ['record.json']);
  });

  test(`${name} replaces a symlink planted at the target name and leaves the file it pointed at unchanged`, async (t) => {
    const { state, victim } = scratch(t);
    const target = join(state, 'record.json');
    symlinkSync(victim, target);
    await write(target, '{"mine":true}');
    assert.equal(readFileSync(victim, 'utf8'), VICTIM_TEXT);
    assert.equal(modeOf(victim), 0o644);
    assert.ok(lstatSync(target).isFile() && !lstatSync(target).isSymbolicLink());
    assert.equal(modeOf(target), 0o600);
    assert.equal(readFileSync(target, 'utf8'), '{"mine":true}');
    assert.deepEqual(readdirSync(state), ['record.json']);
  });

  test(`${name} replaces a world-readable file with a 0600 one`, async (t) => {
    const { state } = scratch(t);
    const target = join(state, 'record.json');
    writeFileSync(target, 'old', { mode: 0o644 });
    chmodSync(target, 0o644);
    await write(target, 'new');
    assert.equal(readFileSync(target, 'utf8'), 'new');
    assert.equal(modeOf(target), 0o600);
  });

  test(`${name} throws the I/O error and removes its temp file when the rename fails`, async (t) => {
    const { state } = scratch(t);
    const target = join(state, 'taken');
    mkdirSync(join(target, 'inside'), { recursive: true });
    await assert.rejects(
      async () => write(target, 'data'),
      (error: NodeJS.ErrnoException) => typeof error.code === 'string',
    );
    assert.deepEqual(readdirSync(state), ['taken'], 'no temp file left');
    assert.ok(lstatSync(target).isDirectory());
  });
}

test('writePrivateJson() writes JSON that readJsonFile() reads back', async (t) => {
  const { state } = scratch(t);
  const target = join(state, 'value.json');
  await writePrivateJson(target, { id: 'x', n: 3 });
  assert.deepEqual(await readJsonFile(target), { id: 'x', n: 3 });
  assert.equal(modeOf(target), 0o600);
});

test('readJsonFile() returns null for a symlink (even to valid JSON), a folder, a missing file and bad JSON', async (t) => {
  const { state } = scratch(t);
  const real = join(state, 'real.json');
  writeFileSync(real, '{"ok":true}');
  const link = join(state, 'link.json');
  symlinkSync(real, link);
  writeFileSync(join(state, 'bad.json'), '{not json');
  mkdirSync(join(state, 'folder.json'));
  assert.deepEqual(await readJsonFile(real), { ok: true }, 'control: the regular file is read');
  assert.equal(await readJsonFile(link), null);
  assert.equal(await readJsonFile(join(state, 'folder.json')), null);
  assert.equal(await readJsonFile(join(state, 'missing.json')), null);
  assert.equal(await readJsonFile(join(state, 'bad.json')), null);
});

test('readJsonFileSync() reads JSON, gives null for a missing file, and names a damaged one by its name only', async (t) => {
  const { state } = scratch(t);
  const real = join(state, 'real.json');
  writeFileSync(real, '{"ok":true}');
  writeFileSync(join(state, 'bad.json'), '{not json');
  assert.deepEqual(readJsonFileSync(real, 'a data file'), { ok: true });
  assert.equal(readJsonFileSync(join(state, 'missing.json'), 'a data file'), null);
  assert.throws(
    () => readJsonFileSync(join(state, 'bad.json'), 'a hub data file'),
    (error: Error & { code?: string }) => {
      assert.equal(error.code, 'ERR_CONFIG');
      assert.equal(error.message, 'a hub data file is not valid JSON (bad.json)');
      return true;
    },
  );
  assert.throws(() => readJsonFileSync(join(state, 'bad.json'), 'x', 'ERR_STATE_UNSAFE'), { code: 'ERR_STATE_UNSAFE' });
});

test('readJsonFileSync() refuses a symlink (even to valid JSON) with its I/O error, never following it', async (t) => {
  const { state } = scratch(t);
  const real = join(state, 'real.json');
  writeFileSync(real, '{"ok":true}');
  const link = join(state, 'link.json');
  symlinkSync(real, link);
  assert.throws(() => readJsonFileSync(link, 'a data file'), { code: 'ELOOP' });
});

test('writePrivateFileAtomicSync() writes a sequence of chunks whole, in order', async (t) => {
  const { state } = scratch(t);
  const target = join(state, 'chunks.bin');
  function* chunks(): Generator<Uint8Array> {
    for (let i = 0; i < 3; i += 1) yield Buffer.alloc(70_000, 0x61 + i);
  }
  writePrivateFileAtomicSync(target, chunks());
  const bytes = readFileSync(target);
  assert.equal(bytes.length, 210_000);
  assert.deepEqual([bytes[0], bytes[70_000], bytes[209_999]], [0x61, 0x62, 0x63]);
  assert.equal(modeOf(target), 0o600);
  assert.deepEqual(readdirSync(state), ['chunks.bin'], 'no temp file is left');
});

type Ensure = (dir: string, code?: 'ERR_STATE_UNSAFE' | 'ERR_SPAWN_FAILED') => Promise<void> | void;
const ENSURES: [string, Ensure][] = [
  ['ensurePrivateDir()', (dir, code) => ensurePrivateDir(dir, code)],
  ['ensurePrivateDirSync()', (dir, code) => ensurePrivateDirSync(dir, code)],
];

for (const [name, ensure] of ENSURES) {
  test(`${name} creates missing folders 0700 and tightens an existing folder of ours to 0700`, async (t) => {
    const { state } = scratch(t);
    const nested = join(state, 'a', 'b');
    await ensure(nested);
    assert.ok(lstatSync(nested).isDirectory());
    assert.equal(modeOf(nested), 0o700);
    const open = join(state, 'open');
    mkdirSync(open);
    chmodSync(open, 0o755);
    await ensure(open);
    assert.equal(modeOf(open), 0o700);
  });

  test(`${name} refuses a symlinked folder with ERR_STATE_UNSAFE and leaves the linked folder alone`, async (t) => {
    const { state } = scratch(t);
    const elsewhere = join(state, '..', 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o755 });
    chmodSync(elsewhere, 0o755);
    const link = join(state, 'models');
    symlinkSync(elsewhere, link);
    await assert.rejects(async () => ensure(link), { code: 'ERR_STATE_UNSAFE' });
    assert.equal(modeOf(elsewhere), 0o755, 'the folder behind the link was not chmodded');
    assert.deepEqual(readdirSync(elsewhere), []);
  });

  test(`${name} refuses a folder owned by another user with ERR_STATE_UNSAFE and leaves its mode`, root, async (t) => {
    const { state } = scratch(t);
    const theirs = join(state, 'run');
    mkdirSync(theirs);
    chmodSync(theirs, 0o777);
    chownSync(theirs, NOBODY, NOBODY);
    await assert.rejects(async () => ensure(theirs), { code: 'ERR_STATE_UNSAFE' });
    assert.equal(modeOf(theirs), 0o777);
    assert.equal(lstatSync(theirs).uid, NOBODY);
  });

  test(`${name} refuses a regular file and a dangling symlink at the folder's name with ERR_STATE_UNSAFE`, async (t) => {
    const { state } = scratch(t);
    const file = join(state, 'file');
    writeFileSync(file, 'x');
    await assert.rejects(async () => ensure(file), { code: 'ERR_STATE_UNSAFE' });
    const dangling = join(state, 'dangling');
    const nowhere = join(state, '..', 'nowhere');
    symlinkSync(nowhere, dangling);
    await assert.rejects(async () => ensure(dangling), { code: 'ERR_STATE_UNSAFE' });
    assert.throws(() => lstatSync(nowhere), { code: 'ENOENT' }, 'nothing was created through the link');
  });

  test(`${name} throws the caller's code when one is given`, async (t) => {
    const { state } = scratch(t);
    const link = join(state, 'run');
    symlinkSync(state, link);
    await assert.rejects(async () => ensure(link, 'ERR_SPAWN_FAILED'), { code: 'ERR_SPAWN_FAILED' });
  });
}
