import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  verifyLoopbackRequest,
  allowedHostsFor,
  createTokenVerifier,
  isLoopbackAddress,
  GUARD_REFUSALS,
  MAX_TARGET_LENGTH,
  type GuardRequest,
  type GuardPolicy,
} from '../../src/core/guard.js';
import { ATTEST_ROUTE } from '../../src/core/attest.js';
import { ERROR_CODES } from '../../src/core/errors.js';
import { Secret } from '../../src/core/secret.js';
import { PORT, TOKEN, goodRequest, makePolicy, withHeader } from '../helpers/cores-guard.js';

type Expect = 'ok' | keyof typeof GUARD_REFUSALS;
interface Case {
  readonly name: string;
  readonly request: GuardRequest;
  readonly expect: Expect;
  readonly policy?: Partial<GuardPolicy>;
}

const P = PORT;
const hostIs = (value: string): GuardRequest => goodRequest({ rawHeaders: withHeader('Host', value) });
const plus = (name: string, ...values: string[]): GuardRequest =>
  goodRequest({ rawHeaders: [...goodRequest().rawHeaders, ...values.flatMap((v) => [name, v])] });
const auth = (...values: string[]): GuardRequest => goodRequest({ rawHeaders: withHeader('Authorization', ...values) });

// The attestation route (P-k): served without a token, after every other check, to a request without Authorization.
const ATTEST = { attestRoute: ATTEST_ROUTE };
const NO_AUTH = withHeader('Authorization');
const attestCall = (overrides: Partial<GuardRequest> = {}, extra: string[] = []): GuardRequest =>
  goodRequest({ method: 'GET', target: ATTEST_ROUTE.path, rawHeaders: [...NO_AUTH, ...extra], ...overrides });
const attestHost = (host: string): GuardRequest => attestCall({ rawHeaders: ['Host', host] });

