/**
 * Inherited descriptors (threat P-i; issue 16 item 1). A child process inherits every descriptor of its
 * parent that lacks close-on-exec. Node and libuv open everything of their own with `O_CLOEXEC`, and
 * libuv marks fds 0–15 close-on-exec at start-up; a descriptor above that which the companion inherited
 * from its own launcher (a shell's `exec 200<dir`, a harness's pipe at fd 251) has no close-on-exec and
 * would reach every child — bubblewrap and the sandboxed runtime included. An open directory there is a
 * full filesystem escape (`/proc/self/fd/N/..`).
 *
 * Node cannot exec, so a launcher that closes descriptors between fork and exec would have to be a
 * native binary. Instead {@link closeInheritedDescriptors} sweeps the companion's own table: every
 * descriptor ≥ 3 without `O_CLOEXEC` (read from `/proc/self/fdinfo/N`) is not Node's and is closed. After
 * that sweep a child receives exactly what its `stdio` array names, by construction.
 *
 * Linux only (it needs /proc); elsewhere it returns `{ supported: false }` and closes nothing.
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';

/** `O_CLOEXEC` as /proc/self/fdinfo prints it (octal 02000000 on every Linux architecture Node runs on). */
const FDINFO_CLOEXEC = 0o2000000;

/** What one sweep found. */
export interface DescriptorSweep {
  /** False when /proc is not there (not Linux): nothing was checked. */
  readonly supported: boolean;
  /** The descriptors that were closed (inherited without close-on-exec). */
  readonly closed: readonly number[];
}

/** The `flags:` field of /proc/self/fdinfo/N, or null when the descriptor is gone or unreadable. */
function fdFlags(fd: number): number | null {
  try {
    const match = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    return match === null ? null : parseInt(match[1]!, 8);
  } catch {
    return null;
  }
}

/**
 * Closes every descriptor ≥ 3 of this process that lacks close-on-exec, except those in `keep`. Call it
 * synchronously right before a spawn whose child must receive nothing but its stdio array.
 * Never throws.
 */
export function closeInheritedDescriptors(keep: ReadonlySet<number> = new Set()): DescriptorSweep {
  if (process.platform !== 'linux') return { supported: false, closed: [] };
  let names: string[];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return { supported: false, closed: [] };
  }
  const closed: number[] = [];
  for (const name of names) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd < 3 || keep.has(fd)) continue;
    const flags = fdFlags(fd);
    // Gone already (the readdir handle itself), or ours: Node opens everything with O_CLOEXEC.
    if (flags === null || (flags & FDINFO_CLOEXEC) !== 0) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {
      // Closed meanwhile.
    }
  }
  return { supported: true, closed };
}
