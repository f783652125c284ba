// P-f leak scan (issue 11): the whole demo, through the real CLI, with every secret of the run recorded by
// the harness from outside (test/helpers/leak-scan-preload.ts reads them off undici's diagnostics channels
// and hands them over fd 3; no production code knows about it), then every place a secret could land is
// scanned: stdout/stderr, the runtime's stderr, argv/environment of every process of the tree (sampled
// while it runs), every file under the child's HOME/XDG/TMPDIR, the log file (the demo runs with
// `--data-dir` so its logs/companion.log, which holds the events and the runtime's stderr, stays to be
// read after it exits), and error bodies of the front door.
// Secrets: authorization code, state, PKCE verifier, access/refresh/ID tokens, hub session cookies, the
// hub's dev password, bearer tokens (access token, loopback token), the model digest (hex and base64) and
// the model path. Private texts (prompts and completions) may only appear in the completion stream.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { DEMO_MODEL_SEED } from '../../src/hub/index.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { spawn } from 'node:child_process';
import { descendantsOf } from '../helpers/assurance-runtime.js';
import {
  leakFindings,
  runDemoChild,
  SecretBook,
  settledSnapshot,
  type DemoRun,
  type Finding,
} from '../helpers/leak-scan.js';

const DEMO_DIGEST = createHash('sha256')
  .update(generateTinyGguf({ seed: DEMO_MODEL_SEED }))
  .digest('hex');
const isModelFile = (path: string): boolean => /\.gguf(\.part)?$/.test(path);
const REQUIRED = [
  'authorization code',
  'state',
  'PKCE verifier',
  'access token',
  'refresh token',
  'ID token',
  'hub password',
  'cookie hub_session',
  'bearer token',
  'model digest',
  'model path',
];

function bookOf(run: DemoRun): { book: SecretBook; modelPath: string | null } {
  const book = new SecretBook();
  for (const message of run.channel) if (message.type === 'secret') book.add(message.kind ?? 'secret', message.value);
  const modelPath = run.channel.find((m) => m.type === 'model-path')?.value ?? null;
  book.add('model path', modelPath);
  book.addDigest('model digest', DEMO_DIGEST);
  if (run.available !== null) book.add('loopback token', run.available.token);
  return { book, modelPath };
}

function completionOf(run: DemoRun): string {
  return run.stdout
    .split('\n')
    .flatMap((line) => {
      try {
        const event = JSON.parse(line) as { event?: string; text?: string };
        return event.event === 'token' && typeof event.text === 'string' ? [event.text] : [];
      } catch {
        return [];
      }
    })
    .join('');
}

/** The log file holds what it is for (events and the runtime's stderr): a scan of an empty log proves nothing. */
function assertLogWritten(run: DemoRun): string {
  assert.ok(run.logFile !== null, 'the demo wrote logs/companion.log');
  assert.match(run.logFile, / up: available \(\d+ parallel sequences? of \d+ tokens\)\n/);
  if (run.runtimeStderr.trim() !== '') assert.match(run.logFile, / runtime: \S/, "the runtime's stderr is in the log");
  return run.logFile;
}

function report(findings: readonly Finding[]): string {
  return findings
    .slice(0, 20)
    .map((f) => `${f.kind} in ${f.where} after "${f.before}"`)
    .join('\n');
}

function rawCall(
  endpoint: string,
  options: { method: string; path: string; headers: Record<string, string>; body?: string },
): Promise<{ status: number; body: string }> {
  const url = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method: options.method,
        path: options.path,
        headers: { connection: 'close', ...options.headers },
        timeout: 30_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(options.body);
  });
}

