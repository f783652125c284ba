/**
 * The runtime sandbox (issue 10, threat P-i): turns the runtime's command into a sandboxed command, so
 * that a runtime compromised by a malicious model has no network and sees only its model and code.
 *
 * - {@link detectSandbox} finds what this machine can do and proves it by running one trivial sandboxed
 *   command (user namespaces may be disabled): Linux `bubblewrap`, else the partial `unshare` fallback;
 *   macOS `sandbox-exec`; Windows none yet (an AppContainer design exists). Cached per options.
 * - {@link sandboxCommand} wraps `{file, args}` for the detected mode; the spawn adapter spawns the
 *   result exactly as it would the plain command (absolute file, argv array, detached).
 * - {@link assertSandboxOrExplicitOptOut} is the gate: a start without the full sandbox is refused with
 *   `ERR_SANDBOX_UNAVAILABLE` unless the user passed `--allow-unsandboxed`.
 *
 * The per-platform argv builders are pure (`sandbox-linux-bwrap.ts`, `sandbox-linux-unshare.ts`,
 * `sandbox-macos.ts`, `sandbox-windows.ts`); the checks on the profile are in `sandbox-profile.ts`.
 * See docs/sandbox.md for what each mode gives and does not give.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompanionError, assertObject, assertString, CodedTypeError } from '../core/errors.js';
import { bwrapArgs, readLinuxSystemLayout, type LinuxSystemLayout } from './sandbox-linux-bwrap.js';
import { unshareArgs } from './sandbox-linux-unshare.js';
import { sandboxExecArgs } from './sandbox-macos.js';
import { appContainerLauncherArgs, buildAppContainerPlan } from './sandbox-windows.js';
import {
  assertSandboxPath,
  assertWindowsSandboxPath,
  checkProfile,
  SANDBOX_MODES,
  type SandboxCommandLine,
  type SandboxMode,
  type SandboxProfile,
} from './sandbox-profile.js';

export {
  runtimeSandboxProfile,
  isAllowedSandboxEnvKey,
  SANDBOX_ENV_DEFAULTS,
  SANDBOX_MODES,
} from './sandbox-profile.js';
export type { RuntimeSandboxInputs, SandboxCommandLine, SandboxMode, SandboxProfile } from './sandbox-profile.js';
export type { LinuxSystemLayout } from './sandbox-linux-bwrap.js';
export { discoverGpuPassthrough, type GpuPassthrough, type GpuFsView } from './sandbox-gpu.js';

/** What {@link detectSandbox} found. */
export interface SandboxSupport {
  /** The mode to use; `none` when nothing works (see `reason`). */
  readonly mode: SandboxMode;
  /** Absolute path of the wrapper (bwrap, unshare, sandbox-exec, the AppContainer launcher); null for `none`. */
  readonly path: string | null;
  /** Why a weaker mode (or none) was chosen. Safe to print: no secret, no model path. */
  readonly reason?: string;
  /** bubblewrap ≥ 0.8: it understands `--disable-userns`. */
  readonly disableUserns?: boolean;
  /** bubblewrap: the host's system layout, read once at detection. Read again when absent. */
  readonly layout?: LinuxSystemLayout;
  /** unshare: the helpers it chains (`setpriv`, `env`). */
  readonly tools?: { readonly setpriv: string; readonly env: string };
  /** unshare: not root, so a user namespace is needed. */
  readonly userNamespace?: boolean;
  /** sandbox-exec: allow Metal (GPU) in the profile. */
  readonly metal?: boolean;
}

