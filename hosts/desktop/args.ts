/**
 * The command line of every command (dps-device, dps-fleet, dps-emulator and the demo): one table
 * of options per command, from which the usage text is written, parsed in full before the command
 * does anything, so that a mistake costs no emulator start, socket or build.
 *
 * - `-h`/`--help` prints the usage on stdout and exits 0; `--version` prints `<command> <version>`
 *   (package.json's) and exits 0. Both are added to every command.
 * - A usage error (an unknown option, a stray word, a missing or unexpected value, a number out of
 *   range, a bad fault...) prints `<command>: <what is wrong>` and the usage on stderr, exits 2.
 * - Any other error, at any time (a rejected promise, an exception from a socket handler), prints
 *   `<command>: <message>` on one line and exits 1; with DPS_DEBUG set, the stack follows.
 *
 * Adding an option: one entry in the command's table (type, value placeholder, help text); read it
 * from the values, through `integer`/`port`/`choice` for anything that must be checked.
 */
import { readFileSync } from "node:fs";

export interface OptionSpec {
  readonly type: "string" | "boolean";
  /** A one-letter alias (`-h`). */
  readonly short?: string;
  /** Repeatable: the values in the order given (strings only). */
  readonly multiple?: boolean;
  /** The value's placeholder in the usage (`N`, `FILE`). */
  readonly value?: string;
  /** One line, or several separated by "\n", for the usage. */
  readonly help: string;
}

export type OptionTable = Readonly<Record<string, OptionSpec>>;

export interface CommandSpec<O extends OptionTable> {
  /** The command's name in messages and in `--version` (`dps-device`). */
  readonly name: string;
  /** What follows `usage: ` (`dps-fleet --scenario FILE [options]`); several lines allowed. */
  readonly synopsis: string;
  readonly options: O;
  /** Text after the options (examples, notes). */
  readonly footer?: string;
}

/** What a command line gave: strings, `true` for booleans given, arrays for `multiple`. */
export type OptionValues<O extends OptionTable> = {
  -readonly [K in keyof O]?: O[K]["type"] extends "boolean" ? boolean : O[K]["multiple"] extends true ? string[] : string;
};

/** A usage error: the command prints the message and its usage, and exits 2. */
export class CommandLineError extends Error {
  override readonly name = "CommandLineError";
}

/** Throws a usage error. */
export function usageError(message: string): never {
  throw new CommandLineError(message);
}

const BUILT_IN: OptionTable = {
  help: { type: "boolean", short: "h", help: "this text" },
  version: { type: "boolean", help: "print the version and exit" },
};

/** The usage text: the synopsis, then one line (or more) per option, aligned. */
export function usageOf(spec: CommandSpec<OptionTable>): string {
  const all = { ...spec.options, ...BUILT_IN };
  const heads = Object.entries(all).map(([name, o]) => `${o.short ? `-${o.short}, ` : ""}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`);
  const width = Math.min(26, Math.max(...heads.map((h) => h.length)) + 2);
  const lines = [`usage: ${spec.synopsis}`];
  Object.values(all).forEach((o, i) => {
    const [first, ...rest] = o.help.split("\n");
    const head = heads[i];
    if (head.length + 2 > width) lines.push(`  ${head}`, `  ${" ".repeat(width)}${first}`);
    else lines.push(`  ${head.padEnd(width)}${first}`);
    for (const more of rest) lines.push(`  ${" ".repeat(width)}${more}`);
  });
  if (spec.footer) lines.push(spec.footer);
  return lines.join("\n");
}

/** The closest option name, for "did you mean": a prefix, or at most two edits away. */
function suggestion(name: string, names: readonly string[]): string | undefined {
  const prefixed = names.filter((n) => n.startsWith(name) || name.startsWith(n));
  if (prefixed.length === 1) return prefixed[0];
  let best: string | undefined;
  let bestDistance = 3;
  for (const n of names) {
    const d = editDistance(name, n);
    if (d < bestDistance) [best, bestDistance] = [n, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = row;
  }
  return previous[b.length];
}

/**
 * Parses `argv` against the table (plus --help and --version). Options only: `--name VALUE`,
 * `--name=VALUE`, a boolean `--name`, a short alias; a value may start with a single dash (`-1`).
 * The last of a repeated option wins unless it is `multiple`.
 * @throws CommandLineError for an unknown option, a positional word, a missing value, or a value
 *   given to a boolean.
 */
export function parseCommandLine<O extends OptionTable>(spec: CommandSpec<O>, argv: readonly string[]): OptionValues<O> & { help?: boolean; version?: boolean } {
  const table: OptionTable = { ...spec.options, ...BUILT_IN };
  const byShort = new Map(Object.entries(table).filter(([, o]) => o.short).map(([name, o]) => [o.short!, name]));
  const values: Record<string, string | boolean | string[]> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith("--") && arg.length > 2) {
      const eq = arg.indexOf("=");
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
      if (!Object.hasOwn(table, name)) {
        const near = suggestion(name, Object.keys(table));
        usageError(`unknown option --${name}${near ? ` (did you mean --${near}?)` : ""}`);
      }
    } else if (/^-[^-\d]$/.test(arg)) {
      const long = byShort.get(arg.slice(1));
      if (long === undefined) usageError(`unknown option ${arg}`);
      name = long;
    } else {
      usageError(`unexpected argument "${arg}"${arg === "--" ? "" : ": this command takes options only (see the usage below)"}`);
    }
    const option = table[name];
    if (option.type === "boolean") {
      if (inline !== undefined) usageError(`--${name} takes no value`);
      values[name] = true;
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("-") && !/^-\d/.test(next))) usageError(`--${name} needs a value (--${name} ${option.value ?? "VALUE"})`);
      value = next;
      i++;
    }
    if (option.multiple) ((values[name] ??= []) as string[]).push(value);
    else values[name] = value;
  }
  return values as OptionValues<O> & { help?: boolean; version?: boolean };
}

