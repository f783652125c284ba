/**
 * The download adapter (D5.5): an HTTPS-only streaming byte pump. It sends no Authorization or Cookie
 * header, follows redirects only to https and only a bounded number of times, fails a stalled stream,
 * and asks for a `Range` when resuming. It decides nothing about integrity: the orchestrator owns the
 * accumulator, the temp file and the promote.
 */
import { type Dispatcher, errors as undiciErrors } from 'undici';
import { CompanionError, assertInteger } from '../core/errors.js';
import { isTlsError } from '../common/tls.js';

/** What the model host said before the first byte. */
export interface DownloadStart {
  /** 200 (whole file) or 206 (the requested range). */
  readonly status: 200 | 206;
  /** True when a range was asked for and the host answered 206 from that offset. */
  readonly rangeHonoured: boolean;
  /** First byte's offset in the file (0 when the host ignored the range). */
  readonly offset: number;
  /** Total file size when the host said (Content-Length on 200, the Content-Range total on 206). */
  readonly totalSize: number | null;
  readonly etag: string | null;
}

export interface DownloadOptions {
  /** An undici dispatcher whose TLS trusts the right CAs (see `createTlsAgent`). */
  readonly dispatcher: Dispatcher;
  /** Receives each chunk in order; a returned promise is awaited (backpressure). */
  readonly onChunk: (chunk: Buffer) => void | Promise<void>;
  /** Called once the response head is known, before any chunk. */
  readonly onStart?: (start: DownloadStart) => void | Promise<void>;
  readonly signal?: AbortSignal;
  /** Resume from this byte offset with `Range: bytes=offset-`. */
  readonly offset?: number;
  /**
   * Sent as `If-Range` with a resume, so a changed file comes back whole (200). Only a strong ETag is
   * sent (RFC 9110 §13.1.5 forbids a weak one there); a weak one is dropped.
   */
  readonly ifRange?: string;
  /** Redirects followed at most (default 5). */
  readonly maxRedirects?: number;
}

export interface DownloadResult extends DownloadStart {
  /** Bytes handed to onChunk. */
  readonly bytes: number;
}

const USER_AGENT = 'companion/0.1 (model download)';

function parseContentRange(value: string | undefined): { start: number; total: number | null } | null {
  const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value ?? '');
  if (!match) return null;
  return { start: Number(match[1]), total: match[3] === '*' ? null : Number(match[3]) };
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** A strong entity tag: `"…"` without `W/`, visible ASCII only (RFC 9110 §8.8.3). */
export function isStrongEtag(value: string): boolean {
  return /^"[\x21\x23-\x7e\x80-\xff]*"$/.test(value) && value.length <= 256;
}

function assertHttps(url: URL): void {
  if (url.protocol !== 'https:') throw new CompanionError('ERR_DOWNLOAD_NOT_HTTPS');
  if (url.username !== '' || url.password !== '')
    throw new CompanionError('ERR_DOWNLOAD_NOT_HTTPS', 'the download URL must not carry credentials');
}

function mapError(error: unknown, signal: AbortSignal | undefined): CompanionError {
  if (error instanceof CompanionError) return error;
  if (signal?.aborted) return new CompanionError('ERR_DOWNLOAD_ABORTED');
  if (error instanceof undiciErrors.BodyTimeoutError || error instanceof undiciErrors.HeadersTimeoutError) {
    return new CompanionError('ERR_DOWNLOAD_STALLED');
  }
  if (isTlsError(error)) return new CompanionError('ERR_DOWNLOAD_TLS');
  const code = (error as { code?: unknown } | null)?.code;
  return new CompanionError(
    'ERR_DOWNLOAD_NETWORK',
    undefined,
    typeof code === 'string' ? { detail: { cause: code } } : {},
  );
}

/** What one request ended with: a redirect to follow, or a body that was delivered whole. */
type Exchange =
  | { readonly kind: 'redirect'; readonly status: number; readonly location: string | undefined }
  | { readonly kind: 'done'; readonly start: DownloadStart; readonly bytes: number };

