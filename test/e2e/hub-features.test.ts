/**
 * End to end over TLS: this project's desktop device with its hub features against the emulator's
 * hub side.
 */
import test from "ava";
import { DeviceTwin } from "../../modules/twin.js";
import { startWorld, TestDevice, type World } from "../support/e2e.js";

let world: World;
test.before(async () => {
  world = await startWorld();
});
test.after.always(async () => {
  await world?.stop();
});

test("e2e twin: the whole twin read on connecting, a reported patch acknowledged with its version", async (t) => {
  const registrationId = "e2e-twin";
  const key = world.enroll(registrationId);
  const whole: unknown[] = [];
  const twin = new DeviceTwin({ onDesired: (d, v, complete) => whole.push({ d, v, complete }) });
  const device = new TestDevice(world, { registrationId, symmetricKey: key }, undefined, [twin]);
  device.runtime.start();
  await device.waitFor((e) => e.source === "twin" && e.state === "synced", 20_000, "twin synced");
  twin.report({ firmware: "1.0.3", nested: { a: 1 } });
  const reported = await device.waitFor((e) => e.source === "twin" && e.state === "reported", 20_000, "reported");
  device.runtime.stop();
  t.like(whole[0], { complete: true });
  t.true(typeof (reported as { version?: number }).version === "number");
  t.is(twin.reportedVersion, (reported as { version?: number }).version);
});
