// A private, unlocked Secret Service for the keychain tiers (PLATFORM.md recipe): a temp dir holding
// XDG_RUNTIME_DIR / XDG_DATA_HOME / XDG_CONFIG_HOME / XDG_CACHE_HOME / HOME, a private dbus-daemon
// started with those in its environment, and gnome-keyring-daemon (secrets component) unlocked with a
// random password piped on stdin.
//
// Two departures from the shell recipe, both for reliable teardown:
// - dbus-daemon runs `--nofork` as our child (we hold its handle and wait for its exit) and reports its
//   address on a pipe (`--print-address`), instead of `--fork --print-pid`;
// - the bus has no service directories, so nothing is ever D-Bus-activated: asking for
//   org.freedesktop.secrets when our daemon is gone gives "no service" instead of starting a second,
//   locked gnome-keyring-daemon that we would not own.
//
// The `@napi-rs/keyring` binding opens its store once per process from the environment of its first call
// (docs/keychain.md), so tests never call it in the test process: `openKeychainChild` runs the real
// `openKeychain` in a child process whose environment is the private bus's.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import {
  mkdtempSync,
  mkdirSync,
  rmSync,
  writeFileSync,
  existsSync,
  chmodSync,
  readdirSync,
  lstatSync,
  readFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, delimiter } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { distRoot } from './paths.js';
import { DEFAULT_TIMEOUT_MS } from '../../src/authority/keychain-common.js';

export interface SecretServiceHandle {
  /** DBUS_SESSION_BUS_ADDRESS, XDG_RUNTIME_DIR, XDG_DATA_HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME, HOME, PATH. */
  readonly env: Record<string, string>;
  /** The temp dir holding everything (removed by stop()). */
  readonly dir: string;
  /** Locks the login collection over D-Bus (Secret.Service.Lock) and waits until `Locked` is true. */
  lock(): Promise<void>;
  /** Unlocks again (`gnome-keyring-daemon --replace --unlock`) and waits until `Locked` is false. */
  unlock(): Promise<void>;
  /** SIGKILLs the keyring daemon (the bus stays up) and waits for its exit. */
  killDaemon(): Promise<void>;
  /** SIGSTOPs the keyring daemon: it stays on the bus and never answers (a hung store). */
  pauseDaemon(): void;
  /** SIGCONTs it again. */
  resumeDaemon(): void;
  /** Kills the daemon and the bus, waits for both, removes the dir. Safe to call twice. */
  stop(): Promise<void>;
  /** The last lines the keyring daemons and the bus wrote on stderr, with their exits (for failure messages). */
  log(): string;
}

const LOGIN = '/org/freedesktop/secrets/collection/login';
const WAIT_MS = 15_000;

function which(name: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin')
    .split(delimiter)
    .some((dir) => dir !== '' && existsSync(join(dir, name)));
}

/** True when gnome-keyring-daemon, dbus-daemon and dbus-send are installed (for `gate`). */
export const secretServiceAvailable = which('gnome-keyring-daemon') && which('dbus-daemon') && which('dbus-send');
/** True when `secret-tool` (libsecret-tools) is installed. */
export const secretToolAvailable = which('secret-tool');

/** Runs a command bounded by `timeoutMs`; resolves with status and output (never rejects). */
export function run(
  file: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs = 5_000,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env, timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' },
      (error, stdout, stderr) => {
        const status =
          error === null
            ? 0
            : typeof (error as { code?: unknown }).code === 'number'
              ? (error as { code: number }).code
              : null;
        resolve({ status, stdout, stderr });
      },
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`secret-service helper: timed out waiting for ${what}`);
    await sleep(20);
  }
}

