/**
 * `npm run bench -- assurance [--minutes N] [--fuzz-requests N] [--only fuzz,load,soak] [--json]`:
 * whole-system assurance figures (issue 11, docs/assurance.md).
 *
 * Order: load first (the companion process is measured fresh), then fuzz, then soak.
 *
 * - fuzz: N (default 100,000) generated raw HTTP requests each at the front door and at the redirect
 *   listener; counts of served/refused, and of wrong verdicts against the reference predicates.
 * - load: 500 concurrent connections × 20 requests through the front door to the real runtime (tiny GGUF,
 *   threads 1, max_tokens 2): served, refused (429/503), p50/p99, peak RSS of the companion and the runtime.
 * - soak: N minutes (default 10) of mixed streamed/plain calls while the runtime is SIGKILLed every 3–15 s:
 *   calls ok/errored, kills, restarts, the longest lag of the reported availability behind reality.
 *
 * One measured run (these are long); figures are counts, so median = min = max.
 */
import type { Bench, Figures } from './harness.js';
import { createRestartPolicy } from '../src/core/lifecycle.js';
import { runLoad } from '../test/helpers/assurance-load.js';
import { startTestCompanion } from '../test/helpers/assurance-runtime.js';
import { runSoak } from '../test/helpers/assurance-soak.js';
import { fuzzFrontDoor, fuzzRedirectListener, type FuzzFigures } from '../test/helpers/fuzz-run.js';

function option(name: string): string | undefined {
  const argv = process.argv.slice(2);
  const inline = argv.find((a) => a.startsWith(`--${name}=`));
  if (inline !== undefined) return inline.slice(name.length + 3);
  const at = argv.indexOf(`--${name}`);
  return at === -1 ? undefined : argv[at + 1];
}

function positive(name: string, fallback: number): number {
  const text = option(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} takes a positive number`);
  return value;
}

const MIB = 1024 * 1024;
const HEALTH_INTERVAL_MS = 250;

function fuzzFigures(prefix: string, f: FuzzFigures): Figures {
  return {
    [`${prefix}Requests`]: f.requests,
    [`${prefix}Connections`]: f.connections,
    [`${prefix}Accepted`]: f.accepted,
    [`${prefix}Refused`]: f.refused,
    [`${prefix}Either`]: f.either,
    [`${prefix}WronglyAccepted`]: f.acceptedButShouldRefuse + f.reachedButShouldRefuse + f.unattributed,
    [`${prefix}WronglyRefused`]: f.refusedButShouldAccept,
    [`${prefix}Hung`]: f.hung,
    [`${prefix}LeakedHandles`]: Object.values(f.leakedHandles).reduce((a, b) => a + b, 0),
    [`${prefix}ServesAfter`]: f.servesAfter ? 1 : 0,
    [`${prefix}ReqPerSec`]: Math.round(f.requests / (f.elapsedMs / 1000)),
  };
}

const bench: Bench = {
  name: 'assurance',
  description:
    'fuzz (raw requests at the front door and the redirect listener), load (500 connections, real runtime), soak (runtime SIGKILLed at random)',
  runs: 1,
  warmup: 0,
  async sample(): Promise<Figures> {
    const only = new Set((option('only') ?? 'fuzz,load,soak').split(','));
    const figures: Figures = {};
    const log = (line: string): void => {
      process.stderr.write(`[assurance] ${line}\n`);
    };
    if (only.has('load')) {
      const perConnection = positive('load-requests', 20);
      log(`load: 500 connections × ${perConnection} requests`);
      const companion = await startTestCompanion();
      try {
        const load = await runLoad(companion, { connections: 500, requestsPerConnection: perConnection, maxTokens: 2 });
        Object.assign(figures, {
          loadConnections: load.connections,
          loadRequests: load.requests,
          loadServed: load.served,
          loadRefused429: load.refused429,
          loadRefused503: load.refused503,
          loadOther:
            Object.values(load.otherStatus).reduce((a, b) => a + b, 0) + load.incomplete + load.transportErrors,
          loadHung: load.hung,
          loadMissingRetryAfter: load.missingRetryAfter,
          loadServedP50Ms: load.servedP50Ms,
          loadServedP99Ms: load.servedP99Ms,
          loadAllP50Ms: load.allP50Ms,
          loadAllP99Ms: load.allP99Ms,
          loadCompanionRssBeforeMiB: load.companionRssBeforeBytes / MIB,
          loadCompanionPeakRssMiB: load.companionPeakRssBytes / MIB,
          loadRuntimePeakRssMiB: load.runtimePeakRssBytes / MIB,
          loadHealthChecks: load.healthChecks,
          loadHealthNotOk: load.healthNotOk,
          loadHealthWorstMs: load.healthWorstMs,
          loadElapsedMs: load.elapsedMs,
        });
      } finally {
        await companion.close();
      }
    }
    if (only.has('fuzz')) {
      const requests = positive('fuzz-requests', 100_000);
      const seed = positive('seed', 20_261_129);
      log(`fuzz: ${requests} raw requests at the front door (seed ${seed})`);
      Object.assign(figures, fuzzFigures('fuzzFrontDoor', await fuzzFrontDoor({ requests, seed })));
      log(`fuzz: ${requests} raw requests at the redirect listener (seed ${seed})`);
      Object.assign(figures, fuzzFigures('fuzzListener', await fuzzRedirectListener({ requests, seed })));
    }
    if (only.has('soak')) {
      const minutes = positive('minutes', 10);
      log(`soak: ${minutes} min, runtime SIGKILLed every 3-15 s`);
      const companion = await startTestCompanion({
        healthIntervalMs: HEALTH_INTERVAL_MS,
        restartPolicy: createRestartPolicy({
          baseDelayMs: 200,
          maxDelayMs: 2_000,
          maxCrashes: 10_000,
          windowMs: 60_000,
        }),
      });
      try {
        const soak = await runSoak(companion, {
          durationMs: minutes * 60_000,
          healthIntervalMs: HEALTH_INTERVAL_MS,
          killEveryMs: [3_000, 15_000],
          seed: positive('seed', 7),
        });
        const httpErrors = Object.values(soak.httpErrors).reduce((a, b) => a + b, 0);
        Object.assign(figures, {
          soakMinutes: minutes,
          soakCalls: soak.calls,
          soakOk: soak.ok,
          soakErrored: soak.calls - soak.ok,
          soakHttpErrors: httpErrors,
          soakStreamCut: soak.streamCut,
          soakConnectionErrors: soak.connectionErrors,
          soakHung: soak.hung,
          soakSilentTruncations: soak.silentTruncations,
          soakOtherErrors: soak.otherErrors,
          soakKills: soak.kills,
          soakRestarts: soak.restarts,
          soakMaxAvailabilityLagMs: soak.maxAvailabilityLagMs,
          soakMaxHealthLagMs: soak.maxHealthLagMs,
          soakHealthIntervalMs: soak.healthIntervalMs,
          soakSamples: soak.samples,
          ...Object.fromEntries(Object.entries(soak.httpErrors).map(([status, n]) => [`soakHttp${status}`, n])),
        });
      } finally {
        await companion.close();
      }
    }
    return figures;
  },
};

export default bench;
