/** `companion login` and `companion logout` (D5.2). */
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { authorityFor, createContext } from './context.js';

/** Opens the system browser with the `open` package (no shell string); rejects when it cannot. */
export async function openSystemBrowser(url: string): Promise<void> {
  const { default: open } = await import('open');
  const child = await open(url, { wait: false });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('spawn', () => resolve());
    setTimeout(resolve, 500).unref();
  });
}

export const loginCommand: Command = {
  name: 'login',
  summary: 'sign in to the hub in the system browser',
  help: [
    'Usage: companion login [--hub URL] [--ca FILE] [--no-browser] [--json]',
    '',
    'Signs in to the hub with the OAuth native-app flow: a one-shot listener on 127.0.0.1, the system',
    'browser, PKCE S256 and an issuer check; the tokens go to the OS keychain, never to a file.',
    'With --no-browser (or when no browser opens) the URL is printed: open it in a browser on this machine.',
    'With --json: {"event":"open","url":URL} once the listener is up, then {"event":"signed-in"}.',
    '',
    'Options:',
    '  --no-browser           print the URL instead of opening the browser',
    '  --timeout SECONDS      how long to wait for the browser (default 300)',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args, { 'no-browser': { type: 'boolean' }, timeout: { type: 'string' } });
    const context = await createContext(parsed, io);
    try {
      const authority = authorityFor(context, io);
      const timeoutSeconds = parsed.values.timeout === undefined ? 300 : Number(parsed.values.timeout);
      const result = await authority.signIn({
        ...(parsed.values['no-browser'] === true ? {} : { openBrowser: openSystemBrowser }),
        timeoutMs: Number.isFinite(timeoutSeconds) && timeoutSeconds > 0 ? timeoutSeconds * 1000 : 300_000,
        onOpen: (url, opened) => {
          if (context.json) context.emit({ event: 'open', url });
          else io.out(opened ? `Opened the browser. If it did not appear, open this URL on this machine:\n  ${url}` : `Open this URL in a browser on this machine to sign in:\n  ${url}`);
        },
      });
      if (context.json) context.emit({ event: 'signed-in', ...(result.subject ? { user: result.subject } : {}), expiresAt: new Date(result.expiresAt).toISOString() });
      else io.out(`Signed in${result.subject ? ` as ${result.subject}` : ''} (scope: ${result.scope.join(' ')}).`);
      return 0;
    } finally {
      await context.close();
    }
  },
};

export const logoutCommand: Command = {
  name: 'logout',
  summary: 'revoke the session at the hub and delete every keychain item',
  help: [
    'Usage: companion logout [--hub URL] [--json]',
    '',
    'Revokes the refresh token at the hub when it can, then deletes all four keychain items whatever the',
    'network does.',
    '',
    'Options:',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args);
    const context = await createContext(parsed, io);
    try {
      const authority = authorityFor(context, io);
      const outcome = await authority.signOut();
      if (context.json) context.emit({ event: 'signed-out', revoked: outcome.revoked, failed: outcome.failedAccounts });
      else io.out(`Signed out${outcome.revoked ? ' (session revoked at the hub)' : ' (the hub could not be told; local items deleted)'}.`);
      if (outcome.failedAccounts.length > 0) {
        io.err(`companion logout: could not delete ${outcome.failedAccounts.join(', ')} from the keychain; unlock it and run logout again [ERR_CUSTODY_SIGNOUT_INCOMPLETE]`);
        return 1;
      }
      return 0;
    } finally {
      await context.close();
    }
  },
};
