// The front door's raw-request fuzzer (issue 11; P-a, P-b, P-c): a generator of near-miss requests around
// the allow-list, and an independent reference predicate that says which of them the front door may serve.
// The predicate is written from the allow-list itself (docs/threat-model.md, CONTRACT D5.1), not from the
// guard's code: one Host among the bound port's names, no Origin, a same-host Referer or none, a
// same-origin/none Sec-Fetch-Site or none, exactly one `Bearer <token>`, an origin-form target naming a
// served path exactly (or `/v1/models/` and one model id segment), a served method, HTTP/1.0 or 1.1, a well-formed message within the limits.
import { Buffer } from 'node:buffer';
import {
  headerValues,
  serialise,
  type FuzzBatch,
  type FuzzCase,
  type Prng,
  type RequestModel,
  type Verdict,
} from './fuzz-http.js';

export interface FrontDoorFuzzContext {
  readonly port: number;
  readonly token: string;
  /** The door's body limit (the fixture's default: 1 MiB). */
  readonly maxBodyBytes?: number;
}

export const FUZZ_ROUTES: readonly (readonly [string, string])[] = [
  ['GET', '/health'],
  ['GET', '/v1/models'],
  ['POST', '/v1/chat/completions'],
  ['POST', '/v1/completions'],
  ['POST', '/v1/embeddings'],
  ['GET', '/v1/models/tiny'],
];

/** `/v1/models/{id}`: the one prefix route, one segment of [A-Za-z0-9._:-]{1,128} that is not a dot segment. */
function isModelPath(path: string): boolean {
  const prefix = '/v1/models/';
  if (!path.startsWith(prefix)) return false;
  const id = path.slice(prefix.length);
  return /^[A-Za-z0-9._:-]{1,128}$/.test(id) && id !== '.' && id !== '..';
}

/** Node's head limit in the fixture (16 KiB, counted as {@link headSize} does). */
export const HEAD_LIMIT = 16 * 1024;
const MAX_TARGET = 8192;

/** The Host names of a front door bound to 127.0.0.1:P (D5.1: from the bound port; no [::1] for a v4 bind). */
export function allowedFrontDoorHosts(port: number): Set<string> {
  return new Set([`127.0.0.1:${port}`, `localhost:${port}`]);
}

function isVisibleAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/**
 * The head size as Node's parser counts it against maxHeaderSize: the target and every header's name and
 * value, without separators (so 4,000 empty `a:` fields still fit in 16 KiB). Measured, not documented:
 * sizes near the limit are left to either outcome.
 */
export function headSize(model: RequestModel): number {
  let size = model.target.length;
  for (const [name, value] of model.headers) size += name.length + value.replace(/^[ \t]+|[ \t]+$/g, '').length;
  return size;
}

/**
 * The reference predicate: would a correct front door bound to `ctx.port` serve this request?
 * `either` only where the message's syntax is ambiguous (obs-fold, bare LF, …) and the lenient reading is
 * itself acceptable.
 */
export function frontDoorVerdict(model: RequestModel, ctx: FrontDoorFuzzContext): Verdict {
  if (model.malformed !== undefined) return 'refuse';
  const verdict = acceptable(model, ctx);
  if (verdict === false) return 'refuse';
  return model.either !== undefined || verdict === 'either' ? 'either' : 'accept';
}

