/**
 * Mutated DPS answers never crash the parsers or the registration machine (a bounded sample of
 * `npm run fuzz`, fixed seeds), and one regression test per crash class that fuzzing found.
 */
import test from "ava";
import { PeerError } from "../modules/errors.js";
import { utf8Encode } from "../modules/encoding.js";
import { MAX_JSON_DEPTH, parseLookupResponse, parseResponse, readResponse } from "../modules/dps-protocol.js";
import { RegistrationMachine, type RegistrationCommand } from "../modules/registration.js";
import { portableCrypto } from "../modules/sha256.js";
import { baseConfig, T0 } from "./support/transcript.js";
import { fuzzInput, fuzzParsers, fuzzRegistration, fuzzRandom } from "./support/fuzz.js";

const json = (text: string): Uint8Array => utf8Encode(text);
const deep = (n: number): string => "[".repeat(n) + "]".repeat(n);

/** Calls `f`; returns what it threw, or undefined. Fails the test unless that is a PeerError. */
function peerErrorOrNothing(t: { fail: (m: string) => void }, f: () => unknown): PeerError | undefined {
  try {
    f();
    return undefined;
  } catch (error) {
    if (!(error instanceof PeerError)) t.fail(`threw ${error instanceof Error ? `${error.name}: ${error.message}` : typeof error}, not a PeerError`);
    return error as PeerError;
  }
}

test("fuzz: 20,000 mutated answers through the parsers, nothing untyped", (t) => {
  const report = fuzzParsers(20_000, 1);
  t.deepEqual(report.untypedErrors, []);
  t.is(report.untyped, 0);
  t.is(report.runs, 20_000);
  // The sample reaches every kind of outcome, not just one.
  for (const code of ["MALFORMED_TOPIC", "MALFORMED_UTF8", "MALFORMED_JSON", "MALFORMED_BODY", "UNKNOWN_STATUS"]) t.true(report.byCode[code] > 0, code);
  t.true(report.outcomes["read: 200"] > 0 && report.outcomes["read: 202"] > 0 && report.outcomes["read: error"] > 0);
  t.true(report.outcomes["lookup: 200"] > 0 && report.outcomes["lookup: error"] > 0);
});

test("fuzz: 5,000 mutated answers to a started registration machine, nothing untyped", (t) => {
  const report = fuzzRegistration(5_000, 2);
  t.deepEqual(report.untypedErrors, []);
  t.is(report.untyped, 0);
  t.is(report.runs, 5_000);
  // The answers reach every phase, and the lookup (after a 5xx) gets mutated answers too.
  const outcomes = Object.keys(report.outcomes).join(" | ");
  for (const phase of ["waiting", "failed", "assigned", "awaiting-response"]) t.true(outcomes.includes(`register → ${phase}`), phase);
  t.true(outcomes.includes("before SUBACK → subscribing") && outcomes.includes("poll → waiting"));
  for (const phase of ["waiting", "failed", "assigned"]) t.true(outcomes.includes(`lookup answered → ${phase}`), `lookup answered → ${phase}`);
});

test("fuzz: the generator is deterministic and inputs are rebuilt from (seed, index)", (t) => {
  const a = fuzzRandom(7);
  const b = fuzzRandom(7);
  for (let i = 0; i < 100; i++) {
    const x = a();
    t.is(x, b());
    t.true(x >= 0 && x < 1);
  }
  t.deepEqual(fuzzInput(3, 41), fuzzInput(3, 41));
  t.notDeepEqual(fuzzInput(3, 41), fuzzInput(3, 42));
  t.deepEqual(fuzzParsers(300, 9), fuzzParsers(300, 9));
});

// ---- one regression test per crash class ---------------------------------------------------------

const hostileCodes = ['{"toString":1}', "{}", '[{"toString":1}]', '{"valueOf":{},"toString":{}}', deep(20), deep(5000)];