/**
 * One GET through `dispatcher.dispatch` with a handler: body chunks reach `onChunk` straight from the
 * HTTP parser (no stream, no promise per chunk: about 10% less CPU per GiB than `request()` here). When
 * a callback returns a promise, reading pauses until it settles; chunks that still arrive are queued in
 * order. A redirect or an error status ends the exchange without reading its body.
 */
function exchange(
  target: URL,
  headers: Record<string, string>,
  offset: number,
  options: DownloadOptions,
): Promise<Exchange> {
  return new Promise<Exchange>((resolve, reject) => {
    if (options.signal?.aborted === true) {
      reject(new CompanionError('ERR_DOWNLOAD_ABORTED'));
      return;
    }
    const handler = new ExchangeHandler(offset, options, resolve, reject);
    try {
      options.dispatcher.dispatch(
        { origin: target.origin, path: `${target.pathname}${target.search}`, method: 'GET', headers },
        handler,
      );
    } catch (error) {
      handler.fail(mapError(error, options.signal));
    }
  });
}

/**
 * The head of a 200 or 206 answer, or the error for any other status (a 206 only when a range was asked
 * for, from exactly that offset).
 */
function responseStart(
  statusCode: number,
  head: Record<string, string | string[] | undefined>,
  offset: number,
): DownloadStart | CompanionError {
  const ranged = offset > 0 && statusCode === 206;
  if (statusCode !== 200 && !ranged)
    return new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', `the model host answered ${statusCode}`, {
      detail: { status: statusCode },
    });
  const etag = header(head, 'etag') ?? null;
  if (ranged) {
    const range = parseContentRange(header(head, 'content-range'));
    if (range === null || range.start !== offset)
      return new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', 'the model host answered a range that was not asked for', {
        detail: { status: statusCode },
      });
    return { status: 206, rangeHonoured: true, offset, totalSize: range.total, etag };
  }
  const length = header(head, 'content-length');
  const total = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
  return { status: 200, rangeHonoured: false, offset: 0, totalSize: total, etag };
}

/**
 * The dispatch handler of one {@link exchange}: settles its promise once, with a redirect, the delivered
 * body, an error status, a transport error, or the first error a callback threw.
 */
