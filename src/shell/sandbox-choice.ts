/**
 * Chooses the runtime's sandbox for a start (issue 10): a full sandbox when the platform can make one,
 * else refuse, unless the user explicitly allowed an unsandboxed start (announced on stderr; `status`
 * and `doctor` say so). Returns the spawn adapter's `wrap` hook.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertSandboxOrExplicitOptOut, detectSandbox, isFullSandbox, runtimeSandboxProfile, sandboxCommand } from '../runtime/sandbox.js';
import type { SpawnWrap } from '../runtime/spawn.js';
import type { SandboxChoice } from './config.js';

export interface SandboxResolution {
  /** The mode name for status/doctor: `bubblewrap`, `sandbox-exec`, …, or `none`. */
  readonly mode: string;
  readonly wrap?: SpawnWrap;
}

/** The package root: the folder holding dist/, node_modules/ and package.json. */
function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export async function resolveSandbox(choice: SandboxChoice, warn: (line: string) => void): Promise<SandboxResolution> {
  const support = await detectSandbox();
  assertSandboxOrExplicitOptOut(support, choice === 'off');
  if (!isFullSandbox(support.mode)) {
    warn('companion: WARNING: the runtime starts WITHOUT a sandbox (--allow-unsandboxed): a malicious model could reach your files and the network');
    return { mode: 'none' };
  }
  const root = packageRoot();
  const wrap: SpawnWrap = (command, context) => {
    const profile = runtimeSandboxProfile({
      nodeBinary: process.execPath,
      codeDir: join(root, 'dist', 'src'),
      packageJson: join(root, 'package.json'),
      nodeModulesDir: join(root, 'node_modules'),
      // A model handed over as a descriptor is not shown in the sandbox at all.
      ...(context.modelByDescriptor ? {} : { modelPath: context.modelPath }),
      socketDir: context.runDir,
    });
    return sandboxCommand({ file: command.file, args: [...command.args] }, profile, support);
  };
  return { mode: support.mode, wrap };
}
