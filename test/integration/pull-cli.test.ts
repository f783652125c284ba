// `companion pull` as a child process. Signing in needs the same keychain across processes, which the
// in-memory one is not, so the signed-in path is tested in-process (test/security/P-h-download.test.ts);
// here: a pull that is not signed in fails cleanly with one coded line and touches nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startHub } from '../../src/hub/index.js';
import { repoRoot } from '../helpers/paths.js';

const run = promisify(execFile);

test('companion pull --json fails with one coded line (ERR_NOT_SIGNED_IN) when not signed in, and touches nothing', async (t) => {
  const hub = await startHub();
  const dir = await mkdtemp(join(tmpdir(), 'companion-pull-cli-'));
  t.after(async () => {
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });
  const caFile = join(dir, 'ca.pem');
  await writeFile(caFile, hub.caPem);
  const dataDir = join(dir, 'data');
  const argv = [
    join(repoRoot, 'bin', 'companion.js'),
    'pull',
    '--hub',
    hub.hubUrl,
    '--ca',
    caFile,
    '--manifest-key',
    hub.manifestKey,
    '--data-dir',
    dataDir,
    '--keychain',
    'memory',
    '--json',
  ];
  const result = await run(process.execPath, argv, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
    timeout: 30_000,
  }).then(
    () => assert.fail('companion pull succeeded without a sign-in'),
    (error: { code?: number; stdout: string; stderr: string }) => error,
  );
  assert.equal(result.code, 1, result.stderr);
  // stdout: the one JSON error object (src/cli/main.ts), and no event before it.
  assert.deepEqual(
    result.stdout
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => (JSON.parse(line) as { error?: { code?: string } }).error?.code),
    ['ERR_NOT_SIGNED_IN'],
  );
  // Besides the announcement that --keychain memory is in use (by design), exactly one coded line.
  const lines = result.stderr
    .split('\n')
    .filter((line) => line.length > 0 && !line.startsWith('companion: using the in-memory keychain'));
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0]!, /^companion pull: [^\n]+ \[ERR_NOT_SIGNED_IN\]$/);
  assert.equal(hub.modelHostRequests().length, 0, 'the model host was not asked');
  assert.equal(existsSync(join(dataDir, 'models')), false, 'no models folder was made');
});
