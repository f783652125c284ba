/** `companion login` and `companion logout` (D5.2). */
import { errorForHealth } from '../authority/keychain-common.js';
import type { OsKeychain } from '../authority/keychain.js';
import { CompanionError } from '../core/errors.js';
import { stopUp } from '../shell/up-control.js';
import { HUB_OPTIONS } from './args.js';
import { defineCommand } from './command.js';
import { authorityFor, withContext, type CommandContext } from './context.js';
import { rememberSettings, settingsToRemember } from './cmd-config.js';
import { CliUsageError, type Io } from './io.js';

/**
 * What the authorization URL may contain before it is handed to the opener: the characters that
 * `buildAuthorizationUrl` produces from a checked https endpoint and URL-encoded parameters. Anything else
 * (a quote, `$`, a backtick, a space from a strange endpoint in the hub metadata) is never passed to a
 * launcher that might build a command line from it: the URL is printed instead.
 */
const OPENABLE_URL =
  /^https:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?(\/[A-Za-z0-9._~%!*+,;=:@/-]*)?(\?[A-Za-z0-9._~%*+,;=:@/&-]*)?$/;

/** True when `url` may be handed to the browser launcher (see {@link OPENABLE_URL}). */
export function isOpenableUrl(url: string): boolean {
  return typeof url === 'string' && url.length <= 8192 && OPENABLE_URL.test(url);
}

/**
 * Opens the system browser with the `open` package (an argv, never a shell string); rejects when the URL
 * is not plainly openable or the launcher cannot start (the caller then prints the URL).
 */
export async function openSystemBrowser(url: string): Promise<void> {
  if (!isOpenableUrl(url)) throw new Error('the authorization URL is not plain enough to hand to a launcher');
  const { default: open } = await import('open');
  // open() resolves once the launcher has spawned (and rejects when it cannot); later errors are ignored.
  const child = await open(url, { wait: false });
  child.on('error', () => undefined);
}

/** `--timeout SECONDS`: a whole number from 1 to 3600 (default 300). @throws CliUsageError */
export function parseTimeoutSeconds(value: string | boolean | undefined): number {
  if (value === undefined) return 300;
  if (typeof value !== 'string' || !/^[0-9]{1,4}$/.test(value) || Number(value) < 1 || Number(value) > 3600) {
    throw new CliUsageError('--timeout takes a whole number of seconds from 1 to 3600');
  }
  return Number(value);
}

/**
 * The keychain must be usable before a flow starts: a locked or missing keychain is refused before the
 * browser opens or a URL is printed (the health check reads no item). @throws ERR_KEYCHAIN_LOCKED,
 * ERR_KEYCHAIN_UNAVAILABLE with what to do, prefixed with `what` (what was not done).
 */
export async function requireKeychain(keychain: OsKeychain, what: string): Promise<void> {
  const health = await keychain.health();
  if (health.state === 'available') return;
  const error = errorForHealth(health);
  throw new CompanionError(
    error.code,
    `${what}: ${error.message}`,
    error.detail === undefined ? {} : { detail: error.detail },
  );
}

/** The URL line(s) of `login`: an event with --json, else where to open it. */
function printOpenUrl(context: CommandContext, io: Io, url: string, opened: boolean): void {
  if (context.json) context.emit({ event: 'open', url });
  else
    io.out(
      opened
        ? `Opened the browser. If it did not appear, open this URL on this machine:\n  ${url}`
        : `Open this URL in a browser on this machine to sign in:\n  ${url}`,
    );
}

/** `login` once the options are checked: keychain first, then the flow, then the remembered settings. */
async function signIn(context: CommandContext, io: Io, noBrowser: boolean, timeoutSeconds: number): Promise<number> {
  const authority = authorityFor(context, io);
  await requireKeychain(authority.keychain, 'not signed in (nothing was opened)');
  const remember = await settingsToRemember(context.config);
  const result = await authority.signIn({
    ...(noBrowser ? {} : { openBrowser: openSystemBrowser }),
    timeoutMs: timeoutSeconds * 1000,
    // The URL carries state and the PKCE challenge (never the verifier): the user needs it to sign in.
    onOpen: (url, opened) => printOpenUrl(context, io, url, opened),
  });
  // Only after a successful sign-in: a failed login saves nothing (issue 18 item 2).
  const configFile = await rememberSettings(context.config.dataDir, remember);
  if (context.json) {
    context.emit({
      event: 'signed-in',
      ...(result.subject ? { user: result.subject } : {}),
      expiresAt: new Date(result.expiresAt).toISOString(),
      config: configFile,
    });
    return 0;
  }
  io.out(`Signed in${result.subject ? ` as ${result.subject}` : ''} (scope: ${result.scope.join(' ')}).`);
  io.out(`Saved ${Object.keys(remember).join(', ')} in ${configFile}: later commands use them without flags.`);
  return 0;
}

