/**
 * GPU backend selection for the bundled runtime (issue 17 item 8). `gpu auto` asks node-llama-cpp to pick
 * CUDA, Vulkan or Metal from its prebuilt binaries (installed with it; `build: 'never'` and
 * `skipDownload: true`, so nothing is built or downloaded at run time). node-llama-cpp itself falls back
 * to its CPU binary when no GPU binary loads; should `getLlama` throw anyway, the runtime retries once
 * with the CPU and reports `cpu` with the reason (the error's name only: a message could hold a path).
 *
 * `gpu off` never tries a GPU binary. A named backend (`cuda`, `vulkan`, `metal`) is for tests that
 * force an unavailable backend to prove the fallback; the start line only carries `off` or `auto`.
 */
import { getLlama, type Llama, type LlamaOptions } from 'node-llama-cpp';

/** What the runtime computes on; `cpu` when node-llama-cpp reports no GPU. */
export type Backend = 'cpu' | 'cuda' | 'vulkan' | 'metal';
export const BACKENDS: readonly Backend[] = Object.freeze(['cpu', 'cuda', 'vulkan', 'metal']);

/** The GPU request: the runtime's `off` | `auto`, or a named backend (tests). */
export type GpuRequest = 'off' | 'auto' | 'cuda' | 'vulkan' | 'metal';

export interface LlamaChoice {
  readonly llama: Llama;
  readonly backend: Backend;
  /** Set when a GPU was asked for and could not be loaded: why the runtime runs on the CPU. */
  readonly fallback?: string;
}

/** node-llama-cpp's `llama.gpu` (false | 'cuda' | 'vulkan' | 'metal') as a {@link Backend}. */
export function backendOf(gpu: unknown): Backend {
  return gpu === 'cuda' || gpu === 'vulkan' || gpu === 'metal' ? gpu : 'cpu';
}

/**
 * Loads node-llama-cpp for `request`, falling back to the CPU when a GPU binary cannot be loaded.
 * `options` are every other `getLlama` option; `load` is `getLlama` (injectable for tests).
 * Throws only when the CPU binary itself cannot be loaded.
 */
export async function selectLlama(
  request: GpuRequest,
  options: Omit<LlamaOptions, 'gpu'>,
  load: (options: LlamaOptions) => Promise<Llama> = getLlama,
  log: (line: string) => void = () => undefined,
): Promise<LlamaChoice> {
  const base: LlamaOptions = { build: 'never', skipDownload: true, progressLogs: false, ...options };
  if (request === 'off') {
    const llama = await load({ ...base, gpu: false });
    return { llama, backend: backendOf(llama.gpu) };
  }
  let reason: string;
  try {
    const llama = await load({ ...base, gpu: request });
    return { llama, backend: backendOf(llama.gpu) };
  } catch (error) {
    // node-llama-cpp throws `Error('NoBinaryFoundError')`: a bare class-like name is kept, any other text is not.
    const name = error instanceof Error ? (error.name !== 'Error' ? error.name : error.message) : '';
    reason = /^[A-Za-z0-9_]{1,64}$/.test(name) ? name : 'error';
  }
  log(`gpu ${request} unavailable (${reason}); running on the CPU`);
  const llama = await load({ ...base, gpu: false });
  return { llama, backend: backendOf(llama.gpu), fallback: `${request} unavailable: ${reason}` };
}
