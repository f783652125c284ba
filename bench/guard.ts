/**
 * `npm run bench -- guard`: requests verified per second by `verifyLoopbackRequest`, for a few request
 * shapes (accepted, and refused at different depths), plus a mixed stream. Pure CPU, no sockets.
 */
import type { Bench, Figures } from './harness.js';
import {
  allowedHostsFor,
  createTokenVerifier,
  verifyLoopbackRequest,
  type GuardPolicy,
  type GuardRequest,
} from '../src/core/guard.js';

const PORT = 41234;
const TOKEN = 'bench_0123456789abcdefghijklmnopqrstuvwxyzABCD';
const ITERATIONS = 100_000;

const policy: GuardPolicy = {
  allowedHosts: allowedHostsFor(PORT),
  verifyToken: createTokenVerifier(TOKEN),
  routes: [
    { method: 'POST', path: '/v1/chat/completions' },
    { method: 'POST', path: '/v1/completions' },
    { method: 'GET', path: '/v1/models' },
    { method: 'GET', path: '/health' },
  ],
};

/** Headers a real client (the openai SDK) sends, so the header scan does realistic work. */
const CLIENT_HEADERS = [
  'Accept',
  'application/json',
  'Content-Type',
  'application/json',
  'User-Agent',
  'OpenAI/JS 6.49.0',
  'X-Stainless-Lang',
  'js',
  'X-Stainless-Retry-Count',
  '0',
  'Content-Length',
  '123',
  'Connection',
  'keep-alive',
];

function request(overrides: Partial<GuardRequest> & { headers?: string[] } = {}): GuardRequest {
  const { headers, ...rest } = overrides;
  return {
    peerAddress: '127.0.0.1',
    method: 'POST',
    target: '/v1/chat/completions',
    rawHeaders: headers ?? ['Host', `127.0.0.1:${PORT}`, 'Authorization', `Bearer ${TOKEN}`, ...CLIENT_HEADERS],
    httpVersion: '1.1',
    ...rest,
  };
}

const SHAPES: Record<string, GuardRequest> = {
  accepted: request(),
  acceptedQuery: request({ method: 'GET', target: '/v1/models?limit=10' }),
  refusedHost: request({ headers: ['Host', 'evil.example', 'Authorization', `Bearer ${TOKEN}`, ...CLIENT_HEADERS] }),
  refusedOrigin: request({
    headers: ['Host', `127.0.0.1:${PORT}`, 'Origin', 'http://evil.example', ...CLIENT_HEADERS],
  }),
  refusedToken: request({
    headers: ['Host', `127.0.0.1:${PORT}`, 'Authorization', `Bearer ${TOKEN.slice(0, -1)}x`, ...CLIENT_HEADERS],
  }),
  refusedTarget: request({ target: 'http://evil.example/v1/chat/completions' }),
};
const MIXED = Object.values(SHAPES);

let sink = 0;

function perSecond(run: (i: number) => void): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITERATIONS; i++) run(i);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return ITERATIONS / seconds;
}

const bench: Bench = {
  name: 'guard',
  description: `verifyLoopbackRequest: requests verified per second (${ITERATIONS} per shape per run)`,
  runs: 5,
  warmup: 1,
  async sample(): Promise<Figures> {
    const figures: Figures = {};
    for (const [name, shape] of Object.entries(SHAPES)) {
      figures[`${name}ReqPerSec`] = perSecond(() => {
        const decision = verifyLoopbackRequest(shape, policy);
        sink += decision.ok ? 1 : decision.status;
      });
    }
    figures.mixedReqPerSec = perSecond((i) => {
      const decision = verifyLoopbackRequest(MIXED[i % MIXED.length]!, policy);
      sink += decision.ok ? 1 : decision.status;
    });
    figures.acceptedUsPerReq = 1e6 / figures.acceptedReqPerSec!;
    return figures;
  },
  async teardown(): Promise<void> {
    // Keep the results observable so no call can be optimised away.
    if (sink === -1) process.stderr.write('unreachable\n');
  },
};

export default bench;
