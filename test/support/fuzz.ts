/**
 * A portable fuzz harness for what comes from DPS: realistic answers, mutated (bytes flipped,
 * truncated, hostile JSON put where numbers and strings belong, deep nesting, prototype keys,
 * invalid UTF-8, broken topics), run through the parsers and through a RegistrationMachine.
 * No host API: the Node tests, `npm run fuzz` and the XS tier import this same file. The harness
 * itself never JSON.parses a mutated text (XS's JSON.parse recurses per level), only the corpus.
 *
 * Every run draws from its own generator, seeded from (seed, index): `fuzzInput(seed, index)`
 * rebuilds the input of any reported failure.
 *
 *   fuzzParsers(count, seed)       readResponse, parseResponse, parseLookupResponse
 *   fuzzRegistration(count, seed)  a started machine, the answer delivered to the rid in flight
 */
import { DpsError, excerpt, PeerError } from "../../modules/errors.js";
import { utf8Encode } from "../../modules/encoding.js";
import { parseLookupResponse, parseResponse, readResponse, type DpsAnswer } from "../../modules/dps-protocol.js";
import type { HttpsResponse } from "../../modules/ports.js";
import { RegistrationMachine, type RegistrationCommand, type RegistrationEvent } from "../../modules/registration.js";
import { portableCrypto } from "../../modules/sha256.js";
import { baseConfig, T0 } from "./transcript.js";
import { seededRandom } from "../../hosts/desktop/seeded-random.js";

/** A source of numbers in [0, 1). */
export type Random = () => number;

/** The harness's generator: the desktop host's seeded sfc32, portable. */
export function fuzzRandom(seed: number): Random {
  return seededRandom(seed);
}

/** The generator of run `index` of a campaign seeded with `seed`. */
export function runRandom(seed: number, index: number): Random {
  return fuzzRandom((Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(seed >>> 0, 0x85ebca77)) >>> 0);
}

// ---------------------------------------------------------------------------------------------
// The corpus: answers as DPS and its status lookup send them.

export interface CorpusAnswer {
  readonly name: string;
  readonly status: number;
  readonly retryAfter?: string;
  /** `x-ms-error-code`, when the lookup answer carries it. */
  readonly errorCodeHeader?: string;
  /** The body as sent (JSON, or text for the unreadable ones). */
  readonly body: string;
}

const STATE = {
  registrationId: "dev-001",
  createdDateTimeUtc: "2026-01-01T00:00:01.2345678Z",
  assignedHub: "contoso-hub-1.azure-devices.net",
  deviceId: "dev-001",
  status: "assigned",
  substatus: "initialAssignment",
  lastUpdatedDateTimeUtc: "2026-01-01T00:00:02.3456789Z",
  etag: "IjAwMDAxMjM0LTAwMDAtMDAwMC0wMDAwLTYzNjQ1NmE3MDAwMCI=",
  payload: { site: "lab-2", floors: [1, 2], config: { interval: 30, unit: "s" } },
};
const OPERATION_ID = "4.d0d2e1f1a4b5c6d7.1b0a0c8e-7bb8-4c2b-9b1c-0d2f5e6a7b8c";
const TRACKING_ID = "8f0c3b2a-1d4e-4f6a-9b7c-2e5d8a1f3c4b";
const body = (value: unknown): string => JSON.stringify(value);
const errorBody = (errorCode: number, message: string): string =>
  body({ errorCode, trackingId: TRACKING_ID, message, timestampUtc: "2026-01-01T00:00:00.1234567Z" });

