// The redirect listener's raw-request fuzzer (issue 11; P-d): near-miss callbacks around its allow-list
// and an independent reference predicate. RFC 8252 §7.3 and D5.2 give the allow-list: `GET` of the exact
// callback path (any query), an origin-form target, exactly one `Host: 127.0.0.1:<port>`, a well-formed
// message within the limits. Browser headers (Origin, Referer, Sec-Fetch-*, cookies) do not matter: the
// browser that follows the hub's redirect sends them.
import { randomBytes } from 'node:crypto';
import { bodyFraming, byteTrick, HEAD_LIMIT, headSize, hostVariants, insertAt, setHeader } from './fuzz-front-door.js';
import {
  headerValues,
  serialise,
  type FuzzBatch,
  type FuzzCase,
  type Prng,
  type RequestModel,
  type Verdict,
} from './fuzz-http.js';

export interface ListenerFuzzContext {
  readonly port: number;
  /** The callback path (the listener's default: `/callback`). */
  readonly path: string;
}

/** The reference predicate: may the listener hand this request to `validate`? */
export function listenerVerdict(model: RequestModel, ctx: ListenerFuzzContext): Verdict {
  if (model.malformed !== undefined) return 'refuse';
  let either = model.either !== undefined;
  // The listener does not look at the version: a head Node parses as HTTP/2.0, or as HTTP/0.9 (no version)
  // with headers after it, is served like 1.1. Nothing in the allow-list depends on it.
  if (model.version !== 'HTTP/1.1' && model.version !== 'HTTP/1.0') either = true;
  if (model.method !== 'GET') return 'refuse';
  const target = model.target;
  if (!target.startsWith('/') || target.startsWith('//')) return 'refuse';
  const q = target.indexOf('?');
  if ((q === -1 ? target : target.slice(0, q)) !== ctx.path) return 'refuse';
  const hosts = headerValues(model, 'host');
  if (hosts.length !== 1 || hosts[0] !== `127.0.0.1:${ctx.port}`) return 'refuse';
  const size = headSize(model);
  if (size > HEAD_LIMIT + 1024) return 'refuse';
  if (size > HEAD_LIMIT - 1024) either = true;
  const expect = headerValues(model, 'expect');
  if (expect.length > 1 || (expect.length === 1 && expect[0]!.toLowerCase() !== '100-continue')) {
    if (model.version === 'HTTP/1.1') return 'refuse';
    either = true;
  }
  if (model.headers.some(([n, v]) => n.toLowerCase() === 'transfer-encoding' && /\t$/.test(v))) either = true;
  if (headerValues(model, 'content-length').length > 1) return 'refuse';
  return either ? 'either' : 'accept';
}

function b64(rng: Prng, n: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  let out = '';
  for (let i = 0; i < n; i++) out += alphabet[rng.int(64)];
  return out;
}

function query(rng: Prng, id: number): string {
  return `code=${b64(rng, 43)}&state=${b64(rng, 22)}&iss=https%3A%2F%2F127.0.0.1%3A8443&fuzzid=${id}`;
}

function baseCallback(rng: Prng, id: number, ctx: ListenerFuzzContext): RequestModel {
  const name = (n: string): string => (rng.chance(0.25) ? rng.mixCase(n) : n);
  const headers: [string, string][] = [
    [name('Host'), rng.chance(0.1) ? `\t127.0.0.1:${ctx.port} ` : ` 127.0.0.1:${ctx.port}`],
  ];
  // What a browser sends when it follows the hub's redirect.
  if (rng.chance(0.8)) headers.push([name('User-Agent'), ' Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0']);
  if (rng.chance(0.8)) headers.push([name('Accept'), ' text/html,application/xhtml+xml,*/*;q=0.8']);
  if (rng.chance(0.5)) headers.push([name('Referer'), ' https://127.0.0.1:8443/']);
  if (rng.chance(0.5)) headers.push([name('Sec-Fetch-Site'), ` ${rng.pick(['cross-site', 'same-site', 'none'])}`]);
  if (rng.chance(0.3)) headers.push([name('Sec-Fetch-Mode'), ' navigate']);
  if (rng.chance(0.1)) headers.push([name('Origin'), ' https://127.0.0.1:8443']);
  if (rng.chance(0.1)) headers.push([name('Cookie'), ' a=b']);
  if (rng.chance(0.3)) headers.push([name('Connection'), ` ${rng.pick(['keep-alive', 'close'])}`]);
  if (rng.chance(0.5)) {
    for (let i = headers.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [headers[i], headers[j]] = [headers[j]!, headers[i]!];
    }
  }
  return {
    method: 'GET',
    target: `${ctx.path}?${query(rng, id)}`,
    version: rng.chance(0.1) ? 'HTTP/1.0' : 'HTTP/1.1',
    headers,
    body: null,
  };
}

