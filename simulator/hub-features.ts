// The hub's cloud-to-device features with no I/O: the device twin (limits, merge patches, versions,
// etag, the JSON shapes the device and the service read), the C2D queue (bounded, with a TTL per
// message) and the property bag a C2D message carries in its topic. The MQTT session and the
// service API call these; time comes in as `nowMs`.
//
//   device  PUBLISH $iothub/twin/PATCH/properties/reported/?$rid=8  {"firmware":"1.2.3","old":null}
//   hub     PUBLISH $iothub/twin/res/204/?$rid=8&$version=5          (empty)
//   hub     PUBLISH $iothub/twin/PATCH/properties/desired/?$version=3  {"interval":10,"$version":3}
//   hub     PUBLISH devices/dev-1/messages/devicebound/%24.mid=7f..&%24.to=%2Fdevices%2Fdev-1%2Fmessages%2FdeviceBound&alert=high  hello
import type { HubDevice } from "./service.js";

/** IoT Hub's twin limits (learn.microsoft.com, "Understand and use device twins": Device twin size, and the 2019 increase). */
export const TWIN_LIMITS = {
  /** desired and reported, each (read-only $-members excluded). */
  sectionBytes: 32 * 1024,
  tagsBytes: 8 * 1024,
  /** Nesting of JSON objects inside tags, desired or reported. */
  depth: 10,
  keyBytes: 1024,
  stringValueBytes: 4096,
} as const;

/** IoT Hub's C2D queue: at most 50 messages waiting per device; the default time to live is 1 hour (the hub's default, up to 2 days). */
export const C2D_QUEUE_LIMIT = 50;
export const C2D_DEFAULT_TTL_SECONDS = 3600;
export const C2D_MAX_TTL_SECONDS = 48 * 3600;
/** IoT Hub's C2D message size limit: 64 KB. */
export const C2D_MAX_BYTES = 64 * 1024;

export type TwinProblem = { status: 400; message: string };

/**
 * The size IoT Hub counts for a twin section: every key's UTF-8 length plus its value's (strings in
 * UTF-8 bytes, numbers 8, booleans 4, nested objects their own total; `null` counted as 4 here).
 */
export function twinSize(value: unknown): number {
  if (value === null || typeof value === "boolean") return 4;
  if (typeof value === "number") return 8;
  if (typeof value === "string") return Buffer.byteLength(value);
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + twinSize(v), 0);
  if (typeof value === "object") {
    let n = 0;
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) if (!k.startsWith("$")) n += Buffer.byteLength(k) + twinSize(v);
    return n;
  }
  return 0;
}

/**
 * Checks keys, values and depth of a patch (or a whole section) as IoT Hub does: keys up to 1 KB
 * without `.`, `$`, space or control characters; string values up to 4 KB; objects nested at
 * most 10 deep. Returns the first problem, or undefined.
 */
export function twinPatchProblem(patch: Record<string, unknown>, depth = 1): TwinProblem | undefined {
  if (depth > TWIN_LIMITS.depth) return { status: 400, message: `the document is nested deeper than ${TWIN_LIMITS.depth} levels` };
  for (const [key, value] of Object.entries(patch)) {
    if (key.length === 0 || Buffer.byteLength(key) > TWIN_LIMITS.keyBytes) return { status: 400, message: `a property name must be 1 to ${TWIN_LIMITS.keyBytes} bytes` };
    // eslint-disable-next-line no-control-regex
    if (/[.$ \u0000-\u001f\u007f-\u009f]/.test(key)) return { status: 400, message: `property name ${JSON.stringify(key.slice(0, 40))} holds '.', '$', a space or a control character` };
    if (typeof value === "string" && Buffer.byteLength(value) > TWIN_LIMITS.stringValueBytes) {
      return { status: 400, message: `Property or Tag value should be maximum ${TWIN_LIMITS.stringValueBytes} bytes. Error in Property/Tag ${key.slice(0, 40)}` };
    }
    if (Array.isArray(value)) {
      // IoT Hub takes arrays of values; an object inside one is checked like any other.
      for (const item of value) if (typeof item === "object" && item !== null && !Array.isArray(item)) {
        const inner = twinPatchProblem(item as Record<string, unknown>, depth + 1);
        if (inner) return inner;
      }
    } else if (typeof value === "object" && value !== null) {
      const inner = twinPatchProblem(value as Record<string, unknown>, depth + 1);
      if (inner) return inner;
    }
  }
  return undefined;
}

/** JSON merge patch (RFC 7396) in place: null deletes, objects merge, anything else replaces. */
export function mergePatch(target: Record<string, unknown>, patch: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete target[key];
    else if (typeof value === "object" && !Array.isArray(value)) {
      const current = target[key];
      const into = typeof current === "object" && current !== null && !Array.isArray(current) ? (current as Record<string, unknown>) : {};
      mergePatch(into, value as Record<string, unknown>);
      target[key] = into;
    } else target[key] = value;
  }
}

/** The merge patch that turns `before` into `after` (nulls for removed keys), for a replaced section. */
export function diffPatch(before: Record<string, unknown>, after: Record<string, unknown>): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const key of Object.keys(before)) if (!(key in after)) patch[key] = null;
  for (const [key, value] of Object.entries(after)) {
    const old = before[key];
    const bothObjects = typeof old === "object" && old !== null && !Array.isArray(old) && typeof value === "object" && value !== null && !Array.isArray(value);
    if (bothObjects) {
      const inner = diffPatch(old as Record<string, unknown>, value as Record<string, unknown>);
      if (Object.keys(inner).length > 0) patch[key] = inner;
    } else if (JSON.stringify(old) !== JSON.stringify(value)) patch[key] = value;
  }
  return patch;
}

