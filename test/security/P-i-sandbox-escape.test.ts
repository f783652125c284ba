// P-i, compromised runtime: a probe script stands in for a runtime taken over by a malicious model. It
// runs through the same path as the runtime (detectSandbox → sandboxCommand → a detached spawn) with a
// profile shaped like the runtime's (its code, package.json, the ONE model file, the socket folder), and
// tries each escape. Every listener it aims at lives outside the sandbox and counts connections: for each
// attack the test asserts the probe saw a failure AND the target never saw the probe.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createNetServer, type Server } from 'node:net';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gate } from '../helpers/gate.js';
import { bwrapPresent, fixture, lastJson, packageJson, runDetached } from '../helpers/sandbox-run.js';
import { detectSandbox, sandboxCommand, type SandboxSupport } from '../../src/runtime/sandbox.js';
import type { EscapeSpec, Outcome } from '../fixtures/sandbox/escape-probe.js';

interface ProbeResult {
  pid: number;
  interfaces: string[];
  envKeys: string[];
  home: string;
  cwd: string;
  proc: Outcome & { value?: Array<{ pid: number; argv0: string }> };
  tty: Outcome;
  status: Outcome & { value?: Record<string, string> };
  tcpLoopback: Outcome;
  udpRoute: Outcome;
  tcpRoutable: Outcome;
  readFiles: Outcome[];
  listDirs: Array<Outcome & { value?: string[] }>;
  unixSockets: Outcome[];
  modelRead: Outcome;
  modelWrite: Outcome;
  writeFiles: Outcome[];
}

// A parent environment full of what must never reach the runtime.
const PARENT_ENV = {
  COMPANION_REFRESH_TOKEN: 'rt-must-not-leak',
  GITHUB_TOKEN: 'ghp_must_not_leak',
  DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/bus',
  XDG_RUNTIME_DIR: '/run/user/0',
  SSH_AUTH_SOCK: '/nonexistent/agent.sock',
  HOME: homedir(),
};

function counting(server: Server): { count: () => number } {
  let connections = 0;
  server.on('connection', (socket) => {
    connections += 1;
    socket.destroy();
  });
  return { count: () => connections };
}

function listen(server: Server, target: string | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (typeof target === 'string') server.listen(target, () => resolve());
    else server.listen(target.port, target.host, () => resolve());
  });
}