test("regression: an errorCode that is an object or an array is MALFORMED_BODY, on every error path", (t) => {
  for (const code of hostileCodes) {
    const errorBody = json(`{"errorCode":${code},"trackingId":"t-1","message":"m"}`);
    for (const status of [400, 401, 404, 429, 500, 503]) {
      const topic = `$dps/registrations/res/${status}/?$rid=1&retry-after=4`;
      const answer = readResponse(topic, errorBody)!;
      t.deepEqual(answer.error, {}, `${status} ${code.slice(0, 20)}`);
      t.is(answer.retryAfterSeconds, 4);
      t.true(answer.problem instanceof PeerError);
      t.is(peerErrorOrNothing(t, () => parseResponse(topic, errorBody)), undefined);
      const lookup = peerErrorOrNothing(t, () => parseLookupResponse({ status, headers: { "retry-after": "4" }, body: errorBody }));
      t.is(lookup, undefined);
    }
    const stateBody = json(`{"operationId":"op","status":"failed","registrationState":{"status":"failed","errorCode":${code}}}`);
    const answer = readResponse("$dps/registrations/res/200/?$rid=1", stateBody)!;
    t.true(answer.problem instanceof PeerError && answer.operation === undefined);
    t.true(peerErrorOrNothing(t, () => parseResponse("$dps/registrations/res/200/?$rid=1", stateBody)) instanceof PeerError);
    const lookupState = json(`{"status":"failed","errorCode":${code}}`);
    t.true(peerErrorOrNothing(t, () => parseLookupResponse({ status: 200, headers: {}, body: lookupState })) instanceof PeerError);
  }
});

test("regression: the message names the type of a bad errorCode, never converts it", (t) => {
  const answer = readResponse("$dps/registrations/res/401/?$rid=1", json('{"errorCode":{"toString":1}}'))!;
  t.is(answer.problem?.code, "MALFORMED_BODY");
  t.regex(answer.problem!.message, /errorCode should be an integer, got object/);
  const array = readResponse("$dps/registrations/res/401/?$rid=1", json('{"errorCode":[1]}'))!;
  t.regex(array.problem!.message, /got an array/);
});

test(`regression: nesting deeper than ${MAX_JSON_DEPTH} is MALFORMED_JSON before JSON.parse, up to 5,000 levels`, (t) => {
  for (const n of [MAX_JSON_DEPTH + 1, 100, 1000, 5000]) {
    const bodies = [
      deep(n),
      `{"operationId":"op","status":"assigning","registrationState":${deep(n)}}`,
      `{"operationId":"op","status":"assigned","registrationState":{"status":"assigned","assignedHub":"h.example","deviceId":"d","payload":${deep(n)}}}`,
      '{"a":'.repeat(n) + "1" + "}".repeat(n),
      "[".repeat(n), // unterminated
    ];
    for (const text of bodies) {
      for (const status of [200, 202, 500]) {
        const answer = readResponse(`$dps/registrations/res/${status}/?$rid=1&retry-after=2`, json(text))!;
        t.is(answer.problem?.code, "MALFORMED_JSON", `${status} depth ${n}`);
        t.is(answer.retryAfterSeconds, 2);
      }
      const lookup = peerErrorOrNothing(t, () => parseLookupResponse({ status: 200, headers: {}, body: json(text) }));
      t.is(lookup?.code, "MALFORMED_JSON");
    }
  }
  // Exactly at the limit, and brackets inside strings (escaped quotes too) do not count.
  const atLimit = `{"operationId":"op","status":"assigning","registrationState":{"status":"assigning","payload":${deep(MAX_JSON_DEPTH - 2)}}}`;
  t.is(readResponse("$dps/registrations/res/202/?$rid=1", json(atLimit))!.problem, undefined);
  const inString = `{"operationId":"op\\"${"[".repeat(100)}","status":"assigning"}`;
  t.is(readResponse("$dps/registrations/res/202/?$rid=1", json(inString))!.operation?.operationId, `op"${"[".repeat(100)}`);
});

