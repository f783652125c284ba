/**
 * The reference hub: an authorization server for one native public client, the signed manifest
 * endpoint, and a model host on a separate origin, all over HTTPS with a generated CA. The embedded
 * default of the demo and the server of the tests; docs/hub.md describes the contract it implements.
 *
 * ```ts
 * const hub = await startHub();            // 127.0.0.1, ephemeral ports, everything in memory
 * hub.issuer;                              // 'https://127.0.0.1:P' (= hubUrl, = discovery's issuer)
 * hub.caPem;                               // trust this, and only this, to talk to it
 * await hub.close();
 * ```
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { JWK } from 'oidc-provider';
import { CompanionError, assertInteger, assertString } from '../core/errors.js';
import { invalidArgument } from './args.js';
import {
  encodeManifestKey,
  generateManifestKeyPair,
  loadManifestPrivateKey,
  type ManifestModel,
} from '../core/manifest-format.js';
import {
  AUTH_BASE,
  COMPANION_CLIENT_ID,
  COMPANION_REDIRECT_URI,
  COMPANION_SCOPES,
  createAuthServer,
  type AuthServer,
} from './auth-server.js';
import { createHubTls, isUsableCa, type CertificateAndKey, type HubTlsMaterial } from './ca.js';
import { ensurePrivateDirSync, readJsonFileSync, writePrivateFileAtomicSync } from '../common/private-file.js';
import { acquireDirLock, readOptional } from './files.js';
import { MANIFEST_PATH, ManifestSigner, handleManifestRequest, resolveManifestVersion } from './manifest.js';
import { listenLoopbackHttps, sendPlainText, type LoopbackHttpsServer } from './https-server.js';
import {
  startModelHost,
  type HostedFile,
  type ModelHostMisbehaviour,
  type ModelHostRequestRecord,
  type RunningModelHost,
} from './model-host.js';
import { OidcStore } from './oidc-store.js';
import {
  preparePublishedModels,
  publishedModelIds,
  type ModelFileSpec,
  type PublishedModel,
  type SyntheticLlamaSpec,
} from './published-models.js';
import { assertSyntheticSpec, resolveSyntheticDigests, syntheticRange, type SyntheticModelSpec } from './synthetic.js';
import { generateTinyGguf } from './tiny-gguf.js';

export type { ModelHostMisbehaviour, ModelHostRequestRecord } from './model-host.js';
export type { SyntheticModelSpec } from './synthetic.js';
export type { ModelFileSpec, SyntheticLlamaSpec } from './published-models.js';
export { AUTH_BASE, COMPANION_CLIENT_ID, COMPANION_REDIRECT_URI, COMPANION_SCOPES } from './auth-server.js';
export { MANIFEST_PATH, MANIFEST_SCOPE } from './manifest.js';

/** The demo model's manifest id. */
export const DEMO_MODEL_ID = 'tiny-demo';
/** The seed of the demo model's weights. */
export const DEMO_MODEL_SEED = 1;

