// A real process group for the probe's integration, security and bench runs: a detached Node child
// (the group leader, as the runtime will be) that spawns a Node grandchild in the same group, and obeys
// commands on stdin: `alloc <MiB>` (allocate and touch), `spin <ms>` (busy-loop). Each command answers
// one line on stdout. Teardown kills the whole group and waits for the leader to be reaped.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

const SCRIPT = `
const { spawn } = require('node:child_process');
const grandchild = spawn(process.execPath, ['-e', 'setInterval(() => {}, 60000)'], { stdio: 'ignore' });
const held = [];
const lines = require('node:readline').createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const [command, value] = line.split(' ');
  if (command === 'alloc') {
    held.push(Buffer.alloc(Number(value) * 1024 * 1024, 1));
    process.stdout.write('allocated\\n');
  } else if (command === 'spin') {
    const end = Date.now() + Number(value);
    while (Date.now() < end) {}
    process.stdout.write('spun\\n');
  }
});
process.stdout.write('ready ' + grandchild.pid + '\\n');
`;

export interface ProbeGroup {
  /** The leader's pid, which is the group id (spawned detached). */
  readonly pgid: number;
  readonly grandchildPid: number;
  /** Sends a command and waits (bounded) for its one-line answer. */
  command(line: string, timeoutMs?: number): Promise<string>;
  /** Kills the whole group and waits (bounded) until the leader is reaped. Idempotent. */
  kill(): Promise<void>;
}

function nextLine(lines: AsyncIterator<string>, timeoutMs: number, what: string): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer to ${what} in ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([
    lines.next().then((result) => {
      if (result.done === true) throw new Error(`the group leader closed stdout before answering ${what}`);
      return result.value;
    }),
    timeout,
  ]).finally(() => clearTimeout(timer));
}

export async function spawnProbeGroup(): Promise<ProbeGroup> {
  const child: ChildProcess = spawn(process.execPath, ['-e', SCRIPT], {
    detached: true,
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { PATH: process.env.PATH ?? '' },
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  let killed = false;
  const kill = async (): Promise<void> => {
    if (!killed) {
      killed = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, 5000)))]);
    clearTimeout(timer);
    child.stdin?.destroy();
    child.stdout?.destroy();
  };
  try {
    const ready = await nextLine(lines, 10_000, 'start');
    const match = /^ready (\d+)$/.exec(ready);
    if (match === null) throw new Error(`unexpected first line from the group leader: ${ready}`);
    return {
      pgid: child.pid!,
      grandchildPid: Number(match[1]),
      async command(line, timeoutMs = 20_000) {
        child.stdin!.write(`${line}\n`);
        return nextLine(lines, timeoutMs, line);
      },
      kill,
    };
  } catch (error) {
    await kill();
    throw error;
  }
}

/** Spawns `sleep 30` in a group of its own: a process the probe must never touch. */
export function spawnUnrelated(): { pid: number; kill(): Promise<void> } {
  const child = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid: child.pid!,
    async kill() {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // Already gone.
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, 5000)))]);
      clearTimeout(timer);
    },
  };
}
