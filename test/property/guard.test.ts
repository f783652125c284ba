// Property tests of the loopback guard (undici's fuzzing rule): every generated request is either
// exactly on the allow-list and accepted, or refused with one of the guard's codes and its status; the
// guard never throws. The oracle below is an independent, deliberately plain restatement of the rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIPv4 } from 'node:net';
import fc from 'fast-check';
import { ATTEST_ROUTE } from '../../src/core/attest.js';
import {
  verifyLoopbackRequest,
  createTokenVerifier,
  GUARD_REFUSALS,
  MAX_TARGET_LENGTH,
  MIN_TOKEN_LENGTH,
  type GuardRequest,
} from '../../src/core/guard.js';
import { PORT, ROUTES, TOKEN, makePolicy } from '../helpers/cores-guard.js';

const ALLOWED_HOSTS = [`127.0.0.1:${PORT}`, `localhost:${PORT}`, `[::1]:${PORT}`];

/** `attest`: the policy also names the attestation route, served without a token to a request with no Authorization. */
function oracleAccepts(r: GuardRequest, attest = false): boolean {
  const peer = r.peerAddress;
  const v4 = peer.toLowerCase().startsWith('::ffff:') ? peer.slice(7) : peer;
  const loopback =
    peer === '::1' || (isIPv4(v4) && v4.split('.')[0] === '127' && v4.split('.').every((o) => String(Number(o)) === o));
  if (!loopback) return false;
  if (!/^[A-Z]+$/.test(r.method) || r.method === 'OPTIONS') return false;
  if (r.httpVersion !== undefined && r.httpVersion !== '1.1' && r.httpVersion !== '1.0') return false;
  const named = (name: string): string[] => {
    const out: string[] = [];
    for (let i = 0; i < r.rawHeaders.length; i += 2)
      if (r.rawHeaders[i]!.toLowerCase() === name) out.push(r.rawHeaders[i + 1]!);
    return out;
  };
  for (let i = 0; i < r.rawHeaders.length; i += 2) {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(r.rawHeaders[i]!) || /[\r\n\0]/.test(r.rawHeaders[i + 1]!)) return false;
  }
  const hosts = named('host');
  if (hosts.length !== 1 || !ALLOWED_HOSTS.includes(hosts[0]!.toLowerCase())) return false;
  const host = hosts[0]!.toLowerCase();
  if (r.target.length > MAX_TARGET_LENGTH) return false;
  const q = r.target.indexOf('?');
  const path = q === -1 ? r.target : r.target.slice(0, q);
  const query = q === -1 ? '' : r.target.slice(q + 1);
  if (!/^[\x21-\x7e]*$/.test(query) || query.includes('#') || query.includes('\\')) return false;
  const served = [...ROUTES, ...(attest ? [ATTEST_ROUTE] : [])];
  // A prefix route serves its path plus one model id: [A-Za-z0-9._:-]{1,128}, never a dot segment.
  const id = path.startsWith('/v1/models/') ? path.slice('/v1/models/'.length) : '';
  const idServed = /^[A-Za-z0-9._:-]{1,128}$/.test(id) && id !== '.' && id !== '..';
  if (
    !served.some(
      (route) =>
        route.method === r.method &&
        (route.segment === undefined ? route.path === path : path.startsWith(route.path) && idServed),
    )
  )
    return false;
  if (named('origin').length !== 0) return false;
  const referers = named('referer');
  if (referers.length > 1) return false;
  if (referers.length === 1) {
    const ref = referers[0]!.toLowerCase();
    const self = `http://${host}`;
    if (!(ref === self || ['/', '?', '#'].some((c) => ref.startsWith(self + c)))) return false;
  }
  const sites = named('sec-fetch-site');
  if (sites.length > 1 || (sites.length === 1 && sites[0] !== 'same-origin' && sites[0] !== 'none')) return false;
  const auths = named('authorization');
  if (attest && auths.length === 0 && path === ATTEST_ROUTE.path && r.method === ATTEST_ROUTE.method) return true;
  if (auths.length !== 1) return false;
  const match = /^bearer +(.*)$/i.exec(auths[0]!);
  return match?.[1] === TOKEN;
}