function acceptable(model: RequestModel, ctx: FrontDoorFuzzContext): boolean | 'either' {
  if (model.version !== 'HTTP/1.1' && model.version !== 'HTTP/1.0') return false;
  // Target: origin-form, exactly a served path, an optional query of visible ASCII without # or \.
  const target = model.target;
  if (target.length > MAX_TARGET) return false;
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q + 1);
  if (query !== '' && (!isVisibleAscii(query) || query.includes('#') || query.includes('\\'))) return false;
  const route = FUZZ_ROUTES.find(([method, p]) => method === model.method && p === path);
  if (route === undefined && !(model.method === 'GET' && isModelPath(path))) return false;
  // Host: exactly one, one of the bound port's names (host names compare case-insensitively).
  const hosts = headerValues(model, 'host');
  if (hosts.length !== 1) return false;
  const host = hosts[0]!.toLowerCase();
  if (!allowedFrontDoorHosts(ctx.port).has(host)) return false;
  // Browser context: no Origin at all (none configured), a Referer on this very origin, a same-origin fetch.
  if (headerValues(model, 'origin').length > 0) return false;
  const referers = headerValues(model, 'referer');
  if (referers.length > 1) return false;
  if (referers.length === 1) {
    const referer = referers[0]!;
    const origin = `http://${host}`;
    if (referer.slice(0, origin.length).toLowerCase() !== origin) return false;
    const next = referer.charAt(origin.length);
    if (next !== '' && next !== '/' && next !== '?' && next !== '#') return false;
  }
  const sites = headerValues(model, 'sec-fetch-site');
  if (sites.length > 1 || (sites.length === 1 && sites[0] !== 'same-origin' && sites[0] !== 'none')) return false;
  // Token: exactly one Authorization, scheme Bearer (any case), spaces, the token and nothing else.
  const auth = headerValues(model, 'authorization');
  if (auth.length !== 1) return false;
  const match = /^bearer( +)(.*)$/i.exec(auth[0]!);
  if (match === null || match[2] !== ctx.token) return false;
  // No protocol switch, no unknown expectation.
  const connection = headerValues(model, 'connection')
    .join(',')
    .toLowerCase()
    .split(',')
    .map((t) => t.trim());
  if (connection.includes('upgrade') && headerValues(model, 'upgrade').length > 0) return false;
  const expect = headerValues(model, 'expect');
  const unknownExpectation = expect.length > 1 || (expect.length === 1 && expect[0]!.toLowerCase() !== '100-continue');
  // RFC 9110 §10.1.1: an HTTP/1.0 server ignores expectations; a 1.1 server answers 417 to unknown ones.
  if (unknownExpectation && model.version === 'HTTP/1.1') return false;
  // Framing and limits.
  const size = headSize(model);
  if (size > HEAD_LIMIT + 1024) return false;
  const nearLimit = size > HEAD_LIMIT - 1024;
  const lengths = headerValues(model, 'content-length');
  const chunked = headerValues(model, 'transfer-encoding').length > 0;
  if (lengths.length > 1 || (lengths.length === 1 && chunked)) return false;
  if (lengths.length === 1 && !/^\d+$/.test(lengths[0]!)) return false;
  // Only the POST routes read a body: a GET is answered from its head, whatever body it declares.
  if (model.method === 'POST' && lengths.length === 1 && Number(lengths[0]) > (ctx.maxBodyBytes ?? 1 << 20))
    return false;
  if (chunked && model.version === 'HTTP/1.0') return false;
  // RFC 9110 §5.5 makes a trailing HTAB optional whitespace; Node's parser refuses it after a coding.
  const tabAfterCoding = model.headers.some(([n, v]) => n.toLowerCase() === 'transfer-encoding' && /\t$/.test(v));
  return unknownExpectation || tabAfterCoding || nearLimit ? 'either' : true;
}

// ---------------------------------------------------------------------------------------------------------
// Generation

function jsonBody(id: number, stream: boolean): Buffer {
  return Buffer.from(
    JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: `fuzz ${id}` }], max_tokens: 1, stream }),
  );
}

