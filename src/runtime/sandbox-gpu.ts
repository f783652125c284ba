/**
 * GPU passthrough for the bubblewrap sandbox (issue 17 item 8): which device nodes and driver files a
 * runtime started with `gpu auto` may see. An allow list, checked twice: discovery only reports names that
 * match it, and the profile check ({@link checkGpuPassthrough}) refuses anything else.
 *
 * - Devices (bound with `--dev-bind`, only those that exist and are character devices, never a symlink):
 *   `/dev/nvidia<N>`, `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`, `/dev/nvidia-modeset`,
 *   `/dev/dri/card<N>`, `/dev/dri/renderD<N>`, `/dev/kfd`. Nothing else of `/dev` (no disk, no `/dev/mem`).
 * - Driver files (read-only), only when a device exists: with an NVIDIA node, `libcuda.so*` and
 *   `libnvidia-*.so*` from the standard library folders; with any node, `libvulkan.so*` and the Vulkan
 *   ICD files (`/usr/share/vulkan/icd.d/*.json`, `/etc/vulkan/icd.d/*.json`). A library folder reached
 *   through a symlink (merged /usr: `/lib/x86_64-linux-gnu`) is skipped: the sandbox already shows it
 *   through `/usr`, and a bind into the read-only `/usr` view could not be made.
 *
 * Discovery reads through an injectable view of the file system, so tests present fake `/dev` and library
 * trees. No GPU exists on the machines this was built on: the argv is tested, GPU execution is not.
 */
import { lstatSync, readdirSync } from 'node:fs';
import { posix } from 'node:path';
import { CodedTypeError } from '../core/errors.js';

/** What a `gpu auto` sandbox adds to its view. */
export interface GpuPassthrough {
  /** Device nodes, bound with `--dev-bind` at the same path. */
  readonly devices: readonly string[];
  /** Driver libraries and ICD files, bound read-only at the same path where not already visible. */
  readonly libraries: readonly string[];
}

/** The little of a file's kind that discovery needs (node's `fs.Stats` fits). */
export interface GpuFsEntry {
  isCharacterDevice(): boolean;
  isFile(): boolean;
  isSymbolicLink(): boolean;
  isDirectory(): boolean;
}

/** A read-only view of the file system: `lstat` (never follows a link) and `readdir`; null when absent. */
export interface GpuFsView {
  lstat(path: string): GpuFsEntry | null;
  readdir(path: string): readonly string[] | null;
}

const NVIDIA_DEVICE = /^\/dev\/nvidia(?:[0-9]{1,3}|ctl|-uvm|-uvm-tools|-modeset)$/;
const DEVICE = /^\/dev\/(?:nvidia(?:[0-9]{1,3}|ctl|-uvm|-uvm-tools|-modeset)|dri\/(?:card|renderD)[0-9]{1,4}|kfd)$/;
const NVIDIA_LIBRARY = /^(?:libcuda\.so(?:\.[0-9]{1,6}){0,4}|libnvidia-[a-z0-9_-]{1,64}\.so(?:\.[0-9]{1,6}){0,4})$/;
const VULKAN_LIBRARY = /^libvulkan\.so(?:\.[0-9]{1,6}){0,4}$/;
const ICD_FILE = /^[A-Za-z0-9_.-]{1,128}\.json$/;

/** The standard library folders searched for driver libraries. */
export const GPU_LIBRARY_DIRS: readonly string[] = Object.freeze([
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/lib64',
  '/lib',
]);
/** Where the Vulkan loader looks for installable client drivers. */
export const VULKAN_ICD_DIRS: readonly string[] = Object.freeze(['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d']);

/** True when `path` is a device node a `gpu auto` sandbox may bind. */
export function isAllowedGpuDevice(path: string): boolean {
  return DEVICE.test(path);
}

/** True when `path` is a driver file a `gpu auto` sandbox may bind read-only (folder and name both checked). */
export function isAllowedGpuLibrary(path: string): boolean {
  const dir = posix.dirname(path);
  const name = posix.basename(path);
  if (GPU_LIBRARY_DIRS.includes(dir)) return NVIDIA_LIBRARY.test(name) || VULKAN_LIBRARY.test(name);
  if (VULKAN_ICD_DIRS.includes(dir)) return ICD_FILE.test(name);
  return false;
}

