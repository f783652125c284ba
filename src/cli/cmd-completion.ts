/**
 * `companion completion bash|zsh|fish`: a shell completion script (issue 18 item 8). Commands and each
 * command's options are read from the command table (names, summaries and the options each command
 * declares, which its parser and its `--help` read too), so the script cannot drift from what the CLI
 * accepts.
 */
import type { OptionTable } from './args.js';
import { defineCommand, type Command } from './command.js';
import { CliUsageError } from './io.js';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

export interface OptionInfo {
  /** `--name`. */
  readonly name: string;
  /** The value's placeholder (`URL`, `N`, `FILE`, `memory`), or null for a flag. */
  readonly value: string | null;
  readonly description: string;
}

export interface CommandInfo {
  readonly name: string;
  readonly summary: string;
  readonly options: readonly OptionInfo[];
  /** Words a positional argument may be (`completion`: the shells; `help`: the commands). */
  readonly positionals: readonly string[];
}

/** The options a command declares, as completion shows them. */
export function optionInfos(options: OptionTable): OptionInfo[] {
  return Object.entries(options).map(([name, def]) => ({
    name: `--${name}`,
    value: def.value ?? null,
    description: typeof def.help === 'string' ? def.help : (def.help[0] ?? ''),
  }));
}

/** `options` with `--help` (every command takes it) once. */
function withHelp(options: OptionInfo[]): OptionInfo[] {
  return options.some((o) => o.name === '--help')
    ? options
    : [...options, { name: '--help', value: null, description: "print this command's help" }];
}

/** What the completion scripts are made of, from the command table (plus the built-in `help`). */
export function completionModel(commands: readonly Command[]): CommandInfo[] {
  const names = commands.map((c) => c.name);
  return [
    ...commands.map((c) => ({
      name: c.name,
      summary: c.summary,
      options: withHelp(optionInfos(c.options)),
      positionals: c.name === 'completion' ? [...SHELLS] : [],
    })),
    { name: 'help', summary: "print a command's help", options: [], positionals: names },
  ];
}

