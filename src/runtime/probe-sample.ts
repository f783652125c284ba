/**
 * What every platform's half of the resource probe (D5.6) reports for the runtime's process group, and
 * the one error for output that does not parse.
 */
import { CompanionError } from '../core/errors.js';

/** One sample of the runtime's process group. */
export interface GroupSample {
  readonly rssBytes: number;
  readonly cpuSeconds: number;
  readonly processes: number;
  /** The leader's start time, as the platform prints it: the identity the next sample must match. */
  readonly leaderStart: string;
}

/**
 * `ERR_PROBE_FAILED` for a tool's output that does not parse: `tool` names it in the message, `file` in
 * the detail. Never the output itself.
 */
export function unparsableOutput(tool: string, file: string): CompanionError {
  return new CompanionError('ERR_PROBE_FAILED', `the resource probe could not parse the ${tool} output`, {
    detail: { step: 'parse', file },
  });
}
