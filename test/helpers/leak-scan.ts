// The leak scan (issue 11, P-f), reusable: a book of secret values (each with its encoded forms), a scanner
// for text, files and /proc entries that reports where a secret showed up without printing it, and a
// driver that runs the real CLI demo as a child with test/helpers/leak-scan-preload.ts (which learns the
// secrets on the wire and hands them over file descriptor 3) while snapshotting its processes and files.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { readProcessIdentity } from '../../src/common/process-identity.js';
import { descendantsOf, processesWith } from './assurance-runtime.js';
import { alive } from './runtime-env.js';
import { distRoot, repoRoot } from './paths.js';

export interface SecretEntry {
  readonly kind: string;
  readonly value: string;
}

export interface Finding {
  /** Where it was found (stdout, stderr, runtime stderr, a file path, /proc/<pid>/cmdline of …). */
  readonly where: string;
  readonly kind: string;
  /** Up to 24 characters before it, never the value itself. */
  readonly before: string;
}

/** Values shorter than this are not scanned for (they would match by chance). */
export const MIN_SECRET_LENGTH = 8;

/** The secret values of one run, with the forms they could take in output (URL- and JSON-encoded). */
export class SecretBook {
  readonly #entries = new Map<string, SecretEntry>();

  add(kind: string, value: string | null | undefined): void {
    if (typeof value !== 'string' || value.length < MIN_SECRET_LENGTH) return;
    for (const form of new Set([value, encodeURIComponent(value), JSON.stringify(value).slice(1, -1)])) {
      if (!this.#entries.has(form)) this.#entries.set(form, { kind, value: form });
    }
  }

  /** A SHA-256 digest in every printable form: hex (both cases), base64, base64url. */
  addDigest(kind: string, hex: string): void {
    const bytes = Buffer.from(hex, 'hex');
    for (const form of [hex.toLowerCase(), hex.toUpperCase(), bytes.toString('base64'), bytes.toString('base64url')])
      this.add(kind, form);
  }

  entries(): SecretEntry[] {
    return [...this.#entries.values()];
  }

  kinds(): Set<string> {
    return new Set([...this.#entries.values()].map((e) => e.kind.replace(/ \(.*\)$/, '')));
  }
}

/** Every occurrence of every entry in `text`. */
export function scanText(where: string, text: string, entries: readonly SecretEntry[]): Finding[] {
  const findings: Finding[] = [];
  for (const entry of entries) {
    let at = text.indexOf(entry.value);
    while (at !== -1) {
      findings.push({
        where,
        kind: entry.kind,
        before: text.slice(Math.max(0, at - 24), at).replace(/[^\x20-\x7e]/g, '.'),
      });
      at = text.indexOf(entry.value, at + entry.value.length);
    }
  }
  return findings;
}

export interface FileSnapshot {
  readonly path: string;
  readonly content: string;
}

/**
 * Reads every regular file under `root` (recursively; symlinks by their target text), skipping what
 * `skip(path)` names. Binary files are read as latin1, so any ASCII secret inside them still matches.
 */
export function snapshotFiles(root: string, skip: (path: string) => boolean = () => false): FileSnapshot[] {
  const out: FileSnapshot[] = [];
  const walk = (dir: string): void => {
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const path = join(dir, name);
      if (skip(path)) continue;
      try {
        const stats = lstatSync(path);
        if (stats.isSymbolicLink()) out.push({ path, content: readlinkSync(path) });
        else if (stats.isDirectory()) walk(path);
        else if (stats.isFile()) out.push({ path, content: readFileSync(path).toString('latin1') });
      } catch {
        // Gone meanwhile.
      }
    }
  };
  walk(root);
  return out;
}

export interface ProcessSnapshot {
  readonly pid: number;
  readonly role: string;
  readonly argv: readonly string[];
  readonly environ: readonly string[];
  /** Its open file descriptors as `<fd>:<target>` (`3:socket:[…]`, paths). */
  readonly fds: readonly string[];
}

/** argv, environment and fd targets of a live process, or null. */
export function snapshotProcess(pid: number, role: string): ProcessSnapshot | null {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((a) => a.length > 0);
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter((a) => a.length > 0);
    const fds: string[] = [];
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        fds.push(`${fd}:${readlinkSync(`/proc/${pid}/fd/${fd}`)}`);
      } catch {
        // Closed meanwhile.
      }
    }
    return { pid, role, argv, environ, fds };
  } catch {
    return null;
  }
}