const text = fc.string({ unit: 'binary', maxLength: 24 });
const peerArb = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom('127.0.0.1', '::1', '::ffff:127.0.0.1', '127.8.9.10', '::FFFF:127.0.0.2') },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '10.0.0.1',
      '0.0.0.0',
      '127.0.0.01',
      '127.1',
      '::2',
      '::ffff:10.1.1.1',
      '0:0:0:0:0:0:0:1',
      '',
    ),
  },
  { weight: 1, arbitrary: fc.ipV4() },
  { weight: 1, arbitrary: fc.ipV6() },
  { weight: 1, arbitrary: text },
);
const methodArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('GET', 'POST') },
  { weight: 2, arbitrary: fc.constantFrom('OPTIONS', 'HEAD', 'PUT', 'DELETE', 'CONNECT', 'TRACE', 'post') },
  { weight: 1, arbitrary: text },
);
const modelIdArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('tiny', 'a.b:c-1_2', 'x'.repeat(128), 'TINY', '...') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '',
      '.',
      '..',
      'a/b',
      '%2e%2e',
      '%2E.',
      'a%41',
      'x'.repeat(129),
      'a b',
      'a;b',
      'a/',
      '/a',
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
);
const pathArb = fc.oneof(
  { weight: ROUTES.length, arbitrary: fc.constantFrom(...ROUTES.map((r) => r.path)) },
  { weight: 2, arbitrary: modelIdArb.map((id) => `/v1/models/${id}`) },
);
const targetArb = fc.oneof(
  { weight: 6, arbitrary: pathArb },
  { weight: 2, arbitrary: fc.tuple(pathArb, fc.string({ maxLength: 16 })).map(([p, q]) => `${p}?${q}`) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        pathArb,
        fc.constantFrom('/', '/.', '/..', '%2e', '%2F', '//', '\\', '#', '%00', '%6d', '%20', ';x', '\r\n'),
      )
      .map(([p, s]) => `${p}${s}`),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '*',
      '//evil.example/v1/models',
      `http://127.0.0.1:${PORT}/v1/models`,
      'http://evil.example/health',
      'v1/models',
      '',
      '/',
    ),
  },
  { weight: 1, arbitrary: fc.webPath() },
  { weight: 1, arbitrary: fc.webUrl() },
  { weight: 1, arbitrary: text },
);
const hostValueArb = fc.oneof(
  { weight: 24, arbitrary: fc.constantFrom(...ALLOWED_HOSTS) },
  { weight: 2, arbitrary: fc.constantFrom(...ALLOWED_HOSTS).chain((h) => fc.mixedCase(fc.constant(h))) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      `127.0.0.1.:${PORT}`,
      `localhost.:${PORT}`,
      '127.0.0.1',
      `127.0.0.1:${PORT + 1}`,
      `2130706433:${PORT}`,
      `0x7f.1:${PORT}`,
      `127.1:${PORT}`,
      `127.0.0.1.nip.io:${PORT}`,
      `evil.example:${PORT}`,
      `u@localhost:${PORT}`,
      `[::ffff:127.0.0.1]:${PORT}`,
      '',
    ),
  },
  { weight: 1, arbitrary: fc.domain().map((d) => `${d}:${PORT}`) },
  { weight: 1, arbitrary: text },
);
const authValueArb = fc.oneof(
  { weight: 24, arbitrary: fc.constantFrom(`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER  ${TOKEN}`) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(1)}`,
      `Bearer ${TOKEN} `,
      `Basic ${TOKEN}`,
      'Bearer',
      'Bearer ',
      TOKEN,
    ),
  },
  { weight: 1, arbitrary: text.map((t) => `Bearer ${t}`) },
  { weight: 1, arbitrary: text },
);
const originValueArb = fc.oneof(
  fc.constantFrom('null', 'http://evil.example', `http://127.0.0.1:${PORT}`),
  fc.webUrl(),
  text,
);
const refererValueArb = fc.oneof(
  fc
    .constantFrom(...ALLOWED_HOSTS)
    .chain((h) =>
      fc.constantFrom(
        `http://${h}`,
        `http://${h}/`,
        `http://${h}/a?b`,
        `http://${h}@evil.example/`,
        `https://${h}/`,
        `http://${h}0/`,
      ),
    ),
  fc.webUrl(),
  text,
);
const fetchSiteArb = fc.oneof(
  fc.constantFrom('same-origin', 'none', 'cross-site', 'same-site', 'Same-Origin', ''),
  text,
);
const noiseArb = fc.tuple(
  fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('Content-Type', 'Accept', 'X-Forwarded-Host', 'Forwarded', 'User-Agent') },
    { weight: 1, arbitrary: text },
  ),
  fc.oneof({ weight: 6, arbitrary: fc.string({ maxLength: 24 }) }, { weight: 1, arbitrary: text }),
);

/** 0, 1 (most of the time) or 2 headers of one name, the name in a random case. */
function headerArb(
  name: string,
  value: fc.Arbitrary<string>,
  weights: [number, number, number],
): fc.Arbitrary<[string, string][]> {
  const entry = fc.tuple(fc.mixedCase(fc.constant(name)), value);
  return fc.oneof(
    { weight: weights[0], arbitrary: fc.constant([] as [string, string][]) },
    { weight: weights[1], arbitrary: fc.tuple(entry).map((e) => [...e]) },
    { weight: weights[2], arbitrary: fc.tuple(entry, entry).map((e) => [...e]) },
  );
}

