/**
 * The benchmark harness: runs a named benchmark several times and reports median / min / max of each
 * figure. Benchmarks measure and print; they never assert a timing.
 */
export type Figures = Record<string, number>;

export interface Bench {
  readonly name: string;
  readonly description: string;
  /** Measured runs (after warm-up). */
  readonly runs?: number;
  readonly warmup?: number;
  setup?(): Promise<void>;
  /** One measured run: returns its figures (units in the key names, e.g. `reqPerSec`, `p50Ms`). */
  sample(): Promise<Figures>;
  teardown?(): Promise<void>;
  /** Extra figures derived from the per-figure medians (ratios between cases). */
  derive?(medians: Figures): Figures;
  /** Extra fields of the result from the medians, any JSON (e.g. a figure with its target and `met`). */
  report?(medians: Figures): Record<string, unknown>;
}

export interface Stat {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

function round(value: number): number {
  return Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 1000) / 1000;
}

export async function runBench(bench: Bench, log: (line: string) => void): Promise<Record<string, unknown>> {
  const runs = bench.runs ?? 5;
  const warmup = bench.warmup ?? 1;
  await bench.setup?.();
  const samples: Figures[] = [];
  try {
    for (let i = 0; i < warmup; i++) await bench.sample();
    for (let i = 0; i < runs; i++) {
      const figures = await bench.sample();
      samples.push(figures);
      log(
        `run ${i + 1}/${runs}: ${Object.entries(figures)
          .map(([k, v]) => `${k}=${round(v)}`)
          .join(' ')}`,
      );
    }
  } finally {
    await bench.teardown?.();
  }
  const keys = [...new Set(samples.flatMap((s) => Object.keys(s)))];
  const stats: Record<string, Stat> = {};
  const medians: Figures = {};
  for (const key of keys) {
    const values = samples.map((s) => s[key]).filter((v): v is number => typeof v === 'number');
    stats[key] = { median: round(median(values)), min: round(Math.min(...values)), max: round(Math.max(...values)) };
    medians[key] = median(values);
  }
  const derived = bench.derive
    ? Object.fromEntries(Object.entries(bench.derive(medians)).map(([k, v]) => [k, round(v)]))
    : {};
  const reported = bench.report ? bench.report(medians) : {};
  return {
    bench: bench.name,
    runs,
    ...Object.fromEntries(Object.entries(stats).map(([k, s]) => [k, s])),
    ...derived,
    ...reported,
  };
}
