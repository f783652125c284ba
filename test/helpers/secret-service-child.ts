// The child side of `openKeychainChild` (secret-service.ts): runs the real openKeychain with this
// process's environment (the private bus). One JSON request per stdin line, one JSON answer per line.
// Errors are answered with every form a leak could take: message, stack, util.inspect and JSON.
import { createInterface } from 'node:readline';
import { inspect } from 'node:util';
import { openKeychain, type OsKeychain } from '../../src/authority/keychain.js';

interface Request {
  readonly id: number;
  readonly op: 'open' | 'get' | 'set' | 'delete' | 'health';
  readonly service?: string;
  readonly backend?: 'os' | 'memory';
  readonly timeoutMs?: number;
  readonly account?: string;
  readonly value?: string;
}

let keychain: OsKeychain | undefined;

function describe(error: unknown): { ok: false; code: string | undefined; message: string; text: string } {
  const e = error as { code?: unknown; message?: unknown; stack?: unknown };
  let json = '';
  try {
    json = JSON.stringify(error, Object.getOwnPropertyNames(error ?? {}));
  } catch {
    json = '';
  }
  return {
    ok: false,
    code: typeof e.code === 'string' ? e.code : undefined,
    message: typeof e.message === 'string' ? e.message : String(error),
    text: [String(error), String(e.stack), inspect(error, { depth: 10, showHidden: true }), json].join('\n'),
  };
}

async function handle(request: Request): Promise<unknown> {
  if (request.op === 'open') {
    keychain = openKeychain({
      backend: request.backend ?? 'os',
      service: request.service ?? '',
      timeoutMs: request.timeoutMs ?? 5_000,
      announce: (line) => process.stderr.write(`${line}\n`),
    });
    return { ok: true, value: keychain.backend };
  }
  if (keychain === undefined) throw new Error('not open');
  // Accounts come from the test as given, unknown ones included: the guard must refuse them.
  const account = request.account as Parameters<OsKeychain['get']>[0];
  switch (request.op) {
    case 'get':
      return { ok: true, value: await keychain.get(account) };
    case 'set':
      await keychain.set(account, request.value as string);
      return { ok: true, value: null };
    case 'delete':
      return { ok: true, value: await keychain.delete(account) };
    case 'health':
      return { ok: true, value: await keychain.health() };
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const request = JSON.parse(line) as Request;
  handle(request).then(
    (answer) => process.stdout.write(`${JSON.stringify({ id: request.id, ...(answer as object) })}\n`),
    (error: unknown) => process.stdout.write(`${JSON.stringify({ id: request.id, ...describe(error) })}\n`),
  );
});
lines.on('close', () => process.exit(0));
