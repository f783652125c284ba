// `companion hub --synthetic-model SIZE` and `--model FILE.gguf [--model-id ID]` through the real CLI as a
// child process: the signed manifest (fetched after a real sign-in, verified with the printed key) lists
// each model with its size and digest, the model host serves its bytes, a restart with the same --data-dir
// reuses the generated file, and a file that is not GGUF is refused with ERR_HUB_MODEL_FILE.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, fetch } from 'undici';
import { parseTrustedKeys } from '../../src/core/manifest-format.js';
import { verifyManifest } from '../../src/core/manifest.js';
import { COMPANION_CLIENT_ID, COMPANION_SCOPES, type RunningHub } from '../../src/hub/index.js';
import { syntheticLlamaGguf } from '../../src/hub/llama-gguf.js';
import { generateTinyGguf } from '../../src/hub/tiny-gguf.js';
import { runCli, startCli, type LongRunning } from '../helpers/cli.js';
import { fetchManifest, signIn, withAgent } from '../helpers/hub.js';
import { waitFor } from '../helpers/runtime-env.js';

interface Ready {
  hub: string;
  modelHost: string;
  ca: string;
  manifestKey: string;
  user: string;
  password: string;
}

function env(home: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home };
}

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'companion-hub-publish-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Signs in as the dev user and returns the verified manifest's models. */
async function manifestModels(
  t: { after(fn: () => Promise<void>): void },
  ready: Ready,
  caPem: string,
): Promise<VerifiedModels> {
  const agent = new Agent({ connect: { ca: caPem } });
  t.after(() => agent.close());
  const hub = withAgent(
    {
      issuer: ready.hub,
      hubUrl: ready.hub,
      clientId: COMPANION_CLIENT_ID,
      scopes: COMPANION_SCOPES,
      user: ready.user,
      password: ready.password,
    } as unknown as RunningHub,
    agent,
  );
  const { tokens } = await signIn(hub);
  const response = await fetchManifest(hub, tokens.access_token);
  assert.equal(response.status, 200);
  const manifest = verifyManifest(await response.text(), {
    trustedKeys: parseTrustedKeys(ready.manifestKey),
    expectedIssuer: ready.hub,
    now: Date.now(),
  });
  return { models: manifest.models, agent };
}

interface VerifiedModels {
  models: readonly { id: string; url: string; size: number; sha256: string; runtime?: { contextLength?: number } }[];
  agent: Agent;
}

async function startHubCli(
  t: { after(fn: () => Promise<void>): void },
  home: string,
  args: string[],
): Promise<{ cli: LongRunning; ready: Ready }> {
  const cli = startCli(['hub', '--json', ...args], env(home));
  t.after(async () => {
    await cli.stop();
  });
  const ready = (await cli.waitJson((line) => typeof line.hub === 'string', 120_000)) as unknown as Ready;
  return { cli, ready };
}

