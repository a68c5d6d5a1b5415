/** DPS topics, payloads and parsers: every shared parsing case, builders, and fuzzed input never crashes. */
import test from "ava";
import fc from "fast-check";
import { DpsError, PeerError } from "../modules/errors.js";
import { utf8Decode, utf8Encode } from "../modules/encoding.js";
import {
  dpsCredentials,
  lookupRequest,
  parseLookupResponse,
  parseResponse,
  pollTopic,
  readResponse,
  registerPayload,
  registerTopic,
  httpStatusOfErrorCode,
} from "../modules/dps-protocol.js";
import { parsingCases } from "./vectors/protocol.js";

for (const c of parsingCases) {
  test(`dps parse: ${c.name}`, (t) => {
    if (c.error) {
      const error = t.throws(() => parseResponse(c.topic, c.payload), { code: c.error } as never);
      t.true(error instanceof DpsError && error.side === "peer", "a bad answer is the peer's fault");
    } else {
      t.deepEqual(JSON.parse(JSON.stringify(parseResponse(c.topic, c.payload) ?? null)), c.expected);
    }
  });
}

for (const c of parsingCases) {
  test(`dps read: ${c.name}`, (t) => {
    if (c.error === "MALFORMED_TOPIC") {
      t.throws(() => readResponse(c.topic, c.payload), { instanceOf: PeerError, code: "MALFORMED_TOPIC" } as never);
    } else if (c.error) {
      const answer = readResponse(c.topic, c.payload);
      t.true(answer?.problem instanceof PeerError);
      t.is(answer?.problem?.code as string | undefined, c.error);
      t.is(answer?.operation, undefined);
    } else {
      const answer = readResponse(c.topic, c.payload);
      const { problem, ...rest } = answer ?? {};
      t.deepEqual(JSON.parse(JSON.stringify(answer === undefined ? null : rest)), c.expected);
      // An error answer with an unreadable body says why; parseResponse returns it without.
      if (problem) t.true(problem instanceof PeerError && answer!.status >= 300);
    }
  });
}

test("dps read: what cannot be used is a problem beside what could be read", (t) => {
  const bad = readResponse("$dps/registrations/res/202/?retry-after=4&$rid=3", utf8Encode("<html>"))!;
  t.deepEqual({ status: bad.status, rid: bad.rid, retryAfterSeconds: bad.retryAfterSeconds, code: bad.problem?.code }, { status: 202, rid: "3", retryAfterSeconds: 4, code: "MALFORMED_JSON" });
  t.is(bad.operation, undefined);
  const unknown = readResponse("$dps/registrations/res/204/?$rid=3&retry-after=x", utf8Encode("{}"))!;
  t.is(unknown.problem?.code, "UNKNOWN_STATUS");
  t.is(unknown.retryAfterInvalid, "x");
  const error = readResponse("$dps/registrations/res/500/?$rid=3&retry-after=6", utf8Encode("oops"))!;
  t.deepEqual(error.error, {});
  t.is(error.problem?.code, "MALFORMED_JSON");
  t.is(error.retryAfterSeconds, 6);
  t.deepEqual(parseResponse("$dps/registrations/res/500/?$rid=3&retry-after=6", utf8Encode("oops")), { status: 500, rid: "3", retryAfterSeconds: 6, error: {} });
  t.throws(() => parseResponse("$dps/registrations/res/202/?$rid=3", utf8Encode("<html>")), { code: "MALFORMED_JSON" } as never);
  t.is(readResponse("devices/d/messages/devicebound/", utf8Encode("{}")), undefined);
});

test("dps: CONNECT credentials carry the scope, registration id, api-version and a URL-encoded client version", (t) => {
  const c = dpsCredentials({ idScope: "0ne00000001", registrationId: "dev-001", sasToken: "SharedAccessSignature x", userAgent: "dps-runtime/0.1 (esp32)" });
  t.is(c.clientId, "dev-001");
  t.is(c.username, "0ne00000001/registrations/dev-001/api-version=2019-03-31&ClientVersion=dps-runtime%2F0.1%20(esp32)");
  t.is(c.password, "SharedAccessSignature x");
});

test("dps: register and poll topics echo rid and operationId URL-encoded", (t) => {
  t.is(registerTopic("1"), "$dps/registrations/PUT/iotdps-register/?$rid=1");
  t.is(pollTopic("2", "4.abc&x"), "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.abc%26x");
  t.throws(() => registerTopic(""), { code: "INVALID_ARGUMENT" } as never);
});

