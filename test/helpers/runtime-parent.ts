// An intermediate "companion" process for parent-death and stale-reclaim tests: it starts a runtime with
// spawnRuntime, prints one JSON line {"pid":N} with the runtime's pid, and then idles until killed.
//   node runtime-parent.js '{"dataDir":"/abs","model":"/abs/tiny.gguf"}'     the bundled runtime
//   node runtime-parent.js '{"dataDir":"/abs","fake":["--grandchild"]}'      the fake runtime
import { spawnRuntime } from '../../src/runtime/spawn.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { fakeProfile } from './runtime-env.js';

const config = JSON.parse(process.argv[2] ?? '{}') as { dataDir: string; model?: string; fake?: string[] };
const profile =
  config.model !== undefined ? bundledProfile({ modelPath: config.model, threads: 1 }) : fakeProfile(config.fake ?? []);
const handle = await spawnRuntime(profile, { dataDir: config.dataDir, readyTimeoutMs: 60_000 });
process.stdout.write(`${JSON.stringify({ pid: handle.pid })}\n`);
process.on('SIGTERM', () => {
  void handle.stop(2000).then(() => process.exit(0));
});
setInterval(() => undefined, 60_000);
