/** `companion stop`: stop the `companion up` of this data dir (issue 18 item 8). */
import { stopUp } from '../shell/up-control.js';
import { LOCAL_OPTIONS } from './args.js';
import { defineCommand } from './command.js';
import { withContext, type CommandContext } from './context.js';
import { CliUsageError, type Io } from './io.js';

/** `--timeout SECONDS`: a whole number from 1 to 600, or undefined for the default. @throws CliUsageError */
function graceSeconds(value: string | boolean | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  if (!/^[0-9]{1,3}$/.test(value) || Number(value) < 1 || Number(value) > 600)
    throw new CliUsageError('--timeout takes a whole number of seconds from 1 to 600');
  return Number(value);
}

/** Stops the `up` of this data dir (when one runs) and says what became of it. */
async function stop(context: CommandContext, io: Io, seconds: number | undefined): Promise<number> {
  const outcome = await stopUp(context.paths, {
    ...(seconds !== undefined ? { graceMs: seconds * 1000 } : {}),
    onForce: (pid, graceMs) =>
      io.err(`companion (pid ${pid}) did not exit within ${Math.round(graceMs / 1000)} s of SIGTERM; sending SIGKILL`),
  });
  if (outcome.outcome === 'not-running') {
    if (context.json) context.emit({ stopped: false });
    else io.out(`companion is not running (data dir ${context.config.dataDir})`);
    return 0;
  }
  if (context.json) context.emit({ stopped: true, pid: outcome.pid, forced: outcome.forced });
  else
    io.out(
      outcome.forced
        ? `Stopped companion (pid ${outcome.pid}) with SIGKILL.`
        : `Stopped companion (pid ${outcome.pid}).`,
    );
  return 0;
}

export const stopCommand = defineCommand({
  name: 'stop',
  summary: 'stop the companion up of this data dir (also one started with up --detach)',
  about: [
    'Usage: companion stop [--timeout SECONDS] [--json] [--data-dir DIR]',
    '',
    "Stops the `companion up` that holds this data dir's lock (run/up.lock): SIGTERM, then a wait of up",
    'to 20 s (--timeout) while it stops its runtime and releases the lock; SIGKILL after that, with a line',
    'saying so (the runtime it leaves is then stopped too).',
    'Only the process the lock names is signalled, checked by pid, start time and executable: a pid the',
    'system has given to another process since is never signalled.',
    'Nothing running is not an error: one line `companion is not running (…)` and exit 0.',
    'With --json: {"stopped":true,"pid":N,"forced":BOOL} or {"stopped":false}.',
  ],
  options: {
    timeout: {
      type: 'string',
      value: 'SECONDS',
      help: 'how long it gets after SIGTERM before SIGKILL, 1 to 600 (default 20)',
    },
    ...LOCAL_OPTIONS,
  },
  async run(parsed, io) {
    const seconds = graceSeconds(parsed.values.timeout);
    return withContext(parsed, io, (context) => stop(context, io, seconds));
  },
});
