/**
 * macOS, `sandbox-exec` (Seatbelt) — designed and unit-tested on the produced profile and argv, NOT yet
 * run on a real Mac (docs/sandbox.md).
 *
 * The profile denies by default, so it denies every network operation (`network-outbound`,
 * `network-bind` of an IP socket, `network-inbound`), every file read outside the listed paths and the
 * system libraries, and every write outside the writable paths. The only sockets allowed are Unix sockets
 * bound inside a writable path (the runtime's socket folder).
 *
 * Paths are passed as `-D NAME=VALUE` parameters and referenced as `(param "NAME")`: a path is never
 * spliced into the profile text, so no path can inject a rule. Seatbelt matches resolved paths: each
 * path under `/tmp`, `/var` or `/etc` is also allowed under `/private`, where those links point.
 *
 * `sandbox-exec` keeps the caller's environment, so the command runs through `/usr/bin/env -i` with the
 * checked environment; the caller spawns with `cwd: '/'`.
 */
import { isInside, type CheckedProfile, type SandboxCommandLine } from './sandbox-profile.js';

export const MACOS_ENV = '/usr/bin/env';

/** System locations the dynamic loader, libc and Node read (read-only). */
const SYSTEM_READ = [
  '/usr/lib',
  '/usr/share/icu',
  '/System/Library',
  '/System/Volumes/Preboot/Cryptexes',
  '/private/var/db/dyld',
  '/Library/Apple/usr/lib',
];
const DEVICE_READ = ['/dev/null', '/dev/zero', '/dev/random', '/dev/urandom', '/private/etc/localtime'];
const PRIVATE_LINKS = ['/tmp', '/var', '/etc'];

export interface SeatbeltOptions {
  /** Allow Metal (the GPU) for llama.cpp on Apple silicon: two IOKit user clients and the shader compiler service. */
  readonly metal: boolean;
}

/** A profile and the `-D` parameters it references. */
export interface SeatbeltProfile {
  readonly text: string;
  readonly params: ReadonlyArray<readonly [string, string]>;
}

function spellings(path: string): string[] {
  const link = PRIVATE_LINKS.find((root) => isInside(path, root));
  return link === undefined ? [path] : [path, `/private${path}`];
}

/** Builds the Seatbelt profile for a checked profile and the command's binary. */
export function buildSeatbeltProfile(
  command: SandboxCommandLine,
  profile: CheckedProfile,
  options: SeatbeltOptions,
): SeatbeltProfile {
  const params: [string, string][] = [
    ['EXEC', command.file],
    ['ENV', MACOS_ENV],
  ];
  const read: string[] = [];
  const write: string[] = [];
  profile.readOnlyPaths.forEach((path, index) => {
    spellings(path).forEach((spelling, variant) => {
      const name = `RO_${index}_${variant}`;
      params.push([name, spelling]);
      read.push(`(subpath (param "${name}"))`);
    });
  });
  profile.writablePaths.forEach((path, index) => {
    spellings(path).forEach((spelling, variant) => {
      const name = `RW_${index}_${variant}`;
      params.push([name, spelling]);
      write.push(`(subpath (param "${name}"))`);
    });
  });
  const quote = (path: string): string => `"${path}"`;
  const lines = [
    '(version 1)',
    '(deny default)',
    // Why: the runtime must reach no host, not even loopback; deny default already does, this says it.
    '(deny network*)',
    '(allow process-fork)',
    '(allow process-exec (literal (param "ENV")) (literal (param "EXEC")))',
    '(allow signal (target same-sandbox))',
    '(allow process-info* (target same-sandbox))',
    '(allow sysctl-read)',
    // Metadata (stat) only: Node resolves real paths by walking every parent folder.
    '(allow file-read-metadata)',
    `(allow file-read* ${[...SYSTEM_READ.map((path) => `(subpath ${quote(path)})`), ...DEVICE_READ.map((path) => `(literal ${quote(path)})`)].join(' ')})`,
    '(allow file-write-data (literal "/dev/null"))',
  ];
  if (read.length > 0) lines.push(`(allow file-read* ${read.join(' ')})`);
  if (write.length > 0) {
    lines.push(`(allow file-read* file-write* ${write.join(' ')})`);
    lines.push(`(allow network-bind network-inbound (local unix-socket ${write.join(' ')}))`);
  }
  if (options.metal) {
    lines.push(
      '(allow iokit-open (iokit-user-client-class "AGXDeviceUserClient") (iokit-user-client-class "IOSurfaceRootUserClient"))',
    );
    lines.push('(allow mach-lookup (global-name "com.apple.MTLCompilerService"))');
  }
  return { text: `${lines.join('\n')}\n`, params };
}

/** The `sandbox-exec` argv (without the binary): `-p PROFILE -D K=V … /usr/bin/env -i -- K=V … file args`. */
export function sandboxExecArgs(
  command: SandboxCommandLine,
  profile: CheckedProfile,
  options: SeatbeltOptions,
): string[] {
  const seatbelt = buildSeatbeltProfile(command, profile, options);
  const args = ['-p', seatbelt.text];
  for (const [name, value] of seatbelt.params) args.push('-D', `${name}=${value}`);
  args.push(MACOS_ENV, '-i', '--');
  for (const [key, value] of profile.env) args.push(`${key}=${value}`);
  args.push(command.file, ...command.args);
  return args;
}