/** Options of {@link detectSandbox}; every field has a default fitting this machine. */
export interface DetectSandboxOptions {
  /** Default `process.platform`. */
  readonly platform?: NodeJS.Platform;
  /** Default `/usr/bin/bwrap`. */
  readonly bwrapPath?: string;
  /** Default `/usr/bin/unshare`. */
  readonly unsharePath?: string;
  /** Default `/usr/bin/setpriv` (the unshare fallback drops capabilities with it). */
  readonly setprivPath?: string;
  /** Default `/usr/bin/env`. */
  readonly envPath?: string;
  /** Default `/usr/bin/sandbox-exec`. */
  readonly sandboxExecPath?: string;
  /** Run one sandboxed `node -e` to prove the mode works (default true). False trusts the binary's presence. */
  readonly probe?: boolean;
  /** The Node binary for the proof run. Default `process.execPath`. */
  readonly nodeBinary?: string;
  /** Bound of each proof run, ms. Default {@link DETECT_TIMEOUT_MS}. */
  readonly timeoutMs?: number;
}

export const DETECT_TIMEOUT_MS = 5000;
const MAX_REASON = 240;
const MAX_OUTPUT = 1 << 16;

// The proof: Node starts in the sandbox and sees no network interface but loopback.
const PROOF_SCRIPT =
  "const n=Object.keys(require('os').networkInterfaces());process.exit(n.every((k)=>k==='lo'||k==='lo0')?0:3)";
// Where bubblewrap's proof shows its read-only descriptor (as the runtime's model is shown).
const PROOF_FD_PATH = '/run/companion/proof';
// bubblewrap's proof also shows a file through --ro-bind-fd (how the runtime gets its model; upstream
// bubblewrap 0.10, backported to Debian 12's 0.8) and checks that it cannot be reopened for writing. A
// bubblewrap without --ro-bind-fd fails here, at detection, instead of at every start.
const PROOF_FD_SCRIPT =
  "const n=Object.keys(require('os').networkInterfaces());if(!n.every((k)=>k==='lo'||k==='lo0'))process.exit(3);" +
  `const f=require('fs');f.closeSync(f.openSync('${PROOF_FD_PATH}','r'));try{f.openSync('${PROOF_FD_PATH}','r+');process.exit(4)}catch(e){process.exit(e.code==='EROFS'?0:5)}`;

const cache = new Map<string, Promise<SandboxSupport>>();

/** Forgets cached detections (tests; after installing bubblewrap). */
export function clearSandboxDetectionCache(): void {
  cache.clear();
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function firstLine(text: string): string {
  const line = text.split('\n').find((entry) => entry.trim().length > 0) ?? '';
  return line.trim().slice(0, MAX_REASON);
}

interface RunResult {
  readonly ok: boolean;
  readonly stdout: string;
  readonly detail: string;
}

/**
 * Runs `file` with an empty environment and no shell, bounded by `timeoutMs` (then SIGKILL). With
 * `fd3`, that descriptor is the child's fd 3 (the proof of --ro-bind-fd).
 */
function run(file: string, args: string[], timeoutMs: number, fd3?: number): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      env: {},
      shell: false,
      windowsHide: true,
      stdio: ['ignore', 'pipe', 'pipe', ...(fd3 === undefined ? [] : [fd3])],
    });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const collect =
      (append: (text: string) => void) =>
      (chunk: Buffer): void =>
        append(chunk.toString('utf8'));
    child.stdout?.on(
      'data',
      collect((text) => {
        if (stdout.length < MAX_OUTPUT) stdout += text;
      }),
    );
    child.stderr?.on(
      'data',
      collect((text) => {
        if (stderr.length < MAX_OUTPUT) stderr += text;
      }),
    );
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, stdout, detail: `cannot run (${error.code ?? 'error'})` });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ ok: true, stdout, detail: '' });
      else
        resolve({
          ok: false,
          stdout,
          detail: killed
            ? `timed out after ${timeoutMs} ms`
            : firstLine(stderr) || `exit status ${String(code ?? signal)}`,
        });
    });
  });
}

/**
 * The bubblewrap proof: the plain proof plus an empty private file shown through --ro-bind-fd (not the
 * node binary: a running executable refuses a write with ETXTBSY before the mount could say EROFS).
 */
