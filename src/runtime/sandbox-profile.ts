/**
 * The sandbox profile (threat P-i): what the runtime child may see, and the checks every platform's
 * wrapper runs on it before a single argument is produced. Pure: no I/O (the wrappers take the host's
 * layout as a value).
 *
 * A profile is an allow list. Nothing that is not named here is visible inside the sandbox (bubblewrap,
 * sandbox-exec, AppContainer); the `unshare` fallback cannot hide files and says so (docs/sandbox.md).
 */
import { posix, win32 } from 'node:path';
import { assertObject, assertString, CodedTypeError } from '../core/errors.js';
import { checkGpuPassthrough, type GpuPassthrough } from './sandbox-gpu.js';

/** The sandbox kinds, strongest first per platform. */
export const SANDBOX_MODES = ['bubblewrap', 'unshare', 'sandbox-exec', 'appcontainer', 'none'] as const;
export type SandboxMode = (typeof SANDBOX_MODES)[number];

/** A command as `spawn` takes it: an absolute file and an argv array (never a shell line). */
export interface SandboxCommandLine {
  readonly file: string;
  readonly args: readonly string[];
}

/**
 * What the sandboxed child may see and do.
 *
 * - `readOnlyPaths`: files or folders bound read-only at the same path (the Node binary, the runtime's
 *   code, its `package.json`, `node_modules`, the ONE model file). A file is bound alone: its folder
 *   stays hidden.
 * - `writablePaths`: folders bound read-write (the runtime's socket folder, created 0700 by the parent).
 * - `allowNetwork`: always `false`; the type says so, and the check refuses anything else.
 * - `env`: extra environment for the child, on top of {@link SANDBOX_ENV_DEFAULTS}. Only keys of
 *   {@link isAllowedSandboxEnvKey} pass, none that looks like a secret: a sandbox wrapper puts the
 *   environment on its own argv (`--setenv`, `env K=V`), where other local processes can read it.
 *
 * Every path is absolute and normal: no `..` or `.` segment, no doubled or trailing separator, no NUL
 * or newline, not `/` itself or a top-level folder (`/home`, `/tmp`, `/run`…), not inside `/proc`, `/dev` or
 * `/sys` (the wrapper makes those).
 */
export interface SandboxProfile {
  readonly readOnlyPaths: readonly string[];
  readonly writablePaths: readonly string[];
  readonly allowNetwork: false;
  readonly env?: Readonly<Record<string, string>>;
  /**
   * An inherited descriptor to show read-only at `path` (the model). bubblewrap binds it with
   * `--ro-bind-fd` and closes it, so the runtime sees a read-only mount it cannot reopen for writing or
   * chmod; other modes leave the descriptor as it is.
   */
  readonly readOnlyFd?: { readonly fd: number; readonly path: string };
  /**
   * GPU passthrough (`gpu auto`, bubblewrap only): device nodes bound with `--dev-bind` and driver files
   * bound read-only, each on the allow list of `sandbox-gpu.ts`. Absent with `gpu off`: no device, no driver.
   */
  readonly gpu?: GpuPassthrough;
}

/** The environment every sandboxed child gets (POSIX platforms). HOME points at nothing on purpose. */
export const SANDBOX_ENV_DEFAULTS: Readonly<Record<string, string>> = Object.freeze({
  PATH: '/usr/bin:/bin',
  HOME: '/nonexistent',
  TMPDIR: '/tmp',
  LANG: 'C.UTF-8',
});

const ALLOWED_ENV_KEY = /^(?:LANG|LC_ALL|LC_CTYPE|LC_MESSAGES|TZ|NODE_ENV|COMPANION_RUNTIME_[A-Z0-9_]{1,64})$/;
// A key that names a credential is refused even under an allowed prefix (COMPANION_RUNTIME_TOKEN).
const SECRET_ENV_KEY = /TOKEN|SECRET|PASSW|PWD|KEY|CRED|AUTH|COOKIE|SESSION|PRIVATE|BEARER|SIGN|CERT|API/;
// A value shaped like a credential is refused whatever its key: a JWT, a bearer header, a PEM block.
const SECRET_ENV_VALUE = /^eyJ[\w-]{4,}\.[\w-]{4,}|\bBearer\s|-----BEGIN /;
const MAX_ENV_VALUE = 4096;

/** True when `key` may be passed into the sandbox (an allow list, minus anything secret-looking). */
export function isAllowedSandboxEnvKey(key: string): boolean {
  return ALLOWED_ENV_KEY.test(key) && !SECRET_ENV_KEY.test(key.replace(/^COMPANION_RUNTIME_/, ''));
}