const headersArb = fc
  .tuple(
    headerArb('Host', hostValueArb, [1, 24, 1]),
    headerArb('Authorization', authValueArb, [1, 24, 1]),
    headerArb('Origin', originValueArb, [12, 1, 1]),
    headerArb('Referer', refererValueArb, [10, 3, 1]),
    headerArb('Sec-Fetch-Site', fetchSiteArb, [10, 3, 1]),
    fc.array(noiseArb, { maxLength: 3 }),
  )
  .chain((groups) => fc.shuffledSubarray(groups.flat(), { minLength: groups.flat().length }))
  .map((entries) => entries.flatMap(([n, v]) => [n, v]));

// Most of the time method and target name a served route together, so both verdicts are well covered.
const routeArb = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(fc.constantFrom(...ROUTES), fc.option(fc.string({ maxLength: 16 }), { nil: undefined }), modelIdArb)
      .map(([route, query, id]) => {
        const path = route.segment === undefined ? route.path : `${route.path}${id}`;
        return { method: route.method, target: query === undefined ? path : `${path}?${query}` };
      }),
  },
  { weight: 4, arbitrary: fc.record({ method: methodArb, target: targetArb }) },
);

const requestArb: fc.Arbitrary<GuardRequest> = fc
  .tuple(
    peerArb,
    routeArb,
    headersArb,
    fc.oneof({ weight: 8, arbitrary: fc.constant('1.1') }, { weight: 1, arbitrary: fc.constantFrom('1.0', '2.0', '') }),
  )
  .map(([peerAddress, { method, target }, rawHeaders, httpVersion]) => ({
    peerAddress,
    method,
    target,
    rawHeaders,
    httpVersion,
  }));

test('verifyLoopbackRequest() accepts exactly the requests on the allow-list and refuses the rest with its codes (50,000 runs)', () => {
  const policy = makePolicy();
  let accepted = 0;
  const seen = new Map<string, number>();
  fc.assert(
    fc.property(requestArb, (request) => {
      const decision = verifyLoopbackRequest(request, policy);
      const expected = oracleAccepts(request);
      if (decision.ok) {
        accepted++;
        assert.equal(expected, true, 'accepted a request the oracle refuses');
        assert.equal(decision.route.path, request.target.split('?')[0]);
        assert.equal(decision.route.method, request.method);
      } else {
        assert.equal(expected, false, `refused (${decision.code}) a request the oracle accepts`);
        seen.set(decision.code, (seen.get(decision.code) ?? 0) + 1);
        assert.ok(decision.code in GUARD_REFUSALS, decision.code);
        assert.equal(decision.status, GUARD_REFUSALS[decision.code as keyof typeof GUARD_REFUSALS]);
        assert.ok(!JSON.stringify(decision).includes(TOKEN));
      }
    }),
    { numRuns: 50_000 },
  );
  // The generator must reach both sides, or the property proves little.
  assert.ok(accepted > 2_500, `only ${accepted} accepted`);
  assert.ok(accepted < 45_000, `${accepted} accepted`);
  assert.deepEqual(
    Object.keys(GUARD_REFUSALS).filter((code) => !seen.has(code)),
    [],
    'every refusal is reached',
  );
  console.log(`# accepted ${accepted}; refusals ${JSON.stringify(Object.fromEntries(seen))}`);
});

test('verifyLoopbackRequest() never throws and always answers with one of its codes on arbitrary values (20,000 runs)', () => {
  const policy = makePolicy();
  const anyRequest = fc.oneof(
    fc.anything(),
    fc.record({
      peerAddress: fc.anything(),
      method: fc.anything(),
      target: fc.anything(),
      rawHeaders: fc.oneof(fc.anything(), fc.array(fc.anything())),
      httpVersion: fc.anything(),
    }),
    fc.record({
      peerAddress: peerArb,
      method: methodArb,
      target: targetArb,
      rawHeaders: fc.array(fc.oneof(text, fc.anything()), { maxLength: 8 }),
    }),
  );
  fc.assert(
    fc.property(anyRequest, (request) => {
      const decision = verifyLoopbackRequest(request as GuardRequest, policy);
      if (decision.ok) assert.equal(oracleAccepts(request as GuardRequest), true);
      else assert.equal(decision.status, GUARD_REFUSALS[decision.code as keyof typeof GUARD_REFUSALS]);
    }),
    { numRuns: 20_000 },
  );
});

