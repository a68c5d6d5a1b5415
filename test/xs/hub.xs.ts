// The hub session transcripts on XS; logs emitted for comparison with Node.
import { emit, run, test } from "./harness.js";
import { checkHubTranscript, hubTranscripts, runHubTranscript } from "../transcripts/hub.js";

for (const t of hubTranscripts) {
  test(`hub transcript: ${t.name}`, () => {
    const log = runHubTranscript(t);
    emit(`hub:${t.name}`, log);
    const problems = checkHubTranscript(t, log);
    if (problems.length) throw new Error(problems.join("\n"));
  });
}

await run("hub");
