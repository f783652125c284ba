/**
 * `npm run bench -- download --json`: a verified one-pass pull (`pullModel`: receive over HTTPS, hash,
 * write, fsync, rename) of a synthetic model from the reference model host, against the two-pass
 * baseline on the same file and host: `curl -o FILE URL && openssl dgst -sha256 FILE`.
 *
 * The model host runs in its own process (as a real one would), the pull in a fresh child process per
 * run (so its peak RSS is its own: `maxRSS` of that process). Figures per run: MiB/s of the pull (hashing
 * and writing on a worker thread, the default), of the baseline and of its two halves, of the pull with
 * everything on the main thread (`hashOn: 'main'`, for comparison), and both pulls' peak RSS. Derived:
 * `pullOverBaseline` (target ≥ 1.0) and `mainThreadOverBaseline`.
 * Once per bench, a larger pull (DOWNLOAD_BENCH_LARGE_GIB, default 4; 0 skips it) shows whether the
 * peak RSS stays flat in the model's size.
 *
 * Also per run: CPU seconds per GiB of the pull process (every thread) and of curl + openssl, a figure
 * that depends far less on what else runs on the machine than MiB/s does. Steps start after a 2.5 s
 * pause (see `settle`) and alternate their order from run to run.
 *
 * DOWNLOAD_BENCH_GIB (default 1) sets the size of the measured file.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import type { ManifestModel } from '../src/core/manifest-format.js';
import type { Bench } from './harness.js';
import { exited, jsonLines, spawnDownloadChild, type ServeReply } from '../test/helpers/download-child.js';

const run = promisify(execFile);
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const size = Math.round(Number(process.env.DOWNLOAD_BENCH_GIB ?? '1') * GIB);
const largeSize = Math.round(Number(process.env.DOWNLOAD_BENCH_LARGE_GIB ?? '4') * GIB);

let scratch: string | undefined;
let host: ChildProcessWithoutNullStreams | undefined;
let served: ServeReply | undefined;
let caFile = '';
let large: { mibPerSec: number; peakRssMB: number } | null = null;

function modelOf(id: string): ManifestModel {
  const model = served?.models.find((m) => m.id === id);
  if (model === undefined) throw new Error(`the host does not serve ${id}`);
  return model;
}

/** One pull in a fresh child: wall time inside the child and its peak RSS. */
async function pullOnce(
  model: ManifestModel,
  hashOn: 'worker' | 'main' = 'worker',
): Promise<{ mibPerSec: number; peakRssMB: number; cpuSPerGiB: number }> {
  const modelsDir = join(scratch!, 'models');
  await rm(modelsDir, { recursive: true, force: true });
  const child = spawnDownloadChild('pull', { model, modelsDir, caPem: served!.caPem, progressMs: 60_000, hashOn });
  let result: Record<string, unknown> | undefined;
  jsonLines(child, (line) => {
    if ('done' in line || 'error' in line) result = line;
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  await exited(child, 600_000);
  await rm(modelsDir, { recursive: true, force: true });
  if (result === undefined || result.done !== true)
    throw new Error(`the pull failed: ${JSON.stringify(result)} ${stderr.slice(0, 400)}`);
  return {
    mibPerSec: model.size / MIB / ((result.ms as number) / 1000),
    peakRssMB: ((result.maxRssKb as number) * 1024) / 1e6,
    cpuSPerGiB: (result.cpuMs as number) / 1000 / (model.size / GIB),
  };
}

/** CPU seconds (user + system) that `/usr/bin/time -f '%U %S'` printed last on stderr. */
function cpuOf(stderr: string): number {
  const last = stderr.trim().split('\n').at(-1) ?? '';
  const [user, system] = last.split(' ').map(Number);
  return (user ?? Number.NaN) + (system ?? Number.NaN);
}

/** The two-pass baseline: curl to a file, then openssl's SHA-256 of it (each timed, CPU included). */
async function baselineOnce(model: ManifestModel): Promise<{ curlMs: number; opensslMs: number; cpuS: number }> {
  const file = join(scratch!, 'baseline.bin');
  await rm(file, { force: true });
  const t0 = process.hrtime.bigint();
  const curl = await run(
    '/usr/bin/time',
    ['-f', '%U %S', 'curl', '--silent', '--show-error', '--fail', '--cacert', caFile, '-o', file, model.url],
    { maxBuffer: 1 << 20 },
  );
  const t1 = process.hrtime.bigint();
  const openssl = await run('/usr/bin/time', ['-f', '%U %S', 'openssl', 'dgst', '-sha256', file], {
    maxBuffer: 1 << 20,
  });
  const t2 = process.hrtime.bigint();
  await rm(file, { force: true });
  if (!openssl.stdout.trim().endsWith(model.sha256)) throw new Error('the baseline digest does not match the manifest');
  return {
    curlMs: Number(t1 - t0) / 1e6,
    opensslMs: Number(t2 - t1) / 1e6,
    cpuS: cpuOf(curl.stderr) + cpuOf(openssl.stderr),
  };
}

/**
 * This VM hands memory freed for ~2 s back to its host, and writing into such memory costs several
 * times more (docs/download.md): every measured step starts after the same pause, so none of them gets
 * the memory the step before it just freed.
 */
const SETTLE_MS = 2500;
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
let sampleIndex = 0;

const bench: Bench = {
  name: 'download',
  description: `verified one-pass pull of a ${(size / GIB).toFixed(2)} GiB synthetic model over loopback HTTPS vs curl -o + openssl dgst -sha256 (same host, same file); peak RSS of the pull process${largeSize > 0 ? `; once a ${(largeSize / GIB).toFixed(2)} GiB pull for RSS flatness` : ''}`,
  runs: 5,
  warmup: 1,
  async setup() {
    scratch = await mkdtemp(join(tmpdir(), 'companion-bench-download-'));
    const extraModels = [
      { id: 'bench', size, seed: 'bench-download' },
      ...(largeSize > 0 ? [{ id: 'bench-large', size: largeSize, seed: 'bench-download-large' }] : []),
    ];
    // The data directory caches the synthetic digests between runs of the bench on this machine.
    const dataDir = join(tmpdir(), 'companion-bench-download-hub');
    host = spawnDownloadChild('serve', { dataDir, extraModels });
    served = await new Promise<ServeReply>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the model host did not start in 300 s')), 300_000);
      jsonLines(host!, (line) => {
        clearTimeout(timer);
        resolve(line as unknown as ServeReply);
      });
      host!.once('exit', () => reject(new Error('the model host exited')));
    });
    caFile = join(scratch, 'ca.pem');
    await writeFile(caFile, served.caPem);
    if (largeSize > 0) {
      await settle();
      large = await pullOnce(modelOf('bench-large'));
    }
  },
  async sample() {
    const model = modelOf('bench');
    const mib = model.size / MIB;
    const gib = model.size / GIB;
    let pull: Awaited<ReturnType<typeof pullOnce>> | undefined;
    let main: Awaited<ReturnType<typeof pullOnce>> | undefined;
    let base: Awaited<ReturnType<typeof baselineOnce>> | undefined;
    const steps: (() => Promise<void>)[] = [
      async () => void (pull = await pullOnce(model)),
      async () => void (base = await baselineOnce(model)),
      async () => void (main = await pullOnce(model, 'main')),
    ];
    // Alternate the order run to run, so no step always follows the same other one.
    if (sampleIndex++ % 2 === 1) steps.reverse();
    for (const step of steps) {
      await settle();
      await step();
    }
    return {
      pullMiBps: pull!.mibPerSec,
      baselineMiBps: mib / ((base!.curlMs + base!.opensslMs) / 1000),
      curlMiBps: mib / (base!.curlMs / 1000),
      opensslMiBps: mib / (base!.opensslMs / 1000),
      pullMainThreadMiBps: main!.mibPerSec,
      pullPeakRssMB: pull!.peakRssMB,
      pullMainThreadPeakRssMB: main!.peakRssMB,
      pullCpuSPerGiB: pull!.cpuSPerGiB,
      baselineCpuSPerGiB: base!.cpuS / gib,
      pullMainThreadCpuSPerGiB: main!.cpuSPerGiB,
    };
  },
  async teardown() {
    if (host !== undefined) {
      host.stdin.end();
      await exited(host, 10_000);
    }
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  },
  derive(medians) {
    return {
      pullOverBaseline: (medians.pullMiBps ?? Number.NaN) / (medians.baselineMiBps ?? Number.NaN),
      mainThreadOverBaseline: (medians.pullMainThreadMiBps ?? Number.NaN) / (medians.baselineMiBps ?? Number.NaN),
      cpuOverBaseline: (medians.pullCpuSPerGiB ?? Number.NaN) / (medians.baselineCpuSPerGiB ?? Number.NaN),
      ...(large === null
        ? {}
        : { largePullMiBps: large.mibPerSec, largePullPeakRssMB: large.peakRssMB, largeGiB: largeSize / GIB }),
    };
  },
};

export default bench;
