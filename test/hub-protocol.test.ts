/**
 * The hub identity (user name, client id, telemetry topic, property bag, token) against the
 * official Node clients' own builders loaded from node_modules, byte for byte, for device ids with
 * every special character IoT Hub allows; and the checks applied to an assignment from DPS.
 *
 * The official user name and topic come from azure-iot-device-mqtt's `Mqtt` transport itself
 * (`_configureEndpoints`, `_getBaseTransportConfig`, `_getEventTopicFromMessage`), built with a
 * fake token authentication provider and a fake MQTT base that never connect; the token from
 * azure-iot-device's `SharedAccessSignature.create` and azure-iot-common's.
 */
import test from "ava";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { urlEncode, urlEncodeStrict } from "../modules/encoding.js";
import { checkDeviceId, checkHubHost, encodeProperties, HUB_API_VERSION, hubTokenResource, hubUsername, telemetryTopic } from "../modules/hub-protocol.js";
import { hubSasToken } from "../modules/sas.js";
import { portableCrypto } from "../modules/sha256.js";

const require = createRequire(import.meta.url);
const transportRequire = createRequire(require.resolve("azure-iot-device-mqtt"));
const { Mqtt } = require("azure-iot-device-mqtt") as { Mqtt: new (auth: unknown, base: unknown) => any };
const device = require("azure-iot-device") as { Message: new (data: string) => any; SharedAccessSignature: { create(host: string, id: string, key: string, expiry: number): { toString(): string } } };
// The copy of azure-iot-common the transport itself uses (npm may nest another).
const common = transportRequire("azure-iot-common") as {
  AuthenticationType: { Token: number };
  endpoint: { apiVersion: string };
  encodeUriComponentStrict(text: string): string;
  SharedAccessSignature: { create(sr: string, keyName: null, key: string, expiry: number): { toString(): string } };
};

const HOST = "contoso.azure-devices.net";
const KEY = "cGFzc3dvcmQ=";
const EXPIRY = 1_578_941_692;
const MODEL = "dtmi:com:example:Thermostat;1";
const AGENT = "dps-device-runtime/0.1 (esp32; xs)";
/** Every special character IoT Hub allows in a device id. */
const SPECIALS = "-:.+%_#*?!(),=@;$'";
const IDS = ["sensor:01", ...[...SPECIALS].map((c) => `dev${c}1`), `a${SPECIALS}z`, `${SPECIALS}`, "x".repeat(128)];

/**
 * The official transport's user name, client id and telemetry topic for `deviceId`. The official
 * client writes `?api-version=` + its own constant; where that differs from ours it is replaced by
 * ours (with azure-iot-common 1.13 both are 2021-04-12, so nothing is replaced).
 */
function official(deviceId: string, options: { modelId?: string } = {}): { username: string; clientId: string; transport: any } {
  const auth = Object.assign(new EventEmitter(), { type: common.AuthenticationType.Token, getDeviceCredentials() {}, stop() {} });
  const base = Object.assign(new EventEmitter(), { setOptions() {} });
  const transport = new Mqtt(auth, base);
  if (options.modelId) transport.setOptions({ modelId: options.modelId });
  transport._userAgentString = AGENT; // what _ensureAgentString computes before a connect (the SDK's own string)
  const credentials = { host: HOST, deviceId };
  transport._configureEndpoints(credentials);
  const config = transport._getBaseTransportConfig(credentials);
  return {
    username: config.username.replace(`api-version=${common.endpoint.apiVersion}&`, `api-version=${HUB_API_VERSION}&`),
    clientId: config.clientId,
    transport,
  };
}

test("hub-protocol: the official client's api-version is ours, so no substitution happens", (t) => {
  t.is(common.endpoint.apiVersion, HUB_API_VERSION);
});

