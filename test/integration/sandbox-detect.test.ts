// detectSandbox() on this machine: it proves a mode with one real sandboxed run, falls back from
// bubblewrap to the partial unshare mode, then to none, each with a reason; a hung proof is bounded.
// The unshare fallback runs the escape probe too, to pin down what it gives and what it does not.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gate } from '../helpers/gate.js';
import { bwrapPresent, fixture, lastJson, packageJson, runDetached } from '../helpers/sandbox-run.js';
import {
  assertSandboxOrExplicitOptOut,
  clearSandboxDetectionCache,
  detectSandbox,
  sandboxCommand,
} from '../../src/runtime/sandbox.js';
import { detectSandboxMode } from '../../src/cli/sandbox-mode.js';
import type { EscapeSpec } from '../fixtures/sandbox/escape-probe.js';

const unsharePresent = existsSync('/usr/bin/unshare') && existsSync('/usr/bin/setpriv');
const MISSING = '/nonexistent/companion-test/bwrap';

describe('detectSandbox()', () => {
  let root = '';
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'companion-sandbox-detect-'));
    clearSandboxDetectionCache();
  });
  after(() => {
    clearSandboxDetectionCache();
    rmSync(root, { recursive: true, force: true });
  });

  test(
    'detectSandbox() picks bubblewrap when it can make a sandbox here',
    gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap'),
    async () => {
      const support = await detectSandbox();
      assert.equal(support.mode, 'bubblewrap');
      assert.equal(support.path, '/usr/bin/bwrap');
      assert.equal(support.reason, undefined);
      assert.ok(Object.isFrozen(support));
      assert.equal(await detectSandbox(), support, 'the answer is cached');
      assert.equal(await detectSandboxMode(), 'bubblewrap');
    },
  );

  test(
    'detectSandbox() falls back to the partial unshare mode, saying why, when bubblewrap is missing',
    gate('unshare', unsharePresent, 'apt-get install util-linux'),
    async () => {
      const support = await detectSandbox({ bwrapPath: MISSING });
      assert.equal(support.mode, 'unshare');
      assert.equal(support.path, '/usr/bin/unshare');
      assert.match(support.reason ?? '', /bubblewrap is not installed/);
      assert.match(support.reason ?? '', /not files/);
      assert.equal(await detectSandboxMode({ bwrapPath: MISSING }), 'unshare');
    },
  );

  test(
    'detectSandbox() falls back when bubblewrap is present but its proof run fails',
    gate('unshare', unsharePresent, 'apt-get install util-linux'),
    async () => {
      const support = await detectSandbox({ bwrapPath: '/usr/bin/false' });
      assert.equal(support.mode, 'unshare');
      assert.match(support.reason ?? '', /bubblewrap cannot make a sandbox here \(exit status 1\)/);
    },
  );

  test(
    'detectSandbox() does not pick a bubblewrap without --ro-bind-fd (older than 0.10 and not backported): the runtime could not get its model read-only',
    gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap'),
    async () => {
      const old = join(root, 'old-bwrap');
      writeFileSync(
        old,
        '#!/bin/sh\nfor a in "$@"; do [ "$a" = --ro-bind-fd ] && { echo "bwrap: Unknown option --ro-bind-fd" >&2; exit 1; }; done\nexec /usr/bin/bwrap "$@"\n',
      );
      chmodSync(old, 0o755);
      const support = await detectSandbox({ bwrapPath: old });
      assert.notEqual(support.mode, 'bubblewrap');
      assert.match(
        support.reason ?? '',
        /bubblewrap cannot make a sandbox here \(bwrap: Unknown option --ro-bind-fd\)/,
      );
    },
  );

  test(
    'detectSandbox() does not pick a bubblewrap that shows the descriptor writable: the proof reopens it for writing',
    gate('bubblewrap', bwrapPresent, 'apt-get install bubblewrap'),
    async () => {
      const loose = join(root, 'loose-bwrap');
      // Rewrites --ro-bind-fd into the writable --bind-fd and otherwise runs the real bubblewrap.
      writeFileSync(
        loose,
        '#!/bin/sh\nfor a in "$@"; do shift; if [ "$a" = --ro-bind-fd ]; then set -- "$@" --bind-fd; else set -- "$@" "$a"; fi; done\nexec /usr/bin/bwrap "$@"\n',
      );
      chmodSync(loose, 0o755);
      const support = await detectSandbox({ bwrapPath: loose });
      assert.notEqual(support.mode, 'bubblewrap');
      assert.match(support.reason ?? '', /bubblewrap cannot make a sandbox here \(exit status [45]\)/);
    },
  );

  test(
    'detectSandbox() bounds a proof run that hangs',
    gate('unshare', unsharePresent, 'apt-get install util-linux'),
    async () => {
      const hanging = join(root, 'hanging-bwrap');
      writeFileSync(hanging, '#!/bin/sh\nexec sleep 30\n');
      chmodSync(hanging, 0o755);
      const support = await detectSandbox({ bwrapPath: hanging, timeoutMs: 300 });
      assert.equal(support.mode, 'unshare');
      assert.match(support.reason ?? '', /timed out after 300 ms/);
    },
  );

  test('detectSandbox() says none, with a reason, when nothing can make a sandbox; the gate refuses', async () => {
    const support = await detectSandbox({ bwrapPath: MISSING, unsharePath: '/nonexistent/companion-test/unshare' });
    assert.deepEqual(
      { ...support },
      { mode: 'none', path: null, reason: 'bubblewrap is not installed; unshare or setpriv is not installed' },
    );
    assert.throws(
      () => assertSandboxOrExplicitOptOut(support, false),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, 'ERR_SANDBOX_UNAVAILABLE');
        assert.match(error.message, /install bubblewrap \(apt-get install bubblewrap\) or pass --allow-unsandboxed/);
        return true;
      },
    );
    assert.doesNotThrow(() => assertSandboxOrExplicitOptOut(support, true));
    assert.throws(
      () =>
        sandboxCommand(
          { file: process.execPath, args: [] },
          { readOnlyPaths: [], writablePaths: [], allowNetwork: false },
          support,
        ),
      { code: 'ERR_SANDBOX_UNAVAILABLE' },
    );
  });

  test('detectSandbox({ probe: false }) trusts the binary without running it', async () => {
    const support = await detectSandbox({ bwrapPath: '/usr/bin/false', probe: false });
    assert.equal(support.mode, 'bubblewrap');
  });

  test('detectSandbox() reports none on Windows until the AppContainer launcher exists', async () => {
    const support = await detectSandbox({ platform: 'win32' });
    assert.equal(support.mode, 'none');
    assert.match(support.reason ?? '', /AppContainer launcher is designed but not built yet/);
  });
});

