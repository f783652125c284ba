// `companion run` as a script and as a chat (issue 18, item 4), driven as child processes against a fake
// OpenAI-compatible cloud upstream that records every request: the prompt from a pipe or `-`, --system
// and --model in the request, empty stdin as a usage error, and a two-turn chat in tmux.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, type CliResult } from '../helpers/cli.js';
import { gate } from '../helpers/gate.js';
import { repoRoot } from '../helpers/paths.js';

interface Recorded {
  readonly model: string;
  readonly messages: { role: string; content: string }[];
  readonly authorization: string | undefined;
}

/** A fake cloud endpoint: answers `ANSWER-<user turns>: <last user text>` as a stream, in three pieces. */
async function fakeCloud(t: {
  after(fn: () => Promise<void> | void): void;
}): Promise<{ url: string; requests: Recorded[] }> {
  const requests: Recorded[] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      const parsed = JSON.parse(body) as { model: string; messages: Recorded['messages'] };
      requests.push({ model: parsed.model, messages: parsed.messages, authorization: req.headers.authorization });
      const users = parsed.messages.filter((m) => m.role === 'user');
      const text = `ANSWER-${users.length}: ${users.at(-1)?.content ?? ''}`;
      const slow = text.includes('slowly');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const pieces = slow
        ? Array.from({ length: 600 }, () => 'la ')
        : [text.slice(0, 4), text.slice(4, 9), text.slice(9)];
      let index = 0;
      const next = (): void => {
        if (res.destroyed) return;
        if (index < pieces.length) {
          res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: pieces[index] } }] })}\n\n`);
          index += 1;
          setTimeout(next, slow ? 100 : 5);
          return;
        }
        res.write(
          `data: ${JSON.stringify({ choices: [{ delta: {}, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 3 } })}\n\n`,
        );
        res.end('data: [DONE]\n\n');
      };
      next();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

function setup(t: { after(fn: () => void): void }, cloudUrl: string): NodeJS.ProcessEnv {
  const dir = mkdtempSync(join(tmpdir(), 'companion-run-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    COMPANION_HOME: join(dir, 'data'),
    DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(dir, 'no-such-bus')}`,
    XDG_RUNTIME_DIR: join(dir, 'no-such-runtime-dir'),
    COMPANION_CLOUD_URL: cloudUrl,
    COMPANION_CLOUD_KEY: 'test-cloud-key',
  };
}

