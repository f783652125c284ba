/**
 * `companion list`, `rm MODEL`, `use MODEL` (issue 18 item 3): the installed models, the manifest's
 * models not yet pulled, partial downloads; removing one; choosing the active one. Only ids, names,
 * sizes and versions are shown: never a model's path or digest (P-f).
 */
import { CompanionError, isCompanionError } from '../core/errors.js';
import { findModel, type VerifiedManifest, type VerifiedModel } from '../core/manifest.js';
import {
  checkInstalledModel,
  isBuildOf,
  isModelId,
  listInstalled,
  listPartials,
  readInstalled,
  removeModel,
  useModel,
  type InstalledModel,
} from '../runtime/manager/install.js';
import { HUB_OPTIONS, LOCAL_OPTIONS, type Parsed } from './args.js';
import { findRunningUp } from './cmd-ps.js';
import { defineCommand } from './command.js';
import { authorityFor, withContext, type CommandContext } from './context.js';
import { CliUsageError, type Io } from './io.js';
import { humanBytes } from './progress.js';
import { tableLines } from './table.js';

/** An id as it may be echoed back: a model id, or nothing (a typed argument may hold anything). */
function shown(id: string): string {
  return isModelId(id) ? `"${id}"` : 'with that id';
}

function idList(ids: readonly string[]): string {
  return ids.join(', ');
}

/**
 * The manifest's model `id` (default: the first), or ERR_MODEL_UNKNOWN whose message lists the
 * manifest's model ids (`pull nosuch`).
 */
export function manifestModel(manifest: VerifiedManifest, id: string | undefined): VerifiedModel {
  try {
    return findModel(manifest, id);
  } catch (error) {
    if (!isCompanionError(error, 'ERR_MODEL_UNKNOWN') || id === undefined) throw error;
    const ids = manifest.models.map((m) => m.id);
    throw new CompanionError(
      'ERR_MODEL_UNKNOWN',
      `the manifest has no model ${shown(id)}; it lists: ${ids.length === 0 ? '(none)' : idList(ids)}`,
    );
  }
}

/** ERR_MODEL_NOT_INSTALLED whose message names the installed models (or says there are none). */
function notInstalled(id: string, installed: readonly InstalledModel[]): CompanionError {
  const choices =
    installed.length === 0
      ? 'no model is installed (run companion pull)'
      : `installed: ${idList(installed.map((m) => m.id))}`;
  return new CompanionError('ERR_MODEL_NOT_INSTALLED', `no installed model ${shown(id)}; ${choices}`);
}

/**
 * The model `up` serves for this run: `--model ID` (which must be installed), else the active one,
 * pinned for the whole run so that a `use` meanwhile does not switch it at a runtime restart. Undefined
 * when nothing is installed (the start then fails with ERR_MODEL_NOT_INSTALLED as before).
 * @throws ERR_MODEL_NOT_INSTALLED listing the installed models
 */
export async function servedModelFor(
  context: CommandContext,
  option: string | boolean | undefined,
): Promise<string | undefined> {
  if (typeof option !== 'string') return (await readInstalled(context.paths.models))?.id;
  if ((await readInstalled(context.paths.models, option)) === null)
    throw notInstalled(option, await listInstalled(context.paths.models));
  return option;
}

interface Row {
  readonly id: string;
  readonly name: string | null;
  readonly size: number | null;
  readonly installed: boolean;
  readonly verified: boolean;
  readonly active: boolean;
  /** The manifest version it was verified against (installed), or the manifest's (not pulled). */
  readonly version: number | null;
  /** Bytes of a partial download, or null. */
  readonly partialBytes: number | null;
  /** The manifest lists another build of this installed model (pull it again to update). */
  readonly update: boolean;
}

function statusText(row: Row): string {
  const partial =
    row.partialBytes === null
      ? ''
      : `partial ${humanBytes(row.partialBytes)}${row.size !== null ? ` of ${humanBytes(row.size)}` : ''}`;
  if (!row.installed) return partial === '' ? 'not pulled' : partial;
  const base = row.verified ? 'verified' : 'CHANGED (pull again)';
  return [base, row.update ? 'update available' : '', partial].filter((s) => s !== '').join(', ');
}

function printTable(io: Io, rows: readonly Row[]): void {
  const cells = rows.map((row) => [
    row.active ? '*' : ' ',
    row.id,
    row.size === null ? '-' : humanBytes(row.size),
    row.version === null ? '-' : `v${row.version}`,
    statusText(row),
  ]);
  for (const line of tableLines([' ', 'MODEL', 'SIZE', 'VERSION', 'STATUS'], cells)) io.out(line);
}

const MANIFEST_NOTE = "the hub's manifest could not be fetched";

