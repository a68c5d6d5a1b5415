/** The hub session through its transcripts (the XS tier runs the same list). */
import test from "ava";
import { checkHubTranscript, hubTranscripts, runHubTranscript } from "./transcripts/hub.js";

for (const t of hubTranscripts) {
  test(`hub transcript: ${t.name}`, (tt) => {
    tt.deepEqual(checkHubTranscript(t, runHubTranscript(t)), []);
  });
}
