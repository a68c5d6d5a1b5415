// The admin API: every route, against the state the programmatic API sees.
import test from "ava";
import { admin, derive, dpsDevice, hubConnect, keyFor, provision, withEmulator, HUB_1, HUB_2 } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator();
});
test.after.always(async () => {
  await em?.dispose();
});

test.serial("admin: GET / lists the routes; /health and /endpoints answer", async (t) => {
  const index = await admin(em, "GET", "/");
  t.is(index.status, 200);
  t.true(index.json.routes.some((r: string) => r.startsWith("POST /faults")));
  t.deepEqual((await admin(em, "GET", "/health")).json, { ok: true });
  const endpoints = await admin(em, "GET", "/endpoints");
  t.is(endpoints.json.dps.tcpPort, em.endpoints.dps.tcpPort);
  t.is(endpoints.json.idScope, em.idScope);
  t.is(endpoints.json.caPath, em.caPath);
  t.is((await admin(em, "GET", "/nowhere")).status, 404);
  t.is((await admin(em, "PUT", "/faults")).status, 405);
  t.is((await admin(em, "POST", "/faults", "{not json")).status, 400);
});

test.serial("admin: enrollments are added, listed without keys, disabled, and removed", async (t) => {
  t.is((await admin(em, "POST", "/enrollments/individual", { registrationId: "adm-1", primaryKey: keyFor("adm-1") })).status, 201);
  t.is((await admin(em, "POST", "/enrollments/groups", { groupId: "adm-g", primaryKey: keyFor("adm-g") })).status, 201);
  const invalid = await admin(em, "POST", "/enrollments/individual", { registrationId: "adm-2", primaryKey: "???" });
  t.is(invalid.status, 400);
  t.is(invalid.json.error.code, "INVALID_CONFIG");
  const unknownHub = await admin(em, "POST", "/enrollments/individual", { registrationId: "adm-2", primaryKey: keyFor("adm-2"), iotHubHostName: "x.example" });
  t.is(unknownHub.status, 404);
  const list = await admin(em, "GET", "/enrollments");
  t.true(list.json.individual.some((e: { registrationId: string }) => e.registrationId === "adm-1"));
  t.false(JSON.stringify(list.json).includes(keyFor("adm-1")), "keys are not listed");
  t.is((await admin(em, "PATCH", "/enrollments/individual/adm-1", { enabled: false })).status, 200);
  t.is((await provision(em, "adm-1", keyFor("adm-1"))).json.status, "disabled");
  t.is((await admin(em, "PATCH", "/enrollments/individual/adm-1", { enabled: "no" })).status, 400);
  t.is((await admin(em, "PATCH", "/enrollments/groups/adm-g", { enabled: false })).status, 200);
  t.is((await provision(em, "adm-g-1", derive(keyFor("adm-g"), "adm-g-1"))).json.status, "disabled");
  t.is((await admin(em, "PATCH", "/enrollments/groups/adm-g", { enabled: true })).status, 200);
  t.is((await provision(em, "adm-g-1", derive(keyFor("adm-g"), "adm-g-1"))).json.status, "assigned");
  t.is((await admin(em, "DELETE", "/enrollments/individual/adm-1")).status, 204);
  t.is((await admin(em, "DELETE", "/enrollments/individual/adm-1")).status, 404);
  t.is((await admin(em, "DELETE", "/enrollments/groups/adm-g")).status, 204);
  t.is((await admin(em, "PATCH", "/enrollments/groups/adm-g", { enabled: true })).status, 404);
});

test.serial("admin: registrations are listed, read one by one and forgotten", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-reg", primaryKey: keyFor("adm-reg") });
  await provision(em, "adm-reg", keyFor("adm-reg"));
  const all = await admin(em, "GET", "/registrations");
  t.true(all.json.some((r: { registrationId: string }) => r.registrationId === "adm-reg"));
  const one = await admin(em, "GET", "/registrations/adm-reg");
  t.like(one.json, { registrationId: "adm-reg", status: "assigned", enrollment: { kind: "individual", registrationId: "adm-reg" } });
  t.is((await admin(em, "DELETE", "/registrations/adm-reg")).status, 204);
  t.is((await admin(em, "GET", "/registrations/adm-reg")).status, 404);
});