/** What tells a process image apart: its executable and its argv (NUL-joined); null when it is gone. */
function imageOf(pid: number): { exe: string; argv: string; ppid: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return { exe: readlinkSync(`/proc/${pid}/exe`), argv: readFileSync(`/proc/${pid}/cmdline`, 'latin1'), ppid };
  } catch {
    return null;
  }
}

/**
 * A snapshot of a descendant once it runs its own program. Between fork and exec a child still shows its
 * parent's exe, argv, environment and fd table (the demo's secret channel on fd 3 included): it is not yet
 * the runtime, and sampling it then reports the parent's state under the child's pid. So: re-read until its
 * exe or argv differ from its parent's (at most `boundMs`), and keep a snapshot only if the image did not
 * change while it was read (an empty argv, as mid-exec, counts as not yet settled). A child that is still a
 * copy after the bound is returned with the role
 * `<role> (fork, not exec'd)`; null when the process is gone.
 */
export async function settledSnapshot(pid: number, role: string, boundMs = 500): Promise<ProcessSnapshot | null> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const image = imageOf(pid);
    if (image === null) return null;
    const parent = imageOf(image.ppid);
    const copyOfParent = parent !== null && parent.exe === image.exe && parent.argv === image.argv;
    // Mid-exec the kernel has swapped the image but not yet laid out the new argv: cmdline reads empty.
    const midExec = image.argv.length === 0;
    if ((!copyOfParent && !midExec) || Date.now() >= deadline) {
      const snap = snapshotProcess(pid, copyOfParent ? `${role} (fork, not exec'd)` : role);
      const after = imageOf(pid);
      if (snap === null || after === null) return null;
      // It exec'd while it was read: the snapshot mixes two images. Read again.
      if (after.exe === image.exe && after.argv === image.argv) return snap;
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

export interface ChannelMessage {
  readonly type: 'secret' | 'runtime-stderr' | 'runtime-pid' | 'model-path' | 'ready';
  readonly kind?: string;
  readonly value?: string;
  readonly text?: string;
  readonly pid?: number;
}

export interface DemoRun {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly channel: ChannelMessage[];
  readonly runtimeStderr: string;
  readonly processes: ProcessSnapshot[];
  readonly files: FileSnapshot[];
  /** The `available` event of --keep-running (endpoint, token), if any. */
  readonly available: { endpoint: string; token: string } | null;
  /** Pids still alive after the demo exited whose argv names something under `root` (its runtime). */
  readonly leftOver: number[];
  readonly demoPid: number;
  /** The data dir's log file (logs/companion.log and its rotation, in order) after the demo exited; null without `dataDir` or a log. */
  readonly logFile: string | null;
}

export interface DemoRunOptions {
  /** Private temp root: HOME, XDG_* and TMPDIR of the child live under it. */
  readonly root: string;
  readonly keepRunning: boolean;
  /** In keep-running mode: runs once the companion is available, before SIGTERM. */
  readonly whileAvailable?: (available: { endpoint: string; token: string }) => Promise<void>;
  /** Bound on the whole run (default 120 s). */
  readonly timeoutMs?: number;
  /** Files not to read (the model itself). */
  readonly skipFile?: (path: string) => boolean;
  /** The demo's prompt (`--prompt`): the user's private text. */
  readonly prompt?: string;
  /** `demo --data-dir`: the demo keeps its state (and its log file) there, to be scanned after it exits. */
  readonly dataDir?: string;
}

export const preloadScript = join(distRoot, 'test', 'helpers', 'leak-scan-preload.js');
export const companionBin = join(repoRoot, 'bin', 'companion.js');

/** The environment of the demo child: only what it needs, every folder inside `root`. */
export function demoEnvironment(root: string): NodeJS.ProcessEnv {
  const dirs = {
    HOME: 'home',
    XDG_DATA_HOME: 'xdg/data',
    XDG_CONFIG_HOME: 'xdg/config',
    XDG_CACHE_HOME: 'xdg/cache',
    XDG_RUNTIME_DIR: 'xdg/run',
    TMPDIR: 'tmp',
  };
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' };
  for (const [name, sub] of Object.entries(dirs)) {
    const path = join(root, sub);
    mkdirSync(path, { recursive: true, mode: 0o700 });
    env[name] = path;
  }
  return env;
}

function lines(stream: Readable, onLine: (line: string) => void): void {
  let buffer = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffer += chunk;
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      onLine(buffer.slice(0, newline));
      buffer = buffer.slice(newline + 1);
    }
  });
  stream.on('end', () => {
    if (buffer.length > 0) onLine(buffer);
  });
}

