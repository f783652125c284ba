/**
 * `companion status`: sign-in, model, runtime, availability and resources. Never a token. The health
 * check, the one request that carries the token, goes only to an endpoint that passed the identity check
 * and the attestation (P-k).
 */
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { modelFileName, readInstalled, type InstalledModel } from '../runtime/manager/install.js';
import { companionAvailableAt, readPublishedState, verifyEndpoint } from '../shell/discovery.js';
import { readDiscovery } from '../runtime/manager/discovery.js';
import { CompanionError, ERROR_CODES, type ErrorCode } from '../core/errors.js';
import { HUB_OPTIONS } from './args.js';
import { defineCommand } from './command.js';
import { authorityFor, withContext, type CommandContext } from './context.js';
import { localTime, unavailability, type AvailabilityFacts, type Unavailability } from './availability.js';
import type { Io } from './io.js';

/** What `status` found, reduced to what decides a fault. */
export interface StatusFacts {
  /** 'available', or the keychain's error code (only with a hub configured). */
  readonly keychain: string;
  /** A model is installed but no longer matches what was verified. */
  readonly modelChanged: boolean;
  /** A live `up` was asked to attest and did not answer, or failed: its code; else null. */
  readonly runtimeCheck: string | null;
  /** The published runtime state is `failed` (it gave up restarting). */
  readonly runtimeFailed: boolean;
}

/**
 * The first fault among `facts`, or null (docs/decisions.md, "status exit status"). Not signed in, no
 * model and not running are states the user acts on, not faults.
 */
export function statusFault(facts: StatusFacts): { code: ErrorCode; message: string } | null {
  if (facts.keychain !== 'available') {
    const code = facts.keychain in ERROR_CODES ? (facts.keychain as ErrorCode) : 'ERR_KEYCHAIN_FAILURE';
    return {
      code,
      message: `the keychain is not usable (${code === 'ERR_KEYCHAIN_LOCKED' ? 'locked: unlock it' : 'run companion doctor'})`,
    };
  }
  if (facts.modelChanged)
    return {
      code: 'ERR_MODEL_CHANGED',
      message: 'the installed model changed since it was verified; run companion pull',
    };
  if (facts.runtimeCheck === 'ERR_ENDPOINT_UNVERIFIED')
    return {
      code: 'ERR_ENDPOINT_UNVERIFIED',
      message: 'the recorded endpoint failed the attestation; restart companion up',
    };
  if (facts.runtimeCheck !== null)
    return { code: 'ERR_UPSTREAM_UNAVAILABLE', message: 'companion up is running but its endpoint does not answer' };
  if (facts.runtimeFailed)
    return {
      code: 'ERR_UPSTREAM_UNAVAILABLE',
      message: 'the runtime failed and stopped restarting; restart companion up',
    };
  return null;
}

/**
 * The installed model against its record, from metadata only: `status` never hashes the model and never
 * rewrites installed.json. `changed`: no file, not a plain file (a link) or another size; `unconfirmed`:
 * same size, other identity (inode, device, times), so only a hash could tell (`companion up` and
 * `companion pull` do it); `verified`: the very file that was verified.
 */
export async function quickModelCheck(
  modelsDir: string,
  installed: InstalledModel,
): Promise<'verified' | 'changed' | 'unconfirmed'> {
  let info;
  try {
    info = await lstat(join(modelsDir, modelFileName(installed.id)), { bigint: true });
  } catch {
    return 'changed';
  }
  if (!info.isFile() || Number(info.size) !== installed.size) return 'changed';
  const same =
    String(info.ino) === installed.inode &&
    String(info.dev) === installed.dev &&
    String(info.mtimeNs) === installed.mtimeNs &&
    String(info.ctimeNs) === installed.ctimeNs;
  return same ? 'verified' : 'unconfirmed';
}

/** The sign-in as the keychain tells it (with a hub configured), and the loopback token for the checks. */
interface SignIn {
  readonly signedIn: boolean;
  readonly user: string | null;
  readonly expiresAt: string | null;
  readonly expiresAtMs: number | null;
  /** 'available', the keychain's error code, or 'unknown' without a hub. */
  readonly keychain: string;
  readonly token: string | null;
}

/** Reads the sign-in state and the loopback token; a keychain failure is a fact, not an error. */
async function readSignIn(context: CommandContext, io: Io): Promise<SignIn> {
  const none = { signedIn: false, user: null, expiresAt: null, expiresAtMs: null, token: null };
  if (context.config.hub === null) return { ...none, keychain: 'unknown' };
  const authority = authorityFor(context, io);
  try {
    const state = await authority.state();
    return {
      signedIn: state.signedIn,
      user: state.subject ?? null,
      expiresAtMs: state.expiresAt,
      expiresAt: state.expiresAt === null ? null : new Date(state.expiresAt).toISOString(),
      keychain: 'available',
      token: (await authority.loopbackToken())?.reveal() ?? null,
    };
  } catch (error) {
    return { ...none, keychain: (error as { code?: string }).code ?? 'ERR_KEYCHAIN_FAILURE' };
  }
}

