/**
 * The runtime supervisor: drives the lifecycle core with what the runtime adapters report (spawn, exit,
 * health, probe) and computes `companionAvailable` (D5.7, src/core/availability.ts): true only when the
 * installed model was re-verified for this start, the lifecycle is `ready`, and a health round trip
 * succeeded within the recency bound. False on any doubt. Every change is an event.
 *
 * It reaches the world only through its ports ({@link SupervisorPorts}: spawn, probe, health, checkModel,
 * clock), wired to the real adapters by {@link defaultSupervisorPorts}, so its lifecycle paths can be
 * driven by fakes (test/unit/supervisor.test.ts). An event the lifecycle table does not allow is an error
 * (ERR_LIFECYCLE_ILLEGAL_TRANSITION), never a silent drop; reports that may legitimately arrive late (a
 * health sample or a probe answer racing a stop or a crash) are filtered before they reach the table.
 *
 * It belongs to the runtime group: it is handed values (paths, settings, a sandbox wrapper) and holds
 * no authority.
 */
import { freemem } from 'node:os';
import { companionAvailable } from '../../core/availability.js';
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
  type ResourceDecision,
  type ResourceDecisionKind,
  type ResourceLimits,
  type ResourceReason,
} from '../../core/resources.js';
import { createHealthMonitor, type HealthMonitor, type HealthMonitorOptions, type HealthSample } from '../health.js';
import { createResourceProbe, type ResourceFigures, type ResourceProbe } from '../probe.js';
import { bundledProfile, type RuntimeProfile } from '../runtime-profile.js';
import {
  spawnRuntime,
  type RuntimeAddress,
  type RuntimeBackend,
  type RuntimeHandle,
  type RuntimeShape,
  type SpawnOptions,
  type SpawnWrap,
} from '../spawn.js';
import { openInstalledModel } from './install.js';

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
    }
  /**
   * An event the lifecycle table refused where no caller could be told (a timer or an exit callback):
   * the lifecycle stays as it was. The message names only states and events.
   */
  | { readonly event: 'fault'; readonly code: ErrorCode; readonly message: string };

/** The supervisor's time: wall-clock milliseconds and one-shot timers. */
export interface SupervisorClock {
  now(): number;
  /**
   * Calls `callback` once after `ms`; the returned function cancels it. The timer does not keep the
   * process alive unless `keepAlive` (a caller awaiting the outcome, as `waitAvailable` has).
   */
  after(ms: number, callback: () => void, keepAlive?: boolean): () => void;
}

/** The installed model opened and re-checked for one start: the descriptor the runtime gets is the one checked. */
export interface CheckedModel {
  readonly id: string;
  readonly size: number;
  /** Read-only descriptor of the checked bytes; valid until {@link CheckedModel.close}. */
  readonly fd: number;
  close(): Promise<void>;
}

/** Everything the supervisor does to the world, as function fields (tests pass fakes). */
export interface SupervisorPorts {
  /** Starts a runtime child and resolves once it is ready (src/runtime/spawn.ts). */
  readonly spawn: (profile: RuntimeProfile, options: SpawnOptions) => Promise<RuntimeHandle>;
  /** A resource probe of the runtime's process group (src/runtime/probe.ts). */
  readonly probe: (pgid: number) => ResourceProbe;
  /** A health monitor around the runtime's health round trip (src/runtime/health.ts). */
  readonly health: (options: HealthMonitorOptions) => HealthMonitor;
  /**
   * Opens and re-checks the installed model (the active one, or `id`).
   * Rejects with the reason the model cannot be served (e.g. ERR_MODEL_CHANGED, ERR_MODEL_NOT_INSTALLED).
   */
  readonly checkModel: (modelsDir: string, id?: string) => Promise<CheckedModel>;
  readonly clock: SupervisorClock;
}

/** The real clock: Date.now and setTimeout. */
export const systemClock: SupervisorClock = Object.freeze({
  now: () => Date.now(),
  after(ms: number, callback: () => void, keepAlive = false): () => void {
    const timer = setTimeout(callback, ms);
    if (!keepAlive) timer.unref();
    return () => clearTimeout(timer);
  },
});