test(
  'P-f leak scan: a whole demo run shows no secret and no private text in output, logs, files, argv or environment',
  { timeout: 180_000 },
  async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'companion-leakscan-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const prompt = `leak-scan private prompt ${randomBytes(8).toString('hex')}`;
    const run = await runDemoChild({
      root,
      keepRunning: false,
      prompt,
      skipFile: isModelFile,
      dataDir: join(root, 'demo-data'),
    });
    assert.equal(run.exitCode, 0, `the demo succeeded: ${run.stderr}`);
    const { book, modelPath } = bookOf(run);
    for (const kind of REQUIRED.filter((k) => k !== 'model path' || modelPath !== null))
      assert.ok(book.kinds().has(kind), `the harness recorded a ${kind}`);
    assert.ok(modelPath !== null, 'the harness learned the model path');
    const completion = completionOf(run);
    assert.ok(completion.length > 0, 'a completion was streamed');
    const findings = leakFindings(run, { book, privateTexts: [prompt, completion], modelPath, prompt });
    t.diagnostic(
      `scanned: ${book.entries().length} secret forms, ${run.processes.length} process samples, ${new Set(run.files.map((f) => f.path)).size} files, ${run.stdout.length + run.stderr.length + run.runtimeStderr.length} bytes of output`,
    );
    assert.deepEqual(findings, [], report(findings));
    assert.deepEqual(run.leftOver, [], 'no runtime process is left');
    const log = assertLogWritten(run);
    // Control: the scan does see a secret planted in the log file.
    const token = run.channel.find((m) => m.kind?.startsWith('refresh token'))?.value ?? '';
    const plantedLog = { ...run, files: [], logFile: `${log}x ${token} y\n` };
    assert.deepEqual(
      leakFindings(plantedLog, { book, privateTexts: [prompt, completion], modelPath, prompt })
        .filter((f) => f.where.startsWith('log file'))
        .map((f) => f.kind),
      ['refresh token (token response)'],
    );
    // Control: the same scan does see a secret planted where the demo wrote its files.
    const planted = {
      ...run,
      files: [
        ...run.files,
        {
          path: join(root, 'planted.txt'),
          content: `x ${run.channel.find((m) => m.kind?.startsWith('refresh token'))?.value ?? ''} y`,
        },
      ],
    };
    assert.deepEqual(
      leakFindings(planted, { book, privateTexts: [prompt, completion], modelPath, prompt }).map((f) => f.kind),
      ['refresh token (token response)'],
    );
  },
);