const CASES: Case[] = [
  // Accepted shapes.
  { name: 'the plain request', request: goodRequest(), expect: 'ok' },
  { name: 'Host localhost:P', request: hostIs(`localhost:${P}`), expect: 'ok' },
  { name: 'Host LOCALHOST:P (case-insensitive)', request: hostIs(`LOCALHOST:${P}`), expect: 'ok' },
  { name: 'Host [::1]:P', request: hostIs(`[::1]:${P}`), expect: 'ok' },
  { name: 'peer ::1', request: goodRequest({ peerAddress: '::1' }), expect: 'ok' },
  { name: 'peer ::ffff:127.0.0.1', request: goodRequest({ peerAddress: '::ffff:127.0.0.1' }), expect: 'ok' },
  { name: 'peer ::FFFF:127.3.2.1', request: goodRequest({ peerAddress: '::FFFF:127.3.2.1' }), expect: 'ok' },
  { name: 'peer 127.255.255.254', request: goodRequest({ peerAddress: '127.255.255.254' }), expect: 'ok' },
  {
    name: 'a query is ignored for the route',
    request: goodRequest({ method: 'GET', target: '/v1/models?x=%2e%2e&y=..' }),
    expect: 'ok',
  },
  {
    name: 'no httpVersion given',
    request: { ...goodRequest(), httpVersion: undefined } as unknown as GuardRequest,
    expect: 'ok',
  },
  { name: 'HTTP/1.0 with a Host', request: goodRequest({ httpVersion: '1.0' }), expect: 'ok' },
  { name: 'Sec-Fetch-Site: same-origin', request: plus('Sec-Fetch-Site', 'same-origin'), expect: 'ok' },
  { name: 'Sec-Fetch-Site: none', request: plus('Sec-Fetch-Site', 'none'), expect: 'ok' },
  { name: 'a same-origin Referer', request: plus('Referer', `http://127.0.0.1:${P}/page?q=1`), expect: 'ok' },
  { name: 'a same-origin Referer with no path', request: plus('Referer', `http://127.0.0.1:${P}`), expect: 'ok' },
  { name: 'lower-case bearer scheme', request: auth(`bearer ${TOKEN}`), expect: 'ok' },
  { name: 'several spaces after Bearer', request: auth(`Bearer   ${TOKEN}`), expect: 'ok' },
  {
    name: 'lower-case header names',
    request: goodRequest({ rawHeaders: ['host', `127.0.0.1:${P}`, 'authorization', `Bearer ${TOKEN}`] }),
    expect: 'ok',
  },
  {
    name: 'a configured Origin',
    request: plus('Origin', 'http://localhost:5173'),
    expect: 'ok',
    policy: { allowedOrigins: ['http://localhost:5173'] },
  },
  {
    name: 'a Referer on a configured origin',
    request: plus('Referer', 'http://localhost:5173/app'),
    expect: 'ok',
    policy: { allowedOrigins: ['http://localhost:5173'] },
  },

  // Peer.
  ...[
    '10.0.0.1',
    '192.168.1.10',
    '0.0.0.0',
    '128.0.0.1',
    '::2',
    '::',
    '::ffff:10.0.0.1',
    '::ffff:7f00:1',
    '0:0:0:0:0:0:0:1',
    '127.0.0.01',
    '127.1',
    '2130706433',
    '0x7f.0.0.1',
    '127.0.0.1.',
    '::1%lo',
    'localhost',
    '',
    ' 127.0.0.1',
    '127.0.0.256',
  ].map((peer): Case => ({
    name: `peer ${JSON.stringify(peer)}`,
    request: goodRequest({ peerAddress: peer }),
    expect: 'ERR_GUARD_PEER_NOT_LOOPBACK',
  })),
  {
    name: 'peer not a string',
    request: goodRequest({ peerAddress: undefined as unknown as string }),
    expect: 'ERR_GUARD_PEER_NOT_LOOPBACK',
  },

  // Shape.
  { name: 'lower-case method', request: goodRequest({ method: 'post' }), expect: 'ERR_GUARD_MALFORMED' },
  { name: 'empty method', request: goodRequest({ method: '' }), expect: 'ERR_GUARD_MALFORMED' },
  { name: 'HTTP/2.0', request: goodRequest({ httpVersion: '2.0' }), expect: 'ERR_GUARD_MALFORMED' },
  { name: 'HTTP/0.9', request: goodRequest({ httpVersion: '0.9' }), expect: 'ERR_GUARD_MALFORMED' },
  {
    name: 'odd raw header list',
    request: goodRequest({ rawHeaders: [...goodRequest().rawHeaders, 'X-Dangling'] }),
    expect: 'ERR_GUARD_MALFORMED',
  },
  {
    name: 'a non-string header value',
    request: goodRequest({ rawHeaders: [...goodRequest().rawHeaders, 'X-N', 1 as unknown as string] }),
    expect: 'ERR_GUARD_MALFORMED',
  },
  { name: 'CRLF in a header value', request: plus('X-Note', 'a\r\nHost: evil.example'), expect: 'ERR_GUARD_MALFORMED' },
  { name: 'NUL in a header value', request: plus('X-Note', 'a\0b'), expect: 'ERR_GUARD_MALFORMED' },
  { name: 'a header name with a space', request: plus('Host ', 'evil.example'), expect: 'ERR_GUARD_MALFORMED' },
  { name: 'a header name with a colon', request: plus('Host:', 'evil.example'), expect: 'ERR_GUARD_MALFORMED' },
  {
    name: 'rawHeaders not an array',
    request: goodRequest({ rawHeaders: 'Host: x' as unknown as string[] }),
    expect: 'ERR_GUARD_MALFORMED',
  },

  // Target form.
  ...[
    `http://evil.example/v1/chat/completions`,
    `http://127.0.0.1:${P}/v1/chat/completions`,
    `HTTP://127.0.0.1:${P}/v1/chat/completions`,
    '//evil.example/v1/chat/completions',
    '*',
    'v1/chat/completions',
    '',
    `127.0.0.1:${P}`,
  ].map((target): Case => ({
    name: `target ${JSON.stringify(target)}`,
    request: goodRequest({ target }),
    expect: 'ERR_GUARD_TARGET_FORM',
  })),
  {
    name: 'target not a string',
    request: goodRequest({ target: null as unknown as string }),
    expect: 'ERR_GUARD_TARGET_FORM',
  },
  // Malformed targets and paths whose normal form differs.
  ...[
    '/v1/chat/completions\r\n',
    '/v1/chat/comp\0letions',
    '/v1\\chat\\completions',
    '/v1/chat/completions#frag',
    '/v1/./chat/completions',
    '/v1/x/../chat/completions',
    '/v1/%2e%2e/chat/completions',
    '/v1/%2E/chat/completions',
    '/v1%2fchat/completions',
    '/v1/chat%2Fcompletions',
    '/v1//chat/completions',
    '/v1/chat/c%6fmpletions',
    '/v1/%5cchat/completions',
    '/v1/%00/chat',
    '/v1/%zz/chat',
    '/v1/chat/completions%2',
    '/v1/%252e%252e/chat',
    '/v1/chät/completions',
    '/v1/chat completions',
    '/..',
    '/.',
    `/${'a'.repeat(MAX_TARGET_LENGTH)}`,
  ].map((target): Case => ({
    name: `target ${JSON.stringify(target.slice(0, 40))}`,
    request: goodRequest({ target }),
    expect: 'ERR_GUARD_MALFORMED',
  })),

  // Host (P-a).
  {
    name: 'no Host (HTTP/1.0)',
    request: goodRequest({ httpVersion: '1.0', rawHeaders: withHeader('Host') }),
    expect: 'ERR_GUARD_HOST_MISSING',
  },
  {
    name: 'two equal Host headers',
    request: goodRequest({ rawHeaders: withHeader('Host', `127.0.0.1:${P}`, `127.0.0.1:${P}`) }),
    expect: 'ERR_GUARD_HOST_DUPLICATE',
  },
  {
    name: 'Host then evil host',
    request: goodRequest({ rawHeaders: withHeader('Host', `127.0.0.1:${P}`, 'evil.example') }),
    expect: 'ERR_GUARD_HOST_DUPLICATE',
  },
  {
    name: 'host and HOST',
    request: goodRequest({ rawHeaders: [...withHeader('Host', `127.0.0.1:${P}`), 'HOST', `localhost:${P}`] }),
    expect: 'ERR_GUARD_HOST_DUPLICATE',
  },
  ...[
    'evil.example',
    `evil.example:${P}`,
    '127.0.0.1',
    `127.0.0.1:${P + 1}`,
    `127.0.0.1.:${P}`,
    `localhost.:${P}`,
    `user@127.0.0.1:${P}`,
    `2130706433:${P}`,
    `0x7f.1:${P}`,
    `127.1:${P}`,
    `0177.0.0.1:${P}`,
    `127.0.0.1.nip.io:${P}`,
    '[::1]',
    `[::ffff:127.0.0.1]:${P}`,
    `[0:0:0:0:0:0:0:1]:${P}`,
    `127.0.0.2:${P}`,
    `localhost:0${P}`,
    `127.0.0.1:${P} `,
    '',
    `localhost:${P}/x`,
    `::1:${P}`,
  ].map((host): Case => ({
    name: `Host ${JSON.stringify(host)}`,
    request: hostIs(host),
    expect: 'ERR_GUARD_HOST_NOT_ALLOWED',
  })),
  {
    name: 'Host [::1]:P when ipv6 is off',
    request: hostIs(`[::1]:${P}`),
    expect: 'ERR_GUARD_HOST_NOT_ALLOWED',
    policy: { allowedHosts: allowedHostsFor(P, { ipv6: false }) },
  },

  // Browser context (P-b).
  { name: 'Origin: http://evil.example', request: plus('Origin', 'http://evil.example'), expect: 'ERR_GUARD_ORIGIN' },
  { name: 'Origin: null', request: plus('Origin', 'null'), expect: 'ERR_GUARD_ORIGIN' },
  {
    name: 'Origin of the front door itself (none is configured)',
    request: plus('Origin', `http://127.0.0.1:${P}`),
    expect: 'ERR_GUARD_ORIGIN',
  },
  {
    name: 'two Origin headers',
    request: plus('Origin', 'http://localhost:5173', 'http://localhost:5173'),
    expect: 'ERR_GUARD_ORIGIN',
    policy: { allowedOrigins: ['http://localhost:5173'] },
  },
  {
    name: 'an Origin other than the configured one',
    request: plus('Origin', 'http://localhost:5174'),
    expect: 'ERR_GUARD_ORIGIN',
    policy: { allowedOrigins: ['http://localhost:5173'] },
  },
  {
    name: 'a configured Origin in another case',
    request: plus('Origin', 'HTTP://LOCALHOST:5173'),
    expect: 'ERR_GUARD_ORIGIN',
    policy: { allowedOrigins: ['http://localhost:5173'] },
  },
  ...[
    'http://evil.example/',
    `http://127.0.0.1:${P}@evil.example/`,
    `http://127.0.0.1:${P}0/`,
    `https://127.0.0.1:${P}/`,
    `http://localhost:${P}/`,
    `http://127.0.0.1:${P}.evil.example/`,
    'garbage',
    '',
    'about:blank',
    'http://localhost:5173/app',
  ].map((referer): Case => ({
    name: `Referer ${JSON.stringify(referer)}`,
    request: plus('Referer', referer),
    expect: 'ERR_GUARD_REFERER',
  })),
  {
    name: 'two same-origin Referer headers',
    request: plus('Referer', `http://127.0.0.1:${P}/`, `http://127.0.0.1:${P}/`),
    expect: 'ERR_GUARD_REFERER',
  },
  ...['cross-site', 'same-site', 'Same-Origin', '', 'none, cross-site'].map((site): Case => ({
    name: `Sec-Fetch-Site ${JSON.stringify(site)}`,
    request: plus('Sec-Fetch-Site', site),
    expect: 'ERR_GUARD_FETCH_SITE',
  })),
  {
    name: 'two Sec-Fetch-Site headers',
    request: plus('Sec-Fetch-Site', 'none', 'none'),
    expect: 'ERR_GUARD_FETCH_SITE',
  },

  // OPTIONS is never answered.
  { name: 'OPTIONS on a served path', request: goodRequest({ method: 'OPTIONS' }), expect: 'ERR_GUARD_METHOD' },
  {
    name: 'OPTIONS without a token',
    request: goodRequest({ method: 'OPTIONS', rawHeaders: withHeader('Authorization') }),
    expect: 'ERR_GUARD_METHOD',
  },
  { name: 'OPTIONS *', request: goodRequest({ method: 'OPTIONS', target: '*' }), expect: 'ERR_GUARD_TARGET_FORM' },
  {
    name: 'a CORS preflight (OPTIONS with Origin)',
    request: goodRequest({
      method: 'OPTIONS',
      rawHeaders: [
        ...withHeader('Authorization'),
        'Origin',
        'http://evil.example',
        'Access-Control-Request-Method',
        'POST',
      ],
    }),
    expect: 'ERR_GUARD_ORIGIN',
  },

  // Token (P-c).
  { name: 'no Authorization', request: auth(), expect: 'ERR_GUARD_TOKEN_MISSING' },
  {
    name: 'Basic credentials',
    request: auth(`Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`),
    expect: 'ERR_GUARD_TOKEN_MISSING',
  },
  { name: 'Bearer with nothing', request: auth('Bearer'), expect: 'ERR_GUARD_TOKEN_MISSING' },
  { name: 'Bearer and a space', request: auth('Bearer '), expect: 'ERR_GUARD_TOKEN_INVALID' },
  { name: 'a wrong token', request: auth(`Bearer ${TOKEN.replace('0', '1')}`), expect: 'ERR_GUARD_TOKEN_INVALID' },
  { name: 'the token plus one character', request: auth(`Bearer ${TOKEN}x`), expect: 'ERR_GUARD_TOKEN_INVALID' },
  { name: 'a prefix of the token', request: auth(`Bearer ${TOKEN.slice(0, -1)}`), expect: 'ERR_GUARD_TOKEN_INVALID' },
  { name: 'the token with a trailing space', request: auth(`Bearer ${TOKEN} `), expect: 'ERR_GUARD_TOKEN_INVALID' },
  { name: 'the token in quotes', request: auth(`Bearer "${TOKEN}"`), expect: 'ERR_GUARD_TOKEN_INVALID' },
  {
    name: 'two Authorization headers, both right',
    request: auth(`Bearer ${TOKEN}`, `Bearer ${TOKEN}`),
    expect: 'ERR_GUARD_TOKEN_INVALID',
  },
  { name: 'a huge bearer value', request: auth(`Bearer ${'a'.repeat(10_000)}`), expect: 'ERR_GUARD_TOKEN_INVALID' },

  // Route.
  { name: 'GET on a POST path', request: goodRequest({ method: 'GET' }), expect: 'ERR_GUARD_METHOD' },
  {
    name: 'HEAD on a GET path',
    request: goodRequest({ method: 'HEAD', target: '/v1/models' }),
    expect: 'ERR_GUARD_METHOD',
  },
  {
    name: 'DELETE on a served path',
    request: goodRequest({ method: 'DELETE', target: '/health' }),
    expect: 'ERR_GUARD_METHOD',
  },
  { name: 'an unserved path', request: goodRequest({ target: '/v1/embeddings' }), expect: 'ERR_GUARD_PATH' },
  {
    name: 'a trailing slash',
    request: goodRequest({ method: 'GET', target: '/v1/models/' }),
    expect: 'ERR_GUARD_PATH',
  },
  {
    name: 'a path with a safe encoding',
    request: goodRequest({ method: 'GET', target: '/v1/models%20' }),
    expect: 'ERR_GUARD_PATH',
  },
  { name: 'the root', request: goodRequest({ method: 'GET', target: '/' }), expect: 'ERR_GUARD_PATH' },

  // The attestation route (P-k): no token needed, but every other check still applies.
  {
    name: 'attest: GET /companion/attest without Authorization is served',
    request: attestCall(),
    expect: 'ok',
    policy: ATTEST,
  },
  {
    name: 'attest: with a query',
    request: attestCall({ target: `${ATTEST_ROUTE.path}?x=1` }),
    expect: 'ok',
    policy: ATTEST,
  },
  { name: 'attest: Host localhost:P', request: attestHost(`localhost:${P}`), expect: 'ok', policy: ATTEST },
  {
    name: 'attest: Sec-Fetch-Site none',
    request: attestCall({}, ['Sec-Fetch-Site', 'none']),
    expect: 'ok',
    policy: ATTEST,
  },
  {
    name: 'attest: with the right token is served too',
    request: attestCall({ rawHeaders: withHeader('Authorization', `Bearer ${TOKEN}`) }),
    expect: 'ok',
    policy: ATTEST,
  },
  {
    name: 'attest: with a wrong token is checked like any route',
    request: attestCall({ rawHeaders: withHeader('Authorization', `Bearer ${TOKEN.replace('0', '1')}`) }),
    expect: 'ERR_GUARD_TOKEN_INVALID',
    policy: ATTEST,
  },
  {
    name: 'attest: with Basic credentials is checked like any route',
    request: attestCall({ rawHeaders: withHeader('Authorization', 'Basic eDp5') }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: with an empty Authorization is checked like any route',
    request: attestCall({ rawHeaders: withHeader('Authorization', '') }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: with two Authorization headers',
    request: attestCall({ rawHeaders: withHeader('Authorization', `Bearer ${TOKEN}`, `Bearer ${TOKEN}`) }),
    expect: 'ERR_GUARD_TOKEN_INVALID',
    policy: ATTEST,
  },
  {
    name: 'attest: foreign Host evil.example:P',
    request: attestHost(`evil.example:${P}`),
    expect: 'ERR_GUARD_HOST_NOT_ALLOWED',
    policy: ATTEST,
  },
  {
    name: 'attest: Host of another port (a relay)',
    request: attestHost(`127.0.0.1:${P + 1}`),
    expect: 'ERR_GUARD_HOST_NOT_ALLOWED',
    policy: ATTEST,
  },
  {
    name: 'attest: no Host (HTTP/1.0)',
    request: attestCall({ httpVersion: '1.0', rawHeaders: [] }),
    expect: 'ERR_GUARD_HOST_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: two Host headers',
    request: attestCall({ rawHeaders: ['Host', `127.0.0.1:${P}`, 'Host', `127.0.0.1:${P}`] }),
    expect: 'ERR_GUARD_HOST_DUPLICATE',
    policy: ATTEST,
  },
  {
    name: 'attest: Origin http://evil.example',
    request: attestCall({}, ['Origin', 'http://evil.example']),
    expect: 'ERR_GUARD_ORIGIN',
    policy: ATTEST,
  },
  {
    name: 'attest: Origin null',
    request: attestCall({}, ['Origin', 'null']),
    expect: 'ERR_GUARD_ORIGIN',
    policy: ATTEST,
  },
  {
    name: 'attest: a foreign Referer',
    request: attestCall({}, ['Referer', 'http://evil.example/']),
    expect: 'ERR_GUARD_REFERER',
    policy: ATTEST,
  },
  {
    name: 'attest: Sec-Fetch-Site cross-site',
    request: attestCall({}, ['Sec-Fetch-Site', 'cross-site']),
    expect: 'ERR_GUARD_FETCH_SITE',
    policy: ATTEST,
  },
  {
    name: 'attest: Sec-Fetch-Site same-site',
    request: attestCall({}, ['Sec-Fetch-Site', 'same-site']),
    expect: 'ERR_GUARD_FETCH_SITE',
    policy: ATTEST,
  },
  {
    name: 'attest: a non-loopback peer',
    request: attestCall({ peerAddress: '10.0.0.1' }),
    expect: 'ERR_GUARD_PEER_NOT_LOOPBACK',
    policy: ATTEST,
  },
  {
    name: 'attest: absolute-form target',
    request: attestCall({ target: `http://127.0.0.1:${P}${ATTEST_ROUTE.path}` }),
    expect: 'ERR_GUARD_TARGET_FORM',
    policy: ATTEST,
  },
  {
    name: 'attest: //host target',
    request: attestCall({ target: `//evil.example${ATTEST_ROUTE.path}` }),
    expect: 'ERR_GUARD_TARGET_FORM',
    policy: ATTEST,
  },
  {
    name: 'attest: a dot segment',
    request: attestCall({ target: '/companion/./attest' }),
    expect: 'ERR_GUARD_MALFORMED',
    policy: ATTEST,
  },
  {
    name: 'attest: an encoded letter',
    request: attestCall({ target: '/companion/%61ttest' }),
    expect: 'ERR_GUARD_MALFORMED',
    policy: ATTEST,
  },
  {
    name: 'attest: OPTIONS is still refused',
    request: attestCall({ method: 'OPTIONS' }),
    expect: 'ERR_GUARD_METHOD',
    policy: ATTEST,
  },
  {
    name: 'attest: a CORS preflight is still refused',
    request: attestCall({ method: 'OPTIONS' }, [
      'Origin',
      'http://evil.example',
      'Access-Control-Request-Method',
      'GET',
    ]),
    expect: 'ERR_GUARD_ORIGIN',
    policy: ATTEST,
  },
  {
    name: 'attest: POST without a token needs the token',
    request: attestCall({ method: 'POST' }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: HEAD without a token needs the token',
    request: attestCall({ method: 'HEAD' }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: POST with the token is another method',
    request: attestCall({ method: 'POST', rawHeaders: withHeader('Authorization', `Bearer ${TOKEN}`) }),
    expect: 'ERR_GUARD_METHOD',
    policy: ATTEST,
  },
  {
    name: 'attest: a trailing slash needs the token',
    request: attestCall({ target: `${ATTEST_ROUTE.path}/` }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: another case needs the token',
    request: attestCall({ target: '/companion/Attest' }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: GET /health without a token still needs it',
    request: attestCall({ target: '/health' }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: GET /v1/models without a token still needs it',
    request: attestCall({ target: '/v1/models' }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: POST /v1/chat/completions without a token still needs it',
    request: attestCall({ method: 'POST', target: '/v1/chat/completions' }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: an unserved path without a token reveals nothing',
    request: attestCall({ target: '/companion/other' }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
    policy: ATTEST,
  },
  {
    name: 'attest: not configured, the route needs the token',
    request: attestCall(),
    expect: 'ERR_GUARD_TOKEN_MISSING',
  },
  {
    name: 'attest: not configured, with the token it is not served',
    request: attestCall({ rawHeaders: withHeader('Authorization', `Bearer ${TOKEN}`) }),
    expect: 'ERR_GUARD_PATH',
  },

  // Order: the first failing check decides.
  {
    name: 'order: peer before everything',
    request: goodRequest({ peerAddress: '10.0.0.1', target: '*', rawHeaders: ['Host', 'evil.example'] }),
    expect: 'ERR_GUARD_PEER_NOT_LOOPBACK',
  },
  {
    name: 'order: target before Host',
    request: goodRequest({ target: 'http://evil.example/', rawHeaders: ['Host', 'evil.example'] }),
    expect: 'ERR_GUARD_TARGET_FORM',
  },
  {
    name: 'order: Host before Origin',
    request: goodRequest({ rawHeaders: ['Host', 'evil.example', 'Origin', 'http://evil.example'] }),
    expect: 'ERR_GUARD_HOST_NOT_ALLOWED',
  },
  {
    name: 'order: Origin before the token',
    request: goodRequest({ rawHeaders: ['Host', `127.0.0.1:${P}`, 'Origin', 'http://evil.example'] }),
    expect: 'ERR_GUARD_ORIGIN',
  },
  {
    name: 'order: the token before the route',
    request: goodRequest({ target: '/secret-path', rawHeaders: ['Host', `127.0.0.1:${P}`] }),
    expect: 'ERR_GUARD_TOKEN_MISSING',
  },
];

for (const c of CASES) {
  test(`verifyLoopbackRequest() ${c.expect === 'ok' ? 'accepts' : `refuses with ${c.expect}`}: ${c.name}`, () => {
    const policy = makePolicy(c.policy);
    const decision = verifyLoopbackRequest(c.request, policy);
    if (c.expect === 'ok') {
      assert.equal(decision.ok, true, JSON.stringify(decision));
    } else {
      assert.deepEqual(decision, { ok: false, status: GUARD_REFUSALS[c.expect], code: c.expect });
      assert.ok(!JSON.stringify(decision).includes(TOKEN));
    }
  });
}

test('verifyLoopbackRequest() returns the matched route object', () => {
  const policy = makePolicy();
  const decision = verifyLoopbackRequest(goodRequest({ method: 'GET', target: '/v1/models' }), policy);
  assert.equal(decision.ok, true);
  assert.ok(decision.ok && decision.route === policy.routes[2]);
});

const MODEL_ID_CASES: [string, string, 'ok' | 'ERR_GUARD_PATH' | 'ERR_GUARD_MALFORMED' | 'ERR_GUARD_METHOD'][] = [
  ['a model id', '/v1/models/tiny', 'ok'],
  ['a model id with dots, colons and dashes', '/v1/models/org.model:q8_0-v1', 'ok'],
  ['a model id and a query', '/v1/models/tiny?x=1', 'ok'],
  ['a 128-character model id', `/v1/models/${'m'.repeat(128)}`, 'ok'],
  ['an empty model id', '/v1/models/', 'ERR_GUARD_PATH'],
  ['a 129-character model id', `/v1/models/${'m'.repeat(129)}`, 'ERR_GUARD_PATH'],
  ['/v1/models/.. (a dot segment)', '/v1/models/..', 'ERR_GUARD_MALFORMED'],
  ['/v1/models/. (a dot segment)', '/v1/models/.', 'ERR_GUARD_MALFORMED'],
  ['/v1/models/a/b (two segments)', '/v1/models/a/b', 'ERR_GUARD_PATH'],
  ['/v1/models/a/ (a trailing slash)', '/v1/models/a/', 'ERR_GUARD_PATH'],
  ['/v1/models/%2e%2e (an encoded dot segment)', '/v1/models/%2e%2e', 'ERR_GUARD_MALFORMED'],
  ['/v1/models/a%2fb (an encoded slash)', '/v1/models/a%2fb', 'ERR_GUARD_MALFORMED'],
  ['/v1/models/a%20b (a percent-encoded id)', '/v1/models/a%20b', 'ERR_GUARD_PATH'],
  ['/v1/models/..%2f (dot segment then encoded slash)', '/v1/models/..%2f', 'ERR_GUARD_MALFORMED'],
  ['/v1/models/a;b (a character outside the id set)', '/v1/models/a;b', 'ERR_GUARD_PATH'],
  ['/v1/modelsx/tiny (another prefix)', '/v1/modelsx/tiny', 'ERR_GUARD_PATH'],
];

for (const [name, target, expect] of MODEL_ID_CASES) {
  test(`verifyLoopbackRequest() ${expect === 'ok' ? 'accepts' : `refuses with ${expect}`} GET ${name} on the prefix route`, () => {
    const decision = verifyLoopbackRequest(goodRequest({ method: 'GET', target }), makePolicy());
    if (expect === 'ok') assert.deepEqual(decision, { ok: true, route: { method: 'GET', path: target.split('?')[0] } });
    else assert.deepEqual(decision, { ok: false, status: GUARD_REFUSALS[expect], code: expect });
  });
}

test('verifyLoopbackRequest() refuses another method on a model id with ERR_GUARD_METHOD', () => {
  assert.deepEqual(verifyLoopbackRequest(goodRequest({ method: 'POST', target: '/v1/models/tiny' }), makePolicy()), {
    ok: false,
    status: 405,
    code: 'ERR_GUARD_METHOD',
  });
});

test('verifyLoopbackRequest() checks the token before a model id route', () => {
  const decision = verifyLoopbackRequest(
    goodRequest({ method: 'GET', target: '/v1/models/tiny', rawHeaders: withHeader('Authorization') }),
    makePolicy(),
  );
  assert.deepEqual(decision, { ok: false, status: 401, code: 'ERR_GUARD_TOKEN_MISSING' });
});

test('verifyLoopbackRequest() never calls the token verifier before Host, Origin and OPTIONS pass', () => {
  for (const request of [
    hostIs('evil.example'),
    plus('Origin', 'http://evil.example'),
    goodRequest({ method: 'OPTIONS' }),
    goodRequest({ target: '//x/' }),
    goodRequest({ peerAddress: '10.0.0.1' }),
    auth(`Bearer ${TOKEN}`, `Bearer ${TOKEN}`),
  ]) {
    const policy = makePolicy();
    assert.equal(verifyLoopbackRequest(request, policy).ok, false);
    assert.equal(policy.calls.count, 0);
  }
});

test("verifyLoopbackRequest() returns the policy's attestRoute for an attestation without Authorization and never calls the verifier", () => {
  const policy = makePolicy(ATTEST);
  const decision = verifyLoopbackRequest(attestCall(), policy);
  assert.ok(decision.ok && decision.route === ATTEST_ROUTE);
  assert.equal(policy.calls.count, 0);
  // With an Authorization header the verifier decides, as on every route.
  assert.equal(
    verifyLoopbackRequest(attestCall({ rawHeaders: withHeader('Authorization', `Bearer ${TOKEN}`) }), policy).ok,
    true,
  );
  assert.equal(policy.calls.count, 1);
});

test('verifyLoopbackRequest() refuses a token when the verifier throws', () => {
  const policy = makePolicy({
    verifyToken: () => {
      throw new Error(`boom ${TOKEN}`);
    },
  });
  assert.deepEqual(verifyLoopbackRequest(goodRequest(), policy), {
    ok: false,
    status: 401,
    code: 'ERR_GUARD_TOKEN_INVALID',
  });
});

test('verifyLoopbackRequest() accepts only a verifier result of exactly true', () => {
  const policy = makePolicy({ verifyToken: (() => 1) as unknown as (c: string) => boolean });
  assert.equal(verifyLoopbackRequest(goodRequest(), policy).ok, false);
});

test('verifyLoopbackRequest() never throws on garbage requests', () => {
  const throwing = new Proxy(
    {},
    {
      get() {
        throw new Error('trap');
      },
    },
  );
  const hostile = {
    ...goodRequest(),
    get rawHeaders(): string[] {
      throw new Error('getter');
    },
  };
  for (const request of [
    null,
    undefined,
    42,
    'GET / HTTP/1.1',
    [],
    {},
    throwing,
    hostile,
    { peerAddress: '127.0.0.1' },
  ]) {
    const decision = verifyLoopbackRequest(request as unknown as GuardRequest, makePolicy());
    assert.equal(decision.ok, false);
    assert.ok(!decision.ok && decision.code in GUARD_REFUSALS);
  }
});

test('verifyLoopbackRequest() throws ERR_INVALID_ARG_VALUE for a bad policy', () => {
  const good = makePolicy();
  const bad: unknown[] = [
    null,
    {},
    { ...good, allowedHosts: ['127.0.0.1:1'] },
    { ...good, verifyToken: 'x' },
    { ...good, routes: null },
    { ...good, routes: [{ method: 'get', path: '/x' }] },
    { ...good, routes: [{ method: 'GET', path: 'x' }] },
    { ...good, routes: [{ method: 'GET', path: '/a/../b' }] },
    { ...good, routes: [{ method: 'GET', path: '/a%2e' }] },
    { ...good, routes: [{ method: 'GET', path: '/a?b' }] },
    { ...good, routes: [{ method: 'GET', path: '//a' }] },
    { ...good, allowedOrigins: ['null'] },
    { ...good, allowedOrigins: ['http://a/'] },
    { ...good, allowedOrigins: 'http://a' },
    { ...good, attestRoute: null },
    { ...good, attestRoute: { method: 'OPTIONS', path: '/a' } },
    { ...good, attestRoute: { method: 'GET', path: '/a/../b' } },
    { ...good, attestRoute: { method: 'get', path: '/a' } },
    { ...good, attestRoute: '/companion/attest' },
    { ...good, routes: [{ method: 'GET', path: '/a', segment: /^x$/ }] },
    { ...good, routes: [{ method: 'GET', path: '/a/', segment: 'x' }] },
    { ...good, routes: [{ method: 'GET', path: '/a/', segment: /x/ }] },
    { ...good, routes: [{ method: 'GET', path: '/a/', segment: /^x$/g }] },
    { ...good, attestRoute: { method: 'GET', path: '/a/', segment: /^x$/ } },
  ];
  for (const policy of bad) {
    assert.throws(() => verifyLoopbackRequest(goodRequest(), policy as GuardPolicy), {
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_VALUE',
    });
  }
});

test('every guard refusal code is in the error catalogue', () => {
  for (const code of Object.keys(GUARD_REFUSALS)) assert.ok(code in ERROR_CODES, code);
});

test('allowedHostsFor() builds the three loopback names of the port, lower-case', () => {
  assert.deepEqual([...allowedHostsFor(8080)], ['127.0.0.1:8080', 'localhost:8080', '[::1]:8080']);
  assert.deepEqual([...allowedHostsFor(8080, { ipv6: false })], ['127.0.0.1:8080', 'localhost:8080']);
  for (const port of [0, 65536, 1.5, -1, Number.NaN, '80']) {
    assert.throws(() => allowedHostsFor(port as number), { name: 'TypeError' });
  }
});

test('createTokenVerifier() accepts the exact token only and never throws', () => {
  const verify = createTokenVerifier(TOKEN);
  assert.equal(verify(TOKEN), true);
  for (const candidate of [
    '',
    TOKEN.slice(1),
    `${TOKEN}a`,
    TOKEN.toUpperCase(),
    TOKEN.replace(/.$/, 'é'),
    'x'.repeat(100_000),
  ]) {
    assert.equal(verify(candidate), false);
  }
  for (const candidate of [undefined, null, 1, {}, Symbol('x')])
    assert.equal(verify(candidate as unknown as string), false);
  assert.equal(createTokenVerifier(new Secret(TOKEN))(TOKEN), true);
});

test('createTokenVerifier() refuses a same-length token whose last or first character differs', () => {
  const verify = createTokenVerifier(TOKEN);
  const swap = (c: string): string => (c === 'A' ? 'B' : 'A');
  const lastChanged = `${TOKEN.slice(0, -1)}${swap(TOKEN.at(-1)!)}`;
  const firstChanged = `${swap(TOKEN[0]!)}${TOKEN.slice(1)}`;
  const middleChanged = `${TOKEN.slice(0, 10)}${swap(TOKEN[10]!)}${TOKEN.slice(11)}`;
  for (const candidate of [lastChanged, firstChanged, middleChanged]) {
    assert.equal(candidate.length, TOKEN.length);
    assert.equal(Buffer.byteLength(candidate), Buffer.byteLength(TOKEN));
    assert.notEqual(candidate, TOKEN);
    assert.equal(verify(candidate), false);
  }
  // Through the guard as well: the near miss is refused as an invalid token.
  const policy = makePolicy();
  for (const candidate of [lastChanged, firstChanged]) {
    const decision = verifyLoopbackRequest(auth(`Bearer ${candidate}`), policy);
    assert.equal(decision.ok, false);
    assert.equal(decision.ok ? null : decision.code, 'ERR_GUARD_TOKEN_INVALID');
  }
});

test('createTokenVerifier() refuses a short or ill-formed expected token without showing it', () => {
  for (const expected of ['short', 'has space in the middle', 'tök_0123456789abcdef', '']) {
    assert.throws(
      () => createTokenVerifier(expected),
      (error: Error & { code?: string }) => {
        assert.equal(error.name, 'TypeError');
        assert.equal(error.code, 'ERR_INVALID_ARG_VALUE');
        assert.ok(expected === '' || !error.message.includes(expected));
        return true;
      },
    );
  }
  assert.throws(() => createTokenVerifier(42 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('isLoopbackAddress() accepts canonical loopback forms only', () => {
  assert.equal(isLoopbackAddress('127.0.0.1'), true);
  assert.equal(isLoopbackAddress('::1'), true);
  assert.equal(isLoopbackAddress('::ffff:127.0.0.1'), true);
  assert.equal(isLoopbackAddress('127.00.0.1'), false);
  assert.equal(isLoopbackAddress(null), false);
});