/** The installed model through install.ts's check, as the supervisor sees it. */
async function openCheckedModel(modelsDir: string, id?: string): Promise<CheckedModel> {
  const opened = await openInstalledModel(modelsDir, id);
  return {
    id: opened.installed.id,
    size: opened.installed.size,
    fd: opened.handle.fd,
    close: () => opened.handle.close(),
  };
}

/** The ports wired to the real adapters: spawnRuntime, createResourceProbe, createHealthMonitor, openInstalledModel. */
export function defaultSupervisorPorts(): SupervisorPorts {
  return {
    spawn: spawnRuntime,
    probe: (pgid) => createResourceProbe({ pgid }),
    health: createHealthMonitor,
    checkModel: openCheckedModel,
    clock: systemClock,
  };
}

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
  /** Replaces some of the real adapters ({@link defaultSupervisorPorts}); tests pass fakes. */
  readonly ports?: Partial<SupervisorPorts>;
}

export interface SupervisorSnapshot {
  readonly state: LifecycleState;
  readonly pid: number | null;
  readonly code: ErrorCode | null;
  readonly model: { readonly id: string; readonly verified: boolean } | null;
  readonly lastHealth: HealthSample | null;
  readonly available: boolean;
  /** True when the last stop had to be forced (SIGKILL after the grace period). */
  readonly forcedStop: boolean;
  /** The running runtime's sequences and per-sequence context, as it reported them; null before. */
  readonly shape: RuntimeShape | null;
  /** What the running runtime computes on (its ready line), null when none runs or it did not say. */
  readonly backend: RuntimeBackend | null;
}

export interface Supervisor {
  /**
   * Re-checks the model and starts the runtime; resolves once it is ready (or the start ended).
   * @throws CompanionError ERR_LIFECYCLE_ILLEGAL_TRANSITION when it is already running; the model check's
   *   code (e.g. ERR_MODEL_CHANGED); ERR_RESOURCE_LIMIT when the model cannot fit; the spawn's code.
   */
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

/**
 * Creates the supervisor of one runtime (stopped until `start()`).
 * @throws CompanionError ERR_LIFECYCLE_ILLEGAL_TRANSITION from `start()` while a runtime is running;
 *   ERR_RESOURCE_LIMIT from `start()` when the model's floor need does not fit (see {@link Supervisor.start}).
 */
export function createSupervisor(options: SupervisorOptions): Supervisor {
  return new RuntimeSupervisor(options, { ...defaultSupervisorPorts(), ...options.ports });
}

/** The combined VRAM of the GPUs the probe saw, or undefined without a GPU figure. */
function totalVram(figures: ResourceFigures): { usedBytes: number; totalBytes: number } | undefined {
  const gpus = figures.vram?.gpus ?? [];
  if (gpus.length === 0) return undefined;
  return {
    usedBytes: gpus.reduce((sum, gpu) => sum + gpu.usedBytes, 0),
    totalBytes: gpus.reduce((sum, gpu) => sum + gpu.totalBytes, 0),
  };
}

/** The running resource decision for the probe's figures. */
function runningDecision(figures: ResourceFigures, limits: ResourceLimits): ResourceDecision {
  // Unknown VRAM (no GPU, no tool) is "no GPU figure", not doubt: only a real figure is passed.
  // A null CPU figure means "first sample, no interval yet" (src/runtime/probe.ts), not a failed read
  // (a failed read throws ERR_PROBE_FAILED): it counts as 0 until the next sample measures it.
  const vram = totalVram(figures);
  return decideResources(
    { rssBytes: figures.rssBytes, cpuPercent: figures.cpuPercent ?? 0, ...(vram === undefined ? {} : { vram }) },
    limits,
  );
}

/** True for the states in which a runtime is served, the only ones health and resource reports change. */
function serving(state: LifecycleState): boolean {
  return state === 'ready' || state === 'degraded';
}

/** One supervisor: one lifecycle value and the runtime it drives. */
class RuntimeSupervisor implements Supervisor {
  private readonly recencyMs: number;
  private life: LifecycleSnapshot;
  private handle: RuntimeHandle | null = null;
  private monitor: HealthMonitor | null = null;
  private probe: ResourceProbe | null = null;
  private model: { id: string; verified: boolean } | null = null;
  private lastHealth: HealthSample | null = null;
  private lastAvailable = false;
  private cancelRestart: (() => void) | null = null;
  /** True while the probe's figures cross a limit: health alone does not bring `ready` back. */
  private resourceDegraded = false;
  private stopping = false;
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly options: SupervisorOptions,
    private readonly ports: SupervisorPorts,
  ) {
    this.recencyMs = options.healthRecencyMs ?? this.intervalMs() * 3;
    this.life = initialLifecycle(ports.clock.now(), options.restartPolicy ?? DEFAULT_RESTART_POLICY);
  }

