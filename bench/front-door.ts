/**
 * `npm run bench -- front-door [--json]`: what the front door costs (issue 13).
 *
 * Three processes, as in real use: a trivial upstream on a Unix socket (its own process, standing in for
 * the runtime), the proxies in this process, and a load generator in its own process (raw keep-alive
 * HTTP/1.1 sockets, closed loop, one request in flight per connection). One run measures, at 1 and at 50
 * connections, `GET /v1/models` (a ~100-byte JSON answer) in short slices (100 ms warm-up + 250 ms) that
 * rotate through the four cases four times, so that a busy machine disturbs all of them alike:
 *
 *   direct  the upstream's Unix socket itself (a)
 *   pipe    a minimal `node:http` pipe proxy (keep-alive agent)        } the faster of the two is (b)
 *   undici  a minimal undici `Pool.stream` proxy                        }
 *   door    the front door with every check: guard, token, admission (c)
 *
 * and an SSE case (`POST /v1/chat/completions`, 1,000 events of ~100 bytes), direct, through the undici
 * baseline (for scale) and through the front door, as a burst (the upstream writes them as fast as the socket takes them) and paced (one event per
 * ~1 ms timer tick, the shape of a token stream): time to first event, total time, and the one-way latency
 * of each event (the upstream stamps each event with its wall clock; the client subtracts it on arrival;
 * the offset between the two processes' clocks cancels in door − direct).
 *
 * Derived: c/a and c/b of requests/s at 1 and 50 connections (from the medians, and `paired*`: the median
 * of the ratios within each run, which a busy machine disturbs less); added p50 at 1 connection (door − direct,
 * door − b); SSE paced: added time to first event and added p50 per event; burst: door throughput as a
 * fraction of direct. Targets (issue 13): c/b ≥ 0.9, added p50 < 0.5 ms, paced first event ≤ +1 ms and
 * per event ≤ +0.1 ms, burst ≥ 0.7× direct. The bench prints; it asserts nothing.
 *
 * The same file is the upstream and the load generator when run as a script:
 *   node dist/bench/front-door.js upstream SOCKET      prints "ready", serves until stdin ends
 *   node dist/bench/front-door.js load                 JSON commands on stdin, one JSON answer per line
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import {
  Agent as HttpAgent,
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Pool, type Dispatcher } from 'undici';
import { createAdmission } from '../src/core/admission.js';
import { createTokenVerifier } from '../src/core/guard.js';
import { startFrontDoor, type FrontDoor } from '../src/runtime/front-door.js';
import { socketIdentity } from '../src/runtime/health.js';
import { median, percentile, type Bench, type Figures } from './harness.js';

const SELF = fileURLToPath(import.meta.url);
const EVENTS = 1000;
const BURST_REPEAT = 15;
/** Per slice: warm-up (connections open, JIT settles), then the measured window. */
const WARMUP_MS = 100;
const SLICE_MS = 250;
/** Slices per case and run, interleaved across the four cases so that all see the same background load. */
const SLICES = 4;
const MODELS_BODY = JSON.stringify({
  object: 'list',
  data: [{ id: 'tiny', object: 'model', created: 0, owned_by: 'companion' }],
});

// ---------------------------------------------------------------------------------------------------
// Upstream role: a trivial OpenAI-shaped server on a Unix socket.

function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

async function runUpstream(socketPath: string): Promise<void> {
  const pad = 'x'.repeat(60);
  const server = createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(MODELS_BODY) });
      res.end(MODELS_BODY);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const { events, paceMs } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        events: number;
        paceMs: number;
      };
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      res.flushHeaders();
      let sent = 0;
      const event = (): string => `data: {"i":${sent},"t":${wallClockMs().toFixed(3)},"pad":"${pad}"}\n\n`;
      const burst = (): void => {
        while (sent < events) {
          const more = res.write(event());
          sent++;
          if (!more) {
            res.once('drain', burst);
            return;
          }
        }
        res.end('data: [DONE]\n\n');
      };
      const paced = (): void => {
        res.write(event());
        sent++;
        if (sent < events) setTimeout(paced, paceMs);
        else res.end('data: [DONE]\n\n');
      };
      if (paceMs > 0) paced();
      else burst();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((done) => server.listen(socketPath, done));
  process.stdout.write('ready\n');
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

