// GPU by default (issue 17 item 8), through the real CLI as child processes on this CPU-only machine:
// `up` (gpu auto by default) starts the runtime in its bubblewrap sandbox with the GPU passthrough
// profile, falls back to the CPU without error and is available; `status` and `ps` report the backend and
// the layers offloaded from the runtime's own ready line; `doctor` reports the backend and the devices
// the sandbox would pass; `--gpu off` / COMPANION_GPU=off stay available and a bad value is a usage error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { discoverGpuPassthrough } from '../../src/runtime/sandbox-gpu.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runCli, startCli, type CliResult } from '../helpers/cli.js';
import { gate } from '../helpers/gate.js';
import { bwrapPresent } from '../helpers/sandbox-run.js';

// Never contacted without a sign-in: it only names the keychain service `up` needs.
const NO_HUB = 'https://127.0.0.1:9';
const sandboxed = gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap');
const BACKENDS = ['cpu', 'cuda', 'vulkan', 'metal'];

function setup(t: { after(fn: () => void): void }): { dataDir: string; env: NodeJS.ProcessEnv; common: string[] } {
  const root = mkdtempSync(join(tmpdir(), 'companion-gpu-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = join(root, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  chmodSync(dataDir, 0o700);
  installTinyModel(dataDir);
  return {
    dataDir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: root },
    common: ['--hub', NO_HUB, '--keychain', 'memory', '--data-dir', dataDir],
  };
}

function json(result: CliResult): Record<string, unknown> {
  const line = result.stdout.split('\n').find((entry) => entry.startsWith('{'));
  assert.ok(line !== undefined, `a JSON line on stdout: ${result.stdout} ${result.stderr}`);
  return JSON.parse(line) as Record<string, unknown>;
}

/** `status --json` once the published state carries the runtime's backend (written just after ready). */
async function statusWithBackend(common: string[], env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
  let last: Record<string, unknown> = {};
  for (let attempt = 0; attempt < 40; attempt += 1) {
    last = json(await runCli(['status', '--json', ...common], env));
    if (last.backend !== null && last.backend !== undefined) return last;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  assert.fail(`status never showed a backend: ${JSON.stringify(last)}`);
}

test(
  'up with the default gpu auto starts sandboxed on a CPU-only machine; status and ps say cpu, 0 layers offloaded',
  sandboxed,
  async (t) => {
    const { dataDir, env, common } = setup(t);
    const up = startCli(['up', '--json', '--threads', '1', ...common], env);
    t.after(async () => void (await up.stop()));
    await up.waitJson((v) => v.event === 'available', 120_000);
    assert.doesNotMatch(up.stderr(), /WITHOUT a sandbox/, 'the bubblewrap sandbox with the GPU profile ran');

    const devices = discoverGpuPassthrough().devices;
    const status = await statusWithBackend(common, env);
    assert.equal(status.sandbox, 'bubblewrap');
    if (devices.length === 0) {
      // No GPU node: only the CPU can run it, whatever binaries node-llama-cpp has.
      assert.equal(status.backend, 'cpu');
      assert.equal(status.gpuLayers, 0);
    } else {
      assert.ok(BACKENDS.includes(status.backend as string));
    }
    const human = await runCli(['status', ...common], env);
    assert.match(
      human.stdout,
      devices.length === 0 ? /^Backend: {4}cpu \(0 layers offloaded\)$/m : /^Backend: {4}\w+ \(\d+ layers offloaded\)/m,
    );

    const ps = json(await runCli(['ps', '--json', '--data-dir', dataDir], env));
    assert.equal(ps.backend, status.backend);
    assert.equal(ps.gpuLayers, status.gpuLayers);
    assert.equal(ps.state, 'ready');

    const logs = await runCli(['logs', '--data-dir', dataDir], env);
    assert.match(
      logs.stdout,
      /backend (cpu|cuda|vulkan|metal) \(\d+ layers offloaded\)/,
      'the runtime logs what it runs on',
    );
    assert.doesNotMatch(logs.stdout, /model\.gguf|\/models\//, 'never the model path');
  },
);

test('doctor reports the backend node-llama-cpp picks and the GPU devices the sandbox would pass (none here)', async () => {
  const doctor = await runCli(['doctor', '--json', '--keychain', 'memory'], {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: tmpdir(),
  });
  assert.equal(doctor.status, 0, doctor.stderr);
  const report = json(doctor);
  const gpu = report.gpu as { devices: string[]; backend: string | null };
  assert.deepEqual(gpu.devices, [...discoverGpuPassthrough().devices]);
  assert.ok(BACKENDS.includes(gpu.backend as string), `a backend: ${JSON.stringify(gpu)}`);
  if (gpu.devices.length === 0) assert.equal(gpu.backend, 'cpu');
  const human = await runCli(['doctor', '--keychain', 'memory'], {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: tmpdir(),
  });
  assert.match(human.stdout, /^gpu {7}(cpu|cuda|vulkan|metal).*; devices: /m);
});

test(
  'COMPANION_GPU=off runs on the CPU; a --gpu or COMPANION_GPU value other than auto or off is a usage error',
  sandboxed,
  async (t) => {
    const { env, common } = setup(t);
    for (const [args, extra] of [
      [['--gpu', 'cuda'], {}],
      [[], { COMPANION_GPU: 'on' }],
    ] as const) {
      const bad = await runCli(['up', '--json', '--threads', '1', ...args, ...common], { ...env, ...extra });
      assert.equal(bad.status, 2, bad.stderr);
      assert.match(bad.stderr, /--gpu takes "auto" or "off"/);
    }
    const up = startCli(['up', '--json', '--threads', '1', ...common], { ...env, COMPANION_GPU: 'off' });
    t.after(async () => void (await up.stop()));
    await up.waitJson((v) => v.event === 'available', 120_000);
    const status = await statusWithBackend(common, env);
    assert.equal(status.backend, 'cpu');
    assert.equal(status.gpuLayers, 0);
  },
);
