// The IoT Hub endpoint: CONNECT accepted and refused as a hub does, telemetry acknowledged and
// stored, the twin, keep-alive, and devices or hubs changed while connected.
import test from "ava";
import { createHmac } from "node:crypto";
import { checkConfig } from "../../simulator/config.js";
import { EmulatorError } from "../../simulator/errors.js";
import { admin, hubConnect, hubToken, keyFor, provision, RawClient, withEmulator, HUB_1, HUB_2, ID_SCOPE } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator();
});
test.after.always(async () => {
  await em?.dispose();
});

/** Enrolls and provisions a device to HUB_1; returns its key. */
async function provisioned(id: string, extra: { initialTwin?: object; deviceId?: string } = {}): Promise<string> {
  em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id), secondaryKey: keyFor(`${id}/2`), iotHubHostName: HUB_1, ...extra });
  const answer = await provision(em, id, keyFor(id));
  if (answer.json?.registrationState?.assignedHub !== HUB_1) throw new Error(`not assigned: ${answer.text}`);
  return keyFor(id);
}

test("hub: an assigned device connects with its key (primary or secondary) over TCP and TLS with SNI", async (t) => {
  const key = await provisioned("hub-ok");
  for (const options of [{}, { tls: true }, { tls: true, servername: "localhost" }]) {
    const { client, returnCode } = await hubConnect(em, HUB_1, "hub-ok", key, options);
    t.is(returnCode, 0);
    client.end();
  }
  const secondary = await hubConnect(em, HUB_1, "hub-ok", keyFor("hub-ok/2"));
  t.is(secondary.returnCode, 0);
  secondary.client.end();
});

test("hub: a bad, expired or misdirected token, an unknown device or hub gets CONNACK 5", async (t) => {
  const key = await provisioned("hub-refusals");
  const code = async (hub: string, deviceId: string, options: Parameters<typeof hubConnect>[4] = {}) => {
    const { client, returnCode } = await hubConnect(em, hub, deviceId, key, options);
    client.end();
    return returnCode;
  };
  t.is(await code(HUB_1, "hub-refusals", { token: hubToken(HUB_1, "hub-refusals", keyFor("wrong")) }), 5);
  t.is(await code(HUB_1, "hub-refusals", { token: hubToken(HUB_1, "hub-refusals", key, Math.floor(Date.now() / 1000) - 3600) }), 5);
  t.is(await code(HUB_1, "hub-refusals", { token: hubToken(HUB_2, "hub-refusals", key) }), 5);
  t.is(await code(HUB_1, "hub-refusals", { token: "not a token" }), 5);
  t.is(await code(HUB_1, "never-provisioned"), 5);
  t.is(await code("hub-9.azure-devices.localhost", "hub-refusals"), 5);
  t.is(await code(HUB_2, "hub-refusals"), 5, "provisioned to hub 1, not hub 2");
  t.is(await code(HUB_1, "hub-refusals", { tls: true, servername: HUB_2 }), 5, "SNI names another hub");
  t.is(await code(HUB_1, "hub-refusals", { username: "hub-refusals" }), 4);
  t.true(em.counters().hub["connack-5"] >= 7);
});

test("hub: disabling or deleting a device refuses it with 5 and closes its open connection", async (t) => {
  const key = await provisioned("hub-disable");
  const live = await hubConnect(em, HUB_1, "hub-disable", key);
  t.is(live.returnCode, 0);
  em.setDeviceEnabled("hub-disable", false);
  await live.client.closed;
  t.is((await hubConnect(em, HUB_1, "hub-disable", key)).returnCode, 5);
  em.setDeviceEnabled("hub-disable", true, HUB_1);
  const again = await hubConnect(em, HUB_1, "hub-disable", key);
  t.is(again.returnCode, 0);
  em.deleteDevice("hub-disable");
  await again.client.closed;
  t.is((await hubConnect(em, HUB_1, "hub-disable", key)).returnCode, 5);
  t.throws(() => em.deleteDevice("hub-disable"), { message: /no device/ });
});

