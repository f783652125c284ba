// createResourceProbe() with a fake /proc, a fake clock and fake commands: the cache bound, shared
// in-flight probes, the group walk, CPU over the interval, gone vs failed, and the per-platform calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createResourceProbe, type ProbeExecOptions, type ResourceProbeOptions } from '../../src/runtime/probe.js';
import { NVIDIA_SMI_ARGS } from '../../src/runtime/probe-vram.js';
import { fakeClock, fakeProc, probeFixture, type FakeProcess } from '../helpers/probe-fake-proc.js';

const PAGE = 4096;
const MIB = 1024 * 1024;
const LEADER = 500;

/** A leader (two threads; thread 501 forked 510) and a child 510 that forked 520; 520 forked nothing. */
function group(overrides: Partial<Record<number, Partial<FakeProcess>>> = {}): FakeProcess[] {
  const base: FakeProcess[] = [
    {
      pid: LEADER,
      ppid: 1,
      pgrp: LEADER,
      utime: 100,
      stime: 20,
      residentPages: 1000,
      threads: { 500: [], 501: [510] },
    },
    { pid: 510, ppid: LEADER, pgrp: LEADER, utime: 10, stime: 5, residentPages: 200, threads: { 510: [520] } },
    { pid: 520, ppid: 510, pgrp: LEADER, utime: 1, stime: 1, residentPages: 50 },
  ];
  return base.map((p) => ({ ...p, ...(overrides[p.pid] ?? {}) }));
}

