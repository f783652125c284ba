// Raw-HTTP fuzzing machinery shared by the front-door and redirect-listener fuzzers (issue 11): a seeded
// PRNG, a request model serialised to raw bytes, and a runner that sends batches of cases over real
// loopback sockets (pipelined, sometimes dribbled in small pieces), parses the responses itself and
// attributes each one to its case. Nothing here knows what the server should accept: the caller gives
// a verdict per case and a classifier per response.
import { connect, type Socket } from 'node:net';

/** sfc32: a small, fast, seedable PRNG; the same seed gives the same run. */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.next();
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.next() / 4294967296) * n);
  }

  /** An integer in [min, max]. */
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() / 4294967296 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** Picks by weight: `[[weight, value], …]`. */
  weighted<T>(table: readonly (readonly [number, T])[]): T {
    let total = 0;
    for (const [w] of table) total += w;
    let roll = (this.next() / 4294967296) * total;
    for (const [w, value] of table) {
      roll -= w;
      if (roll < 0) return value;
    }
    return table[table.length - 1]![1];
  }

  /** Random letter case of an ASCII string. */
  mixCase(text: string): string {
    let out = '';
    for (const ch of text) out += this.chance(0.5) ? ch.toUpperCase() : ch.toLowerCase();
    return out;
  }
}

/** What the reference predicate says about one case. `either`: both outcomes are acceptable (named why). */
export type Verdict = 'accept' | 'refuse' | 'either';

/**
 * One request, as a model: what was sent, field by field. `malformed` names a byte-level defect that makes
 * the message invalid HTTP/1.1 (such a message must never be accepted, whatever a parser makes of it).
 */
export interface RequestModel {
  method: string;
  target: string;
  /** `HTTP/1.1`, `HTTP/1.0`, … or '' (HTTP/0.9 form: no version). */
  version: string;
  /** Header lines as sent: name and value, the value including any whitespace padding. */
  headers: [string, string][];
  body: Buffer | null;
  /** Line terminator of the head (default CRLF). */
  eol?: string;
  malformed?: string;
  /** Why both outcomes are acceptable (never set for anything that bears on the allow-list). */
  either?: string;
  /** Raw bytes that replace the serialisation (a byte-level mutation made them). */
  raw?: Buffer;
}

/** The head and body of a model as bytes. */
export function serialise(model: RequestModel): Buffer {
  if (model.raw !== undefined) return model.raw;
  const eol = model.eol ?? '\r\n';
  let head =
    model.version === ''
      ? `${model.method} ${model.target}${eol}`
      : `${model.method} ${model.target} ${model.version}${eol}`;
  for (const [name, value] of model.headers) head += `${name}:${value}${eol}`;
  head += eol;
  const headBytes = Buffer.from(head, 'latin1');
  return model.body === null ? headBytes : Buffer.concat([headBytes, model.body]);
}

/** The trimmed values of every header named `name` (case-insensitive), in order. */
export function headerValues(model: RequestModel, name: string): string[] {
  const lower = name.toLowerCase();
  return model.headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v.replace(/^[ \t]+|[ \t]+$/g, ''));
}

export interface FuzzCase {
  readonly id: number;
  readonly bytes: Buffer;
  readonly verdict: Verdict;
  /** A label for reporting (which generator branch made it). */
  readonly kind: string;
  /** The request line starts with `HEAD ` (its response has no body). */
  readonly head: boolean;
}

export interface FuzzBatch {
  readonly cases: readonly FuzzCase[];
  /** When set, the bytes are written in this many pieces, `delayMs` apart (a slow sender). */
  readonly pieces?: number;
  readonly delayMs?: number;
  /** Source address (any 127/8 address; spreads the ephemeral ports over several addresses). */
  readonly localAddress?: string;
}

export interface ParsedResponse {
  readonly status: number;
  /** Lower-case header names to values (last one wins). */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: Buffer;
}

export type Observed = 'accepted' | 'refused';