export interface HubOptions {
  /** Hub port on 127.0.0.1 (default 0: an ephemeral port). */
  readonly port?: number;
  /** Model host port on 127.0.0.1 (default 0). */
  readonly modelHostPort?: number;
  /**
   * Folder for everything the hub keeps (CA, keys, grants, dev password), created 0700, files 0600.
   * Absent: everything in memory, keys generated per start, nothing written.
   */
  readonly dataDir?: string;
  /** Dev login name (default `dev`). */
  readonly user?: string;
  /** Dev login password (default: random, kept in the data directory when there is one). */
  readonly password?: string;
  /** The companion client's scope ceiling (default `openid offline_access companion:manifest`). */
  readonly scopes?: readonly string[];
  /** Access token lifetime (default 300 s). */
  readonly accessTokenTtlSeconds?: number;
  /** Manifest lifetime from each signing (default 3600 s). */
  readonly manifestTtlSeconds?: number;
  /** Initial model host misbehaviour (fault tests). */
  readonly misbehave?: ModelHostMisbehaviour;
  /** Synthetic models served and listed after the demo model. */
  readonly extraModels?: readonly SyntheticModelSpec[];
  /**
   * Synthetic llamas of a named size (llama-gguf.ts presets), listed after `extraModels`: generated once
   * (cached in `dataDir` when there is one, else in a temporary folder removed on close).
   */
  readonly syntheticLlamas?: readonly SyntheticLlamaSpec[];
  /** Real GGUF files to publish (`companion hub --model FILE`), listed last; each digest computed once. */
  readonly modelFiles?: readonly ModelFileSpec[];
  /** Event lines (no secrets), e.g. for `companion hub`. Default: nothing. */
  readonly log?: (line: string) => void;
  /**
   * With `dataDir`: reuse the ports kept in `<dataDir>/ports.json` for `port` / `modelHostPort` when they
   * are not given, and keep the ports bound at each start there, so the hub URL (the issuer) and the
   * sign-ins made against it survive a restart (`companion hub --data-dir`). A remembered port that is
   * busy fails with ERR_HUB_PORT_BUSY: another port would silently be another issuer. Default false.
   */
  readonly rememberPorts?: boolean;
}

export interface RunningHub {
  /** The OAuth issuer: exactly the hub origin, `https://127.0.0.1:P` (no trailing slash). */
  readonly issuer: string;
  /** The hub URL (`--hub`); equal to `issuer`. */
  readonly hubUrl: string;
  /** Model host origin, `https://127.0.0.1:Q`. */
  readonly modelHostUrl: string;
  /** The CA that signed both server certificates (PEM). */
  readonly caPem: string;
  /** Where the CA was written (`<dataDir>/ca.pem`), or null without a data directory. */
  readonly caPath: string | null;
  /** The hub's server certificate (PEM), e.g. for pinning its key in a browser test. */
  readonly hubCertPem: string;
  /** The model host's server certificate (PEM). */
  readonly modelHostCertPem: string;
  /** The manifest signing key's public half, `ed25519:<b64url>`. */
  readonly manifestKey: string;
  /** The registered client id. */
  readonly clientId: string;
  /** The registered redirect URI (any port may be used with it). */
  readonly redirectUri: string;
  /** The client's scope ceiling. */
  readonly scopes: readonly string[];
  /** Dev login. */
  readonly user: string;
  readonly password: string;
  /** The models the manifest lists (public data: ids, URLs, sizes, digests). */
  readonly models: readonly ManifestModel[];
  /** The manifest version served by this run. */
  readonly manifestVersion: number;
  /** Changes how the model host misbehaves from the next request on (`{}` = behave). */
  setMisbehaviour(misbehaviour: ModelHostMisbehaviour): void;
  /** What the model host saw so far (header names only). */
  modelHostRequests(): readonly ModelHostRequestRecord[];
  /** Stops both servers, flushes the store, releases the data directory. Idempotent. */
  close(): Promise<void>;
}

const KNOWN_SCOPES = new Set(COMPANION_SCOPES);

function optionalInteger(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  assertInteger(value, name, min, max);
  return value;
}

interface HubKeys {
  readonly ca: CertificateAndKey | undefined;
  readonly manifestKey: KeyObject;
  readonly jwks: { keys: JWK[] };
  readonly cookieKeys: string[];
  readonly user: string;
  readonly password: string;
}

function newJwks(): { keys: JWK[] } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' }) as JWK;
  return { keys: [{ ...jwk, use: 'sig', alg: 'ES256' }] };
}

