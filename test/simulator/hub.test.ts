// The IoT Hub endpoint: CONNECT accepted and refused as a hub does, telemetry acknowledged and
// stored, the twin, keep-alive, and devices or hubs changed while connected.
import test from "ava";
import { hubConnect, hubToken, keyFor, provision, RawClient, withEmulator, HUB_1, HUB_2 } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator();
});
test.after.always(async () => {
  await em?.dispose();
});

/** Enrolls and provisions a device to HUB_1; returns its key. */
async function provisioned(id: string, extra: { initialTwin?: object } = {}): Promise<string> {
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