test(
  'P-f leak scan: the keep-running demo serving a real openai SDK client and bad requests shows no secret, then stops cleanly on SIGTERM',
  { timeout: 180_000 },
  async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'companion-leakscan-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const sdkPrompts = [
      `sdk private prompt ${randomBytes(8).toString('hex')}`,
      `sdk streamed prompt ${randomBytes(8).toString('hex')}`,
    ];
    const completions: string[] = [];
    const errorBodies: { where: string; text: string }[] = [];
    const run = await runDemoChild({
      root,
      keepRunning: true,
      skipFile: isModelFile,
      dataDir: join(root, 'demo-data'),
      whileAvailable: async ({ endpoint, token }) => {
        const openai = new OpenAI({ baseURL: endpoint, apiKey: token, maxRetries: 0, timeout: 60_000 });
        const plain = await openai.chat.completions.create({
          model: 'tiny-demo',
          messages: [{ role: 'user', content: sdkPrompts[0]! }],
          max_tokens: 16,
          temperature: 0,
        });
        completions.push(plain.choices[0]?.message.content ?? '');
        let streamed = '';
        for await (const chunk of await openai.chat.completions.create({
          model: 'tiny-demo',
          messages: [{ role: 'user', content: sdkPrompts[1]! }],
          max_tokens: 16,
          temperature: 0,
          stream: true,
        })) {
          streamed += chunk.choices[0]?.delta.content ?? '';
        }
        completions.push(streamed);
        // Error bodies: refusals of the guard, and runtime errors about bodies that carry the private prompt.
        const json = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
        const cases: [string, Parameters<typeof rawCall>[1]][] = [
          [
            'wrong token',
            { method: 'GET', path: '/v1/models', headers: { authorization: 'Bearer wrong-token-wrong-token' } },
          ],
          [
            'no token',
            {
              method: 'POST',
              path: '/v1/chat/completions',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ messages: [{ role: 'user', content: sdkPrompts[0] }] }),
            },
          ],
          [
            'foreign Host',
            { method: 'GET', path: '/v1/models', headers: { authorization: `Bearer ${token}`, host: 'evil.example' } },
          ],
          [
            'unknown path',
            {
              method: 'GET',
              path: `/v1/${sdkPrompts[0]!.replace(/ /g, '-')}`,
              headers: { authorization: `Bearer ${token}` },
            },
          ],
          [
            'broken JSON',
            {
              method: 'POST',
              path: '/v1/chat/completions',
              headers: json,
              body: `{"messages":[{"role":"user","content":"${sdkPrompts[0]}"`,
            },
          ],
          [
            'wrong types',
            {
              method: 'POST',
              path: '/v1/chat/completions',
              headers: json,
              body: JSON.stringify({ messages: sdkPrompts[0], max_tokens: sdkPrompts[1] }),
            },
          ],
          [
            'unknown role',
            {
              method: 'POST',
              path: '/v1/chat/completions',
              headers: json,
              body: JSON.stringify({ messages: [{ role: sdkPrompts[1], content: sdkPrompts[0] }] }),
            },
          ],
          [
            'too large',
            {
              method: 'POST',
              path: '/v1/chat/completions',
              headers: json,
              body: JSON.stringify({
                messages: [{ role: 'user', content: `${sdkPrompts[0]} ${'x'.repeat(1_100_000)}` }],
              }),
            },
          ],
        ];
        for (const [name, call] of cases) {
          const response = await rawCall(endpoint, call);
          assert.ok(response.status >= 400, `${name} is refused`);
          errorBodies.push({ where: `error body (${name}, ${response.status})`, text: response.body });
        }
      },
    });
    assert.equal(run.exitCode, 0, `the demo stopped cleanly on SIGTERM: ${run.stderr}`);
    assert.ok(run.available !== null, 'the demo announced its endpoint');
    const { book, modelPath } = bookOf(run);
    for (const kind of REQUIRED) assert.ok(book.kinds().has(kind), `the harness recorded a ${kind}`);
    assert.equal(completions.length, 2);
    const findings = leakFindings(run, {
      book,
      privateTexts: [...sdkPrompts, ...completions, completionOf(run)],
      modelPath,
      prompt: null,
      extra: errorBodies,
    });
    t.diagnostic(`error bodies: ${errorBodies.map((b) => `${b.where}: ${b.text.slice(0, 160)}`).join(' | ')}`);
    assert.deepEqual(findings, [], report(findings));
    assertLogWritten(run);
    // The secret channel (the demo's fd 3) reached no other process.
    const demo = run.processes.find((p) => p.role === 'demo');
    const channel = demo?.fds.find((fd) => fd.startsWith('3:'))?.slice(2);
    assert.ok(channel !== undefined);
    for (const proc of run.processes.filter((p) => p.role !== 'demo'))
      assert.ok(
        !proc.fds.some((fd) => fd.endsWith(`:${channel}`)),
        `pid ${proc.pid} does not hold the harness channel`,
      );
    assert.deepEqual(run.leftOver, [], 'no runtime process is left');
  },
);

test(
  "settledSnapshot() samples a forked child only once it has exec'd (before that it shows its parent's exe, argv and fds)",
  { timeout: 30_000 },
  async (t) => {
    // perl forks; the child waits 0.6 s as a copy of its parent, then execs sleep.
    const script =
      'my $p = fork; if ($p == 0) { select(undef, undef, undef, 0.6); exec "sleep", "30"; } waitpid($p, 0);';
    const start = (): { pid: number; child: () => Promise<number> } => {
      const perl = spawn('perl', ['-e', script], { stdio: 'ignore', detached: true });
      t.after(() => {
        try {
          process.kill(-perl.pid!, 'SIGKILL');
        } catch {
          // Gone.
        }
      });
      return {
        pid: perl.pid!,
        async child() {
          const deadline = Date.now() + 5_000;
          for (;;) {
            const [child] = descendantsOf(perl.pid!);
            if (child !== undefined) return child;
            if (Date.now() > deadline) throw new Error('perl did not fork');
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        },
      };
    };

    // Control: read at once, the child is still its parent (what a naive sample records).
    const naive = start();
    const early = await settledSnapshot(await naive.child(), 'descendant', 0);
    assert.ok(early !== null);
    assert.equal(early.role, "descendant (fork, not exec'd)");
    assert.equal(early.argv[0], 'perl');

    const settled = start();
    const snap = await settledSnapshot(await settled.child(), 'descendant', 5_000);
    assert.ok(snap !== null);
    assert.equal(snap.role, 'descendant');
    assert.deepEqual(snap.argv, ['sleep', '30']);
  },
);
