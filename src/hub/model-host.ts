/**
 * The model host: a dumb HTTPS byte server on its own origin (own port, own certificate), no
 * authentication, no cookies. `GET`/`HEAD` of `/models/<file>` with a single `Range` (206/416),
 * `If-Range`, a strong `ETag`, `Content-Length` and `Accept-Ranges: bytes`. Integrity is not its job:
 * the signed manifest from the hub says what the bytes must hash to.
 *
 * For fault tests it can misbehave on purpose ({@link ModelHostMisbehaviour}), and it records the header
 * names of every request (never values, except `Range`) so a test can show no token or cookie reached it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { listenLoopbackHttps, sendPlainText } from './https-server.js';

/** Switches that make the model host misbehave on purpose (fault tests). All off by default. */
export interface ModelHostMisbehaviour {
  /**
   * Destroy the connection when the body reaches this byte offset of the file. Offsets count from the
   * start of the file; a response whose range starts at or after the offset is not cut (so a resume
   * from there succeeds).
   */
  readonly cutAfterBytes?: number;
  /** Serve the byte at this file offset XOR 0x01 (a flipped bit the digest check must catch). */
  readonly flipByteAt?: number;
  /**
   * Stop sending at this file offset and keep the connection open without writing (a stall), until the
   * client gives up or the hub closes. Same offset rule as `cutAfterBytes`.
   */
  readonly stallAfterBytes?: number;
  /**
   * Announce `Content-Length` = real length + delta. A positive delta sends the real bytes and then
   * drops the connection (the client waits for bytes that never come); a negative delta sends only the
   * announced, shorter length and ends the response normally.
   */
  readonly contentLengthDelta?: number;
  /** Answer every GET/HEAD with `302` to the same path over plain `http://`. */
  readonly redirectToHttp?: boolean;
  /** Ignore `Range` (and `If-Range`) and always send the whole file with 200. */
  readonly ignoreRange?: boolean;
  /** Serve a different ETag than the real one (the file "changed" between two requests). */
  readonly changeEtag?: boolean;
  /** Apply the switches only to this model id (default: every file). */
  readonly onlyModel?: string;
}

/** What the model host noted about one request. No header values, except the Range value. */
export interface ModelHostRequestRecord {
  readonly method: string;
  readonly path: string;
  /** Lower-case header names, in order, duplicates kept. */
  readonly headerNames: readonly string[];
  readonly hadAuthorization: boolean;
  readonly hadCookie: boolean;
  readonly range: string | null;
  /** Unix milliseconds. */
  readonly at: number;
}

/** One file the model host serves. */
export interface HostedFile {
  readonly modelId: string;
  /** Path on the model host, e.g. `/models/tiny-demo.gguf`. */
  readonly path: string;
  readonly size: number;
  readonly etag: string;
  /** The bytes `[start, endInclusive]` as a stream. */
  open(start: number, endInclusive: number): Readable;
}

export interface RunningModelHost {
  readonly url: string;
  readonly port: number;
  setMisbehaviour(misbehaviour: ModelHostMisbehaviour): void;
  requests(): readonly ModelHostRequestRecord[];
  close(): Promise<void>;
}

interface ParsedRange {
  readonly start: number;
  readonly end: number;
}

/**
 * Parses a single-range `Range` header against `size` (RFC 9110 §14.1.2). Returns the range, 'ignore'
 * (not a single bytes range: serve the whole file) or 'unsatisfiable' (416).
 */
export function parseRange(header: string, size: number): ParsedRange | 'ignore' | 'unsatisfiable' {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (match === null) return 'ignore';
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return 'ignore';
  if (first.length > 16 || last.length > 16) return 'ignore';
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (last !== '' && Number(last) < start) return 'ignore';
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

function record(req: IncomingMessage): ModelHostRequestRecord {
  const headerNames: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) headerNames.push(req.rawHeaders[i]!.toLowerCase());
  const range = req.headers.range;
  return {
    method: req.method ?? '',
    path: (req.url ?? '').split('?')[0] ?? '',
    headerNames,
    hadAuthorization: headerNames.includes('authorization') || headerNames.includes('proxy-authorization'),
    hadCookie: headerNames.includes('cookie'),
    range: typeof range === 'string' ? range : null,
    at: Date.now(),
  };
}

/** A short text answer; the model host marks every answer `nosniff`. */
function plain(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  sendPlainText(res, status, text, { 'X-Content-Type-Options': 'nosniff', ...extra });
}

/** What the request handler reads and keeps: the files, the current misbehaviour, the request log, the port. */
interface ModelHostState {
  readonly files: ReadonlyMap<string, HostedFile>;
  misbehaviour: ModelHostMisbehaviour;
  readonly log: ModelHostRequestRecord[];
  port: number;
}

/** The part of a response that is sent: `[start, end]` of the file, or the whole file (200). */
interface Selection {
  readonly start: number;
  readonly end: number;
  readonly status: 200 | 206;
}

/** How the body ends: normally, cut (FIN mid-body), stalled (left open), or dropped after a too-long announce. */
type Ending = 'end' | 'cut' | 'stall' | 'drop';

