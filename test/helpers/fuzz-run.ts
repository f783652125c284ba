// One fuzz run against a real server, start to finish, with its figures: used by the security-tier tests
// (a sample) and by `npm run bench -- assurance` (100,000 requests each).
import { request as httpRequest } from 'node:http';
import { CompanionError } from '../../src/core/errors.js';
import { startRedirectListener } from '../../src/authority/redirect-listener.js';
import { startFrontDoorFixture } from './front-door.js';
import { frontDoorBatches } from './fuzz-front-door.js';
import {
  escapeBytes,
  handleCounts,
  newTally,
  Prng,
  runFuzz,
  settleHandles,
  tallyOutcome,
  type FuzzCase,
  type FuzzTally,
} from './fuzz-http.js';
import { finalState, listenerBatches } from './fuzz-listener.js';

export interface FuzzFigures {
  readonly target: 'front-door' | 'redirect-listener';
  readonly seed: number;
  /** Requests with a definite outcome (answered, or cut while they were next). */
  readonly requests: number;
  /** Requests written but never reached (an earlier answer closed their connection). */
  readonly unreached: number;
  readonly connections: number;
  readonly slowConnections: number;
  readonly accepted: number;
  readonly refused: number;
  /** Requests whose syntax is ambiguous (either outcome is fine); counted, not judged. */
  readonly either: number;
  /** Answered as served although the reference predicate refuses them: must be 0. */
  readonly acceptedButShouldRefuse: number;
  /** Refused although the reference predicate serves them: 0 when the predicate is exact. */
  readonly refusedButShouldAccept: number;
  /** Requests that reached the code behind the check (upstream / validate) although refused: must be 0. */
  readonly reachedButShouldRefuse: number;
  /** Calls behind the check that no generated request explains: must be 0. */
  readonly unattributed: number;
  readonly hung: number;
  readonly garbled: number;
  /** What the first garbled connections sent and got back (escaped, cut). */
  readonly garbledSamples: readonly { kinds: string[]; sent: string; received: string }[];
  /** A valid request after the run was served. */
  readonly servesAfter: boolean;
  /** TCP/pipe handles left over after closing, beyond the baseline. */
  readonly leakedHandles: Readonly<Record<string, number>>;
  readonly elapsedMs: number;
  readonly examples: readonly string[];
}

export interface FuzzRunOptions {
  readonly requests: number;
  readonly seed: number;
  /** Connections in flight (default 48). */
  readonly concurrency?: number;
}

/** 127/8 source addresses: spreads 100k short connections over more than one ephemeral port range. */
const SOURCES = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];

function figures(
  target: FuzzFigures['target'],
  seed: number,
  tally: FuzzTally,
  report: Awaited<ReturnType<typeof runFuzz>>,
  extra: Pick<
    FuzzFigures,
    'reachedButShouldRefuse' | 'unattributed' | 'servesAfter' | 'leakedHandles' | 'slowConnections'
  >,
  examples: string[],
): FuzzFigures {
  return {
    target,
    seed,
    requests: report.judged,
    unreached: report.unjudged,
    connections: report.connections,
    accepted: tally.accepted,
    refused: tally.refused,
    either: tally.either,
    acceptedButShouldRefuse: tally.acceptedButShouldRefuse,
    refusedButShouldAccept: tally.refusedButShouldAccept,
    hung: report.hung,
    garbled: report.garbled,
    elapsedMs: Math.round(report.elapsedMs),
    examples: [...tally.examples, ...examples].slice(0, 10),
    garbledSamples: report.garbledSamples ?? [],
    ...extra,
  };
}

function describe(c: FuzzCase | undefined, why: string): string {
  return c === undefined ? why : `${why}: #${c.id} ${c.kind} (${c.verdict}) ${escapeBytes(c.bytes, 200)}`;
}

/**
 * Fuzzes the real front door in front of the instrumented upstream (test/helpers/front-door-upstream.ts).
 * Every generated request carries its id in `Accept` (the one request header the door forwards), so each
 * request that reached the upstream is attributed to the case that produced it.
 */
