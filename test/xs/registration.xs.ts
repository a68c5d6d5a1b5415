// Every registration transcript on XS: each must pass its own checks, and each command log is
// emitted so that test/xs-tier.test.ts can compare it line by line with the log on Node.
import { emit, run, test } from "./harness.js";
import { transcripts } from "../transcripts/registration.js";
import { checkTranscript, runTranscript } from "../support/transcript.js";

for (const t of transcripts) {
  test(`registration transcript: ${t.name}`, () => {
    const result = runTranscript(t);
    emit(`registration:${t.name}`, result.log);
    const problems = checkTranscript(t, result);
    if (problems.length > 0) throw new Error(problems.join("\n"));
  });
}

await run("registration");