test("regression: __proto__, constructor, toString and hasOwnProperty keys neither pollute nor are read through", (t) => {
  const before = Object.getOwnPropertyNames(Object.prototype).length;
  const proto = '{"status":"assigned","assignedHub":"evil.example","deviceId":"x","errorCode":{"toString":1},"polluted":1}';
  // A 200 whose only status is under __proto__: no status of its own.
  const noStatus = readResponse("$dps/registrations/res/200/?$rid=1", json(`{"__proto__":${proto},"operationId":"op"}`))!;
  t.is(noStatus.problem?.code, "MALFORMED_BODY");
  // An assigned state whose hub and device are only under __proto__ / constructor.prototype.
  const state = `{"__proto__":${proto},"constructor":{"prototype":${proto}},"toString":1,"hasOwnProperty":1,"valueOf":{},"status":"assigned"}`;
  const hidden = readResponse("$dps/registrations/res/200/?$rid=1", json(`{"operationId":"op","status":"assigned","registrationState":${state}}`))!;
  t.is(hidden.problem?.code, "MALFORMED_BODY");
  t.true(peerErrorOrNothing(t, () => parseLookupResponse({ status: 200, headers: {}, body: json(state) })) instanceof PeerError);
  // An error body with only prototype keys: nothing read.
  const error = readResponse("$dps/registrations/res/401/?$rid=1", json(`{"__proto__":{"errorCode":401002,"message":"x"},"toString":1,"hasOwnProperty":{}}`))!;
  t.deepEqual(error.error, {});
  t.is(error.problem, undefined);
  // A fine answer with such keys beside the real ones still parses, and nothing leaked.
  const fine = readResponse("$dps/registrations/res/202/?$rid=1", json(`{"__proto__":{"x":1},"hasOwnProperty":1,"toString":1,"operationId":"op","status":"assigning"}`))!;
  t.deepEqual(fine.operation, { status: "assigning", operationId: "op" });
  t.is(Object.getOwnPropertyNames(Object.prototype).length, before);
  t.false("polluted" in {});
});

test("regression: a field is never read through the prototype, even one that something else polluted", (t) => {
  const names = ["status", "assignedHub", "deviceId", "errorCode", "registrationState", "operationId", "message", "trackingId"];
  const values: Record<string, unknown> = { status: "assigned", assignedHub: "evil.example", deviceId: "x", errorCode: 1, registrationState: { status: "assigned" }, operationId: "op", message: "m", trackingId: "t" };
  try {
    for (const name of names) Object.defineProperty(Object.prototype, name, { value: values[name], configurable: true, writable: true });
    const answer = readResponse("$dps/registrations/res/200/?$rid=1", json("{}"))!;
    t.is(answer.problem?.code, "MALFORMED_BODY");
    t.is(answer.operation, undefined);
    const state = readResponse("$dps/registrations/res/200/?$rid=1", json('{"status":"assigned","registrationState":{"status":"assigned"}}'))!;
    t.is(state.problem?.code, "MALFORMED_BODY");
    t.deepEqual({ ...readResponse("$dps/registrations/res/401/?$rid=1", json("{}"))!.error }, {});
    t.true(peerErrorOrNothing(t, () => parseLookupResponse({ status: 200, headers: {}, body: json("{}") })) instanceof PeerError);
  } finally {
    for (const name of names) delete (Object.prototype as Record<string, unknown>)[name];
  }
});

test("regression: a 16-digit (or longer) retry-after is honoured as a number, clamped by the policy, not invalid", (t) => {
  const body = json('{"operationId":"op","status":"assigning"}');
  const sixteen = readResponse("$dps/registrations/res/202/?$rid=1&retry-after=9999999999999999", body)!;
  t.is(sixteen.retryAfterSeconds, Number.MAX_SAFE_INTEGER); // past 2^53 - 1: capped there
  t.is(sixteen.retryAfterInvalid, undefined);
  t.is(readResponse("$dps/registrations/res/202/?$rid=1&retry-after=1234567890123456", body)!.retryAfterSeconds, 1234567890123456);
  t.is(readResponse(`$dps/registrations/res/429/?$rid=1&retry-after=${"9".repeat(400)}`, json("{}"))!.retryAfterSeconds, Number.MAX_SAFE_INTEGER);
  t.is(readResponse("$dps/registrations/res/429/?$rid=1&retry-after=1234567890123456.5", json("{}"))!.retryAfterSeconds, 1234567890123456.5);
  for (const bad of ["-5", "soon", "", "1e3", "0x10", " 3", ".5", "3."]) {
    const answer = readResponse(`$dps/registrations/res/429/?$rid=1&retry-after=${bad}`, json("{}"))!;
    t.is(answer.retryAfterSeconds, undefined, bad);
    t.is(answer.retryAfterInvalid, bad);
  }
  t.is(parseLookupResponse({ status: 429, headers: { "retry-after": "12345678901234567" }, body: json("{}") }).retryAfterSeconds, Number.MAX_SAFE_INTEGER);
  t.is(parseLookupResponse({ status: 429, headers: { "retry-after": "1.5" }, body: json("{}") }).retryAfterSeconds, 1.5);
  // The machine waits the policy's 10-minute maximum (plus jitter), not the exponential backoff alone.
  const machine = new RegistrationMachine(baseConfig, { crypto: portableCrypto, random: () => 0.5 });
  machine.handle({ kind: "start" }, T0);
  machine.handle({ kind: "connack", returnCode: 0 }, T0);
  machine.handle({ kind: "suback", granted: [1] }, T0);
  const commands = machine.handle({ kind: "message", topic: "$dps/registrations/res/429/?$rid=1&retry-after=9999999999999999", payload: json('{"errorCode":429001}') }, T0);
  const timer = commands.find((c): c is Extract<RegistrationCommand, { kind: "set-timer" }> => c.kind === "set-timer");
  t.true(timer !== undefined && timer.delayMs >= 600_000 && Number.isFinite(timer.delayMs), JSON.stringify(timer));
});

