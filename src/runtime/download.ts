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
  const { signal, onChunk } = options;
  return new Promise<Exchange>((resolve, reject) => {
    let controller: Dispatcher.DispatchController | null = null;
    let settled = false;
    let fromCallback: { readonly error: unknown } | null = null;
    let start: DownloadStart | null = null;
    let bytes = 0;
    let busy = false;
    let ended = false;
    const queue: Buffer[] = [];

    const finish = (settle: () => void): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      settle();
    };
    const abort = (): void => controller?.abort(new undiciErrors.RequestAbortedError());
    function onAbort(): void {
      abort();
    }
    /** A callback failed: that error is the outcome, and the exchange stops. */
    const stop = (error: unknown): void => {
      fromCallback ??= { error };
      finish(() => reject(error));
      abort();
    };
    const done = (): void => finish(() => resolve({ kind: 'done', start: start!, bytes }));
    /** Runs a callback; a promise pauses reading until it settles, then the queue drains in order. */
    const run = (call: () => void | Promise<void>): void => {
      let pending: void | Promise<void>;
      try {
        pending = call();
      } catch (error) {
        stop(error);
        return;
      }
      if (pending === undefined) return;
      busy = true;
      controller?.pause();
      pending.then(() => {
        busy = false;
        while (!busy && !settled && queue.length > 0) {
          const chunk = queue.shift()!;
          run(() => onChunk(chunk));
        }
        if (busy || settled) return;
        if (ended) done();
        else controller?.resume();
      }, stop);
    };

    if (signal?.aborted === true) {
      reject(new CompanionError('ERR_DOWNLOAD_ABORTED'));
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (signal?.aborted === true) abort();
      },
      onResponseStart(_c, statusCode, responseHeaders) {
        if (statusCode < 200) return;
        const head = responseHeaders as Record<string, string | string[] | undefined>;
        if (statusCode >= 300 && statusCode < 400 && statusCode !== 304) {
          finish(() => resolve({ kind: 'redirect', status: statusCode, location: header(head, 'location') }));
          abort();
          return;
        }
        const ranged = offset > 0 && statusCode === 206;
        if (statusCode !== 200 && !ranged) {
          finish(() =>
            reject(
              new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', `the model host answered ${statusCode}`, {
                detail: { status: statusCode },
              }),
            ),
          );
          abort();
          return;
        }
        if (ranged) {
          const range = parseContentRange(header(head, 'content-range'));
          if (range === null || range.start !== offset) {
            finish(() =>
              reject(
                new CompanionError(
                  'ERR_DOWNLOAD_HTTP_STATUS',
                  'the model host answered a range that was not asked for',
                  { detail: { status: statusCode } },
                ),
              ),
            );
            abort();
            return;
          }
          start = {
            status: 206,
            rangeHonoured: true,
            offset,
            totalSize: range.total,
            etag: header(head, 'etag') ?? null,
          };
        } else {
          const length = header(head, 'content-length');
          const total = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
          start = {
            status: 200,
            rangeHonoured: false,
            offset: 0,
            totalSize: total,
            etag: header(head, 'etag') ?? null,
          };
        }
        const known = start;
        if (options.onStart !== undefined) run(() => options.onStart!(known));
      },
      onResponseData(_c, chunk) {
        if (settled) return;
        bytes += chunk.length;
        if (busy) queue.push(chunk);
        else run(() => onChunk(chunk));
      },
      onResponseEnd() {
        ended = true;
        if (!busy) done();
      },
      onResponseError(_c, error) {
        if (fromCallback !== null) return;
        finish(() => reject(mapError(error, signal)));
      },
    };
    try {
      options.dispatcher.dispatch(
        { origin: target.origin, path: `${target.pathname}${target.search}`, method: 'GET', headers },
        handler,
      );
    } catch (error) {
      finish(() => reject(mapError(error, signal)));
    }
  });
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
