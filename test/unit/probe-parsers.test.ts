// The probe's parsers, table-driven with the samples in test/fixtures/probe (linux/ captured on this
// machine; nvidia-smi/, darwin/, win32/ constructed in the documented formats), plus a property test:
// any input either parses or fails with ERR_PROBE_FAILED.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  parseAuxv,
  parseProcChildren,
  parseProcStat,
  parseProcStatm,
  parseTaskList,
} from '../../src/runtime/probe-linux.js';
import { darwinPsArgs, darwinPsEnv, parseCpuTime, parseDarwinPs } from '../../src/runtime/probe-darwin.js';
import {
  parseWin32Output,
  win32Args,
  win32Env,
  win32PowerShellPath,
  win32Script,
} from '../../src/runtime/probe-win32.js';
import { NVIDIA_SMI_ARGS, parseNvidiaSmiCsv } from '../../src/runtime/probe-vram.js';
import { probeFixture } from '../helpers/probe-fake-proc.js';

const MIB = 1024 * 1024;

function assertProbeFailed(fn: () => unknown, message?: string): void {
  assert.throws(fn, (error: { code?: string }) => error.code === 'ERR_PROBE_FAILED', message);
}

test('parseProcStat() reads pid, state, pgrp, CPU ticks and start time from captured stat lines', () => {
  const cases: Array<[string, Partial<ReturnType<typeof parseProcStat>>]> = [
    [
      'linux/node-leader.stat',
      { pid: 8584, state: 'S', ppid: 8581, pgrp: 8584, utime: 3, stime: 1, cutime: 0, cstime: 0, starttime: 503216 },
    ],
    ['linux/node-leader-after-child-reaped.stat', { pid: 8584, pgrp: 8584, utime: 3, stime: 1, starttime: 503216 }],
    ['linux/sleep-child.stat', { pid: 8591, state: 'S', ppid: 8584, pgrp: 8584, utime: 0, starttime: 503221 }],
    ['linux/odd-comm.stat', { pid: 8643, state: 'S', ppid: 8642, pgrp: 8620, starttime: 504055 }],
    ['linux/zombie.stat', { pid: 8648, state: 'Z', ppid: 8646, pgrp: 8620, starttime: 504085 }],
    ['linux/spinning-node.stat', { pid: 8655, state: 'R', pgrp: 8620, utime: 73, stime: 0 }],
  ];
  for (const [file, expected] of cases) {
    const parsed = parseProcStat(probeFixture(file));
    for (const [key, value] of Object.entries(expected))
      assert.equal(parsed[key as keyof typeof parsed], value, `${file}: ${key}`);
  }
});

test('parseProcStat() keeps no command name', () => {
  const parsed = parseProcStat(probeFixture('linux/odd-comm.stat'));
  assert.ok(!JSON.stringify(parsed).includes('ird'));
});

test('parseProcStat() fails with ERR_PROBE_FAILED on text that is not a stat line', () => {
  const leader = probeFixture('linux/node-leader.stat');
  const cases = [
    '',
    'garbage',
    '8584 (node) S 8581',
    '8584 node S 8581 8584 8584 0 -1 4194304 2539 0 18 0 3 1 0 0 20 0 7 0 503216',
    leader.replace('8584 (node) S', '8584 (node) 9'),
    leader.replace(' 503216 ', ' -503216 '),
    leader.replace('8584 (node)', 'abc (node)'),
    leader.replace('8584 (node)', '0 (node)'),
    leader.replace(' 3 1 0 0 ', ' 3 1e3 0 0 '),
    leader.replace(' 503216 ', ' 99999999999999999999 '),
  ];
  for (const text of cases) assertProbeFailed(() => parseProcStat(text), JSON.stringify(text.slice(0, 40)));
});