/** The version in package.json ("unknown" if it cannot be read). */
export function packageVersion(): string {
  try {
    // build/hosts/desktop/args.js → the repository root.
    const text = readFileSync(new URL("../../../package.json", import.meta.url), "utf8");
    const version = (JSON.parse(text) as { version?: unknown }).version;
    return typeof version === "string" ? version : "unknown";
  } catch {
    return "unknown";
  }
}

export interface IntegerRange {
  readonly min?: number;
  readonly max?: number;
}

function rangeText(min: number, max: number): string {
  if (max >= Number.MAX_SAFE_INTEGER) return min <= Number.MIN_SAFE_INTEGER ? "an integer" : `an integer ≥ ${min}`;
  return `an integer from ${min} to ${max}`;
}

/**
 * The option's value as an integer in range (decimal digits only), `fallback` when not given.
 * @throws CommandLineError naming the option, the range and what was given.
 */
export function integer(name: string, text: string | undefined, range: IntegerRange = {}, fallback?: number): number | undefined {
  if (text === undefined) return fallback;
  const min = range.min ?? Number.MIN_SAFE_INTEGER;
  const max = range.max ?? Number.MAX_SAFE_INTEGER;
  const n = /^[+-]?\d{1,16}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) usageError(`--${name} must be ${rangeText(min, max)}, got "${text}"`);
  return n;
}

/** A TCP port: 1..65535, or 0..65535 where 0 asks for a free one. */
export function port(name: string, text: string | undefined, fallback: number, allowZero = false): number {
  return integer(name, text, { min: allowZero ? 0 : 1, max: 65535 }, fallback)!;
}

/** One of `choices`, `fallback` when not given. */
export function choice<T extends string>(name: string, text: string | undefined, choices: readonly T[], fallback: T): T {
  if (text === undefined) return fallback;
  if (!(choices as readonly string[]).includes(text)) usageError(`--${name} must be one of ${choices.join(", ")}, got "${text}"`);
  return text as T;
}

/** The option's value parsed as JSON. */
export function json(name: string, text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    usageError(`--${name} is not JSON (${(error as Error).message}): ${text.length > 80 ? text.slice(0, 79) + "…" : text}`);
  }
}

function oneLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s*\n\s*/g, "; ");
}

/**
 * Runs a command: parses the whole command line first (help, version and usage errors exit here),
 * then `main`, whose number is the exit code. Errors become one line on stderr and exit 1 (exit 2
 * for a CommandLineError, which also prints the usage), from `main` or from any later callback.
 */
export function runCommand<O extends OptionTable>(
  spec: CommandSpec<O>,
  main: (values: OptionValues<O>) => number | Promise<number>,
  argv: readonly string[] = process.argv.slice(2),
): void {
  const usage = usageOf(spec);
  const fatal: (error: unknown) => never = (error) => {
    if (error instanceof CommandLineError) {
      process.stderr.write(`${spec.name}: ${error.message}\n${usage}\n`);
      process.exit(2);
    }
    process.stderr.write(`${spec.name}: ${oneLine(error)}\n`);
    if (process.env.DPS_DEBUG && error instanceof Error && error.stack) process.stderr.write(error.stack + "\n");
    process.exit(1);
  };
  process.on("uncaughtException", fatal);
  process.on("unhandledRejection", fatal);
  let values: OptionValues<O> & { help?: boolean; version?: boolean };
  try {
    values = parseCommandLine(spec, argv);
  } catch (error) {
    fatal(error);
  }
  if (values.help) {
    process.stdout.write(usage + "\n");
    process.exit(0);
  }
  if (values.version) {
    process.stdout.write(`${spec.name} ${packageVersion()}\n`);
    process.exit(0);
  }
  delete values.help;
  delete values.version;
  let outcome: number | Promise<number>;
  try {
    outcome = main(values);
  } catch (error) {
    fatal(error);
  }
  Promise.resolve(outcome).then((code) => process.exit(code), fatal);
}
