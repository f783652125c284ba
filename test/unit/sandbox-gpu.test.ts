// GPU passthrough (issue 17 item 8): device and driver discovery over fake /dev and library trees, and
// the exact bubblewrap argv with gpu off and gpu auto. No GPU is needed: nothing here opens a device.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runtimeSandboxProfile, sandboxCommand, type SandboxSupport } from '../../src/runtime/sandbox.js';
import {
  checkGpuPassthrough,
  discoverGpuPassthrough,
  isAllowedGpuDevice,
  type GpuFsEntry,
  type GpuFsView,
} from '../../src/runtime/sandbox-gpu.js';
import type { LinuxSystemLayout } from '../../src/runtime/sandbox-linux-bwrap.js';
import { bundledProfile } from '../../src/runtime/runtime-profile.js';

type Kind = 'dir' | 'file' | 'link' | 'char' | 'block';

/** A fake file system: every parent folder of a listed path exists as a folder unless listed otherwise. */
function fakeFs(entries: Record<string, Kind>): GpuFsView {
  const kinds = new Map<string, Kind>(Object.entries(entries));
  for (const path of Object.keys(entries)) {
    let parent = path.slice(0, path.lastIndexOf('/'));
    while (parent.length > 0) {
      if (!kinds.has(parent)) kinds.set(parent, 'dir');
      parent = parent.slice(0, parent.lastIndexOf('/'));
    }
  }
  const entry = (kind: Kind): GpuFsEntry => ({
    isCharacterDevice: () => kind === 'char',
    isFile: () => kind === 'file',
    isSymbolicLink: () => kind === 'link',
    isDirectory: () => kind === 'dir',
  });
  return {
    lstat: (path) => {
      const kind = kinds.get(path);
      return kind === undefined ? null : entry(kind);
    },
    readdir: (path) => {
      if (kinds.get(path) !== 'dir') return null;
      return [...kinds.keys()]
        .filter((other) => other.startsWith(`${path}/`) && !other.slice(path.length + 1).includes('/'))
        .map((other) => other.slice(path.length + 1));
    },
  };
}

const GPU_DEVICES = ['/dev/dri/renderD128', '/dev/kfd', '/dev/nvidia-uvm', '/dev/nvidia0', '/dev/nvidiactl'];

/** A host with the five GPU nodes, plus nodes that must never pass, and driver files in and out of /usr. */
const HOST: Record<string, Kind> = {
  '/dev/nvidia0': 'char',
  '/dev/nvidiactl': 'char',
  '/dev/nvidia-uvm': 'char',
  '/dev/dri/renderD128': 'char',
  '/dev/kfd': 'char',
  '/dev/sda': 'block',
  '/dev/mem': 'char',
  '/dev/kmem': 'char',
  '/dev/tty': 'char',
  '/dev/null': 'char',
  '/dev/fuse': 'char',
  '/dev/nvidia-fake': 'char',
  '/dev/dri/by-path/pci-0000:01:00.0-render': 'link',
  '/dev/input/event0': 'char',
  '/usr/lib/x86_64-linux-gnu/libcuda.so.1': 'link',
  '/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05': 'file',
  '/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1': 'file',
  '/usr/lib/x86_64-linux-gnu/libvulkan.so.1': 'file',
  '/usr/lib/x86_64-linux-gnu/libssl.so.3': 'file',
  '/usr/lib/x86_64-linux-gnu/libc.so.6': 'file',
  '/usr/share/vulkan/icd.d/nvidia_icd.json': 'file',
  '/etc/vulkan/icd.d/radeon_icd.json': 'file',
  '/etc/vulkan/icd.d/notes.txt': 'file',
  '/etc/shadow': 'file',
  '/lib': 'link',
  '/lib64': 'link',
};