test('parseProcStatm() returns the resident pages of captured statm lines', () => {
  assert.equal(parseProcStatm(probeFixture('linux/node-leader.statm')), 10617);
  assert.equal(parseProcStatm(probeFixture('linux/sleep-child.statm')), 469);
  assert.equal(parseProcStatm(probeFixture('linux/zombie.statm')), 0);
});

test('parseProcStatm() fails with ERR_PROBE_FAILED on malformed text', () => {
  for (const text of ['', '1 2 3', '730 -469 442 5 0 89 0', '730 4x9 442 5 0 89 0', 'a b c d e f g']) {
    assertProbeFailed(() => parseProcStatm(text), text);
  }
});

test('parseProcChildren() reads the captured children files, empty or with a trailing space', () => {
  assert.deepEqual(parseProcChildren(probeFixture('linux/node-leader-main-thread.children')), [8591]);
  assert.deepEqual(parseProcChildren(probeFixture('linux/node-leader-other-thread.children')), []);
  assert.deepEqual(parseProcChildren(probeFixture('linux/zombie-parent.children')), [8648]);
  assert.deepEqual(parseProcChildren('10 11 12 '), [10, 11, 12]);
});

test('parseProcChildren() fails with ERR_PROBE_FAILED on anything but pids', () => {
  for (const text of ['abc', '0 ', '12 -3', '4194305', '1.5', '../1'])
    assertProbeFailed(() => parseProcChildren(text), text);
});

test('parseTaskList() reads the captured task listing and refuses other names', () => {
  const tids = parseTaskList(probeFixture('linux/node-leader.task-list').trim().split('\n'));
  assert.deepEqual(tids, [8584, 8585, 8586, 8587, 8588, 8589, 8590]);
  assertProbeFailed(() => parseTaskList(['8584', 'self']));
});

test('parseAuxv() finds the page size and clock ticks in the captured auxiliary vector', () => {
  assert.deepEqual(parseAuxv(probeFixture('linux/self.auxv')), { pageSize: 4096, clockTicks: 100 });
});

test('parseAuxv() returns no facts for text that is not a 64-bit vector', () => {
  const auxv = probeFixture('linux/self.auxv');
  const none = { pageSize: undefined, clockTicks: undefined };
  assert.deepEqual(parseAuxv(''), none);
  assert.deepEqual(parseAuxv(auxv.slice(0, 20)), none);
  // Decoded as UTF-8 instead of latin1: bytes ≥ 0x80 become U+FFFD.
  assert.deepEqual(parseAuxv(Buffer.from(auxv, 'latin1').toString('utf8').padEnd(auxv.length, '\0')), none);
  // A page size that is not a power of two is not believed.
  const odd = Buffer.alloc(32);
  odd.writeBigUInt64LE(6n, 0);
  odd.writeBigUInt64LE(5000n, 8);
  assert.deepEqual(parseAuxv(odd.toString('latin1')), none);
});

test('parseNvidiaSmiCsv() reads per-GPU used and total MiB as bytes', () => {
  assert.deepEqual(parseNvidiaSmiCsv(probeFixture('nvidia-smi/one-gpu.csv')), [
    { usedBytes: 523 * MIB, totalBytes: 16376 * MIB },
  ]);
  assert.deepEqual(parseNvidiaSmiCsv(probeFixture('nvidia-smi/two-gpus.csv')), [
    { usedBytes: 20480 * MIB, totalBytes: 81920 * MIB },
    { usedBytes: 1 * MIB, totalBytes: 81920 * MIB },
  ]);
  assert.deepEqual(parseNvidiaSmiCsv(probeFixture('nvidia-smi/mixed-supported.csv')), [
    { usedBytes: 7900 * MIB, totalBytes: 24564 * MIB },
  ]);
});

