/** The DeviceRuntime in the virtual world on Node; the XS tier runs the same scenarios and both event logs must match. */
import test from "ava";
import { bootOnce, newFlash } from "./support/virtual-world.js";
import { DeviceRuntime } from "../modules/runtime.js";
import { portableCrypto } from "../modules/sha256.js";
import { ScriptedCloud, VirtualClock, virtualConfig } from "./support/virtual-world.js";

test("runtime: cold then warm start in the virtual world", (t) => {
  const flash = newFlash();
  const cold = bootOnce(flash);
  t.is(cold.registers, 1);
  const warm = bootOnce(flash);
  t.is(warm.registers, 0);
  t.true(warm.events.includes("assignment cache hub-1.azure-devices.net"));
});

test("runtime: configuration mistakes are UsageErrors before any I/O", (t) => {
  const clock = new VirtualClock();
  const ports = { mqtt: new ScriptedCloud(clock), timers: clock, clock: () => clock.now, random: () => 0.5, secureRandom: (b: Uint8Array) => b.fill(1), crypto: portableCrypto };
  t.throws(() => new DeviceRuntime({ ...virtualConfig, symmetricKey: undefined }, ports), { code: "INVALID_ARGUMENT" } as never);
  t.throws(() => new DeviceRuntime({ ...virtualConfig, groupKey: "cGFzc3dvcmQ=" }, ports), { code: "INVALID_ARGUMENT" } as never);
  t.throws(() => new DeviceRuntime({ ...virtualConfig, idScope: "bad scope" }, ports), { code: "INVALID_ARGUMENT" } as never);
  t.throws(() => new DeviceRuntime({ ...virtualConfig, symmetricKey: "%%%" }, ports), { code: "MALFORMED_BASE64" } as never);
  t.throws(() => new DeviceRuntime({ ...virtualConfig, hub: { maxQueue: 0 } }, ports), { code: "INVALID_ARGUMENT" } as never);
  t.throws(() => new DeviceRuntime(virtualConfig, { ...ports, mqtt: undefined as never }), { code: "INVALID_ARGUMENT" } as never);
  t.throws(() => new DeviceRuntime(virtualConfig, { ...ports, crypto: undefined as never }), { code: "INVALID_ARGUMENT" } as never);
  t.is(clock.run(), 0, "nothing was scheduled");
});

test("runtime: a clock that was never set sends no dead token; the device checks again in the long tail (NTP may set it)", (t) => {
  const clock = new VirtualClock();
  const cloud = new ScriptedCloud(clock);
  const events: string[] = [];
  const runtime = new DeviceRuntime(
    virtualConfig,
    { mqtt: cloud, timers: clock, clock: () => 0, random: () => 0.5, secureRandom: (b) => b.fill(1), crypto: portableCrypto },
    (e) => e.source === "runtime" && events.push(`${e.state}${e.error ? ` ${e.error.code}` : ""}`),
  );
  runtime.start();
  clock.run(100, clock.now + 3 * 3_600_000);
  runtime.stop();
  t.deepEqual(cloud.log, [], "nothing was sent");
  t.deepEqual(events.slice(0, 4), ["provisioning", "backing-off CLOCK_NOT_SET", "provisioning", "backing-off CLOCK_NOT_SET"]);
  t.true(events.length < 20, `a few checks in 3 hours, not a loop: ${events.length}`);
});

test("runtime: a listener that throws does not break the device", (t) => {
  const clock = new VirtualClock();
  const cloud = new ScriptedCloud(clock);
  const runtime = new DeviceRuntime(virtualConfig, { mqtt: cloud, timers: clock, clock: () => clock.now, random: () => 0.5, secureRandom: (b) => b.fill(1), crypto: portableCrypto }, () => {
    throw new Error("listener bug");
  });
  runtime.start();
  clock.run(200, clock.now + 10_000);
  t.is(runtime.state, "connected");
  runtime.stop();
  t.is(runtime.state, "stopped");
  t.throws(() => runtime.send("x"), { code: "STOPPED" } as never);
});
