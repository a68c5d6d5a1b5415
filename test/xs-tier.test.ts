/**
 * The XS tier: every compiled entry in build/test/xs/ runs on the real XS engine. Each suite's
 * cases must all pass, and the title of each check says how many cases ran on XS.
 */
import test from "ava";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { projectRoot, runXs, type XsRun } from "./support/xs.js";
import { transcripts } from "./transcripts/registration.js";
import { runTranscript } from "./support/transcript.js";
import { hubTranscripts, runHubTranscript } from "./transcripts/hub.js";
import { bootOnce, newFlash } from "./support/virtual-world.js";
import { lifecycleTranscripts, runLifecycleTranscript } from "./transcripts/lifecycle.js";
import { featureTranscripts, runFeatureTranscript } from "./transcripts/features.js";
import { XS_MATRIX_SAMPLE, matrixCells, runCell } from "./support/fault-matrix.js";
import { portableCrypto } from "../modules/sha256.js";
import { fuzzDriver, fuzzHubSequences, fuzzLifecycleSequences, fuzzRegistrationSequences } from "./support/machine-fuzz.js";
import { fuzzModdable, fuzzSummary, XS_FUZZ_SAMPLE } from "./support/mqtt-fuzz.js";

const dir = join(projectRoot, "build", "test", "xs");
const entries = readdirSync(dir).filter((name) => name.endsWith(".xs.js")).sort();

const runs = await Promise.all(entries.map(async (name) => [name, await runXs(join(dir, name))] as [string, XsRun]));
const total = runs.reduce((sum, [, run]) => sum + run.passed + run.failed, 0);

for (const [name, run] of runs) {
  test(`XS tier ${name}: ${run.passed + run.failed} cases ran on XS`, (t) => {
    t.deepEqual(run.failures, [], `failures on XS in ${name}`);
    t.is(run.failed, 0);
    t.true(run.passed > 0, "an XS suite must run at least one case");
  });
}

// The same transcripts must give identical command logs on Node and on XS.
const xsLogs = new Map<string, unknown>();
for (const [, run] of runs) for (const [key, value] of run.emitted) if (key.startsWith("registration:")) xsLogs.set(key.slice(13), value);

test(`XS tier: ${transcripts.length} registration transcripts give identical command logs on Node and XS`, (t) => {
  t.is(xsLogs.size, transcripts.length, "every transcript ran on XS");
  for (const transcript of transcripts) {
    t.deepEqual(xsLogs.get(transcript.name), runTranscript(transcript).log, transcript.name);
  }
});

test(`XS tier: ${hubTranscripts.length} hub transcripts give identical command logs on Node and XS`, (t) => {
  const logs = new Map<string, unknown>();
  for (const [, run] of runs) for (const [key, value] of run.emitted) if (key.startsWith("hub:")) logs.set(key.slice(4), value);
  t.is(logs.size, hubTranscripts.length);
  for (const transcript of hubTranscripts) t.deepEqual(logs.get(transcript.name), runHubTranscript(transcript), transcript.name);
});

test(`XS tier: ${featureTranscripts.length} hub feature transcripts give identical command logs on Node and XS`, async (t) => {
  const logs = new Map<string, unknown>();
  for (const [, run] of runs) for (const [key, value] of run.emitted) if (key.startsWith("features:")) logs.set(key.slice(9), value);
  t.is(logs.size, featureTranscripts.length, "every feature transcript ran on XS");
  for (const transcript of featureTranscripts) t.deepEqual(logs.get(transcript.name), await runFeatureTranscript(transcript), transcript.name);
});

test("XS tier: the certificate request of a fixed key has the same bytes on Node and XS", async (t) => {
  const { certificateRequest } = await import("../modules/csr.js");
  const { fixedKey, hex } = await import("./support/csr-cases.js");
  let xs: unknown;
  for (const [, run] of runs) if (run.emitted.has("csr")) xs = run.emitted.get("csr");
  t.is(xs, hex(certificateRequest("sensor-01", fixedKey)));
});