// ---------------------------------------------------------------------------------------------------
// Load role: raw keep-alive HTTP/1.1 connections, closed loop.

interface Target {
  readonly socketPath?: string;
  readonly port?: number;
  readonly host: string;
}

interface RpsCommand {
  readonly kind: 'rps';
  readonly target: Target;
  readonly token: string;
  readonly connections: number;
  readonly warmupMs: number;
  readonly durationMs: number;
}

interface SseCommand {
  readonly kind: 'sse';
  readonly target: Target;
  readonly token: string;
  readonly events: number;
  readonly paceMs: number;
}

type LoadCommand = RpsCommand | SseCommand;

interface RpsResult {
  readonly requests: number;
  readonly seconds: number;
  readonly errors: number;
  readonly latencies: number[];
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/** Length of one complete response at the start of `buf`, or -1 when it is not all there yet. */
function responseLength(buf: Buffer): number {
  const headEnd = buf.indexOf(CRLFCRLF);
  if (headEnd === -1) return -1;
  const head = buf.toString('latin1', 0, headEnd).toLowerCase();
  const bodyStart = headEnd + 4;
  const length = /\r\ncontent-length: *(\d+)/.exec(head);
  if (length !== null) {
    const end = bodyStart + Number(length[1]);
    return buf.length >= end ? end : -1;
  }
  if (!head.includes('transfer-encoding: chunked')) return bodyStart;
  let at = bodyStart;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', at, 'latin1');
    if (lineEnd === -1) return -1;
    const size = parseInt(buf.toString('latin1', at, lineEnd), 16);
    if (size === 0) {
      // No trailers: the last chunk is "0\r\n\r\n".
      return buf.length >= lineEnd + 4 ? lineEnd + 4 : -1;
    }
    at = lineEnd + 2 + size + 2;
    if (at > buf.length) return -1;
  }
}

function openSocket(target: Target): Socket {
  const socket =
    target.socketPath !== undefined
      ? connect(target.socketPath)
      : connect({ host: '127.0.0.1', port: target.port ?? 0 });
  socket.setNoDelay(true);
  return socket;
}

async function runRps(command: RpsCommand): Promise<RpsResult> {
  const request = Buffer.from(
    `GET /v1/models HTTP/1.1\r\nHost: ${command.target.host}\r\nAuthorization: Bearer ${command.token}\r\nAccept: application/json\r\n\r\n`,
    'latin1',
  );
  const latencies: number[] = [];
  let errors = 0;
  let recording = false;
  let stopping = false;
  const t0 = performance.now();
  const sockets: Socket[] = [];
  const finished: Promise<void>[] = [];
  for (let i = 0; i < command.connections; i++) {
    const socket = openSocket(command.target);
    sockets.push(socket);
    finished.push(
      new Promise<void>((done) => {
        let buf: Buffer = Buffer.alloc(0);
        let sentAt = 0;
        const send = (): void => {
          if (stopping) {
            socket.end();
            done();
            return;
          }
          sentAt = performance.now();
          socket.write(request);
        };
        socket.on('connect', send);
        socket.on('data', (chunk: Buffer) => {
          buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
          const length = responseLength(buf);
          if (length === -1) return;
          if (recording) latencies.push(performance.now() - sentAt);
          if (buf[9] !== 0x32) errors++; // "HTTP/1.1 2xx"
          buf = buf.subarray(length);
          send();
        });
        socket.on('error', () => {
          errors++;
          done();
        });
        socket.on('close', () => done());
      }),
    );
  }
  await new Promise((r) => setTimeout(r, command.warmupMs));
  recording = true;
  const start = performance.now();
  await new Promise((r) => setTimeout(r, command.durationMs));
  recording = false;
  const seconds = (performance.now() - start) / 1000;
  stopping = true;
  const timer = setTimeout(() => sockets.forEach((s) => s.destroy()), 5000);
  await Promise.all(finished);
  clearTimeout(timer);
  void t0;
  return {
    requests: latencies.length,
    seconds,
    errors,
    latencies,
  };
}

