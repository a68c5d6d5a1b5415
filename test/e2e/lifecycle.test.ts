/**
 * End to end over TLS: provisioning, telemetry, the cache across reboots and power cuts, hub
 * refusals, and group enrollments.
 */
import test from "ava";
import { join } from "node:path";
import { NorFlashFile } from "../../hosts/desktop/nor-flash-file.js";
import { CredentialCache } from "../../modules/credential-cache.js";
import { nodeCrypto, secureRandom } from "../../hosts/desktop/platform.js";
import { bootUntilConnected, newKey, startWorld, TestDevice, type World } from "../support/e2e.js";

let world: World;
test.before(async () => {
  world = await startWorld();
});
test.after.always(async () => {
  await world?.stop();
});

test("e2e cold start provisions, caches, sends telemetry; a warm start skips DPS entirely", async (t) => {
  const registrationId = "e2e-warm";
  const key = world.enroll(registrationId);
  const flash = join(world.dir, `${registrationId}.flash`);
  const cold = new TestDevice(world, { registrationId, symmetricKey: key }, flash);
  cold.runtime.start();
  await cold.connected();
  const id = cold.runtime.send({ temperature: 21.5 });
  await cold.acknowledged(id);
  cold.runtime.stop();
  t.truthy(cold.events.find((e) => e.source === "cache" && e.state === "saved"));
  const received = world.emulator.telemetry(cold.runtime.assignment!.deviceId);
  t.is(received.length, 1);
  t.deepEqual(JSON.parse(received[0].payload), { temperature: 21.5 });

  const recordBefore = world.emulator.registration(registrationId);
  const warm = new TestDevice(world, { registrationId, symmetricKey: key }, flash);
  warm.runtime.start();
  await warm.connected();
  const id2 = warm.runtime.send("hello");
  await warm.acknowledged(id2);
  warm.runtime.stop();
  t.is(warm.dps().length, 0, "no DPS step at all");
  t.deepEqual(world.emulator.registration(registrationId), recordBefore, "DPS's record is untouched");
  t.is(warm.runtime.assignment?.source, "cache");
});

test("e2e messages sent before the hub connection are queued and delivered; a full queue is a clear error", async (t) => {
  const registrationId = "e2e-queue";
  const key = world.enroll(registrationId);
  const device = new TestDevice(world, { registrationId, symmetricKey: key, hub: { maxQueue: 3 } });
  device.runtime.start();
  const ids = [device.runtime.send({ n: 1 }), device.runtime.send({ n: 2 }), device.runtime.send({ n: 3 })];
  const error = t.throws(() => device.runtime.send({ n: 4 }), { code: "QUEUE_FULL" } as never);
  t.regex(error!.message, /maxQueue/);
  for (const id of ids) await device.acknowledged(id);
  device.runtime.stop();
  t.deepEqual(world.emulator.telemetry(registrationId).map((m) => JSON.parse(m.payload).n), [1, 2, 3]);
});

test("e2e the hub refuses the cached identity (CONNACK 5): cache invalidated, DPS again, a new record, connected", async (t) => {
  const registrationId = "e2e-hub-refused";
  const key = world.enroll(registrationId);
  const flash = join(world.dir, `${registrationId}.flash`);
  await bootUntilConnected(world, { registrationId, symmetricKey: key }, flash);

  world.emulator.addFault({ step: "hub-connect", registrationId, connack: 5, times: 1 });
  const secondBoot = Date.now();
  const second = new TestDevice(world, { registrationId, symmetricKey: key }, flash);
  second.runtime.start();
  await second.connected();
  const order = second.events.map((e) => (e.source === "cache" ? `cache:${e.state}` : e.source === "hub" ? `hub:${e.status.state}` : e.source === "dps" ? `dps:${e.status.state}` : "")).filter(Boolean);
  const i = order.indexOf("cache:loaded");
  const j = order.indexOf("hub:refused");
  const k = order.indexOf("cache:invalidated");
  const l = order.indexOf("dps:registering");
  t.true(i >= 0 && i < j && j < k && k < l, order.join(" "));
  // DPS assigned the hub that had refused the device: the record is written once it accepts it
  // (a PUBACK proves the session).
  const id = second.runtime.send("proof");
  await second.acknowledged(id);
  await second.waitFor((e) => e.source === "cache" && e.state === "saved" && second.events.indexOf(e) > second.events.findIndex((x) => x.source === "hub" && x.status.state === "connected"));
  second.runtime.stop();

  const cache = new CredentialCache({ flash: new NorFlashFile({ path: flash, sectorSize: 4096, sectorCount: 2 }), random: secureRandom, deviceKey: key, registrationId, crypto: nodeCrypto });
  const loaded = cache.load();
  t.true(loaded.assignment !== undefined && loaded.assignment.writtenAt >= secondBoot, "a new record was written after the re-registration");
  cache.close();
});