test("regression: retry-after is kept on an unreadable body and on an unknown status", (t) => {
  const cases: [string, Uint8Array, string][] = [
    ["202", json("<html>"), "MALFORMED_JSON"],
    ["200", new Uint8Array([0x7b, 0xff, 0x7d]), "MALFORMED_UTF8"],
    ["202", json('{"status":"teleporting"}'), "UNKNOWN_STATUS"],
    ["202", json('{"status":"assigning","operationId":{"toString":1}}'), "MALFORMED_BODY"],
    ["202", new Uint8Array(96 * 1024 + 1).fill(0x20), "OVERSIZE"],
    ["503", json("Service Unavailable"), "MALFORMED_JSON"],
    ["204", json("{}"), "UNKNOWN_STATUS"],
    ["201", json('{"operationId":"op","status":"assigning"}'), "UNKNOWN_STATUS"],
    ["100", new Uint8Array(0), "UNKNOWN_STATUS"],
  ];
  for (const [status, payload, code] of cases) {
    for (const [retry, seconds, invalid] of [["7", 7, undefined], ["2.5", 2.5, undefined], ["soon", undefined, "soon"]] as const) {
      const answer = readResponse(`$dps/registrations/res/${status}/?retry-after=${retry}&$rid=9`, payload)!;
      t.is(answer.status, Number(status));
      t.is(answer.rid, "9");
      t.is(answer.problem?.code as string | undefined, code, `${status} ${code}`);
      t.is(answer.retryAfterSeconds, seconds, `${status} ${code} retry-after ${retry}`);
      t.is(answer.retryAfterInvalid, invalid);
      t.is(answer.operation, undefined);
      if (Number(status) >= 300) t.deepEqual(answer.error, {});
    }
  }
});

test("regression: a broken DPS topic throws MALFORMED_TOPIC only, whatever is in it", (t) => {
  for (const topic of [
    "$dps/registrations/res/",
    "$dps/registrations/res/202",
    "$dps/registrations/res/202/",
    "$dps/registrations/res/202/?retry-after=3",
    "$dps/registrations/res/2x2/?$rid=1",
    "$dps/registrations/res/202/x?$rid=1",
    "$dps/registrations/res/202/?$rid=",
    "$dps/registrations/res/202/?$rid=%zz",
    "$dps/registrations/res/202/?$rid=%ff",
    "$dps/registrations/res/202/?$rid=%ed%a0%80",
    `$dps/registrations/res/202/?$rid=${"r".repeat(300)}`,
  ]) {
    const error = peerErrorOrNothing(t, () => readResponse(topic, json("{}")));
    t.is(error?.code, "MALFORMED_TOPIC", topic);
  }
  // An unknown parameter with a broken escape is not ours to decode.
  t.is(readResponse("$dps/registrations/res/202/?$rid=1&x=%zz", json('{"operationId":"op","status":"assigning"}'))?.rid, "1");
  t.is(readResponse("devices/d/messages/devicebound/", json("{}")), undefined);
});

test("regression: a lookup whose headers are odd or whose error body is hostile still parses", (t) => {
  for (const body of ['{"errorCode":{"toString":1}}', deep(5000), '{"__proto__":{"errorCode":1}}', "\u0000", ""]) {
    const result = parseLookupResponse({ status: 500, headers: { "x-ms-error-code": "500000", "retry-after": "3" }, body: json(body) });
    t.is(result.error?.errorCode, 500000, body.slice(0, 20));
    t.is(result.retryAfterSeconds, 3);
  }
  const headers = Object.create(null) as Record<string, string>;
  headers["retry-after"] = "Wed, 21 Oct 2026 07:28:00 GMT";
  const dated = parseLookupResponse({ status: 503, headers, body: json("{}") });
  t.is(dated.retryAfterSeconds, undefined);
});
