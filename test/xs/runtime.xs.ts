// The whole DeviceRuntime on XS, in a virtual world: cold start through DPS, the cache sealed with
// tweetnacl on MemoryFlash, a warm start that skips DPS, and a hub refusal that re-provisions.
import { deepEqual, emit, equal, ok, run, test } from "./harness.js";
import { bootOnce, newFlash } from "../support/virtual-world.js";

test("runtime on XS: cold start provisions, caches and sends; warm start goes straight to the hub", () => {
  const flash = newFlash();
  const cold = bootOnce(flash);
  emit("runtime:cold", cold.events);
  equal(cold.registers, 1, "registers on the cold start");
  ok(cold.events.indexOf("cache saved") >= 0, "cache saved");
  deepEqual(cold.telemetry, ['{"n":0}'], "telemetry");
  const warm = bootOnce(flash);
  emit("runtime:warm", warm.events);
  equal(warm.registers, 0, "registers on the warm start");
  ok(warm.events.indexOf("assignment cache hub-1.azure-devices.net") >= 0, "assignment from cache");
});

test("runtime on XS: a hub CONNACK 5 on a warm start invalidates the cache and provisions again", () => {
  const flash = newFlash();
  bootOnce(flash);
  const refused = bootOnce(flash, { hubConnacks: [5, 0] });
  emit("runtime:refused", refused.events);
  equal(refused.registers, 1, "registers after the refusal");
  // DPS assigns the hub that refused: the record is written once that hub has accepted the device.
  const order = ["cache loaded", "hub refused 5", "cache invalidated", "dps registering", "runtime connected", "cache saved"].map((e) => refused.events.indexOf(e));
  ok(order.every((v, i) => v >= 0 && (i === 0 || v > order[i - 1])), `order ${order.join(",")} in ${refused.events.join(" | ")}`);
});

test("runtime on XS: a 429 on the register is retried, then assigned", () => {
  const result = bootOnce(newFlash(), { registerAnswers: [429, 202] });
  equal(result.registers, 2);
  ok(result.events.indexOf("dps retrying 429") >= 0, "retrying 429");
  ok(result.events.indexOf("runtime connected") >= 0, "connected");
});

await run("runtime");