export interface CaseOutcome {
  readonly fuzzCase: FuzzCase;
  /** 'accepted' / 'refused' from the response, 'no-response' (connection ended while it was next). */
  readonly observed: Observed | 'no-response';
  readonly status: number;
}

export interface RunReport {
  /** Cases with a definite outcome (a response, or the connection ended while they were next). */
  judged: number;
  /** Cases sent but never reached (an earlier response closed the connection). */
  unjudged: number;
  connections: number;
  /** Connections that had to be cut at the deadline. */
  hung: number;
  /** Responses that could not be parsed. */
  garbled: number;
  /** The first few garbled connections: what was sent and what came back (escaped, cut), for a failure message. */
  garbledSamples?: { kinds: string[]; sent: string; received: string }[];
  elapsedMs: number;
}

export interface RunOptions {
  readonly port: number;
  readonly host?: string;
  /** Connections in flight at once. */
  readonly concurrency: number;
  /** The next batch, or null when done. */
  readonly next: () => FuzzBatch | null;
  /** Turns a response into accepted/refused (the server-specific part). */
  readonly classify: (fuzzCase: FuzzCase, response: ParsedResponse) => Observed;
  readonly onOutcome: (outcome: CaseOutcome) => void;
  /** A connection still open after this long is cut and counted as hung (default 10 s). */
  readonly deadlineMs?: number;
  /** Told about each connection when it is gone: its batch and how long it lived. */
  readonly onBatch?: (batch: FuzzBatch, ms: number) => void;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * Incremental parser of a sequence of HTTP/1.x responses on one connection. `feed` returns the responses
 * completed so far; `end` completes a close-delimited body. 1xx interim responses are skipped.
 */
export class ResponseStream {
  #buffer: Buffer = Buffer.alloc(0);
  #pending: { status: number; headers: Map<string, string>; bodyStart: number } | null = null;
  garbled = false;

  /** `heads` says, per expected response in order, whether it answers a HEAD request (no body). */
  constructor(private readonly isHead: (index: number) => boolean) {}

  #index = 0;

  feed(chunk: Buffer): ParsedResponse[] {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const out: ParsedResponse[] = [];
    for (;;) {
      const response = this.#step(false);
      if (response === null) break;
      out.push(response);
    }
    return out;
  }

  /** The connection ended: a close-delimited body completes here. */
  end(): ParsedResponse[] {
    const response = this.#step(true);
    return response === null ? [] : [response];
  }

