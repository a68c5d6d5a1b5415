/**
 * A small JSON Schema validator for the project's own config files: the subset of draft 2020-12
 * that schemas/*.schema.json use, and nothing else. A schema that uses any other keyword is refused
 * when it is loaded, so a file can never be "checked" against a rule this validator silently skips.
 *
 *   const issues = validate("scenario.schema.json", JSON.parse(text));
 *   if (issues.length) throw new Error(formatIssues("mass-boot.json", issues));
 *   // mass-boot.json: expct: unknown key "expct" (did you mean "expect"?)
 *   // mass-boot.json: devices.count: must be an integer from 1 to 1000000, got "abc"
 *
 * Keywords: type (one or a list), enum, const, minimum, maximum, exclusiveMinimum,
 * exclusiveMaximum, minLength, maxLength, pattern, properties, patternProperties,
 * additionalProperties (false or a schema), required, items (one schema), minItems, maxItems,
 * anyOf, allOf, if/then/else, $ref (to "#/$defs/name" in the same file or "other.schema.json#/..."
 * beside it), $defs. Annotations, not checked: $schema, $id, $comment, title, description,
 * default, examples; `errorMessage` and `patternErrorMessage` (VS Code's names) replace the
 * generated "must be ..." text.
 *
 * It lives in simulator/ because the emulator reads its config with it and the fleet (hosts/desktop)
 * already depends on the emulator; the schemas themselves are in schemas/ at the top of the repo,
 * where editors and people find them (the config files point at them with `$schema`).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's schemas/ folder (this file runs from build/simulator/). */
export const SCHEMA_DIRECTORY = fileURLToPath(new URL("../../schemas/", import.meta.url));

export interface SchemaIssue {
  /** Where in the document: `devices.count`, `timeline[0].do`, `retryPolicy.status["429"]`; "" for the root. */
  readonly path: string;
  readonly message: string;
}

type Schema = { readonly [keyword: string]: unknown };

const ASSERTIONS = new Set([
  "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
  "properties", "patternProperties", "additionalProperties", "required", "items", "minItems", "maxItems", "anyOf", "allOf",
  "if", "then", "else", "$ref", "$defs",
]);
const ANNOTATIONS = new Set(["$schema", "$id", "$comment", "title", "description", "default", "examples", "errorMessage", "patternErrorMessage"]);
const TYPES = new Set(["object", "array", "string", "number", "integer", "boolean", "null"]);

interface LoadedSchema {
  readonly file: string;
  readonly root: Schema;
  readonly patterns: Map<string, RegExp>;
}

const cache = new Map<string, LoadedSchema>();

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads a schema of schemas/ (cached) and checks that it uses only the keywords above, and that every $ref resolves. */
export function loadSchema(file: string, directory = SCHEMA_DIRECTORY): LoadedSchema {
  const key = `${directory}\u0000${file}`;
  const hit = cache.get(key);
  if (hit) return hit;
  let root: unknown;
  try {
    root = JSON.parse(readFileSync(join(directory, file), "utf8"));
  } catch (error) {
    throw new Error(`schema ${file}: ${(error as Error).message}`);
  }
  if (!isObject(root)) throw new Error(`schema ${file}: must be a JSON object`);
  const loaded: LoadedSchema = { file, root, patterns: new Map() };
  cache.set(key, loaded);
  const refs: [string, string][] = [];
  const walk = (s: unknown, at: string): void => {
    if (s === true || s === false) return;
    if (!isObject(s)) throw new Error(`schema ${file}: ${at || "/"} is not a schema`);
    for (const [k, v] of Object.entries(s)) {
      if (!ASSERTIONS.has(k) && !ANNOTATIONS.has(k)) throw new Error(`schema ${file}: ${at}/${k}: keyword "${k}" is not supported by simulator/json-schema.ts`);
      const here = `${at}/${k}`;
      switch (k) {
        case "type":
          for (const t of Array.isArray(v) ? v : [v]) if (!TYPES.has(t as string)) throw new Error(`schema ${file}: ${here}: unknown type ${JSON.stringify(t)}`);
          break;
        case "pattern":
          loaded.patterns.set(v as string, new RegExp(v as string, "u"));
          break;
        case "properties":
        case "patternProperties":
        case "$defs":
          if (!isObject(v)) throw new Error(`schema ${file}: ${here} must be an object`);
          for (const [name, sub] of Object.entries(v)) {
            if (k === "patternProperties") loaded.patterns.set(name, new RegExp(name, "u"));
            walk(sub, `${here}/${name}`);
          }
          break;
        case "additionalProperties":
        case "items":
        case "if":
        case "then":
        case "else":
          walk(v, here);
          break;
        case "anyOf":
        case "allOf":
          if (!Array.isArray(v) || v.length === 0) throw new Error(`schema ${file}: ${here} must be a non-empty array`);
          v.forEach((sub, i) => walk(sub, `${here}/${i}`));
          break;
        case "required":
          if (!Array.isArray(v) || v.some((n) => typeof n !== "string")) throw new Error(`schema ${file}: ${here} must list property names`);
          break;
        case "enum":
          if (!Array.isArray(v) || v.length === 0) throw new Error(`schema ${file}: ${here} must be a non-empty array`);
          break;
        case "$ref":
          if (typeof v !== "string") throw new Error(`schema ${file}: ${here} must be a string`);
          refs.push([v, here]);
          break;
      }
    }
  };
  try {
    walk(root, "");
    for (const [ref, at] of refs) resolveRef(loaded, ref, directory, at);
  } catch (error) {
    cache.delete(key);
    throw error;
  }
  return loaded;
}

