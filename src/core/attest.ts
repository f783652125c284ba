/**
 * Front-door attestation (P-k, issue 16 item 3): before a local client sends the loopback token or a
 * prompt to the URL in the discovery file, it makes the server prove that it holds the token, without the
 * token ever leaving the client. The client sends a fresh random nonce; the front door answers
 *
 *     mac = base64url(HMAC-SHA256(key = loopback token,
 *                                 "companion-attest-v1\n" + Host (lower-case) + "\n" + nonce))
 *
 * and the client recomputes it and compares in constant time. The `Host` the client dialled is inside the
 * MAC: a squatter on port P that relays the challenge to the real front door on port Q gets a MAC over
 * `127.0.0.1:Q`, which a client that dialled P refuses (and the real door will not MAC `127.0.0.1:P`,
 * which is not on its Host allow-list). See docs/front-door.md, "Attestation".
 *
 * Pure: node:crypto only (HMAC, random bytes, constant-time compare), no I/O.
 */
import { Buffer } from 'node:buffer';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { MAX_TOKEN_LENGTH, MIN_TOKEN_LENGTH, type GuardRoute } from './guard.js';
import { Secret } from './secret.js';
import { CodedTypeError } from './errors.js';

/** Domain separation: the first line of every attested message (a new format gets a new version). */
export const ATTEST_CONTEXT = 'companion-attest-v1';
/** The one front-door route served without a bearer token (and only to a request without Authorization). */
export const ATTEST_ROUTE: GuardRoute = Object.freeze({ method: 'GET', path: '/companion/attest' });
/** The request header that carries the client's nonce (lower-case, as Node reports header names). */
export const ATTEST_NONCE_HEADER = 'companion-nonce';
/** Random bytes in a nonce: 32 (256 bits), so a nonce never repeats and a MAC is never replayable. */
export const ATTEST_NONCE_BYTES = 32;

// 32 bytes in base64url without padding are exactly 43 characters.
const NONCE_SHAPE = /^[A-Za-z0-9_-]{43}$/;
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
// A Host value as the guard accepts it: visible ASCII, no separators that could forge another line.
const HOST_SHAPE = /^[\x21-\x7e]{1,262}$/;

/** The front door's attestation capability: the MAC of a (Host, nonce) challenge. */
export type Attestor = (host: string, nonce: string) => string;

function invalidArg(code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE', message: string): TypeError {
  return new CodedTypeError(code, message);
}

function tokenBytes(token: string | Secret): Buffer {
  const value = token instanceof Secret ? token.reveal() : token;
  if (typeof value !== 'string') throw invalidArg('ERR_INVALID_ARG_TYPE', 'the loopback token must be a string');
  if (value.length < MIN_TOKEN_LENGTH || value.length > MAX_TOKEN_LENGTH || !B64TOKEN.test(value)) {
    throw invalidArg(
      'ERR_INVALID_ARG_VALUE',
      `the loopback token must be a bearer token (b64token syntax, ${MIN_TOKEN_LENGTH}-${MAX_TOKEN_LENGTH} characters)`,
    );
  }
  return Buffer.from(value, 'utf8');
}

/**
 * True for a well-formed nonce: the canonical unpadded base64url form of exactly
 * {@link ATTEST_NONCE_BYTES} bytes (43 characters; the last one encodes no stray bits).
 */
export function isAttestNonce(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    NONCE_SHAPE.test(value) &&
    Buffer.from(value, 'base64url').toString('base64url') === value
  );
}

/** A fresh nonce for one attestation: 32 random bytes, base64url. */
export function createAttestNonce(): string {
  return randomBytes(ATTEST_NONCE_BYTES).toString('base64url');
}

/**
 * The nonce of a request, read from Node's `req.rawHeaders`: exactly one `Companion-Nonce` header (any
 * case) holding a well-formed nonce, else null (missing, repeated or malformed: the door answers 400).
 */
export function readAttestNonce(rawHeaders: readonly string[]): string | null {
  if (!Array.isArray(rawHeaders)) return null;
  let found: string | null = null;
  let count = 0;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    if (
      typeof name === 'string' &&
      name.length === ATTEST_NONCE_HEADER.length &&
      name.toLowerCase() === ATTEST_NONCE_HEADER
    ) {
      count++;
      const value = rawHeaders[i + 1];
      found = typeof value === 'string' ? value : null;
    }
  }
  // Why exactly one: with two, which one a proxy or a client library kept is anyone's guess.
  return count === 1 && isAttestNonce(found) ? found : null;
}

function message(host: string, nonce: string): string {
  if (typeof host !== 'string' || !HOST_SHAPE.test(host))
    throw invalidArg('ERR_INVALID_ARG_VALUE', 'host must be a Host header value');
  if (!isAttestNonce(nonce)) throw invalidArg('ERR_INVALID_ARG_VALUE', 'nonce must be 32 bytes in unpadded base64url');
  return `${ATTEST_CONTEXT}\n${host.toLowerCase()}\n${nonce}`;
}

/**
 * Builds the front door's attestation capability from the loopback token. The shell hands the result to
 * the front door next to the token verifier, so the front door never holds the token itself.
 *
 * @param token the loopback token (string or {@link Secret}), b64token syntax, 16–4096 characters.
 * @returns `attest(host, nonce)`: base64url HMAC-SHA256 over `companion-attest-v1\n<host lower-case>\n<nonce>`
 *   keyed with the token. It throws a TypeError (`ERR_INVALID_ARG_VALUE`) for a host that is not a Host
 *   value or a nonce that is not {@link isAttestNonce}; the message never holds a value.
 * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` for a bad token (never shown).
 * @see RFC 2104 (HMAC), docs/front-door.md "Attestation".
 */
export function createAttestor(token: string | Secret): Attestor {
  const key = tokenBytes(token);
  return (host: string, nonce: string): string =>
    createHmac('sha256', key).update(message(host, nonce), 'utf8').digest('base64url');
}

/**
 * The client's check of an attestation answer: true only when `mac` is exactly the MAC the loopback token
 * gives for the Host the client dialled and the nonce it sent. Compared in constant time; never throws
 * on the answer (anything but a string of the right form is false).
 *
 * @param token the loopback token the client holds.
 * @param host the Host the client sent (`new URL(url).host`), compared lower-case.
 * @param nonce the nonce the client sent.
 * @param mac the `mac` field of the server's answer, as received.
 * @throws TypeError for a bad token, host or nonce of the client's own (a programming error).
 */
export function verifyAttestation(token: string | Secret, host: string, nonce: string, mac: unknown): boolean {
  const expected = Buffer.from(createAttestor(token)(host, nonce), 'utf8');
  if (typeof mac !== 'string' || mac.length > 1024) return false;
  const candidate = Buffer.from(mac, 'utf8');
  if (candidate.length !== expected.length) {
    // Same work either way; the MAC's length is public (43 characters).
    timingSafeEqual(expected, expected);
    return false;
  }
  return timingSafeEqual(candidate, expected);
}