test("hub: an unavailable hub answers CONNACK 3 and drops its connections; available again, it accepts", async (t) => {
  const local = await withEmulator();
  t.teardown(() => local.dispose());
  local.addIndividualEnrollment({ registrationId: "hub-down", primaryKey: keyFor("hub-down"), iotHubHostName: HUB_2 });
  await provision(local, "hub-down", keyFor("hub-down"));
  const live = await hubConnect(local, HUB_2, "hub-down", keyFor("hub-down"));
  t.is(live.returnCode, 0);
  local.setHubAvailable(HUB_2, false);
  await live.client.closed;
  const refused = await hubConnect(local, HUB_2, "hub-down", keyFor("hub-down"));
  t.is(refused.returnCode, 3);
  local.setHubAvailable(HUB_2, true);
  const back = await hubConnect(local, HUB_2, "hub-down", keyFor("hub-down"));
  t.is(back.returnCode, 0);
  back.client.end();
});

test("hub: telemetry gets a PUBACK and is stored with its topic; QoS 0 is stored without one", async (t) => {
  const key = await provisioned("hub-telemetry");
  const { client } = await hubConnect(em, HUB_1, "hub-telemetry", key, { tls: true });
  t.teardown(() => client.end());
  await client.publish("devices/hub-telemetry/messages/events/", JSON.stringify({ temperature: 21.5 }));
  await client.publish("devices/hub-telemetry/messages/events/%24.ct=application%2Fjson&alert=1", "{}");
  await client.publish("devices/hub-telemetry/messages/events/", "qos0", 0);
  client.send({ cmd: "pingreq" });
  t.is((await client.next()).cmd, "pingresp");
  const stored = em.telemetry("hub-telemetry");
  t.deepEqual(stored.map((m) => m.payload), ['{"temperature":21.5}', "{}", "qos0"]);
  t.is(stored[1].topic, "devices/hub-telemetry/messages/events/%24.ct=application%2Fjson&alert=1");
  t.is(stored[0].hubHostName, HUB_1);
  t.true(em.counters().hub.puback >= 2);
});

test("hub: telemetry on another device's topic closes the connection", async (t) => {
  const key = await provisioned("hub-impostor");
  const { client } = await hubConnect(em, HUB_1, "hub-impostor", key);
  client.send({ cmd: "publish", topic: "devices/someone-else/messages/events/", payload: "x", qos: 1, messageId: 1, retain: false, dup: false });
  await client.closed;
  t.is(em.telemetry("someone-else").length, 0);
});

test("hub: the twin carries the enrollment's initial desired properties and takes reported patches", async (t) => {
  const key = await provisioned("hub-twin", { initialTwin: { tags: { site: "lab" }, properties: { desired: { interval: 30 } } } });
  const { client } = await hubConnect(em, HUB_1, "hub-twin", key);
  t.teardown(() => client.end());
  t.deepEqual((await client.subscribe("$iothub/twin/res/#")).granted, [1]);
  await client.publish("$iothub/twin/GET/?$rid=1", "");
  const twin = await client.nextPublish();
  t.is(twin.topic, "$iothub/twin/res/200/?$rid=1");
  t.like(JSON.parse(twin.payload.toString()), { desired: { interval: 30 } });
  await client.publish("$iothub/twin/PATCH/properties/reported/?$rid=2", JSON.stringify({ firmware: "1.2.3" }));
  const patched = await client.nextPublish();
  t.regex(patched.topic, /^\$iothub\/twin\/res\/204\/\?\$rid=2&\$version=\d+$/);
  await client.publish("$iothub/twin/GET/?$rid=3", "");
  t.like(JSON.parse((await client.nextPublish()).payload.toString()), { reported: { firmware: "1.2.3" } });
  t.deepEqual((await client.subscribe("devices/other/messages/devicebound/#")).granted, [0x80]);
});

