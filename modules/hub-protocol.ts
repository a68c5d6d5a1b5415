/**
 * The IoT Hub MQTT identity of a device, built as the official Node device client builds it
 * (azure-iot-device-mqtt `_getBaseTransportConfig` and `_getEventTopicFromMessage`, azure-iot-device
 * `SharedAccessSignature.create`), byte for byte; test/hub-protocol.test.ts compares each builder
 * with theirs. The device id goes into the client id, the user name and the topic as it is; only
 * the token resource and the property bag are URL-encoded:
 *
 *   CONNECT  client id  sensor:01
 *            user name  contoso.azure-devices.net/sensor:01/?api-version=2021-04-12&model-id=dtmi:com:example:Thermostat;1&DeviceClientType=fw%2F1.0
 *            password   SharedAccessSignature sr=contoso.azure-devices.net%2Fdevices%2Fsensor%3A01&sig=...&se=...
 *   PUBLISH  devices/sensor:01/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&alert=1
 *
 * A URL-encoded id in the topic (`sensor%3A01`) names another device: the hub closes the
 * connection at the first publish.
 */
import { excerpt, PeerError, UsageError } from "./errors.js";
import { urlEncode, urlEncodeStrict } from "./encoding.js";

export const HUB_API_VERSION = "2021-04-12";

export interface HubUsernameOptions {
  /** IoT Plug and Play model id: a DTMI, written as it is (as the official client writes it). */
  readonly modelId?: string;
  /** Written URL-encoded as `DeviceClientType`. */
  readonly userAgent?: string;
}

/**
 * `{hub}/{deviceId}/?api-version=2021-04-12[&model-id={modelId}][&DeviceClientType={userAgent}]`,
 * in the official client's order and encoding: the device id and the model id raw, the user agent
 * URL-encoded.
 * @throws UsageError INVALID_ARGUMENT when `modelId` is not a DTMI (written raw, anything else
 *   could break the query).
 */
export function hubUsername(hubHost: string, deviceId: string, options?: HubUsernameOptions): string {
  let name = `${hubHost}/${deviceId}/?api-version=${HUB_API_VERSION}`;
  const modelId = options?.modelId;
  if (modelId) {
    if (!/^dtmi:[A-Za-z][A-Za-z0-9_]*(:[A-Za-z][A-Za-z0-9_]*)*;[1-9][0-9]{0,8}(\.[0-9]{1,6})?$/.test(modelId)) {
      throw new UsageError("INVALID_ARGUMENT", `modelId "${excerpt(modelId)}" must be a DTMI such as dtmi:com:example:Thermostat;1`);
    }
    name += "&model-id=" + modelId;
  }
  if (options?.userAgent) name += "&DeviceClientType=" + urlEncode(options.userAgent);
  return name;
}

/** `devices/{deviceId}/messages/events/`, the id as it is; the property bag follows it. */
export function telemetryTopic(deviceId: string): string {
  return `devices/${deviceId}/messages/events/`;
}

/** Application and system properties of a telemetry message (`$.ct`, `$.ce`... are system ones). */
export type MessageProperties = Readonly<Record<string, string>>;

/** The system properties, in the order the official client writes them (before the others). */
const SYSTEM = ["$.mid", "$.cid", "$.uid", "$.to", "$.ct", "$.ce", "$.ifid", "$.exp"];

/**
 * The property bag after the telemetry topic, as the official client writes it: `key=value`
 * pairs joined by `&`, each side encoded like encodeURIComponent; the system properties first in
 * its order (`$.mid $.cid $.uid $.to $.ct $.ce $.ifid $.exp`), then the others in theirs, with
 * `dt-subject` written as `$.sub`.
 * @throws UsageError INVALID_ARGUMENT when a value is not a string.
 */
export function encodeProperties(properties: MessageProperties | undefined): string {
  if (!properties) return "";
  const keys = Object.keys(properties);
  let out = "";
  for (let pass = 0; pass < 2; pass++) {
    const names = pass === 0 ? SYSTEM : keys;
    for (let i = 0; i < names.length; i++) {
      const k = names[i];
      if (pass === 0 ? keys.indexOf(k) < 0 : SYSTEM.indexOf(k) >= 0) continue;
      const v = properties[k];
      if (typeof v !== "string") throw new UsageError("INVALID_ARGUMENT", `message property "${excerpt(k, 40)}" must be a string`);
      out += (out ? "&" : "") + urlEncode(k === "dt-subject" ? "$.sub" : k) + "=" + urlEncode(v);
    }
  }
  return out;
}

/**
 * The `sr` of the hub SAS token as the official client writes it:
 * `encodeUriComponentStrict(host + "/devices/" + deviceId)`, so `! ' ( ) *` are escaped too.
 */
export function hubTokenResource(hubHost: string, deviceId: string): string {
  return urlEncodeStrict(`${hubHost}/devices/${deviceId}`);
}

/**
 * Checks a device id from the network (a DPS assignment) before it is used or cached. IoT Hub
 * device ids are case-sensitive, 1 to 128 ASCII letters, digits and `- : . + % _ # * ? ! ( ) , = @ ; $ '`.
 *
 * `+` and `#` are valid in the hub's registry but unusable over MQTT: the id goes into the
 * telemetry topic as it is, MQTT 3.1.1 forbids both in a PUBLISH topic name [MQTT-3.3.2-2] (the
 * hub would close the connection at every publish), and URL-encoding them names another device.
 * Retrying cannot help: the enrollment's device id must change (ASSIGNMENT_UNUSABLE).
 * @throws PeerError MALFORMED_BODY when the id is not an IoT Hub device id; ASSIGNMENT_UNUSABLE
 *   when it holds `+` or `#`.
 */
export function checkDeviceId(deviceId: unknown): asserts deviceId is string {
  if (typeof deviceId !== "string" || !/^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$/.test(deviceId)) {
    throw new PeerError(
      "MALFORMED_BODY",
      `the assigned device id ${typeof deviceId === "string" ? `"${excerpt(deviceId)}"` : `(${typeof deviceId})`} is not an IoT Hub device id (1 to 128 letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ ')`,
    );
  }
  if (/[+#]/.test(deviceId)) {
    throw new PeerError(
      "ASSIGNMENT_UNUSABLE",
      `the assigned device id "${deviceId}" is valid in IoT Hub but cannot be used over MQTT, which forbids + and # in the telemetry topic [MQTT-3.3.2-2]: give the enrollment a device id without them`,
    );
  }
}

/** What makes an assignment unusable by a hub session (the message of the check that fails), or undefined. */
export function assignmentProblem(hubHost: unknown, deviceId: unknown): string | undefined {
  try {
    checkHubHost(hubHost);
    checkDeviceId(deviceId);
  } catch (error) {
    return (error as Error).message;
  }
  return undefined;
}

/**
 * Checks a hub host name from the network: a DNS name (labels of letters, digits and `-`, at most
 * 253 characters) without a port, since the hub session dials its own port (8883).
 * @throws PeerError MALFORMED_BODY naming the host.
 */
export function checkHubHost(host: unknown): asserts host is string {
  if (typeof host !== "string" || !/^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(host)) {
    throw new PeerError("MALFORMED_BODY", `the assigned hub ${typeof host === "string" ? `"${excerpt(host)}"` : `(${typeof host})`} is not a host name (letters, digits, '-' and '.', no port)`);
  }
}

