/**
 * The one way keychain backends run a command: an argv array (no shell), an explicit small environment,
 * the only secret-bearing data on stdin, a hard time bound (the child is killed) and a cap on output.
 * Backends take an {@link Exec} so unit tests can inject one and check what would be run.
 */
import { spawn } from 'node:child_process';

export type ExecResult =
  | { readonly kind: 'exited'; readonly status: number | null; readonly stdout: string; readonly stderr: string }
  | { readonly kind: 'not-found' }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'spawn-failed' };

export interface ExecOptions {
  /** Written to the child's stdin, then stdin is closed. The only place a secret may go. */
  readonly input?: string;
  readonly timeoutMs: number;
  /** The child's whole environment (never the parent's as a whole). */
  readonly env: Readonly<Record<string, string>>;
}

export type Exec = (file: string, args: readonly string[], options: ExecOptions) => Promise<ExecResult>;

const MAX_OUTPUT_BYTES = 1024 * 1024;

/** Runs `file` with `args`; resolves with what happened, never rejects. */
export const runCommand: Exec = (file, args, options) =>
  new Promise<ExecResult>((resolve) => {
    let settled = false;
    let child: ReturnType<typeof spawn> | undefined;
    const finish = (result: ExecResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      child?.kill('SIGKILL');
      finish({ kind: 'timeout' });
    }, options.timeoutMs);
    try {
      child = spawn(file, [...args], {
        shell: false,
        env: { ...options.env },
        stdio: ['pipe', 'pipe', 'pipe'],
        windowsHide: true,
      });
    } catch {
      finish({ kind: 'spawn-failed' });
      return;
    }
    const proc = child;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const collect =
      (into: Buffer[]) =>
      (chunk: Buffer): void => {
        size += chunk.length;
        if (size > MAX_OUTPUT_BYTES) {
          proc.kill('SIGKILL');
          finish({ kind: 'spawn-failed' });
          return;
        }
        into.push(chunk);
      };
    proc.stdout?.on('data', collect(out));
    proc.stderr?.on('data', collect(err));
    proc.on('error', (error: NodeJS.ErrnoException) => {
      finish(error.code === 'ENOENT' ? { kind: 'not-found' } : { kind: 'spawn-failed' });
    });
    proc.on('close', (status) => {
      finish({
        kind: 'exited',
        status,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    // A child that exits before reading its stdin makes the write fail with EPIPE: not our error to raise.
    proc.stdin?.on('error', () => undefined);
    proc.stdin?.end(options.input ?? '');
  });

/** Copies the named variables that are set in `env` (an allow-list; nothing else reaches the child). */
export function pickEnv(env: NodeJS.ProcessEnv, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of names) {
    const value = env[name];
    if (typeof value === 'string' && value.length > 0) out[name] = value;
  }
  return out;
}
