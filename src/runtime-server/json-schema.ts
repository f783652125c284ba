/**
 * Which JSON schemas the runtime can turn into a grammar: the subset node-llama-cpp 3.21's
 * `llama.createGrammarForJsonSchema` expresses (its `GbnfJsonSchema`), checked up front. node-llama-cpp
 * itself silently replaces what it cannot express (an unknown `$ref` becomes "any JSON", an unknown
 * keyword is dropped), so a schema is checked keyword by keyword here and anything outside the subset is
 * refused with the keyword's JSON pointer, never ignored. Pure: no I/O.
 *
 * Accepted: `type` (one of string, number, integer, boolean, null, object, array, or a list of the
 * scalar ones), `const`, `enum` (scalars), `oneOf` / `anyOf` (both become a grammar alternation, which
 * matches every branch), `$ref` to `#/$defs/N` or `#/definitions/N` with `$defs` / `definitions` at
 * the root, `properties`, `required`, `additionalProperties`, `minProperties`, `maxProperties`, `items`,
 * `prefixItems`, `minItems`, `maxItems`, `minLength`, `maxLength`, `format` date-time / date / time.
 * Annotations (`title`, `description`, `$schema`, `$id`, `$comment`, `examples`, `default`,
 * `deprecated`, `readOnly`, `writeOnly`) constrain nothing and are dropped, except `description`.
 */

/** A schema is refused: `pointer` names where (`/properties/a/pattern`), `reason` what. */
export class UnsupportedSchemaError extends Error {
  readonly pointer: string;
  constructor(pointer: string, reason: string) {
    super(`${pointer === '' ? 'the schema' : pointer}: ${reason}`);
    this.name = 'UnsupportedSchemaError';
    this.pointer = pointer;
  }
}