/** Everything `status` found: the sign-in, the model, the running `up` and whether it is available. */
async function gatherStatus(context: CommandContext, io: Io) {
  const signIn = await readSignIn(context, io);
  const { signedIn, keychain, token } = signIn;
  const installed = await readInstalled(context.paths.models);
  const modelState = installed === null ? null : await quickModelCheck(context.paths.models, installed);
  // Identity first (a stale record is "not running"), then the attestation before the token is used.
  const discovery = await readDiscovery(context.paths.discovery);
  const published = discovery === null ? null : await readPublishedState(context.paths.state, discovery.pid);
  const check = discovery !== null && token !== null ? await verifyEndpoint(discovery, token) : null;
  // The one availability decision, the supervisor's, as the front door's /health answers it.
  const companionAvailable =
    check?.ok === true && token !== null ? await companionAvailableAt(check.endpoint, token) : false;
  const endpointError = check !== null && !check.ok && check.code === 'ERR_ENDPOINT_UNVERIFIED' ? check.code : null;
  const facts: AvailabilityFacts = {
    hubConfigured: context.config.hub !== null,
    keychain,
    signedIn,
    model: modelState === null ? 'none' : modelState === 'changed' ? 'changed' : 'verified',
    upRunning: discovery !== null,
    endpoint:
      check === null
        ? 'no-token'
        : check.ok
          ? 'verified'
          : check.code === 'ERR_ENDPOINT_UNVERIFIED'
            ? 'unverified'
            : 'no-answer',
    runtimeState: published?.runtime?.state ?? null,
  };
  const unavailable: Unavailability | null = companionAvailable ? null : unavailability(facts);
  return { signIn, installed, modelState, discovery, published, check, endpointError, companionAvailable, unavailable };
}

type Gathered = Awaited<ReturnType<typeof gatherStatus>>;

/** A field of the published state that only means something while a runtime runs, or null. */
function whileRunning<T>(published: Gathered['published'], value: unknown, type: 'string' | 'number'): T | null {
  return typeof value === type && published?.runtime !== null ? (value as T) : null;
}

/** The report `status --json` prints (CONTRACT §6), and the human lines are made from. */
function statusReport(context: CommandContext, found: Gathered) {
  const { signIn, installed, modelState, discovery, published, endpointError } = found;
  const upSince = discovery === null ? null : discovery.startedAt;
  const gpuFallback = whileRunning<string>(published, published?.gpuFallback, 'string');
  return {
    signedIn: signIn.signedIn,
    user: signIn.user,
    expiresAt: signIn.expiresAt,
    keychain: signIn.keychain,
    model: installed === null ? null : { id: installed.id, verified: modelState === 'verified' },
    runtime: published?.runtime ?? null,
    companionAvailable: found.companionAvailable,
    resources: published?.resources ?? null,
    // Without a token only the identity check vouches for the URL; with one, the attestation must too.
    endpoint: discovery === null || endpointError !== null ? null : discovery.url,
    sandbox: published?.sandbox ?? null,
    // What the runtime computes on and the layers it offloaded (its ready line, via the published state).
    backend: whileRunning<string>(published, published?.backend, 'string'),
    gpuLayers: whileRunning<number>(published, published?.gpuLayers, 'number'),
    ...(gpuFallback !== null ? { gpuFallback } : {}),
    ...(endpointError !== null ? { endpointError } : {}),
    // Beside `model`, not in it: `model` keeps its CONTRACT §6 shape {"id","verified"}.
    modelCheck: modelState,
    // The model the running `up` serves (`up --model` may pick another than the active one), or null.
    servedModel: typeof published?.model?.id === 'string' ? published.model.id : null,
    // The runtime's shape: sequences served at once and the context of each (tokens), or null.
    parallel: whileRunning<number>(published, published?.parallel, 'number'),
    contextSize: whileRunning<number>(published, published?.contextSize, 'number'),
    hub: context.config.hub,
    dataDir: context.config.dataDir,
    upSince: upSince === null ? null : new Date(upSince).toISOString(),
    expiresAtLocal: signIn.expiresAtMs === null ? null : localTime(signIn.expiresAtMs),
    upSinceLocal: upSince === null ? null : localTime(upSince),
    unavailable: found.unavailable,
  };
}

type StatusReport = ReturnType<typeof statusReport>;

/** The human lines of sign-in, hub, data dir and model. */
function printSetup(context: CommandContext, io: Io, report: StatusReport, found: Gathered): void {
  const { signedIn, user, keychain } = report;
  io.out(
    `Signed in:  ${signedIn ? `yes${user ? ` as ${user}` : ''}${report.expiresAtLocal ? ` (access until ${report.expiresAtLocal})` : ''}` : `no${keychain !== 'available' && context.config.hub !== null ? ` (keychain: ${keychain})` : ''}`}`,
  );
  io.out(`Hub:        ${report.hub ?? 'none (pass --hub URL or set COMPANION_HUB)'}`);
  io.out(`Data dir:   ${report.dataDir}`);
  const modelLine =
    found.modelState === 'verified'
      ? 'verified'
      : found.modelState === 'changed'
        ? 'CHANGED since verification: pull again'
        : 'file touched since verification: companion up re-checks it';
  io.out(
    `Model:      ${found.installed === null ? 'none (run companion pull)' : `${found.installed.id} (${modelLine})`}`,
  );
}