function options(
  proc: ReturnType<typeof fakeProc>,
  clock: ReturnType<typeof fakeClock>,
  extra: Partial<ResourceProbeOptions> = {},
): ResourceProbeOptions {
  return {
    pgid: LEADER,
    now: clock.now,
    platform: 'linux',
    readFile: proc.readFile,
    listDir: proc.listDir,
    findExecutable: async () => null,
    ...extra,
  };
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<Error & { code: string }> {
  let caught: unknown;
  await assert.rejects(promise, (error: { code?: string }) => {
    caught = error;
    return error.code === code;
  });
  return caught as Error & { code: string };
}

test('probe() sums RSS of every group member, counts them and reports no CPU on the first sample', async () => {
  const proc = fakeProc(group());
  const probe = createResourceProbe(options(proc, fakeClock()));
  const figures = await probe.probe();
  assert.equal(figures.rssBytes, (1000 + 200 + 50) * PAGE);
  assert.equal(figures.processes, 3);
  assert.equal(figures.cpuPercent, null);
  assert.equal(figures.vram, null);
  assert.equal(figures.at, 1_000_000);
  assert.ok(Object.isFrozen(figures));
});

test('probe() reuses the cached result at t+499 and probes again at t+501', async () => {
  const proc = fakeProc(group());
  const clock = fakeClock();
  const probe = createResourceProbe(options(proc, clock));
  const first = await probe.probe();
  const reads = proc.touched.length;
  clock.set(first.at + 499);
  assert.equal(await probe.probe(), first);
  assert.equal(proc.touched.length, reads, 'no file was read for the cached answer');
  clock.set(first.at + 501);
  const second = await probe.probe();
  assert.notEqual(second, first);
  assert.equal(second.at, first.at + 501);
  assert.ok(proc.touched.length > reads);
});

test('probe() honours a smaller cacheMs and cacheMs 0 probes every time', async () => {
  const clock = fakeClock();
  const proc = fakeProc(group());
  const probe = createResourceProbe(options(proc, clock, { cacheMs: 100 }));
  const first = await probe.probe();
  clock.advance(99);
  assert.equal(await probe.probe(), first);
  clock.advance(2);
  assert.notEqual(await probe.probe(), first);

  const uncached = createResourceProbe(options(fakeProc(group()), clock, { cacheMs: 0 }));
  const a = await uncached.probe();
  assert.notEqual(await uncached.probe(), a);
});

test('probe() re-probes when the clock went backwards', async () => {
  const clock = fakeClock();
  const proc = fakeProc(group());
  const probe = createResourceProbe(options(proc, clock));
  const first = await probe.probe();
  clock.advance(-10);
  assert.notEqual(await probe.probe(), first);
});

test('probe() shares one in-flight probe between concurrent callers', async () => {
  const proc = fakeProc(group());
  const probe = createResourceProbe(options(proc, fakeClock()));
  const results = await Promise.all([probe.probe(), probe.probe(), probe.probe()]);
  assert.equal(results[0], results[1]);
  assert.equal(results[1], results[2]);
  assert.equal(proc.touched.filter((path) => path === `/proc/${LEADER}/stat`).length, 1);
});

test('probe() shares an in-flight failure and does not cache it', async () => {
  const proc = fakeProc(group());
  proc.failPath(`/proc/${LEADER}/stat`, 'EACCES');
  const probe = createResourceProbe(options(proc, fakeClock()));
  const calls = [probe.probe(), probe.probe()];
  await rejectsWith(calls[0]!, 'ERR_PROBE_FAILED');
  await rejectsWith(calls[1]!, 'ERR_PROBE_FAILED');
  assert.equal(proc.touched.filter((path) => path === `/proc/${LEADER}/stat`).length, 1);
  await rejectsWith(probe.probe(), 'ERR_PROBE_FAILED');
  assert.equal(proc.touched.filter((path) => path === `/proc/${LEADER}/stat`).length, 2, 'the failure was not cached');
});

test('probe() reports CPU over the interval from the ticks of all members, including reaped children', async () => {
  const clock = fakeClock();
  const proc = fakeProc(group());
  const probe = createResourceProbe(options(proc, clock));
  await probe.probe();
  clock.advance(1000);
  // +50 ticks on the leader, +30 on 510 in one second at 100 ticks/s: 80 %.
  proc.set({ ...group()[0]!, utime: 150 });
  proc.set({ ...group()[1]!, utime: 40 });
  assert.equal((await probe.probe()).cpuPercent, 80);
  // 520 exits and 510 reaps it: its 2 ticks move to 510's cutime; nothing else ran.
  clock.advance(1000);
  proc.remove(520);
  proc.set({ ...group()[1]!, utime: 40, cutime: 1, cstime: 1, threads: { 510: [] } });
  const after = await probe.probe();
  assert.equal(after.cpuPercent, 0);
  assert.equal(after.processes, 2);
});

test('probe() never reports negative CPU when a member vanished with its ticks', async () => {
  const clock = fakeClock();
  const proc = fakeProc(group({ 520: { utime: 500 } }));
  const probe = createResourceProbe(options(proc, clock));
  await probe.probe();
  clock.advance(1000);
  proc.remove(520);
  assert.equal((await probe.probe()).cpuPercent, 0);
});

test('probe() counts a zombie member for CPU but not as a process, and reads nothing else of it', async () => {
  const proc = fakeProc(group({ 520: { state: 'Z', residentPages: 0 } }));
  const probe = createResourceProbe(options(proc, fakeClock()));
  const figures = await probe.probe();
  assert.equal(figures.processes, 2);
  assert.deepEqual(
    proc.touched.filter((path) => path.startsWith('/proc/520/')),
    ['/proc/520/stat'],
  );
});

test('probe() does not follow a child that left the group', async () => {
  const proc = fakeProc(group({ 510: { pgrp: 510 } }));
  const probe = createResourceProbe(options(proc, fakeClock()));
  const figures = await probe.probe();
  assert.equal(figures.processes, 1);
  assert.equal(figures.rssBytes, 1000 * PAGE);
  assert.deepEqual(
    proc.touched.filter((path) => path.startsWith('/proc/510/')),
    ['/proc/510/stat'],
  );
  assert.ok(!proc.touched.some((path) => path.startsWith('/proc/520/')));
});

test('probe() skips a member that vanished during the walk', async () => {
  const proc = fakeProc(group());
  proc.failPath('/proc/510/statm', 'ESRCH');
  const figures = await createResourceProbe(options(proc, fakeClock())).probe();
  assert.equal(figures.processes, 1);
});

test('probe() rejects with ERR_RUNTIME_GONE when the leader is gone, a zombie, or no longer leads its group', async () => {
  const cases: Array<[string, FakeProcess[]]> = [
    ['no leader', group().slice(1)],
    ['zombie leader', group({ [LEADER]: { state: 'Z' } })],
    ['dead leader', group({ [LEADER]: { state: 'X' } })],
    ['pid in another group', group({ [LEADER]: { pgrp: 400 } })],
  ];
  for (const [name, processes] of cases) {
    const proc = fakeProc(processes);
    await rejectsWith(createResourceProbe(options(proc, fakeClock())).probe(), 'ERR_RUNTIME_GONE');
    assert.ok(
      !proc.touched.some((path) => path !== '/proc/self/auxv' && path !== `/proc/${LEADER}/stat`),
      `${name}: nothing read past the leader's stat`,
    );
  }
});

test('probe() rejects with ERR_RUNTIME_GONE when the leader pid was reused by a new process', async () => {
  const clock = fakeClock();
  const proc = fakeProc(group());
  const probe = createResourceProbe(options(proc, clock));
  await probe.probe();
  clock.advance(1000);
  proc.set({ ...group()[0]!, starttime: 999_999 });
  await rejectsWith(probe.probe(), 'ERR_RUNTIME_GONE');
});

test('probe() rejects with ERR_RUNTIME_GONE when the leader vanishes between its stat and statm', async () => {
  const proc = fakeProc(group());
  proc.failPath(`/proc/${LEADER}/statm`, 'ENOENT');
  await rejectsWith(createResourceProbe(options(proc, fakeClock())).probe(), 'ERR_RUNTIME_GONE');
});

test('probe() rejects with ERR_PROBE_FAILED, naming no pid or path, when a file cannot be read or parsed', async () => {
  const unreadable = fakeProc(group());
  unreadable.failPath('/proc/510/task', 'EACCES');
  const error = await rejectsWith(createResourceProbe(options(unreadable, fakeClock())).probe(), 'ERR_PROBE_FAILED');
  assert.doesNotMatch(
    `${error.message} ${JSON.stringify((error as { detail?: unknown }).detail)} ${String(error.cause)}`,
    /510|\/proc/,
  );

  const garbled = fakeProc(group());
  const readFile = async (path: string): Promise<string> =>
    path === '/proc/520/statm' ? 'not statm' : garbled.readFile(path);
  await rejectsWith(createResourceProbe(options(garbled, fakeClock(), { readFile })).probe(), 'ERR_PROBE_FAILED');
});

test('probe() wraps an unexpected hook error as ERR_PROBE_FAILED without its message', async () => {
  const proc = fakeProc(group());
  const readFile = async (path: string): Promise<string> => {
    if (path === '/proc/510/stat') throw new TypeError('boom /secret/path');
    return proc.readFile(path);
  };
  const error = await rejectsWith(
    createResourceProbe(options(proc, fakeClock(), { readFile })).probe(),
    'ERR_PROBE_FAILED',
  );
  assert.doesNotMatch(error.message, /boom|secret/);
});

test('probe() falls back to 4096-byte pages and 100 ticks/s when auxv cannot be read, and reads it once', async () => {
  const clock = fakeClock();
  const proc = fakeProc(group(), '');
  const probe = createResourceProbe(options(proc, clock, { cacheMs: 0 }));
  await probe.probe();
  clock.advance(1000);
  proc.set({ ...group()[0]!, utime: 200 });
  const figures = await probe.probe();
  assert.equal(figures.rssBytes, 1250 * 4096);
  assert.equal(figures.cpuPercent, 100);
  assert.equal(proc.touched.filter((path) => path === '/proc/self/auxv').length, 1);
});

test('probe() uses the page size the kernel reports in auxv', async () => {
  const auxv = Buffer.alloc(48);
  auxv.writeBigUInt64LE(6n, 0);
  auxv.writeBigUInt64LE(16384n, 8);
  auxv.writeBigUInt64LE(17n, 16);
  auxv.writeBigUInt64LE(100n, 24);
  const proc = fakeProc(group(), auxv.toString('latin1'));
  assert.equal((await createResourceProbe(options(proc, fakeClock())).probe()).rssBytes, 1250 * 16384);
});

test('probe() reports per-GPU VRAM from the one nvidia-smi aggregate query, with a timeout', async () => {
  const calls: Array<{ file: string; args: string[]; opts: ProbeExecOptions }> = [];
  const proc = fakeProc(group());
  const probe = createResourceProbe(
    options(proc, fakeClock(), {
      findExecutable: async (name) => (name === 'nvidia-smi' ? '/usr/bin/nvidia-smi' : null),
      execFile: async (file, args, opts) => {
        calls.push({ file, args, opts });
        return { stdout: probeFixture('nvidia-smi/two-gpus.csv') };
      },
    }),
  );
  const figures = await probe.probe();
  assert.deepEqual(figures.vram, {
    gpus: [
      { usedBytes: 20480 * MIB, totalBytes: 81920 * MIB },
      { usedBytes: MIB, totalBytes: 81920 * MIB },
    ],
    unifiedMemory: false,
  });
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.file, '/usr/bin/nvidia-smi');
  assert.deepEqual(calls[0]!.args, [...NVIDIA_SMI_ARGS]);
  assert.equal(calls[0]!.opts.timeoutMs, 2000);
  assert.deepEqual(calls[0]!.opts.env, { LC_ALL: 'C', PATH: '/usr/bin:/bin' });
  assert.ok(Object.isFrozen(figures.vram?.gpus[0]));
});