test('parseNvidiaSmiCsv() returns null for no GPU, N/A only, an error message or an impossible reading', () => {
  for (const file of [
    'nvidia-smi/unified-na.csv',
    'nvidia-smi/driver-error.txt',
    'nvidia-smi/no-devices.txt',
    'nvidia-smi/used-over-total.csv',
  ]) {
    assert.equal(parseNvidiaSmiCsv(probeFixture(file)), null, file);
  }
  for (const text of ['', '1, 2, 3', '-1, 100', '1.5, 100', '10, 0', 'pid, name'])
    assert.equal(parseNvidiaSmiCsv(text), null, text);
});

test('NVIDIA_SMI_ARGS is exactly the aggregate query and is frozen', () => {
  assert.deepEqual([...NVIDIA_SMI_ARGS], ['--query-gpu=memory.used,memory.total', '--format=csv,noheader,nounits']);
  assert.ok(Object.isFrozen(NVIDIA_SMI_ARGS));
});

test('darwinPsArgs() asks for one process group with headerless columns', () => {
  assert.deepEqual(darwinPsArgs(812), [
    '-o',
    'pid=',
    '-o',
    'pgid=',
    '-o',
    'rss=',
    '-o',
    'time=',
    '-o',
    'lstart=',
    '-g',
    '812',
  ]);
});

test('darwinPsEnv() pins UNIX 2003 -g semantics and the C locale', () => {
  assert.deepEqual(darwinPsEnv(), { COMMAND_MODE: 'unix2003', LC_ALL: 'C', PATH: '/usr/bin:/bin:/usr/sbin:/sbin' });
});

test('parseCpuTime() reads the ps time formats as seconds', () => {
  const cases: Array<[string, number]> = [
    ['0:00.00', 0],
    ['0:07.42', 7.42],
    ['125:03.99', 125 * 60 + 3.99],
    ['1:02:03', 3723],
    ['2-01:00:00', 2 * 86400 + 3600],
    ['0:01,50', 1.5],
  ];
  for (const [text, seconds] of cases) assert.ok(Math.abs(parseCpuTime(text) - seconds) < 1e-9, text);
  for (const text of ['', '7.42', '0:7.42', 'a:00.00', '-', '0:00.0000000'])
    assertProbeFailed(() => parseCpuTime(text), text);
});

test('parseDarwinPs() sums RSS (KiB) and CPU time of the group and counts its members', () => {
  const sample = parseDarwinPs(probeFixture('darwin/ps-group.txt'), 812);
  assert.deepEqual(sample, {
    rssBytes: (153600 + 48212) * 1024,
    cpuSeconds: 7.42 + 0.31,
    processes: 2,
    leaderStart: 'Mon Nov 29 05:15:00 2025',
  });
  const long = parseDarwinPs(probeFixture('darwin/ps-long-running.txt'), 812);
  assert.equal(long?.processes, 1);
  assert.equal(long?.leaderStart, 'Sat Nov 1 09:05:07 2025');
});

test('parseDarwinPs() returns null when the leader is not listed (the group is gone)', () => {
  assert.equal(parseDarwinPs(probeFixture('darwin/ps-leader-missing.txt'), 812), null);
  assert.equal(parseDarwinPs('', 812), null);
});

test('parseDarwinPs() fails closed when ps returned a process of another group', () => {
  assert.throws(
    () => parseDarwinPs(probeFixture('darwin/ps-other-group.txt'), 812),
    (error: { code?: string; detail?: { step?: string } }) =>
      error.code === 'ERR_PROBE_FAILED' && error.detail?.step === 'scope',
  );
});

test('parseDarwinPs() fails with ERR_PROBE_FAILED on malformed lines', () => {
  for (const text of [
    '  PID  PGID   RSS      TIME STARTED',
    '812 812 100 0:00.01',
    '812 812 x 0:00.01 Mon Nov 29 05:15:00 2025',
    '812 812 100 0:00.01 yesterday at noon ok ok',
  ]) {
    assertProbeFailed(() => parseDarwinPs(text, 812), text);
  }
});