export const corpus: readonly CorpusAnswer[] = [
  { name: "202 assigning", status: 202, retryAfter: "3", body: body({ operationId: OPERATION_ID, status: "assigning" }) },
  {
    name: "202 assigning with a registration state",
    status: 202,
    retryAfter: "1",
    body: body({ operationId: OPERATION_ID, status: "assigning", registrationState: { registrationId: "dev-001", status: "assigning" } }),
  },
  {
    name: "200 assigned",
    status: 200,
    body: body({ operationId: OPERATION_ID, status: "assigned", registrationState: { ...STATE, symmetricKey: { registrationId: "dev-001", enrollmentGroupId: "group-1" } } }),
  },
  {
    name: "200 failed",
    status: 200,
    body: body({
      operationId: OPERATION_ID,
      status: "failed",
      registrationState: { registrationId: "dev-001", status: "failed", errorCode: 400209, errorMessage: "Custom allocation failed with status code: 400", lastUpdatedDateTimeUtc: STATE.lastUpdatedDateTimeUtc },
    }),
  },
  { name: "200 disabled", status: 200, body: body({ operationId: OPERATION_ID, status: "disabled", registrationState: { registrationId: "dev-001", status: "disabled" } }) },
  { name: "400 bad request", status: 400, body: errorBody(400004, "The request body is malformed.") },
  { name: "401 unauthorized", status: 401, body: errorBody(401002, "The client is not authorized.") },
  { name: "404 not found", status: 404, body: errorBody(404201, "Registration not found.") },
  { name: "429 throttled", status: 429, retryAfter: "10", body: errorBody(429001, "Operations are being throttled for this tenant.") },
  { name: "500 internal error", status: 500, retryAfter: "5", body: errorBody(500000, "Internal server error.") },
  { name: "500 text body", status: 500, body: "Internal Server Error" },
  { name: "503 unavailable", status: 503, retryAfter: "30", body: errorBody(503000, "The service is unavailable.") },
  // The status lookup (HTTPS): the body of a 200 is the registration state itself.
  { name: "lookup 200 assigned", status: 200, body: body(STATE) },
  { name: "lookup 404", status: 404, errorCodeHeader: "404202", body: "" },
  { name: "lookup 404 with body", status: 404, errorCodeHeader: "404202", body: errorBody(404202, "Device registration not found.") },
  { name: "lookup 500", status: 500, retryAfter: "2", errorCodeHeader: "500000", body: errorBody(500000, "Internal server error.") },
];

// ---------------------------------------------------------------------------------------------
// Mutators

/** One mutated answer, as an MQTT message and as a lookup answer. */
export interface FuzzInput {
  /** The corpus entry and the mutations applied, for the report. */
  readonly name: string;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly lookup: HttpsResponse;
  /** The last `retry-after` value put in the topic, when the topic's parameters are intact. */
  readonly retryAfter?: string;
}

const pick = <T>(random: Random, list: readonly T[]): T => list[Math.floor(random() * list.length)];
const int = (random: Random, below: number): number => Math.floor(random() * below);

const HOSTILE: readonly string[] = [
  "{}", "[]", "null", "true", "false", "0", "-0", "-1", "1.5", "1e400", "-1e400", "1e-400", "401002.5",
  "123456789012345678901234567890", "9007199254740993", '"401002"', '"-1"', '""', '"0x10"',
  '{"toString":1}', '{"valueOf":1,"toString":{}}', '[{"toString":1}]', '[[{"toString":1}]]',
  '{"__proto__":{"status":"assigned","assignedHub":"evil.example","deviceId":"x","errorCode":1}}',
  '{"constructor":{"prototype":{"polluted":1}}}', '{"__proto__":{"polluted":1}}', '{"hasOwnProperty":1,"toJSON":1}',
  '"\\u0000\\u001f\\u007f"', '"\\ud800"', '"\\udc00\\ud800"', '"é€😀"', '"\\"]}{["', '"assigned"', '"assigning"',
  '"failed"', '"disabled"', '"unassigned"', '"contoso.azure-devices.net"', '"-bad-.example"', '["a","b"]', '[1,2,3]',
];
const KEYS: readonly string[] = [
  "__proto__", "constructor", "prototype", "toString", "valueOf", "hasOwnProperty", "toJSON", "",
  "status", "errorCode", "registrationState", "operationId", "assignedHub", "deviceId", "payload",
  "trackingId", "message", "substatus", "etag", "x509", "symmetricKey", "errorMessage",
];

/** Arrays or objects nested 1..5000 deep (half the time near MAX_JSON_DEPTH), closed or not. */
function nesting(random: Random): string {
  const n = random() < 0.5 ? 1 + int(random, 40) : Math.max(1, Math.floor(Math.exp(random() * Math.log(5000))));
  const kind = int(random, 4);
  const open = kind === 0 ? "[" : kind === 1 ? '{"a":' : kind === 2 ? '[{"b":' : '["[[{",';
  const close = kind === 0 ? "]" : kind === 1 ? "}" : kind === 2 ? "}]" : "]";
  return open.repeat(n) + (kind === 0 ? "" : "1") + (random() < 0.9 ? close.repeat(n) : "");
}

