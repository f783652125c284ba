/**
 * Linux, bubblewrap (threat P-i): the argv that runs a command in a new, empty view of the system.
 *
 * - Namespaces: `--unshare-all` (user, ipc, pid, net, uts, cgroup) plus `--unshare-user --disable-userns`
 *   where bubblewrap ≥ 0.8 supports it (the runtime cannot make nested user namespaces, a common kernel
 *   attack surface). The new network namespace has only `lo`: no connection can leave.
 * - `--die-with-parent`: the sandbox never outlives its parent. `--cap-drop ALL`; bubblewrap always sets
 *   PR_SET_NO_NEW_PRIVS.
 * - The model: `--ro-bind-fd 3 <path>` (a read-only view of the descriptor the parent opened; bubblewrap
 *   closes the descriptor itself). The listening socket arrives as descriptor 4; its folder is not shown.
 * - Files: read-only `/usr` and the merged-/usr symlinks (or read-only binds where the host has real
 *   folders), `/etc/ld.so.cache` and `/etc/localtime` only from `/etc`, the CPU topology under
 *   `/sys/devices/system/cpu` (thread counts), a fresh `/proc` of the new pid namespace, a minimal `/dev`,
 *   a private tmpfs `/tmp`; then exactly the profile's paths, parents before children; then the root is
 *   made read-only. With `gpu auto` (a profile's `gpu`), the GPU device nodes that exist are added with
 *   `--dev-bind` and their driver files read-only where `/usr` does not already show them (sandbox-gpu.ts).
 *   No HOME, no data dir, no `/run` (no D-Bus, no XDG_RUNTIME_DIR, no keychain socket).
 * - `--clearenv` then `--setenv` for the checked environment only; `--chdir /`.
 * - No `--new-session` by default: the spawn adapter spawns detached (setsid, so no controlling terminal
 *   and no TIOCSTI), and keeping the sandbox in the adapter's process group lets the group kill and the
 *   resource probe (which follows the group) reach every sandboxed process.
 *
 * Pure: the host's layout comes in as a value ({@link readLinuxSystemLayout} reads it).
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { isInside, pathDepth, type CheckedProfile, type SandboxCommandLine } from './sandbox-profile.js';

/** The system part of the view, read from the host once. */
export interface LinuxSystemLayout {
  /** Folders or files bound read-only when present (`--ro-bind-try`). */
  readonly readOnly: readonly string[];
  /** Top-level symlinks recreated as they are on the host (merged /usr: `/lib -> usr/lib`). */
  readonly symlinks: ReadonlyArray<{ readonly path: string; readonly target: string }>;
}

/** What the dynamic loader and Node need from outside `/usr`; nothing else of `/etc` or `/sys`. */
const OPTIONAL_SYSTEM_FILES = ['/etc/ld.so.cache', '/etc/localtime', '/sys/devices/system/cpu'];
const TOP_LEVEL_LIBS = ['/bin', '/lib', '/lib32', '/lib64', '/libx32'];

/**
 * Reads the host's layout: `/usr` read-only, each of `/bin`, `/lib*` as the symlink it is (when it points
 * into `/usr`) or as a read-only bind, and the optional files above.
 */
export function readLinuxSystemLayout(
  io: {
    lstat?: (path: string) => { isSymbolicLink(): boolean; isDirectory(): boolean } | null;
    readlink?: (path: string) => string;
  } = {},
): LinuxSystemLayout {
  const lstat =
    io.lstat ??
    ((path: string) => {
      try {
        return lstatSync(path);
      } catch {
        return null;
      }
    });
  const readlink = io.readlink ?? ((path: string) => readlinkSync(path));
  const readOnly: string[] = ['/usr'];
  const symlinks: { path: string; target: string }[] = [];
  for (const path of TOP_LEVEL_LIBS) {
    const stat = lstat(path);
    if (stat === null) continue;
    if (stat.isSymbolicLink()) {
      const target = readlink(path);
      // Only a link into /usr is recreated; anything else is bound as the folder it resolves to.
      if (/^(?:\/?usr\/)[A-Za-z0-9_./-]+$/.test(target) && !target.split('/').includes('..'))
        symlinks.push({ path, target });
      else readOnly.push(path);
    } else if (stat.isDirectory()) {
      readOnly.push(path);
    }
  }
  readOnly.push(...OPTIONAL_SYSTEM_FILES);
  return { readOnly, symlinks };
}

/** Options of {@link bwrapArgs} that depend on the installed bubblewrap or on how the caller spawns. */
export interface BwrapOptions {
  /** bubblewrap ≥ 0.8: add `--unshare-user --disable-userns`. */
  readonly disableUserns: boolean;
  /** Add `--new-session` (setsid). Only for a caller that does not spawn detached (see above). */
  readonly newSession: boolean;
}

/** Sorts mount targets so that a parent is mounted before anything inside it. */
function parentsFirst<T extends { readonly path: string }>(items: readonly T[]): T[] {
  return [...items].sort(
    (a, b) => pathDepth(a.path) - pathDepth(b.path) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0),
  );
}

/** The bubblewrap argv (without the bwrap binary itself) for a checked profile. */
export function bwrapArgs(
  command: SandboxCommandLine,
  profile: CheckedProfile,
  layout: LinuxSystemLayout,
  options: BwrapOptions,
): string[] {
  const args: string[] = ['--unshare-all'];
  if (options.disableUserns) args.push('--unshare-user', '--disable-userns');
  args.push('--die-with-parent');
  if (options.newSession) args.push('--new-session');
  args.push('--cap-drop', 'ALL', '--hostname', 'companion-runtime', '--clearenv');
  for (const [key, value] of profile.env) args.push('--setenv', key, value);

  const systemRoots = layout.readOnly.filter((path) => path === '/usr');
  for (const path of layout.readOnly) args.push(path === '/usr' ? '--ro-bind' : '--ro-bind-try', path, path);
  for (const link of layout.symlinks) args.push('--symlink', link.target, link.path);
  args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
  if (profile.gpu !== undefined) {
    // Why --dev-bind: a device node on a plain bind is unusable (nodev); only the checked GPU nodes get it.
    for (const device of profile.gpu.devices) args.push('--dev-bind', device, device);
    const visible = [...layout.readOnly, ...layout.symlinks.map((link) => link.path)];
    for (const library of profile.gpu.libraries) {
      if (!visible.some((root) => isInside(library, root))) args.push('--ro-bind', library, library);
    }
  }

  const mounts = parentsFirst([
    // A read-only path already visible through /usr needs no mount of its own.
    ...profile.readOnlyPaths
      .filter((path) => !systemRoots.some((root) => isInside(path, root)))
      .map((path) => ({ path, writable: false })),
    ...profile.writablePaths.map((path) => ({ path, writable: true })),
  ]);
  for (const mount of mounts) args.push(mount.writable ? '--bind' : '--ro-bind', mount.path, mount.path);
  // Why: a read-only mount of the descriptor, not the descriptor itself: bubblewrap closes it, and the
  // mount refuses a reopen for writing and a chmod (EROFS), which an inherited fd would allow.
  if (profile.readOnlyFd !== undefined)
    args.push('--ro-bind-fd', String(profile.readOnlyFd.fd), profile.readOnlyFd.path);
  // Why: without this the sandbox could create files in its (in-memory) root; /tmp and the binds stay as set.
  args.push('--remount-ro', '/', '--chdir', '/', '--', command.file, ...command.args);
  return args;
}