test("hub: a connection silent for 1.5 x its keep-alive is closed; one that pings stays", async (t) => {
  const key = await provisioned("hub-keepalive");
  const silent = await hubConnect(em, HUB_1, "hub-keepalive", key, { keepalive: 1 });
  t.is(silent.returnCode, 0);
  const chatty = await hubConnect(em, HUB_1, "hub-keepalive", key, { keepalive: 1 });
  t.teardown(() => chatty.client.end());
  const pinger = setInterval(() => chatty.client.send({ cmd: "pingreq" }), 400);
  t.teardown(() => clearInterval(pinger));
  const closedInTime = await Promise.race([silent.client.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
  t.true(closedInTime);
  t.false(chatty.client.isClosed);
});

test("hub: a connection that never sends CONNECT is closed after the connect timeout", async (t) => {
  const local = await withEmulator({ connectTimeoutMs: 300 });
  t.teardown(() => local.dispose());
  const idle = await RawClient.open(local.endpoints.hub.tcpPort);
  const closedInTime = await Promise.race([idle.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
  t.true(closedInTime);
});

test("hub: a malformed packet closes that connection only", async (t) => {
  const key = await provisioned("hub-garbage");
  const good = await hubConnect(em, HUB_1, "hub-garbage", key);
  t.teardown(() => good.client.end());
  const bad = await hubConnect(em, HUB_1, "hub-garbage", key);
  bad.client.sendRaw(Buffer.from([0x60, 0x02, 0x00, 0x01])); // PUBREL with reserved flags 0000 instead of 0010 [MQTT-3.6.1-1]
  await bad.client.closed;
  await good.client.publish("devices/hub-garbage/messages/events/", "still here");
  t.true(em.telemetry("hub-garbage").some((m) => m.payload === "still here"));
});

// ---- device ids as IoT Hub has them, and oversize messages -------------------------------------

/** Every special character IoT Hub allows in a device id. */
const SPECIALS = "-:.+%_#*?!(),=@;$'";

/** A hub token as the official Node client writes it: sr = encodeUriComponentStrict("{hub}/devices/{id}"). */
function officialHubToken(hub: string, deviceId: string, key: string): string {
  const sr = encodeURIComponent(`${hub}/devices/${deviceId}`).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16));
  const se = String(Math.floor(Date.now() / 1000) + 3600);
  const sig = createHmac("sha256", Buffer.from(key, "base64")).update(`${sr}\n${se}`).digest("base64");
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

const publishAndClose = async (client: RawClient, topic: string, payload: string | Buffer = "x"): Promise<void> => {
  client.send({ cmd: "publish", topic, payload, qos: 1, messageId: client.nextMessageId(), retain: false, dup: false });
  await client.closed;
};

test("hub: a CONNECT whose device id is not an IoT Hub device id (a character outside its set, over 128) gets CONNACK 2", async (t) => {
  const before = em.counters().hub["connack-2"] ?? 0;
  for (const id of ["dev 1", "dév", "x".repeat(129), "dev&1", 'dev"1', "dev<1>", "dev\\1", "dev~1", "dev`1"]) {
    const { client, returnCode } = await hubConnect(em, HUB_1, id, keyFor("nobody"));
    t.is(returnCode, 2, JSON.stringify(id));
    await client.closed;
  }
  t.true((em.counters().hub["connack-2"] ?? 0) - before >= 9);
  // Valid ids that no hub device has are refused as an unknown device: 5, not 2.
  for (const id of [`a${SPECIALS}z`, "x".repeat(128), "dev*1"]) {
    const { client, returnCode } = await hubConnect(em, HUB_1, id, keyFor("nobody"));
    t.is(returnCode, 5, id);
    client.end();
  }
});

test("hub: a device id with every character IoT Hub allows (but + #) connects with the official token form, and its raw topic is acknowledged", async (t) => {
  const id = "a-:.%_*?!(),=@;$'z";
  const key = await provisioned("hub-special", { deviceId: id });
  t.is(em.registration("hub-special")?.deviceId, id, "DPS stores the device id as given");
  for (const token of [officialHubToken(HUB_1, id, key), hubToken(HUB_1, id, key)]) {
    const { client, returnCode } = await hubConnect(em, HUB_1, id, key, { token });
    t.is(returnCode, 0);
    await client.publish(`devices/${id}/messages/events/`, "special");
    client.end();
  }
  t.deepEqual(em.telemetry(id).map((m) => m.payload), ["special", "special"]);
  t.true(em.devices().some((d) => d.deviceId === id && d.registrationId === "hub-special"));
});

test("hub: telemetry on the URL-encoded form of the device's own id closes the connection (sensor%3A01 is not sensor:01)", async (t) => {
  const key = await provisioned("sensor:01");
  const { client, returnCode } = await hubConnect(em, HUB_1, "sensor:01", key, { token: officialHubToken(HUB_1, "sensor:01", key) });
  t.is(returnCode, 0);
  await client.publish("devices/sensor:01/messages/events/", "raw id");
  await publishAndClose(client, "devices/sensor%3A01/messages/events/", "encoded id");
  t.deepEqual(em.telemetry("sensor:01").map((m) => m.payload), ["raw id"]);
  t.is(em.telemetry("sensor%3A01").length, 0);
});

test("hub: device ids are case-sensitive: a token or a topic naming the id in another case is refused; the host's case is not", async (t) => {
  const key = await provisioned("hub-case", { deviceId: "Sensor-A" });
  const upperHost = await hubConnect(em, HUB_1, "Sensor-A", key, { token: hubToken(HUB_1.toUpperCase(), "Sensor-A", key) });
  t.is(upperHost.returnCode, 0);
  await publishAndClose(upperHost.client, "devices/sensor-a/messages/events/");
  const otherCase = await hubConnect(em, HUB_1, "Sensor-A", key, { token: hubToken(HUB_1, "sensor-a", key) });
  t.is(otherCase.returnCode, 5);
  otherCase.client.end();
  t.is((await hubConnect(em, HUB_1, "sensor-a", key)).returnCode, 5, "no device sensor-a");
});

test("hub: an enrollment's device id with + or # is stored and used as given; the device connects, but its telemetry topic breaks [MQTT-3.3.2-2] and closes the connection", async (t) => {
  for (const [registrationId, id] of [["hub-plus", "dev+1"], ["hub-hash", "dev#1"]]) {
    const key = await provisioned(registrationId, { deviceId: id });
    t.is(em.registration(registrationId)?.deviceId, id);
    const { client, returnCode } = await hubConnect(em, HUB_1, id, key, { token: officialHubToken(HUB_1, id, key) });
    t.is(returnCode, 0, `${id}: a valid IoT Hub device id`);
    await publishAndClose(client, `devices/${id}/messages/events/`);
    t.is(em.telemetry(id).length, 0);
  }
  // Any PUBLISH topic with a wildcard character, of any device.
  const key = await provisioned("hub-wild");
  for (const topic of ["devices/hub-wild/messages/events/a=#", "devices/hub-wild/messages/events/+", "$iothub/twin/GET/?$rid=#"]) {
    const { client } = await hubConnect(em, HUB_1, "hub-wild", key);
    await publishAndClose(client, topic);
  }
  t.is(em.telemetry("hub-wild").length, 0);
});

test("hub: a telemetry message over the hub's maxMessageBytes closes the connection with no PUBACK; at the limit it is acknowledged", async (t) => {
  const local = await withEmulator({ config: { idScope: ID_SCOPE, hubs: [{ hostName: HUB_1, maxMessageBytes: 1024 }, { hostName: HUB_2 }], retryAfterSeconds: 0 } });
  t.teardown(() => local.dispose());
  for (const [hub, id] of [[HUB_1, "small-hub"], [HUB_2, "default-hub"]]) {
    local.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id), iotHubHostName: hub });
    await provision(local, id, keyFor(id));
  }
  const small = await hubConnect(local, HUB_1, "small-hub", keyFor("small-hub"));
  await small.client.publish("devices/small-hub/messages/events/", Buffer.alloc(1024, 0x61));
  await publishAndClose(small.client, "devices/small-hub/messages/events/", Buffer.alloc(1025, 0x61));
  t.deepEqual(local.telemetry("small-hub").map((m) => m.payload.length), [1024]);
  t.is(local.counters().hub["message-too-large"], 1);

  // The default is the real hub's 256 KiB.
  const big = await hubConnect(local, HUB_2, "default-hub", keyFor("default-hub"));
  await big.client.publish("devices/default-hub/messages/events/", Buffer.alloc(256 * 1024, 0x62));
  await publishAndClose(big.client, "devices/default-hub/messages/events/", Buffer.alloc(256 * 1024 + 1, 0x62));
  t.is(local.telemetry("default-hub").length, 1);

  // Set at run time, it applies to an open connection at once.
  const live = await hubConnect(local, HUB_2, "default-hub", keyFor("default-hub"));
  local.setHubMaxMessageBytes(HUB_2, 100);
  t.like(local.hubs().find((h) => h.hostName === HUB_2), { maxMessageBytes: 100 });
  await live.client.publish("devices/default-hub/messages/events/", Buffer.alloc(100));
  await publishAndClose(live.client, "devices/default-hub/messages/events/", Buffer.alloc(101));
  t.is(local.counters().hub["message-too-large"], 3);
  t.throws(() => local.setHubMaxMessageBytes(HUB_2, 0), { instanceOf: EmulatorError, message: /maxMessageBytes/ });
  t.throws(() => local.setHubMaxMessageBytes(HUB_2, 256 * 1024 + 1), { instanceOf: EmulatorError });
  t.throws(() => local.setHubMaxMessageBytes("hub-9.azure-devices.localhost", 10), { instanceOf: EmulatorError, message: /no hub/ });
});

