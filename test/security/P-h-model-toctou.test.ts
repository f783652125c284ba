// P-h a model substituted between its check and its use (issue 16 item 8): the installed model is opened
// once (O_RDONLY | O_NOFOLLOW), checked through that descriptor, and that same descriptor is what the runtime
// gets as fd 3. Renaming another file over the model path after the check changes nothing the runtime
// sees; a descriptor that could write the model is refused before anything is spawned; a symlink where the
// model was is refused outright. The real bundled runtime (threads 1, no sandbox wrap) on the generated
// tiny model; /proc tells which file its fd 3 is and how it was opened.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  constants,
  existsSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { STATE_FILE } from '../../src/runtime/stale.js';
import { isOpenedModel, openInstalledModel } from '../../src/runtime/manager/install.js';
import { createSupervisor } from '../../src/runtime/manager/supervisor.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runtimeDescendants, tempDir } from '../helpers/runtime-env.js';

const linux = process.platform === 'linux' ? {} : { skip: 'reads /proc/<pid>/fd and fdinfo' };
const GiB = 1024 ** 3;
/** O_ACCMODE: the access mode bits of the `flags:` line in /proc/<pid>/fdinfo/<fd> (octal). */
const ACCESS_MODE = 0o3;

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

interface Installed {
  readonly dataDir: string;
  readonly modelsDir: string;
  readonly modelPath: string;
  readonly sha256: string;
  readonly ino: number;
  /** Other, valid model bytes ready to be renamed over the model path. */
  readonly swapFile: string;
  /** Renames the other file over the model path; returns its inode. */
  swap(): number;
}

function installed(t: { after(fn: () => void): void }): Installed {
  const dir = tempDir('companion-ph-');
  t.after(dir.cleanup);
  const dataDir = join(dir.path, 'data');
  const { modelPath, sha256: digest } = installTinyModel(dataDir);
  const modelsDir = join(dataDir, 'models');
  const swapFile = join(modelsDir, '.swap.gguf');
  writeFileSync(swapFile, generateTinyGguf({ seed: 2 }), { mode: 0o600 });
  assert.notEqual(sha256(readFileSync(swapFile)), digest, 'the swapped-in model has other bytes');
  return {
    dataDir,
    modelsDir,
    modelPath,
    sha256: digest,
    ino: statSync(modelPath).ino,
    swapFile,
    swap() {
      const ino = statSync(swapFile).ino;
      renameSync(swapFile, modelPath);
      return ino;
    },
  };
}

/** Every byte of an open file, read at explicit offsets (the descriptor's position is not used). */
async function readThrough(handle: FileHandle): Promise<Buffer> {
  const { size } = await handle.stat();
  const bytes = Buffer.alloc(size);
  for (let position = 0; position < size;) {
    const { bytesRead } = await handle.read(bytes, position, size - position, position);
    if (bytesRead === 0) break;
    position += bytesRead;
  }
  return bytes;
}

/** The access mode of descriptor `fd` of process `pid` (0 read-only, 1 write-only, 2 read-write). */
function accessMode(pid: number, fd: number): number {
  const match = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
  assert.ok(match, 'fdinfo has a flags line');
  return parseInt(match[1]!, 8) & ACCESS_MODE;
}

test(
  'P-h openInstalledModel() returns a descriptor that still reads the verified bytes after another file is renamed over the model path',
  { ...linux },
  async (t) => {
    const m = installed(t);
    const opened = await openInstalledModel(m.modelsDir);
    t.after(() => opened.handle.close());
    assert.equal(opened.path, m.modelPath);
    const swappedIno = m.swap();
    assert.equal(statSync(m.modelPath).ino, swappedIno);
    assert.notEqual(sha256(readFileSync(m.modelPath)), m.sha256, 'the path now names other bytes');
    assert.equal(sha256(await readThrough(opened.handle)), m.sha256, 'the descriptor still reads what was verified');
    assert.equal(Number((await opened.handle.stat({ bigint: true })).ino), m.ino);
    assert.equal(accessMode(process.pid, opened.handle.fd), constants.O_RDONLY);
    // Branded: only what openInstalledModel() returned counts as a checked descriptor, not a copy of it.
    assert.equal(isOpenedModel(opened), true);
    assert.equal(isOpenedModel({ ...opened }), false);
  },
);

test(
  'P-h spawnRuntime() runs the runtime on the verified descriptor as a read-only fd 3, not on a file renamed over the model path after the check',
  { ...linux, timeout: 90_000 },
  async (t) => {
    const m = installed(t);
    const opened = await openInstalledModel(m.modelsDir);
    t.after(() => opened.handle.close());
    const swappedIno = m.swap();
    // The profile names the path too (now the swapped file): the descriptor must win.
    const handle = await spawnRuntime(bundledProfile({ modelPath: m.modelPath, threads: 1 }), {
      dataDir: m.dataDir,
      modelFd: opened.handle.fd,
      readyTimeoutMs: 60_000,
    });
    t.after(() => handle.stop(2000));
    const fd3 = statSync(`/proc/${handle.pid}/fd/3`);
    assert.equal(fd3.ino, m.ino, 'fd 3 of the runtime is the verified file');
    assert.notEqual(fd3.ino, swappedIno);
    assert.equal(sha256(readFileSync(`/proc/${handle.pid}/fd/3`)), m.sha256, 'and holds the verified bytes');
    assert.equal(accessMode(handle.pid, 3), constants.O_RDONLY, 'fd 3 is read-only');
    assert.equal(await handle.healthCheck(5000), true);
  },
);