function hostile(random: Random): string {
  const r = random();
  if (r < 0.25) return nesting(random);
  if (r < 0.3) return JSON.stringify("x".repeat(1 + int(random, 2000)));
  return pick(random, HOSTILE);
}

const MARK = "\u0000M";
const KEY_MARK = "\u0001K";

function defineOwn(target: object, key: string | number, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Puts hostile fragments in place of values, or under new keys, of the (shallow) corpus body. */
function structural(text: string, random: Random, labels: string[]): string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return text;
  }
  if (value === null || typeof value !== "object") return text;
  const containers: object[] = [];
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== "object") return;
    containers.push(v);
    const keys = Object.keys(v);
    for (let i = 0; i < keys.length; i++) walk((v as Record<string, unknown>)[keys[i]]);
  };
  walk(value);
  const fragments: string[] = [];
  const newKeys: string[] = [];
  const times = 1 + int(random, 2);
  for (let k = 0; k < times; k++) {
    const target = pick(random, containers);
    const keys = Object.keys(target);
    const fragment = hostile(random);
    const marker = MARK + fragments.length;
    fragments.push(fragment);
    if (keys.length > 0 && random() < 0.6) {
      const key = pick(random, keys);
      defineOwn(target, Array.isArray(target) ? Number(key) : key, marker);
      labels.push(`${key}←${excerpt(fragment, 24)}`);
    } else if (Array.isArray(target)) {
      target.push(marker);
      labels.push(`push ${excerpt(fragment, 24)}`);
    } else {
      const key = pick(random, KEYS);
      defineOwn(target, KEY_MARK + newKeys.length, marker);
      newKeys.push(key);
      labels.push(`+${key}:${excerpt(fragment, 24)}`);
    }
  }
  let out = JSON.stringify(value);
  for (let i = 0; i < fragments.length; i++) out = out.split(JSON.stringify(MARK + i)).join(fragments[i]);
  for (let i = 0; i < newKeys.length; i++) out = out.split(JSON.stringify(KEY_MARK + i)).join(JSON.stringify(newKeys[i]));
  return out;
}

const BAD_UTF8: readonly (readonly number[])[] = [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80], [0x80], [0xf0, 0x9f, 0x98]];

function mutateBytes(bytes: Uint8Array, random: Random, labels: string[]): Uint8Array {
  const r = random();
  if (r < 0.35 && bytes.length > 0) {
    const out = bytes.slice();
    const flips = 1 + int(random, 4);
    for (let i = 0; i < flips; i++) {
      const at = int(random, out.length);
      out[at] = random() < 0.5 ? out[at] ^ (1 << int(random, 8)) : int(random, 256);
    }
    labels.push(`flip×${flips}`);
    return out;
  }
  if (r < 0.65) {
    const keep = int(random, bytes.length + 1);
    labels.push(`truncate ${keep}/${bytes.length}`);
    return bytes.slice(0, keep);
  }
  const bad = pick(random, BAD_UTF8);
  const at = int(random, bytes.length + 1);
  const out = new Uint8Array(bytes.length + bad.length);
  out.set(bytes.subarray(0, at), 0);
  out.set(bad, at);
  out.set(bytes.subarray(at), at + bad.length);
  labels.push(`bad-utf8@${at}`);
  return out;
}

const STATUSES: readonly string[] = ["200", "202", "200", "202", "201", "204", "100", "199", "299", "300", "302", "400", "401", "403", "404", "409", "412", "429", "500", "503", "599", "600", "099", "20", "2000", "2x2", ""];
const RETRY_AFTER: readonly string[] = [
  "0", "1", "3", "1.5", "0.001", "86400", "999999999", "9999999999999999", "1" + "0".repeat(30), "9".repeat(400), "1." + "5".repeat(40),
  "-5", "soon", "", "1e3", " 3", "3 ", "0x10", ".5", "3.", "NaN", "Infinity", "%33", "٣", "3%", "Wed, 21 Oct 2026 07:28:00 GMT",
];
const RIDS: readonly string[] = ["2", "99", "", "%31", "%zz", "%ff", "%c3%a9", "1%00", "r".repeat(300), "1 ", "é"];
const JUNK: readonly string[] = ["foo=bar", "=", "", "x=%zz", "retry-after", "$rid", "operationId=op", "%ff=1", "a=b=c", "é=ü"];

interface TopicPlan {
  status: string;
  params: [string, string | undefined][];
  raw: boolean;
}

