/**
 * Fetches the signed model manifest from the hub (the trust anchor, first-party, with the access token).
 * Verification is the manifest core's job; this adapter only brings the bytes. The model host is never
 * asked for a digest and never sees a token.
 */
import { CompanionError } from '../core/errors.js';
import { MAX_MANIFEST_BYTES } from '../core/manifest-format.js';
import type { Secret } from '../core/secret.js';
import { hubUnreachable } from './hub-errors.js';

export const MANIFEST_PATH = '/api/v1/companion/manifest';

export interface FetchManifestOptions {
  /** The hub's origin (https). */
  readonly hubUrl: string;
  readonly accessToken: Secret;
  /** A fetch that verifies TLS against the trusted CAs (see `fetchWith(createTlsAgent())`). */
  readonly fetch: typeof globalThis.fetch;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

/**
 * GETs the manifest envelope. Resolves with its raw bytes (at most `MAX_MANIFEST_BYTES`, the limit the
 * verifier applies too: reading further would only fetch what it refuses).
 * @throws ERR_CONFIG when `hubUrl` is not https, ERR_NOT_SIGNED_IN when the hub answers 401 (token expired
 * or revoked: refresh and retry once), ERR_MANIFEST_FETCH for any other failure (status in `detail`; a
 * manifest over the limit), ERR_HUB_UNREACHABLE on network errors.
 */
export async function fetchManifestBytes(options: FetchManifestOptions): Promise<Uint8Array> {
  const url = new URL(MANIFEST_PATH, options.hubUrl);
  if (url.protocol !== 'https:') throw new CompanionError('ERR_CONFIG', 'the hub URL must be https');
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 15_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  let response: Response;
  try {
    response = await options.fetch(url, {
      method: 'GET',
      headers: { authorization: `Bearer ${options.accessToken.reveal()}`, accept: 'application/json' },
      redirect: 'error',
      signal,
    });
  } catch (error) {
    // The library's error may quote request details: only its code is kept, with the hub's URL and the fix.
    throw hubUnreachable(options.hubUrl, error);
  }
  if (response.status === 401) {
    await response.body?.cancel();
    throw new CompanionError('ERR_NOT_SIGNED_IN', 'the hub did not accept the access token; sign in again');
  }
  if (response.status !== 200) {
    await response.body?.cancel();
    throw new CompanionError('ERR_MANIFEST_FETCH', `the hub answered ${response.status}`, {
      detail: { status: response.status },
    });
  }
  const declared = Number(response.headers.get('content-length') ?? '0');
  if (declared > MAX_MANIFEST_BYTES) {
    await response.body?.cancel();
    throw new CompanionError('ERR_MANIFEST_FETCH', 'the manifest is too large');
  }
  // Read with a bound: a hub that streams without end is cut off, not buffered.
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body?.getReader();
  if (reader === undefined) throw new CompanionError('ERR_MANIFEST_FETCH', 'the manifest response has no body');
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > MAX_MANIFEST_BYTES) {
        await reader.cancel();
        throw new CompanionError('ERR_MANIFEST_FETCH', 'the manifest is too large');
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof CompanionError) throw error;
    throw hubUnreachable(options.hubUrl, error);
  }
  return Buffer.concat(chunks, total);
}
