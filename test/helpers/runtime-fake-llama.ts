// A stand-in for llama.cpp's llama-server, enough to test the spawn adapter's llama-server handshake:
// it takes the same argv (-m, --host PATH.sock | --host 127.0.0.1 --port 0, --api-key-file F), logs
// "main: server is listening on …" to stderr like llama-server, and answers /health with 503 (loading)
// twice before 200. With --api-key-file, every request needs that bearer key.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const index = argv.indexOf(name);
  return index >= 0 ? argv[index + 1] : undefined;
};
const host = option('--host') ?? '127.0.0.1';
const keyFile = option('--api-key-file');
const key = keyFile === undefined ? undefined : readFileSync(keyFile, 'utf8').trim();
let healthCalls = 0;
process.on('SIGTERM', () => process.exit(0));

const server = createServer((req, res) => {
  if (key !== undefined && req.headers.authorization !== `Bearer ${key}`) {
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end('{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}');
    return;
  }
  if (req.url === '/health') {
    healthCalls++;
    res.writeHead(healthCalls <= 2 ? 503 : 200, { 'content-type': 'application/json' });
    res.end(healthCalls <= 2 ? '{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}' : '{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});
if (host.endsWith('.sock')) {
  server.listen(host, () => process.stderr.write(`main: server is listening on unix://${host}\n`));
} else {
  server.listen(Number(option('--port') ?? '8080'), host, () => {
    process.stderr.write(`main: server is listening on http://${host}:${(server.address() as AddressInfo).port}\n`);
  });
}
