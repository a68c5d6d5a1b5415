/**
 * The XS tier: every compiled entry in build/test/xs/ runs on the real XS engine. Each suite's
 * cases must all pass, and the title of each check says how many cases ran on XS.
 */
import test from "ava";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { projectRoot, runXs, type XsRun } from "./support/xs.js";

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

test(`XS tier: ${total} cases ran on XS in ${runs.length} suites`, (t) => {
  t.true(total > 0);
  t.log(`${total} cases ran on XS`);
});

export { runs as xsRuns };