const LAYOUT: LinuxSystemLayout = {
  readOnly: ['/usr', '/etc/ld.so.cache', '/etc/localtime', '/sys/devices/system/cpu'],
  symlinks: [
    { path: '/bin', target: 'usr/bin' },
    { path: '/lib', target: 'usr/lib' },
    { path: '/lib64', target: 'usr/lib64' },
  ],
};
const BWRAP: SandboxSupport = { mode: 'bubblewrap', path: '/usr/bin/bwrap', disableUserns: true, layout: LAYOUT };
const INPUTS = {
  nodeBinary: '/opt/node-v20/bin/node',
  codeDir: '/opt/companion/dist/src',
  packageJson: '/opt/companion/package.json',
  nodeModulesDir: '/opt/companion/node_modules',
  model: { fd: 3, path: '/run/companion/model.gguf' },
};
const COMMAND = { file: INPUTS.nodeBinary, args: [`${INPUTS.codeDir}/runtime-server/main.js`] };

/** The [flag, source, dest] triples for one flag in an argv. */
function triples(args: readonly string[], flag: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  args.forEach((arg, index) => {
    if (arg === flag) out.push([args[index + 1]!, args[index + 2]!]);
  });
  return out;
}

test('discoverGpuPassthrough() finds exactly the GPU nodes that exist and never another /dev node', () => {
  const found = discoverGpuPassthrough(fakeFs(HOST));
  assert.deepEqual([...found.devices], GPU_DEVICES);
  for (const path of found.devices) assert.ok(isAllowedGpuDevice(path), path);
});

test('discoverGpuPassthrough() lists the NVIDIA and Vulkan driver files, the ICD json files, and nothing else', () => {
  const found = discoverGpuPassthrough(fakeFs(HOST));
  assert.deepEqual([...found.libraries].sort(), [
    '/etc/vulkan/icd.d/radeon_icd.json',
    '/usr/lib/x86_64-linux-gnu/libcuda.so.1',
    '/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05',
    '/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1',
    '/usr/lib/x86_64-linux-gnu/libvulkan.so.1',
    '/usr/share/vulkan/icd.d/nvidia_icd.json',
  ]);
});

test('discoverGpuPassthrough() passes no driver file when there is no GPU node, and no NVIDIA library without an NVIDIA node', () => {
  const noDevice = Object.fromEntries(Object.entries(HOST).filter(([path]) => !GPU_DEVICES.includes(path)));
  assert.deepEqual(discoverGpuPassthrough(fakeFs(noDevice)), { devices: [], libraries: [] });
  const amdOnly = Object.fromEntries(Object.entries(HOST).filter(([path]) => !path.startsWith('/dev/nvidia')));
  const found = discoverGpuPassthrough(fakeFs(amdOnly));
  assert.deepEqual([...found.devices], ['/dev/dri/renderD128', '/dev/kfd']);
  assert.ok(
    found.libraries.every((path) => !/libcuda|libnvidia/.test(path)),
    'no NVIDIA library',
  );
  assert.ok(found.libraries.includes('/usr/lib/x86_64-linux-gnu/libvulkan.so.1'));
});

test('discoverGpuPassthrough() refuses a symlink or a non-character node under an allowed name', () => {
  const found = discoverGpuPassthrough(
    fakeFs({ '/dev/nvidia0': 'link', '/dev/nvidiactl': 'block', '/dev/kfd': 'file', '/dev/dri/card0': 'char' }),
  );
  assert.deepEqual([...found.devices], ['/dev/dri/card0']);
  // A /dev/dri that is itself a symlink is not followed.
  assert.deepEqual(discoverGpuPassthrough(fakeFs({ '/dev/dri': 'link', '/dev/kfd': 'char' })).devices, ['/dev/kfd']);
});

test('discoverGpuPassthrough() skips a library folder reached through a symlink (merged /usr)', () => {
  const found = discoverGpuPassthrough(
    fakeFs({
      '/dev/nvidia0': 'char',
      '/lib': 'link',
      '/lib/x86_64-linux-gnu/libcuda.so.1': 'file',
      '/lib64/libcuda.so.1': 'file',
    }),
  );
  assert.deepEqual([...found.libraries], ['/lib64/libcuda.so.1']);
});

