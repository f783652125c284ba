// A fake runtime child that speaks the spawn-pipe protocol (src/runtime-server/protocol.ts) without a
// model, so that protocol, process-group and impostor tests cost nothing. It reads the start line from
// stdin (and echoes what it understood on stderr as `start-line <json>`), serves a tiny /health server on
// the listening descriptor the parent handed over, and reports ready. Options (argv):
//   --grandchild                 start `sleep 300` in the same process group; print "grandchild PID" on stderr
//   --ignore-term                ignore SIGTERM (stop must escalate to SIGKILL)
//   --exit N                     exit with code N before reporting anything
//   --abort                      abort the process (SIGABRT, like a llama.cpp assertion)
//   --silent                     never report
//   --error CODE                 report {"event":"error","code":CODE} and exit 1
//   --report-address PATH        name PATH as its address in the ready line (the parent must ignore it)
// It does not watch stdin's end: it survives its parent (stale-reclaim tests rely on that).
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';

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
  const report = (): void => {
    if (has('--silent')) return;
    const elsewhere = option('--report-address');
    const address = elsewhere === undefined ? {} : { address: { kind: 'unix', path: elsewhere } };
    process.stdout.write(`${JSON.stringify({ event: 'ready', pid: process.pid, ...address })}\n`);
  };
  let buffered = '';
  let started = false;
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    if (started) return;
    buffered += chunk;
    const newline = buffered.indexOf('\n');
    if (newline < 0) return;
    started = true;
    const line = JSON.parse(buffered.slice(0, newline)) as { listen: { fd: number }; model: unknown; key?: string };
    // Never print the key: the leak scans read stderr.
    process.stderr.write(
      `start-line ${JSON.stringify({ ...line, key: line.key === undefined ? undefined : 'present' })}\n`,
    );
    server.listen({ fd: line.listen.fd }, report);
  });
  process.stdin.on('end', () => undefined);
}
