// Soak through the front door while the runtime is SIGKILLed at random moments (issue 11): callers make
// mixed streamed and plain completions with the official openai SDK; a killer SIGKILLs the runtime child
// now and then (the supervisor restarts it with backoff); a sampler compares what the companion reports
// (`companionAvailable()`, the front door's /health) with what is true (a runtime process whose socket
// answers /health). Used by the fault tier (short) and the assurance bench (10 minutes by default).
import OpenAI from 'openai';
import {
  frontDoorStatus,
  listeningSocketOf,
  probeRuntimeSocket,
  runtimeDescendants,
  sleep,
  type TestCompanion,
} from './assurance-runtime.js';

export interface SoakOptions {
  readonly durationMs: number;
  /** Callers running at once (default 3). */
  readonly callers?: number;
  /** Random pause before each kill, [min, max] ms (default [1500, 6000]). */
  readonly killEveryMs?: readonly [number, number];
  /** The health interval the companion was started with (for the lag bound and the report). */
  readonly healthIntervalMs: number;
  /** Sampling period of reality vs report (default 50 ms). */
  readonly sampleEveryMs?: number;
  /** A call still unanswered after this long is a hang (default 30 s). */
  readonly callTimeoutMs?: number;
  readonly seed?: number;
}

export type CallOutcome =
  'ok' | 'http-error' | 'stream-cut' | 'connection-error' | 'silent-truncation' | 'hung' | 'other-error';

export interface SoakFigures {
  readonly durationMs: number;
  readonly calls: number;
  readonly ok: number;
  /** Errors with an HTTP status (429/502/503…) by status. */
  readonly httpErrors: Readonly<Record<string, number>>;
  /** Streams that broke off with an error the client saw (the runtime died mid-stream). */
  readonly streamCut: number;
  readonly connectionErrors: number;
  /** Streams that ended without an error and without a finish reason: must be 0. */
  readonly silentTruncations: number;
  /** Calls that had not ended by their timeout: must be 0. */
  readonly hung: number;
  readonly otherErrors: number;
  readonly otherErrorSamples: readonly string[];
  readonly kills: number;
  readonly restarts: number;
  /** Longest stretch during which the report (supervisor or /health) disagreed with reality, ms. */
  readonly maxAvailabilityLagMs: number;
  readonly maxHealthLagMs: number;
  /** Disagreement stretches seen. */
  readonly lagEpisodes: number;
  /** The longest availability disagreement: what the supervisor reported and its lifecycle state when it began. */
  readonly worstLag: { readonly ms: number; readonly reported: boolean; readonly state: string } | null;
  readonly samples: number;
  readonly healthIntervalMs: number;
}

/** A seeded PRNG (mulberry32), so a soak's kill times and call mix can be replayed. */
function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function classify(error: unknown, streamed: boolean, started: boolean): CallOutcome {
  if (error instanceof OpenAI.APIConnectionTimeoutError) return 'hung';
  if (error instanceof OpenAI.APIError && typeof error.status === 'number') return 'http-error';
  if (error instanceof OpenAI.APIConnectionError) return 'connection-error';
  if (streamed && started) return 'stream-cut';
  // undici's "terminated": the answer's head arrived, then the connection closed (the runtime died) before
  // the body or the first event. The client saw an error: a cut stream, or a cut connection.
  if (error instanceof TypeError && error.message === 'terminated') return streamed ? 'stream-cut' : 'connection-error';
  return 'other-error';
}

