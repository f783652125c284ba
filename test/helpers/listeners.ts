// Listening TCP sockets as the kernel reports them (Linux /proc/net/tcp and tcp6 of the current network
// namespace), and which of them a process holds (its fd table): "nothing listens afterwards" is read
// from the kernel, not from what the code under test says about itself.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export interface TcpListener {
  /** Dotted IPv4 or compressed-enough IPv6 (`::`, `::1`, `::ffff:127.0.0.1`, full form otherwise). */
  readonly address: string;
  readonly port: number;
  readonly inode: string;
}

/** /proc/net/tcp keeps each 32-bit word in host (little-endian) order. */
function decodeAddress(hex: string): string {
  const words = hex.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((word) => (word.match(/../g) ?? []).reverse().map((b) => Number.parseInt(b, 16)));
  if (bytes.length === 4) return bytes.join('.');
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  const full = groups.join(':');
  if (full === '0:0:0:0:0:0:0:0') return '::';
  if (full === '0:0:0:0:0:0:0:1') return '::1';
  if (full.startsWith('0:0:0:0:0:ffff:')) return `::ffff:${bytes.slice(12).join('.')}`;
  return full;
}

/** Every TCP socket in LISTEN state in this network namespace. */
export function tcpListeners(): TcpListener[] {
  const out: TcpListener[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue; // No IPv6 on this kernel.
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10 || fields[3] !== '0A') continue;
      const [address, port] = fields[1]!.split(':');
      out.push({ address: decodeAddress(address!), port: Number.parseInt(port!, 16), inode: fields[9]! });
    }
  }
  return out;
}

/** Inodes of the sockets a process holds open (`socket:[N]` in its fd table). */
export function socketInodesOf(pid: number | 'self' = 'self'): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match !== null) inodes.add(match[1]!);
    } catch {
      // Closed meanwhile.
    }
  }
  return inodes;
}

/** The listening sockets a process holds, as `address:port` strings, sorted. */
export function listenersOf(pid: number | 'self' = 'self'): string[] {
  const mine = socketInodesOf(pid);
  return tcpListeners()
    .filter((l) => mine.has(l.inode))
    .map((l) => `${l.address}:${l.port}`)
    .sort();
}
