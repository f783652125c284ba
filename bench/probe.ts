/**
 * `npm run bench -- probe --json`: the cost of a resource probe of a real process group (a detached
 * Node leader and its Node grandchild, as in the integration tests), uncached (a full /proc walk: the
 * leader's 7+ threads and the grandchild) and cached (answered from the ≤ 500 ms cache), in µs per call.
 */
import type { Bench } from './harness.js';
import { createResourceProbe } from '../src/runtime/probe.js';
import { spawnProbeGroup, type ProbeGroup } from '../test/helpers/probe-group.js';

const UNCACHED_CALLS = 200;
const CACHED_CALLS = 5000;
let group: ProbeGroup | undefined;

async function perCall(calls: number, call: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) await call();
  return Number(process.hrtime.bigint() - start) / 1000 / calls;
}

const bench: Bench = {
  name: 'probe',
  description: `resource probe of a real 2-process group: ${UNCACHED_CALLS} uncached and ${CACHED_CALLS} cached calls per run (µs per call)`,
  runs: 7,
  warmup: 1,
  async setup() {
    group = await spawnProbeGroup();
  },
  async sample() {
    if (group === undefined) throw new Error('setup did not run');
    const uncached = createResourceProbe({ pgid: group.pgid, cacheMs: 0 });
    const first = await uncached.probe();
    const uncachedUsPerCall = await perCall(UNCACHED_CALLS, () => uncached.probe());
    uncached.close();
    const cached = createResourceProbe({ pgid: group.pgid });
    await cached.probe();
    const cachedUsPerCall = await perCall(CACHED_CALLS, () => cached.probe());
    cached.close();
    return { uncachedUsPerCall, cachedUsPerCall, processes: first.processes, rssMiB: first.rssBytes / (1024 * 1024) };
  },
  async teardown() {
    await group?.kill();
    group = undefined;
  },
  derive(medians) {
    return { uncachedOverCached: (medians.uncachedUsPerCall ?? Number.NaN) / (medians.cachedUsPerCall ?? Number.NaN) };
  },
};

export default bench;