/**
 * Applies a patch to a copy of a section and checks the result against the limits; on success
 * returns the new section (the caller swaps it in), else the problem. Nothing changes on failure.
 */
export function patchedSection(section: Record<string, unknown>, patch: Record<string, unknown>, limitBytes: number, what: string): { ok: true; value: Record<string, unknown> } | { ok: false; problem: TwinProblem } {
  const shape = twinPatchProblem(patch);
  if (shape) return { ok: false, problem: shape };
  const next = structuredClone(section);
  mergePatch(next, patch);
  const size = twinSize(next);
  if (size > limitBytes) return { ok: false, problem: { status: 400, message: `${what} would be ${size} bytes, over the hub's ${limitBytes}` } };
  return { ok: true, value: next };
}

/** The twin's etag: its version as 8 big-endian bytes in base64, the form IoT Hub's etags take (`AAAAAAAAAAc=`). */
export function twinEtag(device: HubDevice): string {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(device.twinVersion));
  return bytes.toString("base64");
}

/** What the device reads with `$iothub/twin/GET/`: `{"desired":{...,"$version":n},"reported":{...,"$version":m}}`. */
export function deviceTwinDocument(device: HubDevice): { desired: Record<string, unknown>; reported: Record<string, unknown> } {
  return {
    desired: { ...device.desired, $version: device.desiredVersion },
    reported: { ...device.reported, $version: device.reportedVersion },
  };
}

/** The twin as the service REST API returns it (GET /twins/{id}). */
export function serviceTwinDocument(device: HubDevice, connected: boolean, nowIso: string): Record<string, unknown> {
  const meta = { $lastUpdated: device.twinUpdated ?? nowIso };
  return {
    deviceId: device.deviceId,
    etag: twinEtag(device),
    deviceEtag: twinEtag(device),
    status: device.enabled ? "enabled" : "disabled",
    statusUpdateTime: "0001-01-01T00:00:00Z",
    connectionState: connected ? "Connected" : "Disconnected",
    lastActivityTime: device.lastActivity ?? "0001-01-01T00:00:00Z",
    cloudToDeviceMessageCount: device.c2d.length,
    authenticationType: "sas",
    x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
    modelId: "",
    version: device.twinVersion,
    tags: structuredClone(device.tags),
    properties: {
      desired: { ...structuredClone(device.desired), $metadata: meta, $version: device.desiredVersion },
      reported: { ...structuredClone(device.reported), $metadata: meta, $version: device.reportedVersion },
    },
    capabilities: { iotEdge: false },
  };
}

// ---- C2D ----------------------------------------------------------------------------------------

export interface C2dMessage {
  readonly messageId: string;
  readonly body: Buffer;
  /** Application properties, in the order given. */
  readonly properties: readonly (readonly [string, string])[];
  readonly contentType?: string;
  readonly contentEncoding?: string;
  readonly correlationId?: string;
  readonly enqueuedAt: number;
  readonly expiresAt: number;
  /** Times it was published to the device (a redelivery counts again). */
  deliveries: number;
}

/** What a caller gives to send one message (the admin API's body, `Emulator.sendC2D`'s argument). */
export interface C2dRequest {
  /** The body: a string (UTF-8) or bytes. */
  body: string | Buffer | Uint8Array;
  properties?: Record<string, string>;
  messageId?: string;
  contentType?: string;
  contentEncoding?: string;
  correlationId?: string;
  /** Time to live (default 3600, at most 172800). */
  ttlSeconds?: number;
}

/**
 * The topic of a C2D message: `devices/{deviceId}/messages/devicebound/{property bag}`, each key
 * and value URL-encoded (so `/` never splits the bag: the Node device client reads the fifth
 * topic segment), system properties first as IoT Hub writes them.
 */
export function c2dTopic(deviceId: string, m: C2dMessage): string {
  const pairs: [string, string][] = [
    ["$.mid", m.messageId],
    ["$.to", `/devices/${deviceId}/messages/deviceBound`],
  ];
  if (m.correlationId !== undefined) pairs.push(["$.cid", m.correlationId]);
  if (m.contentType !== undefined) pairs.push(["$.ct", m.contentType]);
  if (m.contentEncoding !== undefined) pairs.push(["$.ce", m.contentEncoding]);
  for (const [k, v] of m.properties) pairs.push([k, v]);
  return `devices/${deviceId}/messages/devicebound/` + pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
}

/** A pending message as the admin API lists it (the body as UTF-8 text and base64). */
export function c2dView(m: C2dMessage): Record<string, unknown> {
  return {
    messageId: m.messageId,
    body: m.body.toString("utf8"),
    bodyBase64: m.body.toString("base64"),
    properties: Object.fromEntries(m.properties),
    contentType: m.contentType,
    contentEncoding: m.contentEncoding,
    correlationId: m.correlationId,
    enqueuedTimeUtc: new Date(m.enqueuedAt).toISOString(),
    expiryTimeUtc: new Date(m.expiresAt).toISOString(),
    deliveries: m.deliveries,
  };
}
