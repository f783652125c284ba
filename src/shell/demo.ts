/**
 * The demo (`npm start` = `companion demo`): the whole flow on this machine against an embedded
 * reference hub, each step printed with its timing. Nothing else needs to be installed or running:
 * without a Secret Service it uses the explicit in-memory keychain, and without a sandbox tool it
 * starts the runtime unsandboxed, saying so both times.
 */
import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openKeychain, keychainServiceFor } from '../authority/keychain.js';
import { createLlmClient } from '../client/llm.js';
import { createTlsAgent, fetchWith } from '../common/tls.js';
import { findModel } from '../core/manifest.js';
import { completeSignInAsDevUser } from '../hub/dev-browser.js';
import { startHub, type RunningHub } from '../hub/index.js';
import { createAuthorityGroup, type AuthorityGroup } from './authority.js';
import { startRuntimeGroup, type RunningCompanion } from '../runtime/manager/group.js';
import { installationKey } from './config.js';
import { layout } from '../common/layout.js';
import { pullModel } from '../runtime/manager/install.js';
import { checkPrivateDir, ensurePrivateDir, readJsonFile, writePrivateJson } from '../common/private-file.js';
import { CompanionError } from '../core/errors.js';
import { openLogFile, type LogFile } from './log-file.js';
import { resolveSandbox } from '../runtime/manager/sandbox-choice.js';
import { acquireUpLock } from './up-lock.js';

export interface DemoOptions {
  readonly keepRunning: boolean;
  /** Step lines (human) or events (JSON) go here. */
  readonly report: (event: Record<string, unknown> & { event: string }) => void;
  /** Streamed completion text. */
  readonly onToken: (text: string) => void;
  /** Resolves when the demo should stop (SIGINT/SIGTERM) in keep-running mode. */
  readonly untilStopped: Promise<unknown>;
  readonly threads?: number;
  readonly prompt?: string;
  /** Force the in-memory keychain (tests); default: the OS keychain when it is available. */
  readonly keychain?: 'auto' | 'memory';
  /**
   * Keep the demo's state here (`demo --data-dir`) instead of a temp dir that is removed at the end;
   * checked with {@link prepareDemoDataDir} first.
   */
  readonly dataDir?: string;
}

/** The file that marks a folder as a demo's data dir. */
export const DEMO_MARKER = 'demo-data-dir.json';
const DEMO_MARKER_FORMAT = 'companion-demo-data-dir-v1';

/**
 * Makes `dir` the demo's data dir, or refuses it. Accepted: a folder that does not exist yet (made 0700),
 * an empty one, or one an earlier demo made (it holds {@link DEMO_MARKER}). Refused: any other non-empty
 * folder, a real installation's data dir included: the demo's hub would replace its model and advance
 * its manifest-version record (rollback protection) with another hub's manifest.
 * @throws ERR_CONFIG for a folder that is not empty and not a demo's; ERR_STATE_UNSAFE for a symlink, a
 *   file, or a folder of another user.
 */
export async function prepareDemoDataDir(dir: string): Promise<void> {
  if (await checkPrivateDir(dir)) {
    const names = await readdir(dir);
    if (names.length > 0) {
      const marker = await lstat(join(dir, DEMO_MARKER)).then(
        (s) => s.isFile(),
        () => false,
      );
      const record = marker ? await readJsonFile(join(dir, DEMO_MARKER)) : null;
      if ((record as { format?: unknown } | null)?.format !== DEMO_MARKER_FORMAT) {
        throw new CompanionError(
          'ERR_CONFIG',
          `${dir} is not empty and is not a folder an earlier demo made; the demo keeps its state only in a new or empty folder (never an installation's data dir: it would replace its model)`,
        );
      }
    }
  }
  await ensurePrivateDir(dir);
  await writePrivateJson(join(dir, DEMO_MARKER), { format: DEMO_MARKER_FORMAT });
}

/** What every step of the demo uses: its options, the step reporter and the cleanups (run last first). */
interface DemoRun {
  readonly options: DemoOptions;
  readonly step: (name: string, detail?: Record<string, unknown>) => void;
  readonly cleanups: Array<() => Promise<unknown>>;
}

/**
 * Runs the demo: starts the embedded hub, signs in as its dev user, pulls and verifies the model, starts
 * the runtime group, streams one completion through the front door, and (`keepRunning`) waits until
 * stopped. Reports each step with its timing; everything it started is closed at the end, failure or not.
 * Errors pass up with their codes (the hub, keychain, sign-in, manifest, download, sandbox and runtime
 * steps each throw their own); a runtime that does not become available in 60 s is a plain Error.
 */
export async function runDemo(options: DemoOptions): Promise<void> {
  const run: DemoRun = { options, step: stepReporter(options.report), cleanups: [] };
  const { step, cleanups } = run;
  try {
    const hub = await startHub();
    cleanups.push(() => hub.close());
    step('hub', { hub: hub.issuer, modelHost: hub.modelHostUrl });

    const agent = createTlsAgent({ extraCas: [hub.caPem] });
    cleanups.push(() => agent.close());
    const fetch = fetchWith(agent);
    const dataDir = await openDataDir(run);
    const paths = layout(dataDir);
    const log = await openDemoLog(run, dataDir, paths.upLock);
    const authority = await signInAsDevUser(run, hub, dataDir, paths.manifestVersion, fetch);

    const manifest = await authority.fetchManifest();
    const model = findModel(manifest);
    step('manifest', { version: manifest.version, model: model.id });
    await pullModel({ model, manifestVersion: manifest.version, modelsDir: paths.models, dispatcher: agent });
    step('verified', { model: model.id, bytes: model.size });

    const companion = await startDemoRuntime(run, authority, dataDir, log);
    const token = (await authority.loopbackToken())?.reveal() ?? '';
    await completeOnce(run, companion, token, model.id);
    if (options.keepRunning) {
      options.report({ event: 'available', endpoint: companion.endpoint, token });
      await options.untilStopped;
    }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    step('stopped');
  }
}

