/**
 * `companion run [PROMPT|-] [--tier T] [--system TEXT] [--model NAME]`: a prompt through the lane selector
 * and the LLM client, or an interactive chat when no prompt is given and stdin is a terminal. The local
 * lane exists only for an endpoint that passed the identity check and the attestation (P-k): the token
 * and the prompt never go to a port that another local user took over.
 */
import { createInterface } from 'node:readline';
import { createLlmClient, type ChatMessage, type CompleteResult, type Endpoint } from '../client/llm.js';
import { assertOneOf, CompanionError, isCompanionError } from '../core/errors.js';
import { CONTEXT_TIERS, LANE_PREFERENCES, type ContextTier, type LanePreference } from '../core/lane.js';
import { companionAvailableAt, readPublishedState, verifyEndpoint, type VerifiedEndpoint } from '../shell/discovery.js';
import { readDiscovery } from '../runtime/manager/discovery.js';
import { HUB_OPTIONS, type Parsed } from './args.js';
import { defineCommand } from './command.js';
import { CliUsageError, type Io } from './io.js';
import { authorityFor, withContext } from './context.js';
import { readInstalled } from '../runtime/manager/install.js';
import { quickModelCheck } from './cmd-status.js';
import { unavailability, type AvailabilityFacts } from './availability.js';
import type { CommandContext } from './context.js';

/** The largest prompt read from stdin. */
export const STDIN_LIMIT_BYTES = 1024 * 1024;
const CHAT_PROMPT = '>>> ';

/**
 * The error text when `--model` names another model than the one the local lane serves (the running
 * `up`'s, else the active installed one), or null when the request may go ahead. Pure.
 */
export function localModelProblem(requested: string | undefined, installed: string | null): string | null {
  if (requested === undefined || requested === installed) return null;
  return installed === null
    ? `--model ${requested}: the local companion has no installed model`
    : `--model ${requested} is not the model the local companion serves (${installed}); to serve it: companion up --model ${requested}`;
}

