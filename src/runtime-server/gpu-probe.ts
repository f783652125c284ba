/**
 * `node dist/src/runtime-server/gpu-probe.js`: which backend node-llama-cpp would use here with
 * `gpu auto`, without loading a model (for `companion doctor`). One line on stdout:
 * `{"backend":"cpu"|"cuda"|"vulkan"|"metal","fallback"?:S}`; exit 0. Nothing is built or downloaded.
 */
import { LlamaLogLevel } from 'node-llama-cpp';
import { selectLlama } from './gpu.js';

const choice = await selectLlama('auto', { logLevel: LlamaLogLevel.disabled });
process.stdout.write(
  `${JSON.stringify({ backend: choice.backend, ...(choice.fallback === undefined ? {} : { fallback: choice.fallback }) })}\n`,
);
await choice.llama.dispose().catch(() => undefined);
process.exit(0);
