// The import rule (CONTRACT §2, D5.8), read from the source files themselves.
// Each rule names the folder it constrains, what it may not import, and why.
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

export interface ImportRule {
  /** Folder under src/ whose files the rule constrains. */
  readonly from: string;
  /** Folders under src/ that those files may not import. */
  readonly forbidFolders: readonly string[];
  /** Bare module specifiers (e.g. `node:fs`) those files may not import. */
  readonly forbidModules: readonly string[];
  readonly reason: string;
}

/** Node modules that do I/O: a core may use none of them. */
export const IO_MODULES = ['net', 'http', 'https', 'http2', 'fs', 'fs/promises', 'child_process', 'dgram', 'tls', 'dns', 'dns/promises', 'worker_threads', 'cluster', 'readline', 'inspector'];
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
    for (const folder of [rule.from, ...rule.forbidFolders]) {
      if (!existsSync(join(srcRoot, folder))) {
        throw new Error(`import rule for '${rule.from}' names src/${folder}, which does not exist`);
      }
    }
  }
  const violations: Violation[] = [];
  for (const rule of rules) {
    const base = join(srcRoot, rule.from);
    for (const file of listSources(base)) {
      const source = readFileSync(file, 'utf8');
      for (const specifier of importSpecifiers(source)) {
        let broken = false;
        if (specifier.startsWith('.')) {
          const target = relative(srcRoot, resolve(dirname(file), specifier));
          const top = target.split(sep)[0] ?? '';
          broken = target.startsWith('..') || rule.forbidFolders.includes(top);
        } else {
          broken = rule.forbidModules.some((m) => specifier === m || specifier.startsWith(`${m}/`));
        }
        if (broken) violations.push({ file: relative(srcRoot, file), specifier, rule: rule.from, reason: rule.reason });
      }
    }
  }
  return violations;
}
