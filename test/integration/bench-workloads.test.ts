// `npm run bench -- workloads --json --quick` (2-layer model, 16 tokens, one run): its last stdout line is
// one JSON object with the issue-17 fields, each with its value, target and `met`. Only the shape is
// checked, never a figure: timings are not asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { distRoot, repoRoot } from '../helpers/paths.js';

function runBench(
  args: string[],
  timeoutMs: number,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(distRoot, 'bench', 'run.js'), ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the bench did not finish in ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

test('bench workloads --json --quick prints one JSON line with every field, its target and met', async () => {
  const result = await runBench(['workloads', '--json', '--quick'], 180_000);
  assert.equal(result.status, 0, result.stderr);
  const lines = result.stdout.trim().split('\n');
  const last = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
  assert.equal(last.bench, 'workloads');
  assert.ok(Number.isInteger(last.threads) && (last.threads as number) >= 1, `threads ${String(last.threads)}`);
  assert.ok(Number(last.longPrefixTokens) >= 1000, `long prefix of ${String(last.longPrefixTokens)} tokens`);
  assert.equal(
    typeof last.inProcessParallel4OverSerial,
    'number',
    'the profile of parallel4OverSerial (in-process, 4 sequences) is printed',
  );
  assert.equal(
    typeof last.runtimeStreamOverInProcess,
    'number',
    'the profile of streamOverInProcess (straight to the runtime) is printed',
  );
  const targets: Record<string, string> = {
    companionOverInProcess: '>=0.95',
    streamOverInProcess: '>=0.95',
    addedTtftMs: 'report',
    parallel4OverSerial: '>=1.8',
    secondTurnTtftRatio: '<=0.3',
    jsonSchemaOverPlain: 'report',
  };
  for (const [field, target] of Object.entries(targets)) {
    const entry = last[field] as { value: unknown; target: unknown; met: unknown; reason?: unknown } | undefined;
    assert.ok(entry !== undefined, `${field} is printed`);
    assert.equal(entry.target, target, field);
    assert.equal(typeof entry.met, 'boolean', `${field}.met`);
    if (entry.value === null) {
      // Only a field the runtime cannot do yet may be null, and it says why.
      assert.equal(field, 'jsonSchemaOverPlain');
      assert.equal(typeof entry.reason, 'string');
      assert.equal(entry.met, false);
    } else {
      assert.equal(typeof entry.value, 'number', `${field}.value`);
      if (target.startsWith('>=')) assert.equal(entry.met, (entry.value as number) >= Number(target.slice(2)), field);
      if (target.startsWith('<=')) assert.equal(entry.met, (entry.value as number) <= Number(target.slice(2)), field);
    }
  }
});