/** The human lines of the runtime, its resources, availability and endpoint. */
function printRuntime(io: Io, report: StatusReport): void {
  io.out(
    `Runtime:    ${report.runtime === null ? 'not running (run companion up)' : `${report.runtime.state}, ${report.servedModel === null ? '' : `serving ${report.servedModel}, `}pid ${report.runtime.pid ?? '-'}, sandbox ${report.sandbox ?? '-'}`}`,
  );
  if (report.parallel !== null && report.contextSize !== null)
    io.out(
      `Serves:     ${report.parallel} request${report.parallel === 1 ? '' : 's'} at once, ${report.contextSize} tokens of context each`,
    );
  if (report.backend !== null)
    io.out(
      `Backend:    ${report.backend} (${report.gpuLayers ?? 0} layers offloaded)${report.gpuFallback === undefined ? '' : `; ${report.gpuFallback}`}`,
    );
  if (report.upSinceLocal !== null) io.out(`Up since:   ${report.upSinceLocal}`);
  const r = report.resources as { rssBytes?: number; cpuPercent?: number | null; vram?: unknown } | null;
  if (r !== null)
    io.out(
      `Resources:  RSS ${((r.rssBytes ?? 0) / (1 << 20)).toFixed(0)} MiB, CPU ${r.cpuPercent ?? '-'}%, VRAM ${r.vram === null || r.vram === undefined ? 'n/a' : JSON.stringify(r.vram)}`,
    );
  io.out(`Available:  ${report.companionAvailable ? 'yes' : `no (${report.unavailable?.message ?? 'unknown'})`}`);
  const endpointError = report.endpointError ?? null;
  io.out(
    `Endpoint:   ${report.endpoint ?? (endpointError !== null ? `- (the recorded endpoint failed the attestation: ${endpointError}; restart companion up)` : '-')}`,
  );
}

/**
 * `status` with the context open: gather, report, then the exit status.
 * @throws the fault {@link statusFault} finds (its code: ERR_KEYCHAIN_*, ERR_MODEL_CHANGED, ERR_ENDPOINT_UNVERIFIED,
 * ERR_UPSTREAM_UNAVAILABLE), after the report is printed
 */
async function status(context: CommandContext, io: Io): Promise<number> {
  const found = await gatherStatus(context, io);
  const report = statusReport(context, found);
  if (context.json) {
    context.emit(report);
  } else {
    printSetup(context, io, report, found);
    printRuntime(io, report);
  }
  const fault = statusFault({
    keychain: context.config.hub === null ? 'available' : found.signIn.keychain,
    modelChanged: found.modelState === 'changed',
    runtimeCheck: found.check === null || found.check.ok ? null : found.check.code,
    runtimeFailed: report.runtime?.state === 'failed',
  });
  if (fault !== null) throw new CompanionError(fault.code, fault.message);
  return 0;
}

export const statusCommand = defineCommand({
  name: 'status',
  summary: 'show sign-in, model, runtime and availability (never a token)',
  about: [
    'Usage: companion status [--json]',
    '',
    'Shows who is signed in and until when, the hub and the data dir, the installed model and whether it',
    "still matches what was verified (without hashing it again), the runtime's state, pid, start time,",
    'backend (cpu, cuda, vulkan or metal, and the layers offloaded to the GPU) and resources (RSS, CPU,',
    'VRAM), and whether the companion is available now (checked with a health round trip through the',
    'endpoint); when it is not, why and what to do. Times are shown in local time.',
    'With --json: {"signedIn", "model": {"id","verified"}|null, "runtime": {"state","pid"}|null,',
    '"companionAvailable", "resources": {...}|null, "endpoint": URL|null, "hub": URL|null, "dataDir": PATH,',
    '"modelCheck": "verified"|"changed"|"unconfirmed"|null (metadata only: status never hashes the model),',
    '"servedModel": ID|null (the model the running up serves), "parallel": N|null, "contextSize": N|null, "backend": "cpu"|"cuda"|"vulkan"|"metal"|null',
    'and "gpuLayers": N|null (what the runtime computes on and the layers it offloaded to the GPU),',
    '"upSince": ISO|null, "unavailable": {"reason","code","message"}|null, ...}; times are ISO 8601 UTC,',
    'with "expiresAtLocal" and "upSinceLocal" as shown. When the recorded endpoint fails the attestation,',
    '"endpoint" is null and "endpointError" is "ERR_ENDPOINT_UNVERIFIED".',
    '',
    'Exit status 1 when what it shows is a fault: the keychain is locked or unavailable (with a hub',
    'configured), the installed model no longer matches what was verified, or a running companion does',
    'not answer (or fails the attestation, or its runtime failed). Not signed in, no model and not running',
    'are states, not faults: exit 0. With --json the report is followed by {"error":{"code","message"}}.',
  ],
  options: HUB_OPTIONS,
  run: (parsed, io) => withContext(parsed, io, (context) => status(context, io)),
});
