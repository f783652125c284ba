// P-c another local user and the runtime's fallback run folder (issue 16 item 5). When `<dataDir>/run/…sock`
// would not fit in a socket path, the runtime's socket goes to a per-user folder: `$XDG_RUNTIME_DIR/companion`
// when that is a private folder of ours, else `<tmp>/companion-<uid>`. Another user (nobody) who creates
// that name first — as a folder of theirs or as a symlink to one — must neither share it (and reach or
// replace the socket) nor block the start: the companion takes a fresh, unguessable 0700 folder of its own.
// The old shared `<tmp>/companion-run` fails these tests. TMPDIR points at a scratch folder (os.tmpdir()
// reads it), so the machine's real /tmp is left alone. Real folders, real chown, a real runtime child.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fallbackRunBase, spawnRuntime } from '../../src/runtime/spawn.js';
import { fakeProfile, tempDir } from '../helpers/runtime-env.js';

const NOBODY = 65534;
const UID = process.getuid?.() ?? 0;
const root = process.getuid?.() === 0 ? {} : { skip: 'needs root to make a folder owned by another user' };
const linux = process.platform === 'linux' ? {} : { skip: 'Linux ownership and /proc' };

interface Scratch {
  readonly dir: string;
  /** The scratch temp folder (world-writable and sticky, like /tmp), set as TMPDIR for the test. */
  readonly tmp: string;
  /** `<tmp>/companion-<uid>`: the per-user name another user may take first. */
  readonly named: string;
}

/** A scratch folder whose `tmp/` is TMPDIR for this test; XDG_RUNTIME_DIR is unset unless given. */
function scratch(t: { after(fn: () => void): void }, env: { XDG_RUNTIME_DIR?: string } = {}): Scratch {
  const dir = tempDir('companion-pc-');
  t.after(dir.cleanup);
  const tmp = join(dir.path, 'tmp');
  mkdirSync(tmp);
  chmodSync(tmp, 0o1777);
  const saved = { TMPDIR: process.env.TMPDIR, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR };
  process.env.TMPDIR = tmp;
  if (env.XDG_RUNTIME_DIR === undefined) Reflect.deleteProperty(process.env, 'XDG_RUNTIME_DIR');
  else process.env.XDG_RUNTIME_DIR = env.XDG_RUNTIME_DIR;
  t.after(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) Reflect.deleteProperty(process.env, name);
      else process.env[name] = value;
    }
  });
  return { dir: dir.path, tmp, named: join(tmp, `companion-${UID}`) };
}

/** A folder owned by nobody, open to all (what another user would leave for us to use). */
function theirFolder(path: string): string {
  mkdirSync(path);
  chmodSync(path, 0o777);
  chownSync(path, NOBODY, NOBODY);
  return path;
}

/** The folder is a real folder (not a link), ours, 0700. */
function assertOursPrivate(path: string): void {
  const stats = lstatSync(path);
  assert.ok(stats.isDirectory() && !stats.isSymbolicLink(), `${path} is a real folder`);
  assert.equal(stats.uid, UID, 'owned by us');
  assert.equal(stats.mode & 0o777, 0o700);
}

/** A fresh per-user folder: `<tmp>/companion-<uid>-XXXXXX`, not the planted name. */
function assertFreshFolder(s: Scratch, base: string): void {
  assert.notEqual(base, s.named, 'not the folder another user planted');
  assert.equal(dirname(base), s.tmp);
  assert.match(basename(base), new RegExp(`^companion-${UID}-[A-Za-z0-9]{6}$`));
  assertOursPrivate(base);
}

function assertTheirsUntouched(path: string): void {
  const stats = lstatSync(path);
  assert.equal(stats.uid, NOBODY);
  assert.equal(stats.mode & 0o777, 0o777, 'their folder was not chmodded');
  assert.deepEqual(readdirSync(path), [], 'nothing of ours was put in their folder');
}

test('P-c fallbackRunBase() uses <tmp>/companion-<uid>, private and ours, when the name is free, and tightens our own folder to 0700', (t) => {
  const s = scratch(t);
  assert.equal(fallbackRunBase({}), s.named);
  assertOursPrivate(s.named);
  chmodSync(s.named, 0o755);
  assert.equal(fallbackRunBase({}), s.named);
  assertOursPrivate(s.named);
});

