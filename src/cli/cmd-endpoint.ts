/** `companion endpoint`: the running companion's URL and loopback token, for a local client that asks. */
import { CompanionError } from '../core/errors.js';
import { readDiscovery } from '../shell/discovery.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { authorityFor, createContext } from './context.js';

export const endpointCommand: Command = {
  name: 'endpoint',
  summary: 'print the local endpoint URL and its loopback token, for a local client that asks',
  help: [
    'Usage: companion endpoint [--json]',
    '',
    'Prints the URL of the running companion\'s OpenAI-compatible endpoint and its loopback token (as',
    '`gh auth token` prints a token: on purpose, for a local client that asks). The URL ends in /v1: use it as any',
    'OpenAI client\'s base URL, with the token as its API key. With --json: {"url": URL, "token": STRING}.',
    '',
    'Options:',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args);
    const context = await createContext(parsed, io);
    try {
      const discovery = await readDiscovery(context.paths.discovery);
      if (discovery === null) throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the companion is not running; start it with `companion up`');
      const token = await authorityFor(context, io).loopbackToken();
      if (token === null) throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'no loopback token is stored; restart `companion up`');
      if (context.json) context.emit({ url: discovery.url, token: token.reveal() });
      else io.out(`URL:   ${discovery.url}\nToken: ${token.reveal()}`);
      return 0;
    } finally {
      await context.close();
    }
  },
};
