// A fake runtime child that speaks the spawn-pipe protocol (src/runtime-server/protocol.ts) without a
// model, so that protocol, process-group and impostor tests cost nothing. Options (argv):
//   --socket PATH | --tcp        bind like the real runtime (a tiny /health server)
//   --report-path P              report this socket path instead of the real one
//   --report-host H              report this host instead of 127.0.0.1
//   --socket-mode OCTAL          chmod the socket to this mode before reporting
//   --grandchild                 start `sleep 300` in the same process group; print "grandchild PID" on stderr
//   --ignore-term                ignore SIGTERM (stop must escalate to SIGKILL)
//   --exit N                     exit with code N before reporting anything
//   --abort                      abort the process (SIGABRT, like a llama.cpp assertion)
//   --silent                     never report
//   --error CODE                 report {"event":"error","code":CODE} and exit 1
// It does not watch stdin: it survives its parent (stale-reclaim tests rely on that).
import { spawn } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const argv = process.argv.slice(2);
function option(name: string): string | undefined {
  const index = argv.indexOf(name);
  return index >= 0 ? argv[index + 1] : undefined;
}
const has = (name: string): boolean => argv.includes(name);

if (has('--ignore-term')) process.on('SIGTERM', () => undefined);
else process.on('SIGTERM', () => process.exit(0));

if (has('--grandchild')) {
  const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
  process.stderr.write(`grandchild ${sleeper.pid}\n`);
}
const exitCode = option('--exit');
if (exitCode !== undefined) process.exit(Number(exitCode));
if (has('--abort')) process.abort();
const errorCode = option('--error');
if (errorCode !== undefined) {
  process.stdout.write(`${JSON.stringify({ event: 'error', code: errorCode })}\n`, () => process.exit(1));
} else {
  const server = createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"status":"ok"}');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const socket = option('--socket');
  const report = (address: object): void => {
    if (has('--silent')) return;
    process.stdout.write(`${JSON.stringify({ event: 'ready', address, pid: process.pid })}\n`);
  };
  if (socket !== undefined) {
    server.listen(socket, () => {
      const mode = option('--socket-mode');
      chmodSync(socket, mode === undefined ? 0o600 : parseInt(mode, 8));
      report({ kind: 'unix', path: option('--report-path') ?? socket });
    });
  } else {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      report({ kind: 'tcp', host: option('--report-host') ?? '127.0.0.1', port });
    });
  }
}