/** The hub's manifest, or null (one line on stderr) when it cannot be fetched: `list` then shows what is installed. */
async function manifestOrNote(context: CommandContext, io: Io): Promise<VerifiedManifest | null> {
  if (context.config.hub === null) return null;
  try {
    return await authorityFor(context, io).fetchManifest();
  } catch (error) {
    const code = isCompanionError(error) ? error.code : 'ERR_INTERNAL';
    io.err(
      code === 'ERR_NOT_SIGNED_IN'
        ? `companion list: ${MANIFEST_NOTE} (not signed in: run companion login); listing installed models only`
        : `companion list: ${MANIFEST_NOTE} [${code}]; listing installed models only`,
    );
    return null;
  }
}

/** A row of a model that is not installed: listed by the manifest, or only a partial download. */
function notInstalledRow(id: string, fields: Pick<Row, 'name' | 'size' | 'version' | 'partialBytes'>): Row {
  return { id, ...fields, installed: false, verified: false, active: false, update: false };
}

/**
 * The rows of `list`: the installed models (each re-checked), then the manifest's models not installed,
 * then partial downloads of models the manifest does not (or could not) tell about.
 */
async function listRows(modelsDir: string, manifest: VerifiedManifest | null): Promise<Row[]> {
  const installed = await listInstalled(modelsDir);
  const partials = new Map((await listPartials(modelsDir)).map((p) => [p.id, p]));
  const active = (await readInstalled(modelsDir))?.id ?? null;
  const inManifest = new Map((manifest?.models ?? []).map((m) => [m.id, m]));
  const rows: Row[] = [];
  for (const record of installed) {
    const verified = await checkInstalledModel(modelsDir, record.id).then(
      () => true,
      () => false,
    );
    const listed = inManifest.get(record.id);
    rows.push({
      id: record.id,
      name: record.name,
      size: record.size,
      installed: true,
      verified,
      active: record.id === active,
      version: record.manifestVersion,
      partialBytes: partials.get(record.id)?.bytes ?? null,
      update: listed !== undefined && !isBuildOf(record, listed),
    });
  }
  const installedIds = new Set(installed.map((m) => m.id));
  for (const model of manifest?.models ?? []) {
    if (installedIds.has(model.id)) continue;
    const partialBytes = partials.get(model.id)?.bytes ?? null;
    rows.push(
      notInstalledRow(model.id, { name: model.name, size: model.size, version: manifest!.version, partialBytes }),
    );
  }
  for (const partial of partials.values()) {
    if (installedIds.has(partial.id) || inManifest.has(partial.id)) continue;
    rows.push(
      notInstalledRow(partial.id, { name: null, size: partial.total, version: null, partialBytes: partial.bytes }),
    );
  }
  return rows;
}

/** `list` with the context open. */
async function list(context: CommandContext, io: Io): Promise<number> {
  const rows = await listRows(context.paths.models, await manifestOrNote(context, io));
  if (context.json) {
    for (const row of rows) context.emit({ ...row });
  } else if (rows.length === 0) {
    io.out(
      context.config.hub === null
        ? 'No model installed (run companion pull).'
        : 'No model installed or listed by the hub.',
    );
  } else {
    printTable(io, rows);
  }
  return 0;
}

export const listCommand = defineCommand({
  name: 'list',
  summary: "list installed models and the hub's models not yet pulled",
  about: [
    'Usage: companion list [--json]',
    '',
    'Lists the installed models (id, size, the manifest version each was verified against, whether its file',
    'still matches what was verified, and which one is active: marked *), partial downloads, and, with a hub',
    "configured and signed in, the manifest's models not yet pulled. Without a hub only what is installed",
    'is listed; when the hub cannot be reached, or you are not signed in, what is installed is listed and',
    'one line on stderr says that the manifest could not be fetched (exit 0).',
    'With --json: one line per model {"id","name","size","installed","verified","active","version",',
    '"partialBytes","update"} (no line when there is none).',
  ],
  options: HUB_OPTIONS,
  after: ['Examples:', '  companion list', '  companion list --json --hub https://hub.example'],
  run: (parsed, io) => withContext(parsed, io, (context) => list(context, io)),
});

/** The one positional MODEL of `rm` and `use`. @throws CliUsageError when it is missing. */
function modelArgument(positionals: readonly string[]): string {
  const id = positionals[0];
  if (id === undefined || id === '') throw new CliUsageError(`needs a MODEL (companion list shows the installed ones)`);
  return id;
}

/** The opening of `rm` and `use`: MODEL checked first, then `fn` with the context open. */
function withModelArgument(
  parsed: Parsed,
  io: Io,
  fn: (context: CommandContext, id: string) => Promise<number>,
): Promise<number> {
  const id = modelArgument(parsed.positionals);
  return withContext(parsed, io, (context) => fn(context, id));
}

