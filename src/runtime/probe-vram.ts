/**
 * GPU memory for the resource probe (D5.6, P-j): aggregate used/total per GPU only.
 *
 * The one query is `nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits`: one
 * line per GPU, two numbers in MiB. Never `--query-compute-apps`, `pmon`, or plain `nvidia-smi`, which
 * list the processes using each GPU (other users' programs included).
 */
import { access, stat } from 'node:fs/promises';
import { constants } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/** The argv of the one nvidia-smi query the probe makes. */
export const NVIDIA_SMI_ARGS: readonly string[] = Object.freeze([
  '--query-gpu=memory.used,memory.total',
  '--format=csv,noheader,nounits',
]);

export interface GpuMemory {
  readonly usedBytes: number;
  readonly totalBytes: number;
}

const MIB = 1024 * 1024;

/**
 * Parses the nvidia-smi CSV. A GPU that reports `[N/A]` or `[Not Supported]` (some integrated or
 * unified-memory parts) is left out. Returns `null` when no GPU line parses, or when any line is neither
 * a reading nor such a marker (an error message printed instead of the CSV): no figure beats a wrong one.
 */
export function parseNvidiaSmiCsv(stdout: string): GpuMemory[] | null {
  const gpus: GpuMemory[] = [];
  for (const line of stdout.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    const cells = trimmed.split(',').map((cell) => cell.trim());
    if (cells.length !== 2) return null;
    const [used, total] = cells as [string, string];
    if (cells.every((cell) => /^\[(N\/A|Not Supported|Unknown Error)\]$/i.test(cell))) continue;
    if (!/^\d{1,9}$/.test(used) || !/^\d{1,9}$/.test(total)) return null;
    const usedBytes = Number(used) * MIB;
    const totalBytes = Number(total) * MIB;
    if (totalBytes === 0 || usedBytes > totalBytes) return null;
    gpus.push({ usedBytes, totalBytes });
  }
  return gpus.length === 0 ? null : gpus;
}

/**
 * Finds an executable by name in `pathVariable` without a shell: only absolute entries are tried (a
 * relative entry would resolve against the working directory), and the first regular file that is
 * executable wins. Returns its absolute path, or `null`.
 */
export async function findOnPath(
  name: string,
  pathVariable: string | undefined,
  delimiter: string,
): Promise<string | null> {
  if (pathVariable === undefined || name.includes('/') || name.includes('\\')) return null;
  for (const dir of pathVariable.split(delimiter)) {
    if (dir === '' || !isAbsolute(dir)) continue;
    const candidate = join(dir, name);
    try {
      const info = await stat(candidate);
      if (!info.isFile()) continue;
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here: try the next entry.
    }
  }
  return null;
}