test("hub-protocol: the user name is the official client's, byte for byte, with and without a model id", (t) => {
  for (const id of IDS) {
    const withModel = official(id, { modelId: MODEL });
    t.is(hubUsername(HOST, id, { modelId: MODEL, userAgent: AGENT }), withModel.username, id);
    t.is(withModel.clientId, id, `${id}: the client id is the raw device id`);
    t.is(hubUsername(HOST, id, { userAgent: AGENT }), official(id).username, id);
  }
  t.is(
    hubUsername(HOST, "sensor:01", { modelId: MODEL, userAgent: AGENT }),
    `${HOST}/sensor:01/?api-version=2021-04-12&model-id=dtmi:com:example:Thermostat;1&DeviceClientType=dps-device-runtime%2F0.1%20(esp32%3B%20xs)`,
  );
  t.is(hubUsername(HOST, "d"), `${HOST}/d/?api-version=2021-04-12`, "no user agent, no DeviceClientType");
});

test("hub-protocol: a model id that is not a DTMI is a UsageError (it is written raw)", (t) => {
  for (const bad of ["thermostat", "dtmi:com:example:Thermostat", "dtmi:com:ex&x=1;1", "dtmi:com:example:Thermostat;0"]) {
    t.throws(() => hubUsername(HOST, "d", { modelId: bad }), { code: "INVALID_ARGUMENT", name: "UsageError" } as never, bad);
  }
  t.notThrows(() => hubUsername(HOST, "d", { modelId: "dtmi:com:example:thermo_stat:Part2;12.3" }));
});

test("hub-protocol: the telemetry topic is the official client's, the device id as it is (not URL-encoded)", (t) => {
  for (const id of IDS) {
    const { transport } = official(id);
    t.is(telemetryTopic(id), transport._getEventTopicFromMessage(new device.Message("x")), id);
  }
  t.is(telemetryTopic("sensor:01"), "devices/sensor:01/messages/events/");
  // The bug this pins: the URL-encoded id names another device, which a real hub refuses.
  t.not(`devices/${urlEncode("sensor:01")}/messages/events/`, official("sensor:01").transport._getEventTopicFromMessage(new device.Message("x")));
});

test("hub-protocol: the property bag is the official client's: system properties first in its order, dt-subject as $.sub", (t) => {
  const { transport } = official("sensor:01");
  const message = new device.Message("{}");
  message.messageId = "m 1/é";
  message.correlationId = "c&1";
  message.userId = "u=1";
  message.to = "/devices/sensor:01/messages/events";
  message.contentType = "application/json";
  message.contentEncoding = "utf-8";
  message.interfaceId = "dtmi:azure:x;1";
  message.expiryTimeUtc = "2026-01-01T00:00:00.000Z";
  message.properties.add("alert level", "high & rising");
  message.properties.add("dt-subject", "thermostat1");
  message.properties.add("chars", `${SPECIALS}~ "<>[]{}|\\^\`/`);
  message.properties.add("empty", "");
  const ours = {
    // System properties out of the official order (the encoder restores it); the others in the order they were added.
    "$.exp": "2026-01-01T00:00:00.000Z",
    "alert level": "high & rising",
    "$.ce": "utf-8",
    "dt-subject": "thermostat1",
    "$.ifid": "dtmi:azure:x;1",
    chars: `${SPECIALS}~ "<>[]{}|\\^\`/`,
    "$.to": "/devices/sensor:01/messages/events",
    "$.ct": "application/json",
    "$.uid": "u=1",
    empty: "",
    "$.cid": "c&1",
    "$.mid": "m 1/é",
  };
  const expected = transport._getEventTopicFromMessage(message) as string;
  t.is(telemetryTopic("sensor:01") + encodeProperties(ours), expected);
  t.regex(expected, /\/events\/%24\.mid=m%201%2F%C3%A9&%24\.cid=c%261&.*&alert%20level=high%20%26%20rising&%24\.sub=thermostat1&/);

  const json = new device.Message("{}");
  json.contentType = "application/json";
  json.contentEncoding = "utf-8";
  t.is(telemetryTopic("sensor:01") + encodeProperties({ "$.ce": "utf-8", "$.ct": "application/json" }), transport._getEventTopicFromMessage(json));
  t.is(encodeProperties(undefined), "");
  t.is(encodeProperties({}), "");
  t.throws(() => encodeProperties({ n: 1 as unknown as string }), { code: "INVALID_ARGUMENT" } as never);
});

