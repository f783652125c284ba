// An instrumented OpenAI-shaped upstream on a Unix socket (mode 0600 in a 0700 dir), standing in for the
// runtime where a test must count what reached it: every request that arrives is recorded, so a refusal
// test can prove the upstream saw nothing. Real sockets, real HTTP.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

export interface Upstream {
  readonly socketPath: string;
  readonly seen: SeenRequest[];
  /** Requests whose response the client abandoned before it ended. */
  readonly aborted: { count: number };
  /** Stream writes that found the connection full and waited for 'drain' (backpressure reached us). */
  readonly backpressured: { count: number };
  /** Stream events written so far (all requests). */
  readonly written: { count: number };
  close(): Promise<void>;
}

export interface UpstreamBehaviour {
  /** SSE events to send for a streamed request, and the delay between them. */
  readonly events?: number;
  readonly eventDelayMs?: number;
  /** Extra response headers (e.g. a CORS header the front door must drop). */
  readonly extraHeaders?: Record<string, string>;
  /** Never answer a chat request (no status line, no headers): an upstream that hangs. */
  readonly hangBeforeHeaders?: boolean;
  /** In a stream, go silent (connection open, nothing more) after this many events. */
  readonly stallAfterEvents?: number;
  /** Extra bytes of padding in every stream event (to fill socket buffers). */
  readonly padBytes?: number;
}

function chatBody(): string {
  return JSON.stringify({
    id: 'chatcmpl-test',
    object: 'chat.completion',
    created: 0,
    model: 'tiny',
    choices: [{ index: 0, message: { role: 'assistant', content: 'hello' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  });
}

export async function startUpstream(behaviour: UpstreamBehaviour = {}): Promise<Upstream> {
  const dir = await mkdtemp(join(tmpdir(), 'companion-upstream-'));
  await chmod(dir, 0o700);
  const socketPath = join(dir, 'runtime.sock');
  const seen: SeenRequest[] = [];
  const aborted = { count: 0 };
  const backpressured = { count: 0 };
  const written = { count: 0 };
  const pad = 'p'.repeat(behaviour.padBytes ?? 0);
  const server: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString('utf8');
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
    const extra = behaviour.extraHeaders ?? {};
    if (req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json', ...extra });
      res.end(
        JSON.stringify({ object: 'list', data: [{ id: 'tiny', object: 'model', created: 0, owned_by: 'companion' }] }),
      );
      return;
    }
    const parsed = body.length > 0 ? (JSON.parse(body) as { stream?: boolean }) : {};
    if (behaviour.hangBeforeHeaders === true) return;
    if (parsed.stream !== true) {
      res.writeHead(200, { 'content-type': 'application/json', ...extra });
      res.end(chatBody());
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...extra });
    const total = behaviour.events ?? 3;
    let closed = false;
    res.on('close', () => {
      if (!res.writableFinished) {
        closed = true;
        aborted.count++;
      }
    });
    for (let i = 0; i < total && !closed; i++) {
      if (i === behaviour.stallAfterEvents) return;
      const more = res.write(
        `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model: 'tiny', choices: [{ index: 0, delta: { content: `t${i} ` }, finish_reason: null }], ...(pad === '' ? {} : { pad }) })}\n\n`,
      );
      written.count++;
      if (!more) {
        backpressured.count++;
        await new Promise((r) => res.once('drain', r));
      }
      if (behaviour.eventDelayMs) await new Promise((r) => setTimeout(r, behaviour.eventDelayMs));
    }
    if (closed) return;
    res.write(
      `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model: 'tiny', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`,
    );
    res.end('data: [DONE]\n\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o600);
  return {
    socketPath,
    seen,
    aborted,
    backpressured,
    written,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
