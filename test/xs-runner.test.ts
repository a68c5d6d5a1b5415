/**
 * The XS runner itself: a module that fails after its result line, in any of the ways xsnap keeps
 * quiet about (its exit code is 0 for all of them), must fail the run. A runner that can miss a
 * failure would make every XS-tier check meaningless.
 */
import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runXs } from "./support/xs.js";

const RESULT = 'print("XS-TIER-RESULT " + JSON.stringify({ suite: "probe", passed: 1, failed: 0 }));';
const cases: [string, string, RegExp][] = [
  ["a throw after the result line", `${RESULT}\nthrow new Error("after the result");`, /XS-TIER-CRASH/],
  ["a rejected promise nobody handles", `${RESULT}\nPromise.reject(new Error("nobody listens"));`, /unhandled rejection|Unhandled exception/],
  ["an exception in a promise job", `${RESULT}\nPromise.resolve().then(() => { throw new TypeError("in a job"); });`, /Unhandled exception|unhandled rejection/],
  ["a throw after an await", `${RESULT}\nawait 0;\nthrow new Error("later");`, /XS-TIER-CRASH/],
  ["no result line at all", `print("nothing");`, /without a result line/],
];

const dir = mkdtempSync(join(tmpdir(), "xs-runner-test-"));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

for (const [name, source, message] of cases) {
  test(`XS runner: ${name} fails the run`, async (t) => {
    const file = join(dir, `${name.replace(/\W+/g, "-")}.js`);
    writeFileSync(file, source);
    await t.throwsAsync(runXs(file, 30_000), { message });
  });
}

test("XS runner: a module that passes and finishes is green", async (t) => {
  const file = join(dir, "good.js");
  writeFileSync(file, `${RESULT}\nawait 0;\nprint("after, quietly");`);
  const run = await runXs(file, 30_000);
  t.is(run.passed, 1);
});