/**
 * Runs `node --import leak-scan-preload.js bin/companion.js demo --json --keychain memory [--keep-running]`
 * and collects everything it shows: stdout, stderr, the runtime's stderr, the argv/environment/fds of every
 * process of its tree (sampled every 20 ms while it runs), and every file under `root` (sampled while it
 * runs and at the end).
 */
export async function runDemoChild(options: DemoRunOptions): Promise<DemoRun> {
  const env = demoEnvironment(options.root);
  const args = [
    '--import',
    preloadScript,
    companionBin,
    'demo',
    '--json',
    '--keychain',
    'memory',
    '--threads',
    '1',
    ...(options.keepRunning ? ['--keep-running'] : []),
    ...(options.prompt !== undefined ? ['--prompt', options.prompt] : []),
    ...(options.dataDir !== undefined ? ['--data-dir', options.dataDir] : []),
  ];
  const child: ChildProcess = spawn(process.execPath, args, {
    cwd: options.root,
    env,
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  const demoPid = child.pid ?? 0;
  let stdout = '';
  let stderr = '';
  const channel: ChannelMessage[] = [];
  const processes = new Map<string, ProcessSnapshot>();
  const files = new Map<string, FileSnapshot>();
  let available: DemoRun['available'] = null;
  let onAvailable: ((value: { endpoint: string; token: string }) => void) | null = null;
  const availableSeen = new Promise<{ endpoint: string; token: string }>((resolve) => {
    onAvailable = resolve;
  });

  lines(child.stdout!, (line) => {
    stdout += `${line}\n`;
    try {
      const event = JSON.parse(line) as { event?: string; endpoint?: string; token?: string };
      if (event.event === 'available' && typeof event.endpoint === 'string' && typeof event.token === 'string') {
        available = { endpoint: event.endpoint, token: event.token };
        onAvailable?.(available);
      }
    } catch {
      // Not JSON: scanned as text all the same.
    }
  });
  lines(child.stderr!, (line) => {
    stderr += `${line}\n`;
  });
  lines(child.stdio[3] as Readable, (line) => {
    try {
      channel.push(JSON.parse(line) as ChannelMessage);
    } catch {
      // Ignore a torn line.
    }
  });

  const skip = options.skipFile ?? (() => false);
  // Every descendant ever seen, by pid and start time: what is still alive afterwards was left behind
  // (an orphan is re-parented away from the demo, and the runtime's argv names no path to search for).
  const seen = new Map<number, string>();
  const sample = async (): Promise<void> => {
    for (const pid of descendantsOf(demoPid)) {
      const identity = readProcessIdentity(pid);
      if (identity !== null && !seen.has(pid)) seen.set(pid, identity.startTime);
    }
    for (const pid of [demoPid, ...descendantsOf(demoPid)]) {
      // A descendant is sampled once it has exec'd (see settledSnapshot): before that it is the demo.
      const snap = pid === demoPid ? snapshotProcess(pid, 'demo') : await settledSnapshot(pid, 'descendant');
      if (snap !== null) processes.set(`${pid}:${snap.argv.join(' ')}:${snap.environ.length}:${snap.fds.length}`, snap);
    }
    for (const file of snapshotFiles(options.root, skip)) files.set(`${file.path}:${hash(file.content)}`, file);
  };
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  let running = true;
  void exited.then(() => {
    running = false;
  });
  const sampler = (async () => {
    while (running) {
      await sample();
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  try {
    if (options.keepRunning) {
      const ready = await Promise.race([availableSeen, exited.then(() => null)]);
      if (ready !== null) {
        await sample();
        await options.whileAvailable?.(ready);
        await sample();
        child.kill('SIGTERM');
      }
    }
    const { code, signal } = await exited;
    await sampler;
    // The tree after exit: what is still alive, and what is left on disk.
    const leftOver = [
      ...new Set([
        ...[...seen]
          .filter(([pid, startTime]) => alive(pid) && readProcessIdentity(pid)?.startTime === startTime)
          .map(([pid]) => pid),
        ...processesWith(options.root),
      ]),
    ];
    for (const file of snapshotFiles(options.root, skip)) files.set(`${file.path}:${hash(file.content)}`, file);
    const logParts =
      options.dataDir === undefined
        ? []
        : ['companion.log.1', 'companion.log'].flatMap((name) => {
            try {
              return [readFileSync(join(options.dataDir!, 'logs', name), 'utf8')];
            } catch {
              return [];
            }
          });
    return {
      exitCode: code,
      signal,
      stdout,
      stderr,
      channel,
      runtimeStderr: channel
        .filter((m) => m.type === 'runtime-stderr')
        .map((m) => m.text ?? '')
        .join(''),
      processes: [...processes.values()],
      files: [...files.values()],
      available,
      leftOver,
      demoPid,
      logFile: logParts.length === 0 ? null : logParts.join(''),
    };
  } finally {
    clearTimeout(timer);
  }
}

function hash(text: string): string {
  return createHash('sha256').update(text, 'latin1').digest('hex').slice(0, 16);
}

export interface ScanPolicy {
  /** Secret values of the run. */
  readonly book: SecretBook;
  /** The user's private texts (prompts, completions): never in logs, files, argv, env or error bodies. */
  readonly privateTexts: readonly string[];
  /** The model path (scanned everywhere: the runtime receives the model as a descriptor, never by path). */
  readonly modelPath: string | null;
  /** The demo's `--prompt` value: allowed only on the demo's own argv (the user typed it there). */
  readonly prompt: string | null;
  /** Other texts to scan in full (error bodies…). */
  readonly extra?: readonly { where: string; text: string }[];
}

/**
 * Scans everything a demo run showed. Product output is exempt from the private-text check only: the
 * `token` events (the streamed completion) and the `token` field of the `available` event (the loopback
 * token, printed on purpose for a local client). Everything else is scanned for every secret and text.
 */
export function leakFindings(run: DemoRun, policy: ScanPolicy): Finding[] {
  const secrets = policy.book.entries();
  const privates: SecretEntry[] = policy.privateTexts
    .filter((t) => t.length >= MIN_SECRET_LENGTH)
    .map((t) => ({ kind: 'private text', value: t }));
  const all = [...secrets, ...privates];
  const findings: Finding[] = [];
  for (const line of run.stdout.split('\n')) {
    let event: Record<string, unknown> | null = null;
    try {
      event = JSON.parse(line) as Record<string, unknown>;
    } catch {
      event = null;
    }
    if (event?.event === 'token') {
      findings.push(...scanText('stdout (token event)', line, secrets));
    } else if (event?.event === 'available') {
      const { token: _printedOnPurpose, ...rest } = event;
      findings.push(...scanText('stdout (available event, token field excluded)', JSON.stringify(rest), all));
    } else {
      findings.push(...scanText('stdout', line, all));
    }
  }
  findings.push(...scanText('stderr', run.stderr, all));
  findings.push(...scanText('runtime stderr', run.runtimeStderr, all));
  for (const proc of run.processes) {
    const argv = [...proc.argv];
    if (proc.role === 'demo' && policy.prompt !== null) {
      const at = argv.indexOf('--prompt');
      if (at !== -1 && argv[at + 1] === policy.prompt) argv.splice(at, 2);
    }
    findings.push(
      ...scanText(
        `/proc/${proc.pid}/cmdline (${proc.role}: ${proc.argv[1] ?? proc.argv[0] ?? '?'})`,
        argv.join(' '),
        all,
      ),
    );
    findings.push(...scanText(`/proc/${proc.pid}/environ (${proc.role})`, proc.environ.join('\n'), all));
  }
  for (const file of run.files) findings.push(...scanText(`file ${file.path}`, file.content, all));
  // The log file `up` and the demo write (logs/companion.log): scanned as a whole, besides the file snapshots.
  if (run.logFile !== null) findings.push(...scanText('log file (logs/companion.log)', run.logFile, all));
  for (const { where, text } of policy.extra ?? []) findings.push(...scanText(where, text, all));
  return findings;
}