/** "#/$defs/x" in this file, or "other.schema.json#/$defs/x" (or the whole other file) in the same folder. */
function resolveRef(from: LoadedSchema, ref: string, directory: string, at = ""): { schema: Schema; owner: LoadedSchema } {
  const hash = ref.indexOf("#");
  const file = hash < 0 ? ref : ref.slice(0, hash);
  const pointer = hash < 0 ? "" : ref.slice(hash + 1);
  const owner = file === "" ? from : loadSchema(file, directory);
  let node: unknown = owner.root;
  if (pointer !== "") {
    if (!pointer.startsWith("/")) throw new Error(`schema ${from.file}: ${at}: $ref ${ref} is not a JSON pointer`);
    for (const raw of pointer.slice(1).split("/")) {
      const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
      node = isObject(node) ? node[part] : undefined;
    }
  }
  if (!isObject(node)) throw new Error(`schema ${from.file}: ${at}: $ref ${ref} does not resolve`);
  return { schema: node, owner };
}

// ---- messages ----------------------------------------------------------------------------------

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `devices.count`, `timeline[0].do`, `status["429"]`. */
export function formatPath(segments: readonly (string | number)[]): string {
  let out = "";
  for (const s of segments) {
    if (typeof s === "number") out += `[${s}]`;
    else if (IDENTIFIER.test(s)) out += out === "" ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

/** A value as a message shows it: strings quoted (and cut), objects and arrays by kind. */
export function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? value.slice(0, 59) + "…" : value);
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return String(value);
}

function range(kind: string, s: Schema): string {
  const lo = s.minimum as number | undefined;
  const hi = s.maximum as number | undefined;
  const xlo = s.exclusiveMinimum as number | undefined;
  const xhi = s.exclusiveMaximum as number | undefined;
  if (lo !== undefined && hi !== undefined) return `${kind} from ${lo} to ${hi}`;
  const parts: string[] = [];
  if (lo !== undefined) parts.push(`≥ ${lo}`);
  if (xlo !== undefined) parts.push(`> ${xlo}`);
  if (hi !== undefined) parts.push(`≤ ${hi}`);
  if (xhi !== undefined) parts.push(`< ${xhi}`);
  return parts.length ? `${kind} ${parts.join(" and ")}` : kind;
}

const ARTICLE: Record<string, string> = { object: "an object", array: "an array", string: "a string", number: "a number", integer: "an integer", boolean: "true or false", null: "null" };

function either(items: string[]): string {
  return items.length <= 2 ? items.join(" or ") : `one of ${items.join(", ")}`;
}

