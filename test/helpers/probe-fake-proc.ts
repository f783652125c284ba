// A fake /proc for the probe's unit tests: stat lines laid out like the captured samples in
// test/fixtures/probe/linux, served through the probe's readFile/listDir hooks.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export const probeFixtures = join(repoRoot, 'test', 'fixtures', 'probe');

/** A fixture file as text; binary files (auxv) as latin1, one char per byte. */
export function probeFixture(relative: string): string {
  return readFileSync(join(probeFixtures, relative), 'latin1');
}

export interface FakeProcess {
  pid: number;
  ppid: number;
  pgrp: number;
  comm?: string;
  state?: string;
  utime?: number;
  stime?: number;
  cutime?: number;
  cstime?: number;
  starttime?: number;
  residentPages?: number;
  /** Thread id → the pids that thread forked. Default: one thread (tid = pid) with no children. */
  threads?: Record<number, number[]>;
}

/** A stat line with the layout of test/fixtures/probe/linux/node-leader.stat. */
export function statLine(p: FakeProcess): string {
  const threads = Object.keys(p.threads ?? { [p.pid]: [] }).length;
  return `${p.pid} (${p.comm ?? 'node'}) ${p.state ?? 'S'} ${p.ppid} ${p.pgrp} ${p.pgrp} 0 -1 4194304 2539 0 18 0 ${p.utime ?? 0} ${p.stime ?? 0} ${p.cutime ?? 0} ${p.cstime ?? 0} 20 0 ${threads} 0 ${p.starttime ?? 503216} 746237952 10571 18446744073709551615 11988992 39846385 140733944590048 0 0 0 0 16781312 83458 0 0 0 17 1 0 0 0 0 0 90418888 90555584 629346304 140733944596894 140733944597000 140733944597000 140733944598506 0\n`;
}

function fsError(code: string): Error {
  return Object.assign(new Error(`${code}: fake`), { code });
}

export interface FakeProc {
  readFile(path: string): Promise<string>;
  listDir(path: string): Promise<string[]>;
  /** Every path read or listed, in order. */
  readonly touched: string[];
  /** Replaces (or adds) a process. */
  set(process: FakeProcess): void;
  remove(pid: number): void;
  /** Makes every later access to this path fail with the given errno code. */
  failPath(path: string, code: string): void;
}

export function fakeProc(processes: FakeProcess[], auxv: string = probeFixture('linux/self.auxv')): FakeProc {
  const table = new Map<number, FakeProcess>(processes.map((p) => [p.pid, p]));
  const failures = new Map<string, string>();
  const touched: string[] = [];
  const lookup = (path: string): { process: FakeProcess; rest: string } => {
    const match = /^\/proc\/(\d+)\/(.+)$/.exec(path);
    const process = match === null ? undefined : table.get(Number(match[1]));
    if (match === null || process === undefined) throw fsError('ENOENT');
    return { process, rest: match[2]! };
  };
  return {
    touched,
    async readFile(path) {
      touched.push(path);
      const failure = failures.get(path);
      if (failure !== undefined) throw fsError(failure);
      if (path === '/proc/self/auxv') return auxv;
      const { process, rest } = lookup(path);
      if (rest === 'stat') return statLine(process);
      if (rest === 'statm') {
        const pages = process.residentPages ?? 0;
        return process.state === 'Z' ? '0 0 0 0 0 0 0\n' : `${pages * 4} ${pages} ${Math.floor(pages / 2)} 5 0 89 0\n`;
      }
      const children = /^task\/(\d+)\/children$/.exec(rest);
      const threads = process.threads ?? { [process.pid]: [] };
      const list = children === null ? undefined : threads[Number(children[1])];
      if (list === undefined) throw fsError('ENOENT');
      return list.map((pid) => `${pid} `).join('');
    },
    async listDir(path) {
      touched.push(path);
      const failure = failures.get(path);
      if (failure !== undefined) throw fsError(failure);
      const { process, rest } = lookup(path);
      if (rest !== 'task') throw fsError('ENOTDIR');
      return Object.keys(process.threads ?? { [process.pid]: [] });
    },
    set(process) {
      table.set(process.pid, process);
    },
    remove(pid) {
      table.delete(pid);
    },
    failPath(path, code) {
      failures.set(path, code);
    },
  };
}

/** A controllable clock. */
export function fakeClock(start = 1_000_000): { now: () => number; set(t: number): void; advance(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    set(value) {
      t = value;
    },
    advance(ms) {
      t += ms;
    },
  };
}