test("dps: register payload with and without custom allocation data, size checked before sending", (t) => {
  t.is(utf8Decode(registerPayload("dev-001")), '{"registrationId":"dev-001"}');
  t.is(utf8Decode(registerPayload("dev-001", { a: [1] })), '{"registrationId":"dev-001","payload":{"a":[1]}}');
  t.throws(() => registerPayload("dev-001", { big: "x".repeat(100 * 1024) }), { code: "OVERSIZE" } as never);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  t.throws(() => registerPayload("dev-001", cyclic), { code: "INVALID_ARGUMENT" } as never);
});

test("dps: the status lookup request is the documented POST with the SAS token", (t) => {
  const r = lookupRequest({ host: "global.azure-devices-provisioning.net", idScope: "0ne00000001", registrationId: "dev-001", sasToken: "SharedAccessSignature t" });
  t.is(r.method, "POST");
  t.is(r.port, 443);
  t.is(r.path, "/0ne00000001/registrations/dev-001?api-version=2021-10-01");
  t.is(r.headers.authorization, "SharedAccessSignature t");
  t.is(utf8Decode(r.body), '{"registrationId":"dev-001"}');
  t.is(r.headers["content-length"], String(r.body.length));
});

test("dps: lookup answers: 200 state, 404 with x-ms-error-code only, 429 with retry-after", (t) => {
  const ok = parseLookupResponse({ status: 200, headers: {}, body: utf8Encode(JSON.stringify({ status: "assigned", assignedHub: "h.azure-devices.net", deviceId: "d" })) });
  t.is(ok.registrationState?.assignedHub, "h.azure-devices.net");
  const missing = parseLookupResponse({ status: 404, headers: { "x-ms-error-code": "404202" }, body: new Uint8Array() });
  t.is(missing.error?.errorCode, 404202);
  t.is(missing.errorCodeHeader, "404202");
  const busy = parseLookupResponse({ status: 429, headers: { "retry-after": "7" }, body: utf8Encode('{"errorCode":429001}') });
  t.is(busy.retryAfterSeconds, 7);
  t.is(busy.error?.errorCode, 429001);
  t.is(parseLookupResponse({ status: 429, headers: { "retry-after": "1234567890123456789" }, body: new Uint8Array() }).retryAfterSeconds, Number.MAX_SAFE_INTEGER);
  t.is(parseLookupResponse({ status: 429, headers: { "retry-after": "-1" }, body: new Uint8Array() }).retryAfterSeconds, undefined);
  const hostile = parseLookupResponse({ status: 500, headers: {}, body: utf8Encode('{"errorCode":{"toString":1},"trackingId":"t"}') });
  t.deepEqual(hostile.error, {});
  t.throws(() => parseLookupResponse({ status: 200, headers: {}, body: utf8Encode("nope") }), { code: "MALFORMED_JSON" } as never);
});

test("dps: the six-digit code divided by 1000 is the HTTP status", (t) => {
  t.is(httpStatusOfErrorCode(401002), 401);
  t.is(httpStatusOfErrorCode(429001), 429);
});

test("dps: any topic and any bytes either parse or raise a PeerError, never anything else", (t) => {
  const topics = fc.oneof(
    fc.string({ maxLength: 80 }),
    fc.tuple(fc.constantFrom("200", "202", "401", "429", "500", "2x2", ""), fc.string({ maxLength: 30 })).map(([s, q]) => `$dps/registrations/res/${s}/?${q}`),
  );
  const bodies = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.jsonValue({ maxDepth: 3 }).map((v) => utf8Encode(JSON.stringify(v) ?? "null")),
    fc.record({ operationId: fc.oneof(fc.string(), fc.integer()), status: fc.constantFrom("assigning", "assigned", "failed", "x", 3) }).map((v) => utf8Encode(JSON.stringify(v))),
  );
  fc.assert(
    fc.property(topics, bodies, (topic, body) => {
      try {
        const answer = readResponse(topic, body);
        if (answer?.problem !== undefined && !(answer.problem instanceof PeerError)) return false;
      } catch (error) {
        if (!(error instanceof PeerError && error.code === "MALFORMED_TOPIC")) return false;
      }
      try {
        parseResponse(topic, body);
        return true;
      } catch (error) {
        return error instanceof DpsError && error.side === "peer";
      }
    }),
    { numRuns: 3000 },
  );
  t.pass();
});
