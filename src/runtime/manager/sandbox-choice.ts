/**
 * Chooses the runtime's sandbox for a start (issue 10): a full sandbox when the platform can make one,
 * else refuse, unless the user explicitly allowed an unsandboxed start (announced on stderr; `status`
 * and `doctor` say so). Returns the spawn adapter's `wrap` hook.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  assertSandboxOrExplicitOptOut,
  detectSandbox,
  discoverGpuPassthrough,
  isFullSandbox,
  runtimeSandboxProfile,
  sandboxCommand,
  type SandboxSupport,
} from '../sandbox.js';
import { SANDBOX_MODEL_PATH } from '../runtime-profile.js';
import type { SpawnWrap } from '../spawn.js';
/** How `up` picks the runtime's sandbox: `auto` (the strongest found), `required` (fail closed without one), `off`. */
export type SandboxChoice = 'auto' | 'required' | 'off';

export interface SandboxResolution {
  /** The mode name for status/doctor: `bubblewrap`, `sandbox-exec`, …, or `none`. */
  readonly mode: string;
  readonly wrap?: SpawnWrap;
}

/** The package root: the folder holding dist/, node_modules/ and package.json (this file is dist/src/runtime/manager/). */
function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
}

/**
 * The production wrap for a full sandbox: the runtime's profile (node binary, `<root>/dist/src`,
 * `<root>/package.json`, `<root>/node_modules`, read-only; the model as a read-only view of descriptor 3;
 * nothing writable; no network; with `gpu auto`, the GPU devices that exist and their driver files).
 * `root` is the package root; tests pass a stand-in tree.
 */
export function runtimeWrap(support: SandboxSupport, root: string = packageRoot()): SpawnWrap {
  return (command, context) => {
    const profile = runtimeSandboxProfile({
      nodeBinary: process.execPath,
      codeDir: join(root, 'dist', 'src'),
      packageJson: join(root, 'package.json'),
      nodeModulesDir: join(root, 'node_modules'),
      // The model: a read-only view of its descriptor (bubblewrap), never a writable descriptor.
      model: { fd: context.modelFd, path: SANDBOX_MODEL_PATH },
      ...(context.gpu === 'auto' ? { gpu: discoverGpuPassthrough() } : {}),
    });
    return sandboxCommand({ file: command.file, args: [...command.args] }, profile, support);
  };
}

/**
 * The sandbox the runtime starts in: the best this system supports, or none only when `choice` is `off`
 * (`--allow-unsandboxed`), said on `warn` every time.
 * @throws CompanionError ERR_SANDBOX_UNAVAILABLE when no full sandbox is available and `choice` is not `off`.
 */
export async function resolveSandbox(choice: SandboxChoice, warn: (line: string) => void): Promise<SandboxResolution> {
  const support = await detectSandbox();
  assertSandboxOrExplicitOptOut(support, choice === 'off');
  if (!isFullSandbox(support.mode)) {
    warn(
      'companion: WARNING: the runtime starts WITHOUT a sandbox (--allow-unsandboxed): a malicious model could reach your files and the network',
    );
    return { mode: 'none' };
  }
  return { mode: support.mode, wrap: runtimeWrap(support) };
}
