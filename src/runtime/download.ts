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

/**
 * Lets go of a response body that will not be read. Destroyed, not drained: a hostile host could send a
 * redirect or error body without end. An error listener goes on first: undici's body emits one when
 * destroyed before its end, and an unheard stream error would crash the process.
 */
function drop(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

function assertHttps(url: URL): void {
  if (url.protocol !== 'https:') throw new CompanionError('ERR_DOWNLOAD_NOT_HTTPS');
  if (url.username !== '' || url.password !== '') throw new CompanionError('ERR_DOWNLOAD_NOT_HTTPS', 'the download URL must not carry credentials');
}

function mapError(error: unknown, signal: AbortSignal | undefined): CompanionError {
  if (error instanceof CompanionError) return error;
  if (signal?.aborted) return new CompanionError('ERR_DOWNLOAD_ABORTED');
  if (error instanceof undiciErrors.BodyTimeoutError || error instanceof undiciErrors.HeadersTimeoutError) {
    return new CompanionError('ERR_DOWNLOAD_STALLED');
  }
  if (isTlsError(error)) return new CompanionError('ERR_DOWNLOAD_TLS');
  const code = (error as { code?: unknown } | null)?.code;
  return new CompanionError('ERR_DOWNLOAD_NETWORK', undefined, typeof code === 'string' ? { detail: { cause: code } } : {});
}

/**
 * Streams `url` into `onChunk`. Resolves when the body ended; rejects with a coded error:
 * ERR_DOWNLOAD_NOT_HTTPS, ERR_DOWNLOAD_TOO_MANY_REDIRECTS, ERR_DOWNLOAD_HTTP_STATUS, ERR_DOWNLOAD_STALLED,
 * ERR_DOWNLOAD_TLS, ERR_DOWNLOAD_NETWORK, ERR_DOWNLOAD_ABORTED (or whatever onStart/onChunk threw);
 * TypeError ERR_INVALID_ARG_* for a bad offset or maxRedirects.
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
  const signal = options.signal;

  for (let hop = 0; ; hop++) {
    assertHttps(target);
    // Only these headers ever leave: no Authorization, no Cookie (the model host is not trusted).
    const headers: Record<string, string> = { 'user-agent': USER_AGENT, 'accept-encoding': 'identity', accept: '*/*' };
    if (offset > 0) {
      headers.range = `bytes=${offset}-`;
      if (options.ifRange !== undefined && isStrongEtag(options.ifRange)) headers['if-range'] = options.ifRange;
    }
    let response: Dispatcher.ResponseData;
    try {
      response = await options.dispatcher.request({
        origin: target.origin,
        path: `${target.pathname}${target.search}`,
        method: 'GET',
        headers,
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      throw mapError(error, signal);
    }
    const { statusCode, body } = response;
    if (statusCode >= 300 && statusCode < 400 && statusCode !== 304) {
      drop(body);
      const location = header(response.headers, 'location');
      if (location === undefined) throw new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', `redirect ${statusCode} without a Location`, { detail: { status: statusCode } });
      if (hop >= maxRedirects) throw new CompanionError('ERR_DOWNLOAD_TOO_MANY_REDIRECTS');
      try {
        target = new URL(location, target);
      } catch {
        // The library's TypeError quotes the input; say only what happened.
        throw new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', `redirect ${statusCode} to something that is not a URL`, { detail: { status: statusCode } });
      }
      continue;
    }
    const ranged = offset > 0 && statusCode === 206;
    if (statusCode !== 200 && !ranged) {
      drop(body);
      throw new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', `the model host answered ${statusCode}`, { detail: { status: statusCode } });
    }
    let start: DownloadStart;
    if (ranged) {
      const range = parseContentRange(header(response.headers, 'content-range'));
      if (range === null || range.start !== offset) {
        drop(body);
        throw new CompanionError('ERR_DOWNLOAD_HTTP_STATUS', 'the model host answered a range that was not asked for', { detail: { status: statusCode } });
      }
      start = { status: 206, rangeHonoured: true, offset, totalSize: range.total, etag: header(response.headers, 'etag') ?? null };
    } else {
      const length = header(response.headers, 'content-length');
      const total = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
      start = { status: 200, rangeHonoured: false, offset: 0, totalSize: total, etag: header(response.headers, 'etag') ?? null };
    }
    let bytes = 0;
    // What the caller's callbacks throw passes through unchanged; only the transport's errors are mapped.
    let fromCallback: { readonly error: unknown } | null = null;
    const { onChunk } = options;
    try {
      try {
        await options.onStart?.(start);
      } catch (error) {
        fromCallback = { error };
        throw error;
      }
      for await (const chunk of body as AsyncIterable<Buffer>) {
        bytes += chunk.length;
        try {
          // Awaited only when the consumer asks to wait (a promise): no extra tick per chunk otherwise.
          const pending = onChunk(chunk);
          if (pending !== undefined) await pending;
        } catch (error) {
          fromCallback = { error };
          throw error;
        }
      }
    } catch (error) {
      drop(body);
      if (fromCallback !== null) throw (fromCallback as { readonly error: unknown }).error;
      throw mapError(error, signal);
    }
    return { ...start, bytes };
  }
}
