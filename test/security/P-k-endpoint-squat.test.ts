// P-k endpoint squatting (issue 16 item 3). After an unclean exit of `companion up` its discovery file
// (<data dir>/run/endpoint.json) stays behind; its pid can be reused and its port taken by ANOTHER LOCAL
// USER. The real CLI (`companion endpoint | status | run --tier local-only PROMPT`) must then send neither
// the loopback token nor the prompt there, print no token, and say the companion is not running.
//
// The squatter is a real HTTP server running as user `nobody` (setpriv), on 127.0.0.1, that records every
// request it receives and otherwise plays a companion that accepts anything (so that a client that trusted
// it would go on to send the token and the prompt). Variants: the record names a dead pid; a pid reused by
// the squatter itself or by an unrelated process; a squatter that answers the attestation with garbage; a
// relay that forwards the challenge to the real front door on another port. The loopback token sits in a
// private, real Secret Service (gnome-keyring), where the CLI reads it as in production. A real `up`
// (the bundled runtime on the tiny model) is the control and the relay's target.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { keychainServiceFor } from '../../src/authority/keychain.js';
import { ATTEST_ROUTE, createAttestNonce, verifyAttestation } from '../../src/core/attest.js';
import { readProcessIdentity } from '../../src/common/process-identity.js';
import { installationKey } from '../../src/shell/config.js';
import { claimDiscovery, DISCOVERY_FORMAT, readDiscovery } from '../../src/runtime/manager/discovery.js';
import { installTinyModel } from '../helpers/assurance-runtime.js';
import { runCli, startCli, type CliResult, type LongRunning } from '../helpers/cli.js';
import { gate } from '../helpers/gate.js';
import {
  okValue,
  openKeychainChild,
  secretServiceAvailable,
  startSecretService,
  type KeychainChild,
  type SecretServiceHandle,
} from '../helpers/secret-service.js';

const SETPRIV = '/usr/bin/setpriv';
const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;
// The hub is never contacted by endpoint, status, run or up: it only names the keychain service.
const HUB = 'https://127.0.0.1:9';
const NODE_EXE = realpathSync(process.execPath);

const options = {
  ...gate(
    'root (the squatter runs as user nobody through setpriv)',
    asRoot && existsSync(SETPRIV),
    'run the security tier as root with util-linux setpriv',
  ),
  ...gate('gnome-keyring', secretServiceAvailable, 'apt-get install gnome-keyring dbus'),
  timeout: 240_000,
};

// The squatter: CommonJS, written to a folder that `nobody` can read. One JSON line per event on stdout.
const SQUATTER = String.raw`'use strict';
const http = require('node:http');
const [mode, relayPortText] = process.argv.slice(2);
const relayPort = Number(relayPortText || 0);
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');
function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
function relay(req, res) {
  // Forward the challenge to the real front door, as it must be addressed there (its own Host).
  const upstream = http.request({ host: '127.0.0.1', port: relayPort, method: 'GET', path: req.url,
    headers: { host: '127.0.0.1:' + relayPort, 'companion-nonce': String(req.headers['companion-nonce'] || '') } }, (answer) => {
    const chunks = [];
    answer.on('data', (c) => chunks.push(c));
    answer.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      out({ event: 'relayed', status: answer.statusCode, body });
      send(res, answer.statusCode, 'application/json', body);
    });
  });
  upstream.on('error', (e) => { out({ event: 'relay-error', code: e.code }); send(res, 502, 'text/plain', 'relay failed'); });
  upstream.end();
}
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    out({ event: 'request', method: req.method, url: req.url, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString('latin1') });
    if (req.url.startsWith('/__sync')) return send(res, 200, 'text/plain', 'ok');
    if (req.url.startsWith('/companion/attest')) {
      if (mode === 'garbage') return send(res, 200, 'application/json', JSON.stringify({ mac: 'A'.repeat(43) }));
      if (mode === 'relay') return relay(req, res);
    }
    // Anything else: play a companion that accepts everything.
    if (req.url.startsWith('/health')) return send(res, 200, 'application/json', '{"status":"ready"}');
    if (req.url.startsWith('/v1/chat/completions')) {
      return send(res, 200, 'text/event-stream', 'data: {"choices":[{"delta":{"content":"SQUATTED"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n');
    }
    return send(res, 200, 'application/json', '{"object":"list","data":[]}');
  });
});
server.on('clientError', (error, socket) => { out({ event: 'client-error', code: error.code }); socket.destroy(); });
server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port, pid: process.pid, uid: process.getuid() }));
`;