test("hub: PATCH /hubs/{host} sets maxMessageBytes and/or available; a bad body changes nothing", async (t) => {
  const local = await withEmulator();
  t.teardown(() => local.dispose());
  const set = await admin(local, "PATCH", `/hubs/${HUB_1}`, { maxMessageBytes: 512 });
  t.is(set.status, 200);
  t.deepEqual(set.json, { hostName: HUB_1, available: true, maxMessageBytes: 512 });
  t.like((await admin(local, "GET", "/hubs")).json.find((h: { hostName: string }) => h.hostName === HUB_1), { maxMessageBytes: 512, available: true });
  t.like((await admin(local, "PATCH", `/hubs/${HUB_1}`, { maxMessageBytes: 2048, available: false })).json, { available: false, maxMessageBytes: 2048 });
  for (const bad of [{}, { maxMessageBytes: 0 }, { maxMessageBytes: "1k" }, { maxMessageBytes: 262145 }, { maxMessageByte: 10 }, { available: "no", maxMessageBytes: 10 }, [1]]) {
    const answer = await admin(local, "PATCH", `/hubs/${HUB_1}`, bad);
    t.is(answer.status, 400, JSON.stringify(bad));
    t.is(answer.json.error.code, "INVALID_ARGUMENT");
  }
  t.like(local.hubs().find((h) => h.hostName === HUB_1), { maxMessageBytes: 2048, available: false });
  t.is((await admin(local, "PATCH", "/hubs/nowhere.example", { maxMessageBytes: 10 })).status, 404);
});

