// The resource probe (issue 7) against the REAL runtime: its process group's RSS after the model is
// loaded is far above that of a bare Node child spawned the same way (the engine and the model cost
// memory, and the probe sees it), and while the runtime group runs (what `companion up` starts) the state
// file it publishes — and so `companion status --json` — carries the runtime's resources.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTokenVerifier } from '../../src/core/guard.js';
import { createResourceProbe } from '../../src/runtime/probe.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime } from '../../src/runtime/spawn.js';
import { startRuntimeGroup } from '../../src/runtime/manager/group.js';
import { layout } from '../../src/common/layout.js';
import type { PublishedState } from '../../src/runtime/manager/discovery.js';
import type { InstalledModel } from '../../src/runtime/manager/install.js';
import { resolveSandbox } from '../../src/runtime/manager/sandbox-choice.js';
import { repoRoot } from '../helpers/paths.js';
import { bwrapPresent } from '../helpers/sandbox-run.js';
import { killQuietly, tempDir, waitFor, writeTinyModel } from '../helpers/runtime-env.js';

const MIB = 1024 * 1024;
const linux = process.platform === 'linux' ? {} : { skip: 'the /proc probe runs on Linux only' };

test(
  "probe() sees the runtime's RSS after the model load far above a bare Node child's",
  { ...linux, timeout: 60_000 },
  async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    // A bare Node process spawned like the runtime (detached: its own group), idling.
    const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
      detached: true,
      stdio: 'ignore',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    t.after(() => killQuietly(bare.pid));
    const bareProbe = createResourceProbe({ pgid: bare.pid!, cacheMs: 0 });
    t.after(() => bareProbe.close());
    await waitFor(async () => (await bareProbe.probe().catch(() => null)) !== null, 5_000, 'the bare child');
    await new Promise((resolve) => setTimeout(resolve, 200)); // let it finish starting up
    const bareRss = (await bareProbe.probe()).rssBytes;

    const model = writeTinyModel(dir.path);
    const handle = await spawnRuntime(bundledProfile({ modelPath: model, threads: 1, contextSize: 8192 }), {
      dataDir: join(dir.path, 'data'),
      readyTimeoutMs: 60_000,
    });
    t.after(() => handle.stop(2000));
    const probe = createResourceProbe({ pgid: handle.pid, cacheMs: 0 });
    t.after(() => probe.close());
    const loaded = await probe.probe();
    t.diagnostic(
      `bare Node ${(bareRss / MIB).toFixed(1)} MiB, runtime with the model loaded ${(loaded.rssBytes / MIB).toFixed(1)} MiB`,
    );
    assert.equal(loaded.processes, 1);
    assert.ok(
      loaded.rssBytes - bareRss > 40 * MIB,
      `the loaded runtime holds at least 40 MiB more than bare Node (${((loaded.rssBytes - bareRss) / MIB).toFixed(1)} MiB)`,
    );
  },
);

/** Installs the tiny model into `<dataDir>/models` as `pull` would have left it (verified record). */
function installTinyModel(dataDir: string): void {
  const models = layout(dataDir).models;
  mkdirSync(models, { recursive: true, mode: 0o700 });
  const path = writeTinyModel(models, { name: 'tiny.gguf' });
  const bytes = readFileSync(path);
  const info = statSync(path, { bigint: true });
  const hex = createHash('sha256').update(bytes).digest('hex');
  const installed: InstalledModel = {
    id: 'tiny',
    name: 'Tiny',
    file: 'tiny.gguf',
    size: bytes.length,
    digestCheck: createHash('sha256').update(hex).digest('hex'),
    inode: String(info.ino),
    dev: String(info.dev),
    mtimeNs: String(info.mtimeNs),
    ctimeNs: String(info.ctimeNs),
    verifiedAt: Date.now(),
    manifestVersion: 1,
  };
  writeFileSync(join(models, 'installed.json'), JSON.stringify(installed), { mode: 0o600 });
}

function companionStatus(dataDir: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dataDir,
      COMPANION_HOME: dataDir,
    };
    execFile(
      process.execPath,
      [join(repoRoot, 'bin', 'companion.js'), 'status', '--json', '--data-dir', dataDir],
      { env, timeout: 15_000 },
      (error, stdout, stderr) => {
        if (error !== null) {
          reject(new Error(`companion status failed: ${stderr.slice(0, 500)}`));
          return;
        }
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>);
      },
    );
  });
}

test(
  "while the runtime group runs, the published state and `companion status --json` carry the runtime's resources",
  { ...linux, timeout: 60_000 },
  async (t) => {
    const dir = tempDir();
    t.after(dir.cleanup);
    const dataDir = join(dir.path, 'data');
    installTinyModel(dataDir);
    // As `companion up` starts it: sandboxed when bubblewrap is here (the probe must see through it).
    const sandbox = bwrapPresent ? await resolveSandbox('required', () => undefined) : { mode: 'none' as const };
    const group = await startRuntimeGroup({
      dataDir,
      verifyToken: createTokenVerifier(randomBytes(32).toString('base64url')),
      threads: 1,
      sandboxMode: sandbox.mode,
      ...('wrap' in sandbox && sandbox.wrap !== undefined ? { wrap: sandbox.wrap } : {}),
      healthIntervalMs: 500,
    });
    t.after(() => group.close());
    assert.equal(await group.supervisor.waitAvailable(30_000), true, 'the companion became available');

    const statePath = layout(dataDir).state;
    let state: PublishedState | null = null;
    await waitFor(
      () => {
        try {
          state = JSON.parse(readFileSync(statePath, 'utf8')) as PublishedState;
        } catch {
          return false;
        }
        // The first sample has no CPU figure (no interval yet); the group refreshes the state every 2 s.
        return (
          state.companionAvailable &&
          state.resources !== null &&
          (state.resources as { cpuPercent: unknown }).cpuPercent !== null
        );
      },
      10_000,
      'a published state with resources',
    );
    const published = state! as PublishedState;
    const resources = published.resources as {
      rssBytes: number;
      cpuPercent: number | null;
      processes: number;
      vram: unknown;
    };
    assert.equal(published.sandbox, sandbox.mode);
    assert.ok(
      resources.rssBytes > 40 * MIB,
      `the runtime group holds more than 40 MiB (${(resources.rssBytes / MIB).toFixed(1)})`,
    );
    t.diagnostic(
      `published: RSS ${(resources.rssBytes / MIB).toFixed(1)} MiB, CPU ${resources.cpuPercent}%, ${resources.processes} process(es), sandbox ${published.sandbox}`,
    );
    // Sandboxed, the group holds bubblewrap and the runtime inside its pid namespace: the probe counts both.
    assert.ok(resources.processes >= (sandbox.mode === 'bubblewrap' ? 2 : 1));
    assert.equal(resources.vram, null, 'no GPU tool on this machine');
    assert.equal(statSync(statePath).mode & 0o777, 0o600);

    const status = await companionStatus(dataDir);
    assert.deepEqual(Object.keys(status.resources as object).sort(), ['cpuPercent', 'processes', 'rssBytes', 'vram']);
    assert.ok((status.resources as { rssBytes: number }).rssBytes > 40 * MIB);
    assert.equal(typeof (status.resources as { cpuPercent: unknown }).cpuPercent, 'number');
    assert.deepEqual(status.runtime, { state: 'ready', pid: group.supervisor.snapshot().pid });
    assert.equal(status.endpoint, group.endpoint);
  },
);
