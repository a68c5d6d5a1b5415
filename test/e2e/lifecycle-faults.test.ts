/**
 * End to end over TLS: what the lifecycle does when a fault persists. A hub that keeps refusing
 * the device, a hub outage longer than the retry window (with DPS up, and with DPS down too), a
 * message the hub closes the link on, and a device id with ':'. Each test has an emulator of its
 * own, so that the emulator's counters are that test's alone; the retry policy is the default
 * table with short waits (the hub's 5 s floor stays).
 */
import test, { type ExecutionContext } from "ava";
import { join } from "node:path";
import { DESKTOP_FLASH_GEOMETRY } from "../../hosts/desktop/device.js";
import { NorFlashFile } from "../../hosts/desktop/nor-flash-file.js";
import type { RuntimeConfig, RuntimeEvent } from "../../modules/runtime.js";
import {
  backoffs,
  bootUntilConnected,
  countEvents,
  fastRetries,
  newKey,
  readCachedRecord,
  registrationsSent,
  startWorld,
  TestDevice,
  type World,
} from "../support/e2e.js";

const HUB = "hub-1.azure-devices.localhost";

/** Waits of 1 to 3 s in the long tail instead of 10 min to an hour. */
const longTail = { initialMs: 1000, maxMs: 2000 };

/** Hub reconnects exactly 5 s apart (Azure's floor); the 4 s window ends at the second failure. */
const outagePolicy: RuntimeConfig["retryPolicy"] = { ...fastRetries, longTail, hub: { windowMs: 4000, multiplier: 1, maxMs: 5000, jitter: 0 } };

test.before(async () => {
  // The emulator's TLS identity is created once, before the tests start their emulators at once.
  const world = await startWorld();
  await world.stop();
});

async function worldFor(t: ExecutionContext): Promise<World> {
  const world = await startWorld();
  t.teardown(() => world.stop());
  return world;
}

/** An individual enrollment pinned to HUB, so that every registration assigns the same hub. */
function enrollOnHub(world: World, registrationId: string): string {
  const key = newKey();
  world.emulator.addIndividualEnrollment({ registrationId, primaryKey: key, iotHubHostName: HUB });
  return key;
}

const isCache = (state: string) => (e: RuntimeEvent) => e.source === "cache" && e.state === state;
const isHub = (state: string) => (e: RuntimeEvent) => e.source === "hub" && e.status.state === state;

test("e2e a hub that keeps refusing the device (CONNACK 5): one invalidation, one registration at once, then one per long-tail wait; the record is written again only once the hub accepts", async (t) => {
  const world = await worldFor(t);
  const registrationId = "e2e-refused-always";
  const key = enrollOnHub(world, registrationId);
  const path = join(world.dir, `${registrationId}.flash`);
  await bootUntilConnected(world, { registrationId, symmetricKey: key }, path);
  const original = readCachedRecord(path, key, registrationId);
  t.is(original.assignment?.assignedHub, HUB);
  t.is(world.emulator.counters().registrations, 1, "the first boot registered once");

  const fault = world.emulator.addFault({ step: "hub-connect", registrationId, connack: 5 });
  const flash = new NorFlashFile({ path, ...DESKTOP_FLASH_GEOMETRY });
  t.teardown(() => flash.close());
  const device = new TestDevice(world, { registrationId, symmetricKey: key, retryPolicy: { ...fastRetries, longTail } }, flash);
  t.teardown(() => device.runtime.stop());
  device.runtime.start();

  const first = await device.waitFor((e) => e.source === "runtime" && e.state === "backing-off", 20_000, "the first long-tail wait");
  t.true(first.source === "runtime" && first.error?.code === "HUB_REFUSED", device.describe());
  t.true(first.source === "runtime" && first.retryInMs! >= 1000 && first.retryInMs! <= 1500, `retryInMs ${(first as { retryInMs?: number }).retryInMs}`);
  // Refused from the cache: invalidated, registered again at once (DPS assigned the same hub), refused again.
  t.is(registrationsSent(device), 1, "one registration at once after the first refusal");
  t.is(countEvents(device, isCache("invalidated")), 1);
  t.is(readCachedRecord(path, key, registrationId).assignment, undefined, "the refused record is gone from flash");
  const flashAfterInvalidation = { ...flash.stats };

  // Two long-tail waits later: one registration per wait, and the flash is not touched.
  await device.waitFor(() => backoffs(device).length >= 3, 15_000, "three long-tail waits");
  const waits = backoffs(device);
  t.true(waits.every((e) => e.error?.code === "HUB_REFUSED"), device.describe());
  t.is(registrationsSent(device), waits.length, "one registration at once, then one per finished long-tail wait");
  // The emulator's view: the first boot's registration, the one at once, one per finished wait (the old runtime: ~150 in 10 s).
  t.is(world.emulator.counters().registrations, 1 + waits.length);
  t.is(world.emulator.counters().hub["connack-5"], 1 + waits.length, "one hub attempt from the cache, one after each registration");
  t.deepEqual(flash.stats, flashAfterInvalidation, "no cache write or erase while the hub refuses");
  t.is(countEvents(device, isCache("saved")), 0);
  t.is(countEvents(device, isCache("invalidated")), 1, "invalidated once, not on each cycle");
  t.is(readCachedRecord(path, key, registrationId).assignment, undefined);

  // The fault is lifted: the next long-tail cycle registers, the hub accepts, and the record is written.
  const lifted = Date.now();
  world.emulator.removeFault(fault);
  await device.connected(15_000);
  const id = device.runtime.send({ proof: 1 });
  await device.acknowledged(id);
  await device.waitFor(isCache("saved"), 10_000, "the record written");
  const connectedAt = device.events.findIndex((e) => e.source === "runtime" && e.state === "connected");
  const savedAt = device.events.findIndex(isCache("saved"));
  t.true(connectedAt >= 0 && savedAt > connectedAt, "the record is written only once the hub has accepted the device");
  t.is(countEvents(device, isCache("saved")), 1);
  t.is(device.runtime.state, "connected");
  const rewritten = readCachedRecord(path, key, registrationId);
  t.is(rewritten.assignment?.assignedHub, HUB);
  t.true(rewritten.assignment!.writtenAt >= lifted, "a new record, written after the fault was lifted");
});

