/**
 * Linux backend: the freedesktop Secret Service (gnome-keyring, KeePassXC, KWallet's bridge) over D-Bus,
 * through `@napi-rs/keyring` pinned to the `secret-service` store. Pinned, the binding throws when the
 * Secret Service is missing instead of silently falling back to the kernel keyutils keyring (which is
 * not persistent and not what the user unlocks): PLATFORM.md, P-g.
 *
 * Items: one per account, attributes `service` = the keychain's service name (it includes the hub
 * identity) and `username` = the account, in the default collection (normally `login`).
 *
 * Health: reads the default collection's `Locked` property over D-Bus with `dbus-send` (or `busctl`),
 * an argv array with no secret, bounded. It never reads, writes or deletes an item.
 */
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import type { KeychainBackend, KeychainHealth } from './keychain-common.js';
import {
  createBindingBackend,
  loadKeyringBinding,
  type BindingEntryOptions,
  type OsBackendOptions,
} from './keychain-binding.js';
import { pickEnv, runCommand, type Exec } from './keychain-exec.js';

export const SECRET_SERVICE_BACKEND = 'secret-service';

/** The entry options that pin the binding to the Secret Service (never keyutils). */
export const SECRET_SERVICE_ENTRY_OPTIONS: BindingEntryOptions = Object.freeze({
  linux: Object.freeze({ store: 'secret-service' as const }),
});

const DEST = 'org.freedesktop.secrets';
const SERVICE_PATH = '/org/freedesktop/secrets';

const ADVICE = {
  noBus:
    'no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set); run companion inside a desktop session, or use --keychain memory for a demo only',
  busUnreachable: 'cannot connect to the D-Bus session bus; check DBUS_SESSION_BUS_ADDRESS',
  noService:
    'no Secret Service on the session bus; install and start gnome-keyring (or another Secret Service such as KeePassXC)',
  noDefault:
    'the Secret Service has no default keyring; create one (for example in "Passwords and Keys") and try again',
  locked:
    'the Secret Service keyring is locked; unlock it (log in to the desktop, or open "Passwords and Keys") and try again',
  noTool: 'cannot query the Secret Service: neither dbus-send (package dbus) nor busctl (systemd) is installed',
  timeout: 'the Secret Service did not answer in time',
  failure: 'the Secret Service gave an unexpected answer',
} as const;

/** The session bus address the binding would use: the variable, else `$XDG_RUNTIME_DIR/bus` if present. */
export function sessionBusAddress(
  env: NodeJS.ProcessEnv,
  exists: (path: string) => boolean = existsSync,
): string | undefined {
  const address = env.DBUS_SESSION_BUS_ADDRESS;
  if (typeof address === 'string' && address.length > 0) return address;
  const runtime = env.XDG_RUNTIME_DIR;
  if (typeof runtime === 'string' && isAbsolute(runtime) && exists(`${runtime}/bus`)) return `unix:path=${runtime}/bus`;
  return undefined;
}

type Query = { ok: true; text: string } | { ok: false; health: KeychainHealth };

const health = (state: KeychainHealth['state'], detail?: string): KeychainHealth =>
  detail === undefined
    ? { backend: SECRET_SERVICE_BACKEND, state }
    : { backend: SECRET_SERVICE_BACKEND, state, detail };

/** Maps a D-Bus tool's failure output to a state; the output is matched, never kept. */
function failureHealth(stderr: string): KeychainHealth {
  if (
    /ServiceUnknown|NameHasNoOwner|not provided by any \.service files|was not activated|Unknown object|UnknownObject/i.test(
      stderr,
    )
  ) {
    return health('unavailable', ADVICE.noService);
  }
  if (
    /Failed to (open connection|connect)|connection refused|No such file or directory|Transport endpoint/i.test(stderr)
  ) {
    return health('unavailable', ADVICE.busUnreachable);
  }
  if (/NoReply|Timeout|timed out/i.test(stderr)) return health('unavailable', ADVICE.timeout);
  return health('unavailable', ADVICE.failure);
}

