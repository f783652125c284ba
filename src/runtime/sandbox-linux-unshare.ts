/**
 * Linux, the `unshare` fallback (util-linux): a PARTIAL sandbox, used only when bubblewrap cannot run
 * and the user explicitly allowed a start without the full sandbox (docs/sandbox.md).
 *
 * What it gives: a new network namespace (only `lo`: no connection leaves; abstract Unix sockets of the
 * host are out of reach too), a new pid namespace with its own `/proc` (other processes are invisible),
 * new ipc and uts namespaces, no capabilities and no new privileges (`setpriv`), a cleared environment
 * (`env -i`), `--kill-child` (the runtime dies with the `unshare` process).
 *
 * What it does NOT give: any filesystem isolation. The runtime can read and write every file the user
 * can (HOME, the data dir, other models, SSH keys), and connect to every Unix socket by path, including
 * the D-Bus session bus and so the keychain (Secret Service). That is why this mode is not accepted as
 * a sandbox by default.
 *
 * Pure: the argv only.
 */
import type { CheckedProfile, SandboxCommandLine } from './sandbox-profile.js';

/** Paths of the helpers the fallback chains (all from util-linux and coreutils). */
export interface UnshareTools {
  readonly setpriv: string;
  readonly env: string;
}

/**
 * The `unshare` argv (without the unshare binary): `unshare … -- setpriv … -- env -i -C / -- K=V … file args`.
 * `userNamespace` maps the caller to root in a new user namespace (needed when not root); the capabilities
 * that gives inside are dropped again by `setpriv` before the runtime starts.
 */
export function unshareArgs(
  command: SandboxCommandLine,
  profile: CheckedProfile,
  tools: UnshareTools,
  userNamespace: boolean,
): string[] {
  const args = ['--net', '--pid', '--ipc', '--uts', '--fork', '--kill-child', '--mount-proc'];
  if (userNamespace) args.push('--user', '--map-root-user');
  args.push('--', tools.setpriv, '--no-new-privs', '--inh-caps=-all', '--bounding-set=-all', '--');
  args.push(tools.env, '-i', '-C', '/', '--');
  for (const [key, value] of profile.env) args.push(`${key}=${value}`);
  args.push(command.file, ...command.args);
  return args;
}
