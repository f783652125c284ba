// Two checks of the source's shape, read with the TypeScript parser (issue 19 items 7 and 10):
// no function longer than a screen, and a doc comment on every export that others rely on, naming the
// error codes the function throws. Like deno std's doc checker, they read the source, not the build.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import ts from 'typescript';

/** The longest a function may be, in lines from its first to its last (signature and braces included). */
export const MAX_FUNCTION_LINES = 120;

/** A function over {@link MAX_FUNCTION_LINES}. */
export interface LongFunction {
  readonly file: string;
  readonly line: number;
  readonly name: string;
  readonly lines: number;
}

/** An export without the doc comment it needs, or whose comment leaves out a code it throws. */
export interface DocGap {
  readonly file: string;
  readonly line: number;
  readonly name: string;
  /** `missing` (no `/** … *\/` right before it) or the codes thrown that the comment does not name. */
  readonly problem: 'missing' | { readonly unnamedCodes: readonly string[] };
}

/** Every .ts source below `dir` (not .d.ts), sorted. */
export function listTsSources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...listTsSources(path));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

function parse(name: string, source: string): ts.SourceFile {
  return ts.createSourceFile(name, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
}

function lineOf(file: ts.SourceFile, pos: number): number {
  return file.getLineAndCharacterOfPosition(pos).line + 1;
}

function functionName(node: ts.FunctionLikeDeclaration): string {
  if (node.name !== undefined) return node.name.getText();
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) {
    return `${parent.name.getText()} (arrow)`;
  }
  if (ts.isCallExpression(parent)) return `callback of ${parent.expression.getText().slice(0, 40)}`;
  return '(anonymous)';
}

/** The functions of one source text over `max` lines (nested functions are measured on their own too). */
export function longFunctions(name: string, source: string, max = MAX_FUNCTION_LINES): LongFunction[] {
  const file = parse(name, source);
  const found: LongFunction[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
      const first = lineOf(file, node.getStart(file));
      const lines = lineOf(file, node.end) - first + 1;
      if (lines > max)
        found.push({ file: name, line: first, name: functionName(node as ts.FunctionLikeDeclaration), lines });
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

function isExported(node: ts.Node): boolean {
  return ts.canHaveModifiers(node) && (ts.getModifiers(node) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
}

/** The `/** … *\/` comment right before `node`, or null. */
function docComment(file: ts.SourceFile, node: ts.Node): string | null {
  const ranges = ts.getLeadingCommentRanges(file.text, node.getFullStart()) ?? [];
  const last = ranges.at(-1);
  if (last === undefined || last.kind !== ts.SyntaxKind.MultiLineCommentTrivia) return null;
  const text = file.text.slice(last.pos, last.end);
  return text.startsWith('/**') ? text : null;
}

/** The error codes a body throws or rejects with directly: `CompanionError('ERR_X'` and `CodedTypeError('ERR_X'`. */
export function thrownCodes(body: string): string[] {
  const codes = new Set<string>();
  for (const match of body.matchAll(/\bnew (?:CompanionError|CodedTypeError)\(\s*'(ERR_[A-Z0-9_]+)'/g)) {
    codes.add(match[1]!);
  }
  return [...codes].sort();
}

interface ExportedDecl {
  readonly node: ts.Node;
  readonly name: string;
  /** The function's text when the export is a function (declaration, or a const holding one). */
  readonly body: string | null;
  readonly kind: 'function' | 'class' | 'other';
}

function exportedDeclarations(file: ts.SourceFile): ExportedDecl[] {
  const out: ExportedDecl[] = [];
  for (const statement of file.statements) {
    if (!isExported(statement)) continue;
    if (ts.isFunctionDeclaration(statement)) {
      out.push({
        node: statement,
        name: statement.name?.getText() ?? 'default',
        body: statement.body?.getText(file) ?? null,
        kind: 'function',
      });
    } else if (ts.isClassDeclaration(statement)) {
      out.push({
        node: statement,
        name: statement.name?.getText() ?? 'default',
        body: statement.getText(file),
        kind: 'class',
      });
    } else if (ts.isVariableStatement(statement)) {
      for (const declaration of statement.declarationList.declarations) {
        const init = declaration.initializer;
        const isFunction = init !== undefined && (ts.isArrowFunction(init) || ts.isFunctionExpression(init));
        out.push({
          node: statement,
          name: declaration.name.getText(),
          body: isFunction ? init.getText(file) : null,
          kind: isFunction ? 'function' : 'other',
        });
      }
    } else if (
      ts.isInterfaceDeclaration(statement) ||
      ts.isTypeAliasDeclaration(statement) ||
      ts.isEnumDeclaration(statement)
    ) {
      out.push({ node: statement, name: statement.name.getText(), body: null, kind: 'other' });
    }
  }
  return out;
}

/**
 * The doc gaps of one source text. `everyExport`: every export needs a comment (the cores); otherwise
 * only exported functions and classes (an adapter's public functions). A function's comment must name
 * each code its body throws directly.
 */
export function docGaps(name: string, source: string, everyExport: boolean): DocGap[] {
  const file = parse(name, source);
  const gaps: DocGap[] = [];
  for (const decl of exportedDeclarations(file)) {
    if (!everyExport && decl.kind === 'other') continue;
    const line = lineOf(file, decl.node.getStart(file));
    const doc = docComment(file, decl.node);
    if (doc === null) {
      gaps.push({ file: name, line, name: decl.name, problem: 'missing' });
      continue;
    }
    if (decl.kind !== 'function' || decl.body === null) continue;
    const unnamed = thrownCodes(decl.body).filter((code) => !doc.includes(code));
    if (unnamed.length > 0) gaps.push({ file: name, line, name: decl.name, problem: { unnamedCodes: unnamed } });
  }
  return gaps;
}

/** Runs both checks over `src/` under `root`. The cores (`src/core`) need a comment on every export. */
export function checkSourceShape(root: string): { long: LongFunction[]; gaps: DocGap[] } {
  const long: LongFunction[] = [];
  const gaps: DocGap[] = [];
  const srcRoot = join(root, 'src');
  for (const path of listTsSources(srcRoot)) {
    const name = relative(root, path).split(sep).join('/');
    const source = readFileSync(path, 'utf8');
    long.push(...longFunctions(name, source));
    gaps.push(...docGaps(name, source, name.startsWith('src/core/')));
  }
  return { long, gaps };
}

/** One line per finding, for a failing assertion's message. */
export function describeFindings(long: readonly LongFunction[], gaps: readonly DocGap[]): string {
  return [
    ...long.map((f) => `${f.file}:${f.line} ${f.name} is ${f.lines} lines (at most ${MAX_FUNCTION_LINES})`),
    ...gaps.map(
      (g) =>
        `${g.file}:${g.line} ${g.name}: ${g.problem === 'missing' ? 'no doc comment' : `doc does not name ${g.problem.unnamedCodes.join(', ')}`}`,
    ),
  ].join('\n');
}