export function chunkedEncode(body: Buffer, rng: Prng, extension = false): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at < body.length) {
    const size = Math.min(body.length - at, rng.range(1, 40));
    parts.push(
      Buffer.from(`${size.toString(16)}${extension ? ';ext=1' : ''}\r\n`, 'latin1'),
      body.subarray(at, at + size),
      Buffer.from('\r\n'),
    );
    at += size;
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

/** Host values around the allow-list of 127.0.0.1:P. */
export function hostVariants(port: number): string[] {
  const P = port;
  const utf8 = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
  return [
    // Allowed, in several spellings.
    `127.0.0.1:${P}`,
    `localhost:${P}`,
    `LOCALHOST:${P}`,
    `LocalHost:${P}`,
    // Another origin, no port, another port, odd port forms.
    'evil.example',
    `evil.example:${P}`,
    `attacker.test:${P}`,
    '127.0.0.1',
    'localhost',
    `127.0.0.1:${P + 1}`,
    `localhost:${P - 1}`,
    `127.0.0.1:0${P}`,
    `127.0.0.1:+${P}`,
    `127.0.0.1:${P}.`,
    `127.0.0.1:${P}:${P}`,
    `localhost:${P}:80`,
    `127.0.0.1:${P}0`,
    `127.0.0.1:`,
    // Trailing dots.
    `127.0.0.1.:${P}`,
    `localhost.:${P}`,
    `LOCALHOST.:${P}`,
    `localhost..:${P}`,
    // IPv4 encodings of 127.0.0.1 and other loopback or wildcard addresses.
    `2130706433:${P}`,
    `0x7f000001:${P}`,
    `0x7F.0.0.1:${P}`,
    `0177.0.0.1:${P}`,
    `017700000001:${P}`,
    `127.1:${P}`,
    `127.0.1:${P}`,
    `127.000.000.001:${P}`,
    `127.0.0.01:${P}`,
    `127.0.0.2:${P}`,
    `127.255.255.254:${P}`,
    `0.0.0.0:${P}`,
    `0:${P}`,
    // IPv6 forms (the door is bound to 127.0.0.1: no IPv6 name is one of its names).
    `[::1]:${P}`,
    `[::ffff:127.0.0.1]:${P}`,
    `[::ffff:7f00:1]:${P}`,
    `[0:0:0:0:0:0:0:1]:${P}`,
    `[::1%25lo]:${P}`,
    `[::1%lo]:${P}`,
    `::1:${P}`,
    '[::1]',
    `[::]:${P}`,
    // Userinfo, paths and fragments inside Host.
    `user@127.0.0.1:${P}`,
    `evil.example@127.0.0.1:${P}`,
    `127.0.0.1:${P}@evil.example`,
    `127.0.0.1:${P}#@evil.example`,
    `127.0.0.1:${P}/evil`,
    `127.0.0.1:${P}?`,
    `:@127.0.0.1:${P}`,
    // Whitespace inside, look-alike and rebinding names.
    `127.0.0.1 :${P}`,
    `127.0.0.1: ${P}`,
    `local host:${P}`,
    `localhost.evil.example:${P}`,
    `evil.localhost:${P}`,
    `127.0.0.1.nip.io:${P}`,
    `localtest.me:${P}`,
    `127%2E0.0.1:${P}`,
    `localhost%00:${P}`,
    `localhost%2e:${P}`,
    utf8(`ｌｏｃａｌｈｏｓｔ:${P}`),
    utf8(`localhost\u3002:${P}`),
    utf8(`LOCALHOST\u0130:${P}`),
    `locaLhost\xad:${P}`,
    // Empty and junk.
    '',
    '*',
    `:${P}`,
    `${P}`,
    `127.0.0.1:${P},evil.example`,
    `evil.example, 127.0.0.1:${P}`,
  ];
}

function targetVariants(path: string, port: number, rng: Prng): string[] {
  const P = port;
  const upper = path.toUpperCase();
  const slashes = path.split('/');
  const last = slashes[slashes.length - 1]!;
  const dir = slashes.slice(0, -1).join('/') || '';
  return [
    // Served.
    path,
    `${path}?x=1`,
    `${path}?`,
    `${path}?a=%00&b=/..//&c=%2e%2e`,
    `${path}?${'q'.repeat(rng.range(1, 2000))}`,
    `${path}?a=b?c=d`,
    // Absolute-form, scheme-relative, asterisk, authority-form.
    `http://127.0.0.1:${P}${path}`,
    `http://localhost:${P}${path}`,
    `HTTP://127.0.0.1:${P}${path}`,
    `https://evil.example${path}`,
    `http://evil.example:${P}${path}`,
    `//evil.example${path}`,
    `//127.0.0.1:${P}${path}`,
    `/${path}`,
    '*',
    `127.0.0.1:${P}`,
    `localhost:${P}`,
    // Not exactly a served path.
    `${path}/`,
    upper,
    `${dir}/./${last}`,
    `${dir}/../${dir.slice(1)}/${last}`,
    `/.${path}`,
    `${dir}//${last}`,
    `${path}/.`,
    `${path}/..`,
    `${dir}/%${last.charCodeAt(0).toString(16)}${last.slice(1)}`,
    `${dir}%2f${last}`,
    `${dir}%2F${last}`,
    `${path}%00`,
    `${path}%20`,
    `${path}.`,
    `${path};x`,
    `${path}#frag`,
    `${path}?a#b`,
    path.replaceAll('/', '\\'),
    `${dir}\\${last}`,
    path.slice(1),
    `${path}?x=\\`,
    `${path}%`,
    `${path}%zz`,
    `/${'a'.repeat(MAX_TARGET + 10)}`,
    `${path}?${'q'.repeat(MAX_TARGET)}`,
  ];
}

const OTHER_METHODS = [
  'HEAD',
  'OPTIONS',
  'PUT',
  'DELETE',
  'PATCH',
  'TRACE',
  'PROPFIND',
  'SEARCH',
  'QUERY',
  'LINK',
  'PURGE',
  'MKCOL',
  'COPY',
  'SOURCE',
];

/** The base request: served, well-formed, with the right token and one allowed Host. */
function baseRequest(
  rng: Prng,
  id: number,
  ctx: FrontDoorFuzzContext,
): { model: RequestModel; route: readonly [string, string] } {
  const route = rng.pick(FUZZ_ROUTES);
  const [method, path] = route;
  const version = rng.chance(0.1) ? 'HTTP/1.0' : 'HTTP/1.1';
  const pad = (value: string): string =>
    rng.chance(0.1) ? `${rng.pick([' ', '\t', '  ', ' \t'])}${value}${rng.pick(['', ' ', '\t'])}` : ` ${value}`;
  const name = (n: string): string => (rng.chance(0.25) ? rng.mixCase(n) : n);
  const headers: [string, string][] = [];
  headers.push([name('Host'), pad(rng.pick([`127.0.0.1:${ctx.port}`, `localhost:${ctx.port}`]))]);
  const scheme = rng.weighted([
    [8, 'Bearer'],
    [1, 'bearer'],
    [1, 'BEARER'],
  ] as const);
  headers.push([name('Authorization'), pad(`${scheme}${rng.chance(0.1) ? '   ' : ' '}${ctx.token}`)]);
  headers.push([name('Accept'), ` application/json;fuzz=${id}`]);
  if (rng.chance(0.3))
    headers.push([
      name('User-Agent'),
      pad(rng.pick(['curl/8.5.0', 'OpenAI/JS 6.49.0', 'python-requests/2.31', `fuzz-${id}`])),
    ]);
  if (rng.chance(0.05)) headers.push([name('Sec-Fetch-Site'), pad(rng.pick(['same-origin', 'none']))]);
  if (rng.chance(0.05)) {
    const host = headers[0]![1].trim();
    headers.push([
      name('Referer'),
      pad(rng.pick([`http://${host}`, `http://${host}/`, `http://${host}/page?x=1`, `HTTP://${host.toUpperCase()}/p`])),
    ]);
  }
  if (rng.chance(0.1)) headers.push([name('Connection'), pad(rng.pick(['keep-alive', 'close', 'Keep-Alive']))]);
  if (rng.chance(0.03)) headers.push([name('X-Forwarded-Host'), pad('evil.example')]);
  if (rng.chance(0.03)) headers.push([name('Forwarded'), pad('host=evil.example;for=203.0.113.9')]);
  if (rng.chance(0.03)) headers.push([name('Cookie'), pad('session=abc')]);
  if (rng.chance(0.02)) headers.push([name('Upgrade'), pad('h2c')]); // without Connection: upgrade it means nothing
  if (rng.chance(0.03)) headers.push([name('Expect'), pad('100-continue')]);
  let body: Buffer | null = null;
  if (method === 'POST') {
    const json = jsonBody(id, rng.chance(0.3));
    headers.push([name('Content-Type'), pad('application/json')]);
    if (version === 'HTTP/1.1' && rng.chance(0.15)) {
      headers.push([name('Transfer-Encoding'), pad('chunked')]);
      body = chunkedEncode(json, rng, rng.chance(0.2));
    } else if (rng.chance(0.03)) {
      headers.push([name('Content-Length'), ' 0']); // an empty body is served too
      body = null;
    } else {
      headers.push([name('Content-Length'), ` ${json.length}`]);
      body = json;
    }
  } else if (rng.chance(0.02)) {
    headers.push([name('Content-Length'), ' 2']);
    body = Buffer.from('{}');
  }
  // Random header order (Host first is only the most common case).
  if (rng.chance(0.5)) {
    for (let i = headers.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [headers[i], headers[j]] = [headers[j]!, headers[i]!];
    }
  }
  return { model: { method, target: path, version, headers, body }, route };
}

type Mutation = (model: RequestModel, rng: Prng, ctx: FrontDoorFuzzContext, route: readonly [string, string]) => void;

/** Sets (or with null removes) a header, keeping the first one's name spelling. */
export function setHeader(model: RequestModel, name: string, value: string | null): void {
  const lower = name.toLowerCase();
  const at = model.headers.findIndex(([n]) => n.toLowerCase() === lower);
  if (value === null) {
    model.headers = model.headers.filter(([n]) => n.toLowerCase() !== lower);
    return;
  }
  if (at === -1) model.headers.push([name, ` ${value}`]);
  else model.headers[at] = [model.headers[at]![0], ` ${value}`];
}

/** Inserts a header at a random position. */
export function insertAt(model: RequestModel, rng: Prng, header: [string, string]): void {
  model.headers.splice(rng.int(model.headers.length + 1), 0, header);
}

/** Replaces the serialisation with `raw`; the model keeps the lenient reading. */
function rawWith(model: RequestModel, edit: (head: string) => string): void {
  const head = serialise({ ...model, body: null }).toString('latin1');
  model.raw = Buffer.concat([Buffer.from(edit(head), 'latin1'), model.body ?? Buffer.alloc(0)]);
}

const MUTATIONS: readonly (readonly [number, string, Mutation])[] = [
  [14, 'host-value', (m, rng, ctx) => setHeader(m, 'Host', rng.pick(hostVariants(ctx.port)))],
  [
    4,
    'host-duplicate',
    (m, rng, ctx) =>
      insertAt(m, rng, [
        rng.pick(['Host', 'host', 'HOST']),
        ` ${rng.pick([`127.0.0.1:${ctx.port}`, `localhost:${ctx.port}`, 'evil.example', `evil.example:${ctx.port}`])}`,
      ]),
  ],
  [3, 'host-missing', (m) => setHeader(m, 'Host', null)],
  [
    2,
    'header-flood',
    (m, rng, ctx) => {
      // Past Node's default header count (2000 fields): a later Host or Origin must not be dropped unseen.
      const flood: [string, string][] = Array.from({ length: rng.range(1100, 3000) }, (_, i) => [
        rng.chance(0.5) ? 'a' : `x${i % 10}`,
        '',
      ]);
      const tail: [string, string] = rng.pick([
        ['Host', ' evil.example'],
        ['Host', ` 127.0.0.1:${ctx.port}`],
        ['Origin', ' http://evil.example'],
        ['Authorization', ' Bearer wrong-token-xxxxxxxx'],
        ['Sec-Fetch-Site', ' cross-site'],
        ['X-Tail', ' 1'],
      ]);
      m.headers = [...m.headers, ...flood, tail];
    },
  ],
  [
    10,
    'target',
    (m, rng, ctx, route) => {
      m.target = rng.pick(targetVariants(route[1], ctx.port, rng));
    },
  ],
  [
    6,
    'method',
    (m, rng, _ctx, route) => {
      const other = FUZZ_ROUTES.filter(([, p]) => p !== route[1]).map(([meth]) => meth);
      m.method = rng.pick([
        ...OTHER_METHODS,
        ...other,
        route[0].toLowerCase(),
        rng.mixCase(route[0]),
        `${route[0]}X`,
        route[0].slice(1),
      ]);
    },
  ],
  [
    1,
    'connect',
    (m, _rng, ctx) => {
      m.method = 'CONNECT';
      m.target = `127.0.0.1:${ctx.port}`;
    },
  ],
  [
    5,
    'version',
    (m, rng) => {
      if (m.malformed === 'version') delete m.malformed;
      m.version = rng.pick([
        'HTTP/1.0',
        'HTTP/2.0',
        'HTTP/1.2',
        'HTTP/0.9',
        'HTTP/3.0',
        'HTTP/1.10',
        'http/1.1',
        'HTTP/1.1 ',
        'HTTP/ 1.1',
        'HTTP/1',
        '',
      ]);
      if (m.version === 'HTTP/1.0' && headerValues(m, 'transfer-encoding').length > 0) m.version = 'HTTP/1.1';
      if (
        m.version === 'HTTP/1.1 ' ||
        m.version === 'HTTP/ 1.1' ||
        m.version === 'HTTP/1' ||
        m.version === 'http/1.1' ||
        m.version === 'HTTP/1.10'
      )
        m.malformed = 'version';
      if (m.version === '') {
        // The HTTP/0.9 form has no headers at all.
        m.headers = [];
        m.body = null;
      }
    },
  ],
  [
    7,
    'origin',
    (m, rng, ctx) =>
      insertAt(m, rng, [
        'Origin',
        ` ${rng.pick(['http://evil.example', 'null', `http://127.0.0.1:${ctx.port}`, `http://localhost:${ctx.port}`, 'https://hub.example', '', 'http://127.0.0.1'])}`,
      ]),
  ],
  [
    5,
    'referer',
    (m, rng, ctx) => {
      const P = ctx.port;
      insertAt(m, rng, [
        'Referer',
        ` ${rng.pick([`http://127.0.0.1:${P}/`, `http://localhost:${P}/x`, 'https://evil.example/', `http://127.0.0.1:${P}@evil.example/`, `http://127.0.0.1:${P}0/`, `http://localhost:${P}.evil.example/`, `https://127.0.0.1:${P}/`, `http://127.0.0.1:${P}`, `http://127.0.0.1:${P}?q`, `http://127.0.0.1:${P}#f`, 'about:blank', ''])}`,
      ]);
    },
  ],
  [
    5,
    'fetch-site',
    (m, rng) =>
      insertAt(m, rng, [
        'Sec-Fetch-Site',
        ` ${rng.pick(['cross-site', 'same-site', 'same-origin', 'none', 'Same-Origin', 'NONE', '', 'same-origin, cross-site'])}`,
      ]),
  ],
  [
    12,
    'token',
    (m, rng, ctx) => {
      const t = ctx.token;
      const flip = (s: string, i: number): string => `${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
      const choice = rng.int(16);
      const values = [
        null,
        `Bearer ${flip(t, rng.int(t.length))}`,
        `Bearer ${t.slice(0, -1)}`,
        `Bearer ${t}x`,
        `Bearer ${t}=`,
        `Basic ${Buffer.from(`x:${t}`).toString('base64')}`,
        `Bearer${t}`,
        `Bearer\t${t}`,
        `Bearer ${t} extra`,
        `Bearer ${t.toUpperCase()}`,
        `Token ${t}`,
        `Bearer "${t}"`,
        `Bearer ${t},Bearer ${t}`,
        t,
        '',
        'Bearer ',
      ];
      setHeader(m, 'Authorization', values[choice] ?? null);
      if (choice === 0 && rng.chance(0.5))
        m.target = `${m.target}${m.target.includes('?') ? '&' : '?'}access_token=${t}`;
    },
  ],
  [
    3,
    'token-duplicate',
    (m, rng, ctx) =>
      insertAt(m, rng, ['Authorization', ` Bearer ${rng.chance(0.5) ? ctx.token : 'x'.repeat(ctx.token.length)}`]),
  ],
  [
    3,
    'token-scheme-case',
    (m, rng, ctx) =>
      setHeader(m, 'Authorization', `${rng.mixCase('bearer')}${' '.repeat(rng.range(1, 4))}${ctx.token}`),
  ],
  [
    2,
    'upgrade',
    (m, rng) => {
      insertAt(m, rng, ['Connection', ` ${rng.pick(['Upgrade', 'keep-alive, Upgrade', 'upgrade'])}`]);
      insertAt(m, rng, ['Upgrade', ` ${rng.pick(['websocket', 'h2c', 'foo'])}`]);
      if (m.version !== 'HTTP/1.1') m.version = 'HTTP/1.1';
    },
  ],
  [2, 'expect', (m, rng) => setHeader(m, 'Expect', rng.pick(['100-continue', '200-ok', 'something', '100-Continue']))],
  [
    4,
    'neutral-headers',
    (m, rng) => {
      for (let i = rng.range(1, 20); i > 0; i--)
        insertAt(m, rng, [
          `X-${rng.mixCase('fuzz')}-${i}`,
          ` ${rng.pick(['1', 'a b c', '', '\t', 'évité'.normalize('NFC'), '"quoted"', 'x'.repeat(rng.range(1, 300))])}`,
        ]);
    },
  ],
  [
    3,
    'big-header',
    (m, rng) => {
      const size = rng.pick([2_000, 6_000, 11_000, 20_000, 40_000, 70_000]);
      insertAt(m, rng, ['X-Pad', ` ${'p'.repeat(size)}`]);
    },
  ],
  [3, 'body-framing', (m, rng) => bodyFraming(m, rng)],
  [10, 'bytes', (m, rng, ctx) => byteTrick(m, rng, ctx)],
];

/** Body framing: declared too large, both framings, bad lengths, bad chunks, duplicate lengths, codings. */
export function bodyFraming(m: RequestModel, rng: Prng): void {
  const chunked = headerValues(m, 'transfer-encoding').length > 0;
  const lengths = headerValues(m, 'content-length');
  switch (rng.int(6)) {
    case 0: // Declared larger than the limit: refused before any body is read.
      setHeader(m, 'Transfer-Encoding', null);
      setHeader(m, 'Content-Length', String(rng.pick([2_000_000, 1_048_577, 99_999_999])));
      m.body = null;
      return;
    case 1: // Both framings (RFC 9112 §6.3: a server may reject it, or process it with TE and close).
      if (m.body === null || chunked || m.version !== 'HTTP/1.1') return;
      insertAt(m, rng, ['Transfer-Encoding', ' chunked']);
      m.body = chunkedEncode(m.body, rng);
      m.malformed = 'Content-Length and Transfer-Encoding together';
      m.either = 'a server may process it with Transfer-Encoding';
      return;
    case 2: // A Content-Length that is not a number.
      setHeader(m, 'Transfer-Encoding', null);
      setHeader(m, 'Content-Length', rng.pick(['-1', 'abc', '1 2', '0x10', '1e3']));
      m.body = null;
      m.malformed = 'content-length';
      return;
    case 3: // Broken chunks.
      if (m.version !== 'HTTP/1.1') return;
      setHeader(m, 'Content-Length', null);
      setHeader(m, 'Transfer-Encoding', 'chunked');
      m.body = Buffer.from(
        rng.pick(['zz\r\nab\r\n0\r\n\r\n', '-1\r\n\r\n', '2\r\nabc\r\n0\r\n\r\n', '2 2\r\nab\r\n0\r\n\r\n']),
      );
      // A GET is answered from its head before the broken body is parsed; a POST reads the body first.
      if (m.method === 'POST') m.malformed = 'chunk framing';
      else m.either = 'broken chunks in a body the route never reads';
      return;
    case 4: {
      // The same Content-Length twice (RFC 9110 §8.6 lets a recipient accept identical values).
      if (m.body === null || lengths.length !== 1) return;
      const length = lengths[0]!;
      rawWith(m, (head) => head.replace(/\r\n\r\n$/, `\r\nContent-Length: ${length}\r\n\r\n`));
      m.either = 'identical duplicate Content-Length';
      return;
    }
    default: // Other transfer codings around chunked.
      if (m.body === null || m.version !== 'HTTP/1.1') return;
      setHeader(m, 'Content-Length', null);
      setHeader(m, 'Transfer-Encoding', rng.pick(['gzip, chunked', 'chunked, identity', 'identity, chunked']));
      m.body = chunkedEncode(Buffer.from(JSON.stringify({ stream: false })), rng);
      m.either = 'transfer codings the server does not apply';
  }
}

/** CR / LF / NUL tricks, obs-fold, odd separators: the raw bytes change, the model keeps the lenient reading. */
export function byteTrick(m: RequestModel, rng: Prng, ctx: { readonly port: number }): void {
  const P = ctx.port;
  switch (rng.int(14)) {
    case 0: // NUL somewhere in the head: never valid.
      rawWith(m, (head) => {
        const at = rng.range(1, head.length - 5);
        return `${head.slice(0, at)}\0${head.slice(at)}`;
      });
      m.malformed = 'NUL';
      return;
    case 1: // A bare CR inside the Host value (a header-splitting attempt with CR only).
      rawWith(m, (head) => head.replace(/(\r\n[Hh][Oo][Ss][Tt]:[^\r]*)/, '$1\rHost: evil.example'));
      m.malformed = 'bare CR';
      return;
    case 2: // A bare LF in a harmless header that, read leniently, adds a second Host: refused either way.
      insertAt(m, rng, ['X-Inject', ' a\nHost: evil.example']);
      m.malformed = 'bare LF adding a second Host';
      return;
    case 3: {
      // A bare LF between two harmless headers.
      const at = rng.int(m.headers.length + 1);
      m.headers.splice(at, 0, ['X-Inject', ' a'], ['X-Other', ' b']);
      rawWith(m, (head) => head.replace('X-Inject: a\r\nX-Other: b\r\n', 'X-Inject: a\nX-Other: b\r\n'));
      m.either = 'a bare LF as a line end (RFC 9112 §2.2 MAY)';
      return;
    }
    case 4: // LF-only line ends throughout.
      m.eol = '\n';
      m.either = 'LF-only line ends (RFC 9112 §2.2 MAY)';
      return;
    case 5: // obs-fold of a harmless header.
      m.headers.push(['X-Folded', ' a b']);
      rawWith(m, (head) => head.replace('X-Folded: a b\r\n', 'X-Folded: a\r\n b\r\n'));
      m.either = 'obs-fold (RFC 9112 §5.2 lets a server unfold it)';
      return;
    case 6: // obs-fold that appends to Host: refused either way.
      rawWith(m, (head) => head.replace(/(\r\n[Hh][Oo][Ss][Tt]:[^\r]*)\r\n/, '$1\r\n evil.example\r\n'));
      m.headers = m.headers.map(([n, v]) => (n.toLowerCase() === 'host' ? [n, `${v} evil.example`] : [n, v]));
      m.malformed = 'obs-fold';
      return;
    case 7: // Whitespace before the colon (RFC 9112 §5.1: MUST reject).
      rawWith(m, (head) => head.replace(/\r\n([Hh][Oo][Ss][Tt]):/, '\r\n$1 :'));
      if (headerValues(m, 'host').length > 0) m.malformed = 'space before colon';
      return;
    case 8: // A first header line that starts with whitespace.
      rawWith(m, (head) => head.replace(/^([^\r\n]*\r\n)/, `$1 Host: 127.0.0.1:${P}\r\n`));
      m.malformed = 'a header line starting with whitespace';
      return;
    case 9: {
      // Control characters in a value, or a header name that is not a token.
      const name = rng.pick(['X-Ctl', 'X\x01Ctl', 'X Ctl', 'X/Ctl', 'X(Ctl)', 'X@Ctl', 'X\x7fCtl']);
      const value = rng.pick(['a\x01b', 'a\x7fb', 'a\x1bb', 'ok']);
      insertAt(m, rng, [name, ` ${value}`]);
      if (name !== 'X-Ctl' || value !== 'ok') m.malformed = 'control character or bad header name';
      return;
    }
    case 10: // Odd request-line separators.
      rawWith(m, (head) => head.replace(' ', rng.pick(['  ', '\t', ' \t'])));
      m.malformed = 'request-line whitespace';
      m.either = 'a lenient parser may accept odd request-line whitespace';
      return;
    case 11: // An empty line before the request line (RFC 9112 §2.2: SHOULD ignore it).
      rawWith(m, (head) => `\r\n${head}`);
      m.either = 'a leading empty line';
      return;
    case 12: // A header line without a colon.
      rawWith(m, (head) => head.replace(/\r\n\r\n$/, '\r\nNoColonHere\r\n\r\n'));
      m.malformed = 'header without colon';
      return;
    default: // Bytes above 0x7f in the target.
      m.target = `${m.target}${rng.pick(['\xe9', '\xff', '\x80'])}`;
      m.malformed = 'non-ASCII target';
  }
}

/** Mutations that may rewrite the raw bytes: at most one per case, and it runs last. */
const RAW_KINDS = new Set(['bytes', 'body-framing']);

/** Generates one case (model, verdict, bytes). */
export function generateFrontDoorCase(
  rng: Prng,
  id: number,
  ctx: FrontDoorFuzzContext,
): { fuzzCase: FuzzCase; model: RequestModel; single: boolean } {
  const { model, route } = baseRequest(rng, id, ctx);
  const rounds = rng.weighted([
    [28, 0],
    [62, 1],
    [10, 2],
  ] as const);
  const chosen: (readonly [number, string, Mutation])[] = [];
  for (let i = 0; i < rounds; i++) chosen.push(rng.weighted(MUTATIONS.map((entry) => [entry[0], entry] as const)));
  const plain = chosen.filter(([, label]) => !RAW_KINDS.has(label));
  const raw = chosen.find(([, label]) => RAW_KINDS.has(label));
  const order = raw === undefined ? plain : [...plain, raw];
  for (const [, , mutate] of order) mutate(model, rng, ctx, route);
  const labels = order.map(([, label]) => label);
  let verdict = frontDoorVerdict(model, ctx);
  // Both an either-reason and a malformation: the strict reading refuses, a lenient one may serve.
  if (model.either !== undefined && model.malformed !== undefined) {
    const lenient: RequestModel = { ...model };
    delete lenient.malformed;
    verdict = frontDoorVerdict(lenient, ctx) === 'refuse' ? 'refuse' : 'either';
  }
  const bytes = serialise(model);
  const kind = labels.length === 0 ? 'base' : labels.join('+');
  const single =
    verdict === 'either' ||
    model.raw !== undefined ||
    model.malformed !== undefined ||
    model.either !== undefined ||
    model.eol !== undefined ||
    labels.includes('connect') ||
    labels.includes('upgrade') ||
    labels.includes('version') ||
    labels.includes('body-framing');
  return { fuzzCase: { id, bytes, verdict, kind, head: model.method === 'HEAD' }, model, single };
}

export interface BatchSource {
  next(): FuzzBatch | null;
  /** Every case generated so far, by id. */
  readonly cases: Map<number, FuzzCase>;
}

/**
 * Batches for `runFuzz`: malformed or ambiguous cases go alone on their connection; the rest are pipelined
 * 1–6 per connection. About 3% of connections dribble their bytes in small pieces. Stops once `stop()`
 * says so (the caller counts judged cases).
 */
export function frontDoorBatches(
  rng: Prng,
  ctx: FrontDoorFuzzContext,
  stop: () => boolean,
  localAddresses: readonly string[] = ['127.0.0.1'],
): BatchSource {
  let id = 0;
  let carry: { fuzzCase: FuzzCase; single: boolean } | null = null;
  const cases = new Map<number, FuzzCase>();
  const make = (): { fuzzCase: FuzzCase; single: boolean } => {
    const made = generateFrontDoorCase(rng, ++id, ctx);
    cases.set(made.fuzzCase.id, made.fuzzCase);
    return made;
  };
  return {
    cases,
    next() {
      if (stop()) return null;
      const first = carry ?? make();
      carry = null;
      const batch: FuzzCase[] = [first.fuzzCase];
      if (!first.single) {
        const size = rng.weighted([
          [40, 1],
          [20, 2],
          [15, 3],
          [10, 4],
          [8, 5],
          [7, 6],
        ] as const);
        while (batch.length < size) {
          const more = make();
          if (more.single) {
            carry = more;
            break;
          }
          batch.push(more.fuzzCase);
        }
      }
      const slow = rng.chance(0.03);
      return {
        cases: batch,
        localAddress: rng.pick(localAddresses),
        ...(slow ? { pieces: rng.range(2, 6), delayMs: rng.range(1, 15) } : {}),
      };
    },
  };
}