test("hub: the admin API reaches a device whose id holds % ? # when it is URL-encoded, and says so when it is not", async (t) => {
  const key = await provisioned("hub-admin-id", { deviceId: "a%b?c#d" });
  t.is((await hubConnect(em, HUB_1, "a%b?c#d", key)).returnCode, 0);
  t.is((await admin(em, "PATCH", `/devices/${encodeURIComponent("a%b?c#d")}`, { enabled: false })).status, 200);
  t.is((await hubConnect(em, HUB_1, "a%b?c#d", key)).returnCode, 5);
  const broken = await admin(em, "PATCH", "/devices/a%zz", { enabled: false });
  t.is(broken.status, 400);
  t.is(broken.json.error.code, "INVALID_PATH");
});

test("config: enrollments' device ids follow IoT Hub's rule (not DPS's); hubs[].maxMessageBytes is 1..256 KiB; unknown fields are refused", (t) => {
  const base = { idScope: ID_SCOPE, hubs: [{ hostName: HUB_1 }] };
  const enrollment = (deviceId: string) => ({ ...base, enrollments: { individual: [{ registrationId: "r-1", primaryKey: keyFor("r-1"), deviceId }] } });
  for (const id of [`a${SPECIALS}z`, "dev+1", "dev#1", "x".repeat(128)]) t.notThrows(() => checkConfig(enrollment(id)), id);
  for (const id of ["", "dev 1", "dév", "x".repeat(129), "a/b"]) {
    t.throws(() => checkConfig(enrollment(id)), { instanceOf: EmulatorError, message: /enrollments\.individual\[0\]\.deviceId/ }, id);
  }
  t.throws(() => checkConfig({ ...base, enrollments: { individual: [{ registrationId: "r+1", primaryKey: keyFor("r") }] } }), { message: /registrationId/ }, "registration ids keep DPS's rule");
  t.is(checkConfig({ idScope: ID_SCOPE, hubs: [{ hostName: HUB_1, maxMessageBytes: 262144 }] }).hubs[0].maxMessageBytes, 262144);
  for (const bytes of [0, 262145, 1.5, "1024", -1]) {
    t.throws(() => checkConfig({ idScope: ID_SCOPE, hubs: [{ hostName: HUB_1, maxMessageBytes: bytes as number }] }), { message: /hubs\[0\]\.maxMessageBytes: must be an integer from 1 to 262144/ }, String(bytes));
  }
  t.throws(() => checkConfig({ idScope: ID_SCOPE, hubs: [{ hostName: HUB_1, maxMessageByte: 10 } as never] }), { message: /hubs\[0\]\.maxMessageByte: is not a known field/ });
  t.throws(() => checkConfig({ ...base, retryAfterSecond: 1 } as never), { message: /^retryAfterSecond: is not a known field/ });
  t.throws(() => checkConfig({ ...base, limits: { registrationPerMinute: 5 } } as never), { message: /limits\.registrationPerMinute: is not a known field/ });
  t.throws(() => checkConfig({ ...base, enrollments: { individuals: [] } } as never), { message: /enrollments\.individuals: is not a known field/ });
});
