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
import { openLogFile } from './log-file.js';
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

export async function runDemo(options: DemoOptions): Promise<void> {
  const t0 = performance.now();
  let last = t0;
  const step = (name: string, detail: Record<string, unknown> = {}): void => {
    const now = performance.now();
    options.report({ event: 'step', step: name, ms: Math.round(now - last), totalMs: Math.round(now - t0), ...detail });
    last = now;
  };
  const cleanups: Array<() => Promise<unknown>> = [];
  let hub: RunningHub | null = null;
  let authority: AuthorityGroup | null = null;
  let companion: RunningCompanion | null = null;
  try {
    hub = await startHub();
    const runningHub = hub;
    cleanups.push(() => runningHub.close());
    step('hub', { hub: hub.issuer, modelHost: hub.modelHostUrl });

    const agent = createTlsAgent({ extraCas: [hub.caPem] });
    cleanups.push(() => agent.close());
    const fetch = fetchWith(agent);
    let dataDir: string;
    if (options.dataDir === undefined) {
      dataDir = await mkdtemp(join(tmpdir(), 'companion-demo-'));
      const temp = dataDir;
      cleanups.push(() => rm(temp, { recursive: true, force: true }));
    } else {
      dataDir = options.dataDir;
      await prepareDemoDataDir(dataDir);
    }
    const paths = layout(dataDir);
    // As `up`: one companion per data dir (a demo kept in a folder could meet another there).
    const lock = await acquireUpLock(paths.upLock);
    cleanups.push(() => lock.release());
    const log = openLogFile(dataDir);
    cleanups.push(async () => log.close());
    log.write('demo', `started (pid ${process.pid})`);

    let backend: 'os' | 'memory' = 'memory';
    if (options.keychain !== 'memory') {
      const health = await openKeychain({
        backend: 'os',
        service: keychainServiceFor(hub.issuer, installationKey(dataDir)),
        timeoutMs: 5_000,
      })
        .health()
        .catch(() => null);
      if (health?.state === 'available') backend = 'os';
    }
    authority = createAuthorityGroup({
      hub: hub.issuer,
      installationKey: installationKey(dataDir),
      keychain: backend,
      fetch,
      manifestKeys: hub.manifestKey,
      manifestVersionFile: paths.manifestVersion,
      announce: (line) => options.report({ event: 'note', text: line }),
    });
    const signedIn = authority;
    cleanups.push(() => signedIn.signOut().catch(() => undefined));
    step('keychain', { backend: authority.keychain.backend });

    options.report({
      event: 'note',
      text: "the demo plays the browser's part: it fills in the reference hub's dev login and consent form over HTTPS",
    });
    const hubUser = hub.user;
    const hubPassword = hub.password;
    await authority.signIn({
      openBrowser: async (url) => {
        await completeSignInAsDevUser({ authorizationUrl: url, fetch, user: hubUser, password: hubPassword });
      },
      onOpen: () => undefined,
      timeoutMs: 60_000,
    });
    step('signed-in', { user: hub.user });

    const manifest = await authority.fetchManifest();
    const model = findModel(manifest);
    step('manifest', { version: manifest.version, model: model.id });
    await pullModel({ model, manifestVersion: manifest.version, modelsDir: paths.models, dispatcher: agent });
    step('verified', { model: model.id, bytes: model.size });

    let sandbox;
    try {
      sandbox = await resolveSandbox('required', () => undefined);
    } catch {
      // The demo must run on a fresh machine: without a sandbox tool it goes on, and says so loudly.
      sandbox = await resolveSandbox('off', (line) => options.report({ event: 'note', text: line }));
    }
    const { verifyToken, attest } = await authority.rotateLoopbackCapabilities();
    companion = await startRuntimeGroup({
      dataDir,
      verifyToken,
      attest,
      threads: options.threads ?? Math.min(2, Math.max(1, availableParallelism() - 1)),
      ...(sandbox.wrap ? { wrap: sandbox.wrap } : {}),
      sandboxMode: sandbox.mode,
      log: (source, text) => log.write(source, text),
    });
    const running = companion;
    const available = await companion.supervisor.waitAvailable(60_000);
    if (!available) throw new Error('the companion did not become available');
    const snap = companion.supervisor.snapshot();
    step('available', { endpoint: companion.endpoint, sandbox: sandbox.mode, runtimePid: snap.pid });

    const token = (await authority.loopbackToken())?.reveal() ?? '';
    const client = createLlmClient({
      local: () => ({ url: running.endpoint, token, model: model.id }),
      companionAvailable: () => running.supervisor.companionAvailable(),
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
    step('completion', { lane: result.lane, tokens: result.usage?.completionTokens ?? null });

    if (options.keepRunning) {
      options.report({ event: 'available', endpoint: companion.endpoint, token });
      await options.untilStopped;
    }
  } finally {
    if (companion !== null) await companion.close().catch(() => undefined);
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    step('stopped');
  }
}
