/**
 * `companion doctor [--json] [--keychain memory]`: reports the keychain backend and its state, the
 * runtime sandbox mode, the GPU (devices the sandbox would pass, the backend node-llama-cpp picks with
 * `gpu auto`), Node and the platform (CONTRACT §6). It only calls the keychain's health check,
 * which reads the store's lock state and never reads, writes or deletes an item (docs/keychain.md).
 *
 * Exit 0 when the keychain is available, 1 otherwise with one line on stderr saying what to do.
 */
import { openKeychain, type KeychainHealth, type OpenKeychainOptions, type OsKeychain } from '../authority/keychain.js';
import { isCompanionError } from '../core/errors.js';
import { defineCommand, type Command } from './command.js';
import { SHARED_OPTIONS, type Parsed } from './args.js';
import { CliUsageError, type Io } from './io.js';
import { detectSandboxMode } from './sandbox-mode.js';
import { detectGpu, type GpuReport } from '../runtime/gpu-detect.js';

/** The service name doctor opens the keychain with. The health check never touches items under it. */
const DOCTOR_SERVICE = 'companion:doctor';
/** Doctor answers quickly: a store that takes longer than this is reported as not answering. */
const DOCTOR_TIMEOUT_MS = 5_000;

export interface DoctorReport {
  readonly keychain: { readonly backend: string; readonly state: KeychainHealth['state']; readonly detail?: string };
  readonly sandbox: string;
  readonly gpu: GpuReport;
  readonly node: string;
  readonly platform: string;
}

export interface DoctorDeps {
  readonly openKeychain: (options: OpenKeychainOptions) => OsKeychain;
  readonly detectSandboxMode: () => Promise<string>;
  readonly detectGpu: () => Promise<GpuReport>;
  readonly platform: NodeJS.Platform;
  readonly arch: string;
  readonly nodeVersion: string;
}

const USAGE = '[--json] [--keychain memory]';
const ABOUT = [
  `Usage: companion doctor ${USAGE}`,
  '',
  'Report the keychain backend and its state (available, locked, unavailable), the runtime sandbox,',
  'the GPU (the device nodes the sandbox would pass, and the backend node-llama-cpp picks with',
  '--gpu auto: cpu, cuda, vulkan or metal; no model is loaded), Node and the platform, without reading',
  'or changing any stored secret.',
  'Exit status 0 when the keychain is available, 1 otherwise.',
];
/** Doctor reads no configuration: the keychain's health does not depend on the hub or the data dir. */
const OPTIONS = {
  json: {
    type: 'boolean',
    help: [
      'one JSON object on stdout:',
      '{"keychain": {"backend", "state", "detail"?}, "sandbox",',
      ' "gpu": {"devices": [PATH...], "backend", "detail"?}, "node", "platform"}',
    ],
  },
  keychain: {
    ...SHARED_OPTIONS.keychain,
    help: 'check the explicit in-memory keychain instead (demo and tests only; announced)',
  },
  debug: SHARED_OPTIONS.debug,
} as const;

/** The keychain backend `--keychain` names. @throws CliUsageError for another value */
function backendOf(parsed: Parsed): 'os' | 'memory' {
  const value = parsed.values.keychain;
  if (value === undefined || value === 'os') return 'os';
  if (value === 'memory') return 'memory';
  throw new CliUsageError("--keychain takes 'memory' (or 'os', the default)");
}

/** Collects the report. Never throws for a missing or locked keychain: that is what it reports. */
export async function doctorReport(
  backend: 'os' | 'memory',
  deps: DoctorDeps,
  announce: (line: string) => void,
): Promise<DoctorReport> {
  // Why started first: the backend probe loads native binaries in a child (seconds); it runs meanwhile.
  const gpu = deps.detectGpu();
  let keychain: DoctorReport['keychain'];
  try {
    const opened = deps.openKeychain({ backend, service: DOCTOR_SERVICE, timeoutMs: DOCTOR_TIMEOUT_MS, announce });
    const health = await opened.health();
    keychain =
      health.detail === undefined
        ? { backend: health.backend, state: health.state }
        : { backend: health.backend, state: health.state, detail: health.detail };
  } catch (error) {
    if (!isCompanionError(error, 'ERR_KEYCHAIN_UNAVAILABLE')) throw error;
    keychain = {
      backend: 'none',
      state: 'unavailable',
      detail: `no keychain backend for platform ${deps.platform}; companion supports Linux (Secret Service), macOS and Windows`,
    };
  }
  return {
    keychain,
    sandbox: await deps.detectSandboxMode(),
    gpu: await gpu,
    node: deps.nodeVersion,
    platform: `${deps.platform}-${deps.arch}`,
  };
}

const ADVICE: Record<Exclude<KeychainHealth['state'], 'available'>, string> = {
  locked: 'unlock the keychain, then run `companion doctor` again',
  unavailable: 'start or install the OS keychain service, then run `companion doctor` again (docs/keychain.md)',
};

/** The human lines of the report. */
function printReport(io: Io, report: DoctorReport): void {
  const k = report.keychain;
  io.out(
    `keychain  ${k.backend}: ${k.state}${k.detail !== undefined && k.state !== 'available' ? ` (${k.detail})` : ''}`,
  );
  io.out(`sandbox   ${report.sandbox}`);
  const g = report.gpu;
  io.out(
    `gpu       ${g.backend ?? 'unknown'}${g.detail === undefined ? '' : ` (${g.detail})`}; devices: ${g.devices.length === 0 ? 'none' : g.devices.join(' ')}`,
  );
  io.out(`node      ${report.node}`);
  io.out(`platform  ${report.platform}`);
}

/** Runs doctor: the report, then 0, or 1 with one line saying what to do when the keychain is not usable. */
async function doctor(deps: DoctorDeps, parsed: Parsed, io: Io): Promise<number> {
  const json = parsed.values.json === true;
  const report = await doctorReport(backendOf(parsed), deps, (line) => io.err(line));
  if (json) io.out(JSON.stringify(report));
  else printReport(io, report);
  if (report.keychain.state === 'available') return 0;
  // One line: the state, and what to do (the backend's own advice when it has one).
  const { backend: name, state, detail } = report.keychain;
  const message = `keychain ${state} (${name}): ${detail ?? ADVICE[state]}`;
  io.err(`companion doctor: ${message}`);
  // With --json a failure ends with the one error object, as every command's (src/cli/main.ts).
  if (json)
    io.out(
      JSON.stringify({
        error: { code: state === 'locked' ? 'ERR_KEYCHAIN_LOCKED' : 'ERR_KEYCHAIN_UNAVAILABLE', message },
      }),
    );
  return 1;
}

/** Builds the command; tests inject the keychain and the platform. */
export function createDoctorCommand(overrides: Partial<DoctorDeps> = {}): Command {
  const deps: DoctorDeps = {
    openKeychain,
    detectSandboxMode,
    detectGpu: () => detectGpu(),
    platform: process.platform,
    arch: process.arch,
    nodeVersion: process.version,
    ...overrides,
  };
  return defineCommand({
    name: 'doctor',
    summary: 'report keychain and sandbox state without touching secrets',
    about: ABOUT,
    options: OPTIONS,
    run: (parsed, io) => doctor(deps, parsed, io),
  });
}

export const doctorCommand: Command = createDoctorCommand();