test("e2e the hub unavailable (CONNACK 3): keeps retrying the cached hub at least 5 s apart, never DPS", async (t) => {
  const registrationId = "e2e-hub-unavailable";
  const key = world.enroll(registrationId);
  const flash = join(world.dir, `${registrationId}.flash`);
  await bootUntilConnected(world, { registrationId, symmetricKey: key }, flash);

  world.emulator.addFault({ step: "hub-connect", registrationId, connack: 3, times: 1 });
  const second = new TestDevice(world, { registrationId, symmetricKey: key }, flash);
  second.runtime.start();
  await second.connected(30_000);
  second.runtime.stop();
  const retry = second.events.find((e) => e.source === "hub" && e.status.state === "retrying");
  t.true(retry?.source === "hub" && retry.status.connack === 3 && retry.status.delayMs! >= 5000, second.describe());
  t.is(second.dps().length, 0, "the cached hub is retried, DPS is not asked");
});

test("e2e a forced re-provision asks DPS while connected and comes back connected", async (t) => {
  const registrationId = "e2e-forced";
  const key = world.enroll(registrationId);
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  device.runtime.start();
  await device.connected();
  const before = device.dps().filter((s) => s.state === "registering").length;
  device.runtime.reprovision();
  await device.waitFor((e) => e.source === "assignment" && device.dps().filter((s) => s.state === "registering").length > before);
  await device.waitFor((e) => e.source === "runtime" && e.state === "connected" && device.events.filter((x) => x.source === "runtime" && x.state === "connected").length >= 2);
  device.runtime.stop();
  t.is(device.dps().filter((s) => s.state === "registering").length, before + 1);
});

test("e2e a power cut during the cache write loses nothing: the next boot finds the old or the new record, never garbage", async (t) => {
  const registrationId = "e2e-power-cut";
  const key = world.enroll(registrationId);
  const path = join(world.dir, `${registrationId}.flash`);
  await bootUntilConnected(world, { registrationId, symmetricKey: key }, path);

  // The re-provisioned assignment's write is cut after a few bytes, in the middle of the body, and
  // just before the commit mark. The enrollment moves between the two hubs, so that each
  // re-provisioning has a new assignment to write (the same one is not written again).
  const hubs = ["hub-1.azure-devices.localhost", "hub-2.azure-devices.localhost"];
  for (const [n, cutAfter] of [3, 100, 240].entries()) {
    world.emulator.addIndividualEnrollment({ registrationId, primaryKey: key, iotHubHostName: hubs[n % 2] });
    const flash = new NorFlashFile({ path, sectorSize: 4096, sectorCount: 2 });
    flash.cutPowerAfterBytes(cutAfter);
    const device = new TestDevice(world, { registrationId, symmetricKey: key }, flash);
    device.runtime.start();
    await device.connected();
    device.runtime.reprovision();
    await device.waitFor((e) => e.source === "cache" && e.state === "unavailable", 20_000, "the cut");
    device.runtime.stop();
    flash.close();

    const reboot = new TestDevice(world, { registrationId, symmetricKey: key }, path);
    reboot.runtime.start();
    await reboot.connected();
    reboot.runtime.stop();
    // The old record (whose hub no longer has the device, and refuses it) or the new one.
    t.truthy(reboot.events.find((e) => e.source === "cache" && e.state === "loaded"), `after a cut at byte ${cutAfter} a record still opens`);
  }
});

test("e2e group enrollment: devices authenticate with keys derived from the group key", async (t) => {
  const groupKey = newKey();
  world.emulator.addGroupEnrollment({ groupId: "e2e-group", primaryKey: groupKey });
  const devices = ["e2e-group-a", "e2e-group-b", "e2e-group-c"].map((registrationId) => new TestDevice(world, { registrationId, groupKey }));
  for (const d of devices) d.runtime.start();
  await Promise.all(devices.map((d) => d.connected()));
  for (const d of devices) d.runtime.stop();
  t.is(new Set(devices.map((d) => d.runtime.assignment!.deviceId)).size, 3);
});

test("e2e a device presenting the group key itself (not the derived key) is refused", async (t) => {
  const groupKey = newKey();
  world.emulator.addGroupEnrollment({ groupId: "e2e-group-raw", primaryKey: groupKey });
  const device = new TestDevice(world, { registrationId: "e2e-group-raw-1", symmetricKey: groupKey });
  device.runtime.start();
  const end = await device.settled();
  device.runtime.stop();
  t.true(end.source === "runtime" && end.state === "backing-off" && end.error?.code === "AUTHENTICATION_FAILED", device.describe());
});
