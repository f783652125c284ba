// Shared fixtures for the loopback guard tests (unit, property, security).
import {
  allowedHostsFor,
  createTokenVerifier,
  type GuardPolicy,
  type GuardRequest,
  type GuardRoute,
} from '../../src/core/guard.js';

export const PORT = 48123;
export const TOKEN = 'tok_0123456789abcdefGHIJKLMNOPqrstuv-_';
export const ROUTES: readonly GuardRoute[] = Object.freeze([
  { method: 'POST', path: '/v1/chat/completions' },
  { method: 'POST', path: '/v1/completions' },
  { method: 'GET', path: '/v1/models' },
  { method: 'GET', path: '/health' },
  { method: 'GET', path: '/v1/models/', segment: /^[A-Za-z0-9._:-]{1,128}$/ },
]);

/** The policy of a front door bound to {@link PORT} with {@link TOKEN}; `calls` counts verifier calls. */
export function makePolicy(extra: Partial<GuardPolicy> = {}): GuardPolicy & { calls: { count: number } } {
  const verify = createTokenVerifier(TOKEN);
  const calls = { count: 0 };
  return {
    allowedHosts: allowedHostsFor(PORT),
    verifyToken: (candidate: string) => {
      calls.count++;
      return verify(candidate);
    },
    routes: ROUTES,
    calls,
    ...extra,
  };
}

/** A request that the policy accepts; `headers` replaces the header list when given. */
export function goodRequest(overrides: Partial<GuardRequest> = {}): GuardRequest {
  return {
    peerAddress: '127.0.0.1',
    method: 'POST',
    target: '/v1/chat/completions',
    rawHeaders: ['Host', `127.0.0.1:${PORT}`, 'Authorization', `Bearer ${TOKEN}`, 'Content-Type', 'application/json'],
    httpVersion: '1.1',
    ...overrides,
  };
}

/** The good request's headers with `name` (case-insensitively) replaced by the given values (none = removed). */
export function withHeader(name: string, ...values: string[]): string[] {
  const base = goodRequest().rawHeaders;
  const out: string[] = [];
  for (let i = 0; i < base.length; i += 2) {
    if (base[i]!.toLowerCase() !== name.toLowerCase()) out.push(base[i]!, base[i + 1]!);
  }
  for (const value of values) out.push(name, value);
  return out;
}
