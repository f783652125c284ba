/** `companion logs [--follow] [--lines N]`: print the data dir's log (issue 18 item 8). */
import { constants } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { checkPrivateDir } from '../common/private-file.js';
import { cleanLogText, logPaths, tailLog } from '../shell/log-file.js';
import { LOCAL_OPTIONS } from './args.js';
import { defineCommand } from './command.js';
import { withContext, type CommandContext } from './context.js';
import { untilSignal } from './cmd-up.js';
import { CliUsageError, type Io } from './io.js';

const READ_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);
const POLL_MS = 200;
const DEFAULT_LINES = 50;

/** One log line as printed: the text itself, or with --json `{"time","source","text"}`. */
function printLine(context: CommandContext, io: Io, line: string): void {
  const clean = cleanLogText(line, Number.MAX_SAFE_INTEGER);
  if (!context.json) {
    io.out(clean);
    return;
  }
  const match = /^(\S+) ([^:\s]+): (.*)$/.exec(clean);
  context.emit(match === null ? { text: clean } : { time: match[1], source: match[2], text: match[3] });
}

/**
 * Prints lines appended to the log from `offset` on until `stopped` resolves; follows a rotation (the
 * rest of the old file, then the new one from its start) and a truncation.
 */
async function follow(
  path: string,
  offset: number,
  stopped: Promise<unknown>,
  onLine: (line: string) => void,
): Promise<void> {
  let done = false;
  void stopped.then(() => {
    done = true;
  });
  let handle: FileHandle | null = null;
  let ino: number | null = null;
  let position = offset;
  let partial = '';
  const openCurrent = async (): Promise<void> => {
    try {
      handle = await open(path, READ_FLAGS);
      const stats = await handle.stat();
      if (!stats.isFile()) {
        await handle.close();
        handle = null;
        return;
      }
      ino = stats.ino;
    } catch {
      handle = null;
    }
  };
  const drain = async (): Promise<void> => {
    if (handle === null) return;
    const buffer = Buffer.alloc(64 * 1024);
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      partial += buffer.subarray(0, bytesRead).toString('utf8');
      let newline: number;
      while ((newline = partial.indexOf('\n')) !== -1) {
        onLine(partial.slice(0, newline));
        partial = partial.slice(newline + 1);
      }
    }
  };
  await openCurrent();
  try {
    while (!done) {
      await drain();
      const now = await stat(path).catch(() => null);
      if (now !== null && (handle === null || now.ino !== ino)) {
        // Rotated (or created): what was left in the old file was just read; the new one starts at 0.
        await (handle as FileHandle | null)?.close();
        await openCurrent();
        position = 0;
        partial = '';
        continue;
      }
      if (now !== null && now.size < position) position = 0;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        void stopped.then(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  } finally {
    await (handle as FileHandle | null)?.close();
  }
}

/** `--lines N`: a whole number from 0 to 100000 (default 50). @throws CliUsageError */
function lineCount(value: string | boolean | undefined): number {
  if (typeof value !== 'string') return DEFAULT_LINES;
  if (!/^[0-9]{1,6}$/.test(value) || Number(value) > 100_000)
    throw new CliUsageError('--lines takes a whole number from 0 to 100000');
  return Number(value);
}

/** Prints the last `count` lines, then (with `stopped`: --follow) what is appended until Ctrl-C. */
async function printLog(
  context: CommandContext,
  io: Io,
  count: number,
  stopped: Promise<unknown> | null,
): Promise<number> {
  const paths = logPaths(context.config.dataDir);
  const tail = await tailLog(context.config.dataDir, count);
  if (tail === null && stopped === null) {
    io.err(`no log yet (${paths.file}); companion up writes it`);
    return 0;
  }
  for (const line of tail?.lines ?? []) printLine(context, io, line);
  if (stopped === null) return 0;
  await checkPrivateDir(paths.dir);
  await follow(paths.file, tail?.bytes ?? 0, stopped, (line) => printLine(context, io, line));
  return 0;
}

export const logsCommand = defineCommand({
  name: 'logs',
  summary: "print the log that up writes (its events and the runtime's stderr)",
  about: [
    'Usage: companion logs [--follow] [--lines N] [--json]',
    '',
    "Prints the last lines of the data dir's log, logs/companion.log (0600; up to 1 MiB, then it moves",
    'to companion.log.1 and a new one starts). `companion up` writes it, attached or detached: its events',
    "(listening, runtime states, availability, stops, failures with their code) and the runtime's stderr.",
    'It never holds a token, a model path or a digest.',
    'With --json: one {"time","source","text"} object per line.',
  ],
  options: {
    lines: {
      type: 'string',
      value: 'N',
      help: 'how many of the last lines to print, 0 to 100000 (default 50)',
    },
    follow: { type: 'boolean', help: 'keep printing lines as they are written, until Ctrl-C' },
    ...LOCAL_OPTIONS,
  },
  async run(parsed, io) {
    const count = lineCount(parsed.values.lines);
    return withContext(parsed, io, (context) => {
      // Listen for Ctrl-C before anything is printed, so --follow always ends with 0 on it.
      const stopped = parsed.values.follow === true ? untilSignal() : null;
      return printLog(context, io, count, stopped);
    });
  },
});
