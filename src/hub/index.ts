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
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
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
} from './auth-server.js';
import { createHubTls, isUsableCa, type CertificateAndKey } from './ca.js';
import { ensurePrivateDirSync, readJsonFileSync, writePrivateFileAtomicSync } from '../common/private-file.js';
import { acquireDirLock, readOptional } from './files.js';
import { MANIFEST_PATH, ManifestSigner, handleManifestRequest, resolveManifestVersion } from './manifest.js';
import {
  startModelHost,
  type HostedFile,
  type ModelHostMisbehaviour,
  type ModelHostRequestRecord,
} from './model-host.js';
import { OidcStore } from './oidc-store.js';
import {
  preparePublishedModels,
  publishedModelIds,
  type ModelFileSpec,
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

function reply(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  const body = Buffer.from(`${text}\n`, 'utf8');
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(body.length),
    'Cache-Control': 'no-store',
    ...extra,
  });
  res.end(body);
}

async function listen(server: Server, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(new CompanionError('ERR_BIND_FAILED', 'the hub could not listen on 127.0.0.1', { cause: error })),
    );
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new CompanionError('ERR_BIND_FAILED');
  return address.port;
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

/**
 * Starts the reference hub and its model host on 127.0.0.1.
 * @throws TypeError ERR_INVALID_ARG_VALUE / ERR_INVALID_ARG_TYPE for bad options; ERR_CONFIG for an unusable data directory,
 *   ERR_LOCKED_BY_OTHER when another hub uses the data directory, ERR_BIND_FAILED when a port is taken,
 *   ERR_HUB_PORT_BUSY when a port remembered with `rememberPorts` is taken.
 */