async function proveBubblewrap(candidate: SandboxSupport, nodeBinary: string, timeoutMs: number): Promise<RunResult> {
  let folder: string;
  let fd: number;
  try {
    folder = mkdtempSync(join(tmpdir(), 'companion-proof-'));
  } catch (error) {
    return {
      ok: false,
      stdout: '',
      detail: `cannot make a proof file (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    };
  }
  try {
    const file = join(folder, 'proof');
    closeSync(openSync(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600));
    fd = openSync(file, constants.O_RDONLY);
    try {
      const profile: SandboxProfile = { ...proofProfile(nodeBinary), readOnlyFd: { fd: 3, path: PROOF_FD_PATH } };
      const wrapped = sandboxCommand({ file: nodeBinary, args: ['-e', PROOF_FD_SCRIPT] }, profile, candidate);
      return await run(wrapped.file, [...wrapped.args], timeoutMs, fd);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    return {
      ok: false,
      stdout: '',
      detail: `cannot make a proof file (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    };
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

function proofCommand(nodeBinary: string): SandboxCommandLine {
  return { file: nodeBinary, args: ['-e', PROOF_SCRIPT] };
}

function proofProfile(nodeBinary: string): SandboxProfile {
  return { readOnlyPaths: [nodeBinary], writablePaths: [], allowNetwork: false };
}

async function detectLinux(
  options: Required<Omit<DetectSandboxOptions, 'platform' | 'sandboxExecPath'>>,
): Promise<SandboxSupport> {
  const reasons: string[] = [];
  if (!executable(options.bwrapPath)) {
    reasons.push('bubblewrap is not installed');
  } else {
    const version = await run(options.bwrapPath, ['--version'], options.timeoutMs);
    const match = /(\d+)\.(\d+)/.exec(version.stdout);
    const disableUserns = match !== null && (Number(match[1]) > 0 || Number(match[2]) >= 8);
    const candidate: SandboxSupport = {
      mode: 'bubblewrap',
      path: options.bwrapPath,
      disableUserns,
      layout: readLinuxSystemLayout(),
    };
    if (!options.probe) return candidate;
    const proof = await proveBubblewrap(candidate, options.nodeBinary, options.timeoutMs);
    if (proof.ok) return candidate;
    reasons.push(`bubblewrap cannot make a sandbox here (${proof.detail})`);
  }
  const tools = { setpriv: options.setprivPath, env: options.envPath };
  if (!executable(options.unsharePath) || !executable(tools.setpriv) || !executable(tools.env)) {
    reasons.push('unshare or setpriv is not installed');
    return { mode: 'none', path: null, reason: reasons.join('; ') };
  }
  const userNamespace = typeof process.getuid === 'function' && process.getuid() !== 0;
  const candidate: SandboxSupport = {
    mode: 'unshare',
    path: options.unsharePath,
    tools,
    userNamespace,
    reason: `${reasons.join('; ')}; unshare isolates the network and processes only, not files`,
  };
  if (!options.probe) return candidate;
  const wrapped = sandboxCommand(proofCommand(options.nodeBinary), proofProfile(options.nodeBinary), candidate);
  const proof = await run(wrapped.file, [...wrapped.args], options.timeoutMs);
  if (proof.ok) return candidate;
  reasons.push(`unshare cannot make namespaces here (${proof.detail})`);
  return { mode: 'none', path: null, reason: reasons.join('; ') };
}

async function detectDarwin(sandboxExecPath: string, probe: boolean, timeoutMs: number): Promise<SandboxSupport> {
  if (!executable(sandboxExecPath)) return { mode: 'none', path: null, reason: 'sandbox-exec is not available' };
  const candidate: SandboxSupport = { mode: 'sandbox-exec', path: sandboxExecPath, metal: true };
  if (!probe) return candidate;
  const proof = await run(
    sandboxExecPath,
    [
      '-p',
      '(version 1)(deny default)(allow process-exec)(allow process-fork)(allow file-read*)(allow sysctl-read)',
      '/usr/bin/true',
    ],
    timeoutMs,
  );
  return proof.ok
    ? candidate
    : { mode: 'none', path: null, reason: `sandbox-exec cannot make a sandbox here (${proof.detail})` };
}

/**
 * Finds the strongest sandbox this machine can make, proving it with one sandboxed run (bounded by
 * `timeoutMs`), and caches the answer per options. Never rejects: failures become mode `none` with a
 * reason.
 * @throws TypeError ERR_INVALID_ARG_TYPE (options not an object, a non-boolean probe) or
 *   ERR_INVALID_ARG_VALUE (a relative path, a timeout outside 1–60000 ms) on a bad option.
 */
export function detectSandbox(options: DetectSandboxOptions = {}): Promise<SandboxSupport> {
  if (typeof options !== 'object' || options === null)
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'options must be an object');
  const platform = options.platform ?? process.platform;
  assertString(platform, 'options.platform');
  const resolved = {
    bwrapPath: options.bwrapPath ?? '/usr/bin/bwrap',
    unsharePath: options.unsharePath ?? '/usr/bin/unshare',
    setprivPath: options.setprivPath ?? '/usr/bin/setpriv',
    envPath: options.envPath ?? '/usr/bin/env',
    sandboxExecPath: options.sandboxExecPath ?? '/usr/bin/sandbox-exec',
    nodeBinary: options.nodeBinary ?? process.execPath,
    probe: options.probe ?? true,
    timeoutMs: options.timeoutMs ?? DETECT_TIMEOUT_MS,
  };
  if (typeof resolved.probe !== 'boolean')
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'options.probe must be a boolean');
  if (!Number.isInteger(resolved.timeoutMs) || resolved.timeoutMs < 1 || resolved.timeoutMs > 60_000) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'options.timeoutMs must be an integer from 1 to 60000');
  }
  if (platform !== 'win32') {
    for (const field of [
      'bwrapPath',
      'unsharePath',
      'setprivPath',
      'envPath',
      'sandboxExecPath',
      'nodeBinary',
    ] as const)
      assertSandboxPath(resolved[field], `options.${field}`);
  }
  const key = JSON.stringify([platform, resolved]);
  const cached = cache.get(key);
  if (cached !== undefined) return cached;
  let result: Promise<SandboxSupport>;
  if (platform === 'linux') {
    const { sandboxExecPath: _unused, ...linux } = resolved;
    result = detectLinux(linux);
  } else if (platform === 'darwin') {
    result = detectDarwin(resolved.sandboxExecPath, resolved.probe, resolved.timeoutMs);
  } else if (platform === 'win32') {
    result = Promise.resolve({
      mode: 'none',
      path: null,
      reason: 'the Windows AppContainer launcher is designed but not built yet (docs/sandbox.md)',
    });
  } else {
    result = Promise.resolve({ mode: 'none', path: null, reason: `no sandbox is known for platform ${platform}` });
  }
  const frozen = result.then((support) => Object.freeze(support));
  cache.set(key, frozen);
  return frozen;
}

