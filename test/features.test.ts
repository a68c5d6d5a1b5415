/**
 * The hub features (cloud-to-device messages, direct methods, the twin) inside the hub session:
 * their transcripts (test/transcripts/features.ts, logs pinned in features.golden.json). The XS
 * tier runs the same transcripts and compares the logs.
 */
import test from "ava";
import { checkFeatureTranscript, featureTranscripts, runFeatureTranscript } from "./transcripts/features.js";

for (const t of featureTranscripts) {
  test(`feature transcript: ${t.name}`, async (tt) => {
    tt.deepEqual(checkFeatureTranscript(t, await runFeatureTranscript(t)), []);
  });
}

test("feature transcripts: every command log equals the pinned one (test/transcripts/features.golden.json)", async (t) => {
  const { currentFeatureLogs, readGolden } = await import("./support/golden.js");
  const golden = readGolden("features");
  const current = await currentFeatureLogs();
  t.deepEqual(Object.keys(current).sort(), Object.keys(golden).sort(), "the set of transcripts");
  for (const name of Object.keys(current)) t.deepEqual(current[name], golden[name], name);
});

test("feature fuzz: 2,000 sequences of hostile hub messages, drops, timers and application calls; nothing escapes the session", async (t) => {
  const { fuzzFeatures } = await import("./support/feature-fuzz.js");
  const s = fuzzFeatures(2000, 12);
  t.log(`${s.sequences} sequences, ${s.events} events, ${s.answers} method answers published`);
  t.deepEqual(s.failures, []);
  t.true(s.answers > 100, "method calls were answered");
});
