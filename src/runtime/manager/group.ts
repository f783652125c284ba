/**
 * The running companion (`companion up`, and the demo): the runtime group (supervisor, runtime child,
 * resource probe, front door) wired together. It receives from the authority group only a token
 * *verifier* and an *attestor* for the front door; nothing here can reach the keychain, a token or
 * custody (D5.8).
 */
import { totalmem } from 'node:os';
import { createAdmission, type Admission } from '../../core/admission.js';
import type { Attestor } from '../../core/attest.js';
import { CompanionError } from '../../core/errors.js';
import type { RestartPolicy } from '../../core/lifecycle.js';
import type { ResourceLimits } from '../../core/resources.js';
import { startFrontDoor, type FrontDoor } from '../front-door.js';
import { reclaimStaleRuntime } from '../stale.js';
import type { SpawnWrap } from '../spawn.js';
import { layout } from '../../common/layout.js';
import {
  claimDiscovery,
  removeDiscovery,
  removeFile,
  writeDiscovery,
  writePublishedState,
  type PublishedState,
} from './discovery.js';
import { createSupervisor, type Supervisor, type SupervisorEvent, type SupervisorOptions } from './supervisor.js';

export interface RuntimeGroupOptions {
  readonly dataDir: string;
  /** The front door's token check (from the shell, built from the loopback token). */
  readonly verifyToken: (candidate: string) => boolean;
  /**
   * The front door's attestation capability (`createAttestor(token)`, from the shell). Without it the door
   * cannot prove itself, and `companion endpoint`/`status`/`run` will not use it (docs/front-door.md).
   */
  readonly attest?: Attestor;
  readonly threads?: number;
  /** Sequences the runtime runs at once (`up --parallel`; default: the runtime's choice from model and memory). */
  readonly parallel?: number;
  /** Tokens per sequence (`up --context`; default: the model's trained context, capped by memory). */
  readonly contextSize?: number;
  /** GPU use for the runtime (default auto). */
  readonly gpu?: 'off' | 'auto';
  /** The installed model to serve (default: the active one). */
  readonly modelId?: string;
  readonly wrap?: SpawnWrap;
  /** The sandbox mode name, for status and doctor (`none` when unsandboxed). */
  readonly sandboxMode: string;
  /** Requests the front door lets run at once (default: the runtime's sequences, learnt when it is ready). */
  readonly maxConcurrent?: number;
  readonly maxQueue?: number;
  readonly healthIntervalMs?: number;
  /**
   * Resource limits (D5.6; default: the runtime's RSS at most 90% of this machine's memory). The model
   * must also fit in the memory available at each start, else ERR_RESOURCE_LIMIT.
   */
  readonly resourceLimits?: ResourceLimits;
  /** Restart backoff and crash-loop cap (default: the lifecycle core's DEFAULT_RESTART_POLICY). */
  readonly restartPolicy?: RestartPolicy;
  readonly onEvent?: (event: GroupEvent) => void;
  readonly onStderr?: (line: string) => void;
  /**
   * The log sink (`openLogFile(dataDir).write`, src/shell/log-file.ts): every event but health samples,
   * and each runtime stderr line. Only values without a secret reach it (no token, model path or digest).
   */
  readonly log?: (source: string, text: string) => void;
}

/** An event of the running group: the supervisor's, and the front door listening. */
type GroupEvent = SupervisorEvent | { event: 'listening'; endpoint: string };

/** One log line for an event of the runtime group (never a secret: states, codes, the endpoint URL). */
export function describeEvent(event: GroupEvent): string | null {
  switch (event.event) {
    case 'listening':
      return `listening at ${event.endpoint}`;
    case 'state':
      return `runtime ${event.state}${event.pid !== null ? ` (pid ${event.pid})` : ''}${event.code !== null ? ` [${event.code}]` : ''}`;
    case 'available':
      return event.available
        ? `available${event.parallel !== undefined ? ` (${event.parallel} parallel sequences of ${event.contextSize} tokens)` : ''}`
        : 'not available (the endpoint answers 503)';
    case 'restart-scheduled':
      return `runtime restart in ${event.inMs} ms`;
    case 'resources':
      return `resources ${event.decision}${event.reasons.length > 0 ? `: ${event.reasons.join(', ')}` : ''}`;
    case 'fault':
      return `supervisor fault [${event.code}]: ${event.message}`;
    case 'health':
      return null;
  }
}