test("e2e a hub outage past the retry window, DPS up: DPS is asked once keeping the cache, assigns the same hub, and the device goes back to the cached hub; the record is the original", async (t) => {
  const world = await worldFor(t);
  const registrationId = "e2e-outage-dps-up";
  const key = enrollOnHub(world, registrationId);
  const path = join(world.dir, `${registrationId}.flash`);
  await bootUntilConnected(world, { registrationId, symmetricKey: key }, path);
  const original = readCachedRecord(path, key, registrationId);
  const dpsRecord = world.emulator.registration(registrationId)!;

  world.emulator.setHubAvailable(HUB, false);
  const device = new TestDevice(world, { registrationId, symmetricKey: key, retryPolicy: outagePolicy }, path);
  t.teardown(() => device.runtime.stop());
  device.runtime.start();
  const wait = await device.waitFor((e) => e.source === "runtime" && e.state === "backing-off", 20_000, "the long tail");
  t.true(wait.source === "runtime" && wait.error?.code === "HUB_UNREACHABLE", device.describe());
  t.is(registrationsSent(device), 1, "DPS asked once");
  t.not(world.emulator.registration(registrationId)!.etag, dpsRecord.etag, "DPS processed the registration");
  t.is(countEvents(device, (e) => e.source === "assignment" && e.assignment.source === "dps"), 1);
  t.true(device.events.findIndex(isHub("unreachable")) < device.events.findIndex((e) => e.source === "dps"), "DPS is asked after the hub's window");

  world.emulator.setHubAvailable(HUB, true);
  await device.connected(15_000);
  const id = device.runtime.send("back");
  await device.acknowledged(id);
  t.is(device.runtime.assignment?.source, "cache");
  t.is(device.runtime.assignment?.assignedHub, HUB);
  t.is(registrationsSent(device), 1, "no registration once the hub is back");
  t.is(countEvents(device, isCache("invalidated")), 0, "the cache is kept");
  t.is(countEvents(device, isCache("saved")), 0, "the same assignment is not written again");
  t.deepEqual(readCachedRecord(path, key, registrationId), original, "the original record");
});

for (const [name, dpsDown] of [
  ["refuses connections (CONNACK 3)", { step: "connect", connack: 3 }],
  ["drops the register", { step: "register", drop: true }],
] as const) {
  test(`e2e a hub outage past the retry window while DPS ${name}: the cache is kept, and the device connects to the cached hub once it is back, with no new assignment`, async (t) => {
    const world = await worldFor(t);
    const registrationId = `e2e-outage-dps-down-${dpsDown.step}`;
    const key = enrollOnHub(world, registrationId);
    const path = join(world.dir, `${registrationId}.flash`);
    await bootUntilConnected(world, { registrationId, symmetricKey: key }, path);
    const original = readCachedRecord(path, key, registrationId);
    const dpsRecord = world.emulator.registration(registrationId)!;

    world.emulator.setHubAvailable(HUB, false);
    world.emulator.addFault({ ...dpsDown, registrationId });
    const device = new TestDevice(world, { registrationId, symmetricKey: key, retryPolicy: outagePolicy }, path);
    t.teardown(() => device.runtime.stop());
    device.runtime.start();
    const wait = await device.waitFor((e) => e.source === "runtime" && e.state === "backing-off", 20_000, "the long tail");
    t.true(wait.source === "runtime" && wait.error?.code === "HUB_UNREACHABLE" && /DPS could not be asked either/.test(wait.error.message), device.describe());
    t.true(device.dps().some((s) => s.state === "connecting"), "DPS was asked");
    t.true(world.emulator.counters().faults[dpsDown.step] >= 1, "and it was down");
    t.true(device.events.findIndex(isHub("unreachable")) < device.events.findIndex((e) => e.source === "dps"), "DPS is asked after the hub's window");

    world.emulator.setHubAvailable(HUB, true);
    await device.connected(15_000);
    const id = device.runtime.send("back");
    await device.acknowledged(id);
    t.is(device.runtime.assignment?.source, "cache");
    t.is(device.runtime.assignment?.assignedHub, HUB);
    t.is(countEvents(device, (e) => e.source === "assignment" && e.assignment.source === "dps"), 0, "no new assignment");
    t.is(countEvents(device, isCache("invalidated")), 0, "the cache is kept");
    t.is(countEvents(device, isCache("saved")), 0);
    t.deepEqual(world.emulator.registration(registrationId), dpsRecord, "DPS's record is untouched");
    t.deepEqual(readCachedRecord(path, key, registrationId), original, "the original record");
  });
}

