// P-i, P-f, P-k for the bundled runtime: it holds no authority (environment, argv, open files), it never
// logs what it is asked or answers, and in loopback-TCP mode it serves only the holder of its per-spawn key.
// One real runtime in TCP mode (the mode with a key to leak), started with secrets planted in our env.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { constants, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { inspect } from 'node:util';
import { join } from 'node:path';
import { spawnRuntime, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { tempDir, writeTinyModel } from '../helpers/runtime-env.js';
import { runtimeClient, type RuntimeClient } from '../helpers/runtime-client.js';

const planted: Record<string, string> = {
  COMPANION_ACCESS_TOKEN: 'planted-access-token-7f3a9c',
  COMPANION_REFRESH_TOKEN: 'planted-refresh-token-51bd02',
  AWS_SECRET_ACCESS_KEY: 'planted-aws-secret-c0ffee',
  LLAMA_API_KEY: 'planted-llama-key-8e8e8e',
  DBUS_SESSION_BUS_ADDRESS: 'unix:path=/tmp/planted-bus-e1e1e1',
  NODE_OPTIONS: '--title=planted-node-options-4d4d4d',
  LC_SECRET_TOKEN: 'planted-locale-token-9a9a9a',
};
const saved: Record<string, string | undefined> = {};
/** The access-mode bits of open(2) flags (Linux: O_RDONLY 0, O_WRONLY 1, O_RDWR 2); not in node's constants. */
const O_ACCMODE = 0o3;
const dir = tempDir();
const dataDir = join(dir.path, 'data');
let model: string;
let handle: RuntimeHandle;
let client: RuntimeClient;
const stderr: string[] = [];

before(async () => {
  for (const [name, value] of Object.entries(planted)) {
    saved[name] = process.env[name];
    process.env[name] = value;
  }
  model = writeTinyModel(dir.path);
  handle = await spawnRuntime(bundledProfile({ modelPath: model, threads: 1 }), {
    dataDir,
    bind: 'tcp',
    readyTimeoutMs: 60_000,
    onStderr: (line) => stderr.push(line),
  });
  client = runtimeClient(handle.address);
});

after(async () => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) Reflect.deleteProperty(process.env, name);
    else process.env[name] = value;
  }
  await client?.close();
  await handle?.stop(2000);
  dir.cleanup();
});

function key(): string {
  assert.equal(handle.address.kind, 'tcp');
  return handle.address.kind === 'tcp' ? handle.address.key.reveal() : '';
}

test("P-i the runtime child's environment holds only allow-listed names and none of the planted secrets", () => {
  const environ = readFileSync(`/proc/${handle.pid}/environ`, 'utf8');
  const names = environ
    .split('\0')
    .filter(Boolean)
    .map((entry) => entry.slice(0, entry.indexOf('=')));
  for (const name of names) assert.match(name, /^(PATH|HOME|LANG|LANGUAGE|LC_[A-Z_]+|TMPDIR|TZ)$/);
  assert.ok(!names.includes('NODE_OPTIONS') && !names.includes('LC_SECRET_TOKEN'));
  for (const value of [...Object.values(planted), key()])
    assert.ok(!environ.includes(value), 'a secret reached the child environment');
});

test("P-i the runtime child's argv holds no secret and no key", () => {
  const cmdline = readFileSync(`/proc/${handle.pid}/cmdline`, 'utf8');
  for (const value of [...Object.values(planted), key()]) assert.ok(!cmdline.includes(value));
  assert.ok(!cmdline.includes('--api-key'));
});

test('P-i the runtime child has no file open but its model (and /dev/null): no data dir, state or key file', () => {
  const allowedFiles = new Set([realpathSync(model), '/dev/null']);
  for (const fd of readdirSync(`/proc/${handle.pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${handle.pid}/fd/${fd}`);
    } catch {
      continue; // Closed meanwhile.
    }
    if (/^(pipe|socket|anon_inode):/.test(target)) continue;
    assert.ok(allowedFiles.has(target), `fd ${fd} is open on an unexpected file`);
    assert.ok(!target.startsWith(dataDir));
  }
});

