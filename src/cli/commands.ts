/** The command table of `companion` (CONTRACT §6). */
import type { Io } from './io.js';
import { doctorCommand } from './cmd-doctor.js';
import { loginCommand, logoutCommand } from './cmd-auth.js';
import { pullCommand } from './cmd-pull.js';
import { endpointCommand } from './cmd-endpoint.js';
import { hubCommand } from './cmd-hub.js';

export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly help: string;
  run(args: readonly string[], io: Io): Promise<number>;
}

const COMMON = [
  '  --hub URL            hub to use (env COMPANION_HUB)',
  '  --ca FILE            extra trusted CA, PEM (env COMPANION_CA)',
  '  --data-dir DIR       all state of this installation (env COMPANION_HOME)',
  '  --manifest-key KEY   pinned manifest public key(s) (env COMPANION_MANIFEST_KEY)',
  '  --keychain memory    explicit in-memory keychain (demo and tests only; announced)',
  '  --json               one JSON object per line on stdout',
  '  --debug              print stack traces of errors',
].join('\n');

function pending(name: string, summary: string, usage: string, issue: string): Command {
  return {
    name,
    summary,
    help: `Usage: companion ${name} ${usage}\n\n${summary}\n\nOptions:\n${COMMON}`,
    async run(_args, io) {
      io.err(`companion ${name}: not available in this build yet (${issue})`);
      return 1;
    },
  };
}

export const COMMANDS: Command[] = [
  pending('demo', 'run the whole flow against an embedded reference hub', '[--keep-running] [--json]', 'shell and demo'),
  hubCommand,
  loginCommand,
  logoutCommand,
  pending('status', 'show sign-in, model, runtime and availability (never a token)', '[--json]', 'shell'),
  pullCommand,
  pending('up', 'start the runtime and the guarded endpoint; runs until Ctrl-C', '[--json]', 'shell'),
  pending('run', 'run one prompt through the lane selector', 'PROMPT [--tier public|private|local-only]', 'shell'),
  endpointCommand,
  doctorCommand,
];

/** Replaces a command's implementation (used as each capability lands). */
export function registerCommand(command: Command): void {
  const index = COMMANDS.findIndex((c) => c.name === command.name);
  if (index === -1) COMMANDS.push(command);
  else COMMANDS[index] = command;
}