test('probe() reports vram null, not an error, when nvidia-smi is absent, fails or prints no CSV', async () => {
  const runs: Array<ResourceProbeOptions['execFile']> = [
    async () => {
      throw Object.assign(new Error('exit 9'), { code: 9, stdout: probeFixture('nvidia-smi/driver-error.txt') });
    },
    async () => ({ stdout: probeFixture('nvidia-smi/no-devices.txt') }),
  ];
  for (const execFile of runs) {
    const probe = createResourceProbe(
      options(fakeProc(group()), fakeClock(), {
        findExecutable: async () => '/usr/bin/nvidia-smi',
        ...(execFile ? { execFile } : {}),
      }),
    );
    assert.equal((await probe.probe()).vram, null);
  }
  let lookups = 0;
  const absent = createResourceProbe(
    options(fakeProc(group()), fakeClock(), {
      cacheMs: 0,
      findExecutable: async () => {
        lookups++;
        return null;
      },
      execFile: async () => assert.fail('no command runs when nvidia-smi is absent'),
    }),
  );
  assert.equal((await absent.probe()).vram, null);
  await absent.probe();
  assert.equal(lookups, 1, 'the PATH lookup is done once');
});

test('probe() on Apple silicon reports unified memory and runs no GPU tool; Intel macOS reports null', async () => {
  const ps = async (): Promise<{ stdout: string }> => ({ stdout: probeFixture('darwin/ps-group.txt') });
  const commands: string[] = [];
  const base = {
    pgid: 812,
    now: fakeClock().now,
    platform: 'darwin' as const,
    findExecutable: async () => '/opt/nvidia-smi',
  };
  const recorder = (access: { target: string }): void => {
    commands.push(access.target);
  };
  assert.deepEqual((await createResourceProbe({ ...base, arch: 'arm64', execFile: ps, recorder }).probe()).vram, {
    gpus: [],
    unifiedMemory: true,
  });
  assert.equal((await createResourceProbe({ ...base, arch: 'x64', execFile: ps, recorder }).probe()).vram, null);
  assert.ok(
    commands.every((command) => command.startsWith('/bin/ps ')),
    commands.join('\n'),
  );
});