/** The refusal of `rm` while a running `up` serves `id` (or has not said yet which model it serves). */
async function refuseIfServed(
  context: CommandContext,
  id: string,
  installed: readonly InstalledModel[],
): Promise<void> {
  const up = await findRunningUp(context);
  if (up === null || (up.model !== id && (up.model !== null || !installed.some((m) => m.id === id)))) return;
  throw new CompanionError(
    'ERR_MODEL_IN_USE',
    up.model === null
      ? `companion up (pid ${up.pid}) is starting and has not said which model it serves yet; stop it first (or try again once it runs)`
      : `companion up (pid ${up.pid}) serves ${id}; stop it first, then remove the model`,
  );
}

/**
 * `rm MODEL` with the context open. @throws ERR_MODEL_NOT_INSTALLED listing the installed models,
 * ERR_MODEL_IN_USE while a running `up` serves it
 */
async function remove(context: CommandContext, io: Io, id: string): Promise<number> {
  const modelsDir = context.paths.models;
  const installed = await listInstalled(modelsDir);
  const partial = (await listPartials(modelsDir)).some((p) => p.id === id);
  if (!installed.some((m) => m.id === id) && !partial) throw notInstalled(id, installed);
  await refuseIfServed(context, id, installed);
  const result = await removeModel(modelsDir, id);
  if (context.json) {
    context.emit({ removed: id, wasActive: result.wasActive, partialFiles: result.partials });
    return 0;
  }
  io.out(
    result.installed
      ? `Removed ${id}${result.partials > 0 ? ' and its partial download' : ''}.`
      : `Removed the partial download of ${id}.`,
  );
  if (result.wasActive) {
    const left = installed.filter((m) => m.id !== id).map((m) => m.id);
    io.out(
      left.length === 0
        ? 'No model is installed now (run companion pull).'
        : `No model is active now: run companion use ${left[0]} (installed: ${idList(left)}).`,
    );
  }
  return 0;
}

export const rmCommand = defineCommand({
  name: 'rm',
  summary: 'remove an installed model and its partial download',
  about: [
    'Usage: companion rm MODEL [--json]',
    '',
    'Removes the installed model MODEL: its file, its record and any partial download of it (a model that',
    'only has a partial download: that). When it was the active model, no model is active afterwards:',
    'choose one with companion use. Refused (ERR_MODEL_IN_USE, exit 1) while a running companion up serves',
    'MODEL (or is starting and has not said which model yet): stop it first. An unknown MODEL fails with',
    'ERR_MODEL_NOT_INSTALLED and lists the installed models.',
    'With --json: {"removed": ID, "wasActive": BOOL, "partialFiles": N}.',
  ],
  options: LOCAL_OPTIONS,
  positionals: 1,
  after: ['Examples:', '  companion rm small', '  companion list --json && companion rm tiny-demo --json'],
  run: (parsed, io) => withModelArgument(parsed, io, (context, id) => remove(context, io, id)),
});

/** `use MODEL` with the context open. @throws ERR_MODEL_NOT_INSTALLED listing the installed models */
async function use(context: CommandContext, io: Io, id: string): Promise<number> {
  const modelsDir = context.paths.models;
  const installed = await listInstalled(modelsDir);
  if (!installed.some((m) => m.id === id)) throw notInstalled(id, installed);
  const { previous } = await useModel(modelsDir, id);
  if (context.json) {
    context.emit({ active: id, previous });
    return 0;
  }
  io.out(
    previous === id
      ? `${id} is the active model already.`
      : `${id} is now the active model${previous !== null ? ` (was ${previous})` : ''}.`,
  );
  const up = await findRunningUp(context);
  if (up !== null && up.model !== null && up.model !== id)
    io.out(`The running companion up (pid ${up.pid}) keeps serving ${up.model} until it is restarted.`);
  return 0;
}

export const useCommand = defineCommand({
  name: 'use',
  summary: 'make an installed model the active one',
  about: [
    'Usage: companion use MODEL [--json]',
    '',
    'Makes the installed model MODEL the active one: the one companion up serves (companion up --model',
    'MODEL serves another for one run). Its file is re-checked first (ERR_MODEL_CHANGED when it no longer',
    'matches what was verified). A running companion up keeps serving its model until it is restarted. An',
    'unknown MODEL fails with ERR_MODEL_NOT_INSTALLED and lists the installed models.',
    'With --json: {"active": ID, "previous": ID|null}.',
  ],
  options: LOCAL_OPTIONS,
  positionals: 1,
  after: ['Examples:', '  companion use small', '  companion pull other && companion use other'],
  run: (parsed, io) => withModelArgument(parsed, io, (context, id) => use(context, io, id)),
});