function unavailable(message: string): CompanionError {
  return new CompanionError('ERR_SANDBOX_UNAVAILABLE', message);
}

/**
 * Wraps `command` so that it runs in the sandbox `support` describes, seeing only what `profile` lists.
 * The result is spawned like the plain command (absolute file, argv array, no shell); spawn it detached
 * with `cwd: '/'` and an empty or allow-listed environment (the wrapper clears it anyway).
 * @param command the runtime's absolute binary and its arguments
 * @param profile what the sandbox may see (see {@link SandboxProfile}); `runtimeSandboxProfile()` builds it
 * @param support the result of {@link detectSandbox}
 * @returns the wrapper's absolute file and its argv, and `modelPath` when the sandbox shows the
 *   profile's `readOnlyFd` at a path (bubblewrap) instead of passing the descriptor through
 * @throws TypeError ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE on a bad command or profile (relative
 *   path, `..`, NUL, a path named twice, an env key that is not allowed or looks like a secret,
 *   `allowNetwork` not false); CompanionError ERR_SANDBOX_UNAVAILABLE for mode `none` (a caller that the
 *   user allowed to run unsandboxed spawns the plain command instead).
 */
export function sandboxCommand(
  command: SandboxCommandLine,
  profile: SandboxProfile,
  support: SandboxSupport,
): { file: string; args: string[]; modelPath?: string } {
  assertObject(support, 'support');
  if (!(SANDBOX_MODES as readonly string[]).includes(support.mode)) {
    throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'support.mode must be a sandbox mode');
  }
  if (support.mode === 'none' || support.path === null) throw unavailable('there is no sandbox to wrap the runtime in');
  switch (support.mode) {
    case 'bubblewrap': {
      assertSandboxPath(support.path, 'support.path');
      const checked = checkProfile(command, profile);
      const layout = support.layout ?? readLinuxSystemLayout();
      const args = bwrapArgs(command, checked, layout, {
        disableUserns: support.disableUserns === true,
        newSession: false,
      });
      return {
        file: support.path,
        args,
        ...(checked.readOnlyFd === undefined ? {} : { modelPath: checked.readOnlyFd.path }),
      };
    }
    case 'unshare': {
      assertSandboxPath(support.path, 'support.path');
      const checked = checkProfile(command, profile);
      assertEnvSafeFile(command.file);
      const tools = support.tools ?? { setpriv: '/usr/bin/setpriv', env: '/usr/bin/env' };
      assertSandboxPath(tools.setpriv, 'support.tools.setpriv');
      assertSandboxPath(tools.env, 'support.tools.env');
      return { file: support.path, args: unshareArgs(command, checked, tools, support.userNamespace === true) };
    }
    case 'sandbox-exec': {
      assertSandboxPath(support.path, 'support.path');
      const checked = checkProfile(command, profile);
      assertEnvSafeFile(command.file);
      return { file: support.path, args: sandboxExecArgs(command, checked, { metal: support.metal !== false }) };
    }
    case 'appcontainer': {
      assertWindowsSandboxPath(support.path, 'support.path');
      const checked = checkProfile(command, profile, 'windows');
      return { file: support.path, args: appContainerLauncherArgs(buildAppContainerPlan(command, checked)) };
    }
  }
}