function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Loads the hub's keys from `dataDir`, generating (and storing) whatever is missing. */
function loadOrCreateKeys(dataDir: string | null, user: string | undefined, password: string | undefined): HubKeys {
  if (dataDir === null) {
    return {
      ca: undefined,
      manifestKey: generateManifestKeyPair().privateKey,
      jwks: newJwks(),
      cookieKeys: [newSecret(), newSecret()],
      user: user ?? 'dev',
      password: password ?? newSecret().slice(0, 20),
    };
  }
  const file = (name: string): string => join(dataDir, name);

  const caCert = readOptional(file('ca.pem'));
  const caKey = readOptional(file('ca-key.pem'));
  const storedCa =
    caCert !== null && caKey !== null
      ? { certPem: caCert.toString('utf8'), keyPem: caKey.toString('utf8') }
      : undefined;
  const ca = storedCa !== undefined && isUsableCa(storedCa) ? storedCa : undefined;

  let manifestKey: KeyObject;
  const manifestPem = readOptional(file('manifest-signing-key.pem'));
  if (manifestPem === null) {
    manifestKey = generateManifestKeyPair().privateKey;
    writePrivateFileAtomicSync(
      file('manifest-signing-key.pem'),
      manifestKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    );
  } else {
    manifestKey = loadManifestPrivateKey(manifestPem.toString('utf8'));
  }

  let jwks = readJsonFileSync(file('oidc-jwks.json'), 'a hub data file') as { keys: JWK[] } | null;
  if (jwks === null || !Array.isArray(jwks.keys) || jwks.keys.length === 0) {
    jwks = newJwks();
    writePrivateFileAtomicSync(file('oidc-jwks.json'), JSON.stringify(jwks));
  }

  let cookieKeys = readJsonFileSync(file('cookie-keys.json'), 'a hub data file') as string[] | null;
  if (
    !Array.isArray(cookieKeys) ||
    cookieKeys.length === 0 ||
    !cookieKeys.every((k) => typeof k === 'string' && k.length >= 32)
  ) {
    cookieKeys = [newSecret(), newSecret()];
    writePrivateFileAtomicSync(file('cookie-keys.json'), JSON.stringify(cookieKeys));
  }

  let login = readJsonFileSync(file('dev-login.json'), 'a hub data file') as {
    user?: unknown;
    password?: unknown;
  } | null;
  if (login === null || typeof login.user !== 'string' || typeof login.password !== 'string') {
    login = { user: user ?? 'dev', password: newSecret().slice(0, 20) };
    writePrivateFileAtomicSync(file('dev-login.json'), JSON.stringify(login));
  }
  return {
    ca,
    manifestKey,
    jwks,
    cookieKeys,
    user: user ?? (login.user as string),
    password: password ?? (login.password as string),
  };
}

function etagOf(sha256: string, size: number): string {
  return `"${createHash('sha256').update(`${sha256}:${size}`).digest('base64url').slice(0, 27)}"`;
}

function hostedBuffer(modelId: string, path: string, bytes: Buffer, sha256: string): HostedFile {
  return {
    modelId,
    path,
    size: bytes.length,
    etag: etagOf(sha256, bytes.length),
    open: (start, end) => Readable.from([bytes.subarray(start, end + 1)]),
  };
}

/** The ports a hub with `rememberPorts` kept in its data directory, or null (none yet). @throws ERR_CONFIG when damaged */
function readRememberedPorts(file: string): { hub: number; modelHost: number } | null {
  const value = readJsonFileSync(file, 'a hub data file') as { hub?: unknown; modelHost?: unknown } | null;
  if (value === null) return null;
  const isPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65_535;
  if (typeof value !== 'object' || !isPort(value.hub) || !isPort(value.modelHost)) {
    throw new CompanionError(
      'ERR_CONFIG',
      `the hub's remembered ports are damaged (${file}): remove the file to take new ports`,
    );
  }
  return { hub: value.hub, modelHost: value.modelHost };
}

/** Maps a bind failure on a remembered port to ERR_HUB_PORT_BUSY (the port is named: it is no secret). */
function rememberedBindError(error: unknown, what: string, port: number, file: string): unknown {
  if (error instanceof CompanionError && error.code === 'ERR_BIND_FAILED') {
    return new CompanionError(
      'ERR_HUB_PORT_BUSY',
      `the ${what} port ${port} that this hub remembered (${file}) is in use: stop what uses it, or pass --port 0 --model-host-port 0 to take new ports (the hub URL changes: sign in again)`,
      { cause: error },
    );
  }
  return error;
}

