// Clients of a running runtime for tests: the official openai SDK and raw undici requests, over the Unix
// socket (an undici Agent with socketPath) or loopback TCP with the per-spawn key.
import OpenAI from 'openai';
import { Agent, fetch as undiciFetch, request } from 'undici';
import type { RuntimeAddress } from '../../src/runtime/health.js';

export interface RuntimeClient {
  readonly openai: OpenAI;
  /** A raw request to the runtime; `headers` replace the defaults (Host, Authorization in TCP mode). */
  raw(
    method: string,
    path: string,
    options?: { body?: string | Buffer; headers?: Record<string, string> },
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }>;
  close(): Promise<void>;
}

export function runtimeClient(address: RuntimeAddress): RuntimeClient {
  const agent = new Agent(address.kind === 'unix' ? { connect: { socketPath: address.path } } : {});
  const base = address.kind === 'unix' ? 'http://localhost' : `http://127.0.0.1:${address.port}`;
  const apiKey = address.kind === 'unix' ? 'unused' : address.key.reveal();
  const openai = new OpenAI({
    baseURL: `${base}/v1`,
    apiKey,
    maxRetries: 0,
    timeout: 60_000,
    fetch: undiciFetch as unknown as typeof fetch,
    fetchOptions: { dispatcher: agent } as Record<string, unknown>,
  });
  return {
    openai,
    async raw(method, path, options = {}) {
      const headers: Record<string, string> =
        options.headers ?? (address.kind === 'tcp' ? { authorization: `Bearer ${apiKey}` } : {});
      const response = await request(`${base}${path}`, {
        method: method as 'GET',
        dispatcher: agent,
        headers,
        ...(options.body === undefined ? {} : { body: options.body }),
      });
      return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
    },
    close: () => agent.close(),
  };
}