test('companion hub --synthetic-model smol135m --model FILE --model-id ID lists both in the signed manifest with their sizes and digests, serves them, and a restart reuses the generated file', async (t) => {
  const dir = scratch(t);
  const dataDir = join(dir, 'hub');
  const modelPath = join(dir, 'My Model.Q8_0.gguf');
  const fileBytes = generateTinyGguf({ seed: 9 });
  writeFileSync(modelPath, fileBytes);
  const smol = syntheticLlamaGguf('smol135m', { seed: 1 });
  const smolHash = createHash('sha256');
  for (const chunk of smol.chunks()) smolHash.update(chunk);
  const smolSha = smolHash.digest('hex');

  const first = await startHubCli(t, dir, [
    '--data-dir',
    dataDir,
    '--synthetic-model',
    'smol135m',
    '--model',
    modelPath,
    '--model-id',
    'operator-model',
    '--model',
    modelPath,
  ]);
  const caPem = readFileSync(first.ready.ca, 'utf8');
  const { models, agent } = await manifestModels(t, first.ready, caPem);
  assert.deepEqual(
    models.map((m) => m.id),
    ['tiny-demo', 'smol135m', 'operator-model', 'my-model.q8_0'],
  );
  const byId = new Map(models.map((m) => [m.id, m]));
  assert.equal(byId.get('smol135m')!.size, smol.size);
  assert.equal(byId.get('smol135m')!.sha256, smolSha);
  assert.equal(byId.get('smol135m')!.runtime?.contextLength, 8192);
  assert.equal(byId.get('operator-model')!.size, fileBytes.length);
  assert.equal(byId.get('operator-model')!.sha256, createHash('sha256').update(fileBytes).digest('hex'));
  assert.equal(byId.get('my-model.q8_0')!.sha256, byId.get('operator-model')!.sha256);

  // The model host serves the bytes the manifest describes: whole file for the operator's, a range of the generated one.
  const whole = await fetch(byId.get('operator-model')!.url, { dispatcher: agent });
  assert.equal(whole.status, 200);
  assert.ok(Buffer.from(await whole.arrayBuffer()).equals(fileBytes));
  const range = await fetch(byId.get('smol135m')!.url, { dispatcher: agent, headers: { range: 'bytes=0-7' } });
  assert.equal(range.status, 206);
  assert.equal(range.headers.get('content-range'), `bytes 0-7/${smol.size}`);
  assert.deepEqual([...Buffer.from(await range.arrayBuffer())], [0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0]);

  const generated = join(dataDir, 'synthetic-models', readdirSync(join(dataDir, 'synthetic-models'))[0]!);
  assert.equal(statSync(generated).mode & 0o777, 0o600);
  const before = statSync(generated, { bigint: true });
  assert.equal(await first.cli.stop(), 0, first.cli.stderr());

  // Restart with the same data dir (without --json, so the hub's log lines show what it did).
  const second = startCli(['hub', '--data-dir', dataDir, '--synthetic-model', 'smol135m'], env(dir));
  t.after(async () => {
    await second.stop();
  });
  await waitFor(() => second.lines.includes('Stop with Ctrl-C.'), 60_000, 'the restarted hub to be ready');
  assert.match(second.lines.join('\n'), /smol135m \(123\.\d MB\)/);
  assert.match(second.stderr(), /model smol135m: reusing the generated smol135m llama/);
  assert.doesNotMatch(second.stderr(), /generating/);
  const after = statSync(generated, { bigint: true });
  assert.equal(after.ino, before.ino);
  assert.equal(after.mtimeNs, before.mtimeNs);
});

test('companion hub --model FILE refuses a file that is not GGUF with ERR_HUB_MODEL_FILE, and a missing one', async (t) => {
  const dir = scratch(t);
  const notGguf = join(dir, 'weights.gguf');
  writeFileSync(notGguf, Buffer.from('PK\u0003\u0004 a zip file, not a model'));
  const refused = await runCli(['hub', '--json', '--model', notGguf], env(dir));
  assert.equal(refused.status, 1);
  const line = JSON.parse(refused.stdout.trim().split('\n').at(-1)!) as { error: { code: string; message: string } };
  assert.equal(line.error.code, 'ERR_HUB_MODEL_FILE');
  assert.match(line.error.message, /not a GGUF file/);

  const missing = await runCli(['hub', '--model', join(dir, 'nosuch.gguf')], env(dir));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /ERR_HUB_MODEL_FILE/);
  assert.equal(missing.stdout, '');
});

test('companion hub refuses --model-id without a --model before it, an unknown --synthetic-model size and two models with one id (exit 2)', async (t) => {
  const dir = scratch(t);
  const cases: [string[], RegExp][] = [
    [['--model-id', 'x'], /--model-id names the --model FILE just before it/],
    [['--synthetic-model', 'huge'], /--synthetic-model needs a size: tiny or smol135m/],
    [['--synthetic-model', 'smol135m', '--synthetic-model', 'smol135m'], /two models would have the id smol135m/],
    [['--model', join(dir, 'a.gguf'), '--model-id', 'tiny-demo'], /two models would have the id tiny-demo/],
    [['--model', join(dir, '___.gguf')], /add --model-id ID after it/],
  ];
  for (const [args, message] of cases) {
    const result = await runCli(['hub', ...args], env(dir));
    assert.equal(result.status, 2, args.join(' '));
    assert.match(result.stderr, message);
  }
});