test.serial("admin: devices and hubs are listed and changed", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-dev", primaryKey: keyFor("adm-dev"), iotHubHostName: HUB_2 });
  await provision(em, "adm-dev", keyFor("adm-dev"));
  const devices = await admin(em, "GET", "/devices");
  t.true(devices.json.some((d: { deviceId: string; hubHostName: string; enabled: boolean }) => d.deviceId === "adm-dev" && d.hubHostName === HUB_2 && d.enabled));
  t.is((await admin(em, "PATCH", `/devices/adm-dev?hub=${HUB_2}`, { enabled: false })).status, 200);
  t.is((await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"))).returnCode, 5);
  t.is((await admin(em, "PATCH", "/devices/adm-dev", { enabled: true })).status, 200);
  t.is((await admin(em, "PATCH", `/hubs/${HUB_2}`, { available: false })).status, 200);
  t.like((await admin(em, "GET", "/hubs")).json.find((h: { hostName: string }) => h.hostName === HUB_2), { available: false });
  t.is((await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"))).returnCode, 3);
  t.is((await admin(em, "PATCH", `/hubs/${HUB_2}`, { available: true })).status, 200);
  t.is((await admin(em, "PATCH", "/hubs/nowhere.example", { available: true })).status, 404);
  const ok = await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"));
  t.is(ok.returnCode, 0);
  ok.client.end();
  t.is((await admin(em, "DELETE", `/devices/adm-dev?hub=${HUB_1}`)).status, 404);
  t.is((await admin(em, "DELETE", "/devices/adm-dev")).status, 204);
  t.is((await hubConnect(em, HUB_2, "adm-dev", keyFor("adm-dev"))).returnCode, 5);
});

test.serial("admin: faults are added (one or many), listed with match counts, removed and cleared", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-fault", primaryKey: keyFor("adm-fault") });
  const added = await admin(em, "POST", "/faults", [
    { step: "register", registrationId: "adm-fault", status: 412, times: 1 },
    { step: "poll", registrationId: "adm-fault", status: 415 },
  ]);
  t.is(added.status, 201);
  t.is(added.json.ids.length, 2);
  t.is((await admin(em, "POST", "/faults", { step: "register", status: 299 })).status, 400);
  const device = await dpsDevice(em, "adm-fault", keyFor("adm-fault"));
  t.teardown(() => device.client.end());
  t.is((await device.register()).status, 412);
  const listed = await admin(em, "GET", "/faults");
  t.is(listed.json.find((f: { id: number }) => f.id === added.json.ids[0]).matched, 1);
  t.is((await admin(em, "DELETE", `/faults/${added.json.ids[1]}`)).status, 204);
  t.is((await admin(em, "DELETE", `/faults/${added.json.ids[1]}`)).status, 404);
  const accepted = await device.register();
  t.is((await device.poll(accepted.json.operationId)).status, 200);
  await admin(em, "POST", "/faults", { step: "register", registrationId: "adm-fault", status: 500 });
  t.is((await admin(em, "DELETE", "/faults")).status, 204);
  t.deepEqual((await admin(em, "GET", "/faults")).json, []);
  t.is((await device.register()).status, 202);
});

test.serial("admin: counters per status code and telemetry are read and reset", async (t) => {
  em.addIndividualEnrollment({ registrationId: "adm-tel", primaryKey: keyFor("adm-tel"), iotHubHostName: HUB_1 });
  await provision(em, "adm-tel", keyFor("adm-tel"));
  const { client } = await hubConnect(em, HUB_1, "adm-tel", keyFor("adm-tel"));
  t.teardown(() => client.end());
  for (let i = 0; i < 3; i++) await client.publish("devices/adm-tel/messages/events/", `m${i}`);
  const counters = await admin(em, "GET", "/counters");
  t.true(counters.json.dps["202"] >= 1 && counters.json.dps["200"] >= 1);
  t.true(counters.json.hub.telemetry >= 3);
  t.true(counters.json.connections >= 1);
  const telemetry = await admin(em, "GET", "/telemetry?deviceId=adm-tel&limit=2");
  t.deepEqual(telemetry.json.map((m: { payload: string }) => m.payload), ["m1", "m2"]);
  t.is((await admin(em, "DELETE", "/telemetry")).status, 204);
  t.deepEqual((await admin(em, "GET", "/telemetry")).json, []);
  t.is((await admin(em, "DELETE", "/counters")).status, 204);
  t.deepEqual((await admin(em, "GET", "/counters")).json.dps, {});
});