test('win32Args() carries the script as -EncodedCommand UTF-16LE base64 with no profile', () => {
  const args = win32Args(4321);
  assert.deepEqual(args.slice(0, 4), ['-NoLogo', '-NoProfile', '-NonInteractive', '-EncodedCommand']);
  assert.equal(args.length, 5);
  assert.equal(Buffer.from(args[4]!, 'base64').toString('utf16le'), win32Script(4321));
});

test('win32Script() starts from the root pid and filters every CIM query', () => {
  const script = win32Script(4321);
  assert.match(script, /-Filter 'ProcessId = 4321'/);
  const queries = script.match(/Get-CimInstance[^\n]*/g) ?? [];
  assert.equal(queries.length, 2);
  for (const query of queries) assert.match(query, /-Filter/);
  assert.doesNotMatch(script, /Get-Process|Get-WmiObject|tasklist|\bName\b|CommandLine|ExecutablePath/);
  assertProbeFailed(() => win32Script(0));
});

test('win32PowerShellPath() and win32Env() use SystemRoot and pass only what PowerShell needs', () => {
  assert.equal(win32PowerShellPath('C:\\Windows\\'), 'C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe');
  assert.deepEqual(
    win32Env({
      SystemRoot: 'C:\\Windows',
      PATH: 'C:\\Windows\\System32',
      COMPANION_TOKEN: 'secret',
      USERPROFILE: 'C:\\Users\\a',
    }),
    { SystemRoot: 'C:\\Windows', PATH: 'C:\\Windows\\System32' },
  );
});

test('parseWin32Output() sums working set and CPU (100 ns units) and counts members', () => {
  const sample = parseWin32Output(probeFixture('win32/walk-two.txt'));
  assert.deepEqual(sample, {
    rssBytes: 162611200 + 50331648,
    cpuSeconds: (15625000 + 3125000 + 4687500 + 1562500) / 1e7,
    processes: 2,
    leaderStart: '134089247000000000',
  });
  assert.equal(parseWin32Output(probeFixture('win32/walk-root-only.txt'))?.processes, 1);
});

test('parseWin32Output() returns null without a root line and fails on malformed or unbounded walks', () => {
  assert.equal(parseWin32Output(''), null);
  assert.equal(parseWin32Output('\r\n'), null);
  for (const text of [
    probeFixture('win32/walk-too-many.txt'),
    'C 1 1 1 1',
    'R 1 1 1 1\nR 1 1 1 1',
    'R 1 1 1',
    'R -1 1 1 1',
    'Get-CimInstance : Access denied',
  ]) {
    assertProbeFailed(() => parseWin32Output(text), text);
  }
});

test('every parser either parses arbitrary text or fails with ERR_PROBE_FAILED', () => {
  const parsers: Array<(text: string) => unknown> = [
    parseProcStat,
    parseProcStatm,
    parseProcChildren,
    (text) => parseTaskList(text.split('\n')),
    parseAuxv,
    parseNvidiaSmiCsv,
    parseCpuTime,
    (text) => parseDarwinPs(text, 812),
    parseWin32Output,
  ];
  const leader = probeFixture('linux/node-leader.stat');
  const text = fc.oneof(
    fc.string(),
    fc.string({ unit: 'binary' }),
    fc
      .array(
        fc.oneof(fc.nat().map(String), fc.constantFrom(' ', '(', ')', '\n', ',', ':', '.', '[N/A]', 'R', 'C', '-')),
        { maxLength: 60 },
      )
      .map((parts) => parts.join('')),
    fc
      .tuple(fc.nat({ max: leader.length }), fc.string())
      .map(([at, insert]) => leader.slice(0, at) + insert + leader.slice(at)),
  );
  fc.assert(
    fc.property(text, (input) => {
      for (const parse of parsers) {
        try {
          parse(input);
        } catch (error) {
          assert.equal((error as { code?: string }).code, 'ERR_PROBE_FAILED');
        }
      }
    }),
    { numRuns: 500 },
  );
});