  async start(): Promise<void> {
    this.stopping = false;
    if (this.life.state === 'failed') this.apply('reset');
    if (!canTransition(this.life, 'start', this.ports.clock.now()))
      throw new CompanionError('ERR_LIFECYCLE_ILLEGAL_TRANSITION', `cannot start from state ${this.life.state}`);
    this.apply('start');
    await this.launch();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.cancelRestart?.();
    this.cancelRestart = null;
    const current = this.handle;
    this.apply('stop');
    if (current !== null) {
      // Why release the runtime before waiting for it: the exit this stop causes is then not taken for
      // the runtime's own end, so `killed` (or `stopped`) lands in `stopping` and a forced stop is recorded.
      this.release();
      const { forced } = await current.stop();
      this.apply(forced ? 'killed' : 'stopped');
    }
    this.publish();
  }

  address(): RuntimeAddress | null {
    return this.available() && this.handle !== null ? this.handle.address : null;
  }

  companionAvailable(): boolean {
    return this.available();
  }

  snapshot(): SupervisorSnapshot {
    return {
      state: this.life.state,
      pid: this.handle?.pid ?? null,
      code: this.life.code,
      model: this.model,
      lastHealth: this.lastHealth,
      available: this.available(),
      forcedStop: this.life.forcedStop,
      backend: this.handle?.backend ?? null,
      shape: this.handle?.shape ?? null,
    };
  }

  async resources(): Promise<ResourceFigures | null> {
    if (this.probe === null) return null;
    try {
      const figures = await this.probe.probe();
      this.applyResourceDecision(figures);
      return figures;
    } catch {
      return null;
    }
  }

