/**
 * `companion run PROMPT [--tier T]`: one prompt through the lane selector and the LLM client. The local
 * lane exists only for an endpoint that passed the identity check and the attestation (P-k): the token
 * and the prompt never go to a port that another local user took over.
 */
import { createLlmClient, type Endpoint } from '../client/llm.js';
import { assertOneOf } from '../core/errors.js';
import { CONTEXT_TIERS, LANE_PREFERENCES, type ContextTier, type LanePreference } from '../core/lane.js';
import { endpointHealthy, readDiscovery, verifyEndpoint, type VerifiedEndpoint } from '../shell/discovery.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { CliUsageError } from './io.js';
import { authorityFor, createContext } from './context.js';
import { readInstalled } from '../shell/install.js';

export const runCommand: Command = {
  name: 'run',
  summary: 'run one prompt through the lane selector',
  help: [
    'Usage: companion run PROMPT [--tier public|private|local-only] [--prefer prefer-local|prefer-cloud|local-only]',
    '',
    'Sends PROMPT to the local companion or to the cloud, as the lane selector decides from the tier and',
    'whether the companion is available. local-only never goes to the cloud. The cloud lane is configured',
    'with COMPANION_CLOUD_URL (an OpenAI-compatible base URL) and COMPANION_CLOUD_KEY; without them only',
    'the local lane exists. The answer streams to stdout; the prompt and answer are never logged.',
    'With --json nothing streams: one line {"answer": TEXT, "lane": "companion"|"cloud", "model": ID|null,',
    '"finishReason": STRING|null, "usage": {"promptTokens","completionTokens"}|null}.',
    '',
    'Options:',
    '  --tier T               the data\'s context tier (default private)',
    '  --prefer P             lane preference (default prefer-local)',
    '  --max-tokens N         (default 128)',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args, { tier: { type: 'string' }, prefer: { type: 'string' }, 'max-tokens': { type: 'string' } }, 1);
    const prompt = parsed.positionals[0];
    if (prompt === undefined || prompt.length === 0) throw new CliUsageError('PROMPT is missing');
    const tier = (parsed.values.tier ?? 'private') as string;
    const prefer = (parsed.values.prefer ?? 'prefer-local') as string;
    try {
      assertOneOf(tier, '--tier', CONTEXT_TIERS);
      assertOneOf(prefer, '--prefer', LANE_PREFERENCES);
    } catch (error) {
      throw new CliUsageError((error as Error).message);
    }
    const maxTokensText = parsed.values['max-tokens'];
    const maxTokens = maxTokensText === undefined ? 128 : Number(maxTokensText);
    if ((typeof maxTokensText === 'string' && !/^[0-9]{1,4}$/.test(maxTokensText)) || maxTokens < 1 || maxTokens > 8192) throw new CliUsageError('--max-tokens takes a whole number from 1 to 8192');
    const context = await createContext(parsed, io);
    try {
      const discovery = await readDiscovery(context.paths.discovery);
      let local: (Endpoint & { readonly verified: VerifiedEndpoint }) | null = null;
      if (discovery !== null && context.config.hub !== null) {
        const token = await authorityFor(context, io).loopbackToken().catch(() => null);
        const check = token === null ? null : await verifyEndpoint(discovery, token);
        if (token !== null && check?.ok === true) local = { url: check.endpoint.url, token: token.reveal(), verified: check.endpoint };
        else if (check?.ok === false && check.code === 'ERR_ENDPOINT_UNVERIFIED') io.err('companion run: the recorded endpoint failed the attestation; not using it [ERR_ENDPOINT_UNVERIFIED]');
      }
      const cloudUrl = io.env.COMPANION_CLOUD_URL;
      const cloudKey = io.env.COMPANION_CLOUD_KEY;
      const cloudModel = io.env.COMPANION_CLOUD_MODEL ?? 'gpt-4o-mini';
      const client = createLlmClient({
        local: () => local,
        companionAvailable: () => (local === null ? false : endpointHealthy(local.verified, local.token)),
        ...(cloudUrl && cloudKey ? { cloud: { url: cloudUrl, token: cloudKey, model: cloudModel } } : {}),
        preference: prefer as LanePreference,
      });
      const result = await client.complete({
        tier: tier as ContextTier,
        stream: true,
        maxTokens,
        messages: [{ role: 'user', content: prompt }],
        // With --json the answer is a field of the one object, never raw text on stdout.
        ...(context.json ? {} : { onToken: (text: string) => io.write(text) }),
      });
      if (context.json) {
        const model = result.lane === 'cloud' ? cloudModel : (await readInstalled(context.paths.models).catch(() => null))?.id ?? null;
        context.emit({ answer: result.text, lane: result.lane, model, finishReason: result.finishReason, usage: result.usage });
      } else {
        io.write('\n');
        io.err(`(lane: ${result.lane}${result.usage ? `, ${result.usage.completionTokens} tokens` : ''})`);
      }
      return 0;
    } finally {
      await context.close();
    }
  },
};
