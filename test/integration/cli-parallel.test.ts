// `companion up --parallel N --context N` (COMPANION_PARALLEL, COMPANION_CONTEXT), issue 17 items 6-7,
// through the real CLI as child processes with a memory keychain and the tiny model installed:
// - bad values (0, 17, "x", below the context floor), as flags or in the environment, exit 2 with
//   ERR_USAGE before anything starts;
// - the chosen sequences and context are reported in up's available event, state.json and ps, whether
//   asked (flags, environment) or chosen by default (the tiny model: 4 sequences of its trained 2048).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runCli, startCli, type CliResult } from '../helpers/cli.js';

const NO_HUB = 'https://127.0.0.1:9';

function setup(t: { after(fn: () => void): void }): { env: NodeJS.ProcessEnv; dataDir: string; common: string[] } {
  const root = mkdtempSync(join(tmpdir(), 'companion-parallel-cli-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = join(root, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  chmodSync(dataDir, 0o700);
  installTinyModel(dataDir);
  return {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: root },
    dataDir,
    common: ['--hub', NO_HUB, '--keychain', 'memory', '--data-dir', dataDir],
  };
}

function jsonLines(result: CliResult): Record<string, unknown>[] {
  return result.stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

test(
  'up refuses --parallel and --context outside their ranges, as flags or environment, with exit 2 and ERR_USAGE',
  { timeout: 180_000 },
  async (t) => {
    const { env, common } = setup(t);
    const cases: { args: string[]; env?: Record<string, string>; names: RegExp }[] = [
      { args: ['--parallel', '0'], names: /--parallel/ },
      { args: ['--parallel', '17'], names: /--parallel/ },
      { args: ['--parallel', 'x'], names: /--parallel/ },
      { args: ['--parallel', '1.5'], names: /--parallel/ },
      { args: ['--context', '0'], names: /--context/ },
      { args: ['--context', '63'], names: /--context/ },
      { args: ['--context', 'x'], names: /--context/ },
      { args: [], env: { COMPANION_PARALLEL: '17' }, names: /COMPANION_PARALLEL/ },
      { args: [], env: { COMPANION_PARALLEL: 'x' }, names: /COMPANION_PARALLEL/ },
      { args: [], env: { COMPANION_CONTEXT: '0' }, names: /COMPANION_CONTEXT/ },
    ];
    for (const { args, env: extra, names } of cases) {
      const result = await runCli(
        ['up', '--json', '--threads', '1', '--allow-unsandboxed', ...args, ...common],
        { ...env, ...extra },
        60_000,
      );
      const label = `${args.join(' ')} ${JSON.stringify(extra ?? {})}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
      assert.equal(result.status, 2, label);
      const lines = jsonLines(result);
      assert.equal(lines.length, 1, label);
      const error = lines[0]!.error as { code?: string; message?: string };
      assert.equal(error.code, 'ERR_USAGE', label);
      assert.match(String(error.message), names, label);
    }
  },
);

/** Starts `up --json` with `extra` arguments and environment; returns its available event, ps row and state. */
async function upShape(
  t: { after(fn: () => unknown): void },
  extra: string[],
  extraEnv: Record<string, string> = {},
): Promise<{
  available: Record<string, unknown>;
  row: Record<string, unknown>;
  state: Record<string, unknown>;
  status: Record<string, unknown>;
  statusText: string;
}> {
  const { env, dataDir, common } = setup(t);
  const up = startCli(['up', '--json', '--threads', '1', '--allow-unsandboxed', ...extra, ...common], {
    ...env,
    ...extraEnv,
  });
  t.after(async () => void (await up.stop()));
  const available = await up.waitJson((v) => v.event === 'available', 90_000);
  // state.json is written after the event; ps reads it.
  let row: Record<string, unknown> = {};
  for (let i = 0; i < 100; i++) {
    const ps = await runCli(['ps', '--json', '--data-dir', dataDir], env);
    assert.equal(ps.status, 0, ps.stderr);
    row = jsonLines(ps)[0] ?? {};
    if (row.parallel !== null && row.parallel !== undefined) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const state = JSON.parse(readFileSync(join(dataDir, 'run', 'state.json'), 'utf8')) as Record<string, unknown>;
  const status = await runCli(['status', '--json', ...common], env);
  const report = jsonLines(status)[0] ?? {};
  return { available, row, state, status: report, statusText: (await runCli(['status', ...common], env)).stdout };
}

test(
  'up --parallel 2 --context 512 runs 2 sequences of 512 tokens and says so in its available event, state.json and ps',
  { timeout: 180_000 },
  async (t) => {
    const { available, row, state, status, statusText } = await upShape(t, ['--parallel', '2', '--context', '512']);
    assert.equal(available.parallel, 2);
    assert.equal(available.contextSize, 512);
    assert.deepEqual([row.parallel, row.contextSize], [2, 512]);
    assert.deepEqual([state.parallel, state.contextSize], [2, 512]);
    assert.deepEqual([status.parallel, status.contextSize], [2, 512], 'status --json shows the shape');
    assert.match(statusText, /Serves: +2 requests at once, 512 tokens of context each/);
  },
);

test(
  'up with COMPANION_PARALLEL=3 and COMPANION_CONTEXT=1024 runs what the environment asks',
  { timeout: 180_000 },
  async (t) => {
    const { available } = await upShape(t, [], { COMPANION_PARALLEL: '3', COMPANION_CONTEXT: '1024' });
    assert.deepEqual([available.parallel, available.contextSize], [3, 1024]);
  },
);

test(
  "up by default runs 4 sequences of the model's trained context (the tiny model: 2048) when memory holds them",
  { timeout: 180_000 },
  async (t) => {
    const { available, row } = await upShape(t, []);
    assert.deepEqual([available.parallel, available.contextSize], [4, 2048]);
    assert.deepEqual([row.parallel, row.contextSize], [4, 2048]);
  },
);