test("e2e a message the hub closes the link on is dropped after 3 link losses and reported; the next one is acknowledged; DPS is never asked", async (t) => {
  const world = await worldFor(t);
  const registrationId = "e2e-poisoned";
  const key = enrollOnHub(world, registrationId);
  const path = join(world.dir, `${registrationId}.flash`);
  await bootUntilConnected(world, { registrationId, symmetricKey: key }, path);
  const dpsRecord = world.emulator.registration(registrationId)!;
  const registrations = world.emulator.counters().registrations;

  world.emulator.setHubMaxMessageBytes(HUB, 1024);
  // Reconnects exactly 5 s apart (the hub's floor), so the third loss comes within seconds.
  const device = new TestDevice(world, { registrationId, symmetricKey: key, retryPolicy: { ...fastRetries, longTail, hub: { multiplier: 1, maxMs: 5000, jitter: 0 } } }, path);
  t.teardown(() => device.runtime.stop());
  device.runtime.start();
  await device.connected();
  const big = device.runtime.send("x".repeat(2048));
  const small = device.runtime.send({ n: 1 });

  const dropped = await device.waitFor((e) => e.source === "telemetry" && e.id === big, 30_000, "the big message dropped");
  t.true(dropped.source === "telemetry" && dropped.state === "dropped", device.describe());
  t.regex((dropped as { reason?: string }).reason ?? "", /3 times/);
  const sent = await device.acknowledged(small, 15_000);
  t.true(sent.source === "telemetry" && sent.state === "sent", device.describe());

  t.is(world.emulator.counters().hub["message-too-large"], 3, "the hub closed the link on it 3 times, no more");
  t.deepEqual(world.emulator.telemetry(registrationId).map((m) => m.payload), ['{"n":1}']);
  t.is(device.dps().length, 0, "no DPS step at all");
  t.is(world.emulator.counters().registrations, registrations);
  t.deepEqual(world.emulator.registration(registrationId), dpsRecord);
  t.is(countEvents(device, isCache("invalidated")), 0);
  t.is(countEvents(device, (e) => e.source === "runtime" && e.state === "backing-off"), 0, "the hub is retried, not given up on");
});

test("e2e a device id with ':' provisions, sends telemetry that is acknowledged, and the hub sees the id as it is (no %3A)", async (t) => {
  const world = await worldFor(t);
  const registrationId = "e2e:sensor:01";
  const key = world.enroll(registrationId);
  const path = join(world.dir, "e2e-colon.flash");
  const device = new TestDevice(world, { registrationId, symmetricKey: key }, path);
  t.teardown(() => device.runtime.stop());
  device.runtime.start();
  await device.connected();
  const id = device.runtime.send({ colon: true });
  const ack = await device.acknowledged(id);
  t.true(ack.source === "telemetry" && ack.state === "sent", device.describe());
  t.is(device.runtime.assignment?.deviceId, registrationId);
  t.is(world.emulator.registration(registrationId)?.deviceId, registrationId);

  const received = world.emulator.telemetry(registrationId);
  t.is(received.length, 1);
  t.is(received[0].deviceId, registrationId);
  t.true(received[0].topic.startsWith(`devices/${registrationId}/messages/events/`), received[0].topic);
  t.deepEqual(JSON.parse(received[0].payload), { colon: true });
  t.notRegex(JSON.stringify(world.emulator.telemetry()), /%3A/i, "no percent-encoded colon anywhere");
  t.notRegex(device.describe(), /%3A/i);
  await device.waitFor(isCache("saved"));
  t.is(readCachedRecord(path, key, registrationId).assignment?.deviceId, registrationId);
});
