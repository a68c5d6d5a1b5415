/**
 * End to end over TLS, one row of the DPS troubleshooting table at a time: the emulator answers the
 * device's register with the row's status, and the device does what the table asks, says so in its
 * events, and the emulator's counters show what it really sent.
 */
import test from "ava";
import { bootUntilConnected, newKey, startWorld, TestDevice, type World } from "../support/e2e.js";

let world: World;
test.before(async () => {
  world = await startWorld();
});
test.after.always(async () => {
  await world?.stop();
});

for (const status of [400, 405, 409, 412, 415]) {
  test(`e2e ${status} on register: terminal after one request, reported with code, tracking id and message`, async (t) => {
    const registrationId = `e2e-terminal-${status}`;
    const key = world.enroll(registrationId);
    world.emulator.addFault({ step: "register", registrationId, status });
    const device = new TestDevice(world, { registrationId, symmetricKey: key });
    device.runtime.start();
    const end = await device.settled();
    device.runtime.stop();
    t.is(end.source === "runtime" && end.state, "failed");
    const failed = device.dps().find((s) => s.state === "failed")!;
    t.is(failed.httpStatus, status);
    t.is(Math.floor(failed.errorCode! / 1000), status);
    t.truthy(failed.trackingId, "the tracking id support asks for");
    t.truthy(failed.message);
    t.is(device.dps().filter((s) => s.state === "registering").length, 1, "never sent twice");
    t.is(device.dps().filter((s) => s.state === "retrying").length, 0);
  });
}

for (const status of [401, 403, 404]) {
  test(`e2e ${status} on register once: re-registers with a fresh token and connects`, async (t) => {
    const registrationId = `e2e-reauth-${status}`;
    const key = world.enroll(registrationId);
    world.emulator.addFault({ step: "register", registrationId, status, times: 1 });
    const device = new TestDevice(world, { registrationId, symmetricKey: key });
    device.runtime.start();
    await device.connected();
    device.runtime.stop();
    const retry = device.dps().find((s) => s.state === "retrying")!;
    t.is(retry.httpStatus, status);
    t.is(retry.action, "reauthenticate");
    t.is(device.dps().filter((s) => s.state === "connecting").length, 2, "a new connection, with a new token");
  });
}

test("e2e 401 on every register: AUTHENTICATION_FAILED after the bounded re-registrations, telling to check key and clock, re-checked slowly", async (t) => {
  const registrationId = "e2e-reauth-always";
  const key = world.enroll(registrationId);
  world.emulator.addFault({ step: "register", registrationId, status: 401 });
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  device.runtime.start();
  const end = await device.settled();
  device.runtime.stop();
  t.true(end.source === "runtime" && end.state === "backing-off" && end.error?.code === "AUTHENTICATION_FAILED");
  t.regex((end as { error: { message: string } }).error.message, /key.*clock.*trying again in \d+ min/s);
  t.true((end as { retryInMs: number }).retryInMs >= 10 * 60_000, "the next check is minutes away");
  t.is(device.dps().filter((s) => s.state === "registering").length, 3);
});

test("e2e a wrong key: the emulator's real SAS check refuses it, and the device backs off with AUTHENTICATION_FAILED", async (t) => {
  const registrationId = "e2e-wrong-key";
  world.enroll(registrationId);
  const device = new TestDevice(world, { registrationId, symmetricKey: newKey() });
  device.runtime.start();
  const end = await device.settled();
  device.runtime.stop();
  t.true(end.source === "runtime" && end.state === "backing-off" && end.error?.code === "AUTHENTICATION_FAILED", device.describe());
});

test("e2e 429 with retry-after: waits at least retry-after, with jitter, then connects", async (t) => {
  const registrationId = "e2e-throttled";
  const key = world.enroll(registrationId);
  world.emulator.addFault({ step: "register", registrationId, status: 429, retryAfter: 1, times: 2 });
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  const started = Date.now();
  device.runtime.start();
  await device.connected();
  device.runtime.stop();
  const retries = device.dps().filter((s) => s.state === "retrying");
  t.is(retries.length, 2);
  for (const r of retries) {
    t.is(r.httpStatus, 429);
    t.is(r.errorCode, 429001);
    t.true(r.delayMs! >= 1000, `delay ${r.delayMs} honours retry-after`);
  }
  t.true(Date.now() - started >= 2000, "the waits really happened");
});

