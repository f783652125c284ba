/** Output ports of the CLI, swapped in tests. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
  readonly isTty: boolean;
  readonly env: NodeJS.ProcessEnv;
}

export function processIo(): Io {
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    isTty: process.stdout.isTTY === true,
    env: process.env,
  };
}

/** A command-line usage problem: printed with a pointer to --help, exit status 2. */
export class CliUsageError extends Error {
  override readonly name = 'CliUsageError';
}
