// The sandbox wrappers' argv and profiles, for given inputs (no child is run here): bubblewrap, the
// unshare fallback, the macOS Seatbelt profile and the Windows AppContainer plan; the checks on paths
// and environment; the start gate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  assertSandboxOrExplicitOptOut,
  isAllowedSandboxEnvKey,
  runtimeSandboxProfile,
  sandboxCommand,
  type SandboxProfile,
  type SandboxSupport,
} from '../../src/runtime/sandbox.js';
import { assertSandboxPath, checkProfile } from '../../src/runtime/sandbox-profile.js';
import { readLinuxSystemLayout, type LinuxSystemLayout } from '../../src/runtime/sandbox-linux-bwrap.js';
import { buildSeatbeltProfile } from '../../src/runtime/sandbox-macos.js';
import { buildAppContainerPlan } from '../../src/runtime/sandbox-windows.js';

const LAYOUT: LinuxSystemLayout = {
  readOnly: ['/usr', '/etc/ld.so.cache', '/etc/localtime', '/sys/devices/system/cpu'],
  symlinks: [
    { path: '/bin', target: 'usr/bin' },
    { path: '/lib', target: 'usr/lib' },
    { path: '/lib64', target: 'usr/lib64' },
  ],
};
const BWRAP: SandboxSupport = { mode: 'bubblewrap', path: '/usr/bin/bwrap', disableUserns: true, layout: LAYOUT };
const UNSHARE: SandboxSupport = {
  mode: 'unshare',
  path: '/usr/bin/unshare',
  tools: { setpriv: '/usr/bin/setpriv', env: '/usr/bin/env' },
  userNamespace: false,
};
const SEATBELT: SandboxSupport = { mode: 'sandbox-exec', path: '/usr/bin/sandbox-exec', metal: true };
const APPCONTAINER: SandboxSupport = {
  mode: 'appcontainer',
  path: 'C:\\Program Files\\Companion\\companion-sandbox.exe',
};

const HOME = '/home/alice';
const DATA = `${HOME}/.local/share/companion`;
const INPUTS = {
  nodeBinary: '/opt/node-v20/bin/node',
  codeDir: '/opt/companion/dist/src',
  packageJson: '/opt/companion/package.json',
  nodeModulesDir: '/opt/companion/node_modules',
  model: { fd: 3, path: '/run/companion/model.gguf' },
};
const COMMAND = { file: INPUTS.nodeBinary, args: [`${INPUTS.codeDir}/runtime-server/main.js`] };

function bwrap(profile: SandboxProfile = runtimeSandboxProfile(INPUTS)): string[] {
  const wrapped = sandboxCommand(COMMAND, profile, BWRAP);
  assert.equal(wrapped.file, '/usr/bin/bwrap');
  return wrapped.args;
}

/** The [flag, source, dest] triples of the mount flags in an argv. */
function mounts(args: readonly string[]): Array<[string, string, string]> {
  const out: Array<[string, string, string]> = [];
  args.forEach((arg, index) => {
    if (['--ro-bind', '--ro-bind-try', '--bind'].includes(arg)) out.push([arg, args[index + 1]!, args[index + 2]!]);
  });
  return out;
}

function before(args: readonly string[], separator = '--'): string[] {
  return args.slice(0, args.indexOf(separator));
}

test('sandboxCommand() for bubblewrap unshares every namespace, dies with its parent and drops all capabilities', () => {
  const args = bwrap();
  const head = before(args);
  for (const flag of ['--unshare-all', '--unshare-user', '--disable-userns', '--die-with-parent', '--clearenv'])
    assert.ok(head.includes(flag), flag);
  assert.deepEqual(head.slice(head.indexOf('--cap-drop'), head.indexOf('--cap-drop') + 2), ['--cap-drop', 'ALL']);
  assert.ok(!head.includes('--share-net'));
  assert.ok(!head.includes('--new-session'), 'the adapter spawns detached: the sandbox stays in its process group');
  assert.deepEqual(args.slice(args.indexOf('--') + 1), [COMMAND.file, ...COMMAND.args]);
});

test('sandboxCommand() for bubblewrap leaves --disable-userns out for a bubblewrap older than 0.8', () => {
  const args = sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), { ...BWRAP, disableUserns: false }).args;
  assert.ok(!args.includes('--disable-userns'));
  assert.ok(args.includes('--unshare-all'));
});

