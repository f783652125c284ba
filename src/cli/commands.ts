/** The command table of `companion` (CONTRACT §6). */
import type { Command } from './command.js';
import { doctorCommand } from './cmd-doctor.js';
import { loginCommand, logoutCommand } from './cmd-auth.js';
import { pullCommand } from './cmd-pull.js';
import { endpointCommand } from './cmd-endpoint.js';
import { statusCommand } from './cmd-status.js';
import { upCommand } from './cmd-up.js';
import { runCommand } from './cmd-run.js';
import { demoCommand } from './cmd-demo.js';
import { hubCommand } from './cmd-hub.js';
import { configCommand } from './cmd-config.js';
import { listCommand, rmCommand, useCommand } from './cmd-models.js';
import { psCommand } from './cmd-ps.js';
import { stopCommand } from './cmd-stop.js';
import { logsCommand } from './cmd-logs.js';
import { completionCommand } from './cmd-completion.js';

/** Every command, in the order `companion --help` lists them. */
export const COMMANDS: Command[] = [
  demoCommand,
  hubCommand,
  loginCommand,
  logoutCommand,
  statusCommand,
  pullCommand,
  upCommand,
  runCommand,
  endpointCommand,
  doctorCommand,
  configCommand,
  listCommand,
  rmCommand,
  useCommand,
  psCommand,
  stopCommand,
  logsCommand,
  completionCommand,
];