interface SquatterEvent {
  readonly event: string;
  readonly method?: string;
  readonly url?: string;
  readonly rawHeaders?: string[];
  readonly body?: string;
  readonly status?: number;
  readonly port?: number;
  readonly pid?: number;
  readonly uid?: number;
}

interface Squatter {
  readonly port: number;
  readonly pid: number;
  readonly uid: number;
  /** Every request it received (the test's own sync probes left out), after all earlier ones arrived. */
  requests(): Promise<SquatterEvent[]>;
  /** The answers the relay got from the real front door. */
  relayed(): SquatterEvent[];
  stop(): Promise<void>;
}

let squatterDir = '';

async function startSquatter(mode: 'plain' | 'garbage' | 'relay', relayPort = 0): Promise<Squatter> {
  const script = join(squatterDir, 'squatter.cjs');
  const child: ChildProcessWithoutNullStreams = spawn(
    SETPRIV,
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', NODE_EXE, script, mode, String(relayPort)],
    {
      cwd: squatterDir,
      env: { PATH: '/usr/bin:/bin' },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  const events: SquatterEvent[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  createInterface({ input: child.stdout }).on('line', (line) => {
    events.push(JSON.parse(line) as SquatterEvent);
    for (const wake of waiters) wake();
  });
  const waitFor = (predicate: (e: SquatterEvent) => boolean, what: string): Promise<SquatterEvent> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = events.find(predicate);
        if (found !== undefined) {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`squatter: no ${what} in time; stderr: ${stderr.slice(0, 500)}`));
      }, 10_000);
      waiters.add(check);
      check();
    });
  const listening = await waitFor((e) => e.event === 'listening', 'listening line');
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let syncs = 0;
  return {
    port: listening.port!,
    pid: listening.pid!,
    uid: listening.uid!,
    async requests() {
      // A request of our own after the CLI is done: once it is logged, every earlier one is too (one pipe).
      const marker = `/__sync?n=${++syncs}`;
      await httpCall(listening.port!, { path: marker, headers: { host: `127.0.0.1:${listening.port!}` } });
      await waitFor((e) => e.event === 'request' && e.url === marker, 'sync request');
      return events.filter((e) => e.event === 'request' && !(e.url ?? '').startsWith('/__sync'));
    },
    relayed: () => events.filter((e) => e.event === 'relayed'),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** One raw HTTP/1.1 request to 127.0.0.1:port with exactly the given headers. */
function httpCall(
  port: number,
  options: { method?: string; path: string; headers: Record<string, string | string[]> },
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path,
        headers: { connection: 'close', ...options.headers },
        agent: false,
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

let secrets: SecretServiceHandle;
const keychains = new Map<string, KeychainChild>();
let root = '';
let env: NodeJS.ProcessEnv = {};

/** The real keychain on the data dir's service (the loopback token is keyed by hub and data dir). */
async function keychainOf(dataDir: string): Promise<KeychainChild> {
  const service = keychainServiceFor(HUB, installationKey(dataDir));
  let keychain = keychains.get(service);
  if (keychain === undefined) {
    keychain = await openKeychainChild(secrets.env, { service });
    keychains.set(service, keychain);
  }
  return keychain;
}

async function storedToken(dataDir: string): Promise<string> {
  const keychain = await keychainOf(dataDir);
  const value = okValue(await keychain.call('get', 'loopback-token'), 'get loopback-token', keychain);
  assert.ok(typeof value === 'string', 'a loopback token is in the keychain');
  return value;
}

/** Stores `token` (default: a random one, as a previous `up` left after an unclean exit) for `dataDir`. */
async function seedToken(dataDir: string, token = randomBytes(32).toString('base64url')): Promise<void> {
  const set = await (await keychainOf(dataDir)).call('set', 'loopback-token', token);
  assert.ok(set.ok);
}

/** A data dir with the tiny model installed, so the clients' only reason to refuse is the endpoint. */
function freshDataDir(name: string): string {
  const dir = join(root, name);
  mkdirSync(join(dir, 'run'), { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  installTinyModel(dir);
  return dir;
}

function writeRecord(dataDir: string, record: Record<string, unknown>): void {
  mkdirSync(join(dataDir, 'run'), { recursive: true, mode: 0o700 });
  writeFileSync(join(dataDir, 'run', 'endpoint.json'), JSON.stringify(record), { mode: 0o600 });
}

function recordFor(port: number, identity: { pid: number; startTime: string; exe: string }): Record<string, unknown> {
  return {
    format: DISCOVERY_FORMAT,
    url: `http://127.0.0.1:${port}/v1`,
    pid: identity.pid,
    startTime: identity.startTime,
    exe: identity.exe,
    startedAt: Date.now() - 60_000,
  };
}

/** A pid that was alive a moment ago and is not now. */
async function deadPid(): Promise<number> {
  const child = spawn('/bin/true', [], { stdio: 'ignore' });
  const pid = child.pid!;
  await new Promise<void>((resolve) => child.once('close', () => resolve()));
  return pid;
}

interface Clients {
  readonly dataDir: string;
  readonly endpoint: CliResult;
  readonly status: CliResult;
  readonly run: CliResult;
  readonly prompt: string;
}

/** The three clients a user or a local program runs, against `dataDir`. */
async function runClients(dataDir: string): Promise<Clients> {
  const common = ['--hub', HUB, '--data-dir', dataDir];
  // A token for this data dir, as a previous `up` left it (unless the test stored one).
  const held = await (await keychainOf(dataDir)).call('get', 'loopback-token');
  if (!held.ok || held.value === null) await seedToken(dataDir);
  const prompt = `secret prompt text ${randomBytes(6).toString('hex')}`;
  const endpoint = await runCli(['endpoint', '--json', ...common], env, 30_000);
  const status = await runCli(['status', '--json', ...common], env, 30_000);
  const run = await runCli(['run', prompt, '--tier', 'local-only', '--max-tokens', '4', ...common], env, 30_000);
  return { dataDir, endpoint, status, run, prompt };
}

/**
 * The attack was refused: nothing but (at most) attestation challenges reached the squatter, none with a
 * credential or a body, nothing holds the token or the prompt; no CLI output holds the token; `endpoint`
 * and `run` failed, `status` says unavailable with no endpoint.
 */
async function assertRefused(
  clients: Clients,
  squatter: Squatter,
  expect: { challenges: 'none' | 'only'; endpointCode: string },
): Promise<void> {
  const token = await storedToken(clients.dataDir);
  const requests = await squatter.requests();
  for (const r of requests) {
    const headers = r.rawHeaders ?? [];
    const names = headers.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    assert.ok(
      !names.includes('authorization'),
      `the squatter received an Authorization header on ${r.method} ${r.url}`,
    );
    assert.equal(r.body, '', `the squatter received a body on ${r.method} ${r.url}`);
    const seen = JSON.stringify(r);
    assert.ok(!seen.includes(token), 'the squatter received the loopback token');
    assert.ok(!seen.includes(clients.prompt), 'the squatter received the prompt');
    assert.equal(
      `${r.method} ${(r.url ?? '').split('?')[0]}`,
      `${ATTEST_ROUTE.method} ${ATTEST_ROUTE.path}`,
      `only attestation challenges reach a door not yet trusted, not ${r.method} ${r.url}`,
    );
  }
  if (expect.challenges === 'none') assert.deepEqual(requests, [], 'a stale record is not even contacted');
  else assert.ok(requests.length >= 1, "the clients challenged the live record's door");

  for (const [name, result] of Object.entries({
    endpoint: clients.endpoint,
    status: clients.status,
    run: clients.run,
  })) {
    assert.ok(!result.stdout.includes(token) && !result.stderr.includes(token), `companion ${name} printed the token`);
    assert.ok(!result.stdout.includes('SQUATTED'), `companion ${name} showed the squatter's answer`);
  }
  assert.equal(clients.endpoint.status, 1, clients.endpoint.stderr);
  // --json: stdout holds the one error object of the CLI, and nothing else (no URL, no token).
  const lines = clients.endpoint.stdout.trim().split('\n');
  assert.equal(lines.length, 1, `endpoint printed one line on stdout: ${clients.endpoint.stdout}`);
  assert.equal((JSON.parse(lines[0]!) as { error?: { code?: unknown } }).error?.code, expect.endpointCode);
  assert.match(clients.endpoint.stderr, new RegExp(`\\[${expect.endpointCode}\\]`));
  if (expect.endpointCode === 'ERR_UPSTREAM_UNAVAILABLE') assert.match(clients.endpoint.stderr, /not running/);

  // A stale record is a state ("not running": exit 0); a live one whose door fails the attestation is a
  // fault `status` reports with exit 1 and, after its report, the CLI's one error object.
  const statusLines = clients.status.stdout.trim().split('\n');
  if (expect.endpointCode === 'ERR_ENDPOINT_UNVERIFIED') {
    assert.equal(clients.status.status, 1, clients.status.stderr);
    assert.equal(statusLines.length, 2, clients.status.stdout);
    assert.equal(
      (JSON.parse(statusLines[1]!) as { error?: { code?: unknown } }).error?.code,
      'ERR_ENDPOINT_UNVERIFIED',
    );
  } else {
    assert.equal(clients.status.status, 0, clients.status.stderr);
    assert.equal(statusLines.length, 1, clients.status.stdout);
  }
  const status = JSON.parse(statusLines[0]!) as Record<string, unknown>;
  assert.equal(status.companionAvailable, false);
  assert.equal(status.endpoint, null);

  // run names the same cause as endpoint (not running, or the door failed the attestation), never a lane code.
  assert.notEqual(clients.run.status, 0);
  assert.match(clients.run.stderr, new RegExp(`\\[${expect.endpointCode}\\]`), clients.run.stderr);
}

let up: LongRunning | null = null;
let upDir = '';
let upEndpoint = '';

/** A real `companion up` on the tiny model (started once, on first use). */
async function realUp(): Promise<{ dataDir: string; endpoint: string; port: number; record: Record<string, unknown> }> {
  if (up === null) {
    upDir = freshDataDir('up');
    up = startCli(['up', '--json', '--threads', '1', '--allow-unsandboxed', '--hub', HUB, '--data-dir', upDir], env);
    const available = await up.waitJson((v) => v.event === 'available', 90_000);
    upEndpoint = String(available.endpoint);
  }
  const record = JSON.parse(readFileSync(join(upDir, 'run', 'endpoint.json'), 'utf8')) as Record<string, unknown>;
  return { dataDir: upDir, endpoint: upEndpoint, port: Number(new URL(upEndpoint).port), record };
}

describe('P-k endpoint squatting by another local user', options, () => {
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'companion-squat-'));
    squatterDir = mkdtempSync(join(tmpdir(), 'companion-squatter-'));
    writeFileSync(join(squatterDir, 'squatter.cjs'), SQUATTER, { mode: 0o644 });
    chmodSync(squatterDir, 0o755);
    secrets = await startSecretService();
    env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...secrets.env };
  });

  after(async () => {
    if (up !== null) assert.equal(await up.stop(), 0, up.stderr());
    for (const keychain of keychains.values()) await keychain.close();
    await secrets?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(squatterDir, { recursive: true, force: true });
  });

  test('P-k P-c a stale endpoint file naming a dead pid: endpoint, status and run send nothing to the squatter on its port and print no token', async (t) => {
    const squatter = await startSquatter('plain');
    t.after(() => squatter.stop());
    assert.equal(squatter.uid, NOBODY, 'the squatter is another user');
    const dataDir = freshDataDir('dead');
    writeRecord(dataDir, recordFor(squatter.port, { pid: await deadPid(), startTime: '4242', exe: NODE_EXE }));
    await assertRefused(await runClients(dataDir), squatter, {
      challenges: 'none',
      endpointCode: 'ERR_UPSTREAM_UNAVAILABLE',
    });
  });

  test('P-k P-c a stale endpoint file whose pid the squatter (another user) now has: nothing is sent to it and no token is printed', async (t) => {
    const squatter = await startSquatter('plain');
    t.after(() => squatter.stop());
    const identity = readProcessIdentity(squatter.pid);
    assert.ok(identity !== null && identity.exe !== null);
    // Same pid, same program (node) as the companion that wrote the record; only the start time tells them apart.
    const dataDir = freshDataDir('reused-by-squatter');
    writeRecord(
      dataDir,
      recordFor(squatter.port, {
        pid: squatter.pid,
        startTime: String(Number(identity.startTime) - 100),
        exe: identity.exe,
      }),
    );
    await assertRefused(await runClients(dataDir), squatter, {
      challenges: 'none',
      endpointCode: 'ERR_UPSTREAM_UNAVAILABLE',
    });
    // A record in the format written before identity was recorded ({url, pid, startedAt}) is stale too.
    writeRecord(dataDir, {
      url: `http://127.0.0.1:${squatter.port}/v1`,
      pid: squatter.pid,
      startedAt: Date.now() - 60_000,
    });
    await assertRefused(await runClients(dataDir), squatter, {
      challenges: 'none',
      endpointCode: 'ERR_UPSTREAM_UNAVAILABLE',
    });
  });

  test('P-k P-c a stale endpoint file whose pid an unrelated live process reused: nothing is sent to the squatter on the port', async (t) => {
    const squatter = await startSquatter('plain');
    t.after(() => squatter.stop());
    const unrelated = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    t.after(() => unrelated.kill('SIGKILL'));
    const identity = readProcessIdentity(unrelated.pid!);
    assert.ok(identity !== null);
    const dataDir = freshDataDir('reused-by-other');
    writeRecord(
      dataDir,
      recordFor(squatter.port, {
        pid: unrelated.pid!,
        startTime: String(Number(identity.startTime) - 1),
        exe: NODE_EXE,
      }),
    );
    await assertRefused(await runClients(dataDir), squatter, {
      challenges: 'none',
      endpointCode: 'ERR_UPSTREAM_UNAVAILABLE',
    });
    // Even the right start time with another program (the record says node, the process is sleep) is stale.
    writeRecord(
      dataDir,
      recordFor(squatter.port, { pid: unrelated.pid!, startTime: identity.startTime, exe: NODE_EXE }),
    );
    await assertRefused(await runClients(dataDir), squatter, {
      challenges: 'none',
      endpointCode: 'ERR_UPSTREAM_UNAVAILABLE',
    });
  });

  test('P-k with a real companion up, endpoint, status and run work through the attestation (control)', async () => {
    const real = await realUp();
    const common = ['--hub', HUB, '--data-dir', real.dataDir];
    const token = await storedToken(real.dataDir);
    const endpoint = await runCli(['endpoint', '--json', ...common], env, 30_000);
    assert.equal(endpoint.status, 0, endpoint.stderr);
    assert.deepEqual(JSON.parse(endpoint.stdout), { url: real.endpoint, token });
    let status: Record<string, unknown> = {};
    for (let i = 0; i < 20 && status.companionAvailable !== true; i++) {
      const result = await runCli(['status', '--json', ...common], env, 30_000);
      assert.equal(result.status, 0, result.stderr);
      status = JSON.parse(result.stdout) as Record<string, unknown>;
      if (status.companionAvailable !== true) await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(status.companionAvailable, true, JSON.stringify(status));
    assert.equal(status.endpoint, real.endpoint);
    assert.ok(!JSON.stringify(status).includes(token));
    const run = await runCli(['run', 'Say hello', '--tier', 'local-only', '--max-tokens', '4', ...common], env, 60_000);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /lane: companion/);
  });

  test('P-k P-f the front door answers GET /companion/attest without a token only after its other checks: a MAC and never the token, no-store, no CORS', async () => {
    const real = await realUp();
    const token = await storedToken(real.dataDir);
    const host = `127.0.0.1:${real.port}`;
    const nonce = createAttestNonce();
    const ok = await httpCall(real.port, { path: ATTEST_ROUTE.path, headers: { host, 'companion-nonce': nonce } });
    assert.equal(ok.status, 200, ok.body);
    const mac = (JSON.parse(ok.body) as { mac: unknown }).mac;
    assert.equal(verifyAttestation(token, host, nonce, mac), true);
    assert.ok(!ok.body.includes(token));
    assert.equal(ok.headers['cache-control'], 'no-store');
    assert.equal(ok.headers['x-content-type-options'], 'nosniff');
    assert.deepEqual(
      Object.keys(ok.headers).filter((h) => h.startsWith('access-control-')),
      [],
    );
    // Another accepted name of the door gets a MAC over that name, not over 127.0.0.1.
    const named = await httpCall(real.port, {
      path: ATTEST_ROUTE.path,
      headers: { host: `localhost:${real.port}`, 'companion-nonce': nonce },
    });
    assert.equal(
      verifyAttestation(token, `localhost:${real.port}`, nonce, (JSON.parse(named.body) as { mac: unknown }).mac),
      true,
    );
    assert.equal(verifyAttestation(token, host, nonce, (JSON.parse(named.body) as { mac: unknown }).mac), false);

    const refused: [string, Parameters<typeof httpCall>[1], number, string][] = [
      ['no nonce', { path: ATTEST_ROUTE.path, headers: { host } }, 400, 'ERR_ATTEST_NONCE'],
      [
        'a short nonce',
        { path: ATTEST_ROUTE.path, headers: { host, 'companion-nonce': 'abc' } },
        400,
        'ERR_ATTEST_NONCE',
      ],
      [
        'two nonces',
        { path: ATTEST_ROUTE.path, headers: { host, 'companion-nonce': [nonce, nonce] } },
        400,
        'ERR_ATTEST_NONCE',
      ],
      [
        'a relayed Host (another port)',
        { path: ATTEST_ROUTE.path, headers: { host: `127.0.0.1:${real.port + 1}`, 'companion-nonce': nonce } },
        403,
        'ERR_GUARD_HOST_NOT_ALLOWED',
      ],
      [
        'a rebound Host',
        { path: ATTEST_ROUTE.path, headers: { host: `evil.example:${real.port}`, 'companion-nonce': nonce } },
        403,
        'ERR_GUARD_HOST_NOT_ALLOWED',
      ],
      [
        'a cross-origin page',
        { path: ATTEST_ROUTE.path, headers: { host, origin: 'http://evil.example', 'companion-nonce': nonce } },
        403,
        'ERR_GUARD_ORIGIN',
      ],
      [
        'Sec-Fetch-Site cross-site',
        { path: ATTEST_ROUTE.path, headers: { host, 'sec-fetch-site': 'cross-site', 'companion-nonce': nonce } },
        403,
        'ERR_GUARD_FETCH_SITE',
      ],
      [
        'OPTIONS',
        { method: 'OPTIONS', path: ATTEST_ROUTE.path, headers: { host, 'companion-nonce': nonce } },
        405,
        'ERR_GUARD_METHOD',
      ],
      [
        'a wrong bearer token',
        {
          path: ATTEST_ROUTE.path,
          headers: { host, authorization: `Bearer ${randomBytes(32).toString('base64url')}`, 'companion-nonce': nonce },
        },
        401,
        'ERR_GUARD_TOKEN_INVALID',
      ],
      ['GET /health without a token', { path: '/health', headers: { host } }, 401, 'ERR_GUARD_TOKEN_MISSING'],
      ['GET /v1/models without a token', { path: '/v1/models', headers: { host } }, 401, 'ERR_GUARD_TOKEN_MISSING'],
    ];
    for (const [name, call, status, code] of refused) {
      const answer = await httpCall(real.port, call);
      assert.equal(answer.status, status, `${name}: ${answer.body}`);
      assert.equal((JSON.parse(answer.body) as { error: { code: string } }).error.code, code, name);
      assert.ok(!answer.body.includes(token), name);
      assert.deepEqual(
        Object.keys(answer.headers).filter((h) => h.startsWith('access-control-')),
        [],
        name,
      );
    }
  });

  test('P-k P-c a squatter that answers the attestation with garbage gets the challenge only: no token, no prompt (ERR_ENDPOINT_UNVERIFIED)', async (t) => {
    const real = await realUp();
    const squatter = await startSquatter('garbage');
    t.after(() => squatter.stop());
    // The worst case for the identity check: the record names the live companion process itself, so only
    // the attestation stands between the token and the squatter's port.
    const dataDir = freshDataDir('garbage');
    // And its data dir holds the real door's token, so nothing but the attestation protects it.
    await seedToken(dataDir, await storedToken(real.dataDir));
    writeRecord(dataDir, { ...real.record, url: `http://127.0.0.1:${squatter.port}/v1` });
    assert.notEqual(
      await readDiscovery(join(dataDir, 'run', 'endpoint.json')),
      null,
      'the record passes the identity check',
    );
    await assertRefused(await runClients(dataDir), squatter, {
      challenges: 'only',
      endpointCode: 'ERR_ENDPOINT_UNVERIFIED',
    });
  });

  test('P-k P-c a relay squatter that forwards the challenge to the real front door on another port gets a MAC over the wrong Host and nothing else', async (t) => {
    const real = await realUp();
    const squatter = await startSquatter('relay', real.port);
    t.after(() => squatter.stop());
    const dataDir = freshDataDir('relay');
    await seedToken(dataDir, await storedToken(real.dataDir));
    writeRecord(dataDir, { ...real.record, url: `http://127.0.0.1:${squatter.port}/v1` });
    const clients = await runClients(dataDir);
    await assertRefused(clients, squatter, { challenges: 'only', endpointCode: 'ERR_ENDPOINT_UNVERIFIED' });
    // The relay really did get valid MACs from the real door: only the Host inside them gave it away.
    const relayed = squatter.relayed();
    assert.ok(
      relayed.length >= 1 &&
        relayed.every((r) => r.status === 200 && /^\{"mac":"[A-Za-z0-9_-]{43}"\}$/.test(r.body ?? '')),
      JSON.stringify(relayed),
    );
  });

  test("P-k a second up on a live companion's data dir refuses with ERR_LOCKED_BY_OTHER and leaves its record and token alone", async () => {
    const real = await realUp();
    const before = readFileSync(join(real.dataDir, 'run', 'endpoint.json'), 'utf8');
    const token = await storedToken(real.dataDir);
    const second = await runCli(
      ['up', '--json', '--allow-unsandboxed', '--hub', HUB, '--data-dir', real.dataDir],
      env,
      30_000,
    );
    assert.equal(second.status, 1, second.stderr);
    assert.equal(second.stderr, `companion is already running at ${real.endpoint} (pid ${String(real.record.pid)})\n`);
    assert.equal((JSON.parse(second.stdout) as { error?: { code?: unknown } }).error?.code, 'ERR_LOCKED_BY_OTHER');
    assert.equal(readFileSync(join(real.dataDir, 'run', 'endpoint.json'), 'utf8'), before);
    assert.equal(await storedToken(real.dataDir), token, 'the running companion keeps its loopback token');
    const endpoint = await runCli(['endpoint', '--json', '--hub', HUB, '--data-dir', real.dataDir], env, 30_000);
    assert.equal(endpoint.status, 0, endpoint.stderr);
  });

  test('P-k claimDiscovery() removes a stale record and refuses over a live one, which it leaves in place', async (t) => {
    const dataDir = freshDataDir('claim');
    const path = join(dataDir, 'run', 'endpoint.json');
    writeRecord(dataDir, recordFor(1, { pid: await deadPid(), startTime: '1', exe: NODE_EXE }));
    await claimDiscovery(path);
    assert.equal(existsSync(path), false, "a dead pid's record is removed");
    writeRecord(dataDir, { url: 'http://127.0.0.1:1/v1', pid: process.pid, startedAt: 0 });
    await claimDiscovery(path);
    assert.equal(existsSync(path), false, 'a record without identity is removed');
    const live = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    t.after(() => live.kill('SIGKILL'));
    const identity = readProcessIdentity(live.pid!)!;
    writeRecord(dataDir, recordFor(1, { pid: live.pid!, startTime: identity.startTime, exe: identity.exe! }));
    await assert.rejects(claimDiscovery(path), { code: 'ERR_LOCKED_BY_OTHER' });
    assert.equal(existsSync(path), true, "a live companion's record stays");
    writeRecord(
      dataDir,
      recordFor(1, { pid: live.pid!, startTime: String(Number(identity.startTime) + 1), exe: identity.exe! }),
    );
    await claimDiscovery(path);
    assert.equal(existsSync(path), false, "a reused pid's record is removed");
  });
});