/** The host's file system, read without following links. */
export const HOST_GPU_FS: GpuFsView = {
  lstat(path) {
    try {
      return lstatSync(path);
    } catch {
      return null;
    }
  },
  readdir(path) {
    try {
      return readdirSync(path);
    } catch {
      return null;
    }
  },
};

/** True when every component of `dir` is a real folder (no symlink on the way). */
function realFolder(fs: GpuFsView, dir: string): boolean {
  let current = '';
  for (const segment of dir.split('/').filter((part) => part.length > 0)) {
    current = `${current}/${segment}`;
    const entry = fs.lstat(current);
    if (entry === null || entry.isSymbolicLink() || !entry.isDirectory()) return false;
  }
  return true;
}

/** Names in `dir` matching `pattern` that are files or links (never folders or devices), sorted. */
function filesIn(fs: GpuFsView, dir: string, pattern: RegExp): string[] {
  if (!realFolder(fs, dir)) return [];
  const out: string[] = [];
  for (const name of fs.readdir(dir) ?? []) {
    if (!pattern.test(name)) continue;
    const entry = fs.lstat(`${dir}/${name}`);
    if (entry !== null && (entry.isFile() || entry.isSymbolicLink())) out.push(`${dir}/${name}`);
  }
  return out.sort();
}

/**
 * The GPU device nodes that exist and the driver files they need, from `fs` (default: the host).
 * Only allow-listed names are ever returned; an empty result means "no GPU to pass".
 */
export function discoverGpuPassthrough(fs: GpuFsView = HOST_GPU_FS): GpuPassthrough {
  const devices: string[] = [];
  const candidates = [
    ...(fs.readdir('/dev') ?? []).map((name) => `/dev/${name}`),
    ...(realFolder(fs, '/dev/dri') ? (fs.readdir('/dev/dri') ?? []).map((name) => `/dev/dri/${name}`) : []),
  ];
  for (const path of candidates) {
    if (!isAllowedGpuDevice(path)) continue;
    const entry = fs.lstat(path);
    // Why: a symlink could point anywhere in /dev; only the real node, and only a character device.
    if (entry !== null && !entry.isSymbolicLink() && entry.isCharacterDevice()) devices.push(path);
  }
  devices.sort();
  if (devices.length === 0) return { devices: [], libraries: [] };
  const libraries = new Set<string>();
  const nvidia = devices.some((path) => NVIDIA_DEVICE.test(path));
  for (const dir of GPU_LIBRARY_DIRS) {
    if (nvidia) for (const path of filesIn(fs, dir, NVIDIA_LIBRARY)) libraries.add(path);
    for (const path of filesIn(fs, dir, VULKAN_LIBRARY)) libraries.add(path);
  }
  for (const dir of VULKAN_ICD_DIRS) for (const path of filesIn(fs, dir, ICD_FILE)) libraries.add(path);
  return { devices, libraries: [...libraries] };
}

function invalid(name: string, expected: string): TypeError {
  return new CodedTypeError('ERR_INVALID_ARG_VALUE', `${name} must be ${expected}`);
}

/**
 * Checks a passthrough against the allow list.
 * @throws TypeError ERR_INVALID_ARG_VALUE / ERR_INVALID_ARG_TYPE on a path outside it or named twice.
 */
export function checkGpuPassthrough(gpu: GpuPassthrough): GpuPassthrough {
  if (typeof gpu !== 'object' || gpu === null || !Array.isArray(gpu.devices) || !Array.isArray(gpu.libraries)) {
    throw new CodedTypeError('ERR_INVALID_ARG_TYPE', 'profile.gpu must be {devices, libraries}');
  }
  const seen = new Set<string>();
  gpu.devices.forEach((path: unknown, index) => {
    if (typeof path !== 'string' || !isAllowedGpuDevice(path))
      throw invalid(`profile.gpu.devices[${index}]`, 'an allowed GPU device node (docs/sandbox.md)');
    if (seen.has(path)) throw invalid(`profile.gpu.devices[${index}]`, 'named once');
    seen.add(path);
  });
  gpu.libraries.forEach((path: unknown, index) => {
    if (typeof path !== 'string' || !isAllowedGpuLibrary(path))
      throw invalid(`profile.gpu.libraries[${index}]`, 'an allowed GPU driver file (docs/sandbox.md)');
    if (seen.has(path)) throw invalid(`profile.gpu.libraries[${index}]`, 'named once');
    seen.add(path);
  });
  return { devices: [...gpu.devices], libraries: [...gpu.libraries] };
}
