// The hub feature transcripts on XS; logs emitted for comparison with Node.
import { emit, run, test } from "./harness.js";
import { checkFeatureTranscript, featureTranscripts, runFeatureTranscript } from "../transcripts/features.js";
import { fuzzFeatures } from "../support/feature-fuzz.js";

for (const t of featureTranscripts) {
  test(`feature transcript: ${t.name}`, async () => {
    const log = await runFeatureTranscript(t);
    emit(`features:${t.name}`, log);
    const problems = checkFeatureTranscript(t, log);
    if (problems.length) throw new Error(problems.join("\n"));
  });
}

test("feature fuzz sample: nothing escapes the session on XS", () => {
  const s = fuzzFeatures(200, 12);
  emit("feature-fuzz", s);
  if (s.failures.length) throw new Error(s.failures.join("\n"));
});

await run("features");
