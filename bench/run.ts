/**
 * `npm run bench -- NAME [--json]`: runs one benchmark. With --json the last line printed is one JSON
 * object with "bench": NAME and its figures (median/min/max per figure, plus derived ratios).
 */
import { runBench, type Bench } from './harness.js';

const BENCHES: Record<string, () => Promise<{ default: Bench }>> = {
  'front-door': () => import('./front-door.js'),
  download: () => import('./download.js'),
  assurance: () => import('./assurance.js'),
  guard: () => import('./guard.js'),
  probe: () => import('./probe.js'),
  runtime: () => import('./runtime.js'),
  workloads: () => import('./workloads.js'),
};

async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const name = argv.find((a) => !a.startsWith('--'));
  if (name === undefined || argv.includes('--help')) {
    console.log(
      `Usage: npm run bench -- NAME [--json] [--quick (workloads)]\n\nBenchmarks: ${Object.keys(BENCHES).join(', ')}`,
    );
    return name === undefined && !argv.includes('--help') ? 2 : 0;
  }
  const load = BENCHES[name];
  if (load === undefined) {
    console.error(`bench: unknown benchmark '${name}' (known: ${Object.keys(BENCHES).join(', ')})`);
    return 2;
  }
  const bench = (await load()).default;
  const log = (line: string): void => console.error(`[${name}] ${line}`);
  log(bench.description);
  const result = await runBench(bench, log);
  console.log(json ? JSON.stringify(result) : JSON.stringify(result, null, 2));
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