function mutateTopic(plan: TopicPlan, random: Random, labels: string[]): string {
  const times = random() < 0.5 ? 0 : 1 + int(random, 2);
  for (let k = 0; k < times; k++) {
    const r = int(random, 6);
    if (r === 0) {
      plan.status = pick(random, STATUSES);
      labels.push(`status=${plan.status}`);
    } else if (r === 1) {
      const rid = random() < 0.2 ? undefined : pick(random, RIDS);
      const i = plan.params.findIndex((p) => p[0] === "$rid");
      if (rid === undefined) plan.params.splice(i < 0 ? 0 : i, i < 0 ? 0 : 1);
      else if (i >= 0 && random() < 0.7) plan.params[i] = ["$rid", rid];
      else plan.params.push(["$rid", rid]);
      labels.push(rid === undefined ? "no $rid" : `$rid=${excerpt(rid, 12)}`);
    } else if (r === 2) {
      const value = random() < 0.15 ? undefined : pick(random, RETRY_AFTER);
      const i = plan.params.findIndex((p) => p[0] === "retry-after");
      if (value === undefined) {
        if (i >= 0) plan.params.splice(i, 1);
      } else if (i >= 0 && random() < 0.7) plan.params[i] = ["retry-after", value];
      else plan.params.push(["retry-after", value]);
      labels.push(value === undefined ? "no retry-after" : `retry-after=${excerpt(value, 20)}`);
    } else if (r === 3) {
      for (let i = plan.params.length - 1; i > 0; i--) {
        const j = int(random, i + 1);
        const t = plan.params[i];
        plan.params[i] = plan.params[j];
        plan.params[j] = t;
      }
      labels.push("shuffled");
    } else if (r === 4) {
      const junk = pick(random, JUNK);
      const eq = junk.indexOf("=");
      plan.params.splice(int(random, plan.params.length + 1), 0, eq < 0 ? [junk, undefined] : [junk.slice(0, eq), junk.slice(eq + 1)]);
      labels.push(`+param ${junk}`);
    } else {
      plan.raw = true;
      labels.push("raw junk");
    }
  }
  const query = plan.params.map((p) => (p[1] === undefined ? p[0] : `${p[0]}=${p[1]}`)).join("&");
  let topic = `$dps/registrations/res/${plan.status}/?${query}`;
  if (plan.raw) {
    const r = int(random, 6);
    if (r === 0) topic = topic.replace("/?", "/");
    else if (r === 1) topic = topic.replace("/?", "//?");
    else if (r === 2) topic = topic.replace(`/${plan.status}/`, `/${plan.status}x/`);
    else if (r === 3) topic = "$dps/registrations/res/";
    else if (r === 4) topic = random() < 0.5 ? "devices/dev-001/messages/devicebound/" : "$dps/registrations/re";
    else topic += pick(random, ["#", "&", "?", "/", "\u0000", "é", "&&&"]);
  }
  return topic;
}

/** The input of run `index` (`rid` is the `$rid` the answer is meant for). */
export function fuzzInput(seed: number, index: number, rid = "1"): FuzzInput {
  return mutateAnswer(runRandom(seed, index), rid);
}

/** Draws a corpus answer and mutates its body and topic. */
export function mutateAnswer(random: Random, rid = "1"): FuzzInput {
  const entry = pick(random, corpus);
  const labels: string[] = [entry.name];
  let text = entry.body;
  if (random() < 0.6) text = structural(text, random, labels);
  if (random() < 0.15) {
    const at = int(random, text.length + 1);
    const fragment = hostile(random);
    text = text.slice(0, at) + fragment + text.slice(at);
    labels.push(`insert@${at} ${excerpt(fragment, 24)}`);
  }
  let payload = utf8Encode(text);
  if (random() < 0.3) payload = mutateBytes(payload, random, labels);
  const plan: TopicPlan = { status: String(entry.status), params: [["$rid", rid]], raw: false };
  if (entry.retryAfter !== undefined) plan.params.push(["retry-after", entry.retryAfter]);
  const topic = mutateTopic(plan, random, labels);
  let retryAfter: string | undefined;
  for (let i = 0; i < plan.params.length; i++) if (plan.params[i][0] === "retry-after") retryAfter = plan.params[i][1] ?? "";
  const headers: Record<string, string> = {};
  if (retryAfter !== undefined) headers["retry-after"] = retryAfter;
  const code = random() < 0.1 ? pick(random, ["", "abc", "4042020", "404202 ", "__proto__", "9".repeat(40)]) : entry.errorCodeHeader;
  if (code !== undefined) headers["x-ms-error-code"] = code;
  const status = /^[0-9]+$/.test(plan.status) ? Number(plan.status) : pick(random, [200, 404, 500]);
  return { name: labels.join(" | "), topic, payload, lookup: { status, headers, body: payload }, retryAfter: plan.raw ? undefined : retryAfter };
}