function invalid(name: string, expected: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_VALUE', `${name} must be ${expected}`);
}

function invalidType(name: string, expected: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_TYPE', `${name} must be ${expected}`);
}

/** Folders a wrapper builds itself; a profile may not bind anything into them. */
const RESERVED_POSIX = ['/proc', '/dev', '/sys'];

/**
 * Throws TypeError `ERR_INVALID_ARG_VALUE` unless `path` is an absolute, normal POSIX path that a
 * profile may name. The message names the field, never the path (it may hold a user name or a model id).
 */
export function assertSandboxPath(path: unknown, name: string): asserts path is string {
  assertString(path, name);
  if (path.includes('\0') || /[\n\r]/.test(path)) throw invalid(name, 'a path without NUL or line breaks');
  if (!posix.isAbsolute(path)) throw invalid(name, 'an absolute path');
  if (path.split('/').some((segment) => segment === '..' || segment === '.'))
    throw invalid(name, 'a path without . or .. segments');
  if (path === '/' || posix.normalize(path) !== path || path.endsWith('/'))
    throw invalid(name, 'a normal path other than /');
  if (RESERVED_POSIX.some((root) => path === root || path.startsWith(`${root}/`)))
    throw invalid(name, 'outside /proc, /dev and /sys');
  // Why: a whole top-level folder (/home, /tmp, /run, /etc…) would undo the view; the runtime never needs one.
  if (pathDepth(path) < 2) throw invalid(name, 'a path below a top-level folder');
}

/**
 * Throws TypeError `ERR_INVALID_ARG_VALUE` unless `path` is an absolute Windows path on a drive
 * (`C:\…`): no UNC or device path (`\\server\…`, `\\?\…`), no `..`, no NUL.
 */
