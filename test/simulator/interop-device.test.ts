// The official Azure Node device client (azure-iot-device with its MQTT transport) against the
// emulator's hub over TLS, after provisioning with the official provisioning client.
import test from "ava";
import { derive, keyFor, withEmulator } from "./helpers.js";
import { device, deviceMqtt, officialRegister } from "./interop.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator();
  em.addGroupEnrollment({ groupId: "sdk-fleet", primaryKey: keyFor("sdk-fleet") });
});
test.after.always(async () => {
  await em?.dispose();
});

function connectionString(hub: string, deviceId: string, key: string): string {
  return `HostName=${hub};DeviceId=${deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${em.endpoints.hub.tlsPort}`;
}

test("interop: a provisioned device sends telemetry with the official device client and the emulator stores it", async (t) => {
  const key = derive(keyFor("sdk-fleet"), "sdk-sensor-1");
  const state = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "sdk-sensor-1", key, em.caPem);
  const client = device.Client.fromConnectionString(connectionString(state.assignedHub, state.deviceId, key), deviceMqtt.Mqtt);
  t.teardown(() => client.close());
  await client.setOptions({ ca: em.caPem });
  await client.open();
  const message = new device.Message(JSON.stringify({ temperature: 22.5 }));
  message.properties.add("alert", "no");
  await client.sendEvent(message);
  await client.sendEvent(new device.Message("second"));
  await client.close();
  const stored = em.telemetry("sdk-sensor-1");
  t.deepEqual(stored.map((m) => m.payload), ['{"temperature":22.5}', "second"]);
  t.is(stored[0].hubHostName, state.assignedHub);
  t.regex(stored[0].topic, /^devices\/sdk-sensor-1\/messages\/events\/.*alert=no/);
});

test("interop: the official device client is refused with a disabled device and with a wrong key", async (t) => {
  const key = derive(keyFor("sdk-fleet"), "sdk-sensor-2");
  const state = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "sdk-sensor-2", key, em.caPem);
  const wrong = device.Client.fromConnectionString(connectionString(state.assignedHub, state.deviceId, keyFor("wrong")), deviceMqtt.Mqtt);
  t.teardown(() => wrong.close());
  await wrong.setOptions({ ca: em.caPem });
  const refused = await t.throwsAsync(wrong.open());
  t.regex(`${refused?.name} ${refused?.message}`, /Unauthorized|authoriz/i);

  em.setDeviceEnabled("sdk-sensor-2", false);
  const disabled = device.Client.fromConnectionString(connectionString(state.assignedHub, state.deviceId, key), deviceMqtt.Mqtt);
  t.teardown(() => disabled.close());
  await disabled.setOptions({ ca: em.caPem });
  await t.throwsAsync(disabled.open());
  t.true((em.counters().hub["connack-5"] ?? 0) >= 2);
});

test("interop: the official device client with device id sensor:01 (an individual enrollment's deviceId) connects and its telemetry is acknowledged", async (t) => {
  em.addIndividualEnrollment({ registrationId: "sdk-colon", primaryKey: keyFor("sdk-colon"), deviceId: "sensor:01" });
  const state = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "sdk-colon", keyFor("sdk-colon"), em.caPem);
  t.is(state.deviceId, "sensor:01");
  const client = device.Client.fromConnectionString(connectionString(state.assignedHub, state.deviceId, keyFor("sdk-colon")), deviceMqtt.Mqtt);
  t.teardown(() => client.close());
  await client.setOptions({ ca: em.caPem });
  await client.open();
  await client.sendEvent(new device.Message("from sensor:01")); // resolves on the PUBACK
  await client.close();
  const stored = em.telemetry("sensor:01");
  t.deepEqual(stored.map((m) => m.payload), ["from sensor:01"]);
  t.is(stored[0].topic, "devices/sensor:01/messages/events/");
});

test("interop: the official device client with every special character IoT Hub allows but + # (; rules out a connection string) is acknowledged too", async (t) => {
  const id = "a-:.%_*?!(),=@;$'z";
  em.addIndividualEnrollment({ registrationId: "sdk-specials", primaryKey: keyFor("sdk-specials"), deviceId: id });
  const state = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "sdk-specials", keyFor("sdk-specials"), em.caPem);
  t.is(state.deviceId, id);
  const auth = new device.SharedAccessKeyAuthenticationProvider({
    host: state.assignedHub,
    deviceId: id,
    sharedAccessKey: keyFor("sdk-specials"),
    gatewayHostName: `127.0.0.1:${em.endpoints.hub.tlsPort}`,
  } as never);
  const client = device.Client.fromAuthenticationProvider(auth, deviceMqtt.Mqtt);
  t.teardown(() => client.close());
  await client.setOptions({ ca: em.caPem });
  await client.open();
  await client.sendEvent(new device.Message("specials"));
  await client.close();
  t.deepEqual(em.telemetry(id).map((m) => m.payload), ["specials"]);
});