/** Reads all of stdin, at most `limit` bytes (a usage error beyond). */
async function readStdin(stream: NodeJS.ReadableStream | undefined, limit: number): Promise<string> {
  if (stream === undefined) return '';
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += buffer.length;
    if (size > limit) throw new CliUsageError(`the prompt on stdin is larger than ${limit / (1024 * 1024)} MiB`);
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The options of `run`, checked. */
interface RunOptions {
  readonly tier: ContextTier;
  readonly prefer: LanePreference;
  readonly maxTokens: number;
  readonly system: string | undefined;
  readonly modelOption: string | undefined;
}

/** Checks the options of `run`. @throws CliUsageError for a value out of range */
function runOptions(parsed: Parsed): RunOptions {
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
  if ((typeof maxTokensText === 'string' && !/^[0-9]{1,4}$/.test(maxTokensText)) || maxTokens < 1 || maxTokens > 8192)
    throw new CliUsageError('--max-tokens takes a whole number from 1 to 8192');
  const system = parsed.values.system as string | undefined;
  if (system !== undefined && system.length === 0) throw new CliUsageError('--system needs a non-empty TEXT');
  const modelOption = parsed.values.model as string | undefined;
  if (modelOption !== undefined && !/^[\x21-\x7e]{1,200}$/.test(modelOption))
    throw new CliUsageError('--model takes a NAME of printable characters without spaces');
  return { tier: tier as ContextTier, prefer: prefer as LanePreference, maxTokens, system, modelOption };
}

/**
 * The prompt: PROMPT, or all of stdin (`-`, or no PROMPT and stdin not a terminal); null for the chat.
 * @throws CliUsageError when it is empty
 */
async function readPrompt(positional: string | undefined, io: Io): Promise<string | null> {
  const stdinIsTty = io.input?.isTTY === true;
  if (positional === '-' || (positional === undefined && !stdinIsTty)) {
    const prompt = (await readStdin(io.input, STDIN_LIMIT_BYTES)).replace(/\r?\n$/, '');
    if (prompt.trim().length === 0) throw new CliUsageError('PROMPT is missing (stdin was empty)');
    return prompt;
  }
  if (positional === undefined) return null;
  if (positional.length === 0) throw new CliUsageError('PROMPT is missing');
  return positional;
}

/** The local lane: an endpoint that passed the identity check and the attestation, with its token. */
type LocalLane = Endpoint & { readonly verified: VerifiedEndpoint };

/** What the local lane found, for the one line that says why it is not there (see localCause). */
interface LocalFound {
  readonly local: LocalLane | null;
  readonly keychain: string;
  readonly endpoint: AvailabilityFacts['endpoint'];
}

/** Looks for the local lane: the recorded endpoint, the loopback token, the attestation. */
async function findLocal(
  context: CommandContext,
  io: Io,
  discovery: Awaited<ReturnType<typeof readDiscovery>>,
): Promise<LocalFound> {
  let local: LocalLane | null = null;
  let keychain = 'available';
  let endpoint: AvailabilityFacts['endpoint'] = 'no-token';
  if (discovery !== null && context.config.hub !== null) {
    const token = await authorityFor(context, io)
      .loopbackToken()
      .catch((error: unknown) => {
        keychain = (error as { code?: string }).code ?? 'ERR_KEYCHAIN_FAILURE';
        return null;
      });
    const check = token === null ? null : await verifyEndpoint(discovery, token);
    if (check !== null)
      endpoint = check.ok ? 'verified' : check.code === 'ERR_ENDPOINT_UNVERIFIED' ? 'unverified' : 'no-answer';
    if (token !== null && check?.ok === true)
      local = { url: check.endpoint.url, token: token.reveal(), verified: check.endpoint };
    else if (check?.ok === false && check.code === 'ERR_ENDPOINT_UNVERIFIED')
      io.err('companion run: the recorded endpoint failed the attestation; not using it [ERR_ENDPOINT_UNVERIFIED]');
  }
  return { local, keychain, endpoint };
}

/** One `run`: the lanes it may use, and the answers it prints. */
class RunSession {
  private readonly client: ReturnType<typeof createLlmClient>;
  private readonly cloudModel: string;
  private installedId: string | null | undefined;

  constructor(
    private readonly context: CommandContext,
    private readonly io: Io,
    private readonly options: RunOptions,
    private readonly discovery: Awaited<ReturnType<typeof readDiscovery>>,
    private readonly found: LocalFound,
  ) {
    const local = found.local;
    const cloudUrl = io.env.COMPANION_CLOUD_URL;
    const cloudKey = io.env.COMPANION_CLOUD_KEY;
    const cloudModel = options.modelOption ?? io.env.COMPANION_CLOUD_MODEL ?? 'gpt-4o-mini';
    this.cloudModel = cloudModel;
    this.client = createLlmClient({
      local: () => local,
      companionAvailable: () => (local === null ? false : companionAvailableAt(local.verified, local.token)),
      ...(cloudUrl && cloudKey ? { cloud: { url: cloudUrl, token: cloudKey, model: cloudModel } } : {}),
      preference: options.prefer,
    });
  }

  /**
   * The model the local lane answers with: the one the running `up` serves (it may have been started
   * with `up --model`), else the active installed one.
   */
  async installed(): Promise<string | null> {
    if (this.installedId !== undefined) return this.installedId;
    const { context, discovery } = this;
    const served =
      discovery === null ? null : await readPublishedState(context.paths.state, discovery.pid).catch(() => null);
    this.installedId = served?.model?.id ?? (await readInstalled(context.paths.models).catch(() => null))?.id ?? null;
    return this.installedId;
  }

  /** Why the local companion is not there, when the lane selector refused for that. */
  private cause(): Promise<Error | null> {
    const { found, discovery } = this;
    return localCause(this.context, this.io, {
      keychain: found.keychain,
      endpoint: found.endpoint,
      upRunning: discovery !== null,
      pid: discovery?.pid ?? null,
    });
  }

  /** One answer for the conversation `messages`; streams unless --json, then reports as --json says. */
  async answer(messages: readonly ChatMessage[], signal?: AbortSignal): Promise<CompleteResult> {
    const { context, io, options } = this;
    const { modelOption } = options;
    const result = await this.client
      .complete({
        tier: options.tier,
        stream: true,
        maxTokens: options.maxTokens,
        messages,
        ...(signal ? { signal } : {}),
        ...(modelOption !== undefined ? { model: modelOption } : {}),
        onLane: (lane) => {
          if (lane !== 'companion') return;
          const problem = localModelProblem(modelOption, this.installedId ?? null);
          if (problem !== null) throw new CliUsageError(problem);
        },
        // With --json the answer is a field of the one object, never raw text on stdout.
        ...(context.json ? {} : { onToken: (text: string) => io.write(text) }),
      })
      .catch(async (error: unknown) => {
        // The lane selector refused because the local companion is not there: say why, and what to do.
        if (!isCompanionError(error, 'ERR_LANE_LOCAL_ONLY_UNAVAILABLE', 'ERR_LANE_CLOUD_NOT_ALLOWED')) throw error;
        throw (await this.cause()) ?? error;
      });
    await this.report(result);
    return result;
  }

  private async report(result: CompleteResult): Promise<void> {
    const { context, io } = this;
    if (context.json) {
      const model = result.lane === 'cloud' ? this.cloudModel : await this.installed();
      context.emit({
        answer: result.text,
        lane: result.lane,
        model,
        finishReason: result.finishReason,
        usage: result.usage,
      });
    } else {
      io.write('\n');
      io.err(`(lane: ${result.lane}${result.usage ? `, ${result.usage.completionTokens} tokens` : ''})`);
    }
  }
}

/** `run` with the context open: one answer for `prompt`, or the chat when it is null. */
async function run(context: CommandContext, io: Io, options: RunOptions, prompt: string | null): Promise<number> {
  const discovery = await readDiscovery(context.paths.discovery);
  const found = await findLocal(context, io, discovery);
  const session = new RunSession(context, io, options, discovery, found);
  if (options.modelOption !== undefined && found.local !== null) await session.installed();
  const opening: ChatMessage[] = options.system === undefined ? [] : [{ role: 'system', content: options.system }];
  if (prompt !== null) {
    await session.answer([...opening, { role: 'user', content: prompt }]);
    return 0;
  }
  return chat(io, opening, (messages, signal) => session.answer(messages, signal));
}

export const runCommand = defineCommand({
  name: 'run',
  summary: 'run a prompt, or chat, through the lane selector',
  about: [
    'Usage: companion run [PROMPT | -] [--tier public|private|local-only] [--prefer prefer-local|prefer-cloud|local-only]',
    '                     [--system TEXT] [--model NAME] [--max-tokens N]',
    '',
    'Sends a prompt to the local companion or to the cloud, as the lane selector decides from the tier and',
    'whether the companion is available. local-only never goes to the cloud. The cloud lane is configured',
    'with COMPANION_CLOUD_URL (an OpenAI-compatible base URL), COMPANION_CLOUD_KEY and COMPANION_CLOUD_MODEL;',
    'without the URL and key only the local lane exists. The prompt and answer are never logged.',
    'When the call needs the local companion and it is not available, the one error line says why and what',
    'to do (keychain locked, no hub configured, not signed in, no model, companion up not running, …).',
    '',
    'The prompt is PROMPT; or all of stdin when stdin is not a terminal or PROMPT is - (at most 1 MiB; empty',
    'is a usage error). With no PROMPT and stdin a terminal, run is an interactive chat: type at the ">>> "',
    'prompt; every turn sends the whole conversation so far. /bye or Ctrl-D leaves (exit 0); Ctrl-C during',
    'an answer cancels that answer; Ctrl-C at an empty prompt leaves with exit 130 (as any interrupted',
    'command), Ctrl-C with text typed clears the line.',
    '',
    'The answer streams to stdout; a line "(lane: …)" follows on stderr. With --json nothing streams: one',
    'line per answer {"answer": TEXT, "lane": "companion"|"cloud", "model": ID|null, "finishReason":',
    'STRING|null, "usage": {"promptTokens","completionTokens"}|null}.',
  ],
  options: {
    tier: { type: 'string', value: 'T', help: "the data's context tier (default private)" },
    prefer: { type: 'string', value: 'P', help: 'lane preference (default prefer-local)' },
    system: { type: 'string', value: 'TEXT', help: 'a system message sent before the conversation' },
    model: {
      type: 'string',
      value: 'NAME',
      help: [
        'the model id sent to the endpoint (cloud default COMPANION_CLOUD_MODEL or',
        'gpt-4o-mini); on the local lane it must be the model up serves',
      ],
    },
    'max-tokens': { type: 'string', value: 'N', help: 'at most N tokens per answer, 1 to 8192 (default 128)' },
    ...HUB_OPTIONS,
  },
  positionals: 1,
  after: [
    'Examples:',
    '  companion run "Say hello"',
    '  echo "Summarise this" | companion run --tier local-only',
    '  companion run - --system "Answer in French" < notes.txt',
    '  companion run --tier public --model gpt-4o --json "Name three colours"',
    '  companion run                      (interactive chat)',
  ],
  async run(parsed, io) {
    const options = runOptions(parsed);
    const prompt = await readPrompt(parsed.positionals[0], io);
    return withContext(parsed, io, (context) => run(context, io, options, prompt));
  },
});

/**
 * Why the local companion cannot take the call, as the error to show (one line: the cause and the fix),
 * or null when nothing local is wrong (the refusal then stands: e.g. no cloud configured for a public
 * call while the companion is also down is still reported by its cause). No hub: a usage error.
 */
async function localCause(
  context: CommandContext,
  io: Io,
  seen: { keychain: string; endpoint: AvailabilityFacts['endpoint']; upRunning: boolean; pid: number | null },
): Promise<Error | null> {
  if (context.config.hub === null)
    return new CliUsageError(
      'no hub configured, so there is no local companion to use: pass --hub URL or set COMPANION_HUB (or configure a cloud lane)',
    );
  let keychain = seen.keychain;
  let signedIn = false;
  try {
    signedIn = (await authorityFor(context, io).state()).signedIn;
  } catch (error) {
    keychain = (error as { code?: string }).code ?? 'ERR_KEYCHAIN_FAILURE';
  }
  const installed = await readInstalled(context.paths.models).catch(() => null);
  // Metadata only, as status: never a hash of the model for an error line.
  const check = installed === null ? null : await quickModelCheck(context.paths.models, installed);
  const published =
    seen.pid === null ? null : await readPublishedState(context.paths.state, seen.pid).catch(() => null);
  const found = unavailability({
    hubConfigured: true,
    keychain,
    signedIn,
    model: check === null ? 'none' : check === 'changed' ? 'changed' : 'verified',
    upRunning: seen.upRunning,
    endpoint: seen.endpoint,
    runtimeState: published?.runtime?.state ?? null,
  });
  return found.code === 'ERR_USAGE' ? new CliUsageError(found.message) : new CompanionError(found.code, found.message);
}

/**
 * The interactive chat (node:readline on the terminal). Resolves with the exit status: 0 for /bye or
 * Ctrl-D, 130 for Ctrl-C at an empty prompt. A failed or cancelled turn is left out of the history.
 */
function chat(
  io: Io,
  opening: readonly ChatMessage[],
  answer: (messages: readonly ChatMessage[], signal?: AbortSignal) => Promise<CompleteResult>,
): Promise<number> {
  const rl = createInterface({
    input: io.input!,
    ...(io.output === undefined ? {} : { output: io.output }),
    terminal: true,
    prompt: CHAT_PROMPT,
    historySize: 200,
  });
  const history: ChatMessage[] = [...opening];
  let busy: AbortController | null = null;
  let done = false;
  return new Promise<number>((resolve) => {
    const finish = (status: number): void => {
      if (done) return;
      done = true;
      busy?.abort();
      rl.close();
      resolve(status);
    };
    rl.on('SIGINT', () => {
      if (busy !== null) {
        busy.abort();
        return;
      }
      if (rl.line.length > 0) {
        // As a shell does: drop the typed text, a fresh prompt.
        io.write('^C\n');
        rl.write(null, { ctrl: true, name: 'u' });
        rl.prompt();
        return;
      }
      io.write('\n');
      finish(130);
    });
    rl.on('close', () => {
      if (!done) io.write('\n');
      finish(0);
    });
    rl.on('line', (line) => {
      if (busy !== null || done) return; // typed while an answer streams: not a turn
      const text = line.trim();
      if (text === '/bye') {
        finish(0);
        return;
      }
      if (text.length === 0) {
        rl.prompt();
        return;
      }
      const controller = new AbortController();
      busy = controller;
      const turn: ChatMessage = { role: 'user', content: line };
      void answer([...history, turn], controller.signal)
        .then(
          (result) => {
            history.push(turn, { role: 'assistant', content: result.text });
          },
          (error: unknown) => {
            if (controller.signal.aborted) io.err('\n(answer cancelled)');
            else if (error instanceof CliUsageError || isCompanionError(error))
              io.err(`companion run: ${(error as Error).message} [${(error as { code: string }).code}]`);
            else io.err('companion run: the answer failed [ERR_INTERNAL]');
          },
        )
        .finally(() => {
          busy = null;
          if (!done) rl.prompt();
        });
    });
    rl.prompt();
  });
}
