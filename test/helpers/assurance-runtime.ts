// The real companion for the assurance tests and bench (issue 11): a data directory holding the generated
// tiny model as a verified install, the runtime group (`startRuntimeGroup`: supervisor, bundled runtime
// child with threads 1, front door), and /proc helpers to find what it left behind.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenVerifier } from '../../src/core/guard.js';
import type { RestartPolicy } from '../../src/core/lifecycle.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { startRuntimeGroup, type RunningCompanion } from '../../src/runtime/manager/group.js';
export { descendantsOf, listeningSocketOf, processesWith, runtimeDescendants } from './runtime-env.js';
import type { SupervisorEvent } from '../../src/runtime/manager/supervisor.js';

export const TINY_MODEL_ID = 'tiny';

/**
 * Writes the tiny model into `<dataDir>/models` as a verified install (the record `pullModel` writes), so
 * `startRuntimeGroup` starts without a hub.
 */
export function installTinyModel(dataDir: string, seed = 1): { modelPath: string; sha256: string } {
  const models = join(dataDir, 'models');
  mkdirSync(models, { recursive: true, mode: 0o700 });
  const bytes = generateTinyGguf({ seed });
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const modelPath = join(models, `${TINY_MODEL_ID}.gguf`);
  writeFileSync(modelPath, bytes, { mode: 0o600 });
  const info = statSync(modelPath, { bigint: true });
  const installed = {
    id: TINY_MODEL_ID,
    name: 'tiny test model',
    file: `${TINY_MODEL_ID}.gguf`,
    size: bytes.length,
    digestCheck: createHash('sha256').update(sha256).digest('hex'),
    inode: String(info.ino),
    dev: String(info.dev),
    mtimeNs: String(info.mtimeNs),
    ctimeNs: String(info.ctimeNs),
    verifiedAt: Date.now(),
    manifestVersion: 1,
  };
  writeFileSync(join(models, 'installed.json'), JSON.stringify(installed), { mode: 0o600 });
  return { modelPath, sha256 };
}

export interface TestCompanion {
  readonly running: RunningCompanion;
  readonly token: string;
  readonly dataDir: string;
  /** Every line the runtime child wrote to stderr. */
  readonly stderr: string[];
  readonly events: { at: number; event: SupervisorEvent | { event: 'listening'; endpoint: string } }[];
  /** Closes the companion (idempotent) and removes the data directory. */
  close(): Promise<void>;
}

export interface TestCompanionOptions {
  readonly healthIntervalMs?: number;
  readonly restartPolicy?: RestartPolicy;
  readonly maxConcurrent?: number;
  readonly maxQueue?: number;
}

/** Starts the runtime group on a fresh data dir with the tiny model (threads 1, unsandboxed) and waits until available. */
export async function startTestCompanion(options: TestCompanionOptions = {}): Promise<TestCompanion> {
  const dataDir = mkdtempSync(join(tmpdir(), 'companion-assure-'));
  chmodSync(dataDir, 0o700);
  installTinyModel(dataDir);
  const token = randomBytes(32).toString('base64url');
  const stderr: string[] = [];
  const events: TestCompanion['events'] = [];
  let running: RunningCompanion;
  try {
    running = await startRuntimeGroup({
      dataDir,
      verifyToken: createTokenVerifier(token),
      threads: 1,
      sandboxMode: 'none',
      ...(options.healthIntervalMs !== undefined ? { healthIntervalMs: options.healthIntervalMs } : {}),
      ...(options.restartPolicy !== undefined ? { restartPolicy: options.restartPolicy } : {}),
      ...(options.maxConcurrent !== undefined ? { maxConcurrent: options.maxConcurrent } : {}),
      ...(options.maxQueue !== undefined ? { maxQueue: options.maxQueue } : {}),
      onStderr: (line) => stderr.push(line),
      onEvent: (event) => events.push({ at: performance.now(), event }),
    });
  } catch (error) {
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  if (!(await running.supervisor.waitAvailable(60_000))) {
    await running.close();
    rmSync(dataDir, { recursive: true, force: true });
    throw new Error('the test companion did not become available');
  }
  let closed: Promise<void> | null = null;
  return {
    running,
    token,
    dataDir,
    stderr,
    events,
    close() {
      closed ??= running.close().finally(() => rmSync(dataDir, { recursive: true, force: true }));
      return closed;
    },
  };
}

/** One GET /health over a runtime's Unix socket; true on 200 within `timeoutMs`. Never throws. */
export function probeRuntimeSocket(socketPath: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { socketPath, path: '/health', method: 'GET', timeout: timeoutMs, headers: { host: 'localhost' } },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

/** The resident set size of a process in bytes (from /proc/<pid>/statm), or null. */
export function rssOf(pid: number): number | null {
  try {
    const pages = Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]);
    return pages * 4096;
  } catch {
    return null;
  }
}

/** One request to the front door with the token; resolves with the status (0 on a transport error). */
export function frontDoorStatus(endpoint: string, path: string, token: string, timeoutMs = 2_000): Promise<number> {
  const url = new URL(endpoint);
  return new Promise((resolve) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: 'GET',
        timeout: timeoutMs,
        headers: { authorization: `Bearer ${token}`, connection: 'close' },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', () => resolve(0));
    req.on('timeout', () => {
      req.destroy();
      resolve(0);
    });
    req.end();
  });
}

/** The entries left in a directory (recursively, as relative paths); [] when it does not exist. */
export function entriesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (at: string, prefix: string): void => {
    let names: string[] = [];
    try {
      names = readdirSync(at);
    } catch {
      return;
    }
    for (const name of names) {
      out.push(`${prefix}${name}`);
      try {
        if (statSync(join(at, name)).isDirectory()) walk(join(at, name), `${prefix}${name}/`);
      } catch {
        // Gone meanwhile.
      }
    }
  };
  walk(dir, '');
  return out;
}

export function percentileOf(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
