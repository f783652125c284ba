// Download tests: a reference hub (with synthetic models) and its model host over real TLS, the
// companion's verifying TLS agent, a private models directory per test, and a pull that records every
// event. Everything is torn down with the test.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent } from 'undici';
import { createTlsAgent, type TlsAgentOptions } from '../../src/common/tls.js';
import type { ManifestModel } from '../../src/core/manifest-format.js';
import { startHub, type HubOptions, type RunningHub } from '../../src/hub/index.js';
import type { SyntheticModelSpec } from '../../src/hub/synthetic.js';
import type { VerifiedModel } from '../../src/core/manifest.js';
import { pullModel, type InstalledModel, type PullEvent, type PullOptions } from '../../src/runtime/manager/install.js';
import { verifiedModel } from './download-verified.js';
import type { AfterHook } from './hub.js';

export const MIB = 1024 * 1024;

/** The synthetic models most download tests use (small, so a test stays well under a second). */
export const SMALL: SyntheticModelSpec = { id: 'small', size: 3 * MIB + 4321, seed: 'download-small' };
export const OTHER: SyntheticModelSpec = { id: 'other', size: 200_000, seed: 'download-other' };

export interface DownloadHub {
  readonly hub: RunningHub;
  readonly agent: Agent;
  /** A fresh 0700 models directory (removed with the test). */
  readonly modelsDir: string;
  /** The scratch folder holding `modelsDir` (for extra files). */
  readonly dir: string;
  /** The hub's model `id` as a verified manifest entry (what `pullModel` takes). */
  model(id: string): VerifiedModel;
  /** pullModel() into `modelsDir` through `agent`, recording events; rejects like pullModel. */
  pull(id: string | VerifiedModel, options?: Partial<PullOptions>): Promise<PullRun>;
  /** An agent with other options (closed with the test). */
  agentWith(options: TlsAgentOptions): Agent;
}

export interface PullRun {
  readonly installed: InstalledModel | null;
  readonly error: (Error & { code?: string }) | null;
  readonly events: readonly PullEvent[];
}

export async function startDownloadHub(t: AfterHook, options: HubOptions = {}): Promise<DownloadHub> {
  const hub = await startHub({ extraModels: [SMALL, OTHER], ...options });
  const agents: Agent[] = [];
  const agentWith = (agentOptions: TlsAgentOptions): Agent => {
    const agent = createTlsAgent({ extraCas: [hub.caPem], ...agentOptions });
    agents.push(agent);
    return agent;
  };
  const agent = agentWith({});
  const dir = await mkdtemp(join(tmpdir(), 'companion-download-'));
  const modelsDir = join(dir, 'models');
  t.after(async () => {
    for (const a of agents) await a.close().catch(() => undefined);
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });
  const model = (id: string): VerifiedModel => {
    const found = hub.models.find((m) => m.id === id);
    if (found === undefined) throw new Error(`no model ${id}`);
    return verifiedModel(found);
  };
  return {
    hub,
    agent,
    modelsDir,
    dir,
    model,
    agentWith,
    async pull(id, extra = {}) {
      const events: PullEvent[] = [];
      try {
        const installed = await pullModel({
          model: typeof id === 'string' ? model(id) : id,
          manifestVersion: hub.manifestVersion,
          modelsDir,
          dispatcher: agent,
          progressIntervalMs: 0,
          ...extra,
          onEvent: (event) => {
            events.push(event);
            extra.onEvent?.(event);
          },
        });
        return { installed, error: null, events };
      } catch (error) {
        return { installed: null, error: error as Error & { code?: string }, events };
      }
    },
  };
}

/** Every path under `dir` (relative), sorted; [] when it does not exist. */
export async function listTree(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    out.push(join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name).slice(dir.length + 1));
  }
  return out.sort();
}

/** The permission bits of a path (e.g. 0o600). */
export async function modeOf(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

/** The events of a run without progress events (those vary with timing). */
export function milestones(run: PullRun): PullEvent[] {
  return run.events.filter((e) => e.event !== 'progress');
}

/** The model host's GET requests for one model file. */
export function hostGets(hub: RunningHub, model: ManifestModel): { range: string | null }[] {
  const path = new URL(model.url).pathname;
  return hub.modelHostRequests().filter((r) => r.method === 'GET' && r.path === path);
}