// The same generator with a share of requests turned into attestation calls (with and without their
// Authorization header) against a policy that names the attestation route (P-k).
const attestArb: fc.Arbitrary<GuardRequest> = fc
  .tuple(
    requestArb,
    fc.oneof(
      { weight: 1, arbitrary: fc.constant('keep' as const) },
      { weight: 1, arbitrary: fc.constant('attest' as const) },
    ),
    fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    fc.oneof(
      { weight: 8, arbitrary: fc.constant('GET') },
      { weight: 1, arbitrary: fc.constantFrom('POST', 'OPTIONS', 'HEAD', 'get') },
    ),
    fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom('', '?x=1') },
      { weight: 1, arbitrary: fc.constantFrom('/', '/.', '%2e', '%61', '#') },
    ),
  )
  .map(([request, kind, dropAuth, method, suffix]) => {
    if (kind === 'keep') return request;
    const headers: string[] = [];
    for (let i = 0; i + 1 < request.rawHeaders.length; i += 2) {
      if (dropAuth && request.rawHeaders[i]!.toLowerCase() === 'authorization') continue;
      headers.push(request.rawHeaders[i]!, request.rawHeaders[i + 1]!);
    }
    return { ...request, method, target: `${ATTEST_ROUTE.path}${suffix}`, rawHeaders: headers };
  });

test('verifyLoopbackRequest() serves the attestation route without a token only after every other check, and nothing else without one (30,000 runs)', () => {
  const policy = makePolicy({ attestRoute: ATTEST_ROUTE });
  let attested = 0;
  let refusedAttest = 0;
  fc.assert(
    fc.property(attestArb, (request) => {
      const calls = policy.calls.count;
      const decision = verifyLoopbackRequest(request, policy);
      assert.equal(decision.ok, oracleAccepts(request, true), JSON.stringify(decision));
      const hasAuth = request.rawHeaders.some((value, i) => i % 2 === 0 && value.toLowerCase() === 'authorization');
      if (decision.ok && decision.route === ATTEST_ROUTE && !hasAuth) {
        attested++;
        assert.equal(policy.calls.count, calls, 'no token check for an attestation without Authorization');
      }
      if (decision.ok && decision.route !== ATTEST_ROUTE) assert.ok(hasAuth, 'every other route needs a token');
      if (!decision.ok) {
        if (request.target.startsWith(ATTEST_ROUTE.path)) refusedAttest++;
        assert.equal(decision.status, GUARD_REFUSALS[decision.code as keyof typeof GUARD_REFUSALS]);
      }
    }),
    { numRuns: 30_000 },
  );
  assert.ok(attested > 500, `only ${attested} attestations served without a token`);
  assert.ok(refusedAttest > 1_000, `only ${refusedAttest} attestation calls refused`);
  console.log(`# attestations served without a token ${attested}; attestation calls refused ${refusedAttest}`);
});

const B64TOKEN_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/'.split('');

test('createTokenVerifier() refuses every same-length token that differs from the expected one in exactly one position (20,000 runs)', () => {
  const positions = new Set<string>();
  const nearMiss = fc
    .array(fc.constantFrom(...B64TOKEN_CHARS), { minLength: MIN_TOKEN_LENGTH, maxLength: 96 })
    .map((chars) => chars.join(''))
    .chain((expected) =>
      fc.tuple(
        fc.constant(expected),
        // First and last positions get their own weight: a verifier that skips an end is the usual bug.
        fc.oneof(fc.constant(0), fc.constant(expected.length - 1), fc.nat({ max: expected.length - 1 })),
        fc.constantFrom(...B64TOKEN_CHARS),
      ),
    )
    .filter(([expected, at, replacement]) => expected[at] !== replacement);
  fc.assert(
    fc.property(nearMiss, ([expected, at, replacement]) => {
      const candidate = `${expected.slice(0, at)}${replacement}${expected.slice(at + 1)}`;
      assert.equal(candidate.length, expected.length);
      const verify = createTokenVerifier(expected);
      assert.equal(verify(expected), true);
      assert.equal(verify(candidate), false, `accepted a token that differs at ${at} of ${expected.length}`);
      positions.add(at === 0 ? 'first' : at === expected.length - 1 ? 'last' : 'middle');
    }),
    { numRuns: 20_000 },
  );
  assert.deepEqual([...positions].sort(), ['first', 'last', 'middle']);
});

test('verifyLoopbackRequest() refuses the fixture token with any one character changed (every position, same length)', () => {
  const policy = makePolicy();
  for (let at = 0; at < TOKEN.length; at += 1) {
    const replacement = TOKEN[at] === 'A' ? 'B' : 'A';
    const candidate = `${TOKEN.slice(0, at)}${replacement}${TOKEN.slice(at + 1)}`;
    const decision = verifyLoopbackRequest(
      {
        peerAddress: '127.0.0.1',
        method: 'GET',
        target: '/v1/models',
        rawHeaders: ['Host', `127.0.0.1:${PORT}`, 'Authorization', `Bearer ${candidate}`],
        httpVersion: '1.1',
      },
      policy,
    );
    assert.equal(decision.ok ? 'ok' : decision.code, 'ERR_GUARD_TOKEN_INVALID', `position ${at}`);
  }
});