test('probe() on macOS runs /bin/ps -g with the UNIX 2003 environment and parses its lines', async () => {
  const calls: Array<{ file: string; args: string[]; opts: ProbeExecOptions }> = [];
  const clock = fakeClock();
  const probe = createResourceProbe({
    pgid: 812,
    now: clock.now,
    platform: 'darwin',
    arch: 'arm64',
    execFile: async (file, args, opts) => {
      calls.push({ file, args, opts });
      return { stdout: probeFixture('darwin/ps-group.txt') };
    },
  });
  const figures = await probe.probe();
  assert.equal(figures.processes, 2);
  assert.equal(figures.rssBytes, (153600 + 48212) * 1024);
  assert.equal(calls[0]!.file, '/bin/ps');
  assert.deepEqual(calls[0]!.args.slice(-2), ['-g', '812']);
  assert.equal(calls[0]!.opts.env.COMMAND_MODE, 'unix2003');
  assert.equal(calls[0]!.opts.timeoutMs, 2000);
});

test('probe() on macOS: ps exiting 1 with no output is ERR_RUNTIME_GONE; other failures are ERR_PROBE_FAILED', async () => {
  const make = (execFile: NonNullable<ResourceProbeOptions['execFile']>): Promise<unknown> =>
    createResourceProbe({ pgid: 812, platform: 'darwin', arch: 'arm64', now: fakeClock().now, execFile }).probe();
  await rejectsWith(
    make(async () => Promise.reject(Object.assign(new Error('x'), { code: 1, stdout: '' }))),
    'ERR_RUNTIME_GONE',
  );
  await rejectsWith(
    make(async () => ({ stdout: probeFixture('darwin/ps-leader-missing.txt') })),
    'ERR_RUNTIME_GONE',
  );
  await rejectsWith(
    make(async () => Promise.reject(Object.assign(new Error('timeout'), { code: undefined }))),
    'ERR_PROBE_FAILED',
  );
  await rejectsWith(
    make(async () => ({ stdout: probeFixture('darwin/ps-other-group.txt') })),
    'ERR_PROBE_FAILED',
  );
});

