/**
 * Fuzzes what comes from the network, end to end:
 *
 *   - mutated DPS answers through the parsers and the registration machine (test/support/fuzz.ts):
 *     a million of each by default (`--count`);
 *   - random event sequences against the registration machine, the hub session and the lifecycle
 *     machine, the DeviceRuntime driver on fuzzing ports, and the Moddable host's MQTT adapter on
 *     stand-in sockets fed random and mutated frames (test/support/machine-fuzz.ts,
 *     test/support/mqtt-fuzz.ts), every invariant checked after every step: 50,000 of each by
 *     default (`--sequences`).
 *
 *   npm run fuzz [-- --count N --sequences M --seed S]
 *
 * Prints the runs, the typed errors by code and the outcomes, and every failure (the first few,
 * each with the run index that rebuilds it and, for sequences, the last steps); exits 1 if
 * anything failed, 2 on a bad argument.
 */
import { fuzzParsers, fuzzRegistration, type FuzzReport } from "../test/support/fuzz.js";
import { formatFailure, fuzzDriver, fuzzHubSequences, fuzzLifecycleSequences, fuzzRegistrationSequences, type SequenceReport } from "../test/support/machine-fuzz.js";
import { fuzzModdable } from "../test/support/mqtt-fuzz.js";

const USAGE =
  "usage: npm run fuzz [-- --count N --sequences M --seed S]   (N: mutated answers per target, 1 to 100000000; M: random sequences per machine, driver and adapter, 0 to 100000000; S: integer seed, 0 to 4294967295)";

function parseArgs(argv: readonly string[]): { count: number; sequences: number; seed: number } {
  let count = 1_000_000;
  let sequences = 50_000;
  let seed = 1;
  for (let i = 0; i < argv.length; i += 2) {
    const value = argv[i + 1];
    const n = value !== undefined && /^[0-9]{1,10}$/.test(value) ? Number(value) : NaN;
    if (argv[i] === "--count" && n >= 1 && n <= 100_000_000) count = n;
    else if (argv[i] === "--sequences" && n >= 0 && n <= 100_000_000) sequences = n;
    else if (argv[i] === "--seed" && n <= 0xffffffff) seed = n;
    else {
      console.error(`fuzz: bad argument "${argv[i]}${value === undefined ? "" : " " + value}"\n${USAGE}`);
      process.exit(2);
    }
  }
  return { count, sequences, seed };
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

function printSequences(report: SequenceReport, ms: number, rebuild: string): void {
  console.log(`${report.target}: ${report.runs} random sequences, ${report.steps} events, in ${(ms / 1000).toFixed(1)} s (${Math.round((report.runs / ms) * 1000)}/s)`);
  console.log("  outcomes:");
  for (const [name, n] of Object.entries(report.outcomes)) console.log(`    ${name.padEnd(40)} ${n}`);
  console.log("  documented UsageErrors of app calls:");
  for (const [name, n] of Object.entries(report.documented)) console.log(`    ${name.padEnd(40)} ${n}`);
  console.log(`  failures: ${report.failures}${report.failures ? ` (rebuild one with ${rebuild})` : ""}`);
  for (const f of report.failureList) console.log(`    ${formatFailure(f)}`);
}

const { count, sequences, seed } = parseArgs(process.argv.slice(2));
Error.stackTraceLimit = 0; // a million rejected answers each build an error: skip the stack traces
console.log(`fuzz: ${count} mutated DPS answers per target, ${sequences} random sequences per machine, driver and adapter, seed ${seed}`);
const began = performance.now();
let start = performance.now();
const parsers = fuzzParsers(count, seed);
print("parsers (readResponse, parseResponse, parseLookupResponse)", parsers, performance.now() - start);
start = performance.now();
const machine = fuzzRegistration(count, seed);
print("registration machine", machine, performance.now() - start);
let failures = parsers.untyped + machine.untyped;

if (sequences > 0) {
  const targets: [string, (n: number, s: number) => SequenceReport][] = [
    ["registrationSequence(seed, index) in test/support/machine-fuzz.ts", fuzzRegistrationSequences],
    ["hubSequence(seed, index)", fuzzHubSequences],
    ["lifecycleSequence(seed, index)", fuzzLifecycleSequences],
    ["driverSequence(seed, index)", fuzzDriver],
    ["moddableSequence(seed, index) in test/support/mqtt-fuzz.ts", fuzzModdable],
  ];
  for (const [rebuild, run] of targets) {
    start = performance.now();
    const report = run(sequences, seed);
    printSequences(report, performance.now() - start, rebuild);
    failures += report.failures;
  }
}

console.log(`fuzz: ${failures === 0 ? "no failures" : `${failures} failures`} in ${((performance.now() - began) / 1000).toFixed(0)} s`);
process.exit(failures === 0 ? 0 : 1);
