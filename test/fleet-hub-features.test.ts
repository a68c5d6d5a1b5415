/**
 * A backend and a fleet of 1,000 desktop devices over TLS (bench/hub-features.ts): the desired
 * property of every device patched at once, then a method invoked on every device at once. Every
 * patch must be acknowledged in the twin and every call answered; the latencies are logged as
 * percentiles (figures belong in docs/PERFORMANCE.md, from `npm run bench:hub-features`).
 */
import test from "ava";
import { join } from "node:path";
import { formatBackendSummary, runBackendScenario } from "../bench/hub-features.js";
import { projectRoot } from "./support/xs.js";

test("fleet: 1,000 devices, the backend patches desired on all at once and invokes a method on each: all acknowledged, all answered", async (t) => {
  t.timeout(240_000);
  const s = await runBackendScenario(1000, { stateDir: join(projectRoot, ".cache", "emulator-tests") });
  t.log(formatBackendSummary(s));
  t.is(s.connected, 1000);
  t.is(s.acknowledged, 1000, "every desired patch acknowledged (value, ac 200, av) in the twin");
  t.is(s.answered, 1000, "every method call answered 200");
});
