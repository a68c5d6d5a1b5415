/**
 * The registration machine through every scripted transcript (test/transcripts/registration.ts):
 * the exact or ordered commands it answers with and its outcome. The XS tier runs the same list.
 */
import test from "ava";
import { transcripts } from "./transcripts/registration.js";
import { checkTranscript, runTranscript } from "./support/transcript.js";

for (const t of transcripts) {
  test(`registration transcript: ${t.name}`, (tt) => {
    const run = runTranscript(t);
    tt.deepEqual(checkTranscript(t, run), []);
  });
}

test("registration transcripts: every log is free of the key and of signatures", (t) => {
  for (const transcript of transcripts) {
    const text = runTranscript(transcript).log.join("\n");
    t.false(text.includes("cGFzc3dvcmQ="), transcript.name);
    t.false(/sig=|SharedAccessSignature/.test(text), transcript.name);
  }
});

test("registration transcripts: every command log equals the pinned one (test/transcripts/registration.golden.json)", async (t) => {
  const { currentLogs, readGolden } = await import("./support/golden.js");
  const golden = readGolden("registration");
  const current = currentLogs().registration;
  t.deepEqual(Object.keys(current).sort(), Object.keys(golden).sort(), "the set of transcripts");
  for (const name of Object.keys(current)) t.deepEqual(current[name], golden[name], name);
});