export async function runSoak(companion: TestCompanion, options: SoakOptions): Promise<SoakFigures> {
  const random = mulberry(options.seed ?? 1);
  const supervisor = companion.running.supervisor;
  const endpoint = companion.running.endpoint;
  const callTimeoutMs = options.callTimeoutMs ?? 30_000;
  const openai = new OpenAI({ baseURL: endpoint, apiKey: companion.token, maxRetries: 0, timeout: callTimeoutMs });
  const counts = { calls: 0, ok: 0, streamCut: 0, connection: 0, silent: 0, hung: 0, other: 0, kills: 0 };
  const httpErrors: Record<string, number> = {};
  const otherSamples: string[] = [];
  const deadline = performance.now() + options.durationMs;
  let running = true;

  const caller = async (): Promise<void> => {
    while (running && performance.now() < deadline) {
      const streamed = random() < 0.6;
      const maxTokens = 4 + Math.floor(random() * 60);
      const messages = [{ role: 'user' as const, content: `soak ${counts.calls}` }];
      counts.calls++;
      let started = false;
      let outcome: CallOutcome = 'ok';
      let status = 0;
      // Our own bound on top of the SDK's: a call that outlives it is a hang, whatever the SDK does.
      const guard = new AbortController();
      const timer = setTimeout(() => guard.abort(), callTimeoutMs + 5_000);
      try {
        if (streamed) {
          const stream = await openai.chat.completions.create(
            { model: 'tiny', messages, max_tokens: maxTokens, temperature: 0, stream: true },
            { signal: guard.signal },
          );
          let finished = false;
          for await (const chunk of stream) {
            started = true;
            if (chunk.choices[0]?.finish_reason) finished = true;
          }
          if (!finished) outcome = 'silent-truncation';
        } else {
          const result = await openai.chat.completions.create(
            { model: 'tiny', messages, max_tokens: maxTokens, temperature: 0 },
            { signal: guard.signal },
          );
          if (result.choices[0]?.finish_reason === undefined) outcome = 'silent-truncation';
        }
      } catch (error) {
        outcome = guard.signal.aborted ? 'hung' : classify(error, streamed, started);
        if (error instanceof OpenAI.APIError && typeof error.status === 'number') status = error.status;
        if (outcome === 'other-error' && otherSamples.length < 5)
          otherSamples.push(String((error as Error)?.message ?? error).slice(0, 200));
      } finally {
        clearTimeout(timer);
      }
      switch (outcome) {
        case 'ok':
          counts.ok++;
          break;
        case 'http-error':
          httpErrors[String(status)] = (httpErrors[String(status)] ?? 0) + 1;
          break;
        case 'stream-cut':
          counts.streamCut++;
          break;
        case 'connection-error':
          counts.connection++;
          break;
        case 'silent-truncation':
          counts.silent++;
          break;
        case 'hung':
          counts.hung++;
          break;
        default:
          counts.other++;
      }
      // After a refusal, back off a little (the companion said when to come back; we are impatient).
      if (outcome !== 'ok') await sleep(50 + random() * 150);
    }
  };

  const [minKill, maxKill] = options.killEveryMs ?? [1_500, 6_000];
  const killer = async (): Promise<void> => {
    while (running && performance.now() < deadline) {
      await sleep(minKill + random() * (maxKill - minKill));
      if (!running || performance.now() >= deadline) return;
      const pid = supervisor.snapshot().pid;
      if (pid === null) continue;
      try {
        process.kill(pid, 'SIGKILL');
        counts.kills++;
      } catch {
        // Already gone.
      }
    }
  };

  // Reality vs report. Reality: a runtime process of this companion whose listening socket answers /health.
  const sampleEvery = options.sampleEveryMs ?? 50;
  let samples = 0;
  let episodes = 0;
  let maxLag = 0;
  let maxHealthLag = 0;
  let since: number | null = null;
  let healthSince: number | null = null;
  let began: { reported: boolean; state: string } | null = null;
  let worstLag: SoakFigures['worstLag'] = null;
  const sampler = async (): Promise<void> => {
    while (running) {
      const pids = runtimeDescendants();
      let reality = false;
      for (const pid of pids) {
        const socket = listeningSocketOf(pid);
        if (socket !== null && (await probeRuntimeSocket(socket, 300))) reality = true;
      }
      const reported = supervisor.companionAvailable();
      const doorHealthy = (await frontDoorStatus(endpoint, '/health', companion.token, 1_000)) === 200;
      const now = performance.now();
      samples++;
      if (reported !== reality) {
        if (since === null) {
          since = now;
          began = { reported, state: supervisor.snapshot().state };
          episodes++;
        }
      } else if (since !== null) {
        if (now - since > maxLag && began !== null) worstLag = { ms: Math.round(now - since), ...began };
        maxLag = Math.max(maxLag, now - since);
        since = null;
      }
      if (doorHealthy !== reality) healthSince ??= now;
      else if (healthSince !== null) {
        maxHealthLag = Math.max(maxHealthLag, now - healthSince);
        healthSince = null;
      }
      await sleep(sampleEvery);
    }
  };

  const restartsBefore = companion.events.filter((e) => e.event.event === 'state' && e.event.state === 'ready').length;
  const started = performance.now();
  const sampling = sampler();
  await Promise.all([...Array.from({ length: options.callers ?? 3 }, () => caller()), killer()]);
  // Let the last restart finish, then stop sampling with report and reality in agreement.
  await supervisor.waitAvailable(30_000);
  await sleep(options.healthIntervalMs * 2);
  running = false;
  await sampling;
  const now = performance.now();
  if (since !== null) maxLag = Math.max(maxLag, now - since);
  if (healthSince !== null) maxHealthLag = Math.max(maxHealthLag, now - healthSince);
  const restarts =
    companion.events.filter((e) => e.event.event === 'state' && e.event.state === 'ready').length - restartsBefore;
  return {
    durationMs: Math.round(now - started),
    calls: counts.calls,
    ok: counts.ok,
    httpErrors,
    streamCut: counts.streamCut,
    connectionErrors: counts.connection,
    silentTruncations: counts.silent,
    hung: counts.hung,
    otherErrors: counts.other,
    otherErrorSamples: otherSamples,
    kills: counts.kills,
    restarts,
    maxAvailabilityLagMs: Math.round(maxLag),
    maxHealthLagMs: Math.round(maxHealthLag),
    lagEpisodes: episodes,
    worstLag,
    samples,
    healthIntervalMs: options.healthIntervalMs,
  };
}