/** The options of {@link startHub}, checked and defaulted. */
interface HubSettings {
  readonly port: number;
  readonly modelHostPort: number;
  readonly accessTokenTtlSeconds: number;
  readonly manifestTtlSeconds: number;
  readonly scopes: string[];
  readonly extraModels: readonly SyntheticModelSpec[];
  readonly syntheticLlamas: readonly SyntheticLlamaSpec[];
  readonly modelFiles: readonly ModelFileSpec[];
  readonly dataDir: string | null;
  readonly log: (line: string) => void;
}

/** Checks every option before anything is touched. @throws TypeError ERR_INVALID_ARG_VALUE / ERR_INVALID_ARG_TYPE */
function hubSettings(options: HubOptions): HubSettings {
  const port = optionalInteger(options.port, 'port', 0, 0, 65_535);
  const modelHostPort = optionalInteger(options.modelHostPort, 'modelHostPort', 0, 0, 65_535);
  const accessTokenTtlSeconds = optionalInteger(options.accessTokenTtlSeconds, 'accessTokenTtlSeconds', 300, 1, 86_400);
  const manifestTtlSeconds = optionalInteger(options.manifestTtlSeconds, 'manifestTtlSeconds', 3600, 1, 30 * 86_400);
  const scopes = [...(options.scopes ?? COMPANION_SCOPES)];
  if (scopes.length === 0 || !scopes.every((s) => KNOWN_SCOPES.has(s)))
    throw invalidArgument('scopes', `a non-empty list among: ${COMPANION_SCOPES.join(' ')}`);
  if (options.user !== undefined && (typeof options.user !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(options.user)))
    throw invalidArgument('user', 'a name matching [A-Za-z0-9._-]{1,64}');
  if (options.password !== undefined) assertString(options.password, 'password');
  const extraModels = options.extraModels ?? [];
  for (const spec of extraModels) assertSyntheticSpec(spec);
  const syntheticLlamas = options.syntheticLlamas ?? [];
  const modelFiles = options.modelFiles ?? [];
  if (new Set([DEMO_MODEL_ID, ...extraModels.map((m) => m.id)]).size !== extraModels.length + 1)
    throw invalidArgument('extraModels', `models with unique ids other than ${DEMO_MODEL_ID}`);
  const ids = [DEMO_MODEL_ID, ...extraModels.map((m) => m.id), ...publishedModelIds(syntheticLlamas, modelFiles)];
  if (new Set(ids).size !== ids.length)
    throw invalidArgument(
      'syntheticLlamas and modelFiles',
      'models with unique ids (another id is needed: a model has the id of another)',
    );
  const dataDir = options.dataDir ?? null;
  const log = options.log ?? (() => undefined);
  return {
    port,
    modelHostPort,
    accessTokenTtlSeconds,
    manifestTtlSeconds,
    scopes,
    extraModels,
    syntheticLlamas,
    modelFiles,
    dataDir,
    log,
  };
}

/** A port to bind, and whether it came from `<dataDir>/ports.json`. */
interface WantedPort {
  readonly port: number;
  readonly remembered: boolean;
}

/** The ports to bind and, with `rememberPorts` and a data directory, the file that keeps them. */
interface PortPlan {
  readonly file: string | null;
  readonly hub: WantedPort;
  readonly modelHost: WantedPort;
}

/** The given ports, or the remembered ones for those not given. @throws ERR_CONFIG when the kept ports are damaged */
function planPorts(options: HubOptions, settings: HubSettings): PortPlan {
  const file =
    settings.dataDir !== null && options.rememberPorts === true ? join(settings.dataDir, 'ports.json') : null;
  const remembered = file === null ? null : readRememberedPorts(file);
  const hubRemembered = options.port === undefined && remembered !== null;
  const modelHostRemembered = options.modelHostPort === undefined && remembered !== null;
  return {
    file,
    hub: { port: hubRemembered ? remembered.hub : settings.port, remembered: hubRemembered },
    modelHost: {
      port: modelHostRemembered ? remembered.modelHost : settings.modelHostPort,
      remembered: modelHostRemembered,
    },
  };
}

