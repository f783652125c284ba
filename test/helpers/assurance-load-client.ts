// The load generator, run as its own process (clients are other processes, so the companion's RSS and
// event loop are measured alone): N concurrent keep-alive connections (one undici Client each), each
// sending a bounded number of tiny chat completions, some streamed. Reads its options (JSON, token
// included) from stdin, never argv; prints one JSON line of figures.
import { Client } from 'undici';

export interface LoadClientOptions {
  readonly origin: string;
  readonly token: string;
  readonly connections: number;
  readonly requestsPerConnection: number;
  readonly maxTokens: number;
  readonly streamShare: number;
  readonly requestTimeoutMs: number;
}

export interface LoadClientFigures {
  readonly requests: number;
  readonly served: number;
  readonly refused429: number;
  readonly refused503: number;
  readonly otherStatus: Record<string, number>;
  readonly missingRetryAfter: number;
  readonly incomplete: number;
  readonly transportErrors: number;
  readonly hung: number;
  /** Latencies (ms) of served requests and of all requests. */
  readonly servedMs: number[];
  readonly allMs: number[];
  readonly elapsedMs: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function loadClients(options: LoadClientOptions): Promise<LoadClientFigures> {
  const counts = {
    requests: 0,
    served: 0,
    r429: 0,
    r503: 0,
    missingRetryAfter: 0,
    incomplete: 0,
    transport: 0,
    hung: 0,
  };
  const otherStatus: Record<string, number> = {};
  const servedMs: number[] = [];
  const allMs: number[] = [];
  let n = 0;
  const started = performance.now();
  const connection = async (): Promise<void> => {
    const client = new Client(options.origin, {
      pipelining: 1,
      headersTimeout: options.requestTimeoutMs,
      bodyTimeout: options.requestTimeoutMs,
      keepAliveTimeout: 10_000,
    });
    try {
      for (let i = 0; i < options.requestsPerConnection; i++) {
        const stream = Math.random() < options.streamShare;
        const t0 = performance.now();
        counts.requests++;
        const signal = AbortSignal.timeout(options.requestTimeoutMs + 5_000);
        try {
          const response = await client.request({
            path: '/v1/chat/completions',
            method: 'POST',
            signal,
            headers: {
              authorization: `Bearer ${options.token}`,
              'content-type': 'application/json',
              accept: stream ? 'text/event-stream' : 'application/json',
            },
            body: JSON.stringify({
              model: 'tiny',
              messages: [{ role: 'user', content: `load ${++n}` }],
              max_tokens: options.maxTokens,
              temperature: 0,
              stream,
            }),
          });
          const text = await response.body.text();
          const ms = performance.now() - t0;
          allMs.push(ms);
          const retryAfter = response.headers['retry-after'];
          if (response.statusCode === 200) {
            if (stream ? text.includes('data: [DONE]') : text.includes('"choices"')) {
              counts.served++;
              servedMs.push(ms);
            } else {
              counts.incomplete++;
            }
          } else if (response.statusCode === 429 || response.statusCode === 503) {
            if (response.statusCode === 429) counts.r429++;
            else counts.r503++;
            if (typeof retryAfter !== 'string' || !/^\d+$/.test(retryAfter)) counts.missingRetryAfter++;
            // The companion said when to come back; a load test is impatient, but not a busy loop.
            await sleep(Math.random() * 50);
          } else {
            otherStatus[String(response.statusCode)] = (otherStatus[String(response.statusCode)] ?? 0) + 1;
          }
        } catch {
          allMs.push(performance.now() - t0);
          if (signal.aborted) counts.hung++;
          else counts.transport++;
        }
      }
    } finally {
      await client.close().catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: options.connections }, () => connection()));
  return {
    requests: counts.requests,
    served: counts.served,
    refused429: counts.r429,
    refused503: counts.r503,
    otherStatus,
    missingRetryAfter: counts.missingRetryAfter,
    incomplete: counts.incomplete,
    transportErrors: counts.transport,
    hung: counts.hung,
    servedMs,
    allMs,
    elapsedMs: performance.now() - started,
  };
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  let input = '';
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) input += chunk.toString('utf8');
  const options = JSON.parse(input) as LoadClientOptions;
  const figures = await loadClients(options);
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}