export async function fuzzFrontDoor(options: FuzzRunOptions): Promise<FuzzFigures> {
  const baseline = handleCounts();
  const fixture = await startFrontDoorFixture({
    maxConcurrent: 64,
    maxQueue: 4096,
    behaviour: { events: 1 },
    door: { limits: { headersTimeoutMs: 4_000, requestTimeoutMs: 6_000 } },
  });
  const ctx = { port: fixture.door.port, token: fixture.token };
  const tally = newTally();
  let slow = 0;
  let servesAfter = false;
  const examples: string[] = [];
  let reachedButShouldRefuse = 0;
  let unattributed = 0;
  let report: Awaited<ReturnType<typeof runFuzz>>;
  try {
    const source = frontDoorBatches(new Prng(options.seed), ctx, () => tally.judged >= options.requests, SOURCES);
    report = await runFuzz({
      port: ctx.port,
      concurrency: options.concurrency ?? 48,
      next: () => {
        const batch = source.next();
        if (batch?.pieces !== undefined) slow++;
        return batch;
      },
      classify: (_c, response) => (response.status === 200 ? 'accepted' : 'refused'),
      onOutcome: (outcome) => tallyOutcome(tally, outcome),
      deadlineMs: 10_000,
    });
    // Ground truth from the server side: what reached the upstream, request by request.
    for (const seen of fixture.upstream.seen) {
      const id = /fuzz=(\d+)/.exec(String(seen.headers.accept ?? ''))?.[1];
      const fuzzCase = id === undefined ? undefined : source.cases.get(Number(id));
      if (fuzzCase === undefined) {
        unattributed++;
        if (examples.length < 4) examples.push(`unattributed upstream request ${seen.method} ${seen.url}`);
      } else if (fuzzCase.verdict === 'refuse') {
        reachedButShouldRefuse++;
        if (examples.length < 4) examples.push(describe(fuzzCase, 'reached the upstream'));
      }
    }
    // Still serving: one plain valid request.
    servesAfter = await new Promise<boolean>((resolve) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: ctx.port,
          path: '/v1/models',
          headers: { authorization: `Bearer ${ctx.token}`, connection: 'close' },
          timeout: 5_000,
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode === 200));
        },
      );
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  } finally {
    await fixture.close();
  }
  const leakedHandles = await settleHandles(baseline);
  return figures(
    'front-door',
    options.seed,
    tally,
    report,
    { reachedButShouldRefuse, unattributed, servesAfter, leakedHandles, slowConnections: slow },
    examples,
  );
}

/**
 * Fuzzes the real one-shot redirect listener. `validate` refuses every callback with a non-terminal error
 * (the listener keeps waiting) and records which generated request each call came from (`fuzzid` in the
 * query); a final valid callback then ends the flow.
 */
export async function fuzzRedirectListener(options: FuzzRunOptions): Promise<FuzzFigures> {
  const baseline = handleCounts();
  const finalValue = finalState();
  const calls: URL[] = [];
  const listener = await startRedirectListener<string>({
    timeoutMs: 60 * 60_000,
    validate: (url) => {
      if (url.searchParams.get('state') === finalValue) return 'signed-in';
      calls.push(url);
      throw new CompanionError('ERR_OAUTH_STATE_MISMATCH');
    },
  });
  const ctx = { port: listener.port, path: listener.path };
  const tally = newTally();
  let slow = 0;
  const examples: string[] = [];
  let reachedButShouldRefuse = 0;
  let unattributed = 0;
  let servesAfter = false;
  let report: Awaited<ReturnType<typeof runFuzz>>;
  try {
    const source = listenerBatches(new Prng(options.seed), ctx, () => tally.judged >= options.requests, SOURCES);
    report = await runFuzz({
      port: ctx.port,
      concurrency: options.concurrency ?? 48,
      next: () => {
        const batch = source.next();
        if (batch?.pieces !== undefined) slow++;
        return batch;
      },
      // Only a request handed to validate gets this page (validate refused it); every other one is refused before.
      classify: (_c, response) => (response.body.includes('Sign-in not accepted') ? 'accepted' : 'refused'),
      onOutcome: (outcome) => tallyOutcome(tally, outcome),
      deadlineMs: 10_000,
    });
    for (const url of calls) {
      const ids = url.searchParams.getAll('fuzzid');
      const fuzzCase = ids.length === 1 ? source.cases.get(Number(ids[0])) : undefined;
      if (fuzzCase === undefined) {
        unattributed++;
        if (examples.length < 4) examples.push(`unattributed validate call ${url.pathname}`);
      } else if (fuzzCase.verdict === 'refuse') {
        reachedButShouldRefuse++;
        if (examples.length < 4) examples.push(describe(fuzzCase, 'reached validate'));
      }
    }
    // Still waiting for the browser: the one valid callback completes the flow and frees the port.
    const status = await new Promise<number>((resolve) => {
      const req = httpRequest(
        { host: '127.0.0.1', port: ctx.port, path: `${ctx.path}?state=${finalValue}&code=x`, timeout: 5_000 },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', () => resolve(0));
      req.on('timeout', () => req.destroy());
      req.end();
    });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      listener.result,
      new Promise((r) => {
        timer = setTimeout(() => r('timeout'), 5_000);
      }),
    ]).catch(() => 'rejected');
    clearTimeout(timer);
    servesAfter = status === 200 && outcome === 'signed-in';
  } finally {
    await listener.cancel();
  }
  const leakedHandles = await settleHandles(baseline);
  return figures(
    'redirect-listener',
    options.seed,
    tally,
    report,
    { reachedButShouldRefuse, unattributed, servesAfter, leakedHandles, slowConnections: slow },
    examples,
  );
}