test("hub-protocol: the token resource and the whole hub token are the official client's, byte for byte", (t) => {
  for (const id of IDS) {
    t.is(hubTokenResource(HOST, id), common.encodeUriComponentStrict(`${HOST}/devices/${id}`), id);
    const ours = hubSasToken(portableCrypto, { hubHost: HOST, deviceId: id, symmetricKey: KEY, expiry: EXPIRY });
    t.is(ours, device.SharedAccessSignature.create(HOST, id, KEY, EXPIRY).toString(), id);
    t.is(ours, common.SharedAccessSignature.create(common.encodeUriComponentStrict(`${HOST}/devices/${id}`), null, KEY, EXPIRY).toString(), id);
  }
  // The old form (plain URL-encoding) differs exactly where the strict one escapes ! ' ( ) *.
  t.not(`SharedAccessSignature sr=${urlEncode(`${HOST}/devices/a*b`)}`, device.SharedAccessSignature.create(HOST, "a*b", KEY, EXPIRY).toString().split("&")[0]);
  t.is(hubTokenResource(HOST, "a*b!(c)'"), `${HOST}%2Fdevices%2Fa%2ab%21%28c%29%27`);
});

test("hub-protocol: urlEncodeStrict is azure-iot-common's encodeUriComponentStrict; urlEncode is unchanged", (t) => {
  let ascii = "";
  for (let c = 0x20; c < 0x7f; c++) ascii += String.fromCharCode(c);
  for (const text of [ascii, "é€😀 tab\t", ""]) {
    t.is(urlEncodeStrict(text), common.encodeUriComponentStrict(text));
    t.is(urlEncode(text), encodeURIComponent(text));
  }
});

test("hub-protocol: checkDeviceId accepts IoT Hub's characters and refuses the rest as MALFORMED_BODY", (t) => {
  for (const id of IDS.filter((i) => !/[+#]/.test(i))) t.notThrows(() => checkDeviceId(id), id);
  t.notThrows(() => checkDeviceId("Sensor:01"), "case-sensitive ids, any case");
  for (const bad of ["", "x".repeat(129), "dev 1", "dev/1", "dév", "dev&1", "dev\u00001", "dev\n", "a\"b", 42, undefined]) {
    const error = t.throws(() => checkDeviceId(bad), { code: "MALFORMED_BODY", name: "PeerError" } as never, String(bad));
    t.regex(error!.message, /not an IoT Hub device id/);
  }
});

test("hub-protocol: an id with + or # is valid for IoT Hub but unusable over MQTT: checkDeviceId throws ASSIGNMENT_UNUSABLE saying so", (t) => {
  for (const id of ["dev+1", "dev#1", `a${SPECIALS}z`, "+", "#"]) {
    // The official client would put it in the topic as it is, where MQTT forbids it [MQTT-3.3.2-2].
    t.is(telemetryTopic(id), official(id).transport._getEventTopicFromMessage(new device.Message("x")));
    const error = t.throws(() => checkDeviceId(id), { code: "ASSIGNMENT_UNUSABLE", name: "PeerError" } as never, id);
    t.regex(error!.message, /valid in IoT Hub but cannot be used over MQTT.*\[MQTT-3\.3\.2-2\]/);
  }
});

test("hub-protocol: checkHubHost accepts DNS names without a port and refuses the rest as MALFORMED_BODY", (t) => {
  for (const good of [HOST, "hub-1.azure-devices.localhost", "localhost", "a", `${"a".repeat(63)}.net`]) t.notThrows(() => checkHubHost(good), good);
  for (const bad of [`${HOST}:8883`, "", "-a.net", "a-.net", "a..net", ".a.net", "a.net.", "a_b.net", "a b.net", `${"a".repeat(64)}.net`, `${"a.".repeat(126)}ab`, "hüb.net", 8883, null]) {
    const error = t.throws(() => checkHubHost(bad), { code: "MALFORMED_BODY", name: "PeerError" } as never, String(bad));
    t.regex(error!.message, /not a host name.*no port/);
  }
});