  #step(atEnd: boolean): ParsedResponse | null {
    if (this.garbled) return null;
    if (this.#pending === null) {
      const split = this.#buffer.indexOf(CRLFCRLF);
      if (split === -1) {
        if (atEnd && this.#buffer.length > 0) this.garbled = true;
        return null;
      }
      const lines = this.#buffer.subarray(0, split).toString('latin1').split('\r\n');
      const match = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '');
      if (match === null) {
        this.garbled = true;
        return null;
      }
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon <= 0) {
          this.garbled = true;
          return null;
        }
        headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      const status = Number(match[1]);
      this.#buffer = this.#buffer.subarray(split + 4);
      if (status >= 100 && status < 200) return this.#step(atEnd);
      this.#pending = { status, headers, bodyStart: 0 };
    }
    const { status, headers } = this.#pending;
    const done = (body: Buffer, rest: Buffer): ParsedResponse => {
      this.#pending = null;
      this.#buffer = rest;
      this.#index++;
      return { status, headers, body };
    };
    if (this.isHead(this.#index) || status === 204 || status === 304) return done(Buffer.alloc(0), this.#buffer);
    const te = headers.get('transfer-encoding');
    if (te !== undefined && /chunked/i.test(te)) {
      const chunks: Buffer[] = [];
      let offset = 0;
      for (;;) {
        const lineEnd = this.#buffer.indexOf('\r\n', offset);
        if (lineEnd === -1) {
          if (atEnd) this.garbled = true;
          return null;
        }
        const size = Number.parseInt(this.#buffer.subarray(offset, lineEnd).toString('latin1').split(';')[0]!, 16);
        if (!Number.isFinite(size) || size < 0) {
          this.garbled = true;
          return null;
        }
        if (size === 0) {
          const trailerEnd = this.#buffer.indexOf('\r\n', lineEnd + 2);
          if (trailerEnd === -1) {
            if (atEnd) this.garbled = true;
            return null;
          }
          // No trailers are ever sent: the chunk ends with an empty line.
          return done(Buffer.concat(chunks), this.#buffer.subarray(trailerEnd + 2));
        }
        if (this.#buffer.length < lineEnd + 2 + size + 2) {
          if (atEnd) this.garbled = true;
          return null;
        }
        chunks.push(this.#buffer.subarray(lineEnd + 2, lineEnd + 2 + size));
        offset = lineEnd + 2 + size + 2;
      }
    }
    const length = headers.get('content-length');
    if (length !== undefined) {
      const n = Number(length);
      if (this.#buffer.length < n) {
        if (atEnd) this.garbled = true;
        return null;
      }
      return done(this.#buffer.subarray(0, n), this.#buffer.subarray(n));
    }
    // Close-delimited.
    if (!atEnd) return null;
    return done(this.#buffer, Buffer.alloc(0));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Sends one batch on one connection and reports each case. Resolves when the connection is gone. */
function runBatch(batch: FuzzBatch, options: RunOptions, report: RunReport): Promise<void> {
  return new Promise((resolve) => {
    const cases = batch.cases;
    const parser = new ResponseStream((i) => cases[i]?.head ?? false);
    let answered = 0;
    let closeAnnounced = false;
    let finished = false;
    const opened = performance.now();
    const received: Buffer[] = [];
    const socket: Socket = connect({
      host: options.host ?? '127.0.0.1',
      port: options.port,
      ...(batch.localAddress ? { localAddress: batch.localAddress } : {}),
    });
    socket.setNoDelay(true);
    const take = (responses: ParsedResponse[]): void => {
      for (const response of responses) {
        const fuzzCase = cases[answered];
        if (fuzzCase === undefined) break;
        answered++;
        report.judged++;
        options.onOutcome({ fuzzCase, observed: options.classify(fuzzCase, response), status: response.status });
        if ((response.headers.get('connection') ?? '').toLowerCase().includes('close')) closeAnnounced = true;
      }
      if (answered === cases.length) finish();
    };
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      socket.destroy();
      if (parser.garbled) {
        report.garbled++;
        const samples = (report.garbledSamples ??= []);
        const show = (b: Buffer): string => JSON.stringify(b.subarray(0, 800).toString('latin1'));
        if (samples.length < 3)
          samples.push({
            kinds: cases.map((c) => c.kind),
            sent: show(Buffer.concat(cases.map((c) => c.bytes))),
            received: show(Buffer.concat(received)),
          });
      }
      if (answered < cases.length) {
        let first = answered;
        if (!closeAnnounced && !parser.garbled) {
          // The connection ended while this case was next: it was refused without an answer.
          report.judged++;
          options.onOutcome({ fuzzCase: cases[first]!, observed: 'no-response', status: 0 });
          first++;
        }
        report.unjudged += cases.length - first;
      }
      options.onBatch?.(batch, performance.now() - opened);
      resolve();
    };
    const deadline = setTimeout(() => {
      report.hung++;
      finish();
    }, options.deadlineMs ?? 10_000);
    socket.on('data', (chunk: Buffer) => {
      if (received.length < 64) received.push(chunk);
      take(parser.feed(chunk));
    });
    socket.on('end', () => take(parser.end()));
    socket.on('close', () => finish());
    socket.on('error', () => undefined);
    const bytes = Buffer.concat(cases.map((c) => c.bytes));
    socket.once('connect', () => {
      if (batch.pieces === undefined || batch.pieces <= 1) {
        socket.write(bytes);
        return;
      }
      void (async () => {
        const size = Math.ceil(bytes.length / batch.pieces!);
        for (let at = 0; at < bytes.length && !finished; at += size) {
          socket.write(bytes.subarray(at, at + size));
          await sleep(batch.delayMs ?? 5);
        }
      })();
    });
  });
}

/** Runs batches from `next()` with `concurrency` connections in flight until `next()` returns null. */
export async function runFuzz(options: RunOptions): Promise<RunReport> {
  const report: RunReport = { judged: 0, unjudged: 0, connections: 0, hung: 0, garbled: 0, elapsedMs: 0 };
  const started = performance.now();
  const worker = async (): Promise<void> => {
    for (;;) {
      const batch = options.next();
      if (batch === null) return;
      report.connections++;
      await runBatch(batch, options, report);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, () => worker()));
  report.elapsedMs = performance.now() - started;
  return report;
}

/** Counts of the handle types that keep the event loop alive (TCP sockets and servers, pipes). */
export function handleCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of process.getActiveResourcesInfo()) counts[name] = (counts[name] ?? 0) + 1;
  return counts;
}

/** Waits (bounded) until no more TCP/pipe handles are active than in `baseline`; returns the extras left. */
export async function settleHandles(
  baseline: Record<string, number>,
  timeoutMs = 5_000,
): Promise<Record<string, number>> {
  const kinds = ['TCPSocketWrap', 'TCPServerWrap', 'PipeWrap', 'PipeServerWrap'];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = handleCounts();
    const extra: Record<string, number> = {};
    for (const kind of kinds) {
      const more = (now[kind] ?? 0) - (baseline[kind] ?? 0);
      if (more > 0) extra[kind] = more;
    }
    if (Object.keys(extra).length === 0 || Date.now() > deadline) return extra;
    await sleep(50);
  }
}

/** Tally of one fuzz run against its reference predicate. */
export interface FuzzTally {
  judged: number;
  /** Cases the predicate refuses that the server accepted: must stay 0. */
  acceptedButShouldRefuse: number;
  /** Cases the predicate accepts that the server refused: 0 when the predicate is exact. */
  refusedButShouldAccept: number;
  accepted: number;
  refused: number;
  either: number;
  byKind: Map<string, { n: number; accepted: number }>;
  /** A few offending cases for the failure message (bytes escaped). */
  examples: string[];
}

export function newTally(): FuzzTally {
  return {
    judged: 0,
    acceptedButShouldRefuse: 0,
    refusedButShouldAccept: 0,
    accepted: 0,
    refused: 0,
    either: 0,
    byKind: new Map(),
    examples: [],
  };
}

/** Escapes bytes for a failure message: printable ASCII as is, the rest as \xNN, cut at `max`. */
export function escapeBytes(bytes: Buffer, max = 300): string {
  let out = '';
  for (const byte of bytes.subarray(0, max))
    out +=
      byte >= 0x20 && byte < 0x7f && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, '0')}`;
  return bytes.length > max ? `${out}…(${bytes.length} bytes)` : out;
}

export function tallyOutcome(tally: FuzzTally, outcome: CaseOutcome): void {
  const { fuzzCase } = outcome;
  const accepted = outcome.observed === 'accepted';
  tally.judged++;
  if (accepted) tally.accepted++;
  else tally.refused++;
  const kind = tally.byKind.get(fuzzCase.kind) ?? { n: 0, accepted: 0 };
  kind.n++;
  if (accepted) kind.accepted++;
  tally.byKind.set(fuzzCase.kind, kind);
  if (fuzzCase.verdict === 'either') {
    tally.either++;
    return;
  }
  const wrong = fuzzCase.verdict === 'refuse' ? accepted : !accepted;
  if (!wrong) return;
  if (fuzzCase.verdict === 'refuse') tally.acceptedButShouldRefuse++;
  else tally.refusedButShouldAccept++;
  if (tally.examples.length < 8)
    tally.examples.push(
      `#${fuzzCase.id} ${fuzzCase.kind} verdict=${fuzzCase.verdict} status=${outcome.status}: ${escapeBytes(fuzzCase.bytes)}`,
    );
}
