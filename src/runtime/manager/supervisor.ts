/**
 * The runtime supervisor: drives the lifecycle core with what the runtime adapters report (spawn, exit,
 * health, probe) and computes `companionAvailable` (D5.7): true only when the installed model was
 * re-verified for this start, the lifecycle is `ready`, and a health round trip succeeded within the
 * recency bound. False on any doubt. Every change is an event.
 *
 * It belongs to the runtime group: it is handed values (paths, settings, a sandbox wrapper) and holds
 * no authority.
 */
import { CompanionError, isCompanionError, type ErrorCode } from '../../core/errors.js';
import {
  DEFAULT_RESTART_POLICY,
  initialLifecycle,
  transition,
  canTransition,
  type LifecycleEvent,
  type LifecycleSnapshot,
  type LifecycleState,
  type RestartPolicy,
} from '../../core/lifecycle.js';
import {
  DEFAULT_DEGRADE_AT,
  decideResources,
  startFigures,
  type ResourceDecisionKind,
  type ResourceLimits,
  type ResourceReason,
} from '../../core/resources.js';
import { freemem } from 'node:os';
import { createHealthMonitor, type HealthMonitor, type HealthSample } from '../health.js';
import { createResourceProbe, type ResourceFigures } from '../probe.js';
import { bundledProfile } from '../runtime-profile.js';
import {
  spawnRuntime,
  type RuntimeAddress,
  type RuntimeBackend,
  type RuntimeHandle,
  type RuntimeShape,
  type SpawnWrap,
} from '../spawn.js';
import { openInstalledModel, type OpenedModel } from './install.js';

export type SupervisorEvent =
  | {
      readonly event: 'state';
      readonly state: LifecycleState;
      readonly pid: number | null;
      readonly code: ErrorCode | null;
    }
  /** When available: the runtime's sequences and tokens per sequence, as it reported them. */
  | {
      readonly event: 'available';
      readonly available: boolean;
      readonly parallel?: number;
      readonly contextSize?: number;
    }
  | { readonly event: 'health'; readonly ok: boolean; readonly latencyMs: number }
  | { readonly event: 'restart-scheduled'; readonly inMs: number }
  | {
      readonly event: 'resources';
      readonly decision: ResourceDecisionKind;
      readonly reasons: readonly ResourceReason[];
    };

export interface SupervisorOptions {
  readonly dataDir: string;
  readonly modelsDir: string;
  /** The installed model to serve (default: the active one). */
  readonly modelId?: string;
  /** CPU threads for the runtime (default: the runtime's own choice). */
  readonly threads?: number;
  /** Tokens per sequence (default: the runtime's choice from the model's trained context and memory). */
  readonly contextSize?: number;
  /** Sequences generating at once (default: the runtime's choice from the model and memory, at most 4). */
  readonly parallel?: number;
  /** GPU use (default auto: a GPU when node-llama-cpp finds one, else the CPU). */
  readonly gpu?: 'off' | 'auto';
  /** The sandbox wrapper (issue 10), or undefined for an (explicitly allowed) unsandboxed start. */
  readonly wrap?: SpawnWrap;
  readonly healthIntervalMs?: number;
  readonly healthTimeoutMs?: number;
  /** A health success older than this is doubt (default 3 × interval). */
  readonly healthRecencyMs?: number;
  readonly readyTimeoutMs?: number;
  readonly restartPolicy?: RestartPolicy;
  /** Restart after a crash following the backoff (default true). */
  readonly autoRestart?: boolean;
  /**
   * Resource limits (D5.6). Before a start the model's floor need ({@link startFigures}) must fit under
   * `maxRssBytes` and the memory available now (`availableMemory`), else the start is refused with
   * ERR_RESOURCE_LIMIT; while running, the runtime's RSS past its limit makes the lifecycle `degraded`.
   */
  readonly resourceLimits?: ResourceLimits;
  /** Memory available for a new runtime, bytes (default `os.freemem()`, MemAvailable on Linux). */
  readonly availableMemory?: () => number;
  readonly onEvent?: (event: SupervisorEvent) => void;
  readonly onStderr?: (line: string) => void;
  readonly now?: () => number;
}

