// Topic and user-name parsing for the two MQTT endpoints. Each parser splits at the first '?' and
// reads the query parameters in any order (greedy patterns over a whole topic once lost responses
// in an SDK); values stay as written so that `$rid` is echoed byte for byte.

/** Query parameters as written (no decoding). A repeated name keeps its first value. */
export function parseQuery(query: string): Map<string, string> {
  const params = new Map<string, string>();
  if (query.length === 0) return params;
  for (const part of query.split("&")) {
    if (part.length === 0) continue;
    const eq = part.indexOf("=");
    const name = eq < 0 ? part : part.slice(0, eq);
    if (!params.has(name)) params.set(name, eq < 0 ? "" : part.slice(eq + 1));
  }
  return params;
}

export type DpsRequest =
  | { kind: "register"; rid: string | undefined }
  | { kind: "poll"; rid: string | undefined; operationId: string | undefined }
  | { kind: "unknown" };

const REGISTER_PREFIX = "$dps/registrations/PUT/iotdps-register/?";
const POLL_PREFIX = "$dps/registrations/GET/iotdps-get-operationstatus/?";

/**
 *   $dps/registrations/PUT/iotdps-register/?$rid=1
 *   $dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.0123456789abcdef.6ba7b810-9dad-41d1-80b4-00c04fd430c8
 */
export function parseDpsRequestTopic(topic: string): DpsRequest {
  if (topic.startsWith(REGISTER_PREFIX)) {
    const params = parseQuery(topic.slice(REGISTER_PREFIX.length));
    return { kind: "register", rid: params.get("$rid") };
  }
  if (topic.startsWith(POLL_PREFIX)) {
    const params = parseQuery(topic.slice(POLL_PREFIX.length));
    return { kind: "poll", rid: params.get("$rid"), operationId: params.get("operationId") };
  }
  return { kind: "unknown" };
}

export const DPS_RESPONSE_FILTER = "$dps/registrations/res/#";

/** `$dps/registrations/res/202/?$rid=1&retry-after=3` (retry-after left out when undefined). */
export function dpsResponseTopic(status: number, rid: string, retryAfter?: number | string): string {
  const base = "$dps/registrations/res/" + status + "/?$rid=" + rid;
  return retryAfter === undefined ? base : base + "&retry-after=" + retryAfter;
}

export const DPS_API_VERSIONS: ReadonlySet<string> = new Set(["2017-11-15", "2018-11-01", "2019-03-31", "2021-06-01", "2021-10-01", "2022-12-01", "2025-07-01-preview"]);
/** The first API version whose register request may carry a CSR (certificate issuance). */
export const DPS_CSR_API_VERSION = "2025-07-01-preview";

export type DpsUserName =
  | { ok: true; idScope: string; registrationId: string; apiVersion: string }
  | { ok: false; problem: string };

/**
 *   0ne00000001/registrations/device-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1
 */
export function parseDpsUserName(userName: string | undefined): DpsUserName {
  if (!userName) return { ok: false, problem: "no user name" };
  const marker = userName.indexOf("/registrations/");
  if (marker <= 0) return { ok: false, problem: "user name is not {idScope}/registrations/{registrationId}/api-version=..." };
  const idScope = userName.slice(0, marker);
  const rest = userName.slice(marker + "/registrations/".length);
  const slash = rest.indexOf("/");
  if (slash <= 0) return { ok: false, problem: "user name has no api-version segment" };
  const registrationId = rest.slice(0, slash);
  let query = rest.slice(slash + 1);
  if (query.startsWith("?")) query = query.slice(1);
  const apiVersion = parseQuery(query).get("api-version");
  if (apiVersion === undefined || apiVersion.length === 0) return { ok: false, problem: "user name has no api-version" };
  if (!DPS_API_VERSIONS.has(apiVersion)) return { ok: false, problem: `api-version ${apiVersion} is not supported` };
  return { ok: true, idScope, registrationId, apiVersion };
}

