// P-j (probe privacy / escalation): the resource probe touches only the runtime group's own /proc
// entries (plus /proc/self/auxv), runs no process-listing query, never reads an unrelated process, and
// reports no pid or name. Real processes, real /proc, real commands; the recorder sees every access.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createResourceProbe, type ProbeAccess } from '../../src/runtime/probe.js';
import { darwinPsArgs, darwinPsEnv } from '../../src/runtime/probe-darwin.js';
import { win32Script } from '../../src/runtime/probe-win32.js';
import { NVIDIA_SMI_ARGS } from '../../src/runtime/probe-vram.js';
import { spawnProbeGroup, spawnUnrelated } from '../helpers/probe-group.js';

const linux = process.platform === 'linux' ? {} : { skip: 'the /proc probe runs on Linux only' };

/** The only shapes of path the Linux probe may touch; `pid` must be a member of the group. */
const ALLOWED = /^\/proc\/(\d+)\/(stat|statm|task|task\/\d+\/children)$/;

/** A stand-in nvidia-smi that prints constructed CSV and records its argv, so the exec path is real. */
function fakeNvidiaSmi(dir: string): { path: string; argvFile: string } {
  const path = join(dir, 'nvidia-smi');
  const argvFile = join(dir, 'argv');
  writeFileSync(path, `#!/bin/sh\nprintf '%s\\n' "$@" > '${argvFile}'\nprintf '523, 16376\\n'\n`, { mode: 0o700 });
  return { path, argvFile };
}

test(
  "P-j the probe reads only /proc entries of the group's own pids, lists no /proc, and never touches an unrelated process",
  linux,
  async (t) => {
    const unrelated = spawnUnrelated();
    t.after(() => unrelated.kill());
    const group = await spawnProbeGroup();
    t.after(() => group.kill());
    const dir = mkdtempSync(join(tmpdir(), 'companion-probe-pj-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const smi = fakeNvidiaSmi(dir);

    const accesses: ProbeAccess[] = [];
    const probe = createResourceProbe({
      pgid: group.pgid,
      cacheMs: 0,
      findExecutable: async () => smi.path,
      recorder: (access) => accesses.push(access),
    });
    t.after(() => probe.close());
    for (let i = 0; i < 3; i++) {
      const figures = await probe.probe();
      assert.equal(figures.processes, 2);
      assert.deepEqual(figures.vram, {
        gpus: [{ usedBytes: 523 * 1024 * 1024, totalBytes: 16376 * 1024 * 1024 }],
        unifiedMemory: false,
      });
      // The figures carry counts and sizes only: no pid, no name.
      const text = JSON.stringify(figures);
      assert.ok(
        !text.includes(String(group.pgid)) && !text.includes(String(group.grandchildPid)) && !/node|sleep/.test(text),
        text,
      );
    }

    const members = new Set([group.pgid, group.grandchildPid]);
    const files = accesses.filter((a) => a.kind !== 'exec');
    assert.ok(files.length > 0);
    for (const access of files) {
      if (access.target === '/proc/self/auxv') continue;
      const match = ALLOWED.exec(access.target);
      assert.ok(match !== null, `unexpected path ${access.target}`);
      assert.ok(members.has(Number(match[1])), `${access.target} is not a member's entry`);
    }
    assert.equal(files.filter((a) => a.target === '/proc/self/auxv').length, 1);
    assert.ok(!files.some((a) => a.kind === 'list' && /^\/proc\/?$/.test(a.target)), 'no listing of /proc');
    assert.ok(
      !accesses.some((a) => a.target.includes(`/${unrelated.pid}/`) || a.target.endsWith(` ${unrelated.pid}`)),
      'the unrelated process was never touched',
    );

    const commands = accesses.filter((a) => a.kind === 'exec').map((a) => a.target);
    assert.deepEqual(commands, Array(3).fill([smi.path, ...NVIDIA_SMI_ARGS].join(' ')));
    const argvSeen = readFileSync(smi.argvFile, 'utf8').trim().split('\n');
    assert.deepEqual(argvSeen, [...NVIDIA_SMI_ARGS], 'the tool received exactly the aggregate query');
  },
);

test('P-j the probe makes no process-listing query on Linux: no ps, no --query-compute-apps', linux, async (t) => {
  const group = await spawnProbeGroup();
  t.after(() => group.kill());
  const accesses: ProbeAccess[] = [];
  const probe = createResourceProbe({ pgid: group.pgid, recorder: (access) => accesses.push(access) });
  t.after(() => probe.close());
  await probe.probe();
  for (const access of accesses) {
    assert.doesNotMatch(
      access.target,
      /(^|\/)ps( |$)|pgrep|--query-compute-apps|pmon|cmdline|environ|\/status$|\/maps$|\/fd/,
    );
  }
});

test('P-j a pid that does not lead its group is read no further than its own stat', linux, async (t) => {
  const group = await spawnProbeGroup();
  t.after(() => group.kill());
  const pid = group.grandchildPid;
  const accesses: ProbeAccess[] = [];
  const probe = createResourceProbe({
    pgid: pid,
    findExecutable: async () => null,
    recorder: (access) => accesses.push(access),
  });
  t.after(() => probe.close());
  await assert.rejects(probe.probe(), (error: Error & { code?: string; detail?: unknown }) => {
    assert.equal(error.code, 'ERR_RUNTIME_GONE');
    assert.ok(
      !`${error.message} ${JSON.stringify(error.detail ?? {})}`.includes(String(pid)),
      'the error names no pid',
    );
    return true;
  });
  assert.deepEqual(
    accesses.map((a) => a.target),
    ['/proc/self/auxv', `/proc/${pid}/stat`],
  );
});

test('P-j the macOS ps call selects one process group (UNIX 2003 -g) and has no all-process flag', () => {
  const args = darwinPsArgs(812);
  assert.deepEqual(args.slice(-2), ['-g', '812']);
  for (const flag of ['-e', '-A', '-a', '-x', '-ax', 'aux', '-U', '-u', '-p', '-M', '-E'])
    assert.ok(!args.includes(flag), flag);
  assert.ok(!args.some((arg) => /command|comm|args|user|ucomm/.test(arg)), 'no name, command line or user column');
  // With COMMAND_MODE=legacy, macOS ps ignores -g and lists all the user's processes: pinned off.
  assert.equal(darwinPsEnv().COMMAND_MODE, 'unix2003');
});

test('P-j the Windows walk filters every CIM query by pid or parent pid and prints no pid or name', () => {
  const script = win32Script(4321);
  const queries = script.match(/Get-CimInstance[^\n]*/g) ?? [];
  assert.ok(queries.length > 0);
  for (const query of queries)
    assert.match(query, /-Filter ('ProcessId = 4321'|\('ParentProcessId = ' \+ \$p\.ProcessId\))/);
  assert.doesNotMatch(script, /Get-Process|Get-WmiObject|tasklist|wmic|\.Name\b|CommandLine|ExecutablePath|Owner/);
  const printed = /'\{0\} \{1\} \{2\} \{3\} \{4\}' -f ([^\n]*)/.exec(script)?.[1] ?? '';
  assert.equal(
    printed,
    '$kind, $p.WorkingSetSize, $p.UserModeTime, $p.KernelModeTime, $p.CreationDate.ToFileTimeUtc()',
  );
});
