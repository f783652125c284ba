// Load through the front door against the real runtime (issue 11): N concurrent keep-alive connections
// from a separate client process (assurance-load-client.ts), each sending a bounded number of tiny chat
// completions (some streamed), while this process (the companion) polls its front door's /health and
// samples its own RSS and the runtime's. Used by the fault tier (short form) and the bench (full form).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { frontDoorStatus, percentileOf, rssOf, sleep, type TestCompanion } from './assurance-runtime.js';
import type { LoadClientFigures, LoadClientOptions } from './assurance-load-client.js';
import { distRoot } from './paths.js';

const loadClientScript = join(distRoot, 'test', 'helpers', 'assurance-load-client.js');

export interface LoadOptions {
  /** Connections open at once (each one a client with one socket). */
  readonly connections: number;
  /** Requests each connection sends, one after the other. */
  readonly requestsPerConnection: number;
  /** max_tokens of every completion (default 2). */
  readonly maxTokens?: number;
  /** Share of streamed requests (default 0.3). */
  readonly streamShare?: number;
  /** A request still unanswered after this long counts as hung (default 60 s). */
  readonly requestTimeoutMs?: number;
  /** How often /health is polled (default 100 ms). */
  readonly healthEveryMs?: number;
}

export interface LoadFigures {
  readonly connections: number;
  readonly requests: number;
  /** 200 with a complete body (non-streamed JSON with a choice, or an SSE stream ending in [DONE]). */
  readonly served: number;
  readonly refused429: number;
  readonly refused503: number;
  /** Any other status, by status. */
  readonly otherStatus: Readonly<Record<string, number>>;
  /** 429/503 without a Retry-After header. */
  readonly missingRetryAfter: number;
  /** 200 whose body was cut or malformed. */
  readonly incomplete: number;
  readonly transportErrors: number;
  /** Requests that had not ended when their timeout fired. */
  readonly hung: number;
  readonly servedP50Ms: number;
  readonly servedP99Ms: number;
  readonly allP50Ms: number;
  readonly allP99Ms: number;
  readonly companionRssBeforeBytes: number;
  readonly companionPeakRssBytes: number;
  readonly runtimePeakRssBytes: number;
  readonly healthChecks: number;
  /** /health answers other than 200, or availability false, during the run. */
  readonly healthNotOk: number;
  /** What the failed health polls saw: status (0 = no answer within 10 s), `/unavailable` when the supervisor said so. */
  readonly healthFailures: Readonly<Record<string, number>>;
  /** The slowest /health answer during the load. */
  readonly healthWorstMs: number;
  /** A request right after the load is served (no admission slot was left behind). */
  readonly servesAfter: boolean;
  readonly availableAfter: boolean;
  readonly elapsedMs: number;
}

export async function runLoad(companion: TestCompanion, options: LoadOptions): Promise<LoadFigures> {
  const endpoint = companion.running.endpoint; // http://127.0.0.1:P/v1
  const origin = new URL(endpoint).origin;
  const maxTokens = options.maxTokens ?? 2;
  const streamShare = options.streamShare ?? 0.3;
  const timeoutMs = options.requestTimeoutMs ?? 60_000;
  const supervisor = companion.running.supervisor;

  // Samplers: the companion's own RSS (this process holds the front door), the runtime's, and health.
  const rssBefore = process.memoryUsage().rss;
  let peakRss = rssBefore;
  let runtimePeak = 0;
  let healthChecks = 0;
  let healthNotOk = 0;
  let healthWorstMs = 0;
  const healthFailures: Record<string, number> = {};
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
      const pid = supervisor.snapshot().pid;
      if (pid !== null) runtimePeak = Math.max(runtimePeak, rssOf(pid) ?? 0);
      await sleep(100);
    }
  })();
  const health = (async () => {
    while (sampling) {
      const sent = performance.now();
      const status = await frontDoorStatus(endpoint, '/health', companion.token, 10_000);
      healthChecks++;
      healthWorstMs = Math.max(healthWorstMs, performance.now() - sent);
      if (status !== 200 || !supervisor.companionAvailable()) {
        healthNotOk++;
        const key = `${status}${supervisor.companionAvailable() ? '' : '/unavailable'}`;
        healthFailures[key] = (healthFailures[key] ?? 0) + 1;
      }
      await sleep(options.healthEveryMs ?? 100);
    }
  })();

  // The clients run in their own process: the companion (this process) is measured alone.
  const result = await new Promise<LoadClientFigures>((resolve, reject) => {
    const child = spawn(process.execPath, [loadClientScript], { stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdin.end(
      JSON.stringify({
        origin,
        token: companion.token,
        connections: options.connections,
        requestsPerConnection: options.requestsPerConnection,
        maxTokens,
        streamShare,
        requestTimeoutMs: timeoutMs,
      } satisfies LoadClientOptions),
    );
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as LoadClientFigures);
      } catch {
        reject(new Error(`the load client exited with ${code} and no figures`));
      }
    });
  });
  sampling = false;
  await Promise.all([sampler, health]);
  const servesAfter = await servedSoon(companion);
  return {
    connections: options.connections,
    requests: result.requests,
    served: result.served,
    refused429: result.refused429,
    refused503: result.refused503,
    otherStatus: result.otherStatus,
    missingRetryAfter: result.missingRetryAfter,
    incomplete: result.incomplete,
    transportErrors: result.transportErrors,
    hung: result.hung,
    servedP50Ms: round(percentileOf(result.servedMs, 50)),
    servedP99Ms: round(percentileOf(result.servedMs, 99)),
    allP50Ms: round(percentileOf(result.allMs, 50)),
    allP99Ms: round(percentileOf(result.allMs, 99)),
    companionRssBeforeBytes: rssBefore,
    companionPeakRssBytes: peakRss,
    runtimePeakRssBytes: runtimePeak,
    healthChecks,
    healthNotOk,
    healthFailures,
    healthWorstMs: round(healthWorstMs),
    servesAfter,
    availableAfter: supervisor.companionAvailable(),
    elapsedMs: Math.round(result.elapsedMs),
  };
}

function round(value: number): number {
  return Number.isFinite(value) ? Math.round(value * 10) / 10 : value;
}

/** True once a request after the load is served (bounded wait: 5 s). */
async function servedSoon(companion: TestCompanion): Promise<boolean> {
  for (let attempt = 0; attempt < 50; attempt++) {
    if ((await frontDoorStatus(companion.running.endpoint, '/v1/models', companion.token)) === 200) return true;
    await sleep(100);
  }
  return false;
}