  waitAvailable(timeoutMs: number): Promise<boolean> {
    if (this.available()) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const finish = (): void => {
        cancel();
        this.waiters.delete(wake);
        resolve(this.available());
      };
      const wake = (): void => {
        if (this.available() || this.life.state === 'failed') finish();
      };
      const cancel = this.ports.clock.after(timeoutMs, finish, true);
      this.waiters.add(wake);
    });
  }

  private intervalMs(): number {
    return this.options.healthIntervalMs ?? 2_000;
  }

  private emit(event: SupervisorEvent): void {
    this.options.onEvent?.(event);
  }

  private available(): boolean {
    return companionAvailable({
      state: this.life.state,
      runtimeRunning: this.handle !== null,
      modelVerified: this.model?.verified === true,
      lastHealth: this.lastHealth,
      now: this.ports.clock.now(),
      recencyMs: this.recencyMs,
    });
  }

  /** Emits `available` when it changed, and wakes the waiters either way. */
  private publish(): void {
    const value = this.available();
    if (value !== this.lastAvailable) {
      this.lastAvailable = value;
      const shape = value ? (this.handle?.shape ?? null) : null;
      this.emit({
        event: 'available',
        available: value,
        ...(shape === null ? {} : { parallel: shape.parallel, contextSize: shape.contextSize }),
      });
    }
    for (const wake of this.waiters) wake();
  }

  /**
   * Applies one lifecycle event. Callers filter the events that may legitimately arrive late before
   * they get here; anything else the table refuses is a fault in the supervisor.
   * @throws CompanionError ERR_LIFECYCLE_ILLEGAL_TRANSITION (from the lifecycle core) for an event the
   *   table does not allow now.
   */
  private apply(event: LifecycleEvent, code?: ErrorCode): void {
    const before = this.life.state;
    this.life = transition(this.life, event, this.ports.clock.now(), code);
    if (this.life.state !== before)
      this.emit({ event: 'state', state: this.life.state, pid: this.handle?.pid ?? null, code: this.life.code });
    this.publish();
  }

  /** Reports an illegal transition raised where no caller can be told (a timer, an exit callback). */
  private reportFault(error: unknown): void {
    if (!isCompanionError(error) || error.code !== 'ERR_LIFECYCLE_ILLEGAL_TRANSITION') return;
    this.emit({ event: 'fault', code: error.code, message: error.message });
  }

  /** From `verifying`: re-check the model, spawn, wait for ready, start health checks. */
  private async launch(): Promise<void> {
    const model = await this.verifyModel();
    if (this.stopping) {
      // A stop during the check ended this start (`verifying` → `stopped`): nothing to spawn.
      await model.close().catch(() => undefined);
      return;
    }
    this.apply('verified');
    let started: RuntimeHandle;
    try {
      started = await this.spawnChild(model);
    } catch (error) {
      this.apply('crashed', isCompanionError(error) ? error.code : 'ERR_SPAWN_FAILED');
      this.scheduleRestart();
      throw error;
    } finally {
      // The runtime holds its own copy (or the sandbox's read-only view of it).
      await model.close().catch(() => undefined);
    }
    if (this.stopping) {
      // A stop during the spawn left the lifecycle in `stopping`, waiting for this runtime's end.
      const { forced } = await started.stop();
      this.apply(forced ? 'killed' : 'stopped');
      return;
    }
    await this.serve(started);
  }

  /** Opens and re-checks the installed model once; the descriptor checked is the one the runtime gets. */
  private async verifyModel(): Promise<CheckedModel> {
    let model: CheckedModel;
    try {
      model = await this.ports.checkModel(this.options.modelsDir, this.options.modelId);
    } catch (error) {
      this.model = this.model === null ? null : { ...this.model, verified: false };
      this.failVerification(isCompanionError(error) ? error.code : 'ERR_MODEL_CHANGED');
      throw error;
    }
    try {
      this.checkStartFits(model.size);
    } catch (error) {
      await model.close();
      this.failVerification('ERR_RESOURCE_LIMIT');
      throw error;
    }
    this.model = { id: model.id, verified: true };
    return model;
  }

  private failVerification(code: ErrorCode): void {
    // Why the filter: a stop during the check already ended the start (`verifying` → `stopped`).
    if (this.life.state === 'verifying') this.apply('verify-failed', code);
  }

  /** The memory a start may use: the lower of the configured limit and what is available now. */
  private startLimit(): number {
    const available = (this.options.availableMemory ?? freemem)();
    const configured = this.options.resourceLimits?.maxRssBytes;
    return configured === undefined ? available : Math.min(configured, available);
  }

  /**
   * The memory budget the runtime sizes its context in (issue 17 item 7): below the point where the
   * running check calls it degraded, with a tenth spare for what the estimate misses.
   */
  private memoryBudget(): number {
    const degradeAt = this.options.resourceLimits?.degradeAt ?? DEFAULT_DEGRADE_AT;
    return Math.max(1, Math.floor(this.startLimit() * degradeAt * 0.9));
  }

  /**
   * Refuses a start whose model cannot fit; the limit is the lower of both.
   * @throws CompanionError ERR_RESOURCE_LIMIT when the model's floor need is over the limit.
   */
  private checkStartFits(modelBytes: number): void {
    const maxRssBytes = this.startLimit();
    const decision = decideResources(startFigures(modelBytes), { ...this.options.resourceLimits, maxRssBytes });
    if (decision.decision === 'refuse-start') {
      throw new CompanionError(
        'ERR_RESOURCE_LIMIT',
        `the model needs at least ${Math.ceil(startFigures(modelBytes).rssBytes! / 2 ** 20)} MiB; ${Math.floor(maxRssBytes / 2 ** 20)} MiB are available`,
      );
    }
  }

  private profile(model: CheckedModel): RuntimeProfile {
    const { threads, contextSize, parallel, gpu } = this.options;
    return bundledProfile({
      modelId: model.id,
      ...(threads !== undefined ? { threads } : {}),
      ...(contextSize !== undefined ? { contextSize } : {}),
      ...(parallel !== undefined ? { parallel } : {}),
      memoryBytes: this.memoryBudget(),
      ...(gpu !== undefined ? { gpu } : {}),
    });
  }

  private async spawnChild(model: CheckedModel): Promise<RuntimeHandle> {
    const { options } = this;
    let started: RuntimeHandle | null = null;
    started = await this.ports.spawn(this.profile(model), {
      dataDir: options.dataDir,
      modelFd: model.fd,
      ...(options.readyTimeoutMs !== undefined ? { readyTimeoutMs: options.readyTimeoutMs } : {}),
      ...(options.wrap ? { wrap: options.wrap } : {}),
      ...(options.onStderr ? { onStderr: options.onStderr } : {}),
      // Why the filter: only the runtime this supervisor still holds can crash; every stop it makes
      // releases the runtime first, so the exit that stop causes is no news.
      onExit: () => {
        if (started !== null && started === this.handle) this.onCrash();
      },
    });
    return started;
  }

  /** The held runtime exited on its own: left `ready` at once, so the front door answers 503 from now on. */
  private onCrash(): void {
    this.release();
    try {
      this.apply('crashed', 'ERR_RUNTIME_GONE');
    } catch (error) {
      this.reportFault(error);
    }
    this.scheduleRestart();
    this.publish();
  }

  /** Holds the ready runtime: pins its identity for the probe, moves to `ready`, starts health checks. */
  private async serve(started: RuntimeHandle): Promise<void> {
    this.handle = started;
    this.resourceDegraded = false;
    this.probe = this.ports.probe(started.pid);
    await this.probe.probe().catch(() => undefined); // the first sample pins the leader's identity
    // Why: a stop or a crash while the first sample was taken already released this runtime.
    if (this.handle !== started) return;
    this.apply('spawned-ready');
    const monitor = this.ports.health({
      probe: (timeoutMs) => started.healthCheck(timeoutMs),
      intervalMs: this.intervalMs(),
      timeoutMs: this.options.healthTimeoutMs ?? 2_000,
      // Why the filter: a check in flight when its runtime was released reports afterwards, about a
      // runtime no longer served.
      onHealth: (sample) => {
        if (this.monitor === monitor) this.onHealth(sample);
      },
      now: () => this.ports.clock.now(),
    });
    this.monitor = monitor;
    monitor.start();
    await monitor.checkNow();
  }

  private onHealth(sample: HealthSample): void {
    this.lastHealth = sample;
    this.emit({ event: 'health', ok: sample.ok, latencyMs: Math.round(sample.latencyMs) });
    if (sample.ok) {
      this.apply('health-ok');
      if (this.life.state === 'degraded' && !this.resourceDegraded) this.apply('recover');
    } else {
      this.apply('health-failed');
    }
    this.publish();
  }

  /** Drops the runtime (health checks, probe, handle): from now on nothing it reports changes the lifecycle. */
  private release(): void {
    this.monitor?.stop();
    this.monitor = null;
    this.probe?.close();
    this.probe = null;
    this.handle = null;
    this.lastHealth = null;
  }

  private scheduleRestart(): void {
    const { life } = this;
    if (this.options.autoRestart === false || this.stopping || life.state !== 'backoff' || life.restartAt === null)
      return;
    const inMs = Math.max(0, life.restartAt - this.ports.clock.now());
    this.emit({ event: 'restart-scheduled', inMs });
    this.cancelRestart = this.ports.clock.after(inMs + 1, () => {
      this.cancelRestart = null;
      this.retry();
    });
  }

  /** The backoff elapsed: start again. A failed start is in the lifecycle already (failed, or a new backoff). */
  private retry(): void {
    // Why the filter: a stop that raced the timer has moved the lifecycle on; the retry is no longer wanted.
    if (this.stopping || this.life.state !== 'backoff') return;
    try {
      this.apply('retry');
    } catch (error) {
      this.reportFault(error);
      return;
    }
    this.launch().catch((error: unknown) => this.reportFault(error));
  }

  /** Applies the running resource decision: past a limit is `degraded`; back inside lets health recover. */
  private applyResourceDecision(figures: ResourceFigures): void {
    const limits = this.options.resourceLimits;
    // Why the filter: a probe answer may race the start (`starting`) or a stop; only a served runtime degrades.
    if (limits === undefined || !serving(this.life.state)) return;
    const decision = runningDecision(figures, limits);
    const over = decision.decision !== 'ok';
    if (over === this.resourceDegraded) return;
    this.resourceDegraded = over;
    this.emit({ event: 'resources', decision: decision.decision, reasons: decision.reasons });
    if (over) this.apply('degrade');
    else if (this.life.state === 'degraded' && this.lastHealth?.ok === true) this.apply('recover');
  }
}
