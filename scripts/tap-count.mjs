// Reads a node:test TAP report line by line (scripts/test.mjs and test/architecture/tap-count.test.ts).
// Every test point counts, at any indentation: tests, subtests and suites alike, so a skipped `describe`
// (one `ok N - name # SKIP reason` line whose tests never ran) is a skip like any other. Nothing is taken
// from the closing `# skipped` / `# todo` totals, which leave skipped suites out.

/**
 * The optional-skip prefix: reserved for external components that no package provides (none today: the
 * external llama-server it was made for was removed in issue 16). A skip is optional only when its own
 * reason starts with it.
 */
export const OPTIONAL_PREFIX = 'optional:';

// `ok 3 - name # SKIP reason` / `not ok 4 - name # TODO`: node escapes `\` as `\\` and `#` as `\#` in
// names and reasons, so the directive is the first unescaped ` # `.
const POINT = /^( *)(not ok|ok) (\d+)(?: - ((?:\\.|[^\\#])*?))?(?: +# +(SKIP|TODO)\b *((?:\\.|[^\\])*?))? *$/i;
const YAML_START = /^( *)---$/;

const unescape = (text) => text.replace(/\\(.)/g, '$1');

/**
 * @typedef {{ name: string, depth: number, ok: boolean, directive: 'skip' | 'todo' | null, reason: string }} TapPoint
 * @typedef {{
 *   points: TapPoint[], passed: TapPoint[], failed: TapPoint[],
 *   skipped: TapPoint[], optionalSkipped: TapPoint[], realSkipped: TapPoint[], todo: TapPoint[],
 * }} TapCount
 */

/**
 * Every test point of a TAP report, with its directive and reason (YAML diagnostic blocks are skipped,
 * so an error message that quotes TAP text is not read as a test point).
 * @param {string} report
 * @returns {TapCount}
 */
export function countTap(report) {
  /** @type {TapPoint[]} */
  const points = [];
  let yamlIndent = null;
  for (const line of report.split(/\r?\n/)) {
    if (yamlIndent !== null) {
      if (line === `${yamlIndent}...`) yamlIndent = null;
      continue;
    }
    const yaml = YAML_START.exec(line);
    if (yaml !== null) {
      yamlIndent = yaml[1];
      continue;
    }
    const match = POINT.exec(line);
    if (match === null) continue;
    const directive = match[5] === undefined ? null : /** @type {'skip' | 'todo'} */ (match[5].toLowerCase());
    points.push({
      name: unescape(match[4] ?? ''),
      depth: match[1].length / 4,
      ok: match[2] === 'ok',
      directive,
      reason: directive === null ? '' : unescape(match[6] ?? '').trim(),
    });
  }
  const skipped = points.filter((p) => p.directive === 'skip');
  const optionalSkipped = skipped.filter((p) => p.reason.startsWith(OPTIONAL_PREFIX));
  return {
    points,
    passed: points.filter((p) => p.ok && p.directive === null),
    // A failing TODO is expected to fail; it is counted as a todo, not a failure.
    failed: points.filter((p) => !p.ok && p.directive !== 'todo'),
    skipped,
    optionalSkipped,
    realSkipped: skipped.filter((p) => !p.reason.startsWith(OPTIONAL_PREFIX)),
    todo: points.filter((p) => p.directive === 'todo'),
  };
}

/**
 * What COMPANION_REQUIRE_ALL=1 refuses in one report: every skip whose own reason is not optional, and
 * every todo. Empty when the report may pass.
 * @param {TapCount} count
 * @returns {string[]} one line per refused point
 */
export function requireAllProblems(count) {
  return [
    ...count.realSkipped.map((p) => `skipped: ${p.name}${p.reason === '' ? '' : ` (${p.reason})`}`),
    ...count.todo.map((p) => `todo: ${p.name}${p.reason === '' ? '' : ` (${p.reason})`}`),
  ];
}