export interface RunningCompanion {
  /** The OpenAI-compatible base URL, `http://127.0.0.1:P/v1`. */
  readonly endpoint: string;
  readonly supervisor: Supervisor;
  readonly door: FrontDoor;
  readonly sandboxMode: string;
  publishState(): Promise<PublishedState>;
  close(): Promise<void>;
}

/** What a running group shares between its steps: closed once, one publish chain, the endpoint once listening. */
interface GroupState {
  closed: boolean;
  published: Promise<unknown>;
  endpoint: string;
}

/** The parts `close` tears down, in order. */
interface GroupParts {
  readonly state: GroupState;
  readonly refresher: NodeJS.Timeout;
  readonly door: FrontDoor;
  readonly supervisor: Supervisor;
  readonly paths: ReturnType<typeof layout>;
}

/** The caller's stderr and event callbacks, each also written to the log sink when there is one. */
function loggedCallbacks(options: RuntimeGroupOptions): {
  onStderr: ((line: string) => void) | undefined;
  onEvent: ((event: GroupEvent) => void) | undefined;
} {
  const log = options.log;
  if (log === undefined) return { onStderr: options.onStderr, onEvent: options.onEvent };
  return {
    onStderr: (line) => {
      log('runtime', line);
      options.onStderr?.(line);
    },
    onEvent: (event) => {
      const text = describeEvent(event);
      if (text !== null) log('up', text);
      options.onEvent?.(event);
    },
  };
}

/** The group's options the supervisor takes as they are. */
const PASSED_ON = [
  'threads',
  'parallel',
  'contextSize',
  'gpu',
  'modelId',
  'wrap',
  'healthIntervalMs',
  'restartPolicy',
] as const satisfies readonly (keyof RuntimeGroupOptions & keyof SupervisorOptions)[];

/** The fields of `source` named in `keys` that are set: an option left out stays absent, not `undefined`. */
function setFields<T extends object, K extends keyof T>(source: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const picked: Partial<Pick<T, K>> = {};
  for (const key of keys) if (source[key] !== undefined) picked[key] = source[key];
  return picked;
}

/** The supervisor's options from the group's (default resource limit: 90% of this machine's memory). */
function supervisorOptions(
  options: RuntimeGroupOptions,
  modelsDir: string,
  onStderr: ((line: string) => void) | undefined,
  onEvent: (event: SupervisorEvent) => void,
): SupervisorOptions {
  return {
    dataDir: options.dataDir,
    modelsDir,
    ...setFields(options, PASSED_ON),
    resourceLimits: options.resourceLimits ?? { maxRssBytes: Math.floor(totalmem() * 0.9) },
    ...(onStderr ? { onStderr } : {}),
    onEvent,
  };
}

/** Follows availability in the front door's admission: ready or not, and as many at once as the runtime runs. */
function admitByAvailability(event: SupervisorEvent, admission: Admission, maxConcurrent: number | undefined): void {
  if (event.event !== 'available') return;
  // Why: the runtime runs that many sequences; more at once would only wait inside it, past the
  // front door's bounded queue and its 429 (issue 17 item 6).
  if (event.available && maxConcurrent === undefined && event.parallel !== undefined)
    admission.setMaxConcurrent(event.parallel);
  admission.setReady(event.available);
}

/** The state `up` publishes for `status`, from the supervisor's snapshot and figures. */
async function publishGroupState(
  group: GroupState,
  supervisor: Supervisor,
  statePath: string,
  sandbox: string,
): Promise<PublishedState> {
  const snap = supervisor.snapshot();
  const figures = await supervisor.resources();
  const state: PublishedState = {
    pid: process.pid,
    updatedAt: Date.now(),
    runtime: snap.state === 'stopped' ? null : { state: snap.state, pid: snap.pid },
    model: snap.model,
    companionAvailable: supervisor.companionAvailable(),
    resources:
      figures === null
        ? null
        : {
            rssBytes: figures.rssBytes,
            cpuPercent: figures.cpuPercent,
            processes: figures.processes,
            vram: figures.vram,
          },
    endpoint: group.endpoint === '' ? null : group.endpoint,
    sandbox,
    parallel: snap.shape?.parallel ?? null,
    contextSize: snap.shape?.contextSize ?? null,
    ...(snap.backend === null
      ? {}
      : {
          backend: snap.backend.backend,
          gpuLayers: snap.backend.gpuLayers,
          ...(snap.backend.fallback === undefined ? {} : { gpuFallback: snap.backend.fallback }),
        }),
  };
  if (!group.closed) await writePublishedState(statePath, state);
  return state;
}