for (const status of [500, 503]) {
  test(`e2e ${status} on register, never processed: the status lookup finds nothing, so the device registers again`, async (t) => {
    const registrationId = `e2e-server-${status}`;
    const key = world.enroll(registrationId);
    world.emulator.addFault({ step: "register", registrationId, status, times: 1 });
    const device = new TestDevice(world, { registrationId, symmetricKey: key });
    device.runtime.start();
    await device.connected();
    device.runtime.stop();
    const states = device.dps().map((s) => s.state);
    t.true(states.includes("looking-up"), states.join(","));
    t.is(device.dps().find((s) => s.state === "retrying")!.action, "recover");
    t.is(states.filter((s) => s === "registering").length, 2);
  });
}

test("e2e 500 on register after DPS already assigned the device: the lookup shows it assigned, and no second registration is sent", async (t) => {
  const registrationId = "e2e-server-lookup-assigned";
  const key = world.enroll(registrationId);
  // A first device run leaves a registration record at DPS (as a register whose answer was lost would).
  await bootUntilConnected(world, { registrationId, symmetricKey: key });
  const before = world.emulator.registration(registrationId);
  t.truthy(before);
  world.emulator.addFault({ step: "register", registrationId, status: 500, times: 1 });
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  device.runtime.start();
  await device.connected();
  device.runtime.stop();
  t.is(device.dps().filter((s) => s.state === "registering").length, 1);
  t.truthy(device.dps().find((s) => s.state === "looking-up"));
  const assignment = device.events.find((e) => e.source === "assignment");
  t.is(assignment?.source === "assignment" && assignment.assignment.source, "dps");
  const after = world.emulator.registration(registrationId)!;
  t.is(after.etag, before!.etag, "DPS accepted no new registration: its record is untouched");
  t.is(after.lastUpdatedDateTimeUtc, before!.lastUpdatedDateTimeUtc);
});

test("e2e the connection dropped instead of an answer to the register: recovers by lookup and connects", async (t) => {
  const registrationId = "e2e-dropped";
  const key = world.enroll(registrationId);
  world.emulator.addFault({ step: "register", registrationId, drop: true, times: 1 });
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  device.runtime.start();
  await device.connected();
  device.runtime.stop();
  t.truthy(device.dps().find((s) => s.state === "retrying" && s.fault === "closed"));
});

test("e2e CONNACK 3 from DPS: reconnects after a backoff and connects", async (t) => {
  const registrationId = "e2e-connack-3";
  const key = world.enroll(registrationId);
  world.emulator.addFault({ step: "connect", registrationId, connack: 3, times: 1 });
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  device.runtime.start();
  await device.connected();
  device.runtime.stop();
  t.is(device.dps().find((s) => s.state === "retrying")?.connack, 3);
});

test("e2e a non-JSON answer to the register: treated as a server fault, recovered", async (t) => {
  const registrationId = "e2e-non-json";
  const key = world.enroll(registrationId);
  world.emulator.addFault({ step: "register", registrationId, malformed: "non-json", times: 1 });
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  device.runtime.start();
  await device.connected();
  device.runtime.stop();
  t.is(device.dps().find((s) => s.state === "retrying")?.fault, "malformed");
});

test("e2e a disabled enrollment: says the enrollment is disabled, and re-checks it slowly (an operator may enable it)", async (t) => {
  const registrationId = "e2e-disabled";
  const key = newKey();
  world.emulator.addIndividualEnrollment({ registrationId, primaryKey: key, enabled: false });
  const device = new TestDevice(world, { registrationId, symmetricKey: key });
  device.runtime.start();
  const end = await device.settled();
  device.runtime.stop();
  t.true(end.source === "runtime" && end.state === "backing-off" && end.error?.code === "REGISTRATION_FAILED" && /disabled/.test(end.error.message), device.describe());
});