function handleModelRequest(state: ModelHostState, req: IncomingMessage, res: ServerResponse): void {
  state.log.push(record(req));
  if (state.log.length > 10_000) state.log.splice(0, state.log.length - 10_000);
  const method = req.method ?? '';
  const path = (req.url ?? '').split('?')[0] ?? '';
  const file = state.files.get(path);
  if (file === undefined) return plain(res, 404, 'not found');
  if (method !== 'GET' && method !== 'HEAD') return plain(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
  const { misbehaviour } = state;
  const bad = misbehaviour.onlyModel === undefined || misbehaviour.onlyModel === file.modelId ? misbehaviour : {};
  if (bad.redirectToHttp === true) {
    res.writeHead(302, {
      Location: `http://127.0.0.1:${state.port}${path}`,
      'Content-Length': '0',
      'Cache-Control': 'no-store',
    });
    res.end();
    return;
  }
  serveFile(req, res, file, bad);
}

/**
 * The part to send: a single satisfiable `Range` (when `If-Range` matches) gives 206, anything else the
 * whole file with 200; null for an unsatisfiable range (416).
 */
function select(req: IncomingMessage, file: HostedFile, etag: string, bad: ModelHostMisbehaviour): Selection | null {
  const whole: Selection = { start: 0, end: file.size - 1, status: 200 };
  const rangeHeader = req.headers.range;
  const ifRange = req.headers['if-range'];
  if (typeof rangeHeader !== 'string' || bad.ignoreRange === true || (ifRange !== undefined && ifRange !== etag))
    return whole;
  const range = parseRange(rangeHeader, file.size);
  if (range === 'unsatisfiable') return null;
  return range === 'ignore' ? whole : { ...range, status: 206 };
}

function serveFile(req: IncomingMessage, res: ServerResponse, file: HostedFile, bad: ModelHostMisbehaviour): void {
  const etag = bad.changeEtag === true ? `"${file.etag.slice(1, -1)}-changed"` : file.etag;
  const selection = select(req, file, etag, bad);
  if (selection === null)
    return plain(res, 416, 'range not satisfiable', {
      'Content-Range': `bytes */${file.size}`,
      ETag: etag,
      'Accept-Ranges': 'bytes',
    });
  const { start, end, status } = selection;
  const length = Math.max(0, end - start + 1);
  const announced = Math.max(0, length + (bad.contentLengthDelta ?? 0));
  const headers: Record<string, string> = {
    'Accept-Ranges': 'bytes',
    ETag: etag,
    'Content-Type': 'application/octet-stream',
    'Cache-Control': 'no-cache',
    'X-Content-Type-Options': 'nosniff',
    'Content-Length': String(announced),
  };
  if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${file.size}`;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  const { stopAt, ending } = stopPoint(start, end, announced, length, bad);
  streamBody(res, file, start, stopAt, ending, bad.flipByteAt);
}

/**
 * Where to stop, as a file offset (exclusive), and how to end: a cut or a stall inside this response, or
 * the shorter announced length. A cut or stall at or before `start` does not apply (a resume succeeds).
 */
function stopPoint(
  start: number,
  end: number,
  announced: number,
  length: number,
  bad: ModelHostMisbehaviour,
): { stopAt: number; ending: Ending } {
  let stopAt = end + 1;
  let ending: Ending = 'end';
  if (announced < length) stopAt = start + announced;
  if (announced > length) ending = 'drop';
  for (const [offset, kind] of [
    [bad.cutAfterBytes, 'cut'],
    [bad.stallAfterBytes, 'stall'],
  ] as const) {
    if (offset !== undefined && start < offset && offset < stopAt) {
      stopAt = offset;
      ending = kind;
    }
  }
  return { stopAt, ending };
}

function finish(res: ServerResponse, ending: Ending): void {
  if (ending === 'end') {
    res.end();
  } else if (ending === 'cut' || ending === 'drop') {
    // Flush what was written, then close the connection mid-body (FIN); destroy later if need be.
    const socket = res.socket;
    socket?.end();
    setTimeout(() => socket?.destroy(), 2000).unref();
  }
  // 'stall': leave the response open; the client or close() ends it.
}

/** Streams `[start, stopAt)` of the file with backpressure, flipping the byte at `flip` if asked, then ends. */
function streamBody(
  res: ServerResponse,
  file: HostedFile,
  start: number,
  stopAt: number,
  ending: Ending,
  flip: number | undefined,
): void {
  const source = file.open(start, stopAt - 1 < start ? start : stopAt - 1);
  if (stopAt <= start) {
    source.destroy();
    finish(res, ending);
    return;
  }
  let position = start;
  res.on('close', () => source.destroy());
  source.on('error', () => res.socket?.destroy());
  source.on('data', (chunk: Buffer) => {
    let out = chunk;
    if (flip !== undefined && flip >= position && flip < position + chunk.length) {
      out = Buffer.from(chunk);
      out[flip - position] = out[flip - position]! ^ 0x01;
    }
    position += chunk.length;
    if (!res.write(out)) {
      source.pause();
      res.once('drain', () => source.resume());
    }
  });
  source.on('end', () => finish(res, ending));
}

/**
 * Starts the model host on 127.0.0.1.
 * @throws ERR_BIND_FAILED when the port cannot be bound
 */
export async function startModelHost(options: {
  readonly port: number;
  readonly key: string;
  readonly cert: string;
  readonly files: readonly HostedFile[];
  readonly misbehaviour?: ModelHostMisbehaviour;
}): Promise<RunningModelHost> {
  const state: ModelHostState = {
    files: new Map(options.files.map((f) => [f.path, f])),
    misbehaviour: options.misbehaviour ?? {},
    log: [],
    port: 0,
  };
  const listener = await listenLoopbackHttps(options, options.port, 'the model host', (req, res) =>
    handleModelRequest(state, req, res),
  );
  state.port = listener.port;
  return {
    url: `https://127.0.0.1:${listener.port}`,
    port: listener.port,
    setMisbehaviour(next) {
      state.misbehaviour = { ...next };
    },
    requests: () => state.log.slice(),
    close: () => listener.close(),
  };
}
