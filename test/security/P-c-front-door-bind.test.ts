// P-c at the bind (D5.1): the front door listens on a loopback address only, shares its port with no one
// (no SO_REUSEPORT: another process of the same user cannot bind beside it and take a share of its
// connections), and when the loopback bind fails it stops with ERR_BIND_FAILED instead of listening
// anywhere else; `companion up` then exits non-zero with one clear line. What listens is read from the
// kernel (/proc/net/tcp*), never from what the code reports about itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAdmission } from '../../src/core/admission.js';
import { startFrontDoor } from '../../src/runtime/front-door.js';
import { gate } from '../helpers/gate.js';
import { listenersOf } from '../helpers/listeners.js';
import { distRoot, repoRoot } from '../helpers/paths.js';

const admission = createAdmission({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 100 });
const door = (host?: string): ReturnType<typeof startFrontDoor> =>
  startFrontDoor({
    ...(host === undefined ? {} : { host }),
    verifyToken: () => false,
    upstream: () => null,
    admission,
  });

/** A routable address of this machine (first non-internal IPv4), or a documentation address. */
function routableAddress(): string {
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) if (entry.family === 'IPv4' && !entry.internal) return entry.address;
  }
  return '192.0.2.10';
}

test('P-c startFrontDoor() refuses 0.0.0.0, ::, and a routable address with ERR_BIND_NOT_LOOPBACK, and nothing listens afterwards', async () => {
  const before = listenersOf();
  for (const host of ['0.0.0.0', '::', routableAddress(), '10.0.0.1', '::ffff:0.0.0.0']) {
    let outcome: string;
    let listening: string[] = [];
    try {
      const started = await door(host);
      listening = listenersOf();
      await started.close(); // Only if the defence is gone: never leave it listening.
      outcome = `listening on ${started.url}`;
    } catch (error) {
      outcome = (error as { code?: string }).code ?? String(error);
      listening = listenersOf();
    }
    assert.equal(outcome, 'ERR_BIND_NOT_LOOPBACK', host);
    assert.deepEqual(listening, before, `nothing of ours listens after refusing ${host}`);
  }
  // Control: the same reading sees a loopback front door while it listens.
  const running = await door();
  try {
    assert.deepEqual(listenersOf(), [...before, `127.0.0.1:${running.port}`].sort());
  } finally {
    await running.close();
  }
  assert.deepEqual(listenersOf(), before);
});

/**
 * Binds 127.0.0.1:`port` with SO_REUSEPORT from another process (perl, part of every Debian system):
 * `EADDRINUSE`, `BOUND`, or with `hold` a listener that stays until stdin closes (`LISTENING`).
 */
function reusePortBind(port: number, hold = false): { result: Promise<string>; release: () => void } {
  const script = [
    'use Socket;',
    'my ($port, $hold) = @ARGV;',
    'socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";',
    'setsockopt($s, SOL_SOCKET, SO_REUSEPORT, 1) or die "setsockopt: $!";',
    '$| = 1;',
    'if (!bind($s, pack_sockaddr_in($port, inet_aton("127.0.0.1")))) { print($!{EADDRINUSE} ? "EADDRINUSE\\n" : "ERROR $!\\n"); exit 0; }',
    'if ($hold) { listen($s, 8) or die "listen: $!"; print "LISTENING\\n"; <STDIN>; } else { print "BOUND\\n"; }',
  ].join(' ');
  const child = spawn('perl', ['-e', script, String(port), hold ? '1' : '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const result = new Promise<string>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`perl bind probe did not answer: ${err}`));
    }, 10_000);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('\n')) {
        clearTimeout(timer);
        resolve(out.trim());
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.on('error', reject);
  });
  return { result, release: () => child.stdin.end() };
}

const perlPresent = spawnSync('perl', ['-MSocket', '-e', 'SO_REUSEPORT'], { stdio: 'ignore' }).status === 0;