test('sandboxCommand() for bubblewrap shows the model as a read-only view of descriptor 3 and binds nothing of the data dir', () => {
  const args = bwrap();
  const binds = mounts(args);
  assert.deepEqual(
    binds.filter(([, source]) => source.startsWith(HOME)),
    [],
  );
  for (const [, source, dest] of binds) assert.equal(source, dest, 'every path keeps its name');
  const at = args.indexOf('--ro-bind-fd');
  assert.deepEqual(args.slice(at, at + 3), ['--ro-bind-fd', '3', '/run/companion/model.gguf']);
  assert.ok(at < args.indexOf('--remount-ro'), 'the model view is made before the root turns read-only');
  assert.equal(sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), BWRAP).modelPath, '/run/companion/model.gguf');
  assert.ok(!args.includes('--bind'), 'nothing is writable: the listening socket arrives as a descriptor');
});

test('sandboxCommand() for bubblewrap never binds /home, /root, HOME, the data dir, /run or /etc as a whole', () => {
  const args = bwrap();
  const sources = mounts(args).map(([, source]) => source);
  for (const forbidden of [
    '/',
    '/home',
    '/root',
    HOME,
    DATA,
    `${DATA}/models`,
    '/run',
    '/var',
    '/etc',
    '/tmp',
    '/sys',
    '/proc',
    '/dev',
  ]) {
    assert.ok(!sources.includes(forbidden), `${forbidden} is not bound`);
  }
  assert.ok(
    sources.every((source) => !source.startsWith('/run') && !source.startsWith('/root') && !source.startsWith('/var')),
  );
  assert.deepEqual(
    sources.filter((source) => source.startsWith('/etc')),
    ['/etc/ld.so.cache', '/etc/localtime'],
  );
  for (const [flag, path] of [
    ['--proc', '/proc'],
    ['--dev', '/dev'],
    ['--tmpfs', '/tmp'],
  ]) {
    assert.equal(args[args.indexOf(flag!) + 1], path, `${flag} ${path} is a fresh mount`);
  }
});

test('sandboxCommand() for bubblewrap binds the runtime code, package.json, node_modules and the node binary read-only', () => {
  const binds = mounts(bwrap());
  for (const path of [INPUTS.nodeBinary, INPUTS.codeDir, INPUTS.packageJson, INPUTS.nodeModulesDir]) {
    assert.ok(
      binds.some(([flag, source]) => flag === '--ro-bind' && source === path),
      path,
    );
  }
  assert.ok(
    binds.every(([flag]) => flag !== '--bind'),
    'nothing is writable',
  );
});

test('sandboxCommand() for bubblewrap mounts parents before children and makes the root read-only last', () => {
  const profile: SandboxProfile = {
    readOnlyPaths: ['/srv/a/b/model.gguf', '/srv/a'],
    writablePaths: ['/srv/a/b'],
    allowNetwork: false,
  };
  const args = bwrap(profile);
  const order = mounts(args)
    .map(([, source]) => source)
    .filter((source) => source.startsWith('/srv'));
  assert.deepEqual(order, ['/srv/a', '/srv/a/b', '/srv/a/b/model.gguf']);
  assert.ok(args.indexOf('--tmpfs') < args.indexOf('/srv/a'), 'the private /tmp comes before any bind');
  const remount = args.indexOf('--remount-ro');
  assert.equal(args[remount + 1], '/');
  assert.ok(remount > args.lastIndexOf('/srv/a/b/model.gguf'));
  assert.deepEqual(args.slice(args.indexOf('--chdir'), args.indexOf('--chdir') + 2), ['--chdir', '/']);
});

test('sandboxCommand() for bubblewrap skips a read-only path that /usr already shows', () => {
  const args = bwrap({ readOnlyPaths: ['/usr/bin/node'], writablePaths: [], allowNetwork: false });
  assert.ok(!mounts(args).some(([, source]) => source === '/usr/bin/node'));
});

test('sandboxCommand() sets only the default and allowed environment, after --clearenv', () => {
  const args = bwrap(runtimeSandboxProfile({ ...INPUTS, env: { COMPANION_RUNTIME_THREADS: '1', TZ: 'UTC' } }));
  const clear = args.indexOf('--clearenv');
  const env: Record<string, string> = {};
  args.forEach((arg, index) => {
    if (arg === '--setenv') {
      assert.ok(index > clear, '--setenv after --clearenv');
      env[args[index + 1]!] = args[index + 2]!;
    }
  });
  assert.deepEqual(env, {
    COMPANION_RUNTIME_THREADS: '1',
    HOME: '/nonexistent',
    LANG: 'C.UTF-8',
    PATH: '/usr/bin:/bin',
    TMPDIR: '/tmp',
    TZ: 'UTC',
  });
});