// `env` takes any leading NAME=VALUE word as an assignment: the command file may not look like one.
function assertEnvSafeFile(file: string): void {
  if (file.includes('=')) throw new CodedTypeError('ERR_INVALID_ARG_VALUE', 'command.file must be a path without "="');
}

/** True when `mode` hides the user's files and the network (bubblewrap, sandbox-exec, AppContainer). */
export function isFullSandbox(mode: SandboxMode): boolean {
  return mode === 'bubblewrap' || mode === 'sandbox-exec' || mode === 'appcontainer';
}

/**
 * The start gate: returns when `support` is a full sandbox, or when the user explicitly allowed an
 * unsandboxed start (`--allow-unsandboxed`); the partial `unshare` mode counts as unsandboxed here, since
 * it leaves the user's files and the keychain's D-Bus socket reachable.
 * @throws CompanionError ERR_SANDBOX_UNAVAILABLE otherwise, with a message that says how to fix it;
 *   TypeError ERR_INVALID_ARG_TYPE when `support` is not an object or `allowUnsandboxed` not a boolean.
 */
export function assertSandboxOrExplicitOptOut(support: SandboxSupport, allowUnsandboxed: boolean): void {
  assertObject(support, 'support');
  if (typeof allowUnsandboxed !== 'boolean')
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'allowUnsandboxed must be a boolean');
  if (isFullSandbox(support.mode) || allowUnsandboxed) return;
  const why =
    support.mode === 'unshare'
      ? "only a partial sandbox (unshare: no network, but the user's files stay visible) is available"
      : 'no sandbox could be made for the runtime';
  const detail = support.reason === undefined ? '' : ` (${support.reason})`;
  throw unavailable(`${why}${detail}; install bubblewrap (apt-get install bubblewrap) or pass --allow-unsandboxed`);
}