/** Binds a wanted port; a remembered one that is busy fails with ERR_HUB_PORT_BUSY (see {@link rememberedBindError}). */
async function bindWanted<T>(
  plan: PortPlan,
  which: 'hub' | 'modelHost',
  bind: (port: number) => Promise<T>,
): Promise<T> {
  const wanted = plan[which];
  return bind(wanted.port).catch((error: unknown) => {
    throw wanted.remembered && plan.file !== null
      ? rememberedBindError(error, which === 'hub' ? 'hub' : 'model host', wanted.port, plan.file)
      : error;
  });
}

/** Steps that undo a start, run once, last added first. */
class Cleanups {
  readonly #steps: (() => Promise<void> | void)[] = [];

  add(step: () => Promise<void> | void): void {
    this.#steps.push(step);
  }

  async run(): Promise<void> {
    for (const step of this.#steps.splice(0).reverse()) await step();
  }
}

/** Keeps the CA in the data directory (its key only when it is new); returns where the certificate is. */
function storeCa(dataDir: string | null, keys: HubKeys, tls: HubTlsMaterial): string | null {
  if (dataDir === null) return null;
  if (keys.ca === undefined) writePrivateFileAtomicSync(join(dataDir, 'ca-key.pem'), tls.ca.keyPem);
  const caPath = join(dataDir, 'ca.pem');
  writePrivateFileAtomicSync(caPath, tls.ca.certPem);
  return caPath;
}

/** Every model the hub serves: the demo GGUF, the synthetic files, then the published models. */
interface Catalog {
  readonly demo: Buffer;
  readonly demoSha: string;
  readonly extraModels: readonly SyntheticModelSpec[];
  readonly extraDigests: readonly string[];
  readonly published: readonly PublishedModel[];
}

async function prepareCatalog(settings: HubSettings, cleanups: Cleanups): Promise<Catalog> {
  const demo = generateTinyGguf({ seed: DEMO_MODEL_SEED });
  const demoSha = createHash('sha256').update(demo).digest('hex');
  const extraDigests = await resolveSyntheticDigests(settings.extraModels, settings.dataDir);
  const { syntheticLlamas, modelFiles, dataDir, log } = settings;
  // Closed after the model host (cleanups run in reverse): no range is read from a closed descriptor.
  const published = await preparePublishedModels(syntheticLlamas, modelFiles, dataDir, log);
  cleanups.add(() => published.close());
  return { demo, demoSha, extraModels: settings.extraModels, extraDigests, published: published.models };
}

function hostedFiles(catalog: Catalog): HostedFile[] {
  const files: HostedFile[] = [
    hostedBuffer(DEMO_MODEL_ID, `/models/${DEMO_MODEL_ID}.gguf`, catalog.demo, catalog.demoSha),
  ];
  catalog.extraModels.forEach((spec, i) => {
    const sha = catalog.extraDigests[i]!;
    files.push({
      modelId: spec.id,
      path: `/models/${spec.id}.bin`,
      size: spec.size,
      etag: etagOf(sha, spec.size),
      open: (start, end) => syntheticRange(spec.seed, spec.size, start, end),
    });
  });
  for (const model of catalog.published)
    files.push({
      modelId: model.id,
      path: `/models/${model.id}.gguf`,
      size: model.size,
      etag: etagOf(model.sha256, model.size),
      open: model.open,
    });
  return files;
}

/** The manifest's list, in the order served: the demo, the synthetic files, the published models. */
function manifestModels(catalog: Catalog, modelHostUrl: string): ManifestModel[] {
  const runtime = (contextLength: number | undefined): Pick<ManifestModel, 'runtime'> =>
    contextLength === undefined ? {} : { runtime: { contextLength } };
  return [
    {
      id: DEMO_MODEL_ID,
      name: 'Tiny demo model (random weights, generated)',
      url: `${modelHostUrl}/models/${DEMO_MODEL_ID}.gguf`,
      size: catalog.demo.length,
      sha256: catalog.demoSha,
      runtime: { contextLength: 2048 },
    },
    ...catalog.extraModels.map((spec, i): ManifestModel => ({
      id: spec.id,
      name: spec.name ?? `Synthetic file ${spec.id}`,
      url: `${modelHostUrl}/models/${spec.id}.bin`,
      size: spec.size,
      sha256: catalog.extraDigests[i]!,
      ...runtime(spec.contextLength),
    })),
    ...catalog.published.map((model): ManifestModel => ({
      id: model.id,
      name: model.name,
      url: `${modelHostUrl}/models/${model.id}.gguf`,
      size: model.size,
      sha256: model.sha256,
      ...runtime(model.contextLength),
    })),
  ];
}

/** What the hub's request handler needs once the issuer is known. */
interface HubRoutes {
  readonly issuer: string;
  readonly expectedHost: string;
  readonly signer: ManifestSigner;
  readonly auth: AuthServer;
}

async function handleHubRequest(routes: HubRoutes, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { issuer, signer, auth } = routes;
  // One Host, exactly the issuer's: URLs the provider builds come from it, and it blocks rebinding.
  const hosts = req.rawHeaders.filter((_, i) => i % 2 === 0 && req.rawHeaders[i]!.toLowerCase() === 'host');
  if (hosts.length !== 1 || req.headers.host !== routes.expectedHost || !(req.url ?? '').startsWith('/')) {
    sendPlainText(res, 421, 'misdirected request: use the issuer URL');
    return;
  }
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  const path = (req.url ?? '').split('?')[0] ?? '';
  if (path === MANIFEST_PATH) {
    await handleManifestRequest(req, res, signer, (token) => auth.checkManifestToken(token));
    return;
  }
  if (await auth.handle(req, res)) return;
  if (path === '/' && (req.method === 'GET' || req.method === 'HEAD')) {
    sendPlainText(
      res,
      200,
      `Companion reference hub\nissuer ${issuer}\nauthorization server ${issuer}${AUTH_BASE}\nmanifest ${issuer}${MANIFEST_PATH}`,
    );
    return;
  }
  sendPlainText(res, 404, 'not found');
}

/** Answers 503 until the routes are set (the server binds before the issuer, which names its port, exists). */
async function dispatch(slot: { routes: HubRoutes | null }, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (slot.routes === null) sendPlainText(res, 503, 'starting');
  else await handleHubRequest(slot.routes, req, res);
}

/** The hub's HTTPS server, bound first: the issuer names its real port. `route()` makes it answer. */
async function startHubServer(
  tls: HubTlsMaterial,
  plan: PortPlan,
): Promise<{ listener: LoopbackHttpsServer; route(routes: HubRoutes): void }> {
  const slot: { routes: HubRoutes | null } = { routes: null };
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    dispatch(slot, req, res).catch(() => {
      if (!res.headersSent) sendPlainText(res, 500, 'internal error');
      else res.destroy();
    });
  };
  const tlsOptions = { key: tls.hub.keyPem, cert: tls.hub.certPem };
  const listener = await bindWanted(plan, 'hub', (port) => listenLoopbackHttps(tlsOptions, port, 'the hub', onRequest));
  return { listener, route: (routes) => (slot.routes = routes) };
}