test(
  'P-h spawnRuntime() gives the runtime its model on a read-only fd 3 when it opens the model itself',
  { ...linux, timeout: 90_000 },
  async (t) => {
    const m = installed(t);
    const handle = await spawnRuntime(bundledProfile({ modelPath: m.modelPath, threads: 1 }), {
      dataDir: m.dataDir,
      readyTimeoutMs: 60_000,
    });
    t.after(() => handle.stop(2000));
    assert.equal(statSync(`/proc/${handle.pid}/fd/3`).ino, m.ino);
    assert.equal(accessMode(handle.pid, 3), constants.O_RDONLY);
  },
);

test(
  'P-h spawnRuntime() refuses a model descriptor opened read-write or write-only with ERR_INVALID_ARG_VALUE before anything is spawned',
  { ...linux, timeout: 60_000 },
  async (t) => {
    const m = installed(t);
    for (const flags of [constants.O_RDWR, constants.O_WRONLY]) {
      const writable = await open(m.modelPath, flags);
      t.after(() => writable.close().catch(() => undefined));
      let started: RuntimeHandle | null = null;
      const outcome = await spawnRuntime(bundledProfile({ threads: 1 }), {
        dataDir: m.dataDir,
        modelFd: writable.fd,
        readyTimeoutMs: 60_000,
      }).then(
        async (h) => {
          started = h;
          await h.stop(2000);
          return null;
        },
        (error: unknown) => error,
      );
      assert.equal(started, null, 'no runtime was started');
      assert.ok(outcome instanceof TypeError, 'a TypeError');
      assert.equal((outcome as { code?: string }).code, 'ERR_INVALID_ARG_VALUE');
      assert.deepEqual(runtimeDescendants(), [], 'no runtime process exists');
      assert.equal(existsSync(join(m.dataDir, STATE_FILE)), false, 'no runtime was recorded');
      const runBase = join(m.dataDir, 'run');
      assert.deepEqual(existsSync(runBase) ? readdirSync(runBase) : [], [], 'no run folder is left');
      await writable.close();
    }
    assert.equal(sha256(readFileSync(m.modelPath)), m.sha256);
  },
);

test('P-h openInstalledModel() refuses a symlink put where the model was, even one to an identical copy, with ERR_MODEL_CHANGED', async (t) => {
  const m = installed(t);
  const copy = join(m.dataDir, 'copy.gguf');
  writeFileSync(copy, readFileSync(m.modelPath));
  rmSync(m.modelPath);
  symlinkSync(copy, m.modelPath);
  await assert.rejects(openInstalledModel(m.modelsDir), { code: 'ERR_MODEL_CHANGED' });
});

test('P-h openInstalledModel() refuses a models folder that was replaced by a link to an identical copy (record and model), with ERR_STATE_UNSAFE', async (t) => {
  const m = installed(t);
  const elsewhere = join(m.dataDir, 'elsewhere');
  renameSync(m.modelsDir, elsewhere);
  symlinkSync(elsewhere, m.modelsDir);
  await assert.rejects(openInstalledModel(m.modelsDir), { code: 'ERR_STATE_UNSAFE' });
});

test(
  'P-h createSupervisor() starts the runtime on the verified file when the model is swapped between its check and the spawn',
  { ...linux, timeout: 90_000 },
  async (t) => {
    const m = installed(t);
    let swappedIno: number | null = null;
    const supervisor = createSupervisor({
      dataDir: m.dataDir,
      modelsDir: m.modelsDir,
      threads: 1,
      readyTimeoutMs: 60_000,
      healthIntervalMs: 1000,
      // The memory check runs after the model was opened and checked and before the spawn: the attacker's
      // rename lands in exactly that window.
      availableMemory: () => {
        swappedIno ??= m.swap();
        return 64 * GiB;
      },
    });
    t.after(() => supervisor.stop());
    await supervisor.start();
    assert.notEqual(swappedIno, null, 'the swap happened before the spawn');
    const { pid, state } = supervisor.snapshot();
    assert.equal(state, 'ready');
    assert.ok(pid !== null);
    assert.equal(statSync(`/proc/${pid}/fd/3`).ino, m.ino, 'the runtime holds the verified file, not the swapped one');
    assert.equal(sha256(readFileSync(`/proc/${pid}/fd/3`)), m.sha256);
    assert.equal(accessMode(pid, 3), constants.O_RDONLY);
    assert.equal(supervisor.companionAvailable(), true);
  },
);
