// Shared helpers of the runtime tests: the generated tiny model on disk, private temp dirs, waits, /proc.
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { distRoot } from './paths.js';

/** A fresh private temp directory (0700), removed by the returned cleanup. */
export function tempDir(prefix = 'companion-rt-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(path, 0o700);
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Writes the tiny model (seed 1 unless given) into `dir` and returns its path. */
export function writeTinyModel(dir: string, options: { seed?: number; omitMetadata?: string[]; name?: string } = {}): string {
  const path = join(dir, options.name ?? 'tiny.gguf');
  writeFileSync(path, generateTinyGguf({ seed: options.seed ?? 1, ...(options.omitMetadata === undefined ? {} : { omitMetadata: options.omitMetadata }) }));
  return path;
}

/** The compiled fake runtime used for protocol and process-group tests. */
export const fakeRuntimeScript = join(distRoot, 'test', 'helpers', 'runtime-fake.js');
/** The compiled intermediate parent used for parent-death and stale-reclaim tests. */
export const parentScript = join(distRoot, 'test', 'helpers', 'runtime-parent.js');
/** The compiled bundled runtime entry. */
export const runtimeEntry = join(distRoot, 'src', 'runtime-server', 'main.js');

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `predicate` every 25 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs: number, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(25);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** True while `pid` is a live (non-zombie) process. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Kills a pid we started, ignoring "no such process". */
export function killQuietly(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** A profile running the fake runtime (test/helpers/runtime-fake.ts) with extra fake options. */
export function fakeProfile(extra: string[] = []): import('../../src/runtime/runtime-profile.js').RuntimeProfile {
  return {
    kind: 'custom',
    file: process.execPath,
    modelPath: '/dev/null',
    env: {},
    readOnlyPaths: [],
    args: [fakeRuntimeScript, ...extra],
    settings: {},
  };
}

/** Pids of live processes whose command line contains `needle` (Linux /proc). */
export function processesWith(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle) && alive(Number(entry))) found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}
