/**
 * The `Examples:` section of each command's `--help` (issue 18 item 8), kept in one place so that the
 * command files stay as they are: `main` appends it when it prints a command's help (`helpText`). A
 * command whose own help already has an `Examples:` section keeps its own. A unit test checks that every
 * command in the table ends up with examples (test/unit/cli-examples.test.ts).
 */
export const EXAMPLES: Readonly<Record<string, readonly string[]>> = {
  demo: ['companion demo', 'companion demo --keep-running --json', 'companion demo --data-dir ~/companion-demo'],
  hub: ['companion hub --json', 'companion hub --port 8443 --data-dir ./hub-state'],
  login: ['companion login --hub https://hub.example', 'companion login --no-browser --json'],
  logout: ['companion logout'],
  status: ['companion status', 'companion status --json | jq .endpoint'],
  pull: ['companion pull', 'companion pull tiny --json'],
  up: ['companion up', 'companion up --detach', 'companion up --json --threads 4'],
  run: [
    'companion run "Summarise this in one line: …"',
    'git diff | companion run --system "Review this diff" -',
    'companion run',
  ],
  endpoint: ['companion endpoint', 'companion endpoint --json | jq -r .url'],
  doctor: ['companion doctor', 'companion doctor --json'],
  stop: ['companion stop', 'companion stop --data-dir ~/other-companion'],
  logs: ['companion logs', 'companion logs --lines 200', 'companion logs --follow'],
  completion: [
    'source <(companion completion bash)',
    'companion completion zsh > "${fpath[1]}/_companion"',
    'companion completion fish > ~/.config/fish/completions/companion.fish',
  ],
  // Commands other engineers add in the same wave (the test checks only names present in the table).
  config: ['companion config set hub https://hub.example', 'companion config get hub', 'companion config list'],
  list: ['companion list', 'companion list --json'],
  rm: ['companion rm tiny'],
  use: ['companion use tiny'],
  ps: ['companion ps', 'companion ps --json'],
};

/** `help` followed by its examples section, unless it has one already or none is known. */
export function withExamples(name: string, help: string): string {
  if (/^Examples:/m.test(help)) return help;
  const lines = EXAMPLES[name];
  if (lines === undefined || lines.length === 0) return help;
  return `${help.replace(/\n+$/, '')}\n\nExamples:\n${lines.map((line) => `  ${line}`).join('\n')}`;
}
