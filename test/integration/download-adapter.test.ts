// The download adapter (src/runtime/download.ts) against a small scripted HTTPS server (certificates from
// the hub's CA code): bounded redirects, a redirect to another https origin, error statuses, a range
// that was not asked for, cancellation, and (through pullModel) a ranged answer from a file whose ETag
// changed, which must restart from byte 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTlsAgent } from '../../src/common/tls.js';
import { createHubTls } from '../../src/hub/ca.js';
import { download } from '../../src/runtime/download.js';
import { checkInstalledModel, pullModel, type PullEvent } from '../../src/runtime/manager/install.js';
import { verifiedModel } from '../helpers/download-verified.js';
import type { AfterHook } from '../helpers/hub.js';

interface Scripted {
  readonly origin: string;
  readonly seen: { path: string; range: string | undefined; ifRange: string | undefined; authorization: boolean }[];
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return `https://127.0.0.1:${address.port}`;
}

const FILE = randomBytes(300_000);
const FILE_SHA = createHash('sha256').update(FILE).digest('hex');

async function startScripted(t: AfterHook): Promise<{ main: Scripted; other: Scripted; caPem: string }> {
  const tls = await createHubTls();
  const make = (
    handle: (req: IncomingMessage, res: ServerResponse, origin: string) => void,
  ): { server: Server; scripted: Scripted & { origin: string } } => {
    const seen: Scripted['seen'] = [];
    const scripted = { origin: '', seen };
    const server = createServer({ key: tls.hub.keyPem, cert: tls.hub.certPem }, (req, res) => {
      seen.push({
        path: req.url ?? '',
        range: req.headers.range,
        ifRange: req.headers['if-range'] as string | undefined,
        authorization: 'authorization' in req.headers || 'cookie' in req.headers,
      });
      handle(req, res, scripted.origin);
    });
    return { server, scripted };
  };
  let etagCounter = 0;
  let cutNext = true;
  const other = make((_req, res) => {
    res.writeHead(200, { 'Content-Length': '2' });
    res.end('ok');
  });
  const main = make((req, res, origin) => {
    const path = req.url ?? '';
    if (path === '/loop') {
      res.writeHead(302, { Location: '/loop', 'Content-Length': '0' });
      res.end();
    } else if (path.startsWith('/hop/')) {
      const n = Number(path.slice(5));
      res.writeHead(
        n === 0 ? 200 : 302,
        n === 0 ? { 'Content-Length': '2' } : { Location: `${origin}/hop/${n - 1}`, 'Content-Length': '0' },
      );
      res.end(n === 0 ? 'ok' : undefined);
    } else if (path === '/elsewhere') {
      res.writeHead(307, { Location: `${other.scripted.origin}/file`, 'Content-Length': '0' });
      res.end();
    } else if (path === '/bad-location') {
      res.writeHead(302, { Location: 'https://[::1', 'Content-Length': '0' });
      res.end();
    } else if (path === '/unasked-range') {
      res.writeHead(206, { 'Content-Range': 'bytes 0-9/10', 'Content-Length': '10' });
      res.end('0123456789');
    } else if (path === '/silent') {
      res.writeHead(200, { 'Content-Length': '100' });
      res.write('x');
    } else if (path === '/moving') {
      // A host that honours Range but ignores If-Range, and whose ETag changes on every request.
      etagCounter += 1;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const start = range ? Number(range[1]) : 0;
      const headers: Record<string, string> = {
        ETag: `"v${etagCounter}"`,
        'Content-Length': String(FILE.length - start),
        'Accept-Ranges': 'bytes',
      };
      if (range) headers['Content-Range'] = `bytes ${start}-${FILE.length - 1}/${FILE.length}`;
      res.writeHead(range ? 206 : 200, headers);
      if (cutNext) {
        cutNext = false;
        res.write(FILE.subarray(start, start + 100_000), () => res.socket?.destroy());
      } else {
        res.end(FILE.subarray(start));
      }
    } else {
      res.writeHead(404, { 'Content-Length': '0' });
      res.end();
    }
  });
  (main.scripted as { origin: string }).origin = await listen(main.server);
  (other.scripted as { origin: string }).origin = await listen(other.server);
  t.after(async () => {
    for (const { server } of [main, other]) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
  return { main: main.scripted, other: other.scripted, caPem: tls.ca.certPem };
}

async function text(
  url: string,
  dispatcher: ReturnType<typeof createTlsAgent>,
  options: { maxRedirects?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const chunks: Buffer[] = [];
  await download(url, { dispatcher, onChunk: (chunk) => void chunks.push(chunk), ...options });
  return Buffer.concat(chunks).toString('utf8');
}

test('download() follows at most maxRedirects https redirects, then ERR_DOWNLOAD_TOO_MANY_REDIRECTS', async (t) => {
  const { main, caPem } = await startScripted(t);
  const agent = createTlsAgent({ extraCas: [caPem] });
  t.after(() => agent.close());
  assert.equal(await text(`${main.origin}/hop/5`, agent), 'ok');
  await assert.rejects(text(`${main.origin}/hop/3`, agent, { maxRedirects: 2 }), {
    code: 'ERR_DOWNLOAD_TOO_MANY_REDIRECTS',
  });
  await assert.rejects(text(`${main.origin}/loop`, agent), { code: 'ERR_DOWNLOAD_TOO_MANY_REDIRECTS' });
  assert.equal(main.seen.filter((s) => s.path === '/loop').length, 6, 'the first request and 5 redirects');
});

test('download() follows a redirect to another https origin, still without any credential header', async (t) => {
  const { main, other, caPem } = await startScripted(t);
  const agent = createTlsAgent({ extraCas: [caPem] });
  t.after(() => agent.close());
  assert.equal(await text(`${main.origin}/elsewhere`, agent), 'ok');
  assert.deepEqual(
    other.seen.map((s) => s.path),
    ['/file'],
  );
  assert.ok([...main.seen, ...other.seen].every((s) => !s.authorization));
});

test('download() maps error statuses, an unparsable Location and a range not asked for to ERR_DOWNLOAD_HTTP_STATUS', async (t) => {
  const { main, caPem } = await startScripted(t);
  const agent = createTlsAgent({ extraCas: [caPem] });
  t.after(() => agent.close());
  await assert.rejects(
    text(`${main.origin}/missing`, agent),
    (error: { code?: string; detail?: unknown; message: string }) => {
      assert.equal(error.code, 'ERR_DOWNLOAD_HTTP_STATUS');
      assert.deepEqual(error.detail, { status: 404 });
      return true;
    },
  );
  await assert.rejects(text(`${main.origin}/bad-location`, agent), (error: { code?: string; message: string }) => {
    assert.equal(error.code, 'ERR_DOWNLOAD_HTTP_STATUS');
    assert.ok(!error.message.includes('::1'), 'the Location is not quoted');
    return true;
  });
  await assert.rejects(
    download(`${main.origin}/unasked-range`, { dispatcher: agent, offset: 5, onChunk: () => undefined }),
    { code: 'ERR_DOWNLOAD_HTTP_STATUS' },
  );
});

test('download() stops with ERR_DOWNLOAD_ABORTED when its signal is aborted mid-body', async (t) => {
  const { main, caPem } = await startScripted(t);
  const agent = createTlsAgent({ extraCas: [caPem] });
  t.after(() => agent.close());
  const controller = new AbortController();
  const pending = download(`${main.origin}/silent`, {
    dispatcher: agent,
    signal: controller.signal,
    onChunk: () => controller.abort(),
  });
  await assert.rejects(pending, { code: 'ERR_DOWNLOAD_ABORTED' });
});

test('pullModel() restarts from byte 0 when a ranged answer carries another ETag than the partial came with', async (t) => {
  const { main, caPem } = await startScripted(t);
  const agent = createTlsAgent({ extraCas: [caPem] });
  const dir = await mkdtemp(join(tmpdir(), 'companion-download-etag-'));
  t.after(async () => {
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });
  const model = verifiedModel({
    id: 'moving',
    name: 'Moving',
    url: `${main.origin}/moving`,
    size: FILE.length,
    sha256: FILE_SHA,
  });
  const modelsDir = join(dir, 'models');
  await assert.rejects(pullModel({ model, manifestVersion: 1, modelsDir, dispatcher: agent }), {
    code: 'ERR_DOWNLOAD_NETWORK',
  });
  const events: PullEvent[] = [];
  await pullModel({ model, manifestVersion: 1, modelsDir, dispatcher: agent, onEvent: (e) => void events.push(e) });
  assert.deepEqual(
    events.filter((e) => e.event !== 'progress').map((e) => (e.event === 'restart' ? `restart:${e.reason}` : e.event)),
    ['resume', 'restart:changed', 'verified'],
  );
  const moving = main.seen.filter((s) => s.path === '/moving');
  assert.deepEqual(
    moving.map((s) => [s.range ?? null, s.ifRange ?? null]),
    [
      [null, null],
      ['bytes=100000-', '"v1"'],
      [null, null],
    ],
  );
  await checkInstalledModel(modelsDir);
});