test("XS tier: the hub feature fuzz sample gives the same summary on Node and XS", async (t) => {
  const { fuzzFeatures } = await import("./support/feature-fuzz.js");
  let xs: unknown;
  for (const [, run] of runs) if (run.emitted.has("feature-fuzz")) xs = run.emitted.get("feature-fuzz");
  t.deepEqual(xs, JSON.parse(JSON.stringify(fuzzFeatures(200, 12))));
});

test(`XS tier: ${lifecycleTranscripts.length} lifecycle transcripts give identical command logs on Node and XS`, (t) => {
  const logs = new Map<string, unknown>();
  for (const [, run] of runs) for (const [key, value] of run.emitted) if (key.startsWith("lifecycle:")) logs.set(key.slice(10), value);
  t.is(logs.size, lifecycleTranscripts.length, "every lifecycle transcript ran on XS");
  for (const transcript of lifecycleTranscripts) t.deepEqual(logs.get(transcript.name), runLifecycleTranscript(transcript).log, transcript.name);
});

test(`XS tier: ${XS_MATRIX_SAMPLE.length} fault-matrix cells, 7 simulated days each, give the same logs on Node and XS`, (t) => {
  const emitted = new Map<string, unknown>();
  for (const [, run] of runs) for (const [key, value] of run.emitted) if (key.startsWith("matrix:")) emitted.set(key.slice(7), value);
  t.is(emitted.size, XS_MATRIX_SAMPLE.length, "every sampled cell ran on XS");
  const cells = matrixCells();
  for (const name of XS_MATRIX_SAMPLE) {
    const r = runCell(cells.find((c) => c.name === name)!, portableCrypto, 7, true).result;
    t.deepEqual(emitted.get(name), { digest: r.digest, registrationsPerDay: r.registrationsPerDay, lines: r.log.length }, name);
  }
});

test("XS tier: the runtime's event logs in the virtual world are the same on Node and XS", (t) => {
  const xs = new Map<string, unknown>();
  for (const [, run] of runs) for (const [key, value] of run.emitted) if (key.startsWith("runtime:")) xs.set(key, value);
  const flash = newFlash();
  const cold = bootOnce(flash).events;
  const warm = bootOnce(flash).events;
  const refusedFlash = newFlash();
  bootOnce(refusedFlash);
  const refused = bootOnce(refusedFlash, { hubConnacks: [5, 0] }).events;
  t.deepEqual(xs.get("runtime:cold"), cold);
  t.deepEqual(xs.get("runtime:warm"), warm);
  t.deepEqual(xs.get("runtime:refused"), refused);
});

test("XS tier: the fuzz samples (machines, driver, Moddable adapter) give the same summaries on Node and XS", (t) => {
  const emitted = new Map<string, unknown>();
  for (const [, run] of runs) for (const [key, value] of run.emitted) if (key.startsWith("fuzz:")) emitted.set(key.slice(5), value);
  const s = XS_FUZZ_SAMPLE;
  const node: Record<string, unknown> = {
    registration: fuzzSummary(fuzzRegistrationSequences(s.registration, s.seed)),
    hub: fuzzSummary(fuzzHubSequences(s.hub, s.seed)),
    lifecycle: fuzzSummary(fuzzLifecycleSequences(s.lifecycle, s.seed)),
    driver: fuzzSummary(fuzzDriver(s.driver, s.seed)),
    moddable: fuzzSummary(fuzzModdable(s.moddable, s.seed)),
  };
  t.is(emitted.size, Object.keys(node).length, "every fuzz sample ran on XS");
  for (const key of Object.keys(node)) t.deepEqual(emitted.get(key), node[key], key);
});

test(`XS tier: ${total} cases ran on XS in ${runs.length} suites`, (t) => {
  t.true(total > 0);
  t.log(`${total} cases ran on XS`);
});

