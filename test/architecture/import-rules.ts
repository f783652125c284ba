// The import rule (CONTRACT §2, D5.8), read from the source files themselves.
// Each rule names the folder it constrains, what it may not import, and why.
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

export interface ImportRule {
  /** Folder under src/ whose files the rule constrains. */
  readonly from: string;
  /** Folders under src/ that those files may not import (a nested path such as `runtime/manager` works too). */
  readonly forbidFolders: readonly string[];
  /** Folders inside a forbidden one that stay allowed (the shell may import `runtime/manager`, nothing else of `runtime`). */
  readonly allowFolders?: readonly string[];
  /** Folders inside `from` that this rule does not constrain: they have a rule of their own. */
  readonly exempt?: readonly string[];
  /** Bare module specifiers (e.g. `node:fs`) those files may not import. */
  readonly forbidModules: readonly string[];
  readonly reason: string;
}

/** Node modules that do I/O: a core may use none of them. */
export const IO_MODULES = [
  'net',
  'http',
  'https',
  'http2',
  'fs',
  'fs/promises',
  'child_process',
  'dgram',
  'tls',
  'dns',
  'dns/promises',
  'worker_threads',
  'cluster',
  'readline',
  'inspector',
];
const ioSpecifiers = IO_MODULES.flatMap((m) => [m, `node:${m}`]);
const ADAPTERS = ['authority', 'runtime', 'runtime-server', 'shell', 'client', 'hub', 'cli', 'common'];

export const RULES: readonly ImportRule[] = [
  {
    from: 'core',
    forbidFolders: ADAPTERS,
    forbidModules: ioSpecifiers,
    reason: 'cores hold the security decisions and do no I/O: they take values and return decisions',
  },
  {
    from: 'runtime',
    forbidFolders: ['authority', 'shell', 'cli', 'hub'],
    forbidModules: ['@napi-rs/keyring', 'oauth4webapi'],
    reason: 'the runtime group holds no authority (D5.8): it never reaches the keychain, tokens or sign-in',
  },
  {
    from: 'runtime/manager',
    forbidFolders: ['authority', 'shell', 'cli', 'hub', 'client', 'runtime-server'],
    forbidModules: ['@napi-rs/keyring', 'oauth4webapi', 'open', 'node-llama-cpp'],
    reason:
      'the runtime manager (supervisor, install, discovery) gets a token verifier and an attestor, never the keychain, a token or the sign-in (D5.8); it reaches the runtime child only through spawn',
  },
  {
    from: 'runtime',
    exempt: ['runtime/manager'],
    forbidFolders: ['runtime/manager'],
    forbidModules: [],
    reason:
      'the runtime adapters (spawn, sandbox, front door, probes, download) are the parts the manager composes; a part that reached up into the manager would tie the layers in a cycle',
  },
  {
    from: 'shell',
    forbidFolders: ['runtime', 'runtime-server'],
    allowFolders: ['runtime/manager'],
    forbidModules: ['node-llama-cpp'],
    reason:
      'the shell only wires the two groups: runtime logic (spawn, sandbox, health, probes, download, install) lives in the runtime group, which the shell reaches through src/runtime/manager/ alone',
  },
  {
    from: 'runtime-server',
    forbidFolders: ['authority', 'shell', 'cli', 'hub', 'runtime', 'client'],
    forbidModules: ['@napi-rs/keyring', 'oauth4webapi', 'undici'],
    reason: 'the bundled runtime runs in the sandboxed child: it has nothing to leak and no way out',
  },
  {
    from: 'authority',
    forbidFolders: ['runtime', 'runtime-server', 'shell', 'cli', 'hub'],
    forbidModules: ['node-llama-cpp'],
    reason: 'the authority group is constructed apart from the runtime group and never drives it',
  },
  {
    from: 'common',
    forbidFolders: ['authority', 'runtime', 'runtime-server', 'shell', 'cli', 'hub', 'client'],
    forbidModules: [],
    reason: 'common helpers are shared by both groups, so they may depend on neither',
  },
  {
    from: 'client',
    forbidFolders: ['authority', 'runtime', 'runtime-server', 'shell', 'cli', 'hub'],
    forbidModules: ['@napi-rs/keyring'],
    reason: 'the LLM client is a library for local callers: it gets a URL and a token, never the keychain',
  },
  {
    from: 'hub',
    forbidFolders: ['authority', 'runtime', 'runtime-server', 'shell', 'cli', 'client'],
    forbidModules: ['@napi-rs/keyring'],
    reason: 'the reference hub is the other party: it shares only the cores (formats), not the companion',
  },
];

export interface Violation {
  readonly file: string;
  readonly specifier: string;
  readonly rule: string;
  readonly reason: string;
}

/** True when `path` (relative to src/, with `/`) is `folder` or lies inside it. */
function inFolder(path: string, folder: string): boolean {
  return path === folder || path.startsWith(`${folder}/`);
}

function listSources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...listSources(path));
    else if (/\.(ts|mts|cts|js|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** Every module specifier a source file names: static and dynamic imports, re-exports, require(). */
export function importSpecifiers(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\bimport\s+(?:type\s+)?(?:[\w*{}\s,$]+\s+from\s+)?['"]([^'"]+)['"]/g,
    /\bexport\s+(?:type\s+)?[\w*{}\s,$]*\s+from\s+['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const pattern of patterns) {
    for (const match of source.matchAll(pattern)) if (match[1] !== undefined) found.push(match[1]);
  }
  return found;
}

/**
 * Checks every file under `srcRoot` against `rules`. Returns the violations; throws when a rule names a
 * folder that does not exist (a rule that guards nothing is a bug, not a pass).
 */
export function checkImportRules(srcRoot: string, rules: readonly ImportRule[] = RULES): Violation[] {
  for (const rule of rules) {
    for (const folder of [rule.from, ...rule.forbidFolders, ...(rule.allowFolders ?? []), ...(rule.exempt ?? [])]) {
      if (!existsSync(join(srcRoot, folder))) {
        throw new Error(`import rule for '${rule.from}' names src/${folder}, which does not exist`);
      }
    }
  }
  const violations: Violation[] = [];
  for (const rule of rules) {
    const base = join(srcRoot, rule.from);
    for (const file of listSources(base)) {
      const own = relative(srcRoot, file).split(sep).join('/');
      if ((rule.exempt ?? []).some((folder) => inFolder(own, folder))) continue;
      const source = readFileSync(file, 'utf8');
      for (const specifier of importSpecifiers(source)) {
        let broken = false;
        if (specifier.startsWith('.')) {
          const target = relative(srcRoot, resolve(dirname(file), specifier))
            .split(sep)
            .join('/');
          const forbidden = rule.forbidFolders.some((folder) => inFolder(target, folder));
          const allowed = (rule.allowFolders ?? []).some((folder) => inFolder(target, folder));
          broken = target.startsWith('..') || (forbidden && !allowed);
        } else {
          broken = rule.forbidModules.some((m) => specifier === m || specifier.startsWith(`${m}/`));
        }
        if (broken) violations.push({ file: relative(srcRoot, file), specifier, rule: rule.from, reason: rule.reason });
      }
    }
  }
  return violations;
}