/**
 * The front door in front of the supervisor's address (it answers 503 while that is null).
 * @throws CompanionError ERR_BIND_FAILED when it cannot listen (or the code the front door gave).
 */
async function openFrontDoor(
  options: RuntimeGroupOptions,
  supervisor: Supervisor,
  admission: Admission,
): Promise<FrontDoor> {
  try {
    return await startFrontDoor({
      verifyToken: options.verifyToken,
      ...(options.attest !== undefined ? { attest: options.attest } : {}),
      upstream: () => supervisor.address(),
      admission,
    });
  } catch (error) {
    throw error instanceof CompanionError ? error : new CompanionError('ERR_BIND_FAILED');
  }
}

/** Closes once: front door, runtime, the last publish, then the discovery record and the state file. */
async function closeGroup(parts: GroupParts): Promise<void> {
  if (parts.state.closed) return;
  parts.state.closed = true;
  clearInterval(parts.refresher);
  await parts.door.close();
  await parts.supervisor.stop();
  await parts.state.published.catch(() => undefined);
  await removeDiscovery(parts.paths.discovery);
  await removeFile(parts.paths.state);
}

/**
 * Starts the runtime group: supervisor (model re-check, sandboxed runtime, health), front door,
 * discovery and state files. Resolves once the front door listens and the runtime start was attempted;
 * use `supervisor.waitAvailable()` to wait for availability. A failed start closes everything again.
 * @throws CompanionError ERR_LOCKED_BY_OTHER when another companion runs on this data dir; ERR_BIND_FAILED
 *   when the front door cannot listen; the supervisor's start codes (e.g. ERR_MODEL_CHANGED, ERR_RESOURCE_LIMIT).
 */
export async function startRuntimeGroup(options: RuntimeGroupOptions): Promise<RunningCompanion> {
  const paths = layout(options.dataDir);
  const { onStderr, onEvent } = loggedCallbacks(options);
  // A record left by an unclean exit is removed; another live companion on this data dir stops us (P-k).
  await claimDiscovery(paths.discovery);
  const admission = createAdmission({
    maxConcurrent: options.maxConcurrent ?? options.parallel ?? 4,
    maxQueue: options.maxQueue ?? 32,
    queueTimeoutMs: 30_000,
  });
  const group: GroupState = { closed: false, published: Promise.resolve(), endpoint: '' };
  const publishState = (): Promise<PublishedState> =>
    publishGroupState(group, supervisor, paths.state, options.sandboxMode);
  const refresh = (): void => {
    if (!group.closed) group.published = group.published.then(publishState).catch(() => undefined);
  };
  const supervisor = createSupervisor(
    supervisorOptions(options, paths.models, onStderr, (event) => {
      admitByAvailability(event, admission, options.maxConcurrent);
      onEvent?.(event);
      if (event.event !== 'health') refresh();
    }),
  );
  const door = await openFrontDoor(options, supervisor, admission);
  group.endpoint = `${door.url}/v1`;
  await writeDiscovery(paths.discovery, group.endpoint);
  onEvent?.({ event: 'listening', endpoint: group.endpoint });
  // Refresh the published state (resources, health) for `status`, at most every 2 s.
  const refresher = setInterval(refresh, 2_000);
  refresher.unref();
  const close = (): Promise<void> => closeGroup({ state: group, refresher, door, supervisor, paths });
  try {
    await supervisor.start();
  } catch (error) {
    // The front door stays up (answering 503) only if the caller wants to retry; by default fail closed.
    await close();
    throw error;
  }
  return { endpoint: group.endpoint, supervisor, door, sandboxMode: options.sandboxMode, publishState, close };
}

/**
 * After an `up` was killed without its cleanup (`companion stop --force`): stops the runtime it left
 * behind, only when /proc still names the recorded runtime (D5.4, src/runtime/stale.ts). Never throws.
 */
export async function reclaimLeftRuntime(dataDir: string): Promise<void> {
  await reclaimStaleRuntime(dataDir, { runBase: layout(dataDir).run }).catch(() => undefined);
}
