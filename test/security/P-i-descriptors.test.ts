// P-i / P-f, what the runtime inherits: the companion is started (the real CLI, `demo --keep-running`) by a
// launcher that leaves two descriptors open without close-on-exec — a directory at fd 20 (a filesystem
// escape through /proc/self/fd/20/..) and a writable file at fd 200. Neither may reach bubblewrap or the
// runtime; the runtime holds exactly stdio, its listening socket and (unsandboxed) the model, read-only.
// No argv of the process tree names the data dir, the run folder, the socket or the model (issue 16
// items 1, 2 and 6).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BIN } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { bwrapPresent } from '../helpers/sandbox-run.js';
import { SANDBOX_MODEL_PATH } from '../../src/runtime/runtime-profile.js';

interface ProcessView {
  readonly pid: number;
  readonly argv: string[];
  readonly fds: Array<{ fd: number; target: string; flags: number }>;
}

function children(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

function tree(pid: number): number[] {
  const all: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const next = queue.shift()!;
    for (const child of children(next)) {
      all.push(child);
      queue.push(child);
    }
  }
  return all;
}

function view(pid: number): ProcessView | null {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((arg) => arg !== '');
    const fds = readdirSync(`/proc/${pid}/fd`).map((name) => {
      const fd = Number(name);
      let target = '';
      let flags = -1;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${name}`);
        flags = parseInt(
          /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${name}`, 'utf8'))?.[1] ?? '-1',
          8,
        );
      } catch {
        // Closed meanwhile.
      }
      return { fd, target, flags };
    });
    return { pid, argv, fds };
  } catch {
    return null;
  }
}

test(
  'P-i descriptors the companion inherited (a directory at fd 20, a writable file at fd 200) reach neither bubblewrap nor the runtime; no argv names the data dir or the model',
  { timeout: 120_000 },
  async (t) => {
    const root = mkdtempSync(join(tmpdir(), 'companion-p-i-fd-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const escapeDir = join(root, 'escape-dir');
    mkdirSync(escapeDir);
    const dirFd = openSync(escapeDir, constants.O_RDONLY | constants.O_DIRECTORY);
    const fileFd = openSync(join(root, 'writable.log'), 'a');
    t.after(() => {
      closeSync(dirFd);
      closeSync(fileFd);
    });
    // stdio[20] and stdio[200]: libuv dup2()s them into the child without close-on-exec.
    const stdio: Array<'pipe' | 'ignore' | number> = ['pipe', 'pipe', 'pipe'];
    for (let fd = 3; fd <= 200; fd++) stdio.push(fd === 20 ? dirFd : fd === 200 ? fileFd : 'ignore');
    // The demo keeps its data in a fresh folder under the temp dir (and runs unsandboxed where bubblewrap is missing).
    const args = ['demo', '--keep-running', '--json', '--keychain', 'memory', '--threads', '1'];
    const cli = spawn(process.execPath, [BIN, ...args], { cwd: repoRoot, env: process.env, stdio });
    const exited = new Promise<void>((resolve) => cli.on('close', () => resolve()));
    t.after(async () => {
      cli.kill('SIGTERM');
      await exited;
    });
    let stderr = '';
    cli.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const available = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the demo was not available in time: ${stderr}`)), 90_000);
      createInterface({ input: cli.stdout! }).on('line', (line) => {
        const value = JSON.parse(line) as Record<string, unknown>;
        if (value.event === 'available') {
          clearTimeout(timer);
          resolve(value);
        }
      });
    });
    assert.equal(typeof available.endpoint, 'string');

    // Control: the CLI itself did inherit both (so their absence below is the defence, not the set-up).
    const own = view(cli.pid!)!;
    assert.ok(own.argv.length > 0);
    const descendants = tree(cli.pid!)
      .map(view)
      .filter((entry): entry is ProcessView => entry !== null);
    const runtime = descendants.find(
      (entry) => !entry.argv[0]!.endsWith('bwrap') && entry.argv.some((arg) => arg.endsWith('/runtime-server/main.js')),
    );
    assert.ok(runtime !== undefined, 'the runtime is running under the CLI');
    const bwraps = descendants.filter((entry) => entry.argv[0]?.endsWith('bwrap'));
    if (bwrapPresent) assert.ok(bwraps.length >= 1, 'bubblewrap wraps the runtime');

    for (const entry of [runtime, ...bwraps]) {
      const leaked = entry.fds.filter(
        (fd) => fd.target === escapeDir || fd.target === join(root, 'writable.log') || fd.fd === 20 || fd.fd === 200,
      );
      assert.deepEqual(leaked, [], `pid ${entry.pid} (${entry.argv[0]}) holds an inherited descriptor`);
      // Item 6: nothing on argv names where the data, the socket or the model are.
      for (const arg of entry.argv) {
        // The code (the runtime's entry, bubblewrap's read-only binds of it) may live anywhere, /tmp too.
        if (arg.startsWith(`${repoRoot}/`)) continue;
        assert.ok(!arg.startsWith(`${tmpdir()}/`), `argv of ${entry.argv[0]} names a folder of the data dir: ${arg}`);
        // (SANDBOX_MODEL_PATH is the fixed, in-sandbox name of the read-only view: it says nothing of the host.)
        if (arg === SANDBOX_MODEL_PATH) continue;
        assert.ok(
          !/\.gguf|rt\.sock|--model|--socket|--model-id/.test(arg),
          `argv of ${entry.argv[0]} names the model or socket: ${arg}`,
        );
      }
    }
    assert.deepEqual(
      runtime.argv.slice(1),
      [join(repoRoot, 'dist', 'src', 'runtime-server', 'main.js')],
      'the runtime takes no argument',
    );
    // The runtime: stdio, the listening socket, and (only without bubblewrap) the model, read-only.
    const models = runtime.fds.filter((fd) => fd.target.endsWith('.gguf'));
    if (bwrapPresent) {
      assert.deepEqual(models, [], 'bubblewrap took the model descriptor for its read-only mount');
    } else {
      assert.equal(models.length, 1);
      assert.equal(models[0]!.flags & 0o3, constants.O_RDONLY, 'the model descriptor is read-only');
    }
    assert.ok(
      runtime.fds.some((fd) => fd.fd === 4 && fd.target.startsWith('socket:')),
      'the listening socket is descriptor 4',
    );
    const hostFiles = runtime.fds.filter(
      (fd) => fd.fd > 2 && fd.target.startsWith('/') && fd.target !== '/dev/null' && !fd.target.endsWith('.gguf'),
    );
    assert.deepEqual(hostFiles, [], 'no other file or folder of the host is open in the runtime');
  },
);