/** What a schema asks for, as a noun phrase ("an integer ≥ 1", `"memory" or "file"`). */
function describe(s: Schema, ctx: Context): string {
  if (typeof s.$ref === "string") {
    const target = ctx.resolve(s.$ref);
    return describe(target.schema, { ...ctx, owner: target.owner });
  }
  if ("const" in s) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return either(s.enum.map((v) => JSON.stringify(v)));
  if (Array.isArray(s.anyOf)) return (s.anyOf as Schema[]).map((a) => describe(a, ctx)).join(" or ");
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
  if (types.length !== 1) return types.length ? types.map((t) => ARTICLE[t]).join(" or ") : "valid";
  const t = types[0];
  if (t === "integer" || t === "number") return range(ARTICLE[t], s);
  if (t === "string") {
    if (typeof s.patternErrorMessage === "string") return s.patternErrorMessage.replace(/^must be /, "");
    if (typeof s.pattern === "string") return `a string matching /${s.pattern}/`;
    if (s.minLength === 1 && s.maxLength === undefined) return "a non-empty string";
    if (s.minLength !== undefined || s.maxLength !== undefined) return `a string of ${s.minLength ?? 0} to ${s.maxLength ?? "any number of"} characters`;
    return "a string";
  }
  if (t === "array" && s.minItems !== undefined) return `an array of at least ${s.minItems} item${s.minItems === 1 ? "" : "s"}`;
  return ARTICLE[t];
}

// ---- "did you mean" ----------------------------------------------------------------------------

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The nearest of `names` to a misspelt `name`: the same but for case, a prefix either way, or a few edits away. */
export function nearest(name: string, names: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  const sameCase = names.find((n) => n.toLowerCase() === lower);
  if (sameCase) return sameCase;
  const prefixed = names.filter((n) => n.toLowerCase().startsWith(lower) || lower.startsWith(n.toLowerCase()));
  if (prefixed.length === 1 && Math.min(name.length, prefixed[0].length) >= 3) return prefixed[0];
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 4)) + 1;
  for (const n of names) {
    const d = distance(lower, n.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [n, d];
  }
  return best;
}

// ---- validation --------------------------------------------------------------------------------

interface Context {
  readonly owner: LoadedSchema;
  readonly directory: string;
  resolve(ref: string): { schema: Schema; owner: LoadedSchema };
}

function contextOf(owner: LoadedSchema, directory: string): Context {
  return { owner, directory, resolve: (ref) => resolveRef(owner, ref, directory) };
}

function typeOk(t: string, v: unknown): boolean {
  switch (t) {
    case "object":
      return isObject(v);
    case "array":
      return Array.isArray(v);
    case "string":
      return typeof v === "string";
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "integer":
      return typeof v === "number" && Number.isInteger(v);
    case "boolean":
      return typeof v === "boolean";
    case "null":
      return v === null;
  }
  return false;
}