/** The parts a running hub reports and controls. */
interface HubParts {
  readonly issuer: string;
  readonly tls: HubTlsMaterial;
  readonly caPath: string | null;
  readonly keys: HubKeys;
  readonly scopes: readonly string[];
  readonly models: readonly ManifestModel[];
  readonly signer: ManifestSigner;
  readonly modelHost: RunningModelHost;
  readonly cleanups: Cleanups;
}

function runningHub(parts: HubParts): RunningHub {
  const { issuer, tls, keys, modelHost } = parts;
  let closing: Promise<void> | null = null;
  return {
    issuer,
    hubUrl: issuer,
    modelHostUrl: modelHost.url,
    caPem: tls.ca.certPem,
    caPath: parts.caPath,
    hubCertPem: tls.hub.certPem,
    modelHostCertPem: tls.modelHost.certPem,
    manifestKey: encodeManifestKey(createPublicKey(keys.manifestKey)),
    clientId: COMPANION_CLIENT_ID,
    redirectUri: COMPANION_REDIRECT_URI,
    scopes: parts.scopes,
    user: keys.user,
    password: keys.password,
    models: parts.models,
    manifestVersion: parts.signer.version,
    setMisbehaviour: (m) => modelHost.setMisbehaviour(m),
    modelHostRequests: () => modelHost.requests(),
    close() {
      closing ??= parts.cleanups.run();
      return closing;
    },
  };
}