describe('the unshare fallback, run for real', gate('unshare', unsharePresent, 'apt-get install util-linux'), () => {
  let root = '';
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'companion-sandbox-unshare-'));
    clearSandboxDetectionCache();
  });
  after(() => {
    clearSandboxDetectionCache();
    rmSync(root, { recursive: true, force: true });
  });

  test('sandboxCommand() with unshare cuts the network, other processes and the environment, but NOT files (its documented limit)', async () => {
    const support = await detectSandbox({ bwrapPath: MISSING });
    assert.equal(support.mode, 'unshare');
    const planted = join(root, 'planted.txt');
    writeFileSync(planted, 'visible under unshare');
    const spec: EscapeSpec = { routable: '192.0.2.1', readFiles: [planted] };
    const probe = fixture('escape-probe.js');
    const command = sandboxCommand(
      { file: process.execPath, args: [probe, JSON.stringify(spec)] },
      { readOnlyPaths: [probe, packageJson], writablePaths: [], allowNetwork: false },
      support,
    );
    const result = lastJson<{
      interfaces: string[];
      udpRoute: { code?: string };
      envKeys: string[];
      proc: { value: Array<{ pid: number }> };
      readFiles: Array<{ ok: boolean }>;
      status: { value: Record<string, string> };
    }>(await runDetached(command, 30_000, { COMPANION_REFRESH_TOKEN: 'must-not-leak' }));
    // A new network namespace made by unshare has lo, and leaves it down: no interface is up at all.
    assert.deepEqual(result.interfaces, []);
    assert.equal(result.udpRoute.code, 'ENETUNREACH');
    assert.deepEqual(result.envKeys, ['HOME', 'LANG', 'PATH', 'TMPDIR']);
    assert.ok(
      result.proc.value.every((entry) => entry.pid <= 3),
      'only its own pid namespace',
    );
    assert.equal(result.status.value.NoNewPrivs, '1');
    assert.equal(result.status.value.CapEff, '0000000000000000');
    assert.equal(result.readFiles[0]?.ok, true, 'the limit: unshare hides no file');
    assert.throws(() => assertSandboxOrExplicitOptOut(support, false), { code: 'ERR_SANDBOX_UNAVAILABLE' });
  });
});
