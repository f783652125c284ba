/** `companion stop`: stop the `companion up` of this data dir (issue 18 item 8). */
import { stopUp } from '../shell/up-control.js';
import { COMMON_HELP, parseCommandArgs } from './args.js';
import type { Command } from './commands.js';
import { createContext } from './context.js';
import { CliUsageError } from './io.js';

export const stopCommand: Command = {
  name: 'stop',
  summary: 'stop the companion up of this data dir (also one started with up --detach)',
  help: [
    'Usage: companion stop [--timeout SECONDS] [--json] [--data-dir DIR]',
    '',
    "Stops the `companion up` that holds this data dir's lock (run/up.lock): SIGTERM, then a wait of up",
    'to 20 s (--timeout) while it stops its runtime and releases the lock; SIGKILL after that, with a line',
    'saying so (the runtime it leaves is then stopped too).',
    'Only the process the lock names is signalled, checked by pid, start time and executable: a pid the',
    'system has given to another process since is never signalled.',
    'Nothing running is not an error: one line `companion is not running (…)` and exit 0.',
    'With --json: {"stopped":true,"pid":N,"forced":BOOL} or {"stopped":false}.',
    '',
    'Options:',
    '  --timeout SECONDS      how long it gets after SIGTERM before SIGKILL, 1 to 600 (default 20)',
    COMMON_HELP,
  ].join('\n'),
  async run(args, io) {
    const parsed = parseCommandArgs(args, { timeout: { type: 'string' } });
    const timeoutText = parsed.values.timeout;
    if (
      typeof timeoutText === 'string' &&
      (!/^[0-9]{1,3}$/.test(timeoutText) || Number(timeoutText) < 1 || Number(timeoutText) > 600)
    ) {
      throw new CliUsageError('--timeout takes a whole number of seconds from 1 to 600');
    }
    const context = await createContext(parsed, io);
    try {
      const outcome = await stopUp(context.paths, {
        ...(typeof timeoutText === 'string' ? { graceMs: Number(timeoutText) * 1000 } : {}),
        onForce: (pid, graceMs) =>
          io.err(
            `companion (pid ${pid}) did not exit within ${Math.round(graceMs / 1000)} s of SIGTERM; sending SIGKILL`,
          ),
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
    } finally {
      await context.close();
    }
  },
};
