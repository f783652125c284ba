// P-i at the spawn (D5.4): the runtime is started with an argv array and no shell, so nothing in a path
// the companion handles (its data and run folders: the runtime's working folder and its socket's folder)
// is ever interpreted. Each case puts one kind of shell syntax in the folder names, with a command that
// would create a marker file if a shell ran it; the runtime must start in exactly that literal folder, its
// argv must be nothing but node and its entry file (the folder reaches it on no argv: issue 16 item 6),
// and no marker may appear. Through the public adapter only (spawnRuntime + bundledProfile), no sandbox.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';
import { spawnRuntime, type RuntimeHandle } from '../../src/runtime/spawn.js';
import { runtimeEntry, writeTinyModel } from '../helpers/runtime-env.js';

// Short base: the socket path (<runDir>/rt-XXXXXX/rt.sock) must stay under 100 bytes, or the adapter
// moves it to the system temp folder and the payload would never reach the spawn.
const base = mkdtempSync('/tmp/pi-');
const marker = (n: number): string => join(base, `m${n}`);

/** Folder names (joined under `base`) that a shell would turn into a `touch` of the case's marker. */
const CASES: { readonly name: string; readonly folder: (m: string) => string }[] = [
  { name: 'a semicolon', folder: (m) => `a;touch ${m};b` },
  { name: 'command substitution $( )', folder: (m) => `a$(touch ${m})b` },
  { name: 'backticks', folder: (m) => `a\`touch ${m}\`b` },
  { name: 'a pipe and &&', folder: (m) => `a|touch ${m}&&b` },
  { name: 'spaces, quotes and a newline', folder: (m) => `a "b' c\ntouch ${m}\nd` },
];

test.after(() => rmSync(base, { recursive: true, force: true }));

for (const [i, { name, folder }] of CASES.entries()) {
  test(
    `P-i spawnRuntime() passes a run folder containing ${name} to the runtime literally: it starts there and no shell runs`,
    { timeout: 60_000 },
    async (t) => {
      const m = marker(i);
      const dir = join(base, folder(m));
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const model = writeTinyModel(base, { name: `tiny-${i}.gguf` });
      let handle: RuntimeHandle | null = null;
      let startError: unknown = null;
      try {
        handle = await spawnRuntime(bundledProfile({ modelPath: model, threads: 1 }), {
          dataDir: dir,
          runDir: dir,
          readyTimeoutMs: 60_000,
        });
      } catch (error) {
        startError = error;
      }
      t.after(() => handle?.stop(2000));
      // First what a shell would have done, then that the start itself worked.
      assert.equal(existsSync(m), false, `no shell ran the ${name} payload`);
      assert.equal(startError, null);
      assert.ok(handle !== null);

      // The payload reached the spawn intact: the runtime listens, and runs, inside the literal folder.
      assert.equal(handle.address.kind, 'unix');
      const socketPath = handle.address.kind === 'unix' ? handle.address.path : '';
      assert.ok(socketPath.startsWith(`${dir}/rt-`), 'the runtime listens inside the literal folder');
      assert.ok(
        readlinkSync(`/proc/${handle.pid}/cwd`).startsWith(`${dir}/rt-`),
        'the runtime works inside the literal folder',
      );
      // …and its argv is node and its entry file only: no folder, no socket path, no model path.
      const argv = readFileSync(`/proc/${handle.pid}/cmdline`, 'utf8')
        .split('\0')
        .filter((arg) => arg.length > 0);
      assert.deepEqual(argv, [process.execPath, runtimeEntry]);
      // No shell between us and the runtime: the runtime is our direct child and runs node itself.
      assert.equal(Number(readFileSync(`/proc/${handle.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]), process.pid);
      assert.equal(await handle.healthCheck(2000), true);
      assert.equal(existsSync(m), false, `no shell ran the ${name} payload`);
      await handle.stop(2000);
      assert.equal(existsSync(m), false);
      assert.deepEqual(
        readdirSync(base).filter((entry) => /^m\d+$/.test(entry)),
        [],
      );
    },
  );
}
