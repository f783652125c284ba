// Per-command options (issue 19 item 8): each command takes the options it declares, its --help lists
// exactly those, an option of another command is a usage error naming that command, and no command
// writes to process.stdout or process.stderr (everything goes through the Io port).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOptions, optionLines, parseCommandArgs, UnknownOptionError } from '../../src/cli/args.js';
import { logoutCommand } from '../../src/cli/cmd-auth.js';
import { hubCommand, parseHubArgs } from '../../src/cli/cmd-hub.js';
import { COMMANDS } from '../../src/cli/commands.js';
import type { Io } from '../../src/cli/io.js';
import { helpText, main, unknownOptionMessage } from '../../src/cli/main.js';
import { repoRoot } from '../helpers/paths.js';

function captureIo(env: NodeJS.ProcessEnv = {}): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (l) => stdout.push(l),
    err: (l) => stderr.push(l),
    write: (t) => stdout.push(t),
    isTty: false,
    env,
  };
}

/** The option names of the `Options:` section of a help text. */
function helpOptions(help: string): string[] {
  const section = help.slice(help.indexOf('\nOptions:\n') + '\nOptions:\n'.length).split('\n\n')[0]!;
  return [...section.matchAll(/^ {2}--([a-z][a-z0-9-]*)/gm)].map((m) => m[1]!);
}

test("every command's --help lists exactly the options it declares, in their order", () => {
  for (const command of COMMANDS) {
    assert.deepEqual(helpOptions(helpText(command)), [...Object.keys(command.options), 'help'], command.name);
  }
});

test('--threads belongs to up (and demo), not to the other commands; --manifest-key to the hub commands and logout', () => {
  const takes = (option: string): string[] =>
    COMMANDS.filter((c) => Object.hasOwn(c.options, option)).map((c) => c.name);
  assert.deepEqual(takes('threads').sort(), ['demo', 'up']);
  assert.deepEqual(takes('allow-unsandboxed'), ['up']);
  for (const name of ['login', 'logout', 'pull', 'list', 'status', 'up'])
    assert.ok(takes('manifest-key').includes(name));
  for (const name of ['ps', 'stop', 'logs', 'rm', 'use', 'doctor', 'completion'])
    assert.ok(!takes('manifest-key').includes(name), name);
});

test('an option a command does not take exits 2 naming the commands that take it', async () => {
  const io = captureIo();
  assert.equal(await main(['status', '--threads', '4'], io), 2);
  assert.deepEqual(io.stdout, []);
  assert.deepEqual(io.stderr, [
    'companion status: --threads is an option of companion demo and companion up, not of companion status (see companion status --help)',
  ]);
  const json = captureIo();
  assert.equal(await main(['ps', '--hub=https://secret.example/', '--json'], json), 2);
  // Most commands take --hub: the line says only that ps does not.
  assert.equal(json.stderr[0]!, 'companion ps: --hub is not an option of companion ps (see companion ps --help)');
  assert.ok(!json.stderr[0]!.includes('secret'), 'the value of an option is never echoed');
  const error = JSON.parse(json.stdout[0]!) as { error: { code: string; message: string } };
  assert.equal(error.error.code, 'ERR_USAGE');
});

test('an option no command takes stays "unknown option"', async () => {
  const io = captureIo();
  assert.equal(await main(['status', '--bogus'], io), 2);
  assert.deepEqual(io.stderr, ['companion status: unknown option --bogus (see companion status --help)']);
  assert.equal(unknownOptionMessage(new UnknownOptionError('-x'), 'status'), 'unknown option -x');
});

test('logout accepts --manifest-key (login flags copied to logout work)', async (t) => {
  assert.doesNotThrow(() => parseCommandArgs(['--manifest-key', 'ed25519:AAAA'], logoutCommand.options));
  const home = mkdtempSync(join(tmpdir(), 'companion-options-'));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const io = captureIo({ COMPANION_HOME: home });
  // Without a hub it stops at "no hub configured": the option itself was taken.
  assert.equal(await main(['logout', '--manifest-key', 'ed25519:AAAA'], io), 2);
  assert.match(io.stderr[0]!, /^companion logout: no hub configured/);
});

test('checkOptions() refuses an undeclared option with UnknownOptionError, a declared one passes', () => {
  const options = { json: { type: 'boolean', help: 'x' }, lines: { type: 'string', value: 'N', help: 'y' } } as const;
  assert.doesNotThrow(() => checkOptions(['--json', '--lines', '3'], options));
  assert.throws(() => checkOptions(['--threads', '3'], options), UnknownOptionError);
  assert.throws(
    () => checkOptions(['--lines'], options),
    (error: Error) => !(error instanceof UnknownOptionError) && /needs a value/.test(error.message),
  );
});

test('optionLines() aligns descriptions at one column and continues long ones below', () => {
  assert.deepEqual(
    optionLines({
      hub: { type: 'string', value: 'URL', help: 'hub to use' },
      'synthetic-model': { type: 'string', value: 'SIZE', help: ['first', 'second'] },
    }),
    [
      '  --hub URL              hub to use',
      '  --synthetic-model SIZE',
      '                         first',
      '                         second',
    ],
  );
});

test('no command writes to process.stdout or process.stderr: all output goes through the Io port', () => {
  const dir = join(repoRoot, 'src', 'cli');
  const files = readdirSync(dir).filter((name) => /^cmd-.*\.ts$/.test(name));
  assert.ok(files.length >= 15);
  for (const name of files) {
    const text = readFileSync(join(dir, name), 'utf8');
    assert.ok(!/process\.(stdout|stderr)/.test(text), `${name} writes to a process stream`);
  }
});

test("hub's own parser understands every option hub declares (its help and completion cannot drift from it)", () => {
  const values: Record<string, string[]> = {
    port: ['0'],
    'model-host-port': ['0'],
    'data-dir': ['/tmp/hub-state'],
    'synthetic-model': ['tiny'],
    model: ['/tmp/some-model.gguf'],
    'model-id': [],
  };
  for (const [name, def] of Object.entries(hubCommand.options)) {
    const args =
      name === 'model-id'
        ? ['--model', '/tmp/some-model.gguf', '--model-id', 'some-model']
        : [`--${name}`, ...(def.type === 'string' ? values[name]! : [])];
    assert.doesNotThrow(() => parseHubArgs(args), name);
  }
  assert.throws(() => parseHubArgs(['--threads', '1']), UnknownOptionError);
});