function equal(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function check(s: Schema | boolean, v: unknown, path: (string | number)[], ctx: Context, out: SchemaIssue[]): void {
  if (s === true) return;
  if (s === false) {
    out.push({ path: formatPath(path), message: "is not allowed here" });
    return;
  }
  const bad = (message?: string): void => void out.push({ path: formatPath(path), message: `${message ?? (typeof s.errorMessage === "string" ? s.errorMessage : `must be ${describe(s, ctx)}`)}, got ${show(v)}` });
  if (typeof s.$ref === "string") {
    const target = ctx.resolve(s.$ref);
    const before = out.length;
    check(target.schema, v, path, contextOf(target.owner, ctx.directory), out);
    if (out.length > before) return;
  }
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
    if (!types.some((t) => typeOk(t, v))) return bad();
  }
  if ("const" in s && !equal(s.const, v)) return bad();
  if (Array.isArray(s.enum) && !s.enum.some((e) => equal(e, v))) return bad();
  if (typeof v === "number") {
    if ((s.minimum !== undefined && v < (s.minimum as number)) || (s.maximum !== undefined && v > (s.maximum as number))) return bad();
    if ((s.exclusiveMinimum !== undefined && v <= (s.exclusiveMinimum as number)) || (s.exclusiveMaximum !== undefined && v >= (s.exclusiveMaximum as number))) return bad();
  }
  if (typeof v === "string") {
    const length = [...v].length;
    if ((s.minLength !== undefined && length < (s.minLength as number)) || (s.maxLength !== undefined && length > (s.maxLength as number))) return bad();
    if (typeof s.pattern === "string" && !ctx.owner.patterns.get(s.pattern)!.test(v)) return bad(typeof s.patternErrorMessage === "string" ? s.patternErrorMessage : undefined);
  }
  if (Array.isArray(s.anyOf)) {
    const passes = (s.anyOf as Schema[]).some((alt) => {
      const trial: SchemaIssue[] = [];
      check(alt, v, path, ctx, trial);
      return trial.length === 0;
    });
    if (!passes) return bad();
  }
  if (Array.isArray(s.allOf)) for (const sub of s.allOf as Schema[]) check(sub, v, path, ctx, out);
  if (s.if !== undefined) {
    const trial: SchemaIssue[] = [];
    check(s.if as Schema, v, path, ctx, trial);
    const branch = trial.length === 0 ? s.then : s.else;
    if (branch !== undefined) check(branch as Schema, v, path, ctx, out);
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < (s.minItems as number)) return bad();
    if (s.maxItems !== undefined && v.length > (s.maxItems as number)) out.push({ path: formatPath(path), message: `must list at most ${s.maxItems} items, got ${v.length}` });
    if (s.items !== undefined) v.forEach((item, i) => check(s.items as Schema, item, [...path, i], ctx, out));
  }
  if (isObject(v)) {
    const properties = (s.properties ?? {}) as Record<string, Schema>;
    const patterns = Object.entries((s.patternProperties ?? {}) as Record<string, Schema>);
    for (const name of (s.required ?? []) as string[]) {
      if (v[name] === undefined) out.push({ path: formatPath([...path, name]), message: typeof s.errorMessage === "string" ? s.errorMessage : "is required" });
    }
    for (const [name, value] of Object.entries(v)) {
      // An object built in code may hold a key set to undefined: JSON has no such key.
      if (value === undefined) continue;
      let matched = false;
      if (Object.hasOwn(properties, name)) {
        matched = true;
        check(properties[name], value, [...path, name], ctx, out);
      }
      for (const [pattern, sub] of patterns) {
        if (!ctx.owner.patterns.get(pattern)!.test(name)) continue;
        matched = true;
        check(sub, value, [...path, name], ctx, out);
      }
      if (matched || s.additionalProperties === undefined || s.additionalProperties === true) continue;
      if (s.additionalProperties === false) {
        const near = nearest(name, Object.keys(properties));
        const hint = near ? ` (did you mean ${JSON.stringify(near)}?)` : patterns.length ? ` (keys match ${patterns.map(([p]) => `/${p}/`).join(" or ")})` : "";
        out.push({ path: formatPath([...path, name]), message: `unknown key ${JSON.stringify(name)}${hint}` });
      } else check(s.additionalProperties as Schema, value, [...path, name], ctx, out);
    }
  }
}

/**
 * Checks `value` against a schema of schemas/ (or the part of it at `pointer`, "#/$defs/faultRule").
 * @returns every issue found, in document order; none when the value is valid.
 */
export function validate(file: string, value: unknown, pointer = "", directory = SCHEMA_DIRECTORY): SchemaIssue[] {
  const loaded = loadSchema(file, directory);
  const ctx = contextOf(loaded, directory);
  const schema = pointer === "" ? loaded.root : ctx.resolve(pointer).schema;
  const out: SchemaIssue[] = [];
  check(schema, value, [], ctx, out);
  return out;
}

/**
 * One line per issue: `<where>: <path>: <message>` (the first `max`, then how many more).
 * `prefix` is prepended to every path (`--fault #1` → `--fault #1.status`).
 */
export function formatIssues(where: string, issues: readonly SchemaIssue[], max = 10, prefix = ""): string {
  const lines = issues.slice(0, max).map((i) => {
    const path = prefix && i.path ? (i.path.startsWith("[") ? `${prefix}${i.path}` : `${prefix}.${i.path}`) : prefix || i.path;
    return [where, path, i.message].filter((part) => part !== "").join(": ");
  });
  if (issues.length > max) lines.push(`${where}: and ${issues.length - max} more`);
  return lines.join("\n");
}
