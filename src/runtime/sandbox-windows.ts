/**
 * Windows, AppContainer + job object — a DESIGN, unit-tested on the plan and argv it produces, NOT yet
 * built or run on a real machine (docs/sandbox.md). `detectSandbox` reports `none` on Windows until the
 * launcher exists, so a start there needs the explicit unsandboxed opt-out.
 *
 * The plan, carried out by a small launcher (`companion-sandbox.exe`, to be written in C against the
 * Win32 API, shipped beside Companion):
 * 1. `CreateAppContainerProfile("companion.runtime")` (or `DeriveAppContainerSidFromAppContainerName`
 *    when it exists) — a low-box token: no access to the user's files, registry or objects unless an ACL
 *    grants the container SID.
 * 2. Capabilities: none. Without `internetClient`, `internetClientServer` and
 *    `privateNetworkClientServer` an AppContainer process cannot open a network connection, and loopback
 *    is blocked for AppContainers unless exempted (it is not). The runtime talks over an AF_UNIX socket.
 * 3. For each grant, an inheritable-off ACE for the container SID: read+execute on the read-only paths,
 *    modify on the writable ones (removed again when the runtime exits).
 * 4. A job object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION`
 *    and `JOB_OBJECT_UILIMIT_*` (no clipboard, desktop or global atoms); the launcher holds the only job
 *    handle, so the runtime dies with it — the Windows counterpart of `--die-with-parent`.
 * 5. `CreateProcess` with `PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES`, `CREATE_SUSPENDED`, an explicit
 *    environment block (only the checked keys), `lpCurrentDirectory` = the code folder; assign to the job;
 *    resume; wait; exit with the child's status.
 */
import type { CheckedProfile, SandboxCommandLine } from './sandbox-profile.js';

export const APPCONTAINER_NAME = 'companion.runtime';

/** The environment a Windows runtime gets (no PATH beyond the system folder, no USERPROFILE). */
export const WINDOWS_ENV_DEFAULTS: ReadonlyArray<readonly [string, string]> = [
  ['SystemRoot', 'C:\\Windows'],
  ['PATH', 'C:\\Windows\\System32'],
];

export interface AppContainerPlan {
  readonly containerName: string;
  /** Always empty: no capability SID, so no network (see step 2). */
  readonly capabilities: readonly string[];
  readonly grants: ReadonlyArray<{ readonly path: string; readonly access: 'read-execute' | 'modify' }>;
  readonly job: {
    readonly killOnJobClose: true;
    readonly dieOnUnhandledException: true;
    readonly uiRestrictions: true;
  };
  readonly env: ReadonlyArray<readonly [string, string]>;
  readonly command: SandboxCommandLine;
}

/** The plan for a checked profile (Windows path rules). */
export function buildAppContainerPlan(command: SandboxCommandLine, profile: CheckedProfile): AppContainerPlan {
  return {
    containerName: APPCONTAINER_NAME,
    capabilities: [],
    grants: [
      ...profile.readOnlyPaths.map((path) => ({ path, access: 'read-execute' as const })),
      ...profile.writablePaths.map((path) => ({ path, access: 'modify' as const })),
    ],
    job: { killOnJobClose: true, dieOnUnhandledException: true, uiRestrictions: true },
    env: [...WINDOWS_ENV_DEFAULTS, ...profile.env],
    command: { file: command.file, args: [...command.args] },
  };
}

/** The launcher argv: `--container NAME [--read P]… [--write P]… [--env K=V]… -- file args`. */
export function appContainerLauncherArgs(plan: AppContainerPlan): string[] {
  const args = ['--container', plan.containerName];
  for (const grant of plan.grants) args.push(grant.access === 'modify' ? '--write' : '--read', grant.path);
  for (const [key, value] of plan.env) args.push('--env', `${key}=${value}`);
  args.push('--', plan.command.file, ...plan.command.args);
  return args;
}
