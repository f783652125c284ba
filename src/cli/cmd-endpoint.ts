/**
 * `companion endpoint`: the running companion's URL and loopback token, for a local client that asks.
 * Printed only after the endpoint passed the identity check and the attestation (P-k): a stale discovery
 * file whose port another user took gets neither the token nor a look at it.
 */
import { CompanionError } from '../core/errors.js';
import { readDiscovery } from '../runtime/manager/discovery.js';
import { verifyEndpoint } from '../shell/discovery.js';
import { HUB_OPTIONS } from './args.js';
import { defineCommand } from './command.js';
import { authorityFor, withContext, type CommandContext } from './context.js';
import type { Io } from './io.js';

/**
 * Prints the URL and token once the endpoint proved it is our front door.
 * @throws ERR_UPSTREAM_UNAVAILABLE (nothing runs, no token), ERR_ENDPOINT_UNVERIFIED (it failed the proof)
 */
async function printEndpoint(context: CommandContext, io: Io): Promise<number> {
  const discovery = await readDiscovery(context.paths.discovery);
  if (discovery === null)
    throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the companion is not running; start it with `companion up`');
  const token = await authorityFor(context, io).loopbackToken();
  if (token === null)
    throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'no loopback token is stored; restart `companion up`');
  // Why before printing: a client would send this token to the URL; only our front door may get it.
  const check = await verifyEndpoint(discovery, token);
  if (!check.ok && check.code === 'ERR_UPSTREAM_UNAVAILABLE')
    throw new CompanionError('ERR_UPSTREAM_UNAVAILABLE', 'the companion is not running; start it with `companion up`');
  if (!check.ok)
    throw new CompanionError(
      'ERR_ENDPOINT_UNVERIFIED',
      "the recorded endpoint did not prove it is this companion's front door; nothing was sent to it. Stop `companion up` and start it again",
    );
  if (context.json) context.emit({ url: check.endpoint.url, token: token.reveal() });
  else io.out(`URL:   ${check.endpoint.url}\nToken: ${token.reveal()}`);
  return 0;
}

export const endpointCommand = defineCommand({
  name: 'endpoint',
  summary: 'print the local endpoint URL and its loopback token, for a local client that asks',
  about: [
    'Usage: companion endpoint [--json]',
    '',
    "Prints the URL of the running companion's OpenAI-compatible endpoint and its loopback token (as",
    '`gh auth token` prints a token: on purpose, for a local client that asks). The URL ends in /v1: use it as any',
    'OpenAI client\'s base URL, with the token as its API key. With --json: {"url": URL, "token": STRING}.',
    "Both are printed only once the endpoint has proved that it is this companion's front door (it answers a",
    'fresh challenge with a MAC under the token, without the token being sent); otherwise nothing is printed',
    'and the exit status is 1.',
  ],
  options: HUB_OPTIONS,
  run: (parsed, io) => withContext(parsed, io, (context) => printEndpoint(context, io)),
});