class ExchangeHandler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private settled = false;
  /** Set when a callback failed: that error is the outcome, whatever the transport reports after it. */
  private fromCallback: { readonly error: unknown } | null = null;
  private start: DownloadStart | null = null;
  private bytes = 0;
  /** A callback's promise is pending: reading is paused and chunks queue. */
  private busy = false;
  private ended = false;
  private readonly queue: Buffer[] = [];
  private readonly offset: number;
  private readonly options: DownloadOptions;
  private readonly resolve: (outcome: Exchange) => void;
  private readonly reject: (error: unknown) => void;

  constructor(
    offset: number,
    options: DownloadOptions,
    resolve: (outcome: Exchange) => void,
    reject: (error: unknown) => void,
  ) {
    this.offset = offset;
    this.options = options;
    this.resolve = resolve;
    this.reject = reject;
    options.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Rejects with `error` (unless settled already). */
  fail(error: unknown): void {
    this.finish(() => this.reject(error));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.options.signal?.aborted === true) this.abort();
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: unknown): void {
    if (statusCode < 200) return;
    const head = headers as Record<string, string | string[] | undefined>;
    if (statusCode >= 300 && statusCode < 400 && statusCode !== 304) {
      this.finish(() => this.resolve({ kind: 'redirect', status: statusCode, location: header(head, 'location') }));
      this.abort();
      return;
    }
    const start = responseStart(statusCode, head, this.offset);
    if (start instanceof CompanionError) {
      this.fail(start);
      this.abort();
      return;
    }
    this.start = start;
    const { onStart } = this.options;
    if (onStart !== undefined) this.run(() => onStart(start));
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.settled) return;
    this.bytes += chunk.length;
    const { onChunk } = this.options;
    if (this.busy) this.queue.push(chunk);
    else this.run(() => onChunk(chunk));
  }

  onResponseEnd(): void {
    this.ended = true;
    if (!this.busy) this.done();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.fromCallback !== null) return;
    this.fail(mapError(error, this.options.signal));
  }

  private finish(settle: () => void): void {
    if (this.settled) return;
    this.settled = true;
    this.options.signal?.removeEventListener('abort', this.onAbort);
    settle();
  }

  private abort(): void {
    this.controller?.abort(new undiciErrors.RequestAbortedError());
  }

  private readonly onAbort = (): void => this.abort();

  private done(): void {
    this.finish(() => this.resolve({ kind: 'done', start: this.start!, bytes: this.bytes }));
  }

  /** A callback failed: that error is the outcome, and the exchange stops. */
  private readonly stop = (error: unknown): void => {
    this.fromCallback ??= { error };
    this.fail(error);
    this.abort();
  };

  /** Runs a callback; a promise pauses reading until it settles, then the queue drains in order. */
  private run(call: () => void | Promise<void>): void {
    let pending: void | Promise<void>;
    try {
      pending = call();
    } catch (error) {
      this.stop(error);
      return;
    }
    if (pending === undefined) return;
    this.busy = true;
    this.controller?.pause();
    pending.then(this.resume, this.stop);
  }

  /** A callback's promise settled: deliver what queued meanwhile, then read on (or finish). */
  private readonly resume = (): void => {
    this.busy = false;
    const { onChunk } = this.options;
    while (!this.busy && !this.settled && this.queue.length > 0) {
      const chunk = this.queue.shift()!;
      this.run(() => onChunk(chunk));
    }
    if (this.busy || this.settled) return;
    if (this.ended) this.done();
    else this.controller?.resume();
  };
}

/**
 * Streams `url` into `onChunk`. Resolves when the body ended and every callback settled; rejects with a
 * coded error: ERR_DOWNLOAD_NOT_HTTPS, ERR_DOWNLOAD_TOO_MANY_REDIRECTS, ERR_DOWNLOAD_HTTP_STATUS,
 * ERR_DOWNLOAD_STALLED, ERR_DOWNLOAD_TLS, ERR_DOWNLOAD_NETWORK, ERR_DOWNLOAD_ABORTED (or whatever
 * onStart/onChunk threw, unchanged); TypeError ERR_INVALID_ARG_* for a bad offset or maxRedirects.
 */
export async function download(url: string | URL, options: DownloadOptions): Promise<DownloadResult> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new CompanionError('ERR_DOWNLOAD_NOT_HTTPS', 'the download URL is not a URL');
  }
  const offset = options.offset ?? 0;
  assertInteger(offset, 'offset', 0);
  const maxRedirects = options.maxRedirects ?? 5;
  assertInteger(maxRedirects, 'maxRedirects', 0, 20);

  for (let hop = 0; ; hop++) {
    assertHttps(target);
    // Only these headers ever leave: no Authorization, no Cookie (the model host is not trusted).
    const headers: Record<string, string> = { 'user-agent': USER_AGENT, 'accept-encoding': 'identity', accept: '*/*' };
    if (offset > 0) {
      headers.range = `bytes=${offset}-`;
      if (options.ifRange !== undefined && isStrongEtag(options.ifRange)) headers['if-range'] = options.ifRange;
    }
    const outcome = await exchange(target, headers, offset, options);
    if (outcome.kind === 'done') return { ...outcome.start, bytes: outcome.bytes };
    const { status, location } = outcome;
    if (location === undefined)
      throw new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', `redirect ${status} without a Location`, {
        detail: { status },
      });
    if (hop >= maxRedirects) throw new CompanionError('ERR_DOWNLOAD_TOO_MANY_REDIRECTS');
    try {
      target = new URL(location, target);
    } catch {
      // The library's TypeError quotes the input; say only what happened.
      throw new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', `redirect ${status} to something that is not a URL`, {
        detail: { status },
      });
    }
  }
}
