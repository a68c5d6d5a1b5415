/**
 * DPS answers and what parseResponse must make of them, shared by the Node tests and the XS tier.
 * `expected` is the parsed value (null when the topic is not a DPS response); `error` the code of
 * the PeerError it must raise instead.
 */
import { utf8Encode } from "../../modules/encoding.js";

export interface ParsingCase {
  readonly name: string;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly expected?: unknown;
  readonly error?: string;
}

const json = (value: unknown): Uint8Array => utf8Encode(JSON.stringify(value));

const state = {
  registrationId: "dev-001",
  createdDateTimeUtc: "2026-01-01T00:00:01Z",
  assignedHub: "hub-1.azure-devices.net",
  deviceId: "dev-001",
  status: "assigned",
  substatus: "reprovisionedToInitialAssignment",
  lastUpdatedDateTimeUtc: "2026-01-01T00:00:02Z",
  etag: "IjEi",
  payload: { site: "lab", floors: [1, 2] },
};

export const parsingCases: ParsingCase[] = [
  {
    name: "202 assigning with retry-after after $rid",
    topic: "$dps/registrations/res/202/?$rid=1&retry-after=3",
    payload: json({ operationId: "4.abc.def", status: "assigning" }),
    expected: { status: 202, rid: "1", retryAfterSeconds: 3, operation: { status: "assigning", operationId: "4.abc.def" } },
  },
  {
    name: "202 with retry-after before $rid and a UUID rid",
    topic: "$dps/registrations/res/202/?retry-after=5&$rid=0f8fad5b-d9cb-469f-a165-70867728950e",
    payload: json({ operationId: "op", status: "assigning" }),
    expected: { status: 202, rid: "0f8fad5b-d9cb-469f-a165-70867728950e", retryAfterSeconds: 5, operation: { status: "assigning", operationId: "op" } },
  },
  {
    name: "200 assigned with every documented registrationState field",
    topic: "$dps/registrations/res/200/?$rid=7",
    payload: json({ operationId: "op", status: "assigned", registrationState: { ...state, symmetricKey: { registrationId: "dev-001" } } }),
    expected: {
      status: 200,
      rid: "7",
      operation: {
        status: "assigned",
        operationId: "op",
        registrationState: {
          status: "assigned",
          registrationId: "dev-001",
          createdDateTimeUtc: "2026-01-01T00:00:01Z",
          assignedHub: "hub-1.azure-devices.net",
          deviceId: "dev-001",
          lastUpdatedDateTimeUtc: "2026-01-01T00:00:02Z",
          etag: "IjEi",
          substatus: "reprovisionedToInitialAssignment",
          payload: { site: "lab", floors: [1, 2] },
          symmetricKey: { registrationId: "dev-001" },
        },
      },
    },
  },
  {
    name: "401 error body with its six-digit code, tracking id and message",
    topic: "$dps/registrations/res/401/?$rid=1",
    payload: json({ errorCode: 401002, trackingId: "t-1", message: "Unauthorized", timestampUtc: "2026-01-01T00:00:00Z" }),
    expected: { status: 401, rid: "1", error: { errorCode: 401002, trackingId: "t-1", message: "Unauthorized", timestampUtc: "2026-01-01T00:00:00Z" } },
  },
  {
    name: "429 with retry-after and a 429001 body",
    topic: "$dps/registrations/res/429/?$rid=3&retry-after=10",
    payload: json({ errorCode: 429001, trackingId: "t-2", message: "Operations are being throttled" }),
    expected: { status: 429, rid: "3", retryAfterSeconds: 10, error: { errorCode: 429001, trackingId: "t-2", message: "Operations are being throttled" } },
  },
  {
    name: "500 with a non-JSON body keeps its status",
    topic: "$dps/registrations/res/500/?$rid=4",
    payload: utf8Encode("Internal Server Error"),
    expected: { status: 500, rid: "4", error: {} },
  },
  {
    name: "retry-after garbage is reported, not fatal",
    topic: "$dps/registrations/res/202/?$rid=5&retry-after=soon",
    payload: json({ operationId: "op", status: "assigning" }),
    expected: { status: 202, rid: "5", retryAfterInvalid: "soon", operation: { status: "assigning", operationId: "op" } },
  },
  {
    name: "percent-encoded rid is decoded",
    topic: "$dps/registrations/res/202/?$rid=a%2Fb&retry-after=0",
    payload: json({ operationId: "op", status: "assigning" }),
    expected: { status: 202, rid: "a/b", retryAfterSeconds: 0, operation: { status: "assigning", operationId: "op" } },
  },
  { name: "another topic is not a DPS response", topic: "devices/d/messages/devicebound/", payload: json({}), expected: null },
  { name: "no status in the topic", topic: "$dps/registrations/res/?$rid=1", payload: json({}), error: "MALFORMED_TOPIC" },
  { name: "a status that is not three digits", topic: "$dps/registrations/res/20x/?$rid=1", payload: json({}), error: "MALFORMED_TOPIC" },
  { name: "no $rid", topic: "$dps/registrations/res/202/?retry-after=3", payload: json({}), error: "MALFORMED_TOPIC" },
  { name: "a broken percent-escape", topic: "$dps/registrations/res/202/?$rid=%zz", payload: json({}), error: "MALFORMED_TOPIC" },
  { name: "non-JSON 202 body", topic: "$dps/registrations/res/202/?$rid=1", payload: utf8Encode("<html>"), error: "MALFORMED_JSON" },
  { name: "JSON that is not an object", topic: "$dps/registrations/res/202/?$rid=1", payload: json([1, 2]), error: "MALFORMED_JSON" },
  { name: "bad UTF-8 in the body", topic: "$dps/registrations/res/202/?$rid=1", payload: new Uint8Array([0x7b, 0xff, 0x7d]), error: "MALFORMED_UTF8" },
  { name: "missing status", topic: "$dps/registrations/res/202/?$rid=1", payload: json({ operationId: "op" }), error: "MALFORMED_BODY" },
  { name: "unknown status", topic: "$dps/registrations/res/202/?$rid=1", payload: json({ operationId: "op", status: "teleporting" }), error: "UNKNOWN_STATUS" },
  { name: "operationId of the wrong type", topic: "$dps/registrations/res/202/?$rid=1", payload: json({ operationId: 5, status: "assigning" }), error: "MALFORMED_BODY" },
  { name: "assigned without a registrationState", topic: "$dps/registrations/res/200/?$rid=1", payload: json({ operationId: "op", status: "assigned" }), error: "MALFORMED_BODY" },
  {
    name: "assigned without an assignedHub",
    topic: "$dps/registrations/res/200/?$rid=1",
    payload: json({ operationId: "op", status: "assigned", registrationState: { ...state, assignedHub: undefined } }),
    error: "MALFORMED_BODY",
  },
  {
    name: "errorCode of the wrong type in a registration state",
    topic: "$dps/registrations/res/200/?$rid=1",
    payload: json({ operationId: "op", status: "failed", registrationState: { status: "failed", errorCode: "four" } }),
    error: "MALFORMED_BODY",
  },
  { name: "a status the protocol does not use (204)", topic: "$dps/registrations/res/204/?$rid=1", payload: json({}), error: "UNKNOWN_STATUS" },
  { name: "an oversize body", topic: "$dps/registrations/res/202/?$rid=1", payload: new Uint8Array(96 * 1024 + 1).fill(0x20), error: "OVERSIZE" },
  // Found by fuzzing (test/support/fuzz.ts): each once crashed the parser with a TypeError or RangeError, or aborted XS.
  {
    name: "an error body whose errorCode is an object with a toString that is not a function",
    topic: "$dps/registrations/res/401/?$rid=1&retry-after=2",
    payload: utf8Encode('{"errorCode":{"toString":1},"trackingId":"t-1"}'),
    expected: { status: 401, rid: "1", retryAfterSeconds: 2, error: {} },
  },
  { name: "an error body whose errorCode is an array", topic: "$dps/registrations/res/500/?$rid=1", payload: utf8Encode('{"errorCode":[[{"toString":1}]]}'), expected: { status: 500, rid: "1", error: {} } },
  {
    name: "a registration state whose errorCode is an object",
    topic: "$dps/registrations/res/200/?$rid=1",
    payload: utf8Encode('{"operationId":"op","status":"failed","registrationState":{"status":"failed","errorCode":{"toString":1}}}'),
    error: "MALFORMED_BODY",
  },
  { name: "arrays nested 5,000 deep (refused before JSON.parse)", topic: "$dps/registrations/res/202/?$rid=1", payload: utf8Encode("[".repeat(5000) + "]".repeat(5000)), error: "MALFORMED_JSON" },
  {
    name: "a payload nested 5,000 deep in an assigned state",
    topic: "$dps/registrations/res/200/?$rid=1",
    payload: utf8Encode(`{"operationId":"op","status":"assigned","registrationState":{"status":"assigned","assignedHub":"h.example","deviceId":"d","payload":${'{"a":'.repeat(5000)}1${"}".repeat(5000)}}}`),
    error: "MALFORMED_JSON",
  },
  { name: "an error body nested 5,000 deep keeps its status", topic: "$dps/registrations/res/503/?$rid=1&retry-after=5", payload: utf8Encode("[".repeat(5000)), expected: { status: 503, rid: "1", retryAfterSeconds: 5, error: {} } },
  {
    name: "an assigned state whose hub and device are only under __proto__",
    topic: "$dps/registrations/res/200/?$rid=1",
    payload: utf8Encode('{"operationId":"op","status":"assigned","registrationState":{"__proto__":{"assignedHub":"evil.example","deviceId":"x"},"toString":1,"hasOwnProperty":1,"status":"assigned"}}'),
    error: "MALFORMED_BODY",
  },
  {
    name: "prototype keys beside the real fields are ignored",
    topic: "$dps/registrations/res/202/?$rid=1",
    payload: utf8Encode('{"__proto__":{"status":"assigned"},"constructor":{"prototype":{"x":1}},"toString":1,"hasOwnProperty":{},"operationId":"op","status":"assigning"}'),
    expected: { status: 202, rid: "1", operation: { status: "assigning", operationId: "op" } },
  },
  {
    name: "a 16-digit retry-after is a number (capped at 2^53 - 1), for the policy to clamp",
    topic: "$dps/registrations/res/429/?$rid=1&retry-after=9999999999999999",
    payload: json({ errorCode: 429001 }),
    expected: { status: 429, rid: "1", retryAfterSeconds: 9007199254740991, error: { errorCode: 429001 } },
  },
  {
    name: "a 400-digit retry-after is a number too",
    topic: `$dps/registrations/res/202/?$rid=1&retry-after=${"9".repeat(400)}`,
    payload: json({ operationId: "op", status: "assigning" }),
    expected: { status: 202, rid: "1", retryAfterSeconds: 9007199254740991, operation: { status: "assigning", operationId: "op" } },
  },
  {
    name: "a decimal retry-after is seconds",
    topic: "$dps/registrations/res/202/?$rid=1&retry-after=1.25",
    payload: json({ operationId: "op", status: "assigning" }),
    expected: { status: 202, rid: "1", retryAfterSeconds: 1.25, operation: { status: "assigning", operationId: "op" } },
  },
  {
    name: "a negative retry-after is reported invalid",
    topic: "$dps/registrations/res/429/?$rid=1&retry-after=-5",
    payload: json({ errorCode: 429001 }),
    expected: { status: 429, rid: "1", retryAfterInvalid: "-5", error: { errorCode: 429001 } },
  },
  {
    name: "an unknown parameter with a broken escape is ignored",
    topic: "$dps/registrations/res/202/?$rid=1&x=%zz",
    payload: json({ operationId: "op", status: "assigning" }),
    expected: { status: 202, rid: "1", operation: { status: "assigning", operationId: "op" } },
  },
  { name: "a $rid that decodes to invalid UTF-8", topic: "$dps/registrations/res/202/?$rid=%ff", payload: json({}), error: "MALFORMED_TOPIC" },
];
