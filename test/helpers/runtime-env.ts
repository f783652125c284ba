// Shared helpers of the runtime tests: the generated tiny model on disk, private temp dirs, waits, /proc.
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { distRoot } from './paths.js';

/** A fresh private temp directory (0700), removed by the returned cleanup. */
export function tempDir(prefix = 'companion-rt-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(path, 0o700);
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Writes the tiny model (seed 1 unless given) into `dir` and returns its path. */
export function writeTinyModel(
  dir: string,
  options: { seed?: number; omitMetadata?: string[]; name?: string } = {},
): string {
  const path = join(dir, options.name ?? 'tiny.gguf');
  writeFileSync(
    path,
    generateTinyGguf({
      seed: options.seed ?? 1,
      ...(options.omitMetadata === undefined ? {} : { omitMetadata: options.omitMetadata }),
    }),
  );
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
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what = 'condition',
): Promise<void> {
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

/** Every descendant of `pid` (children, their children…), from /proc/<pid>/task/<tid>/children. */
export function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  const walk = (parent: number): void => {
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${parent}/task`);
    } catch {
      return;
    }
    for (const tid of tasks) {
      let children = '';
      try {
        children = readFileSync(`/proc/${parent}/task/${tid}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const child of children
        .split(' ')
        .filter((c) => c.length > 0)
        .map(Number)) {
        if (!out.includes(child)) {
          out.push(child);
          walk(child);
        }
      }
    }
  };
  walk(pid);
  return out;
}

/**
 * Live runtime processes below `root` (default: this test process): the bundled runtime, the stand-in
 * runtime and bubblewrap. Found by ancestry, not by a path on argv: the runtime's argv holds nothing but
 * its entry file, so a search for the data dir or the model path would find nothing, whatever runs.
 */
export function runtimeDescendants(root = process.pid): number[] {
  return descendantsOf(root).filter((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const runtime =
        argv.some((arg) => arg.endsWith('runtime-server/main.js') || arg.endsWith('runtime-fake.js')) ||
        argv[0]?.endsWith('bwrap') === true;
      return runtime && alive(pid);
    } catch {
      return false;
    }
  });
}

/**
 * The path of the Unix socket a process listens on through one of its descriptors (its fd's socket
 * inode looked up in /proc/net/unix), or null. The kernel lists the name the socket was bound to: the
 * companion binds under a temporary name, links it to `rt.sock` in the same folder and unlinks the
 * temporary name, so the reachable path is `rt.sock` next to it.
 */
export function listeningSocketOf(pid: number): string | null {
  let inodes: Set<string>;
  try {
    inodes = new Set(
      readdirSync(`/proc/${pid}/fd`)
        .map((fd) => {
          try {
            return /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? '';
          } catch {
            return '';
          }
        })
        .filter((inode) => inode !== ''),
    );
  } catch {
    return null;
  }
  // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; flag 00010000 is __SO_ACCEPTCON (listening).
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 8 && fields[3] === '00010000' && inodes.has(fields[6]!) && fields[7]!.startsWith('/'))
      return join(dirname(fields[7]!), 'rt.sock');
  }
  return null;
}

/** Pids of live processes whose command line contains `needle` (Linux /proc). */
export function processesWith(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle) && alive(Number(entry)))
        found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}
