/**
 * Fuzzes the DPS parsers and the registration machine with mutated DPS answers
 * (test/support/fuzz.ts): a million of each by default.
 *
 *   npm run fuzz [-- --count N --seed S]
 *
 * Prints the runs, the typed errors by code, the untyped ones (the first few, each with the run
 * index that rebuilds its input) and the time taken; exits 1 if anything untyped came out, 2 on a
 * bad argument.
 */
import { fuzzParsers, fuzzRegistration, type FuzzReport } from "../test/support/fuzz.js";

const USAGE = "usage: npm run fuzz [-- --count N --seed S]   (N: runs per target, 1 to 100000000; S: integer seed, 0 to 4294967295)";

function parseArgs(argv: readonly string[]): { count: number; seed: number } {
  let count = 1_000_000;
  let seed = 1;
  for (let i = 0; i < argv.length; i += 2) {
    const value = argv[i + 1];
    const n = value !== undefined && /^[0-9]{1,10}$/.test(value) ? Number(value) : NaN;
    if (argv[i] === "--count" && n >= 1 && n <= 100_000_000) count = n;
    else if (argv[i] === "--seed" && n <= 0xffffffff) seed = n;
    else {
      console.error(`fuzz: bad argument "${argv[i]}${value === undefined ? "" : " " + value}"\n${USAGE}`);
      process.exit(2);
    }
  }
  return { count, seed };
}

function print(target: string, report: FuzzReport, ms: number): void {
  console.log(`${target}: ${report.runs} runs in ${(ms / 1000).toFixed(1)} s (${Math.round((report.runs / ms) * 1000)}/s)`);
  console.log(`  typed errors: ${report.typedErrors}`);
  for (const [code, n] of Object.entries(report.byCode)) console.log(`    ${code.padEnd(16)} ${n}`);
  console.log("  outcomes:");
  for (const [name, n] of Object.entries(report.outcomes)) console.log(`    ${name.padEnd(40)} ${n}`);
  console.log(`  untyped errors: ${report.untyped}`);
  for (const f of report.untypedErrors) console.log(`    #${f.index} ${f.where}: ${f.error}\n      ${f.input}`);
}

const { count, seed } = parseArgs(process.argv.slice(2));
Error.stackTraceLimit = 0; // a million rejected answers each build an error: skip the stack traces
console.log(`fuzz: ${count} mutated DPS answers per target, seed ${seed}`);
let start = performance.now();
const parsers = fuzzParsers(count, seed);
print("parsers (readResponse, parseResponse, parseLookupResponse)", parsers, performance.now() - start);
start = performance.now();
const machine = fuzzRegistration(count, seed);
print("registration machine", machine, performance.now() - start);
const untyped = parsers.untyped + machine.untyped;
console.log(untyped === 0 ? "fuzz: no untyped errors" : `fuzz: ${untyped} untyped errors`);
process.exit(untyped === 0 ? 0 : 1);