export async function startHub(options: HubOptions = {}): Promise<RunningHub> {
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
  const log = options.log ?? (() => undefined);

  const dataDir = options.dataDir ?? null;
  let release: () => void = () => undefined;
  if (dataDir !== null) {
    ensurePrivateDirSync(dataDir);
    release = acquireDirLock(dataDir);
  }
  const cleanups: (() => Promise<void> | void)[] = [release];
  const cleanup = async (): Promise<void> => {
    for (const step of cleanups.reverse()) await step();
  };

  try {
    const portsFile = dataDir !== null && options.rememberPorts === true ? join(dataDir, 'ports.json') : null;
    const remembered = portsFile === null ? null : readRememberedPorts(portsFile);
    const hubPortRemembered = options.port === undefined && remembered !== null;
    const modelHostPortRemembered = options.modelHostPort === undefined && remembered !== null;
    const hubPortWanted = hubPortRemembered ? remembered.hub : port;
    const modelHostPortWanted = modelHostPortRemembered ? remembered.modelHost : modelHostPort;
    const keys = loadOrCreateKeys(dataDir, options.user, options.password);
    const tls = await createHubTls(keys.ca);
    let caPath: string | null = null;
    if (dataDir !== null) {
      if (keys.ca === undefined) writePrivateFileAtomicSync(join(dataDir, 'ca-key.pem'), tls.ca.keyPem);
      caPath = join(dataDir, 'ca.pem');
      writePrivateFileAtomicSync(caPath, tls.ca.certPem);
    }

    // Closed after both servers (cleanups run in reverse), so in-flight requests still persist.
    const store = new OidcStore(dataDir === null ? null : join(dataDir, 'oidc'));
    cleanups.push(() => store.close());

    // Model files: the demo GGUF, then the synthetic ones.
    const demo = generateTinyGguf({ seed: DEMO_MODEL_SEED });
    const demoSha = createHash('sha256').update(demo).digest('hex');
    const syntheticDigests = await resolveSyntheticDigests(extraModels, dataDir);
    const files: HostedFile[] = [hostedBuffer(DEMO_MODEL_ID, `/models/${DEMO_MODEL_ID}.gguf`, demo, demoSha)];
    extraModels.forEach((spec, i) => {
      const sha = syntheticDigests[i]!;
      files.push({
        modelId: spec.id,
        path: `/models/${spec.id}.bin`,
        size: spec.size,
        etag: etagOf(sha, spec.size),
        open: (start, end) => syntheticRange(spec.seed, spec.size, start, end),
      });
    });
    // Closed after the model host (cleanups run in reverse): no range is read from a closed descriptor.
    const published = await preparePublishedModels(syntheticLlamas, modelFiles, dataDir, log);
    cleanups.push(() => published.close());
    for (const model of published.models)
      files.push({
        modelId: model.id,
        path: `/models/${model.id}.gguf`,
        size: model.size,
        etag: etagOf(model.sha256, model.size),
        open: model.open,
      });

    const modelHost = await startModelHost({
      port: modelHostPortWanted,
      key: tls.modelHost.keyPem,
      cert: tls.modelHost.certPem,
      files,
      ...(options.misbehave === undefined ? {} : { misbehaviour: options.misbehave }),
    }).catch((error: unknown) => {
      throw modelHostPortRemembered && portsFile !== null
        ? rememberedBindError(error, 'model host', modelHostPortWanted, portsFile)
        : error;
    });
    cleanups.push(() => modelHost.close());

    const models: ManifestModel[] = [
      {
        id: DEMO_MODEL_ID,
        name: 'Tiny demo model (random weights, generated)',
        url: `${modelHost.url}/models/${DEMO_MODEL_ID}.gguf`,
        size: demo.length,
        sha256: demoSha,
        runtime: { contextLength: 2048 },
      },
      ...extraModels.map((spec, i): ManifestModel => ({
        id: spec.id,
        name: spec.name ?? `Synthetic file ${spec.id}`,
        url: `${modelHost.url}/models/${spec.id}.bin`,
        size: spec.size,
        sha256: syntheticDigests[i]!,
        ...(spec.contextLength === undefined ? {} : { runtime: { contextLength: spec.contextLength } }),
      })),
      ...published.models.map((model): ManifestModel => ({
        id: model.id,
        name: model.name,
        url: `${modelHost.url}/models/${model.id}.gguf`,
        size: model.size,
        sha256: model.sha256,
        ...(model.contextLength === undefined ? {} : { runtime: { contextLength: model.contextLength } }),
      })),
    ];

    // The hub server listens first: the issuer names its real port.
    let handler: (req: IncomingMessage, res: ServerResponse) => Promise<void> = async (_req, res) =>
      reply(res, 503, 'starting');
    const sockets = new Set<Socket>();
    const server = createServer({ key: tls.hub.keyPem, cert: tls.hub.certPem, minVersion: 'TLSv1.2' }, (req, res) => {
      handler(req, res).catch(() => {
        if (!res.headersSent) reply(res, 500, 'internal error');
        else res.destroy();
      });
    });
    server.headersTimeout = 20_000;
    server.requestTimeout = 30_000;
    server.keepAliveTimeout = 5_000;
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    server.on('tlsClientError', () => undefined);
    const hubPort = await listen(server, hubPortWanted).catch((error: unknown) => {
      throw hubPortRemembered && portsFile !== null
        ? rememberedBindError(error, 'hub', hubPortWanted, portsFile)
        : error;
    });
    cleanups.push(async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await closed;
    });
    const issuer = `https://127.0.0.1:${hubPort}`;
    // Kept once both are bound: the next start reuses them, so the issuer stays the same.
    if (portsFile !== null)
      writePrivateFileAtomicSync(
        portsFile,
        JSON.stringify({ hub: hubPort, modelHost: Number(new URL(modelHost.url).port) }),
      );
    const expectedHost = `127.0.0.1:${hubPort}`;

    const auth = createAuthServer({
      issuer,
      store,
      jwks: keys.jwks,
      cookieKeys: keys.cookieKeys,
      user: keys.user,
      password: keys.password,
      clientScopes: scopes,
      accessTokenTtlSeconds,
      log,
    });
    const signer = new ManifestSigner({
      issuer,
      privateKey: keys.manifestKey,
      ttlSeconds: manifestTtlSeconds,
      models,
      version: resolveManifestVersion(models, issuer, dataDir, Math.floor(Date.now() / 1000)),
    });

    handler = async (req, res) => {
      // One Host, exactly the issuer's: URLs the provider builds come from it, and it blocks rebinding.
      const hosts = req.rawHeaders.filter((_, i) => i % 2 === 0 && req.rawHeaders[i]!.toLowerCase() === 'host');
      if (hosts.length !== 1 || req.headers.host !== expectedHost || !(req.url ?? '').startsWith('/')) {
        reply(res, 421, 'misdirected request: use the issuer URL');
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
        reply(
          res,
          200,
          `Companion reference hub\nissuer ${issuer}\nauthorization server ${issuer}${AUTH_BASE}\nmanifest ${issuer}${MANIFEST_PATH}`,
        );
        return;
      }
      reply(res, 404, 'not found');
    };

    let closing: Promise<void> | null = null;
    return {
      issuer,
      hubUrl: issuer,
      modelHostUrl: modelHost.url,
      caPem: tls.ca.certPem,
      caPath,
      hubCertPem: tls.hub.certPem,
      modelHostCertPem: tls.modelHost.certPem,
      manifestKey: encodeManifestKey(createPublicKey(keys.manifestKey)),
      clientId: COMPANION_CLIENT_ID,
      redirectUri: COMPANION_REDIRECT_URI,
      scopes,
      user: keys.user,
      password: keys.password,
      models,
      manifestVersion: signer.version,
      setMisbehaviour: (m) => modelHost.setMisbehaviour(m),
      modelHostRequests: () => modelHost.requests(),
      close() {
        closing ??= cleanup();
        return closing;
      },
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
