// Run inside a private network namespace (`unshare -n node bind-fail-child.js CONFIG_JSON`), where a
// loopback bind can be made to fail for real: the loopback interface is down (no ::1), and the ephemeral
// port range can be cut to one port that something else holds (every bind to port 0 fails). Prints one
// JSON line: what each attempt did and which sockets listen in the namespace afterwards.
//
// Modes:
//   front-door  startFrontDoor() on ::1 (absent), then with the ephemeral range exhausted on 127.0.0.1
//   up          `companion up` (argv from the config) with the ephemeral range exhausted
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { createAdmission } from '../../src/core/admission.js';
import { startFrontDoor } from '../../src/runtime/front-door.js';
import { tcpListeners } from './listeners.js';

interface Config {
  readonly mode: 'front-door' | 'up';
  /** The parent's network namespace: this program refuses to touch sysctls there. */
  readonly parentNetns: string;
  /** For `up`: the CLI argv (bin/companion.js first) and its environment. */
  readonly argv?: string[];
  readonly env?: Record<string, string>;
}

const OCCUPIED_PORT = 40_000;
const config = JSON.parse(process.argv[2] ?? '{}') as Config;

// Safety: the port range is a per-namespace sysctl; never change the machine's own.
if (readlinkSync('/proc/self/ns/net') === config.parentNetns) {
  console.log(JSON.stringify({ error: 'not in a private network namespace' }));
  process.exit(2);
}

function listening(): string[] {
  return tcpListeners()
    .map((l) => `${l.address}:${l.port}`)
    .sort();
}

/** One ephemeral port in this namespace, held by a listener of ours: every later bind(0) fails. */
async function exhaustEphemeralPorts(): Promise<Server> {
  writeFileSync('/proc/sys/net/ipv4/ip_local_port_range', `${OCCUPIED_PORT} ${OCCUPIED_PORT}`);
  const occupant = createServer();
  await new Promise<void>((resolve, reject) => {
    occupant.once('error', reject);
    occupant.listen({ host: '127.0.0.1', port: OCCUPIED_PORT }, resolve);
  });
  return occupant;
}

async function attempt(host: string | undefined): Promise<Record<string, unknown>> {
  const admission = createAdmission({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 100 });
  try {
    const door = await startFrontDoor({
      ...(host === undefined ? {} : { host }),
      verifyToken: () => false,
      upstream: () => null,
      admission,
    });
    const result = { host: host ?? 'default', started: door.url, listening: listening() };
    await door.close();
    return result;
  } catch (error) {
    return {
      host: host ?? 'default',
      code: (error as { code?: string }).code ?? String(error),
      listening: listening(),
    };
  }
}

if (config.mode === 'front-door') {
  const before = listening();
  const ipv6 = await attempt('::1');
  const occupant = await exhaustEphemeralPorts();
  const range = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).join(' ');
  const ipv4 = await attempt(undefined);
  occupant.close();
  console.log(JSON.stringify({ before, ipv6, ipv4, range, occupied: `127.0.0.1:${OCCUPIED_PORT}` }));
} else {
  const occupant = await exhaustEphemeralPorts();
  const run = spawnSync(process.execPath, config.argv ?? [], {
    env: config.env ?? {},
    encoding: 'utf8',
    timeout: 60_000,
  });
  const after = listening();
  occupant.close();
  console.log(
    JSON.stringify({
      status: run.status,
      signal: run.signal,
      stdout: run.stdout,
      stderr: run.stderr,
      after,
      occupied: `127.0.0.1:${OCCUPIED_PORT}`,
    }),
  );
}