test('sandboxCommand() refuses an environment key that is not allowed or looks like a secret', () => {
  const refused = [
    'COMPANION_TOKEN',
    'COMPANION_RUNTIME_TOKEN',
    'COMPANION_RUNTIME_API_KEY',
    'COMPANION_RUNTIME_SESSION',
    'GITHUB_TOKEN',
    'AWS_SECRET_ACCESS_KEY',
    'DBUS_SESSION_BUS_ADDRESS',
    'XDG_RUNTIME_DIR',
    'SSH_AUTH_SOCK',
    'HOME',
    'PATH',
    'NODE_OPTIONS',
    'LD_PRELOAD',
    'http_proxy',
    'lang',
  ];
  for (const key of refused) {
    assert.equal(isAllowedSandboxEnvKey(key), false, key);
    assert.throws(
      () => bwrap(runtimeSandboxProfile({ ...INPUTS, env: { [key]: 'x' } })),
      { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' },
      key,
    );
  }
  for (const value of [
    'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.sig',
    'Bearer abc',
    '-----BEGIN PRIVATE KEY-----',
    'a\0b',
  ]) {
    assert.throws(() => bwrap(runtimeSandboxProfile({ ...INPUTS, env: { COMPANION_RUNTIME_MODE: value } })), {
      code: 'ERR_INVALID_ARG_VALUE',
    });
  }
  for (const key of ['LANG', 'LC_ALL', 'TZ', 'NODE_ENV', 'COMPANION_RUNTIME_THREADS'])
    assert.equal(isAllowedSandboxEnvKey(key), true, key);
});

test('sandboxCommand() refuses relative paths, .. segments, NUL, / or a top-level folder, and paths inside /proc, /dev or /sys', () => {
  const bad = [
    'models/x.gguf',
    './x',
    '/a/../etc/passwd',
    '/a/./b',
    '/a//b',
    '/a/b/',
    '/',
    '/a\0b',
    '/a\nb',
    '/proc/1/root',
    '/dev/sda',
    '/sys/kernel',
    '/home',
    '/tmp',
    '/run',
    '/etc',
    '/root',
    '/x',
  ];
  for (const path of bad) {
    assert.throws(
      () => bwrap({ readOnlyPaths: [path], writablePaths: [], allowNetwork: false }),
      { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' },
      JSON.stringify(path),
    );
    assert.throws(
      () => bwrap({ readOnlyPaths: [], writablePaths: [path], allowNetwork: false }),
      { code: 'ERR_INVALID_ARG_VALUE' },
      JSON.stringify(path),
    );
    assert.throws(
      () =>
        sandboxCommand({ file: path, args: [] }, { readOnlyPaths: [], writablePaths: [], allowNetwork: false }, BWRAP),
      { code: 'ERR_INVALID_ARG_VALUE' },
    );
  }
  assert.throws(() => bwrap({ readOnlyPaths: [42 as unknown as string], writablePaths: [], allowNetwork: false }), {
    code: 'ERR_INVALID_ARG_TYPE',
  });
  assert.throws(() => runtimeSandboxProfile({ ...INPUTS, model: { fd: 3, path: 'tiny.gguf' } }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
  assert.throws(
    () =>
      bwrap({
        readOnlyPaths: [],
        writablePaths: [],
        allowNetwork: false,
        readOnlyFd: { fd: 2, path: '/run/companion/model.gguf' },
      }),
    { code: 'ERR_INVALID_ARG_VALUE' },
  );
});

test('sandboxCommand() refuses a profile that allows the network or names a path twice', () => {
  assert.throws(() => bwrap({ readOnlyPaths: [], writablePaths: [], allowNetwork: true as unknown as false }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
  assert.throws(() => bwrap({ readOnlyPaths: ['/srv/m'], writablePaths: ['/srv/m'], allowNetwork: false }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
});

test('sandboxCommand() keeps paths out of its error messages', () => {
  try {
    bwrap({ readOnlyPaths: ['/home/alice/secret-model/../x'], writablePaths: [], allowNetwork: false });
    assert.fail('should throw');
  } catch (error) {
    assert.ok(!String((error as Error).message).includes('alice'));
  }
});

test('sandboxCommand() throws ERR_SANDBOX_UNAVAILABLE for mode none', () => {
  assert.throws(
    () => sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), { mode: 'none', path: null, reason: 'x' }),
    { code: 'ERR_SANDBOX_UNAVAILABLE' },
  );
});

test('assertSandboxOrExplicitOptOut() lets a full sandbox through and refuses unshare and none unless the user opted out', () => {
  const cases: Array<[SandboxSupport, boolean, boolean]> = [
    [BWRAP, false, true],
    [SEATBELT, false, true],
    [APPCONTAINER, false, true],
    [UNSHARE, false, false],
    [UNSHARE, true, true],
    [{ mode: 'none', path: null, reason: 'bubblewrap is not installed' }, false, false],
    [{ mode: 'none', path: null }, true, true],
  ];
  for (const [support, allow, passes] of cases) {
    if (passes) assert.doesNotThrow(() => assertSandboxOrExplicitOptOut(support, allow), support.mode);
    else {
      assert.throws(
        () => assertSandboxOrExplicitOptOut(support, allow),
        (error: Error & { code?: string }) => {
          assert.equal(error.code, 'ERR_SANDBOX_UNAVAILABLE');
          assert.match(error.message, /install bubblewrap \(apt-get install bubblewrap\) or pass --allow-unsandboxed/);
          return true;
        },
        support.mode,
      );
    }
  }
  assert.throws(() => assertSandboxOrExplicitOptOut(BWRAP, 'yes' as unknown as boolean), {
    code: 'ERR_INVALID_ARG_TYPE',
  });
});

test('sandboxCommand() for unshare chains setpriv and env -i, with no network and a new pid namespace', () => {
  const wrapped = sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), UNSHARE);
  assert.equal(wrapped.file, '/usr/bin/unshare');
  const args = wrapped.args;
  assert.deepEqual(before(args), ['--net', '--pid', '--ipc', '--uts', '--fork', '--kill-child', '--mount-proc']);
  const setpriv = args.indexOf('/usr/bin/setpriv');
  assert.deepEqual(args.slice(setpriv, setpriv + 5), [
    '/usr/bin/setpriv',
    '--no-new-privs',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--',
  ]);
  const env = args.indexOf('/usr/bin/env');
  assert.deepEqual(args.slice(env, env + 5), ['/usr/bin/env', '-i', '-C', '/', '--']);
  assert.deepEqual(args.slice(env + 5), [
    'HOME=/nonexistent',
    'LANG=C.UTF-8',
    'PATH=/usr/bin:/bin',
    'TMPDIR=/tmp',
    COMMAND.file,
    ...COMMAND.args,
  ]);
  const asUser = sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), { ...UNSHARE, userNamespace: true }).args;
  assert.deepEqual(before(asUser).slice(-2), ['--user', '--map-root-user']);
  assert.throws(() => sandboxCommand({ file: '/opt/a=b/node', args: [] }, runtimeSandboxProfile(INPUTS), UNSHARE), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
});

test('buildSeatbeltProfile() denies by default, denies the network and reads only the listed paths, passed as parameters', () => {
  const checked = checkProfile(COMMAND, runtimeSandboxProfile(INPUTS));
  const { text, params } = buildSeatbeltProfile(COMMAND, checked, { metal: false });
  assert.match(text, /^\(version 1\)\n\(deny default\)\n\(deny network\*\)\n/);
  assert.ok(!text.includes(HOME) && !text.includes('/opt/'), 'no path is spliced into the profile text');
  assert.ok(
    !/\(allow network-outbound|\(allow network\*|\(allow file-read\* \(subpath "\/"\)|\(allow default/.test(text),
  );
  const byName = new Map(params);
  assert.equal(byName.get('EXEC'), INPUTS.nodeBinary);
  const readOnly = [...byName.entries()].filter(([name]) => name.startsWith('RO_')).map(([, value]) => value);
  assert.deepEqual(readOnly, [INPUTS.nodeBinary, INPUTS.codeDir, INPUTS.packageJson, INPUTS.nodeModulesDir]);
  assert.deepEqual(
    [...byName.entries()].filter(([name]) => name.startsWith('RW_')).map(([, value]) => value),
    [],
  );
  assert.ok(!text.includes('file-write*'), 'nothing is writable: the model and the socket arrive as descriptors');
  assert.ok(!text.includes('iokit-open'));
  assert.match(buildSeatbeltProfile(COMMAND, checked, { metal: true }).text, /AGXDeviceUserClient/);
});

test('buildSeatbeltProfile() also allows the /private spelling of a path under /tmp, /var or /etc', () => {
  const checked = checkProfile(COMMAND, {
    readOnlyPaths: ['/var/folders/x/model.gguf'],
    writablePaths: ['/tmp/companion-run'],
    allowNetwork: false,
  });
  const values = buildSeatbeltProfile(COMMAND, checked, { metal: false }).params.map(([, value]) => value);
  assert.ok(values.includes('/private/var/folders/x/model.gguf'));
  assert.ok(values.includes('/private/tmp/companion-run'));
});

test('sandboxCommand() for sandbox-exec runs the command through env -i with the checked environment', () => {
  const wrapped = sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), SEATBELT);
  assert.equal(wrapped.file, '/usr/bin/sandbox-exec');
  assert.equal(wrapped.args[0], '-p');
  const env = wrapped.args.indexOf('/usr/bin/env');
  assert.deepEqual(wrapped.args.slice(env, env + 3), ['/usr/bin/env', '-i', '--']);
  assert.deepEqual(wrapped.args.slice(-COMMAND.args.length - 1), [COMMAND.file, ...COMMAND.args]);
  for (let index = 2; index < env; index += 2) assert.equal(wrapped.args[index], '-D');
});

test('buildAppContainerPlan() grants read to the code and model, modify to the socket folder, and no capability', () => {
  const windows = {
    nodeBinary: 'C:\\Program Files\\nodejs\\node.exe',
    codeDir: 'C:\\Program Files\\Companion\\dist\\src',
    model: 'C:\\Users\\alice\\AppData\\Local\\Companion\\models\\9f2c.gguf',
    socketDir: 'C:\\Users\\alice\\AppData\\Local\\Companion\\run',
  };
  const command = { file: windows.nodeBinary, args: ['main.js'] };
  const profile: SandboxProfile = {
    readOnlyPaths: [windows.nodeBinary, windows.codeDir, windows.model],
    writablePaths: [windows.socketDir],
    allowNetwork: false,
    env: { COMPANION_RUNTIME_THREADS: '1' },
  };
  const plan = buildAppContainerPlan(command, checkProfile(command, profile, 'windows'));
  assert.deepEqual(plan.capabilities, []);
  assert.deepEqual(plan.grants, [
    { path: windows.nodeBinary, access: 'read-execute' },
    { path: windows.codeDir, access: 'read-execute' },
    { path: windows.model, access: 'read-execute' },
    { path: windows.socketDir, access: 'modify' },
  ]);
  assert.deepEqual(plan.job, { killOnJobClose: true, dieOnUnhandledException: true, uiRestrictions: true });
  assert.ok(!plan.env.some(([key]) => key === 'USERPROFILE' || key === 'APPDATA'));
  const wrapped = sandboxCommand(command, profile, APPCONTAINER);
  assert.equal(wrapped.file, APPCONTAINER.path);
  assert.deepEqual(wrapped.args.slice(0, 4), ['--container', 'companion.runtime', '--read', windows.nodeBinary]);
  assert.ok(wrapped.args.includes('--write'));
  assert.deepEqual(wrapped.args.slice(-3), ['--', windows.nodeBinary, 'main.js']);
  for (const path of ['models\\x.gguf', '\\\\server\\share\\x', '\\\\?\\C:\\x', 'C:\\a\\..\\b', '/home/alice/x']) {
    assert.throws(
      () => sandboxCommand(command, { ...profile, readOnlyPaths: [path] }, APPCONTAINER),
      { code: 'ERR_INVALID_ARG_VALUE' },
      path,
    );
  }
});

test('readLinuxSystemLayout() recreates merged-/usr links and binds real folders', () => {
  const entries: Record<string, { link?: string; dir?: boolean }> = {
    '/bin': { link: 'usr/bin' },
    '/lib': { dir: true },
    '/lib64': { link: '/usr/lib64' },
    '/lib32': { link: '../opt/lib32' },
  };
  const layout = readLinuxSystemLayout({
    lstat: (path) => {
      const entry = entries[path];
      return entry === undefined
        ? null
        : { isSymbolicLink: () => entry.link !== undefined, isDirectory: () => entry.dir === true };
    },
    readlink: (path) => entries[path]!.link!,
  });
  assert.deepEqual(layout.symlinks, [
    { path: '/bin', target: 'usr/bin' },
    { path: '/lib64', target: '/usr/lib64' },
  ]);
  assert.deepEqual(layout.readOnly, [
    '/usr',
    '/lib',
    '/lib32',
    '/etc/ld.so.cache',
    '/etc/localtime',
    '/sys/devices/system/cpu',
  ]);
});

test('assertSandboxPath() either accepts a string or throws a TypeError with an ERR_INVALID_ARG_* code (property)', () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.string(), fc.stringMatching(/^(\/[a-z.\0]{0,4}){1,4}\/?$/), fc.constantFrom('/', '/proc', '/a/../b')),
      (input) => {
        try {
          assertSandboxPath(input, 'path');
        } catch (error) {
          assert.ok(error instanceof TypeError);
          assert.ok(
            ['ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_TYPE'].includes((error as TypeError & { code: string }).code),
          );
          return;
        }
        assert.ok(input.startsWith('/') && !input.includes('\0') && !input.split('/').includes('..'));
      },
    ),
    { numRuns: 500 },
  );
});
