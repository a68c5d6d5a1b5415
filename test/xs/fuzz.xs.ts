// The fuzz harnesses on XS: random event sequences against the three machines and the runtime
// driver (test/support/machine-fuzz.ts), and the Moddable host's MQTT adapter on stand-in sockets
// fed random, mutated and split frames (test/support/mqtt-fuzz.ts): the stand-ins invoke the
// adapter's onReadable, onWritable and onError, and any exception escaping one is a failure. The
// summaries are emitted: test/xs-tier.test.ts checks that Node gets the same ones.
import { emit, run, test } from "./harness.js";
import { formatFailure, fuzzDriver, fuzzHubSequences, fuzzLifecycleSequences, fuzzRegistrationSequences, type SequenceReport } from "../support/machine-fuzz.js";
import { fuzzModdable, XS_FUZZ_SAMPLE, fuzzSummary } from "../support/mqtt-fuzz.js";

function check(key: string, report: SequenceReport): void {
  emit(`fuzz:${key}`, fuzzSummary(report));
  if (report.failures > 0) throw new Error(`${report.failures} failing sequence(s):\n${report.failureList.map(formatFailure).join("\n\n")}`);
  if (report.steps < report.runs) throw new Error(`only ${report.steps} steps in ${report.runs} sequences`);
}

const s = XS_FUZZ_SAMPLE;
test(`registration machine: ${s.registration} random sequences on XS`, () => check("registration", fuzzRegistrationSequences(s.registration, s.seed)));
test(`hub session: ${s.hub} random sequences on XS`, () => check("hub", fuzzHubSequences(s.hub, s.seed)));
test(`lifecycle machine: ${s.lifecycle} random sequences on XS`, () => check("lifecycle", fuzzLifecycleSequences(s.lifecycle, s.seed)));
test(`runtime driver on fuzzing ports: ${s.driver} sequences on XS`, () => check("driver", fuzzDriver(s.driver, s.seed)));
test(`Moddable MQTT adapter + runtime on stand-in sockets, random and mutated frames: ${s.moddable} sequences on XS`, () =>
  check("moddable", fuzzModdable(s.moddable, s.seed)));

await run("fuzz");