describe('P-i sandboxed runtime (bubblewrap)', gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap'), () => {
  let root = '';
  let support: SandboxSupport;
  let result: ProbeResult;
  let stderr = '';
  const servers: Server[] = [];
  let tcpCount: () => number = () => -1;
  let busCount: () => number = () => -1;
  let abstractCount: () => number = () => -1;
  const paths = { home: '', homeSecret: '', sshKey: '', data: '', dataSecret: '', model: '', socketDir: '', bus: '', abstract: '' };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'companion-p-i-'));
    paths.home = join(root, 'home', 'alice');
    paths.homeSecret = join(paths.home, 'notes.txt');
    paths.sshKey = join(paths.home, '.ssh', 'id_ed25519');
    paths.data = join(root, 'home', 'alice', '.local', 'share', 'companion');
    paths.dataSecret = join(paths.data, 'discovery.json');
    paths.model = join(paths.data, 'models', 'tiny.gguf');
    paths.socketDir = join(paths.data, 'run');
    const runUser = join(root, 'run', 'user', '1000');
    paths.bus = join(runUser, 'bus');
    paths.abstract = `\0companion-p-i-${randomBytes(6).toString('hex')}`;
    mkdirSync(join(paths.home, '.ssh'), { recursive: true });
    mkdirSync(join(paths.data, 'models'), { recursive: true });
    mkdirSync(paths.socketDir, { recursive: true });
    chmodSync(paths.socketDir, 0o700);
    mkdirSync(runUser, { recursive: true });
    writeFileSync(paths.homeSecret, 'planted in HOME');
    writeFileSync(paths.sshKey, 'planted private key');
    writeFileSync(paths.dataSecret, '{"token":"planted in the data dir"}');
    writeFileSync(paths.model, Buffer.concat([Buffer.from('GGUF'), randomBytes(64)]));

    const tcp = createNetServer();
    const bus = createNetServer();
    const abstract = createNetServer();
    servers.push(tcp, bus, abstract);
    tcpCount = counting(tcp).count;
    busCount = counting(bus).count;
    abstractCount = counting(abstract).count;
    await listen(tcp, { host: '127.0.0.1', port: 0 });
    await listen(bus, paths.bus);
    await listen(abstract, paths.abstract);
    const address = tcp.address();
    assert.ok(address !== null && typeof address === 'object');

    support = await detectSandbox();
    assert.equal(support.mode, 'bubblewrap', support.reason);
    const spec: EscapeSpec = {
      tcpPort: address.port,
      routable: '192.0.2.1',
      readFiles: [paths.homeSecret, paths.sshKey, paths.dataSecret, '/etc/passwd', '/etc/hostname', join(homedir(), '.bashrc'), join(homedir(), '.profile')],
      listDirs: [paths.home, paths.data, homedir(), '/home', '/run', '/etc'],
      unixSockets: [paths.bus, paths.abstract],
      modelPath: paths.model,
      writeFiles: ['/planted', '/usr/planted', '/tmp/private-scratch', join(paths.socketDir, 'written-inside'), join(paths.data, 'models', 'sibling.gguf')],
    };
    const probe = fixture('escape-probe.js');
    const command = sandboxCommand(
      { file: process.execPath, args: [probe, JSON.stringify(spec)] },
      { readOnlyPaths: [process.execPath, probe, packageJson, paths.model], writablePaths: [paths.socketDir], allowNetwork: false, env: { COMPANION_RUNTIME_THREADS: '1' } },
      support,
    );
    const finished = await runDetached(command, 30_000, PARENT_ENV);
    stderr = finished.stderr;
    result = lastJson<ProbeResult>(finished);
  });

  after(async () => {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  test('P-i the probe ran inside the sandbox and exited cleanly', () => {
    assert.equal(stderr, '');
    assert.ok(result.pid <= 3, `pid ${result.pid} is from a new pid namespace`);
  });

  test('P-i a TCP connection to a listener on the host loopback fails', () => {
    assert.deepEqual(result.tcpLoopback, { ok: false, code: 'ECONNREFUSED' });
    assert.equal(tcpCount(), 0, 'the host listener never saw the probe');
  });

  test('P-i an outbound connect to a routable address fails at once: no interface but loopback', () => {
    assert.deepEqual(result.interfaces, ['lo']);
    assert.deepEqual(result.udpRoute, { ok: false, code: 'ENETUNREACH' });
    assert.deepEqual(result.tcpRoutable, { ok: false, code: 'ENETUNREACH' });
  });

  test('P-i reading files planted in a fake HOME fails, and so does the real HOME', () => {
    const [notes, sshKey, , , , bashrc, profile] = result.readFiles;
    for (const outcome of [notes, sshKey, bashrc, profile]) assert.deepEqual(outcome, { ok: false, code: 'ENOENT' });
    const [homeList, , realHome, homeRoot] = result.listDirs;
    assert.equal(homeList?.ok, true, 'the folder above the model exists only as a mount point');
    assert.deepEqual(homeList?.value, ['.local'], 'HOME shows nothing but the path down to the model');
    assert.deepEqual(realHome, { ok: false, code: 'ENOENT' });
    assert.deepEqual(homeRoot, { ok: false, code: 'ENOENT' });
    assert.equal(result.home, '/nonexistent');
  });

  test('P-i reading a file planted in the data dir fails: only the model file and the socket folder are there', () => {
    assert.deepEqual(result.readFiles[2], { ok: false, code: 'ENOENT' });
    assert.deepEqual(result.listDirs[1]?.value, ['models', 'run']);
  });

  test('P-i /etc and /run hold nothing but the loader cache and the time zone', () => {
    assert.deepEqual(result.readFiles[3], { ok: false, code: 'ENOENT' }, '/etc/passwd');
    assert.deepEqual(result.readFiles[4], { ok: false, code: 'ENOENT' }, '/etc/hostname');
    assert.deepEqual(result.listDirs[4], { ok: false, code: 'ENOENT' }, '/run');
    const etc = result.listDirs[5]?.value ?? [];
    assert.ok(etc.every((name) => name === 'ld.so.cache' || name === 'localtime'), `/etc holds ${etc.join(', ')}`);
  });

  test('P-i listing /proc shows only the sandbox\'s own processes', () => {
    assert.equal(result.proc.ok, true);
    const processes = result.proc.value ?? [];
    assert.ok(processes.length >= 1 && processes.length <= 3, `${processes.length} processes visible`);
    for (const entry of processes) {
      assert.ok(entry.argv0 === 'bwrap' || entry.argv0 === '/usr/bin/bwrap' || entry.argv0 === process.execPath, `unexpected process ${entry.argv0}`);
      assert.ok(entry.pid <= 3);
    }
  });

  test('P-i the D-Bus session socket (by path and abstract) is not reachable', () => {
    assert.deepEqual(result.unixSockets[0], { ok: false, code: 'ENOENT' });
    assert.deepEqual(result.unixSockets[1], { ok: false, code: 'ECONNREFUSED' });
    assert.equal(busCount(), 0);
    assert.equal(abstractCount(), 0);
  });

  test('P-i the model file is readable and not writable', () => {
    assert.deepEqual(result.modelRead, { ok: true, value: 'GGUF' });
    assert.deepEqual(result.modelWrite, { ok: false, code: 'EROFS' });
    assert.equal(readFileSync(paths.model).subarray(0, 4).toString('latin1'), 'GGUF');
  });

  test('P-i the environment holds only the allow-listed keys', () => {
    // PWD is set by bubblewrap after --chdir /.
    assert.deepEqual(result.envKeys, ['COMPANION_RUNTIME_THREADS', 'HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']);
  });

  test('P-i only the socket folder and a private /tmp are writable', () => {
    const [rootFile, usrFile, tmpFile, socketFile, besideModel] = result.writeFiles;
    assert.deepEqual(rootFile, { ok: false, code: 'EROFS' });
    assert.deepEqual(usrFile, { ok: false, code: 'EROFS' });
    assert.equal(tmpFile?.ok, true);
    assert.equal(socketFile?.ok, true);
    assert.equal(readFileSync(join(paths.socketDir, 'written-inside'), 'utf8'), 'x', 'the socket folder is the host\'s');
    // The folders above a bound file are mount points bubblewrap makes in the sandbox's own (in-memory)
    // /tmp or read-only root: whatever is written there never reaches the host's folder.
    assert.ok(besideModel !== undefined);
    assert.equal(existsSync(join(paths.data, 'models', 'sibling.gguf')), false, 'nothing appears beside the host\'s model');
  });

  test('P-i no capabilities, no new privileges, no controlling terminal', () => {
    assert.equal(result.status.value?.NoNewPrivs, '1');
    assert.equal(result.status.value?.CapEff, '0000000000000000');
    assert.equal(result.status.value?.CapBnd, '0000000000000000');
    assert.deepEqual(result.tty, { ok: false, code: 'ENXIO' });
  });
});