// ---------------------------------------------------------------------------------------------
// Campaigns

export interface FuzzFailure {
  /** Which run (`fuzzInput(seed, index, rid)` rebuilds its input; rid "2" after a poll) and where it failed. */
  readonly index: number;
  readonly where: string;
  /** What went in, shortened. */
  readonly input: string;
  /** What came out: the untyped exception, or the broken promise. */
  readonly error: string;
}

export interface FuzzReport {
  /** Mutated answers run. */
  readonly runs: number;
  /** Outcomes that were a DpsError (thrown, or returned as `problem`). */
  readonly typedErrors: number;
  /** Those, by code. */
  readonly byCode: Record<string, number>;
  /** Anything else thrown, or a broken promise (wrong kind of error, lost retry-after, ...). */
  readonly untyped: number;
  /** The first few of those. */
  readonly untypedErrors: FuzzFailure[];
  /** What happened, by parser and outcome (parsers), or by phase after the answer (machine). */
  readonly outcomes: Record<string, number>;
}

const KEPT_FAILURES = 10;

class Tally {
  runs = 0;
  typedErrors = 0;
  untyped = 0;
  readonly byCode: Record<string, number> = Object.create(null);
  readonly outcomes: Record<string, number> = Object.create(null);
  readonly untypedErrors: FuzzFailure[] = [];

  typed(error: DpsError): void {
    this.typedErrors++;
    this.byCode[error.code] = (this.byCode[error.code] ?? 0) + 1;
  }

  outcome(name: string): void {
    this.outcomes[name] = (this.outcomes[name] ?? 0) + 1;
  }

  failure(index: number, where: string, input: FuzzInput | undefined, error: unknown): void {
    this.untyped++;
    if (this.untypedErrors.length < KEPT_FAILURES) {
      this.untypedErrors.push({ index, where, input: input ? summary(input) : "-", error: describeError(error) });
    }
  }

  report(): FuzzReport {
    return { runs: this.runs, typedErrors: this.typedErrors, byCode: sorted(this.byCode), untyped: this.untyped, untypedErrors: this.untypedErrors, outcomes: sorted(this.outcomes) };
  }
}

function sorted(counts: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  const keys = Object.keys(counts).sort();
  for (let i = 0; i < keys.length; i++) out[keys[i]] = counts[keys[i]];
  return out;
}

/** Names an exception without trusting it (its message is read only off a real Error). */
export function describeError(error: unknown): string {
  if (error instanceof DpsError) return `${error.name} ${error.code}: ${excerpt(error.message, 160)}`;
  if (error instanceof Error) return `${error.name}: ${excerpt(error.message, 160)}`;
  return typeof error === "string" ? excerpt(error, 160) : `a thrown ${typeof error}`;
}

