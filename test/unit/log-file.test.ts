// The log file (issue 18 item 8): 0600 in a 0700 folder, appended, one rotation past the bound, control
// characters replaced, a symlink at its name refused (never followed), tail across the rotation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanLogText, logPaths, openLogFile, tailLog } from '../../src/shell/log-file.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'companion-log-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('openLogFile() makes logs/ 0700 and companion.log 0600, and appends time-stamped lines', async (t) => {
  const dir = tempDir(t);
  const at = new Date('2026-01-02T03:04:05.678Z');
  const log = openLogFile(dir, { now: () => at });
  log.write('up', 'started');
  log.close();
  const again = openLogFile(dir, { now: () => at });
  again.write('runtime', 'ready');
  again.close();
  const paths = logPaths(dir);
  assert.equal(statSync(paths.dir).mode & 0o777, 0o700);
  assert.equal(statSync(paths.file).mode & 0o777, 0o600);
  assert.equal(
    readFileSync(paths.file, 'utf8'),
    '2026-01-02T03:04:05.678Z up: started\n2026-01-02T03:04:05.678Z runtime: ready\n',
  );
  assert.deepEqual((await tailLog(dir, 1))?.lines, ['2026-01-02T03:04:05.678Z runtime: ready']);
});

test('the log rotates once past its bound: the full file becomes companion.log.1 and tail reads across both', async (t) => {
  const dir = tempDir(t);
  const log = openLogFile(dir, { maxBytes: 200 });
  for (let i = 0; i < 12; i += 1) log.write('up', `line ${i} ${'x'.repeat(20)}`);
  log.close();
  const paths = logPaths(dir);
  assert.ok(existsSync(paths.rotated));
  assert.ok(
    statSync(paths.file).size <= 200 && statSync(paths.rotated).size <= 200,
    'both files stay within the bound',
  );
  assert.equal(statSync(paths.rotated).mode & 0o777, 0o600);
  const tail = await tailLog(dir, 100);
  const numbers = tail!.lines.map((line) => Number(/line (\d+)/.exec(line)?.[1]));
  assert.deepEqual(
    numbers,
    numbers.slice().sort((a, b) => a - b),
    'in order',
  );
  assert.equal(numbers.at(-1), 11);
  assert.ok(!numbers.includes(0), 'the oldest lines were dropped with the second rotation');
});

test('cleanLogText() replaces terminal escapes, CR and newlines and cuts a runaway line', () => {
  assert.equal(cleanLogText('a\x1b[31mred\rb\nc\td'), 'a?[31mred?b?c\td');
  assert.equal(cleanLogText('x'.repeat(10), 4), 'xxxx…');
});

test('openLogFile() refuses a symlink at the log name (ERR_STATE_UNSAFE) and writes nothing through it', (t) => {
  const dir = tempDir(t);
  const paths = logPaths(dir);
  mkdirSync(paths.dir, { mode: 0o700 });
  const target = join(dir, 'elsewhere.txt');
  writeFileSync(target, 'untouched');
  symlinkSync(target, paths.file);
  assert.throws(
    () => openLogFile(dir),
    (error: unknown) => (error as { code?: string }).code === 'ERR_STATE_UNSAFE',
  );
  assert.equal(readFileSync(target, 'utf8'), 'untouched');
  assert.ok(lstatSync(paths.file).isSymbolicLink());
});

test('tailLog() is null without a log and refuses a symlinked log (ERR_STATE_UNSAFE)', async (t) => {
  const dir = tempDir(t);
  assert.equal(await tailLog(dir, 10), null);
  const paths = logPaths(dir);
  mkdirSync(paths.dir, { mode: 0o700 });
  writeFileSync(join(dir, 'secret.txt'), 'not a log');
  symlinkSync(join(dir, 'secret.txt'), paths.file);
  await assert.rejects(tailLog(dir, 10), (error: unknown) => (error as { code?: string }).code === 'ERR_STATE_UNSAFE');
});