/** Reports a step with the time since the last one and since the start. */
function stepReporter(report: DemoOptions['report']): DemoRun['step'] {
  const t0 = performance.now();
  let last = t0;
  return (name, detail = {}) => {
    const now = performance.now();
    report({ event: 'step', step: name, ms: Math.round(now - last), totalMs: Math.round(now - t0), ...detail });
    last = now;
  };
}

/** The demo's data dir: `--data-dir` (checked first), or a temp dir removed at the end. */
async function openDataDir(run: DemoRun): Promise<string> {
  if (run.options.dataDir !== undefined) {
    await prepareDemoDataDir(run.options.dataDir);
    return run.options.dataDir;
  }
  const temp = await mkdtemp(join(tmpdir(), 'companion-demo-'));
  run.cleanups.push(() => rm(temp, { recursive: true, force: true }));
  return temp;
}

/** Takes the data dir's `up` lock and opens its log. */
async function openDemoLog(run: DemoRun, dataDir: string, upLock: string): Promise<LogFile> {
  // As `up`: one companion per data dir (a demo kept in a folder could meet another there).
  const lock = await acquireUpLock(upLock);
  run.cleanups.push(() => lock.release());
  const log = openLogFile(dataDir);
  run.cleanups.push(async () => log.close());
  log.write('demo', `started (pid ${process.pid})`);
  return log;
}

/** The OS keychain when it answers as available (and not forced to memory), else the in-memory one. */
async function keychainBackend(run: DemoRun, hub: RunningHub, dataDir: string): Promise<'os' | 'memory'> {
  if (run.options.keychain === 'memory') return 'memory';
  const health = await openKeychain({
    backend: 'os',
    service: keychainServiceFor(hub.issuer, installationKey(dataDir)),
    timeoutMs: 5_000,
  })
    .health()
    .catch(() => null);
  return health?.state === 'available' ? 'os' : 'memory';
}

/** Builds the authority group and signs in, playing the browser's part against the hub's dev login. */
async function signInAsDevUser(
  run: DemoRun,
  hub: RunningHub,
  dataDir: string,
  manifestVersionFile: string,
  fetch: typeof globalThis.fetch,
): Promise<AuthorityGroup> {
  const { options, step } = run;
  const backend = await keychainBackend(run, hub, dataDir);
  const authority = createAuthorityGroup({
    hub: hub.issuer,
    installationKey: installationKey(dataDir),
    keychain: backend,
    fetch,
    manifestKeys: hub.manifestKey,
    manifestVersionFile,
    announce: (line) => options.report({ event: 'note', text: line }),
  });
  run.cleanups.push(() => authority.signOut().catch(() => undefined));
  step('keychain', { backend: authority.keychain.backend });

  options.report({
    event: 'note',
    text: "the demo plays the browser's part: it fills in the reference hub's dev login and consent form over HTTPS",
  });
  const { user, password } = hub;
  await authority.signIn({
    openBrowser: async (url) => {
      await completeSignInAsDevUser({ authorizationUrl: url, fetch, user, password });
    },
    onOpen: () => undefined,
    timeoutMs: 60_000,
  });
  step('signed-in', { user: hub.user });
  return authority;
}

/** Starts the runtime group (sandboxed when a sandbox tool is there) and waits until it is available. */
async function startDemoRuntime(
  run: DemoRun,
  authority: AuthorityGroup,
  dataDir: string,
  log: LogFile,
): Promise<RunningCompanion> {
  const { options } = run;
  let sandbox;
  try {
    sandbox = await resolveSandbox('required', () => undefined);
  } catch {
    // The demo must run on a fresh machine: without a sandbox tool it goes on, and says so loudly.
    sandbox = await resolveSandbox('off', (line) => options.report({ event: 'note', text: line }));
  }
  const { verifyToken, attest } = await authority.rotateLoopbackCapabilities();
  const companion = await startRuntimeGroup({
    dataDir,
    verifyToken,
    attest,
    threads: options.threads ?? Math.min(2, Math.max(1, availableParallelism() - 1)),
    ...(sandbox.wrap ? { wrap: sandbox.wrap } : {}),
    sandboxMode: sandbox.mode,
    log: (source, text) => log.write(source, text),
  });
  // Closed first at the end (the cleanups run last first), before the authority signs out.
  run.cleanups.push(() => companion.close());
  const available = await companion.supervisor.waitAvailable(60_000);
  if (!available) throw new Error('the companion did not become available');
  const snap = companion.supervisor.snapshot();
  run.step('available', { endpoint: companion.endpoint, sandbox: sandbox.mode, runtimePid: snap.pid });
  return companion;
}

/** Streams one completion through the front door with the LLM client, as a local caller would. */
async function completeOnce(run: DemoRun, companion: RunningCompanion, token: string, modelId: string): Promise<void> {
  const { options } = run;
  const client = createLlmClient({
    local: () => ({ url: companion.endpoint, token, model: modelId }),
    companionAvailable: () => companion.supervisor.companionAvailable(),
  });
  const result = await client.complete({
    tier: 'private',
    stream: true,
    maxTokens: 24,
    temperature: 0,
    seed: 1,
    messages: [{ role: 'user', content: options.prompt ?? 'Say hello from this machine.' }],
    onToken: options.onToken,
  });
  run.step('completion', { lane: result.lane, tokens: result.usage?.completionTokens ?? null });
}