type Mutation = (m: RequestModel, rng: Prng, ctx: ListenerFuzzContext, id: number) => void;

function targetVariants(ctx: ListenerFuzzContext, rng: Prng, id: number): string[] {
  const p = ctx.path;
  const P = ctx.port;
  const q = query(rng, id);
  return [
    `${p}?${q}`,
    `${p}?${q}#frag`,
    `${p}?${q}&x=%00`,
    `${p}?${q}&redirect=https://evil.example/`,
    `${p}?fuzzid=${id}`,
    `${p}?${q}&${'q'.repeat(rng.range(1, 3000))}`,
    `http://127.0.0.1:${P}${p}?${q}`,
    `http://evil.example${p}?${q}`,
    `//127.0.0.1:${P}${p}?${q}`,
    `//evil.example${p}?${q}`,
    `*`,
    `127.0.0.1:${P}`,
    `${p}/?${q}`,
    `${p.toUpperCase()}?${q}`,
    `/.${p}?${q}`,
    `${p}/..?${q}`,
    `${p}/../${p.slice(1)}?${q}`,
    `/${p}?${q}`,
    `${p}x?${q}`,
    `${p};x?${q}`,
    `${p}%3F${q}`,
    `${p}#?${q}`,
    `${p}%2F?${q}`,
    `/%63allback?${q}`,
    `${p}\\?${q}`,
    `${p.slice(1)}?${q}`,
    `/?${q}`,
    `/favicon.ico?fuzzid=${id}`,
    `${p}.html?${q}`,
  ];
}

const MUTATIONS: readonly (readonly [number, string, Mutation])[] = [
  [
    14,
    'host-value',
    (m, rng, ctx) =>
      setHeader(
        m,
        'Host',
        rng.pick([...hostVariants(ctx.port), `127.0.0.1:${ctx.port}`, `localhost:${ctx.port}`, `[::1]:${ctx.port}`]),
      ),
  ],
  [
    5,
    'host-duplicate',
    (m, rng, ctx) =>
      insertAt(m, rng, [
        rng.pick(['Host', 'host']),
        ` ${rng.pick([`127.0.0.1:${ctx.port}`, 'evil.example', `localhost:${ctx.port}`])}`,
      ]),
  ],
  [3, 'host-missing', (m) => setHeader(m, 'Host', null)],
  [
    2,
    'header-flood',
    (m, rng, ctx) => {
      const flood: [string, string][] = Array.from({ length: rng.range(1100, 2600) }, (_, i) => [
        rng.chance(0.5) ? 'a' : `x${i % 10}`,
        '',
      ]);
      const tail: [string, string] = rng.pick([
        ['Host', ' evil.example'],
        ['Host', ` 127.0.0.1:${ctx.port}`],
        ['X-Tail', ' 1'],
      ]);
      m.headers = [...m.headers, ...flood, tail];
    },
  ],
  [
    14,
    'target',
    (m, rng, ctx, id) => {
      m.target = rng.pick(targetVariants(ctx, rng, id));
    },
  ],
  [
    7,
    'method',
    (m, rng) => {
      m.method = rng.pick([
        'POST',
        'HEAD',
        'OPTIONS',
        'PUT',
        'DELETE',
        'PATCH',
        'TRACE',
        'get',
        'Get',
        'GETX',
        'ET',
        'PROPFIND',
      ]);
      if (m.method === 'POST' || m.method === 'PUT') {
        const body = Buffer.from('code=x&state=y');
        setHeader(m, 'Content-Type', 'application/x-www-form-urlencoded');
        setHeader(m, 'Content-Length', String(body.length));
        m.body = body;
      }
    },
  ],
  [
    4,
    'version',
    (m, rng) => {
      if (m.malformed === 'version') delete m.malformed;
      m.version = rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/0.9', 'http/1.1', 'HTTP/1.1 ', 'HTTP/1', '']);
      if (m.version === 'HTTP/1.1 ' || m.version === 'HTTP/1' || m.version === 'http/1.1') m.malformed = 'version';
      if (m.version === '') m.headers = [];
    },
  ],
  [
    4,
    'browser-headers',
    (m, rng) => {
      insertAt(m, rng, [
        rng.pick([
          'Origin',
          'Referer',
          'Sec-Fetch-Site',
          'Sec-Fetch-Dest',
          'Cookie',
          'Authorization',
          'X-Forwarded-Host',
          'Forwarded',
        ]),
        ` ${rng.pick(['https://evil.example', 'null', 'cross-site', 'document', 'sid=1', 'Bearer x', 'evil.example', 'host=evil.example'])}`,
      ]);
    },
  ],
  [
    2,
    'upgrade',
    (m, rng) => {
      insertAt(m, rng, ['Connection', ' Upgrade']);
      insertAt(m, rng, ['Upgrade', ' websocket']);
    },
  ],
  [2, 'expect', (m, rng) => setHeader(m, 'Expect', rng.pick(['100-continue', '200-ok']))],
  [
    3,
    'big-header',
    (m, rng) => insertAt(m, rng, ['X-Pad', ` ${'p'.repeat(rng.pick([2_000, 9_000, 20_000, 60_000]))}`]),
  ],
  [
    2,
    'body',
    (m, rng) => {
      const body = Buffer.from(`x=${'b'.repeat(rng.range(0, 200))}`);
      setHeader(m, 'Content-Length', String(body.length));
      m.body = body;
    },
  ],
  [2, 'body-framing', (m, rng) => bodyFraming(m, rng)],
  [10, 'bytes', (m, rng, ctx) => byteTrick(m, rng, ctx)],
];