const ANNOTATIONS = new Set([
  'title',
  '$schema',
  '$id',
  '$comment',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
]);
const SCALAR_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null']);
const FORMATS = new Set(['date-time', 'date', 'time']);
const MAX_DEPTH = 64;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isScalar(value: unknown): boolean {
  return (
    value === null ||
    typeof value === 'string' ||
    typeof value === 'boolean' ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

function count(schema: Json, key: string, pointer: string): number | undefined {
  const value = schema[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
    throw new UnsupportedSchemaError(`${pointer}/${key}`, `${key} must be a non-negative integer`);
  return value;
}

interface Walk {
  readonly defs: ReadonlySet<string>;
}

/** One schema being converted: where it is, what it becomes, and `take` (marks a keyword as handled). */
interface SchemaNode {
  readonly schema: Json;
  readonly pointer: string;
  readonly walk: Walk;
  readonly depth: number;
  readonly out: Json;
  readonly take: (key: string) => unknown;
}

/** Converts the subschema `value` of `node` found at `node.pointer/suffix`. */
function child(node: SchemaNode, value: unknown, suffix: string): Json {
  return convert(value, `${node.pointer}/${suffix}`, node.walk, node.depth + 1, false);
}

/**
 * Checks `schema` and returns the form node-llama-cpp takes (annotations dropped, `anyOf` → `oneOf`,
 * `definitions` → `$defs`).
 *
 * @throws UnsupportedSchemaError naming the first keyword the grammar builder cannot express.
 */
export function grammarSchemaOf(schema: unknown): object {
  if (!isObject(schema)) throw new UnsupportedSchemaError('', 'a schema must be a JSON object');
  const rawDefs = schema.$defs ?? schema.definitions;
  if (schema.$defs !== undefined && schema.definitions !== undefined)
    throw new UnsupportedSchemaError('/definitions', 'use either $defs or definitions');
  const defsKey = schema.$defs !== undefined ? '$defs' : 'definitions';
  const names = new Set<string>();
  if (rawDefs !== undefined) {
    if (!isObject(rawDefs)) throw new UnsupportedSchemaError(`/${defsKey}`, `${defsKey} must be an object of schemas`);
    for (const name of Object.keys(rawDefs)) names.add(name);
  }
  const walk: Walk = { defs: names };
  const out = convert(schema, '', walk, 0, true);
  if (rawDefs !== undefined) {
    const defs: Json = {};
    for (const [name, def] of Object.entries(rawDefs as Json))
      defs[name] = convert(def, `/${defsKey}/${escapePointer(name)}`, walk, 1, false);
    // node-llama-cpp reads $defs on object, array, oneOf and $ref schemas only.
    if (!('type' in out && (out.type === 'object' || out.type === 'array')) && !('oneOf' in out) && !('$ref' in out)) {
      throw new UnsupportedSchemaError(
        `/${defsKey}`,
        `${defsKey} is supported on an object, array, anyOf/oneOf or $ref schema only`,
      );
    }
    (out as Json).$defs = defs;
  }
  return out;
}

function convert(schema: unknown, pointer: string, walk: Walk, depth: number, root: boolean): Json {
  if (depth > MAX_DEPTH) throw new UnsupportedSchemaError(pointer, `nesting deeper than ${MAX_DEPTH}`);
  if (!isObject(schema))
    throw new UnsupportedSchemaError(pointer, 'a schema must be a JSON object (true/false schemas are not supported)');
  const out: Json = {};
  const used = new Set<string>();
  const take = (key: string): unknown => {
    used.add(key);
    return schema[key];
  };
  const node: SchemaNode = { schema, pointer, walk, depth, out, take };
  if (typeof schema.description === 'string') out.description = take('description');
  else if (schema.description !== undefined)
    throw new UnsupportedSchemaError(`${pointer}/description`, 'description must be a string');
  if (root) {
    used.add('$defs');
    used.add('definitions');
  }
  for (const key of Object.keys(schema)) if (ANNOTATIONS.has(key)) used.add(key);

  const kinds = ['$ref', 'const', 'enum', 'oneOf', 'anyOf', 'type'].filter((key) => schema[key] !== undefined);
  if (kinds.length === 0)
    throw new UnsupportedSchemaError(pointer, 'a schema needs one of type, const, enum, anyOf, oneOf or $ref');
  if (kinds.length > 1)
    throw new UnsupportedSchemaError(`${pointer}/${kinds[1]}`, `${kinds[1]} cannot be combined with ${kinds[0]}`);
  const kind = kinds[0]!;

  if (kind === '$ref') {
    const ref = take('$ref');
    const match = typeof ref === 'string' ? /^#\/(?:\$defs|definitions)\/([^/~%]+)$/.exec(ref) : null;
    if (match === null || !walk.defs.has(match[1]!))
      throw new UnsupportedSchemaError(
        `${pointer}/$ref`,
        'only references to #/$defs/NAME (or #/definitions/NAME) defined at the root are supported',
      );
    out.$ref = `#/$defs/${match[1]!}`;
  } else if (kind === 'const') {
    const value = take('const');
    if (!isScalar(value))
      throw new UnsupportedSchemaError(`${pointer}/const`, 'const must be a string, number, boolean or null');
    out.const = value;
  } else if (kind === 'enum') {
    const values = take('enum');
    if (!Array.isArray(values) || values.length === 0 || !values.every(isScalar)) {
      throw new UnsupportedSchemaError(
        `${pointer}/enum`,
        'enum must be a non-empty list of strings, numbers, booleans or null',
      );
    }
    out.enum = values;
  } else if (kind === 'oneOf' || kind === 'anyOf') {
    const branches = take(kind);
    if (!Array.isArray(branches) || branches.length === 0)
      throw new UnsupportedSchemaError(`${pointer}/${kind}`, `${kind} must be a non-empty list of schemas`);
    out.oneOf = branches.map((branch, i) => convert(branch, `${pointer}/${kind}/${i}`, walk, depth + 1, false));
  } else {
    const type = take('type');
    if (Array.isArray(type)) {
      if (type.length === 0 || !type.every((t) => typeof t === 'string' && SCALAR_TYPES.has(t))) {
        throw new UnsupportedSchemaError(
          `${pointer}/type`,
          'a list of types may hold only string, number, integer, boolean and null',
        );
      }
      out.type = type;
    } else if (typeof type === 'string' && SCALAR_TYPES.has(type)) {
      out.type = type;
      if (type === 'string') convertString(node);
    } else if (type === 'object') {
      out.type = type;
      convertObject(node);
    } else if (type === 'array') {
      out.type = type;
      convertArray(node);
    } else {
      throw new UnsupportedSchemaError(
        `${pointer}/type`,
        'type must be string, number, integer, boolean, null, object or array',
      );
    }
  }

  for (const key of Object.keys(schema)) {
    if (!used.has(key))
      throw new UnsupportedSchemaError(`${pointer}/${escapePointer(key)}`, `the keyword ${key} is not supported here`);
  }
  return out;
}

/** The `string` keywords: the lengths, or one `format`. */
function convertString(node: SchemaNode): void {
  const { schema, pointer, out, take } = node;
  const min = count(schema, 'minLength', pointer);
  const max = count(schema, 'maxLength', pointer);
  if (min !== undefined) out.minLength = take('minLength');
  if (max !== undefined) out.maxLength = take('maxLength');
  if (min !== undefined && max !== undefined && max < min)
    throw new UnsupportedSchemaError(`${pointer}/maxLength`, 'maxLength is below minLength');
  if (schema.format !== undefined) {
    const format = take('format');
    if (typeof format !== 'string' || !FORMATS.has(format))
      throw new UnsupportedSchemaError(`${pointer}/format`, 'only the formats date-time, date and time are supported');
    if (min !== undefined || max !== undefined)
      throw new UnsupportedSchemaError(`${pointer}/format`, 'format cannot be combined with minLength or maxLength');
    out.format = format;
  }
}

/** The `object` keywords: each property's schema, `additionalProperties`, `required` and the counts. */
function convertObject(node: SchemaNode): void {
  const { schema, pointer, out, take } = node;
  const names: string[] = [];
  if (schema.properties !== undefined) {
    const properties = take('properties');
    if (!isObject(properties))
      throw new UnsupportedSchemaError(`${pointer}/properties`, 'properties must be an object of schemas');
    const converted: Json = {};
    for (const [name, value] of Object.entries(properties)) {
      names.push(name);
      converted[name] = child(node, value, `properties/${escapePointer(name)}`);
    }
    out.properties = converted;
  }
  const additional = schema.additionalProperties;
  if (additional !== undefined) {
    take('additionalProperties');
    if (typeof additional === 'boolean') out.additionalProperties = additional;
    else out.additionalProperties = child(node, additional, 'additionalProperties');
  }
  if (schema.required !== undefined) {
    const required = take('required');
    if (!Array.isArray(required) || !required.every((name) => typeof name === 'string'))
      throw new UnsupportedSchemaError(`${pointer}/required`, 'required must be a list of property names');
    // The grammar always writes every listed property; a required name that is not one cannot be produced.
    const missing = required.find((name) => !names.includes(name as string));
    if (missing !== undefined)
      throw new UnsupportedSchemaError(`${pointer}/required`, 'every required name must be a listed property');
    out.required = required;
  }
  const min = count(schema, 'minProperties', pointer);
  const max = count(schema, 'maxProperties', pointer);
  if (min !== undefined) out.minProperties = take('minProperties');
  if (max !== undefined) {
    take('maxProperties');
    if (max < names.length || (min !== undefined && max < min))
      throw new UnsupportedSchemaError(
        `${pointer}/maxProperties`,
        'maxProperties is below the number of properties (all are always written) or minProperties',
      );
    out.maxProperties = max;
  }
  if (min !== undefined && min > names.length && (additional === undefined || additional === false)) {
    throw new UnsupportedSchemaError(
      `${pointer}/minProperties`,
      'minProperties exceeds the properties and no additionalProperties are allowed',
    );
  }
}

/** The `array` keywords: `items`, `prefixItems` and the counts. */
function convertArray(node: SchemaNode): void {
  const { schema, pointer, out, take } = node;
  if (schema.items !== undefined) {
    const items = take('items');
    if (Array.isArray(items))
      throw new UnsupportedSchemaError(
        `${pointer}/items`,
        'a list of items schemas is not supported (use prefixItems)',
      );
    out.items = child(node, items, 'items');
  }
  let prefix = 0;
  if (schema.prefixItems !== undefined) {
    const items = take('prefixItems');
    if (!Array.isArray(items))
      throw new UnsupportedSchemaError(`${pointer}/prefixItems`, 'prefixItems must be a list of schemas');
    prefix = items.length;
    out.prefixItems = items.map((item, i) => child(node, item, `prefixItems/${i}`));
  }
  const min = count(schema, 'minItems', pointer);
  const max = count(schema, 'maxItems', pointer);
  if (min !== undefined) out.minItems = take('minItems');
  if (max !== undefined) {
    take('maxItems');
    if (max < prefix || (min !== undefined && max < min))
      throw new UnsupportedSchemaError(`${pointer}/maxItems`, 'maxItems is below prefixItems or minItems');
    out.maxItems = max;
  }
}