test(
  'P-c fallbackRunBase() makes a fresh private folder when another user already holds <tmp>/companion-<uid>',
  { ...root, ...linux },
  (t) => {
    const s = scratch(t);
    theirFolder(s.named);
    const base = fallbackRunBase({});
    assertFreshFolder(s, base);
    assertTheirsUntouched(s.named);
    // Each call while the name is taken gets its own folder: the other user cannot guess it in advance.
    const again = fallbackRunBase({});
    assertFreshFolder(s, again);
    assert.notEqual(again, base);
  },
);

test(
  'P-c fallbackRunBase() makes a fresh private folder when <tmp>/companion-<uid> is a symlink to a folder another user owns',
  { ...root, ...linux },
  (t) => {
    const s = scratch(t);
    const target = theirFolder(join(s.dir, 'their-folder'));
    symlinkSync(target, s.named);
    const base = fallbackRunBase({});
    assertFreshFolder(s, base);
    assertTheirsUntouched(target);
    assert.ok(lstatSync(s.named).isSymbolicLink(), 'the link is left as it was');
  },
);

test(
  'P-c fallbackRunBase() makes a fresh private folder when <tmp>/companion-<uid> is a dangling symlink, and creates nothing at its target',
  { ...linux },
  (t) => {
    const s = scratch(t);
    const target = join(s.dir, 'not-yet');
    symlinkSync(target, s.named);
    assertFreshFolder(s, fallbackRunBase({}));
    assert.throws(() => lstatSync(target), { code: 'ENOENT' });
  },
);

test('P-c fallbackRunBase() uses $XDG_RUNTIME_DIR/companion when XDG_RUNTIME_DIR is a private folder of ours', (t) => {
  const s = scratch(t);
  const xdg = join(s.dir, 'xdg');
  mkdirSync(xdg, { mode: 0o700 });
  chmodSync(xdg, 0o700);
  const base = fallbackRunBase({ XDG_RUNTIME_DIR: xdg });
  assert.equal(base, join(xdg, 'companion'));
  assertOursPrivate(base);
  assert.deepEqual(readdirSync(s.tmp), [], 'the shared temp folder was not used');
});

test(
  "P-c fallbackRunBase() ignores an XDG_RUNTIME_DIR that is another user's, open to others, a symlink or relative",
  { ...root, ...linux },
  (t) => {
    const s = scratch(t);
    const theirs = theirFolder(join(s.dir, 'theirs'));
    chmodSync(theirs, 0o700);
    const open = join(s.dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o755);
    const mine = join(s.dir, 'mine');
    mkdirSync(mine, { mode: 0o700 });
    const link = join(s.dir, 'link');
    symlinkSync(mine, link);
    for (const xdg of [theirs, open, link, 'relative/run']) {
      assert.equal(fallbackRunBase({ XDG_RUNTIME_DIR: xdg }), s.named, `XDG_RUNTIME_DIR=${xdg} is not used`);
    }
    assert.deepEqual(readdirSync(theirs), []);
    assert.deepEqual(readdirSync(open), []);
    assert.deepEqual(readdirSync(mine), []);
  },
);

test(
  'P-c spawnRuntime() with a data dir too long for a socket path starts in a fresh folder of ours when another user holds <tmp>/companion-<uid> and <tmp>/companion-run',
  { ...root, ...linux, timeout: 30_000 },
  async (t) => {
    const s = scratch(t);
    theirFolder(s.named);
    const shared = theirFolder(join(s.tmp, 'companion-run'));
    const dataDir = join(s.dir, 'd'.repeat(120), 'data');
    assert.ok(join(dataDir, 'run', 'rt-XXXXXX', 'rt.sock').length > 108, 'the data dir is too long for a socket path');

    const handle = await spawnRuntime(fakeProfile(), { dataDir, readyTimeoutMs: 15_000, stopGraceMs: 2000 });
    t.after(() => handle.stop(2000));
    assert.equal(handle.address.kind, 'unix');
    const socket = handle.address.kind === 'unix' ? handle.address.path : '';
    assert.equal(dirname(socket), handle.runDir);
    assertFreshFolder(s, dirname(handle.runDir));
    assertOursPrivate(handle.runDir);
    assert.equal(lstatSync(socket).mode & 0o777, 0o600);
    assert.equal(await handle.healthCheck(5000), true, 'the runtime serves on the socket the parent bound');
    assertTheirsUntouched(s.named);
    assertTheirsUntouched(shared);

    await handle.stop(2000);
    assert.throws(() => lstatSync(handle.runDir), { code: 'ENOENT' }, 'the run folder is removed with the runtime');
  },
);
