/**
 * The lifecycle machine: its transcripts (test/transcripts/lifecycle.ts, logs pinned), and the
 * fault matrix (test/support/fault-matrix.ts): every cause at every step, once, three times, for
 * six hours and for ever, each for seven simulated days, with the invariants checked on every cell.
 * The XS tier runs the same transcripts and a sample of the same cells.
 */
import test from "ava";
import { lifecycleTranscripts, runLifecycleTranscript } from "./transcripts/lifecycle.js";
import { matrixCells, recoveryBoundMs, registrationsPerDayBound, runCell } from "./support/fault-matrix.js";
import { nodeCrypto } from "../hosts/desktop/platform.js";

for (const t of lifecycleTranscripts) {
  test(`lifecycle transcript: ${t.name}`, (tt) => {
    tt.deepEqual(runLifecycleTranscript(t).problems, []);
  });
}

test("lifecycle transcripts: every command log equals the pinned one (test/transcripts/lifecycle.golden.json)", async (t) => {
  const { currentLogs, readGolden } = await import("./support/golden.js");
  const golden = readGolden("lifecycle");
  const current = currentLogs().lifecycle;
  t.deepEqual(Object.keys(current).sort(), Object.keys(golden).sort(), "the set of transcripts");
  for (const name of Object.keys(current)) t.deepEqual(current[name], golden[name], name);
});

test("fault matrix: every cause at every step, once, 3 times, 6 hours and for ever, 7 simulated days each: every invariant holds", (t) => {
  const cells = matrixCells();
  const bad: string[] = [];
  let highest = 0;
  let highestCell = "";
  let finals = 0;
  for (const cell of cells) {
    const r = runCell(cell, nodeCrypto);
    for (const p of r.problems) bad.push(`${cell.name}: ${p}`);
    for (let d = 0; d < r.result.registrationsPerDay.length; d++) {
      if (r.result.registrationsPerDay[d] > highest) {
        highest = r.result.registrationsPerDay[d];
        highestCell = `${cell.name}, day ${d}`;
      }
    }
    if (r.result.states.some((s) => s.state === "failed")) finals++;
  }
  const bound = registrationsPerDayBound();
  t.log(`${cells.length} cells × 7 days; the most DPS registrations in a day: ${highest} (${highestCell}); the bound: ${bound.firstDay} on the first day, ${bound.laterDays} on later days; ${finals} cells end in "failed", all for causes retrying cannot fix; recovery within ${Math.round(recoveryBoundMs() / 60_000)} min`);
  t.deepEqual(bad, []);
  t.true(cells.length >= 200, `${cells.length} cells`);
  t.true(finals > 0, "the terminal causes were reached");
});