const RAW_KINDS = new Set(['bytes', 'body-framing']);

/** Generates one callback case; every target carries `fuzzid=<id>` so a validate call can be attributed. */
export function generateListenerCase(
  rng: Prng,
  id: number,
  ctx: ListenerFuzzContext,
): { fuzzCase: FuzzCase; single: boolean } {
  const model = baseCallback(rng, id, ctx);
  const rounds = rng.weighted([
    [25, 0],
    [65, 1],
    [10, 2],
  ] as const);
  const chosen: (readonly [number, string, Mutation])[] = [];
  for (let i = 0; i < rounds; i++) chosen.push(rng.weighted(MUTATIONS.map((entry) => [entry[0], entry] as const)));
  const raw = chosen.find(([, label]) => RAW_KINDS.has(label));
  const order = [...chosen.filter(([, label]) => !RAW_KINDS.has(label)), ...(raw === undefined ? [] : [raw])];
  for (const [, , mutate] of order) mutate(model, rng, ctx, id);
  let verdict = listenerVerdict(model, ctx);
  if (model.either !== undefined && model.malformed !== undefined) {
    const lenient: RequestModel = { ...model };
    delete lenient.malformed;
    verdict = listenerVerdict(lenient, ctx) === 'refuse' ? 'refuse' : 'either';
  }
  const labels = order.map(([, label]) => label);
  const fuzzCase: FuzzCase = {
    id,
    bytes: serialise(model),
    verdict,
    kind: labels.length === 0 ? 'base' : labels.join('+'),
    head: model.method === 'HEAD',
  };
  return {
    fuzzCase,
    single: verdict === 'either' || model.raw !== undefined || model.malformed !== undefined || model.eol !== undefined,
  };
}

/**
 * Batches for `runFuzz`. The listener closes every connection after one answer, so most connections
 * carry one callback; 10% pipeline a second one behind it (it must never reach `validate` unless valid).
 */
export function listenerBatches(
  rng: Prng,
  ctx: ListenerFuzzContext,
  stop: () => boolean,
  localAddresses: readonly string[] = ['127.0.0.1'],
): { next(): FuzzBatch | null; readonly cases: Map<number, FuzzCase> } {
  let id = 0;
  const cases = new Map<number, FuzzCase>();
  const make = (): { fuzzCase: FuzzCase; single: boolean } => {
    const made = generateListenerCase(rng, ++id, ctx);
    cases.set(made.fuzzCase.id, made.fuzzCase);
    return made;
  };
  return {
    cases,
    next() {
      if (stop()) return null;
      const first = make();
      const batch = [first.fuzzCase];
      if (!first.single && rng.chance(0.1)) {
        const second = make();
        if (!second.single) batch.push(second.fuzzCase);
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

/** A fresh random value, for the final valid callback. */
export function finalState(): string {
  return randomBytes(16).toString('base64url');
}
