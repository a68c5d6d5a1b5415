// The lifecycle on XS: every lifecycle transcript (logs emitted for comparison with Node), and a
// sample of the fault matrix for seven simulated days each (digests of the logs emitted).
import { emit, run, test } from "./harness.js";
import { lifecycleTranscripts, runLifecycleTranscript } from "../transcripts/lifecycle.js";
import { XS_MATRIX_SAMPLE, matrixCells, runCell } from "../support/fault-matrix.js";
import { portableCrypto } from "../../modules/sha256.js";

for (const t of lifecycleTranscripts) {
  test(`lifecycle transcript: ${t.name}`, () => {
    const result = runLifecycleTranscript(t);
    emit(`lifecycle:${t.name}`, result.log);
    if (result.problems.length > 0) throw new Error(result.problems.join("\n"));
  });
}

const cells = matrixCells();
for (const name of XS_MATRIX_SAMPLE) {
  test(`fault matrix cell on XS: ${name}`, () => {
    const cell = cells.find((c) => c.name === name);
    if (!cell) throw new Error(`no cell "${name}"`);
    const r = runCell(cell, portableCrypto, 7, true);
    emit(`matrix:${name}`, { digest: r.result.digest, registrationsPerDay: r.result.registrationsPerDay, lines: r.result.log.length });
    if (r.problems.length > 0) throw new Error(r.problems.join("\n"));
  });
}

await run("lifecycle");