export interface DbusQueryOptions {
  readonly exec: Exec;
  readonly address: string;
  readonly timeoutMs: number;
  readonly env: Readonly<Record<string, string>>;
}

/** `ReadAlias("default")` then `Get(Collection, "Locked")`, with dbus-send, or busctl if it is missing. */
export async function querySecretServiceHealth(options: DbusQueryOptions): Promise<KeychainHealth> {
  const { exec, address, timeoutMs, env } = options;
  const perCall = Math.max(100, Math.floor(timeoutMs / 2));
  let tool: 'dbus-send' | 'busctl' = 'dbus-send';

  const run = async (dbusSendArgs: string[], busctlArgs: string[]): Promise<Query> => {
    for (;;) {
      const args =
        tool === 'dbus-send'
          ? [`--bus=${address}`, '--print-reply', `--reply-timeout=${perCall}`, `--dest=${DEST}`, ...dbusSendArgs]
          : [`--address=${address}`, `--timeout=${Math.max(1, Math.ceil(perCall / 1000))}s`, ...busctlArgs];
      const result = await exec(tool, args, { timeoutMs: perCall + 500, env });
      if (result.kind === 'not-found') {
        if (tool === 'dbus-send') {
          tool = 'busctl';
          continue;
        }
        return { ok: false, health: health('unavailable', ADVICE.noTool) };
      }
      if (result.kind === 'timeout') return { ok: false, health: health('unavailable', ADVICE.timeout) };
      if (result.kind === 'spawn-failed') return { ok: false, health: health('unavailable', ADVICE.failure) };
      if (result.status !== 0) return { ok: false, health: failureHealth(result.stderr) };
      return { ok: true, text: result.stdout };
    }
  };

  const alias = await run(
    [SERVICE_PATH, 'org.freedesktop.Secret.Service.ReadAlias', 'string:default'],
    ['call', DEST, SERVICE_PATH, 'org.freedesktop.Secret.Service', 'ReadAlias', 's', 'default'],
  );
  if (!alias.ok) return alias.health;
  const path = /(?:object path|^o) "([^"]*)"/m.exec(alias.text.trim())?.[1];
  if (path === undefined) return health('unavailable', ADVICE.failure);
  if (path === '/' || !/^\/org\/freedesktop\/secrets\/collection\/[A-Za-z0-9_]+$/.test(path)) {
    return health('unavailable', ADVICE.noDefault);
  }
  const locked = await run(
    [path, 'org.freedesktop.DBus.Properties.Get', 'string:org.freedesktop.Secret.Collection', 'string:Locked'],
    ['get-property', DEST, path, 'org.freedesktop.Secret.Collection', 'Locked'],
  );
  if (!locked.ok) return locked.health;
  const flag = /(?:boolean|^b) (true|false)/m.exec(locked.text.trim())?.[1];
  if (flag === 'false') return health('available');
  if (flag === 'true') return health('locked', ADVICE.locked);
  return health('unavailable', ADVICE.failure);
}

/** Creates the Secret Service backend. Calls fail with our codes; see `keychain.ts` for the guard. */
export function createSecretServiceBackend(options: OsBackendOptions): KeychainBackend {
  const exec = options.exec ?? runCommand;
  const env = options.env ?? process.env;
  const healthCheck = async (): Promise<KeychainHealth> => {
    const address = sessionBusAddress(env);
    if (address === undefined) return health('unavailable', ADVICE.noBus);
    // The tools get the address on argv (not a secret) and a minimal environment.
    const childEnv = { ...pickEnv(env, ['PATH', 'HOME', 'XDG_RUNTIME_DIR']), LC_ALL: 'C' };
    return querySecretServiceHealth({ exec, address, timeoutMs: options.timeoutMs, env: childEnv });
  };
  return createBindingBackend({
    name: SECRET_SERVICE_BACKEND,
    service: options.service,
    entryOptions: SECRET_SERVICE_ENTRY_OPTIONS,
    health: healthCheck,
    loadBinding: options.loadBinding ?? loadKeyringBinding,
    noDefaultAdvice: ADVICE.noDefault,
    lockedAdvice: ADVICE.locked,
    unavailableAdvice: ADVICE.noService,
  });
}