/** Text safe inside single quotes in all three shells, and inside zsh's `[...]` and `:` fields. */
function plain(text: string): string {
  return text
    .replace(/[^A-Za-z0-9 ,.;()/+_=@#%~-]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 80);
}

const isPath = (value: string | null): 'file' | 'dir' | null =>
  value === null ? null : /DIR/.test(value) ? 'dir' : /FILE/.test(value) ? 'file' : null;

function bashScript(model: readonly CommandInfo[]): string {
  const cases = model.map((c) => {
    const valued = c.options.filter((o) => o.value !== null);
    const byKind = (kind: 'file' | 'dir' | null): string =>
      valued
        .filter((o) => isPath(o.value) === kind)
        .map((o) => o.name)
        .join('|');
    const prevCases = [
      byKind('dir') && `        ${byKind('dir')}) COMPREPLY=( $(compgen -d -- "$cur") ); return 0 ;;`,
      byKind('file') && `        ${byKind('file')}) COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;`,
      byKind(null) && `        ${byKind(null)}) COMPREPLY=(); return 0 ;;`,
    ].filter((line) => line !== '');
    return [
      `    ${c.name})`,
      ...(prevCases.length > 0 ? ['      case "$prev" in', ...prevCases, '      esac'] : []),
      `      words="${[...c.options.map((o) => o.name), ...c.positionals].join(' ')}" ;;`,
    ].join('\n');
  });
  return [
    '# bash completion for companion: source <(companion completion bash), or save it under',
    '# ~/.local/share/bash-completion/completions/companion',
    '_companion() {',
    '  local cur prev words',
    '  cur="${COMP_WORDS[COMP_CWORD]}"',
    '  prev="${COMP_WORDS[COMP_CWORD-1]}"',
    '  if [ "$COMP_CWORD" -eq 1 ]; then',
    `    COMPREPLY=( $(compgen -W "${model.map((c) => c.name).join(' ')}" -- "$cur") )`,
    '    return 0',
    '  fi',
    '  case "${COMP_WORDS[1]}" in',
    ...cases,
    '    *) words="" ;;',
    '  esac',
    '  COMPREPLY=( $(compgen -W "$words" -- "$cur") )',
    '}',
    'complete -F _companion companion',
    '',
  ].join('\n');
}

function zshScript(model: readonly CommandInfo[]): string {
  const cases = model.map((c) => {
    const specs = c.options.map((o) => {
      const kind = isPath(o.value);
      const action =
        o.value === null ? '' : `:${plain(o.value)}:${kind === 'dir' ? '_files -/' : kind === 'file' ? '_files' : ''}`;
      return `'${o.name}[${plain(o.description)}]${action}'`;
    });
    if (c.positionals.length > 0)
      specs.push(`'1:${c.name === 'help' ? 'command' : 'shell'}:(${c.positionals.join(' ')})'`);
    return `    ${c.name}) _arguments ${specs.join(' ')} ;;`;
  });
  return [
    '#compdef companion',
    '# zsh completion for companion: save it as _companion in a folder of $fpath, or',
    '# source <(companion completion zsh) after compinit',
    '_companion() {',
    '  local -a commands',
    '  commands=(',
    ...model.map((c) => `    '${c.name}:${plain(c.summary)}'`),
    '  )',
    '  if (( CURRENT == 2 )); then',
    '    _describe command commands',
    '    return',
    '  fi',
    '  local cmd=$words[2]',
    '  shift words',
    '  (( CURRENT-- ))',
    '  case $cmd in',
    ...cases,
    '  esac',
    '}',
    'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then',
    '  _companion "$@"',
    'else',
    '  compdef _companion companion',
    'fi',
    '',
  ].join('\n');
}

function fishScript(model: readonly CommandInfo[]): string {
  const names = model.map((c) => c.name).join(' ');
  const lines = [
    '# fish completion for companion: companion completion fish > ~/.config/fish/completions/companion.fish',
    'complete -c companion -f',
    ...model.map(
      (c) =>
        `complete -c companion -n 'not __fish_seen_subcommand_from ${names}' -a ${c.name} -d '${plain(c.summary)}'`,
    ),
  ];
  for (const c of model) {
    const when = `-n '__fish_seen_subcommand_from ${c.name}'`;
    for (const o of c.options) {
      const kind = isPath(o.value);
      const value = o.value === null ? '' : kind === null ? ' -r' : ' -r -F';
      lines.push(`complete -c companion ${when} -l ${o.name.slice(2)}${value} -d '${plain(o.description)}'`);
    }
    if (c.positionals.length > 0) lines.push(`complete -c companion ${when} -a '${c.positionals.join(' ')}'`);
  }
  return `${lines.join('\n')}\n`;
}

/** The completion script for `shell`. */
export function completionScript(shell: Shell, commands: readonly Command[]): string {
  const model = completionModel(commands);
  if (shell === 'bash') return bashScript(model);
  if (shell === 'zsh') return zshScript(model);
  return fishScript(model);
}

export const completionCommand = defineCommand({
  name: 'completion',
  summary: 'print a shell completion script (bash, zsh or fish)',
  about: [
    'Usage: companion completion bash|zsh|fish',
    '',
    "Prints a completion script for the shell: the commands, each command's options, and files or",
    'folders for options that take one. It is made from the command table, so it always matches this',
    'version of companion.',
    '  bash: source <(companion completion bash)  (or save it in ~/.local/share/bash-completion/completions/companion)',
    '  zsh:  save it as _companion in a folder of $fpath (or source it after compinit)',
    '  fish: save it as ~/.config/fish/completions/companion.fish',
  ],
  // Only --help: it prints a shell script (no --json), and nothing in it can fail with a stack to show.
  options: {},
  positionals: 1,
  async run(parsed, io) {
    const shell = parsed.positionals[0];
    if (shell === undefined) throw new CliUsageError('needs a shell: bash, zsh or fish');
    if (!(SHELLS as readonly string[]).includes(shell)) throw new CliUsageError('the shell is one of bash, zsh, fish');
    // Loaded here: the table imports this file.
    const { COMMANDS } = await import('./commands.js');
    io.write(completionScript(shell as Shell, COMMANDS));
    return 0;
  },
});
