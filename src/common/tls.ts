/**
 * TLS trust for outgoing HTTPS (the hub and the model host): the platform's roots plus, optionally, one
 * extra CA file (`--ca` / `COMPANION_CA`). Verification is never turned off; an extra CA adds trust, it
 * does not replace checking. Shared by both capability groups, so it imports neither.
 */
import { readFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { rootCertificates } from 'node:tls';
import { Agent, fetch as undiciFetch } from 'undici';
import { CompanionError } from '../core/errors.js';

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Splits and checks a PEM bundle: every block must parse as an X.509 certificate.
 * @throws ERR_TLS_CA when there is no certificate or one does not parse.
 */
export function parseCaBundle(pem: string): string[] {
  const blocks = typeof pem === 'string' ? (pem.match(PEM_BLOCK) ?? []) : [];
  if (blocks.length === 0) throw new CompanionError('ERR_TLS_CA', 'the CA file holds no PEM certificate');
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch {
      throw new CompanionError('ERR_TLS_CA', 'the CA file holds a certificate that does not parse');
    }
  }
  return blocks;
}

/** Reads and checks an extra CA file. @throws ERR_TLS_CA */
export async function readCaFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new CompanionError('ERR_TLS_CA', 'the CA file could not be read');
  }
  return parseCaBundle(text);
}

/** The CA list for a TLS connection: the platform roots plus the extra certificates. */
export function trustedCas(extra: readonly string[] = []): string[] {
  return [...rootCertificates, ...extra];
}

export interface TlsAgentOptions {
  /** Extra trusted CA certificates (PEM blocks), added to the platform roots. */
  readonly extraCas?: readonly string[];
  readonly connectTimeoutMs?: number;
  readonly headersTimeoutMs?: number;
  /** Longest silence between body chunks before the request fails (a stall). */
  readonly bodyTimeoutMs?: number;
}

/** An undici Agent that verifies every certificate against {@link trustedCas}. */
export function createTlsAgent(options: TlsAgentOptions = {}): Agent {
  return new Agent({
    connect: {
      ca: trustedCas(options.extraCas ?? []),
      rejectUnauthorized: true,
      timeout: options.connectTimeoutMs ?? 10_000,
    },
    headersTimeout: options.headersTimeoutMs ?? 30_000,
    bodyTimeout: options.bodyTimeoutMs ?? 30_000,
  });
}

/** A fetch-compatible function over `agent` (for oauth4webapi's customFetch). */
export function fetchWith(agent: Agent): typeof globalThis.fetch {
  const bound = (input: Parameters<typeof undiciFetch>[0], init?: Parameters<typeof undiciFetch>[1]) =>
    undiciFetch(input, { ...init, dispatcher: agent });
  return bound as unknown as typeof globalThis.fetch;
}

const TLS_ERROR_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'EPROTO',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/** True when `error` (or its cause chain) is a certificate or TLS handshake failure. */
export function isTlsError(error: unknown): boolean {
  for (
    let e = error, depth = 0;
    e !== null && typeof e === 'object' && depth < 5;
    e = (e as { cause?: unknown }).cause, depth++
  ) {
    const code = (e as { code?: unknown }).code;
    if (
      typeof code === 'string' &&
      (TLS_ERROR_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_'))
    )
      return true;
  }
  return false;
}