export function assertWindowsSandboxPath(path: unknown, name: string): asserts path is string {
  assertString(path, name);
  if (path.includes('\0') || /[\n\r"]/.test(path)) throw invalid(name, 'a path without NUL, quotes or line breaks');
  if (!/^[A-Za-z]:\\/.test(path) || !win32.isAbsolute(path)) throw invalid(name, 'an absolute path on a drive');
  if (path.split(/[\\/]/).some((segment) => segment === '..' || segment === '.'))
    throw invalid(name, 'a path without . or .. segments');
  if (win32.normalize(path) !== path || (path.endsWith('\\') && path.length > 3)) throw invalid(name, 'a normal path');
}

/** A profile whose every field passed the checks. */
export interface CheckedProfile {
  readonly readOnlyPaths: readonly string[];
  readonly writablePaths: readonly string[];
  /** The whole environment of the child: the defaults plus the allowed extra keys, sorted by key. */
  readonly env: ReadonlyArray<readonly [string, string]>;
  readonly readOnlyFd?: { readonly fd: number; readonly path: string };
  readonly gpu?: GpuPassthrough;
}

/**
 * Checks a profile and the command. `flavour` picks the path rules (POSIX or Windows).
 * @throws TypeError ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE on anything outside the rules above,
 *   including `allowNetwork !== false`, a path named twice, or an env key that is not allowed.
 */
export function checkProfile(
  command: SandboxCommandLine,
  profile: SandboxProfile,
  flavour: 'posix' | 'windows' = 'posix',
): CheckedProfile {
  const assertPath: (path: unknown, name: string) => asserts path is string =
    flavour === 'windows' ? assertWindowsSandboxPath : assertSandboxPath;
  assertObject(command, 'command');
  assertPath(command.file, 'command.file');
  if (!Array.isArray(command.args)) throw invalidType('command.args', 'an array of strings');
  command.args.forEach((arg, index) => {
    assertString(arg, `command.args[${index}]`, true);
    if (arg.includes('\0')) throw invalid(`command.args[${index}]`, 'a string without NUL');
  });
  assertObject(profile, 'profile');
  // Why: the network is the exfiltration route; no profile may open it, even by mistake.
  if (profile.allowNetwork !== false) throw invalid('profile.allowNetwork', 'false');
  const lists = { readOnlyPaths: profile.readOnlyPaths, writablePaths: profile.writablePaths };
  const seen = new Set<string>();
  for (const [field, list] of Object.entries(lists)) {
    if (!Array.isArray(list)) throw invalidType(`profile.${field}`, 'an array of paths');
    list.forEach((path: unknown, index) => {
      assertPath(path, `profile.${field}[${index}]`);
      const key = flavour === 'windows' ? path.toLowerCase() : path;
      if (seen.has(key)) throw invalid(`profile.${field}[${index}]`, 'named once');
      seen.add(key);
    });
  }
  const env = new Map<string, string>(flavour === 'windows' ? [] : Object.entries(SANDBOX_ENV_DEFAULTS));
  if (profile.env !== undefined) {
    assertObject(profile.env, 'profile.env');
    for (const [key, value] of Object.entries(profile.env)) {
      // Why: the environment is the classic leak into a child (P-f); only named, harmless keys pass.
      if (!isAllowedSandboxEnvKey(key)) throw invalid('profile.env', 'only allowed keys (docs/sandbox.md)');
      assertString(value, `profile.env.${key}`, true);
      if (value.includes('\0') || value.length > MAX_ENV_VALUE)
        throw invalid(`profile.env.${key}`, `a string under ${MAX_ENV_VALUE} characters without NUL`);
      if (SECRET_ENV_VALUE.test(value)) throw invalid(`profile.env.${key}`, 'a value that is not a credential');
      env.set(key, value);
    }
  }
  let readOnlyFd: { fd: number; path: string } | undefined;
  if (profile.readOnlyFd !== undefined) {
    assertObject(profile.readOnlyFd, 'profile.readOnlyFd');
    const { fd, path } = profile.readOnlyFd;
    if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 3 || fd > 1023)
      throw invalid('profile.readOnlyFd.fd', 'an inherited descriptor from 3 to 1023');
    assertPath(path, 'profile.readOnlyFd.path');
    if (seen.has(flavour === 'windows' ? path.toLowerCase() : path))
      throw invalid('profile.readOnlyFd.path', 'named once');
    readOnlyFd = { fd, path };
  }
  const gpu = profile.gpu === undefined ? undefined : checkGpuPassthrough(profile.gpu);
  return {
    readOnlyPaths: [...profile.readOnlyPaths],
    writablePaths: [...profile.writablePaths],
    env: [...env.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    ...(readOnlyFd === undefined ? {} : { readOnlyFd }),
    ...(gpu === undefined ? {} : { gpu }),
  };
}

/** Depth of a path (number of segments), for mounting parents before children. */
export function pathDepth(path: string): number {
  return path.split(/[\\/]/).filter((segment) => segment.length > 0).length;
}

/** True when `path` is `root` or lies inside it (POSIX). */
export function isInside(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith('/') ? root : `${root}/`);
}

/** Inputs of {@link runtimeSandboxProfile}: the runtime's own files, all absolute. */
export interface RuntimeSandboxInputs {
  /** `process.execPath` (its folder stays hidden unless under a system folder). */
  readonly nodeBinary: string;
  /** The compiled runtime code, e.g. `<repo>/dist/src`. */
  readonly codeDir: string;
  /** `<repo>/package.json`: Node reads its `"type": "module"` to load `dist/**.js` as ESM. */
  readonly packageJson: string;
  /** `<repo>/node_modules` (node-llama-cpp and its prebuilt binaries). */
  readonly nodeModulesDir: string;
  /** The model's inherited descriptor and where the sandbox shows it read-only. */
  readonly model: { readonly fd: number; readonly path: string };
  /** Extra allowed environment (see {@link SandboxProfile.env}). */
  readonly env?: Readonly<Record<string, string>>;
  /** `gpu auto`: the devices and driver files to show (see {@link SandboxProfile.gpu}); absent for `gpu off`. */
  readonly gpu?: GpuPassthrough;
}

/**
 * The profile of the bundled runtime: read-only node binary, code, package.json and node_modules; the
 * model as a read-only view of its descriptor; nothing writable but the sandbox's own `/tmp`; no
 * network. The runtime's listening socket arrives as a descriptor: its folder is not shown at all.
 * Throws like {@link checkProfile}.
 */
export function runtimeSandboxProfile(inputs: RuntimeSandboxInputs): SandboxProfile {
  assertObject(inputs, 'inputs');
  for (const field of ['nodeBinary', 'codeDir', 'packageJson', 'nodeModulesDir'] as const) {
    assertSandboxPath(inputs[field], `inputs.${field}`);
  }
  assertObject(inputs.model, 'inputs.model');
  assertSandboxPath(inputs.model.path, 'inputs.model.path');
  return {
    readOnlyPaths: [inputs.nodeBinary, inputs.codeDir, inputs.packageJson, inputs.nodeModulesDir],
    writablePaths: [],
    allowNetwork: false,
    readOnlyFd: { fd: inputs.model.fd, path: inputs.model.path },
    ...(inputs.env === undefined ? {} : { env: inputs.env }),
    ...(inputs.gpu === undefined ? {} : { gpu: inputs.gpu }),
  };
}