/** Runs the CLI with `input` piped to stdin (null: stdin is /dev/null). */
function runWithStdin(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  input: string | Buffer | null,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: repoRoot,
      env,
      stdio: [input === null ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`companion ${args.join(' ')} did not finish\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, 30_000);
    if (input !== null) {
      child.stdin!.on('error', () => undefined); // the CLI may stop reading early (over the bound)
      child.stdin!.end(input);
    }
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

test('companion run reads the prompt from a pipe and from `-`, with --system first and --model as the model id', async (t) => {
  const cloud = await fakeCloud(t);
  const env = setup(t, cloud.url);

  const piped = await runWithStdin(['run', '--tier', 'public'], env, 'hi\n');
  assert.equal(piped.status, 0, piped.stderr);
  assert.equal(piped.stdout, 'ANSWER-1: hi\n');
  assert.match(piped.stderr, /\(lane: cloud, 3 tokens\)/);
  assert.deepEqual(cloud.requests[0]?.messages, [{ role: 'user', content: 'hi' }]);
  assert.equal(cloud.requests[0]?.model, 'gpt-4o-mini');
  assert.equal(cloud.requests[0]?.authorization, 'Bearer test-cloud-key');

  const dash = await runWithStdin(
    ['run', '-', '--tier', 'public', '--system', 'Answer in French', '--model', 'other-model', '--json'],
    env,
    'line one\nline two\n',
  );
  assert.equal(dash.status, 0, dash.stderr);
  assert.deepEqual(JSON.parse(dash.stdout), {
    answer: 'ANSWER-1: line one\nline two',
    lane: 'cloud',
    model: 'other-model',
    finishReason: 'stop',
    usage: { promptTokens: 3, completionTokens: 3 },
  });
  assert.deepEqual(cloud.requests[1]?.messages, [
    { role: 'system', content: 'Answer in French' },
    { role: 'user', content: 'line one\nline two' },
  ]);
  assert.equal(cloud.requests[1]?.model, 'other-model');

  // A positional PROMPT wins over a piped stdin.
  const positional = await runWithStdin(['run', 'from argv', '--tier', 'public'], env, 'from stdin');
  assert.equal(positional.stdout, 'ANSWER-1: from argv\n');
});

test('companion run: empty or oversized stdin is a usage error (exit 2) and nothing is sent', async (t) => {
  const cloud = await fakeCloud(t);
  const env = setup(t, cloud.url);
  for (const [label, args, input] of [
    ['pipe, empty', ['run', '--tier', 'public'], ''],
    ['pipe, blank', ['run', '--tier', 'public'], ' \n\n'],
    ['dash, /dev/null', ['run', '-', '--tier', 'public'], null],
    ['no prompt, /dev/null', ['run', '--tier', 'public', '--json'], null],
  ] as const) {
    const result = await runWithStdin(args, env, input);
    assert.equal(result.status, 2, `${label}: ${result.stderr}`);
    assert.match(
      result.stderr,
      /^companion run: PROMPT is missing \(stdin was empty\) \(see companion run --help\)\n$/,
      label,
    );
  }
  const big = await runWithStdin(['run', '--tier', 'public'], env, Buffer.alloc(1024 * 1024 + 1, 'a'));
  assert.equal(big.status, 2, big.stderr);
  assert.match(big.stderr, /larger than 1 MiB/);
  assert.equal(cloud.requests.length, 0);
});

test('companion run --help describes the prompt sources, --system, --model and the chat, with examples', async (t) => {
  const env = setup(t, 'http://127.0.0.1:9');
  const help = await runWithStdin(['run', '--help'], env, null);
  assert.equal(help.status, 0);
  for (const text of [
    '--system TEXT',
    '--model NAME',
    '--max-tokens N',
    'Examples:',
    '/bye',
    'Ctrl-D',
    'Ctrl-C',
    'stdin',
  ])
    assert.ok(help.stdout.includes(text), text);
});

const tmuxPresent = spawnSync('tmux', ['-V']).status === 0;

test(
  'companion run with no prompt on a terminal is a chat: two turns with the history, then /bye',
  { ...gate('tmux', tmuxPresent, 'apt-get install tmux'), timeout: 60_000 },
  async (t) => {
    const cloud = await fakeCloud(t);
    const env = setup(t, cloud.url);
    const socket = `companion-run-${process.pid}`;
    const tmux = (...args: string[]): string => {
      const result = spawnSync('tmux', ['-L', socket, ...args], { env, encoding: 'utf8' });
      assert.equal(result.status, 0, `tmux ${args.join(' ')}: ${result.stderr}`);
      return result.stdout;
    };
    const command = `${process.execPath} ${BIN} run --tier public --system 'Be brief'; echo "EXIT=$?"; sleep 60`;
    tmux('new-session', '-d', '-s', 'chat', '-x', '80', '-y', '24', '-c', repoRoot, command);
    t.after(() => void spawnSync('tmux', ['-L', socket, 'kill-server']));
    const screen = (): string => tmux('capture-pane', '-p', '-t', 'chat');
    const waitFor = async (pattern: RegExp): Promise<string> => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const text = screen();
        if (pattern.test(text)) return text;
        if (Date.now() > deadline) assert.fail(`the pane never matched ${pattern}:\n${text}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };

    await waitFor(/^>>> ?$/m);
    tmux('send-keys', '-t', 'chat', 'first question', 'Enter');
    await waitFor(/ANSWER-1: first question\n/);
    await waitFor(/\(lane: cloud, 3 tokens\)\n>>> ?$/m);
    tmux('send-keys', '-t', 'chat', 'second question', 'Enter');
    await waitFor(/ANSWER-2: second question\n(.*\n)?>>> ?$/m);

    // Ctrl-C during an answer cancels that answer only; the chat goes on.
    tmux('send-keys', '-t', 'chat', 'answer slowly', 'Enter');
    await waitFor(/ANSWER-3: |la la la/);
    tmux('send-keys', '-t', 'chat', 'C-c');
    await waitFor(/\(answer cancelled\)\n>>> ?$/m);

    tmux('send-keys', '-t', 'chat', '/bye', 'Enter');
    const end = await waitFor(/EXIT=\d+/);
    assert.match(end, /EXIT=0/);
    assert.match(end, /^>>> first question$/m);

    assert.equal(cloud.requests.length, 3);
    assert.deepEqual(cloud.requests[0]?.messages, [
      { role: 'system', content: 'Be brief' },
      { role: 'user', content: 'first question' },
    ]);
    assert.deepEqual(cloud.requests[1]?.messages, [
      { role: 'system', content: 'Be brief' },
      { role: 'user', content: 'first question' },
      { role: 'assistant', content: 'ANSWER-1: first question' },
      { role: 'user', content: 'second question' },
    ]);
    // The cancelled turn's request carried the history; the cancelled turn itself is not kept.
    assert.equal(cloud.requests[2]?.messages.length, 6);
  },
);

test(
  'companion run chat: Ctrl-D leaves with 0, Ctrl-C at an empty prompt leaves with 130',
  { ...gate('tmux', tmuxPresent, 'apt-get install tmux'), timeout: 60_000 },
  async (t) => {
    const cloud = await fakeCloud(t);
    const env = setup(t, cloud.url);
    for (const [key, status] of [
      ['C-d', 0],
      ['C-c', 130],
    ] as const) {
      const socket = `companion-run-${process.pid}-${status}`;
      const tmux = (...args: string[]): string =>
        spawnSync('tmux', ['-L', socket, ...args], { env, encoding: 'utf8' }).stdout;
      tmux(
        'new-session',
        '-d',
        '-s',
        'chat',
        '-x',
        '80',
        '-y',
        '24',
        '-c',
        repoRoot,
        `${process.execPath} ${BIN} run --tier public; echo "EXIT=$?"; sleep 60`,
      );
      t.after(() => void spawnSync('tmux', ['-L', socket, 'kill-server']));
      const deadline = Date.now() + 20_000;
      let sent = false;
      for (;;) {
        const text = tmux('capture-pane', '-p', '-t', 'chat');
        if (!sent && /^>>> ?$/m.test(text)) {
          tmux('send-keys', '-t', 'chat', key);
          sent = true;
        }
        const exit = /EXIT=(\d+)/.exec(text);
        if (exit) {
          assert.equal(Number(exit[1]), status, text);
          break;
        }
        if (Date.now() > deadline) assert.fail(`${key}: no exit:\n${text}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    assert.equal(cloud.requests.length, 0);
  },
);