test(
  'P-c the front door shares its port with no one: a second bind of 127.0.0.1:P with SO_REUSEPORT fails with EADDRINUSE',
  gate('perl with Socket (perl-base)', perlPresent, 'apt-get install perl-base'),
  async () => {
    // Control: two SO_REUSEPORT sockets do share a port, so EADDRINUSE below is the front door's doing.
    const free = createServer();
    await new Promise<void>((resolve) => free.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const controlPort = (free.address() as { port: number }).port;
    await new Promise<void>((resolve) => free.close(() => resolve()));
    const sharer = reusePortBind(controlPort, true);
    try {
      assert.equal(await sharer.result, 'LISTENING');
      assert.equal(await reusePortBind(controlPort).result, 'BOUND', 'SO_REUSEPORT sharing works on this machine');
    } finally {
      sharer.release();
    }

    const running = await door();
    try {
      assert.equal(await reusePortBind(running.port).result, 'EADDRINUSE');
      // Node in this process, too: neither `exclusive: false` nor `reusePort` shares the port.
      for (const options of [{ exclusive: false }, { reusePort: true } as object]) {
        const second = createServer();
        const code = await new Promise<string>((resolve) => {
          second.once('error', (error: Error & { code?: string }) => resolve(error.code ?? 'error'));
          second.listen({ host: '127.0.0.1', port: running.port, ...options }, () => {
            second.close();
            resolve('LISTENING');
          });
        });
        assert.equal(code, 'EADDRINUSE', JSON.stringify(options));
      }
      assert.deepEqual(
        listenersOf().filter((l) => l.endsWith(`:${running.port}`)),
        [`127.0.0.1:${running.port}`],
      );
    } finally {
      await running.close();
    }
  },
);

const unshareWorks = spawnSync('unshare', ['-n', 'true'], { stdio: 'ignore' }).status === 0;
const netns = gate('unshare -n (a private network namespace; root)', unshareWorks, 'util-linux, run as root');
const bindFailChild = join(distRoot, 'test', 'helpers', 'bind-fail-child.js');

/** Runs test/helpers/bind-fail-child.ts in a private network namespace; resolves with its JSON line. */
function inPrivateNetns(config: Record<string, unknown>): Record<string, unknown> {
  const run = spawnSync(
    'unshare',
    [
      '-n',
      process.execPath,
      bindFailChild,
      JSON.stringify({ ...config, parentNetns: readlinkSync('/proc/self/ns/net') }),
    ],
    {
      encoding: 'utf8',
      timeout: 90_000,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    },
  );
  assert.equal(run.status, 0, `the namespace child ran: ${run.stderr}`);
  return JSON.parse(run.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

test(
  'P-c startFrontDoor() rejects with ERR_BIND_FAILED when the loopback bind fails, and listens on no other address',
  { ...netns, timeout: 60_000 },
  () => {
    const result = inPrivateNetns({ mode: 'front-door' });
    assert.deepEqual(result.before, [], 'the namespace starts with nothing listening');
    // ::1 is absent (loopback down): a bind error, and nothing listens, on 127.0.0.1 or anywhere.
    assert.deepEqual(result.ipv6, { host: '::1', code: 'ERR_BIND_FAILED', listening: [] });
    // 127.0.0.1 with every ephemeral port taken: the same, and only the occupant listens.
    assert.equal(result.range, '40000 40000');
    assert.deepEqual(result.ipv4, { host: 'default', code: 'ERR_BIND_FAILED', listening: [result.occupied] });
  },
);

test(
  'P-c companion up exits non-zero with one clear ERR_BIND_FAILED line when the loopback bind fails',
  { ...netns, timeout: 90_000 },
  (t) => {
    const home = mkdtempSync(join(tmpdir(), 'companion-bindfail-'));
    t.after(() => rmSync(home, { recursive: true, force: true }));
    const dataDir = join(home, 'data');
    const result = inPrivateNetns({
      mode: 'up',
      argv: [
        join(repoRoot, 'bin', 'companion.js'),
        'up',
        '--hub',
        'https://127.0.0.1:9',
        '--data-dir',
        dataDir,
        '--keychain',
        'memory',
        '--allow-unsandboxed',
        '--threads',
        '1',
      ],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: home,
        XDG_CONFIG_HOME: join(home, 'config'),
        XDG_DATA_HOME: join(home, 'share'),
      },
    });
    assert.notEqual(result.status, 0);
    assert.equal(result.signal, null, 'it exited by itself, promptly');
    // The in-memory keychain announces itself (CONTRACT §6); apart from that, exactly one line.
    const lines = String(result.stderr)
      .trim()
      .split('\n')
      .filter((line) => !/in-memory keychain/.test(line));
    assert.equal(lines.length, 1, String(result.stderr));
    assert.match(lines[0]!, /^companion up: .*\[ERR_BIND_FAILED\]$/);
    assert.equal(String(result.stdout), '');
    assert.deepEqual(result.after, [result.occupied], 'nothing else listens in the namespace');
    assert.equal(existsSync(join(dataDir, 'run', 'endpoint.json')), false, 'no endpoint was published');
  },
);