export interface SupervisorSnapshot {
  readonly state: LifecycleState;
  readonly pid: number | null;
  readonly code: ErrorCode | null;
  readonly model: { readonly id: string; readonly verified: boolean } | null;
  readonly lastHealth: HealthSample | null;
  readonly available: boolean;
  /** The running runtime's sequences and per-sequence context, as it reported them; null before. */
  readonly shape: RuntimeShape | null;
  /** What the running runtime computes on (its ready line), null when none runs or it did not say. */
  readonly backend: RuntimeBackend | null;
}

export interface Supervisor {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The runtime's address while it is available, else null (the front door answers 503). */
  address(): RuntimeAddress | null;
  companionAvailable(): boolean;
  snapshot(): SupervisorSnapshot;
  /** Runtime-scoped figures, or null when there is no runtime or the probe failed (doubt). */
  resources(): Promise<ResourceFigures | null>;
  /** Waits until available or until `timeoutMs`; resolves with the availability. */
  waitAvailable(timeoutMs: number): Promise<boolean>;
}

export function createSupervisor(options: SupervisorOptions): Supervisor {
  const now = options.now ?? Date.now;
  const intervalMs = options.healthIntervalMs ?? 2_000;
  const recencyMs = options.healthRecencyMs ?? intervalMs * 3;
  let life: LifecycleSnapshot = initialLifecycle(now(), options.restartPolicy ?? DEFAULT_RESTART_POLICY);
  let handle: RuntimeHandle | null = null;
  let monitor: HealthMonitor | null = null;
  let probe: ReturnType<typeof createResourceProbe> | null = null;
  let model: { id: string; verified: boolean } | null = null;
  let lastHealth: HealthSample | null = null;
  let lastAvailable = false;
  let restartTimer: NodeJS.Timeout | null = null;
  /** True while the probe's figures cross a limit: health alone does not bring `ready` back. */
  let resourceDegraded = false;
  let stopping = false;
  const waiters = new Set<() => void>();

  const emit = (event: SupervisorEvent): void => options.onEvent?.(event);

  function available(): boolean {
    if (life.state !== 'ready' || handle === null || model === null || !model.verified) return false;
    if (lastHealth === null || !lastHealth.ok) return false;
    return now() - lastHealth.at <= recencyMs;
  }

  function publish(): void {
    const value = available();
    if (value !== lastAvailable) {
      lastAvailable = value;
      const shape = value ? (handle?.shape ?? null) : null;
      emit({
        event: 'available',
        available: value,
        ...(shape === null ? {} : { parallel: shape.parallel, contextSize: shape.contextSize }),
      });
    }
    for (const wake of waiters) wake();
  }

  function apply(event: LifecycleEvent, code?: ErrorCode): boolean {
    const at = now();
    if (!canTransition(life, event, at)) return false;
    const before = life.state;
    life = transition(life, event, at, code);
    if (life.state !== before) emit({ event: 'state', state: life.state, pid: handle?.pid ?? null, code: life.code });
    publish();
    return true;
  }

  function onHealth(sample: HealthSample): void {
    lastHealth = sample;
    emit({ event: 'health', ok: sample.ok, latencyMs: Math.round(sample.latencyMs) });
    if (sample.ok) {
      apply('health-ok');
      if (life.state === 'degraded' && !resourceDegraded) apply('recover');
    } else {
      apply('health-failed');
    }
    publish();
  }

  function scheduleRestart(): void {
    if (options.autoRestart === false || stopping || life.state !== 'backoff' || life.restartAt === null) return;
    const inMs = Math.max(0, life.restartAt - now());
    emit({ event: 'restart-scheduled', inMs });
    restartTimer = setTimeout(() => {
      restartTimer = null;
      if (stopping || life.state !== 'backoff') return;
      if (apply('retry')) void launch().catch(() => undefined);
    }, inMs + 1);
    restartTimer.unref();
  }

  function teardownRuntime(): void {
    monitor?.stop();
    monitor = null;
    probe?.close();
    probe = null;
    handle = null;
  }

  /** The memory a start may use: the lower of the configured limit and what is available now. */
  function startLimit(): number {
    const available = (options.availableMemory ?? freemem)();
    const configured = options.resourceLimits?.maxRssBytes;
    return configured === undefined ? available : Math.min(configured, available);
  }

  /**
   * The memory budget the runtime sizes its context in (issue 17 item 7): below the point where the
   * running check calls it degraded, with a tenth spare for what the estimate misses.
   */
  function memoryBudget(): number {
    return Math.max(1, Math.floor(startLimit() * (options.resourceLimits?.degradeAt ?? DEFAULT_DEGRADE_AT) * 0.9));
  }

  /** Refuses a start whose model cannot fit (ERR_RESOURCE_LIMIT); the limit is the lower of both. */
  function checkStartFits(modelBytes: number): void {
    const maxRssBytes = startLimit();
    const decision = decideResources(startFigures(modelBytes), { ...options.resourceLimits, maxRssBytes });
    if (decision.decision === 'refuse-start') {
      throw new CompanionError(
        'ERR_RESOURCE_LIMIT',
        `the model needs at least ${Math.ceil(startFigures(modelBytes).rssBytes! / 2 ** 20)} MiB; ${Math.floor(maxRssBytes / 2 ** 20)} MiB are available`,
      );
    }
  }

  /** Opens and re-checks the installed model once; the descriptor checked is the one the runtime gets. */
  async function verifyModel(): Promise<OpenedModel> {
    let opened: OpenedModel;
    try {
      opened = await openInstalledModel(options.modelsDir, options.modelId);
    } catch (error) {
      model = model === null ? null : { ...model, verified: false };
      apply('verify-failed', isCompanionError(error) ? error.code : 'ERR_MODEL_CHANGED');
      throw error;
    }
    try {
      checkStartFits(opened.installed.size);
    } catch (error) {
      await opened.handle.close();
      apply('verify-failed', 'ERR_RESOURCE_LIMIT');
      throw error;
    }
    model = { id: opened.installed.id, verified: true };
    return opened;
  }

  /** From `verifying`: re-check the model, spawn, wait for ready, start health checks. */
  async function launch(): Promise<void> {
    const opened = await verifyModel();
    apply('verified');
    const profile = bundledProfile({
      modelId: opened.installed.id,
      ...(options.threads !== undefined ? { threads: options.threads } : {}),
      ...(options.contextSize !== undefined ? { contextSize: options.contextSize } : {}),
      ...(options.parallel !== undefined ? { parallel: options.parallel } : {}),
      memoryBytes: memoryBudget(),
      ...(options.gpu !== undefined ? { gpu: options.gpu } : {}),
    });
    let started: RuntimeHandle;
    try {
      started = await spawnRuntime(profile, {
        dataDir: options.dataDir,
        modelFd: opened.handle.fd,
        ...(options.readyTimeoutMs !== undefined ? { readyTimeoutMs: options.readyTimeoutMs } : {}),
        ...(options.wrap ? { wrap: options.wrap } : {}),
        ...(options.onStderr ? { onStderr: options.onStderr } : {}),
        onExit: (exit) => {
          if (handle !== started) return;
          teardownRuntime();
          lastHealth = null;
          if (exit.expected || stopping) {
            apply('stopped');
          } else {
            // Left `ready` at once: the front door answers 503 from now on.
            apply('crashed', 'ERR_RUNTIME_GONE');
            scheduleRestart();
          }
          publish();
        },
      });
    } catch (error) {
      apply('crashed', isCompanionError(error) ? error.code : 'ERR_SPAWN_FAILED');
      scheduleRestart();
      throw error;
    } finally {
      // The runtime holds its own copy (or the sandbox's read-only view of it).
      await opened.handle.close().catch(() => undefined);
    }
    if (stopping) {
      await started.stop();
      return;
    }
    handle = started;
    resourceDegraded = false;
    probe = createResourceProbe({ pgid: started.pid });
    await probe.probe().catch(() => undefined); // the first sample pins the leader's identity
    apply('spawned-ready');
    monitor = createHealthMonitor({
      probe: (timeoutMs) => started.healthCheck(timeoutMs),
      intervalMs,
      timeoutMs: options.healthTimeoutMs ?? 2_000,
      onHealth,
      now,
    });
    monitor.start();
    await monitor.checkNow();
  }

  /** Applies the running resource decision: past a limit is `degraded`; back inside lets health recover. */
  function applyResourceDecision(figures: ResourceFigures): void {
    if (options.resourceLimits === undefined) return;
    // Unknown VRAM (no GPU, no tool) is "no GPU figure", not doubt: only a real figure is passed.
    // A null CPU figure means "first sample, no interval yet" (src/runtime/probe.ts), not a failed read
    // (a failed read throws ERR_PROBE_FAILED): it counts as 0 until the next sample measures it.
    const gpus = figures.vram?.gpus ?? [];
    const vram =
      gpus.length === 0
        ? undefined
        : {
            usedBytes: gpus.reduce((sum, gpu) => sum + gpu.usedBytes, 0),
            totalBytes: gpus.reduce((sum, gpu) => sum + gpu.totalBytes, 0),
          };
    const decision = decideResources(
      { rssBytes: figures.rssBytes, cpuPercent: figures.cpuPercent ?? 0, ...(vram === undefined ? {} : { vram }) },
      options.resourceLimits,
    );
    const over = decision.decision !== 'ok';
    if (over && !resourceDegraded) {
      resourceDegraded = true;
      emit({ event: 'resources', decision: decision.decision, reasons: decision.reasons });
      apply('degrade');
    } else if (!over && resourceDegraded) {
      resourceDegraded = false;
      emit({ event: 'resources', decision: decision.decision, reasons: decision.reasons });
      if (life.state === 'degraded' && lastHealth?.ok === true) apply('recover');
    }
  }

  return {
    async start() {
      stopping = false;
      if (life.state === 'failed') apply('reset');
      if (!apply('start'))
        throw new CompanionError('ERR_LIFECYCLE_ILLEGAL_TRANSITION', `cannot start from state ${life.state}`);
      await launch();
    },
    async stop() {
      stopping = true;
      if (restartTimer !== null) {
        clearTimeout(restartTimer);
        restartTimer = null;
      }
      const current = handle;
      apply('stop');
      if (current !== null) {
        const { forced } = await current.stop();
        teardownRuntime();
        apply(forced ? 'killed' : 'stopped');
      }
      publish();
    },
    address() {
      return available() && handle !== null ? handle.address : null;
    },
    companionAvailable: available,
    snapshot() {
      return {
        state: life.state,
        pid: handle?.pid ?? null,
        code: life.code,
        model,
        lastHealth,
        available: available(),
        backend: handle?.backend ?? null,
        shape: handle?.shape ?? null,
      };
    },
    async resources() {
      if (probe === null) return null;
      try {
        const figures = await probe.probe();
        applyResourceDecision(figures);
        return figures;
      } catch {
        return null;
      }
    },
    async waitAvailable(timeoutMs) {
      if (available()) return true;
      return new Promise<boolean>((resolve) => {
        const wake = (): void => {
          if (available() || life.state === 'failed') {
            cleanup();
            resolve(available());
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          resolve(available());
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(wake);
        };
        waiters.add(wake);
      });
    },
  };
}