function exited(child: ChildProcess, timeoutMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`secret-service helper: pid ${child.pid} did not exit`)),
      timeoutMs,
    );
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// Every process this helper starts, so a crashing test run still kills them on exit.
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** Starts the private bus and an unlocked gnome-keyring. Bounded: rejects after ~15 s. */
export async function startSecretService(): Promise<SecretServiceHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'companion-secret-service-'));
  const runtime = join(dir, 'run');
  const env: Record<string, string> = {
    XDG_RUNTIME_DIR: runtime,
    XDG_DATA_HOME: join(dir, 'data'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    XDG_CACHE_HOME: join(dir, 'cache'),
    HOME: join(dir, 'home'),
    PATH: process.env.PATH ?? '/usr/bin:/bin',
  };
  for (const path of [runtime, env.XDG_DATA_HOME!, env.XDG_CONFIG_HOME!, env.XDG_CACHE_HOME!, env.HOME!])
    mkdirSync(path, { recursive: true, mode: 0o700 });
  chmodSync(runtime, 0o700);
  const busPath = join(runtime, 'bus');
  const config = join(dir, 'bus.conf');
  // The session bus policy of /usr/share/dbus-1/session.conf, minus its service directories.
  writeFileSync(
    config,
    [
      '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">',
      '<busconfig>',
      '  <type>session</type>',
      '  <keep_umask/>',
      `  <listen>unix:path=${busPath}</listen>`,
      '  <auth>EXTERNAL</auth>',
      '  <policy context="default">',
      '    <allow send_destination="*" eavesdrop="true"/>',
      '    <allow eavesdrop="true"/>',
      '    <allow own="*"/>',
      '  </policy>',
      '</busconfig>',
      '',
    ].join('\n'),
  );

  const password = randomBytes(18).toString('base64url');
  let logText = '';
  const record = (who: string, child: ChildProcess): void => {
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      logText = `${logText}[${who}] ${chunk}`.slice(-4_000);
    });
    child.once('exit', (code, signal) => {
      logText = `${logText}[${who}] exited (${signal ?? code})\n`.slice(-4_000);
    });
  };
  let bus: ChildProcess | undefined;
  let daemon: ChildProcess | undefined;
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const child of [daemon, bus]) {
      if (child === undefined) continue;
      child.kill('SIGKILL');
      await exited(child).catch(() => undefined);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    // The XDG variables are in the bus's own environment before it starts (activation inherits it).
    bus = track(
      spawn('dbus-daemon', ['--config-file', config, '--nofork', '--nopidfile', '--print-address=1'], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('secret-service helper: dbus-daemon did not print its address')),
        WAIT_MS,
      );
      const lines = createInterface({ input: bus!.stdout! });
      lines.once('line', (line) => {
        clearTimeout(timer);
        resolve(line.trim());
      });
      bus!.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`secret-service helper: dbus-daemon exited (${code})`));
      });
    });
    env.DBUS_SESSION_BUS_ADDRESS = address;
    record('dbus-daemon', bus);

    const nameHasOwner = async (): Promise<boolean> => {
      const r = await run(
        'dbus-send',
        [
          `--bus=${address}`,
          '--print-reply',
          '--dest=org.freedesktop.DBus',
          '/org/freedesktop/DBus',
          'org.freedesktop.DBus.NameHasOwner',
          'string:org.freedesktop.secrets',
        ],
        env,
      );
      return r.status === 0 && /boolean true/.test(r.stdout);
    };
    const locked = async (): Promise<boolean | undefined> => {
      const r = await run(
        'dbus-send',
        [
          `--bus=${address}`,
          '--print-reply',
          '--dest=org.freedesktop.secrets',
          LOGIN,
          'org.freedesktop.DBus.Properties.Get',
          'string:org.freedesktop.Secret.Collection',
          'string:Locked',
        ],
        env,
      );
      if (r.status !== 0) return undefined;
      return /boolean true/.test(r.stdout) ? true : /boolean false/.test(r.stdout) ? false : undefined;
    };

    const startDaemon = async (replace: boolean): Promise<void> => {
      const previous = daemon;
      const args = [...(replace ? ['--replace'] : []), '--foreground', '--unlock', '--components=secrets'];
      const child = track(spawn('gnome-keyring-daemon', args, { env, stdio: ['pipe', 'ignore', 'pipe'] }));
      record(`gnome-keyring-daemon ${child.pid ?? '?'}`, child);
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(password); // the password on stdin, never argv
      daemon = child;
      // Ask the bus, not the service: asking the service could activate another daemon (PLATFORM.md).
      await waitFor('org.freedesktop.secrets on the bus', async () => {
        if (child.exitCode !== null)
          throw new Error(`secret-service helper: gnome-keyring-daemon exited (${child.exitCode})`);
        return nameHasOwner();
      });
      await waitFor('the login collection to be unlocked', async () => (await locked()) === false);
      if (previous !== undefined && previous !== child) await exited(previous).catch(() => previous.kill('SIGKILL'));
    };

    await startDaemon(false);

    return {
      env,
      dir,
      async lock() {
        const r = await run(
          'dbus-send',
          [
            `--bus=${address}`,
            '--print-reply',
            '--dest=org.freedesktop.secrets',
            '/org/freedesktop/secrets',
            'org.freedesktop.Secret.Service.Lock',
            `array:objpath:${LOGIN}`,
          ],
          env,
        );
        if (r.status !== 0) throw new Error(`secret-service helper: Lock failed: ${r.stderr.trim()}`);
        await waitFor('the login collection to be locked', async () => (await locked()) === true);
      },
      async unlock() {
        await startDaemon(true);
      },
      async killDaemon() {
        const child = daemon;
        if (child === undefined) return;
        child.kill('SIGKILL');
        await exited(child);
        await waitFor('org.freedesktop.secrets to leave the bus', async () => !(await nameHasOwner()));
      },
      pauseDaemon() {
        daemon?.kill('SIGSTOP');
      },
      resumeDaemon() {
        daemon?.kill('SIGCONT');
      },
      stop,
      log: () => logText,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** What a keychain call in the child gave: a value, or the error with every form a leak could take. */
export type ChildResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly code: string | undefined; readonly message: string; readonly text: string };