function runSse(command: SseCommand): Promise<Figures> {
  return new Promise((resolveRun, reject) => {
    const body = JSON.stringify({ events: command.events, paceMs: command.paceMs, stream: true });
    const latencies: number[] = [];
    let firstMs = Number.NaN;
    let text = '';
    const start = performance.now();
    const req = httpRequest(
      {
        ...(command.target.socketPath !== undefined
          ? { socketPath: command.target.socketPath }
          : { host: '127.0.0.1', port: command.target.port }),
        method: 'POST',
        path: '/v1/chat/completions',
        agent: false,
        headers: {
          host: command.target.host,
          authorization: `Bearer ${command.token}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res: IncomingMessage) => {
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          const now = performance.now();
          const wall = performance.timeOrigin + now;
          if (Number.isNaN(firstMs)) firstMs = now - start;
          text += chunk;
          let cut = text.indexOf('\n\n');
          while (cut !== -1) {
            const event = text.slice(0, cut);
            text = text.slice(cut + 2);
            const stamp = /"t":([0-9.]+)/.exec(event);
            if (stamp !== null) latencies.push(wall - Number(stamp[1]));
            cut = text.indexOf('\n\n');
          }
        });
        res.on('end', () => {
          resolveRun({
            firstEventMs: firstMs,
            totalMs: performance.now() - start,
            events: latencies.length,
            eventP50Ms: percentile(latencies, 50),
            eventP99Ms: percentile(latencies, 99),
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function runLoad(): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line) as LoadCommand;
    const figures = command.kind === 'rps' ? await runRps(command) : await runSse(command);
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  }
}

// ---------------------------------------------------------------------------------------------------
// The proxies under test (this process).

interface Listening {
  readonly port: number;
  close(): Promise<void>;
}

async function listenLoopback(server: Server): Promise<number> {
  await new Promise<void>((done) => server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, done));
  return (server.address() as AddressInfo).port;
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((done) => server.close(() => done()));
}

/** Baseline 1: node:http server piping to a keep-alive node:http client. */
async function startPipeProxy(socketPath: string): Promise<Listening> {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const upstream = httpRequest(
      { socketPath, agent, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 60_000;
  const port = await listenLoopback(server);
  return {
    port,
    close: async () => {
      await closeServer(server);
      agent.destroy();
    },
  };
}

/** Baseline 2: node:http server streaming through an undici Pool. */
async function startUndiciProxy(socketPath: string): Promise<Listening> {
  const pool = new Pool('http://localhost', { socketPath, connections: 64 });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    pool
      .stream(
        {
          path: req.url ?? '/',
          method: req.method as Dispatcher.HttpMethod,
          headers: { host: 'localhost' },
          body: req.method === 'GET' ? null : req,
        },
        ({ statusCode, headers }) => {
          res.writeHead(statusCode, headers as Record<string, string>);
          return res;
        },
      )
      .catch(() => res.destroy());
  });
  server.keepAliveTimeout = 60_000;
  const port = await listenLoopback(server);
  return {
    port,
    close: async () => {
      await closeServer(server);
      await pool.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// The bench (parent process).

let dir = '';
let upstreamSocket = '';
let upstreamChild: ChildProcess | null = null;
let loadChild: ChildProcess | null = null;
let loadLines: AsyncIterator<string> | null = null;
let pipe: Listening | null = null;
let undici: Listening | null = null;
let door: FrontDoor | null = null;
let round = 0;
const token = randomBytes(32).toString('base64url');

function child(args: string[]): ChildProcess {
  return spawn(process.execPath, [SELF, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
}

async function ask(command: SseCommand): Promise<Figures>;
async function ask(command: RpsCommand): Promise<RpsResult>;
async function ask(command: LoadCommand): Promise<Figures | RpsResult> {
  loadChild!.stdin!.write(`${JSON.stringify(command)}\n`);
  const next = await loadLines!.next();
  if (next.done === true) throw new Error('the load generator exited');
  return JSON.parse(next.value) as Figures | RpsResult;
}

function targets(): Record<'direct' | 'pipe' | 'undici' | 'door', Target> {
  return {
    direct: { socketPath: upstreamSocket, host: 'localhost' },
    pipe: { port: pipe!.port, host: `127.0.0.1:${pipe!.port}` },
    undici: { port: undici!.port, host: `127.0.0.1:${undici!.port}` },
    door: { port: door!.port, host: `127.0.0.1:${door!.port}` },
  };
}

const bench: Bench = {
  name: 'front-door',
  description:
    'GET /v1/models req/s and p50/p99 at 1 and 50 connections: direct Unix socket (a), node:http pipe and undici Pool.stream proxies (b = the faster), the front door (c); SSE 1,000 events burst and paced at 1 ms, direct vs door',
  runs: 5,
  warmup: 1,
  async setup() {
    dir = mkdtempSync(join(tmpdir(), 'companion-bench-door-'));
    upstreamSocket = join(dir, 'upstream.sock');
    upstreamChild = child(['upstream', upstreamSocket]);
    const upstreamLines = createInterface({ input: upstreamChild.stdout! })[Symbol.asyncIterator]();
    if ((await upstreamLines.next()).value !== 'ready') throw new Error('the upstream did not start');
    loadChild = child(['load']);
    loadLines = createInterface({ input: loadChild.stdout! })[Symbol.asyncIterator]();
    pipe = await startPipeProxy(upstreamSocket);
    undici = await startUndiciProxy(upstreamSocket);
    // As in production: the socket's identity, checked before each new pool connection.
    const upstreamAddress = { kind: 'unix' as const, path: upstreamSocket, identity: socketIdentity(upstreamSocket) };
    door = await startFrontDoor({
      verifyToken: createTokenVerifier(token),
      upstream: () => upstreamAddress,
      // Room for 50 connections: the bench measures the checks, not the queueing policy.
      admission: createAdmission({ maxConcurrent: 64, maxQueue: 64, queueTimeoutMs: 30_000, ready: true }),
    });
  },
  async sample(): Promise<Figures> {
    const figures: Figures = {};
    const all = targets();
    // Rotate the order from run to run so that no case always runs first (or last) on a busy machine.
    const names = (['direct', 'pipe', 'undici', 'door'] as const).map((_, i, list) => list[(i + round) % list.length]!);
    round++;
    for (const connections of [1, 50]) {
      const pooled: Record<string, { requests: number; seconds: number; errors: number; latencies: number[] }> = {};
      for (const name of names) pooled[name] = { requests: 0, seconds: 0, errors: 0, latencies: [] };
      for (let slice = 0; slice < SLICES; slice++) {
        for (let i = 0; i < names.length; i++) {
          const name = names[(i + slice) % names.length]!;
          const result = await ask({
            kind: 'rps',
            target: all[name],
            token,
            connections,
            warmupMs: WARMUP_MS,
            durationMs: SLICE_MS,
          });
          const into = pooled[name]!;
          into.requests += result.requests;
          into.seconds += result.seconds;
          into.errors += result.errors;
          into.latencies.push(...result.latencies);
        }
      }
      for (const name of names) {
        const { requests, seconds, errors, latencies } = pooled[name]!;
        figures[`${name}${connections}ReqPerSec`] = requests / seconds;
        figures[`${name}${connections}P50Ms`] = percentile(latencies, 50);
        figures[`${name}${connections}P99Ms`] = percentile(latencies, 99);
        if (errors > 0) figures[`${name}${connections}Errors`] = errors;
      }
      // Paired within the run (the same machine load for all four): steadier than ratios of medians.
      const b = Math.max(figures[`pipe${connections}ReqPerSec`]!, figures[`undici${connections}ReqPerSec`]!);
      figures[`pairedCA${connections}`] =
        figures[`door${connections}ReqPerSec`]! / figures[`direct${connections}ReqPerSec`]!;
      figures[`pairedCB${connections}`] = figures[`door${connections}ReqPerSec`]! / b;
    }
    for (const [shape, paceMs, repeat] of [
      ['Burst', 0, BURST_REPEAT],
      ['Paced', 1, 1],
    ] as const) {
      // A burst is over in a few ms: repeat it, alternating direct and door, and keep the median.
      const results: Record<'direct' | 'undici' | 'door', Figures[]> = { direct: [], undici: [], door: [] };
      const order = ['direct', 'undici', 'door'] as const;
      for (let i = 0; i < repeat; i++) {
        for (let j = 0; j < order.length; j++) {
          const name = order[(j + round + i) % order.length]!;
          const result = await ask({ kind: 'sse', target: all[name], token, events: EVENTS, paceMs });
          if (result.events !== EVENTS)
            throw new Error(`${name} ${shape}: ${result.events} events arrived, not ${EVENTS}`);
          results[name].push(result);
        }
      }
      for (const name of order) {
        const label = `sse${shape}${name[0]!.toUpperCase()}${name.slice(1)}`;
        figures[`${label}FirstEventMs`] = median(results[name].map((r) => r.firstEventMs!));
        figures[`${label}TotalMs`] = median(results[name].map((r) => r.totalMs!));
        // First to last event, per request (a difference of medians would mix unrelated requests).
        figures[`${label}StreamingMs`] = median(results[name].map((r) => r.totalMs! - r.firstEventMs!));
        if (shape === 'Paced') figures[`${label}EventP50Ms`] = median(results[name].map((r) => r.eventP50Ms!));
      }
    }
    return figures;
  },
  derive(m: Figures): Figures {
    const get = (key: string): number => m[key] ?? Number.NaN;
    const out: Figures = {};
    for (const c of [1, 50]) {
      const b = Math.max(get(`pipe${c}ReqPerSec`), get(`undici${c}ReqPerSec`));
      out[`ratioCA${c}`] = get(`door${c}ReqPerSec`) / get(`direct${c}ReqPerSec`);
      out[`ratioCB${c}`] = get(`door${c}ReqPerSec`) / b;
      out[`baselineB${c}`] = get(`pipe${c}ReqPerSec`) >= get(`undici${c}ReqPerSec`) ? 1 : 2;
    }
    const bestP50 = get('pipe1ReqPerSec') >= get('undici1ReqPerSec') ? get('pipe1P50Ms') : get('undici1P50Ms');
    out.addedP50MsVsDirect = get('door1P50Ms') - get('direct1P50Ms');
    out.addedP50MsVsB = get('door1P50Ms') - bestP50;
    out.ssePacedAddedFirstEventMs = get('ssePacedDoorFirstEventMs') - get('ssePacedDirectFirstEventMs');
    out.ssePacedAddedEventP50Ms = get('ssePacedDoorEventP50Ms') - get('ssePacedDirectEventP50Ms');
    out.ssePacedUndiciAddedFirstEventMs = get('ssePacedUndiciFirstEventMs') - get('ssePacedDirectFirstEventMs');
    out.ssePacedUndiciAddedEventP50Ms = get('ssePacedUndiciEventP50Ms') - get('ssePacedDirectEventP50Ms');
    out.sseBurstAddedFirstEventMs = get('sseBurstDoorFirstEventMs') - get('sseBurstDirectFirstEventMs');
    // Throughput of the whole burst (request to last event), and of its streaming phase alone (first to
    // last event), as a fraction of direct; the same for the bare undici proxy, for scale.
    out.sseBurstThroughputVsDirect = get('sseBurstDirectTotalMs') / get('sseBurstDoorTotalMs');
    out.sseBurstStreamingVsDirect = get('sseBurstDirectStreamingMs') / get('sseBurstDoorStreamingMs');
    out.sseBurstUndiciThroughputVsDirect = get('sseBurstDirectTotalMs') / get('sseBurstUndiciTotalMs');
    out.sseBurstUndiciStreamingVsDirect = get('sseBurstDirectStreamingMs') / get('sseBurstUndiciStreamingMs');
    return out;
  },
  async teardown() {
    await door?.close();
    await pipe?.close();
    await undici?.close();
    loadChild?.stdin?.end();
    upstreamChild?.stdin?.end();
    for (const c of [loadChild, upstreamChild]) {
      if (c !== null && c.exitCode === null) {
        const gone = new Promise((done) => c.once('exit', done));
        const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
        await gone;
        clearTimeout(timer);
      }
    }
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  },
};

export default bench;

if (process.argv[1] !== undefined && resolve(process.argv[1]) === SELF) {
  const role = process.argv[2];
  if (role === 'upstream') await runUpstream(process.argv[3]!);
  else if (role === 'load') await runLoad();
}