export type HubUserName =
  | { ok: true; hubHostName: string; deviceId: string; apiVersion: string }
  | { ok: false; problem: string };

/**
 *   hub-1.azure-devices.localhost/device-1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4
 */
export function parseHubUserName(userName: string | undefined): HubUserName {
  if (!userName) return { ok: false, problem: "no user name" };
  const first = userName.indexOf("/");
  if (first <= 0) return { ok: false, problem: "user name is not {hub}/{deviceId}/?api-version=..." };
  const second = userName.indexOf("/", first + 1);
  if (second <= first + 1) return { ok: false, problem: "user name has no device id" };
  const hubHostName = userName.slice(0, first);
  const deviceId = userName.slice(first + 1, second);
  let query = userName.slice(second + 1);
  if (query.startsWith("?")) query = query.slice(1);
  const apiVersion = parseQuery(query).get("api-version");
  if (apiVersion === undefined || !/^\d{4}-\d{2}-\d{2}(-preview)?$/.test(apiVersion)) return { ok: false, problem: "user name has no valid api-version" };
  return { ok: true, hubHostName, deviceId, apiVersion };
}

/**
 * IoT Hub device ids: case-sensitive, 1 to 128 ASCII letters, digits and `- : . + % _ # * ? ! ( ) , = @ ; $ '`
 * (learn.microsoft.com: "The unique identifier of the device. This case-sensitive string can be
 * up to 128 characters long, and supports ASCII 7-bit alphanumeric characters plus the following
 * special characters: - : . + % _ # * ? ! ( ) , = @ ; $ '").
 */
export function isDeviceId(id: unknown): id is string {
  return typeof id === "string" && /^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$/.test(id);
}

export type HubRequest =
  | { kind: "telemetry"; deviceId: string }
  | { kind: "twin-get"; rid: string | undefined }
  | { kind: "twin-patch-reported"; rid: string | undefined }
  | { kind: "method-response"; status: number; rid: string | undefined }
  | { kind: "unknown" };

/**
 *   devices/device-1/messages/events/           telemetry
 *   devices/device-1/messages/events/a=1&b=2    telemetry with properties
 *   $iothub/twin/GET/?$rid=7                    twin read
 *   $iothub/twin/PATCH/properties/reported/?$rid=8
 *   $iothub/methods/res/200/?$rid=1             a direct method's answer
 */
export function parseHubTopic(topic: string): HubRequest {
  if (topic.startsWith("devices/")) {
    const slash = topic.indexOf("/", 8);
    if (slash > 8 && topic.startsWith("/messages/events/", slash)) return { kind: "telemetry", deviceId: topic.slice(8, slash) };
    return { kind: "unknown" };
  }
  if (topic.startsWith("$iothub/twin/GET/?")) return { kind: "twin-get", rid: parseQuery(topic.slice(18)).get("$rid") };
  if (topic.startsWith("$iothub/twin/PATCH/properties/reported/?")) {
    return { kind: "twin-patch-reported", rid: parseQuery(topic.slice(40)).get("$rid") };
  }
  if (topic.startsWith("$iothub/methods/res/")) {
    const slash = topic.indexOf("/", 20);
    const status = topic.slice(20, slash < 0 ? undefined : slash);
    if (slash < 0 || !/^\d{1,3}$/.test(status) || topic[slash + 1] !== "?") return { kind: "unknown" };
    return { kind: "method-response", status: Number(status), rid: parseQuery(topic.slice(slash + 2)).get("$rid") };
  }
  return { kind: "unknown" };
}

/** The subscriptions a hub grants a device; anything else gets the SUBACK failure code. */
export function hubSubscriptionAllowed(filter: string, deviceId: string): boolean {
  return (
    filter === `devices/${deviceId}/messages/devicebound/#` ||
    filter === "$iothub/twin/res/#" ||
    filter === "$iothub/twin/PATCH/properties/desired/#" ||
    filter === "$iothub/methods/POST/#"
  );
}
