/** The hub session through its transcripts (the XS tier runs the same list). */
import test from "ava";
import { checkHubTranscript, hubTranscripts, runHubTranscript } from "./transcripts/hub.js";

for (const t of hubTranscripts) {
  test(`hub transcript: ${t.name}`, (tt) => {
    tt.deepEqual(checkHubTranscript(t, runHubTranscript(t)), []);
  });
}

test("hub transcripts: every command log equals the pinned one (test/transcripts/hub.golden.json)", async (t) => {
  const { currentLogs, readGolden } = await import("./support/golden.js");
  const golden = readGolden("hub");
  const current = currentLogs().hub;
  t.deepEqual(Object.keys(current).sort(), Object.keys(golden).sort(), "the set of transcripts");
  for (const name of Object.keys(current)) t.deepEqual(current[name], golden[name], name);
});