/**
 * The value of a keychain child's answer; a failed call throws with its code and message (our coded
 * errors, which never carry a stored value) and the child's stderr, so a CI failure names its cause.
 */
export function okValue(
  result: ChildResult,
  what: string,
  child?: KeychainChild,
  service?: SecretServiceHandle,
): unknown {
  if (result.ok) return result.value;
  const stderr = child?.stderr().trim() ?? '';
  const log = service?.log().trim() ?? '';
  throw new Error(
    [
      `${what}: the keychain child answered ${result.code ?? '(no code)'}: ${result.message}`,
      ...(stderr === '' ? [] : [`child stderr: ${stderr.slice(-500)}`]),
      ...(log === '' ? [] : [`secret service log: ${log.slice(-1_500)}`]),
    ].join('\n'),
  );
}

export interface KeychainChild {
  call(op: 'get' | 'set' | 'delete' | 'health', account?: string, value?: string): Promise<ChildResult>;
  /** Everything the child wrote on stderr so far (announcements, warnings, crashes). */
  stderr(): string;
  close(): Promise<void>;
}

export interface KeychainChildOptions {
  readonly service: string;
  readonly backend?: 'os' | 'memory';
  readonly timeoutMs?: number;
}

/**
 * Runs the real `openKeychain` in a child process with `env` (and nothing else from this process): one
 * JSON request per line on stdin, one JSON answer per line on stdout.
 */
