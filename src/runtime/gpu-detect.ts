/**
 * What `companion doctor` says about the GPU (issue 17 item 8): the device nodes a `gpu auto` sandbox
 * would pass (Linux, sandbox-gpu.ts) and the backend node-llama-cpp picks with `gpu auto`, asked in a
 * child process (`runtime-server/gpu-probe.js`: loads node-llama-cpp's binaries, no model) with an empty
 * environment and a time bound, so a driver that hangs cannot hang doctor.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { discoverGpuPassthrough, type GpuFsView } from './sandbox-gpu.js';
import { readyBackend } from './spawn.js';

export interface GpuReport {
  /** GPU device nodes the sandbox would bind (empty: none, or not Linux). */
  readonly devices: readonly string[];
  /** `cpu`, `cuda`, `vulkan` or `metal`; null when the probe did not answer (see `detail`). */
  readonly backend: 'cpu' | 'cuda' | 'vulkan' | 'metal' | null;
  /** Why a GPU is not used, or why the backend is unknown. */
  readonly detail?: string;
}

export interface DetectGpuOptions {
  readonly platform?: NodeJS.Platform;
  readonly fs?: GpuFsView;
  /** Bound of the backend probe, ms (default 20 000: loading the binaries is slow on a busy machine). */
  readonly timeoutMs?: number;
  /** The probe's entry (default the compiled gpu-probe.js next to the runtime). */
  readonly probeEntry?: string;
}

/** The compiled probe entry: dist/src/runtime/gpu-detect.js → dist/src/runtime-server/gpu-probe.js. */
export function gpuProbeEntry(): string {
  return fileURLToPath(new URL('../runtime-server/gpu-probe.js', import.meta.url));
}

function probeBackend(entry: string, timeoutMs: number): Promise<Pick<GpuReport, 'backend' | 'detail'>> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [entry], {
      env: {},
      cwd: '/',
      shell: false,
      windowsHide: true,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let stdout = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (stdout.length < 4096) stdout += chunk;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', () => {
      clearTimeout(timer);
      resolve({ backend: null, detail: 'the backend probe could not run' });
    });
    child.once('close', () => {
      clearTimeout(timer);
      if (timedOut)
        return resolve({ backend: null, detail: `the backend probe did not answer within ${timeoutMs} ms` });
      try {
        const value = JSON.parse(stdout.split('\n')[0] ?? '') as { backend?: unknown; fallback?: unknown };
        // Checked like the runtime's ready line: a fixed list and a plain-text reason.
        const checked = readyBackend({ backend: value.backend, gpuLayers: 0, fallback: value.fallback });
        if (checked !== null)
          return resolve({
            backend: checked.backend,
            ...(checked.fallback === undefined ? {} : { detail: checked.fallback }),
          });
      } catch {
        // fall through
      }
      resolve({ backend: null, detail: 'the backend probe gave no answer' });
    });
  });
}

/** The GPU devices and the backend; never rejects. */
export async function detectGpu(options: DetectGpuOptions = {}): Promise<GpuReport> {
  const platform = options.platform ?? process.platform;
  const devices = platform === 'linux' ? discoverGpuPassthrough(options.fs).devices : [];
  const probed = await probeBackend(options.probeEntry ?? gpuProbeEntry(), options.timeoutMs ?? 20_000);
  return { devices: [...devices], ...probed };
}