test('probe() on Windows runs PowerShell by absolute path with the encoded walk and parses it', async () => {
  const calls: Array<{ file: string; args: string[]; opts: ProbeExecOptions }> = [];
  const clock = fakeClock();
  const probe = createResourceProbe({
    pgid: 4321,
    now: clock.now,
    platform: 'win32',
    cacheMs: 0,
    findExecutable: async () => null,
    execFile: async (file, args, opts) => {
      calls.push({ file, args, opts });
      return { stdout: probeFixture('win32/walk-two.txt') };
    },
  });
  const figures = await probe.probe();
  assert.equal(figures.processes, 2);
  assert.equal(figures.rssBytes, 162611200 + 50331648);
  assert.match(calls[0]!.file, /\\System32\\WindowsPowerShell\\v1\.0\\powershell\.exe$/);
  assert.ok(calls[0]!.args.includes('-EncodedCommand'));
  assert.equal(calls[0]!.opts.timeoutMs, 5000);
  clock.advance(1000);
  assert.equal((await probe.probe()).cpuPercent, 0);
  await rejectsWith(
    createResourceProbe({
      pgid: 4321,
      platform: 'win32',
      findExecutable: async () => null,
      execFile: async () => ({ stdout: '' }),
    }).probe(),
    'ERR_RUNTIME_GONE',
  );
  await rejectsWith(
    createResourceProbe({
      pgid: 4321,
      platform: 'win32',
      findExecutable: async () => null,
      execFile: async () => Promise.reject(new Error('no powershell')),
    }).probe(),
    'ERR_PROBE_FAILED',
  );
});

test('probe() on an unsupported platform rejects with ERR_PROBE_FAILED', async () => {
  await rejectsWith(createResourceProbe({ pgid: 812, platform: 'freebsd' }).probe(), 'ERR_PROBE_FAILED');
});

test('close() drops the cache, aborts running commands and makes probe() reject', async () => {
  let signal: AbortSignal | undefined;
  const proc = fakeProc(group());
  const probe = createResourceProbe(
    options(proc, fakeClock(), {
      findExecutable: async () => '/usr/bin/nvidia-smi',
      execFile: async (_file, _args, opts) => {
        signal = opts.signal;
        return { stdout: probeFixture('nvidia-smi/one-gpu.csv') };
      },
    }),
  );
  await probe.probe();
  assert.equal(signal?.aborted, false);
  probe.close();
  assert.equal(signal?.aborted, true);
  await rejectsWith(probe.probe(), 'ERR_PROBE_FAILED');
});

test('createResourceProbe() rejects bad options with ERR_INVALID_ARG_*', () => {
  const bad: Array<[unknown, string]> = [
    [null, 'ERR_INVALID_ARG_TYPE'],
    [{ pgid: 1.5 }, 'ERR_INVALID_ARG_TYPE'],
    [{ pgid: '500' }, 'ERR_INVALID_ARG_TYPE'],
    [{ pgid: 0 }, 'ERR_INVALID_ARG_VALUE'],
    [{ pgid: 1 }, 'ERR_INVALID_ARG_VALUE'],
    [{ pgid: -500 }, 'ERR_INVALID_ARG_VALUE'],
    [{ pgid: 500, cacheMs: 501 }, 'ERR_INVALID_ARG_VALUE'],
    [{ pgid: 500, cacheMs: -1 }, 'ERR_INVALID_ARG_VALUE'],
    [{ pgid: 500, cacheMs: 1.5 }, 'ERR_INVALID_ARG_TYPE'],
    [{ pgid: 500, readFile: 'fs' }, 'ERR_INVALID_ARG_TYPE'],
    [{ pgid: 500, recorder: {} }, 'ERR_INVALID_ARG_TYPE'],
  ];
  for (const [value, code] of bad) {
    assert.throws(
      () => createResourceProbe(value as ResourceProbeOptions),
      (error: { code?: string }) => error instanceof TypeError && error.code === code,
      JSON.stringify(value),
    );
  }
});