export async function openKeychainChild(
  env: Record<string, string>,
  options: KeychainChildOptions,
): Promise<KeychainChild> {
  const script = join(distRoot, 'test', 'helpers', 'secret-service-child.js');
  const child = track(
    spawn(process.execPath, [script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
  );
  let errText = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    errText += chunk;
  });
  const pending = new Map<number, (result: ChildResult) => void>();
  let nextId = 1;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const { id, ...answer } = JSON.parse(line) as { id: number } & ChildResult;
    const resolve = pending.get(id);
    pending.delete(id);
    resolve?.(answer as ChildResult);
  });
  child.once('exit', () => {
    for (const resolve of pending.values())
      resolve({ ok: false, code: 'CHILD_EXITED', message: 'the child exited', text: errText });
    pending.clear();
  });
  const send = (request: Record<string, unknown>): Promise<ChildResult> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(
        () => {
          pending.delete(id);
          reject(new Error(`keychain child: no answer to ${String(request.op)} in time`));
        },
        WAIT_MS + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS),
      );
      pending.set(id, (result) => {
        clearTimeout(timer);
        resolve(result);
      });
      child.stdin!.write(`${JSON.stringify({ id, ...request })}\n`);
    });
  const opened = await send({
    op: 'open',
    service: options.service,
    backend: options.backend ?? 'os',
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
  if (!opened.ok) {
    child.kill('SIGKILL');
    throw new Error(`keychain child: open failed: ${opened.code ?? ''} ${opened.message}`);
  }
  return {
    call: (op, account, value) => send({ op, account, value }),
    stderr: () => errText,
    async close() {
      child.stdin!.end();
      await exited(child).catch(() => {
        child.kill('SIGKILL');
      });
    },
  };
}

/** The object paths of the items in the login collection (to count what a call stored). */
export async function loginItems(env: Record<string, string>): Promise<string[]> {
  const r = await run(
    'dbus-send',
    [
      `--bus=${env.DBUS_SESSION_BUS_ADDRESS ?? ''}`,
      '--print-reply',
      '--dest=org.freedesktop.secrets',
      LOGIN,
      'org.freedesktop.DBus.Properties.Get',
      'string:org.freedesktop.Secret.Collection',
      'string:Items',
    ],
    env,
  );
  if (r.status !== 0) throw new Error(`secret-service helper: cannot list items: ${r.stderr.trim()}`);
  return [...r.stdout.matchAll(/object path "([^"]+)"/g)].map((m) => m[1]!);
}

/** `secret-tool lookup service S username A` against the private bus: the value, or null. */
export async function secretToolLookup(
  env: Record<string, string>,
  service: string,
  account: string,
): Promise<string | null> {
  const r = await run('secret-tool', ['lookup', 'service', service, 'username', account], env);
  return r.status === 0 ? r.stdout : null;
}

/**
 * Files under `roots` (recursively; symlinks not followed; files over 16 MiB skipped) that contain any of
 * `needles`, as UTF-8, UTF-16LE or base64. `since` (ms) skips files not modified since then, for shared
 * folders such as the system temp dir.
 */
export function filesContaining(roots: readonly string[], needles: readonly string[], since = 0): string[] {
  const forms = needles.flatMap((n) => [
    Buffer.from(n, 'utf8'),
    Buffer.from(n, 'utf16le'),
    Buffer.from(Buffer.from(n, 'utf8').toString('base64').slice(0, 24), 'utf8'),
  ]);
  const hits: string[] = [];
  let budget = 20_000;
  const walk = (dir: string, depth: number): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (--budget < 0) return;
      const path = join(dir, name);
      let info;
      try {
        info = lstatSync(path);
      } catch {
        continue;
      }
      if (info.isDirectory()) {
        if (depth < 8) walk(path, depth + 1);
      } else if (info.isFile() && info.size <= 16 * 1024 * 1024 && info.mtimeMs >= since) {
        let data: Buffer;
        try {
          data = readFileSync(path);
        } catch {
          continue;
        }
        if (forms.some((form) => data.includes(form))) hits.push(path);
      }
    }
  };
  for (const root of roots) walk(root, 0);
  return hits;
}

/**
 * Lines of /proc/keys (the kernel keyrings this user can see: descriptions, not payloads) that mention
 * `text`. `keyctl` is not needed. Empty when /proc/keys is absent.
 */
export function kernelKeysMentioning(text: string): string[] {
  try {
    return readFileSync('/proc/keys', 'utf8')
      .split('\n')
      .filter((line) => line.includes(text));
  } catch {
    return [];
  }
}