/** The topic, the body's size and its start (bytes that are not printable ASCII as \xHH). */
export function summary(input: FuzzInput): string {
  let text = "";
  for (let i = 0; i < input.payload.length && text.length < 120; i++) {
    const b = input.payload[i];
    text += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b < 16 ? "0" : ""}${b.toString(16)}`;
  }
  return `[${excerpt(input.name, 160)}] topic "${excerpt(input.topic, 100)}" body ${input.payload.length} bytes "${text}${input.payload.length > 120 ? "…" : ""}"`;
}

const PROBLEMS = ["OVERSIZE", "MALFORMED_UTF8", "MALFORMED_JSON", "MALFORMED_BODY", "UNKNOWN_STATUS"];
const SECONDS = /^[0-9]+(\.[0-9]+)?$/;

/** What readResponse promises about one answer; a string says what it broke. */
function checkAnswer(input: FuzzInput, answer: DpsAnswer): string | undefined {
  const problem = answer.problem;
  if (problem !== undefined && (!(problem instanceof PeerError) || PROBLEMS.indexOf(problem.code) < 0)) return `problem is not a PeerError of ${PROBLEMS.join("/")}`;
  if (answer.status >= 300) {
    if (!answer.error || answer.operation) return `status ${answer.status} without error, or with an operation`;
  } else if (answer.status === 200 || answer.status === 202) {
    if (!problem === !answer.operation || answer.error) return `status ${answer.status}: operation and problem must be exclusive`;
  } else if (!problem || problem.code !== "UNKNOWN_STATUS") return `status ${answer.status} without UNKNOWN_STATUS`;
  if (input.retryAfter !== undefined) {
    if (SECONDS.test(input.retryAfter)) {
      const s = answer.retryAfterSeconds;
      if (typeof s !== "number" || !(s >= 0 && s <= Number.MAX_SAFE_INTEGER)) return `retry-after "${excerpt(input.retryAfter, 20)}" gave ${s}`;
    } else if (answer.retryAfterInvalid === undefined || answer.retryAfterSeconds !== undefined) return `retry-after "${excerpt(input.retryAfter, 20)}" not reported invalid`;
  }
  return undefined;
}

function prototypeIntact(names: number): boolean {
  return Object.getOwnPropertyNames(Object.prototype).length === names && Object.getPrototypeOf({}) === Object.prototype && !("polluted" in {});
}

/**
 * Runs `count` mutated answers through readResponse, parseResponse (which must agree with it) and
 * parseLookupResponse, and checks each one's promises: only PeerErrors, the problem codes,
 * retry-after kept, Object.prototype untouched.
 */
export function fuzzParsers(count: number, seed: number): FuzzReport {
  const tally = new Tally();
  const names = Object.getOwnPropertyNames(Object.prototype).length;
  for (let index = 0; index < count; index++) {
    let input: FuzzInput | undefined;
    try {
      input = fuzzInput(seed, index);
    } catch (error) {
      tally.failure(index, "harness", undefined, error);
      continue;
    }
    tally.runs++;
    // readResponse and parseResponse
    let answer: DpsAnswer | undefined;
    let thrown: unknown;
    try {
      answer = readResponse(input.topic, input.payload);
      if (answer === undefined) tally.outcome("read: not a DPS topic");
      else if (answer.problem) {
        tally.typed(answer.problem);
        tally.outcome(`read: ${answer.status >= 300 ? "error" : answer.status} + ${answer.problem.code}`);
      } else tally.outcome(`read: ${answer.status >= 300 ? "error" : answer.status}`);
    } catch (error) {
      thrown = error;
      if (error instanceof PeerError && error.code === "MALFORMED_TOPIC") {
        tally.typed(error);
        tally.outcome("read: MALFORMED_TOPIC");
      } else tally.failure(index, "readResponse", input, error);
    }
    if (answer) {
      const broken = checkAnswer(input, answer);
      if (broken) tally.failure(index, "readResponse", input, `contract: ${broken}`);
    }
    try {
      const parsed = parseResponse(input.topic, input.payload);
      const expected = answer && answer.problem && answer.error ? { ...answer, problem: undefined } : answer;
      if (thrown !== undefined || (answer?.problem && !answer.error) || JSON.stringify(parsed) !== JSON.stringify(expected)) {
        tally.failure(index, "parseResponse", input, "contract: parseResponse disagrees with readResponse");
      }
    } catch (error) {
      const wanted = thrown ?? (answer && !answer.error ? answer.problem : undefined);
      if (!(error instanceof PeerError)) tally.failure(index, "parseResponse", input, error);
      else if (!(wanted instanceof PeerError) || wanted.code !== error.code) tally.failure(index, "parseResponse", input, `contract: parseResponse threw ${error.code} where readResponse said ${wanted instanceof PeerError ? wanted.code : "nothing"}`);
    }
    // parseLookupResponse
    try {
      const result = parseLookupResponse(input.lookup);
      tally.outcome(`lookup: ${result.status === 200 ? 200 : "error"}`);
      const retry = input.lookup.headers["retry-after"];
      if (result.status !== input.lookup.status || (result.status !== 200 && !result.error) || (result.status === 200 && !result.registrationState)) {
        tally.failure(index, "parseLookupResponse", input, "contract: status, error or registrationState missing");
      } else if (retry !== undefined && SECONDS.test(retry) && !(typeof result.retryAfterSeconds === "number" && result.retryAfterSeconds <= Number.MAX_SAFE_INTEGER)) {
        tally.failure(index, "parseLookupResponse", input, `contract: retry-after "${excerpt(retry, 20)}" gave ${result.retryAfterSeconds}`);
      }
    } catch (error) {
      if (error instanceof PeerError) {
        tally.typed(error);
        tally.outcome(`lookup: ${error.code}`);
      } else tally.failure(index, "parseLookupResponse", input, error);
    }
    if (index % 1000 === 999 && !prototypeIntact(names)) tally.failure(index, "prototype", input, "contract: Object.prototype changed");
  }
  if (!prototypeIntact(names)) tally.failure(count, "prototype", undefined, "contract: Object.prototype changed");
  return tally.report();
}

const TERMINAL = ["assigned", "failed", "fallback", "stopped"];

/**
 * Runs `count` mutated answers through a RegistrationMachine: started, connected (the answer
 * sometimes arrives before SUBACK, sometimes to a poll after a 202), the answer delivered to the
 * `$rid` in flight, then a few more legal steps (the timer, a mutated lookup answer, a reconnect).
 * Fails on anything thrown that is not a DpsError, on any ILLEGAL_EVENT (every event delivered is
 * legal) and on a set-timer whose delay is not a finite number >= 0.
 */
export function fuzzRegistration(count: number, seed: number): FuzzReport {
  const tally = new Tally();
  for (let index = 0; index < count; index++) {
    const random = runRandom(~seed, index); // the set-up and the jitter; the input is fuzzInput's
    const early = random() < 0.2;
    const poll = !early && random() < 0.3;
    let input: FuzzInput | undefined;
    let where = "setup";
    try {
      const machine = new RegistrationMachine(baseConfig, { crypto: portableCrypto, random });
      let now = T0;
      let timerAt: number | undefined;
      let lookupAsked = false;
      let broken: string | undefined;
      const feed = (event: RegistrationEvent): RegistrationCommand[] => {
        const commands = machine.handle(event, now);
        for (let i = 0; i < commands.length; i++) {
          const command = commands[i];
          if (command.kind === "set-timer") {
            if (!(Number.isFinite(command.delayMs) && command.delayMs >= 0)) broken = `set-timer ${command.delayMs} after ${where}`;
            timerAt = now + command.delayMs;
          } else if (command.kind === "clear-timer") timerAt = undefined;
          else if (command.kind === "lookup") lookupAsked = true;
        }
        return commands;
      };
      const fire = (): void => {
        now = timerAt!;
        timerAt = undefined;
        feed({ kind: "timer" });
      };
      feed({ kind: "start" });
      now += 20;
      feed({ kind: "connack", returnCode: 0 });
      if (!early) feed({ kind: "suback", granted: [1] });
      let rid = "1";
      if (poll) {
        now += 30;
        feed({ kind: "message", topic: "$dps/registrations/res/202/?$rid=1&retry-after=1", payload: utf8Encode(corpus[0].body) });
        fire();
        rid = "2";
      }
      input = fuzzInput(seed, index, rid);
      tally.runs++;
      now += 40;
      where = "message";
      feed({ kind: "message", topic: input.topic, payload: input.payload });
      tally.outcome(`${early ? "before SUBACK" : poll ? "poll" : "register"} → ${machine.phase}`);
      for (let step = 0; step < 4 && TERMINAL.indexOf(machine.phase) < 0; step++) {
        const phase = machine.phase;
        if (phase === "looking-up" && lookupAsked) {
          lookupAsked = false;
          where = "lookup-response";
          now += 50;
          feed({ kind: "lookup-response", response: input.lookup });
          tally.outcome(`lookup answered → ${machine.phase}`);
        } else if (phase === "connecting") {
          where = "connack";
          now += 20;
          feed({ kind: "connack", returnCode: 0 });
        } else if (phase === "subscribing") {
          where = "suback";
          now += 20;
          feed({ kind: "suback", granted: [1] });
        } else if (timerAt !== undefined) {
          where = "timer";
          fire();
        } else break;
      }
      tally.outcome(`in the end: ${machine.phase}`);
      if (broken) tally.failure(index, where, input, `contract: ${broken}`);
    } catch (error) {
      if (error instanceof DpsError && error.code !== "ILLEGAL_EVENT") tally.typed(error);
      else tally.failure(index, where, input, error);
    }
  }
  return tally.report();
}