test('P-i the runtime holds its model read-only: descriptor 3 (and any other descriptor on the model) has access mode O_RDONLY', () => {
  // Unsandboxed spawn (no wrap): the descriptor handed over stays in the runtime itself.
  const modelReal = realpathSync(model);
  assert.equal(readlinkSync(`/proc/${handle.pid}/fd/3`), modelReal, 'descriptor 3 is the model');
  const accessMode = (fd: string): number => {
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${handle.pid}/fdinfo/${fd}`, 'utf8'));
    assert.ok(flags !== null, `fdinfo of ${fd} has flags`);
    return Number.parseInt(flags[1]!, 8) & O_ACCMODE;
  };
  assert.equal(accessMode('3'), constants.O_RDONLY, 'descriptor 3 is open read-only');
  for (const fd of readdirSync(`/proc/${handle.pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${handle.pid}/fd/${fd}`);
    } catch {
      continue; // Closed meanwhile.
    }
    if (target === modelReal)
      assert.equal(accessMode(fd), constants.O_RDONLY, `descriptor ${fd} on the model is read-only`);
  }
});

test('P-f the per-spawn key never shows when the handle is printed or serialised', () => {
  const text = `${JSON.stringify(handle.address)} ${inspect(handle.address)} ${String(handle.address.kind === 'tcp' ? handle.address.key : '')}`;
  assert.ok(!text.includes(key()));
  assert.match(text, /\[redacted\]/);
});

test('P-f the runtime logs neither prompts nor completions (nor its key) on stderr', async () => {
  const marker = 'PRIVATE-PROMPT-MARKER-4242';
  const chat = await client.openai.chat.completions.create({
    model: 'local',
    messages: [{ role: 'user', content: marker }],
    max_tokens: 16,
    temperature: 0,
  });
  const completion = await client.openai.completions.create({
    model: 'local',
    prompt: `${marker} completion`,
    max_tokens: 16,
    temperature: 0,
  });
  const outputs = [chat.choices[0]!.message.content ?? '', completion.choices[0]!.text].filter(
    (text) => text.trim().length >= 6,
  );
  const log = stderr.join('\n');
  assert.ok(!log.includes(marker), 'a prompt was logged');
  for (const output of outputs) assert.ok(!log.includes(output.trim()), 'a completion was logged');
  assert.ok(!log.includes(key()));
});

test('P-k the runtime in TCP mode refuses every request without its per-spawn key or with a foreign Host', async () => {
  assert.equal(handle.address.kind, 'tcp');
  if (handle.address.kind !== 'tcp') return;
  const port = handle.address.port;
  const good = `Bearer ${key()}`;
  const attempts: [string, string, Record<string, string>, number][] = [
    ['GET', '/health', { host: `127.0.0.1:${port}` }, 401],
    ['GET', '/v1/models', { host: `127.0.0.1:${port}`, authorization: `Bearer ${key().slice(0, -1)}x` }, 401],
    ['GET', '/v1/models', { host: `127.0.0.1:${port}`, authorization: `Bearer ${key()}extra` }, 401],
    ['GET', '/v1/models', { host: `127.0.0.1:${port}`, authorization: key() }, 401],
    ['GET', '/v1/models', { host: 'attacker.example', authorization: good }, 403],
    ['GET', '/v1/models', { host: `localhost.:${port}`, authorization: good }, 403],
    ['GET', '/v1/models', { host: `127.0.0.1:${port + 1}`, authorization: good }, 403],
  ];
  for (const [method, path, headers, status] of attempts) {
    const response = await client.raw(method, path, { headers });
    assert.equal(response.status, status, `${method} ${path} ${JSON.stringify(Object.keys(headers))}`);
  }
  // A chat without the key is refused before any generation: the error is the guard's, not the model's.
  const chat = await client.raw('POST', '/v1/chat/completions', {
    headers: { host: `127.0.0.1:${port}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }),
  });
  assert.equal(chat.status, 401);
  assert.equal((JSON.parse(chat.text) as { error: { code: string } }).error.code, 'invalid_api_key');
  assert.equal(chat.headers['www-authenticate'], 'Bearer');
});