test('the bubblewrap argv with gpu off has no device bind and no driver bind', () => {
  const args = sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), BWRAP).args;
  assert.deepEqual(triples(args, '--dev-bind'), []);
  assert.ok(!args.some((arg) => /nvidia|\/dri\/|kfd|vulkan|libcuda/.test(arg)), 'no GPU path at all');
  assert.ok(args.includes('--unshare-all'));
  assert.ok(!args.includes('--share-net'));
});

test('the bubblewrap argv with gpu auto binds exactly the GPU nodes with --dev-bind, and drivers outside /usr read-only', () => {
  const gpu = discoverGpuPassthrough(fakeFs(HOST));
  const off = sandboxCommand(COMMAND, runtimeSandboxProfile(INPUTS), BWRAP).args;
  const args = sandboxCommand(COMMAND, runtimeSandboxProfile({ ...INPUTS, gpu }), BWRAP).args;
  assert.deepEqual(
    triples(args, '--dev-bind'),
    GPU_DEVICES.map((path) => [path, path]),
  );
  // /usr is already visible read-only: only the ICD file under /etc needs its own bind.
  const offBinds = triples(off, '--ro-bind');
  const added = triples(args, '--ro-bind').filter(([source]) => !offBinds.some(([other]) => other === source));
  assert.deepEqual(added, [['/etc/vulkan/icd.d/radeon_icd.json', '/etc/vulkan/icd.d/radeon_icd.json']]);
  // Nothing else changed: remove the GPU additions and the argv is the gpu-off argv.
  const stripped: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--dev-bind' || (args[i] === '--ro-bind' && args[i + 1] === '/etc/vulkan/icd.d/radeon_icd.json'))
      i += 2;
    else stripped.push(args[i]!);
  }
  assert.deepEqual(stripped, off);
  assert.ok(args.indexOf('--dev-bind') > args.indexOf('--dev'), 'the nodes are bound into the fresh /dev');
  assert.ok(args.lastIndexOf('--dev-bind') < args.indexOf('--remount-ro'));
  for (const forbidden of [
    '/dev/sda',
    '/dev/mem',
    '/dev/kmem',
    '/dev/tty',
    '/dev/fuse',
    '/dev/nvidia-fake',
    '/dev/input/event0',
    '/etc/shadow',
    '/usr/lib/x86_64-linux-gnu/libssl.so.3',
  ]) {
    assert.ok(!args.includes(forbidden), forbidden);
  }
  assert.ok(args.includes('--unshare-all') && !args.includes('--share-net'), 'still no network');
});

test('the profile check refuses a device or driver path outside the allow list, whoever built the profile', () => {
  for (const device of [
    '/dev/sda',
    '/dev/mem',
    '/dev/nvidia0/../mem',
    '/dev/dri/../sda',
    '/dev/nvidia',
    '/dev/nvidia1234',
    '/home/alice/nvidia0',
    '/dev/kfd2',
  ]) {
    assert.throws(
      () =>
        sandboxCommand(COMMAND, runtimeSandboxProfile({ ...INPUTS, gpu: { devices: [device], libraries: [] } }), BWRAP),
      { code: 'ERR_INVALID_ARG_VALUE' },
      device,
    );
  }
  for (const library of [
    '/etc/shadow',
    '/usr/lib/x86_64-linux-gnu/libssl.so.3',
    '/home/alice/libcuda.so.1',
    '/etc/vulkan/icd.d/../../shadow.json',
    '/tmp/vulkan/icd.d/x.json',
  ]) {
    assert.throws(
      () => checkGpuPassthrough({ devices: [], libraries: [library] }),
      { code: 'ERR_INVALID_ARG_VALUE' },
      library,
    );
  }
  assert.throws(() => checkGpuPassthrough({ devices: ['/dev/kfd', '/dev/kfd'], libraries: [] }), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
  assert.deepEqual(
    checkGpuPassthrough({ devices: GPU_DEVICES, libraries: ['/usr/lib64/libcuda.so.1'] }).devices,
    GPU_DEVICES,
  );
});

test('the bundled profile asks for gpu auto by default; gpu off stays available', () => {
  assert.equal(bundledProfile({}).settings.gpu, 'auto');
  assert.equal(bundledProfile({ gpu: 'off' }).settings.gpu, 'off');
});