/** The start after the data directory is locked; the caller undoes what it did when it throws. */
async function startHubParts(options: HubOptions, settings: HubSettings, cleanups: Cleanups): Promise<RunningHub> {
  const { dataDir, log } = settings;
  const ports = planPorts(options, settings);
  const keys = loadOrCreateKeys(dataDir, options.user, options.password);
  const tls = await createHubTls(keys.ca);
  const caPath = storeCa(dataDir, keys, tls);
  // Closed after both servers (cleanups run in reverse), so in-flight requests still persist.
  const store = new OidcStore(dataDir === null ? null : join(dataDir, 'oidc'));
  cleanups.add(() => store.close());
  const catalog = await prepareCatalog(settings, cleanups);
  const modelHost = await bindWanted(ports, 'modelHost', (port) =>
    startModelHost({
      port,
      key: tls.modelHost.keyPem,
      cert: tls.modelHost.certPem,
      files: hostedFiles(catalog),
      ...(options.misbehave === undefined ? {} : { misbehaviour: options.misbehave }),
    }),
  );
  cleanups.add(() => modelHost.close());
  const models = manifestModels(catalog, modelHost.url);
  const hub = await startHubServer(tls, ports);
  cleanups.add(() => hub.listener.close());
  const issuer = `https://127.0.0.1:${hub.listener.port}`;
  // Kept once both are bound: the next start reuses them, so the issuer stays the same.
  if (ports.file !== null)
    writePrivateFileAtomicSync(ports.file, JSON.stringify({ hub: hub.listener.port, modelHost: modelHost.port }));
  const auth = createAuthServer({
    issuer,
    store,
    jwks: keys.jwks,
    cookieKeys: keys.cookieKeys,
    user: keys.user,
    password: keys.password,
    clientScopes: settings.scopes,
    accessTokenTtlSeconds: settings.accessTokenTtlSeconds,
    log,
  });
  const signer = new ManifestSigner({
    issuer,
    privateKey: keys.manifestKey,
    ttlSeconds: settings.manifestTtlSeconds,
    models,
    version: resolveManifestVersion(models, issuer, dataDir, Math.floor(Date.now() / 1000)),
  });
  hub.route({ issuer, expectedHost: `127.0.0.1:${hub.listener.port}`, signer, auth });
  return runningHub({ issuer, tls, caPath, keys, scopes: settings.scopes, models, signer, modelHost, cleanups });
}

/**
 * Starts the reference hub and its model host on 127.0.0.1.
 * @throws TypeError ERR_INVALID_ARG_VALUE / ERR_INVALID_ARG_TYPE for bad options; ERR_CONFIG for an unusable data directory,
 *   ERR_LOCKED_BY_OTHER when another hub uses the data directory, ERR_BIND_FAILED when a port is taken,
 *   ERR_HUB_PORT_BUSY when a port remembered with `rememberPorts` is taken.
 */
export async function startHub(options: HubOptions = {}): Promise<RunningHub> {
  const settings = hubSettings(options);
  const cleanups = new Cleanups();
  if (settings.dataDir !== null) {
    ensurePrivateDirSync(settings.dataDir);
    cleanups.add(acquireDirLock(settings.dataDir));
  }
  try {
    return await startHubParts(options, settings, cleanups);
  } catch (error) {
    await cleanups.run();
    throw error;
  }
}
