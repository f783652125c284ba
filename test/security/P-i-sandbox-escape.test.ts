// P-i, compromised runtime: a probe script stands in for a runtime taken over by a malicious model. It
// runs through the production path — detectSandbox → the wrap `companion up` uses (runtimeWrap: the
// runtime's own profile) → spawnRuntime (model as descriptor 3, shown read-only by --ro-bind-fd; the
// listening socket as descriptor 4) — from a stand-in package tree whose dist/src holds the probe, and
// tries each escape. Every listener it aims at lives outside the sandbox and counts connections: for each
// attack the test asserts the probe saw a failure AND the target never saw the probe.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createNetServer, type Server } from 'node:net';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gate } from '../helpers/gate.js';
import { bwrapPresent, fixture, packageJson } from '../helpers/sandbox-run.js';
import { detectSandbox, discoverGpuPassthrough, type SandboxSupport } from '../../src/runtime/sandbox.js';
import type { RuntimeProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { runtimeWrap } from '../../src/runtime/manager/sandbox-choice.js';
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
  modelAppend: Outcome;
  modelChmod: Outcome;
  modelFdWrite: Outcome[];
  writeFiles: Outcome[];
  descriptors: Array<{ fd: number; target: string; flags: string }>;
}

// A parent environment full of what must never reach the runtime.
const modelMode = 0o600;
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
  let handle: RuntimeHandle | undefined;
  const servers: Server[] = [];
  let tcpCount: () => number = () => -1;
  let busCount: () => number = () => -1;
  let abstractCount: () => number = () => -1;
  const paths = {
    home: '',
    homeSecret: '',
    sshKey: '',
    data: '',
    dataSecret: '',
    model: '',
    socketDir: '',
    bus: '',
    abstract: '',
  };

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
    writeFileSync(paths.model, Buffer.concat([Buffer.from('GGUF'), randomBytes(64)]), { mode: 0o600 });

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
      readFiles: [
        paths.homeSecret,
        paths.sshKey,
        paths.dataSecret,
        '/etc/passwd',
        '/etc/hostname',
        join(homedir(), '.bashrc'),
        join(homedir(), '.profile'),
      ],
      listDirs: [paths.home, paths.data, homedir(), '/home', '/run', '/etc', '/dev'],
      unixSockets: [paths.bus, paths.abstract],
      writeFiles: [
        '/planted',
        '/usr/planted',
        '/tmp/private-scratch',
        join(paths.socketDir, 'written-inside'),
        join(paths.data, 'models', 'sibling.gguf'),
        '/run/companion/sibling.gguf',
      ],
    };
    // A stand-in package tree: the probe is the "runtime code" the production profile shows.
    const pkg = join(root, 'pkg');
    mkdirSync(join(pkg, 'dist', 'src'), { recursive: true });
    mkdirSync(join(pkg, 'node_modules'));
    copyFileSync(fixture('escape-probe.js'), join(pkg, 'dist', 'src', 'escape-probe.js'));
    copyFileSync(packageJson, join(pkg, 'package.json'));
    const profile: RuntimeProfile = {
      kind: 'custom',
      file: process.execPath,
      args: [join(pkg, 'dist', 'src', 'escape-probe.js'), JSON.stringify(spec), '--as-runtime'],
      env: {},
      readOnlyPaths: [],
      modelPath: paths.model,
      // `up`'s default (issue 17 item 8): the wrap builds the GPU passthrough profile.
      settings: { gpu: 'auto' },
    };
    const saved = { ...process.env };
    Object.assign(process.env, PARENT_ENV);
    const lines: string[] = [];
    try {
      handle = await spawnRuntime(profile, {
        dataDir: paths.data,
        readyTimeoutMs: 30_000,
        wrap: runtimeWrap(support, pkg),
        onStderr: (line) => lines.push(line),
      });
    } finally {
      for (const key of Object.keys(PARENT_ENV)) Reflect.deleteProperty(process.env, key);
      Object.assign(process.env, saved);
    }
    const entries = lines
      .filter((line) => line.startsWith('probe ') && line !== 'probe done')
      .map((line) => {
        const [, key, ...json] = line.split(' ');
        return [key!, JSON.parse(json.join(' ')) as unknown] as const;
      });
    stderr = lines.filter((line) => !line.startsWith('probe ')).join('\n');
    result = Object.fromEntries(entries) as unknown as ProbeResult;
  });

  after(async () => {
    await handle?.stop(2000);
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  test('P-i the probe ran inside the sandbox, started like the runtime, and said nothing else', () => {
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
    assert.deepEqual(
      homeList,
      { ok: false, code: 'ENOENT' },
      'nothing of HOME is shown: the model is not bound by its path',
    );
    assert.deepEqual(realHome, { ok: false, code: 'ENOENT' });
    assert.deepEqual(homeRoot, { ok: false, code: 'ENOENT' });
    assert.equal(result.home, '/nonexistent');
  });

  test('P-i reading a file planted in the data dir fails: the data dir (models, run folder, socket) is not shown at all', () => {
    assert.deepEqual(result.readFiles[2], { ok: false, code: 'ENOENT' });
    assert.deepEqual(result.listDirs[1], { ok: false, code: 'ENOENT' });
  });

  test("P-i /etc and /run hold nothing but the loader cache, the time zone and the model's read-only view", () => {
    assert.deepEqual(result.readFiles[3], { ok: false, code: 'ENOENT' }, '/etc/passwd');
    assert.deepEqual(result.readFiles[4], { ok: false, code: 'ENOENT' }, '/etc/hostname');
    assert.deepEqual(result.listDirs[4], { ok: true, value: ['companion'] }, '/run');
    const etc = result.listDirs[5]?.value ?? [];
    assert.ok(
      etc.every((name) => name === 'ld.so.cache' || name === 'localtime'),
      `/etc holds ${etc.join(', ')}`,
    );
  });

  test("P-i /dev (gpu auto profile) holds bubblewrap's minimal nodes and only the GPU nodes that exist on the host", () => {
    const gpuNodes = discoverGpuPassthrough().devices.map((path) => path.slice('/dev/'.length).split('/')[0]!);
    const minimal = [
      'core',
      'fd',
      'full',
      'null',
      'ptmx',
      'pts',
      'random',
      'shm',
      'stderr',
      'stdin',
      'stdout',
      'tty',
      'urandom',
      'zero',
    ];
    const dev = result.listDirs[6];
    assert.equal(dev?.ok, true);
    for (const name of dev?.value ?? [])
      assert.ok(minimal.includes(name) || gpuNodes.includes(name), `/dev holds ${name}`);
    for (const name of gpuNodes) assert.ok(dev?.value?.includes(name), `the GPU node ${name} is passed`);
    assert.ok(dev?.value?.includes('null'), 'the minimal /dev is there');
  });

  test("P-i listing /proc shows only the sandbox's own processes", () => {
    assert.equal(result.proc.ok, true);
    const processes = result.proc.value ?? [];
    assert.ok(processes.length >= 1 && processes.length <= 3, `${processes.length} processes visible`);
    for (const entry of processes) {
      assert.ok(
        entry.argv0 === 'bwrap' || entry.argv0 === '/usr/bin/bwrap' || entry.argv0 === process.execPath,
        `unexpected process ${entry.argv0}`,
      );
      assert.ok(entry.pid <= 3);
    }
  });

  test('P-i the D-Bus session socket (by path and abstract) is not reachable', () => {
    assert.deepEqual(result.unixSockets[0], { ok: false, code: 'ENOENT' });
    assert.deepEqual(result.unixSockets[1], { ok: false, code: 'ECONNREFUSED' });
    assert.equal(busCount(), 0);
    assert.equal(abstractCount(), 0);
  });

  test('P-i the model is readable, and cannot be reopened for writing, appended to or chmod-ed from inside', () => {
    assert.deepEqual(result.modelRead, { ok: true, value: 'GGUF' });
    assert.deepEqual(result.modelWrite, { ok: false, code: 'EROFS' });
    assert.deepEqual(result.modelAppend, { ok: false, code: 'EROFS' });
    assert.deepEqual(result.modelChmod, { ok: false, code: 'EROFS' });
    // bubblewrap took descriptor 3 for the read-only mount: no descriptor of the runtime points at the model.
    assert.deepEqual(result.modelFdWrite, []);
    assert.equal(readFileSync(paths.model).subarray(0, 4).toString('latin1'), 'GGUF');
    assert.equal(statSync(paths.model).mode & 0o777, modelMode, 'the host file keeps its mode');
  });

  test('P-i the runtime holds no descriptor of the host but stdio and its listening socket', () => {
    const foreign = result.descriptors.filter(
      (entry) =>
        entry.fd > 2 &&
        entry.target.startsWith('/') &&
        entry.target !== '/dev/null' &&
        !entry.target.startsWith('/proc/'),
    );
    assert.deepEqual(foreign, [], 'no file or folder of the host is open');
    const sockets = result.descriptors.filter((entry) => entry.target.startsWith('socket:'));
    assert.ok(
      sockets.some((entry) => entry.fd === 4),
      'the listening socket arrived as descriptor 4',
    );
  });

  test('P-i the environment holds only the allow-listed keys', () => {
    // PWD is set by bubblewrap after --chdir /.
    assert.deepEqual(result.envKeys, ['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']);
  });

  test('P-i only a private /tmp is writable: not the run folder, not beside the model', () => {
    const [rootFile, usrFile, tmpFile, socketFile, besideModel, besideView] = result.writeFiles;
    assert.deepEqual(rootFile, { ok: false, code: 'EROFS' });
    assert.deepEqual(usrFile, { ok: false, code: 'EROFS' });
    assert.equal(tmpFile?.ok, true);
    assert.equal(socketFile?.ok, false, 'the run folder (where the socket lives) is not in the sandbox');
    assert.equal(besideModel?.ok, false);
    assert.deepEqual(besideView, { ok: false, code: 'EROFS' });
    assert.equal(existsSync(join(paths.socketDir, 'written-inside')), false);
    assert.equal(
      existsSync(join(paths.data, 'models', 'sibling.gguf')),
      false,
      "nothing appears beside the host's model",
    );
  });

  test('P-i no capabilities, no new privileges, no controlling terminal', () => {
    assert.equal(result.status.value?.NoNewPrivs, '1');
    assert.equal(result.status.value?.CapEff, '0000000000000000');
    assert.equal(result.status.value?.CapBnd, '0000000000000000');
    assert.deepEqual(result.tty, { ok: false, code: 'ENXIO' });
  });
});