export const loginCommand = defineCommand({
  name: 'login',
  summary: 'sign in to the hub in the system browser',
  about: [
    'Usage: companion login [--hub URL] [--ca FILE] [--no-browser] [--json]',
    '',
    'Signs in to the hub with the OAuth native-app flow: a one-shot listener on 127.0.0.1, the system',
    'browser, PKCE S256 and an issuer check; the tokens go to the OS keychain, never to a file.',
    'With --no-browser (or when no browser opens) the URL is printed: open it in a browser on this machine.',
    'After a successful sign-in, --hub, --ca and --manifest-key are saved in <data-dir>/config.json (see companion config).',
    'With --json: {"event":"open","url":URL} once the listener is up, then {"event":"signed-in"} or, on',
    'failure, {"error":{"code","message"}}.',
    'The keychain is checked first: when it is locked or missing, login stops before any browser or URL.',
    'The browser\'s page shows the real outcome: "Signed in" only once the tokens are stored.',
  ],
  options: {
    'no-browser': { type: 'boolean', help: 'print the URL instead of opening the browser' },
    timeout: { type: 'string', value: 'SECONDS', help: 'how long to wait for the browser, 1 to 3600 (default 300)' },
    ...HUB_OPTIONS,
  },
  async run(parsed, io) {
    const timeoutSeconds = parseTimeoutSeconds(parsed.values.timeout);
    return withContext(parsed, io, (context) =>
      signIn(context, io, parsed.values['no-browser'] === true, timeoutSeconds),
    );
  },
});

/** Stops a running `up` of this data dir before its token is deleted, and says so. */
async function stopUpFirst(context: CommandContext, io: Io): Promise<void> {
  // A running `up` serves local clients with the loopback token this deletes: stop it first. One that
  // cannot be stopped (or identified) stops the logout, with nothing deleted (main prints its line).
  const stopped = await stopUp(context.paths, {
    onForce: (pid, graceMs) =>
      io.err(
        `companion logout: companion up (pid ${pid}) did not stop within ${Math.round(graceMs / 1000)} s; killing it`,
      ),
  });
  if (stopped.outcome !== 'stopped') return;
  if (context.json) context.emit({ event: 'stopped', pid: stopped.pid });
  else io.out(`Stopped companion up (pid ${stopped.pid}).`);
}

/**
 * `logout` with the context open. @throws ERR_CUSTODY_SIGNOUT_INCOMPLETE when a keychain item could not
 * be deleted (no "Signed out" line: it would not be true; main prints the one stderr line).
 */
async function signOut(context: CommandContext, io: Io): Promise<number> {
  const authority = authorityFor(context, io);
  // A locked keychain: neither the refresh token (to revoke) nor the items can be reached.
  await requireKeychain(authority.keychain, 'not signed out: nothing was deleted and the session was not revoked');
  await stopUpFirst(context, io);
  const outcome = await authority.signOut();
  if (outcome.failedAccounts.length > 0) {
    const locked = outcome.keychainCodes.includes('ERR_KEYCHAIN_LOCKED');
    const hub = outcome.revoked ? 'the session was revoked at the hub' : 'the session was not revoked at the hub';
    throw new CompanionError(
      'ERR_CUSTODY_SIGNOUT_INCOMPLETE',
      `not fully signed out: ${outcome.failedAccounts.join(', ')} could not be deleted from the keychain${locked ? ' (locked)' : ''}; ${hub}; ${locked ? 'unlock the keychain' : 'check the keychain with companion doctor'}, then run companion logout again`,
      { detail: { failed: outcome.failedAccounts.join(','), revoked: outcome.revoked } },
    );
  }
  if (context.json) context.emit({ event: 'signed-out', revoked: outcome.revoked, failed: outcome.failedAccounts });
  else
    io.out(
      `Signed out${outcome.revoked ? ' (session revoked at the hub)' : ' (the hub could not be told; local items deleted)'}.`,
    );
  return 0;
}

export const logoutCommand = defineCommand({
  name: 'logout',
  summary: 'revoke the session at the hub and delete every keychain item',
  about: [
    'Usage: companion logout [--hub URL] [--json]',
    '',
    'Stops a running `companion up` of this data dir first (it serves with a token logout deletes), then',
    'revokes the refresh token at the hub when it can and deletes all four keychain items whatever the',
    'network does. With the keychain locked nothing is done: one line says so (unlock it, run logout again).',
    'With --json: {"event":"stopped","pid":N} when an up was stopped, then {"event":"signed-out",...}.',
  ],
  // --manifest-key too, though no manifest is read: login's flags copied to logout must work (issue 19).
  options: HUB_OPTIONS,
  run: (parsed, io) => withContext(parsed, io, (context) => signOut(context, io)),
});
