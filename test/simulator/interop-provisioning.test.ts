// The official Azure Node provisioning client (azure-iot-provisioning-device with its MQTT
// transport and azure-iot-security-symmetric-key) against the emulator over TLS.
import test from "ava";
import { derive, keyFor, withEmulator } from "./helpers.js";
import { officialRegister } from "./interop.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;
let host: string;

test.before(async () => {
  em = await withEmulator();
  host = `127.0.0.1:${em.endpoints.dps.tlsPort}`;
  em.addGroupEnrollment({ groupId: "sdk-group", primaryKey: keyFor("sdk-group"), allocationPayload: { channel: "beta" } });
});
test.after.always(async () => {
  await em?.dispose();
});

test("interop: an individual enrollment provisions with the official client over TLS", async (t) => {
  em.addIndividualEnrollment({ registrationId: "sdk-individual", primaryKey: keyFor("sdk-individual"), deviceId: "sdk-device-1" });
  const state = await officialRegister(host, em.idScope, "sdk-individual", keyFor("sdk-individual"), em.caPem, { model: "m1" });
  t.like(state, { registrationId: "sdk-individual", deviceId: "sdk-device-1", status: "assigned", substatus: "initialAssignment" });
  t.regex(state.assignedHub, /azure-devices\.localhost$/);
  t.deepEqual(em.registration("sdk-individual")?.requestPayload, { model: "m1" });
});

test("interop: a group member provisions with its derived key and receives the custom allocation payload", async (t) => {
  const state = await officialRegister(host, em.idScope, "sdk-member-7", derive(keyFor("sdk-group"), "sdk-member-7"), em.caPem);
  t.like(state, { registrationId: "sdk-member-7", deviceId: "sdk-member-7", status: "assigned", payload: { channel: "beta" } });
});

test("interop: an injected 429 makes the official client retry after retry-after, then succeed", async (t) => {
  em.addIndividualEnrollment({ registrationId: "sdk-throttled", primaryKey: keyFor("sdk-throttled") });
  em.addFault({ step: "register", registrationId: "sdk-throttled", status: 429, retryAfter: 1, times: 2 });
  const before = em.counters().dps["429"] ?? 0;
  const state = await officialRegister(host, em.idScope, "sdk-throttled", keyFor("sdk-throttled"), em.caPem);
  t.is(state.status, "assigned");
  t.is((em.counters().dps["429"] ?? 0) - before, 2);
});

test("interop: an injected 401 fails the official client with UnauthorizedError carrying the service's body", async (t) => {
  em.addIndividualEnrollment({ registrationId: "sdk-unauthorized", primaryKey: keyFor("sdk-unauthorized") });
  em.addFault({ step: "register", registrationId: "sdk-unauthorized", status: 401, times: 1 });
  const error = await t.throwsAsync(officialRegister(host, em.idScope, "sdk-unauthorized", keyFor("sdk-unauthorized"), em.caPem));
  t.is(error?.name, "UnauthorizedError");
  const result = (error as Error & { result?: { errorCode?: number; trackingId?: string } }).result;
  t.is(result?.errorCode, 401002);
  t.regex(result?.trackingId ?? "", /^[0-9a-f-]{36}$/);
});

test("interop: a wrong key is refused by the emulator itself with 401", async (t) => {
  em.addIndividualEnrollment({ registrationId: "sdk-wrong-key", primaryKey: keyFor("sdk-wrong-key") });
  const error = await t.throwsAsync(officialRegister(host, em.idScope, "sdk-wrong-key", keyFor("not-the-key"), em.caPem));
  t.is(error?.name, "UnauthorizedError");
});

test("interop: a disabled enrollment ends the official client's registration with status 'disabled'", async (t) => {
  em.addIndividualEnrollment({ registrationId: "sdk-disabled", primaryKey: keyFor("sdk-disabled"), enabled: false });
  // The Node client treats any final status other than assigned/assigning/failed as unexpected.
  const error = await t.throwsAsync(officialRegister(host, em.idScope, "sdk-disabled", keyFor("sdk-disabled"), em.caPem));
  t.regex(error?.message ?? "", /disabled/);
});
