/**
 * The DPS MQTT protocol: what a device sends (CONNECT credentials, topics, payloads, the HTTPS
 * registration status lookup) and one parse function per thing it receives. Builders are pure;
 * parsers turn every malformed input into a PeerError with a code, never a crash: whatever the JSON
 * holds (objects where numbers belong, prototype keys, deep nesting), they read only own fields,
 * never convert an untrusted object to a string, and refuse nesting deeper than MAX_JSON_DEPTH
 * before JSON.parse sees it (XS's JSON.parse recurses per level and overflows its native stack
 * near 5,000 levels, which aborts the VM).
 */
import { excerpt, PeerError, UsageError } from "./errors.js";
import { urlDecode, urlEncode, utf8Decode, utf8Encode } from "./encoding.js";
import { checkIdScope, checkRegistrationId } from "./sas.js";
import type { HttpsRequest, HttpsResponse } from "./ports.js";

export const DPS_API_VERSION = "2019-03-31";
export const LOOKUP_API_VERSION = "2021-10-01";
export const DPS_GLOBAL_ENDPOINT = "global.azure-devices-provisioning.net";
export const DPS_MQTT_PORT = 8883;
export const SUBSCRIBE_TOPIC = "$dps/registrations/res/#";
const RESPONSE_PREFIX = "$dps/registrations/res/";
/** The service's own limit for a message (docs/PROTOCOL.md). Bigger answers are refused unread. */
export const MAX_MESSAGE_BYTES = 96 * 1024;
/** Longest `$rid` or operationId echoed back that this parser accepts. */
const MAX_ID_LENGTH = 256;
/** Deepest nesting of arrays and objects accepted in an answer; deeper is MALFORMED_JSON. */
export const MAX_JSON_DEPTH = 32;
/** The most certificates an issued chain may hold (a leaf and its intermediates). */
export const MAX_CHAIN_LENGTH = 8;
/** The DPS API version that carries certificate signing requests. */
export const DPS_CSR_API_VERSION = "2025-07-01-preview";

export interface DpsCredentials {
  readonly clientId: string;
  readonly username: string;
  readonly password: string;
}

export interface DpsCredentialsOptions {
  readonly idScope: string;
  readonly registrationId: string;
  /** The SAS token (see sas.ts). */
  readonly sasToken: string;
  readonly apiVersion?: string;
  /** Sent as `ClientVersion`, URL-encoded; identifies the firmware in the service's logs. */
  readonly userAgent?: string;
}

/**
 * CONNECT fields for DPS:
 *   client id `dev-001`, username `0ne00000001/registrations/dev-001/api-version=2019-03-31&ClientVersion=...`
 */
export function dpsCredentials(options: DpsCredentialsOptions): DpsCredentials {
  checkIdScope(options.idScope);
  checkRegistrationId(options.registrationId);
  let username = `${options.idScope}/registrations/${options.registrationId}/api-version=${options.apiVersion ?? DPS_API_VERSION}`;
  if (options.userAgent) username += `&ClientVersion=${urlEncode(options.userAgent)}`;
  return { clientId: options.registrationId, username, password: options.sasToken };
}

/** `$dps/registrations/PUT/iotdps-register/?$rid=7` */
export function registerTopic(rid: string): string {
  checkRid(rid);
  return `$dps/registrations/PUT/iotdps-register/?$rid=${urlEncode(rid)}`;
}

/** `$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=4.0b1...` */
export function pollTopic(rid: string, operationId: string): string {
  checkRid(rid);
  if (operationId.length === 0 || operationId.length > MAX_ID_LENGTH) {
    throw new UsageError("INVALID_ARGUMENT", `operationId must be 1 to ${MAX_ID_LENGTH} characters`);
  }
  return `$dps/registrations/GET/iotdps-get-operationstatus/?$rid=${urlEncode(rid)}&operationId=${urlEncode(operationId)}`;
}

/** The poll's body: empty, as the Embedded C SDK sends it. */
export const POLL_PAYLOAD = new Uint8Array(0);

/**
 * `{"registrationId":"dev-001","payload":{"model":"x"},"csr":"MIIB..."}`; `payload` is the custom
 * allocation data (any JSON value), `csr` the base64 DER of a certificate signing request for an
 * operational certificate (DPS API 2025-07-01-preview); each left out when undefined.
 * @throws UsageError OVERSIZE when the body would exceed MAX_MESSAGE_BYTES, INVALID_ARGUMENT when
 *   the payload cannot be written as JSON.
 */
export function registerPayload(registrationId: string, payload?: unknown, csr?: string): Uint8Array {
  checkRegistrationId(registrationId);
  if (csr !== undefined && !isBase64Text(csr, 1)) {
    throw new UsageError("INVALID_ARGUMENT", "the certificate signing request must be the base64 of its DER (modules/csr.ts: certificateRequestBase64)");
  }
  let json: string;
  try {
    const body: Record<string, unknown> = { registrationId };
    if (payload !== undefined) body.payload = payload;
    if (csr !== undefined) body.csr = csr;
    json = JSON.stringify(body);
  } catch (error) {
    throw new UsageError("INVALID_ARGUMENT", `the custom allocation payload cannot be written as JSON: ${(error as Error).message}`);
  }
  const bytes = utf8Encode(json);
  if (bytes.length > MAX_MESSAGE_BYTES) {
    throw new UsageError("OVERSIZE", `the register body is ${bytes.length} bytes; DPS accepts at most ${MAX_MESSAGE_BYTES}`);
  }
  return bytes;
}

export interface LookupRequestOptions {
  /** The global device endpoint, e.g. `global.azure-devices-provisioning.net`. */
  readonly host: string;
  readonly port?: number;
  readonly idScope: string;
  readonly registrationId: string;
  readonly sasToken: string;
  readonly payload?: unknown;
  readonly userAgent?: string;
}

/**
 * The registration status lookup (docs/PROTOCOL.md):
 *   POST https://{host}/{idScope}/registrations/{registrationId}?api-version=2021-10-01
 *   Authorization: SharedAccessSignature sr=...   body {"registrationId":"dev-001"}
 */
export function lookupRequest(options: LookupRequestOptions): HttpsRequest {
  checkIdScope(options.idScope);
  const body = registerPayload(options.registrationId, options.payload);
  const headers: Record<string, string> = {
    accept: "application/json",
    "content-type": "application/json; charset=utf-8",
    "content-length": String(body.length),
    authorization: options.sasToken,
  };
  if (options.userAgent) headers["user-agent"] = options.userAgent;
  return {
    method: "POST",
    host: options.host,
    port: options.port ?? 443,
    path: `/${options.idScope}/registrations/${urlEncode(options.registrationId)}?api-version=${LOOKUP_API_VERSION}`,
    headers,
    body,
  };
}

function checkRid(rid: string): void {
  if (typeof rid !== "string" || rid.length === 0 || rid.length > MAX_ID_LENGTH) {
    throw new UsageError("INVALID_ARGUMENT", `$rid must be 1 to ${MAX_ID_LENGTH} characters`);
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing

export type RegistrationStatus = "unassigned" | "assigning" | "assigned" | "failed" | "disabled";
const STATUSES: readonly string[] = ["unassigned", "assigning", "assigned", "failed", "disabled"];
export type Substatus = "initialAssignment" | "deviceDataMigrated" | "deviceDataReset" | "reprovisionedToInitialAssignment";
const SUBSTATUSES: readonly string[] = ["initialAssignment", "deviceDataMigrated", "deviceDataReset", "reprovisionedToInitialAssignment"];

export interface ResponseTopic {
  /** The HTTP-like status in the topic (`res/202/`). */
  readonly status: number;
  readonly rid: string;
  /**
   * Seconds, when the topic carried `retry-after` as digits (with or without a decimal part),
   * however many: at most Number.MAX_SAFE_INTEGER. Bounding the wait is the retry policy's job.
   */
  readonly retryAfterSeconds?: number;
  /** An excerpt of the `retry-after` value when it was present but not digits (`-5`, `soon`, ``). */
  readonly retryAfterInvalid?: string;
}

/**
 * Parses `$dps/registrations/res/202/?$rid=1&retry-after=3` (parameters in any order, unknown
 * ones ignored and not decoded). Returns undefined for a topic that is not a DPS response at all.
 * @throws PeerError MALFORMED_TOPIC when it is a DPS response topic but broken (nothing else).
 */
export function parseResponseTopic(topic: string): ResponseTopic | undefined {
  if (!topic.startsWith(RESPONSE_PREFIX)) return undefined;
  const rest = topic.slice(RESPONSE_PREFIX.length);
  const slash = rest.indexOf("/");
  if (slash <= 0) throw new PeerError("MALFORMED_TOPIC", `DPS response topic has no status: "${excerpt(topic)}"`);
  const statusText = rest.slice(0, slash);
  if (!/^[1-5][0-9][0-9]$/.test(statusText)) {
    throw new PeerError("MALFORMED_TOPIC", `DPS response topic has a status that is not a 3-digit code: "${excerpt(topic)}"`);
  }
  const afterStatus = rest.slice(slash + 1);
  if (afterStatus.length > 0 && afterStatus[0] !== "?") {
    throw new PeerError("MALFORMED_TOPIC", `DPS response topic has no query after the status: "${excerpt(topic)}"`);
  }
  let rid: string | undefined;
  let retryAfterSeconds: number | undefined;
  let retryAfterInvalid: string | undefined;
  const query = afterStatus.slice(1);
  const parts = query.length > 0 ? query.split("&") : [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    const eq = part.indexOf("=");
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    if (name === "$rid") {
      try {
        rid = urlDecode(value);
      } catch {
        throw new PeerError("MALFORMED_TOPIC", `DPS response $rid is not percent-encoded UTF-8: "${excerpt(topic)}"`);
      }
    } else if (name === "retry-after") {
      retryAfterSeconds = secondsOf(value);
      retryAfterInvalid = retryAfterSeconds === undefined ? excerpt(value, 32) : undefined;
    }
  }
  if (rid === undefined || rid.length === 0) {
    throw new PeerError("MALFORMED_TOPIC", `DPS response topic has no $rid: "${excerpt(topic)}"`);
  }
  if (rid.length > MAX_ID_LENGTH) throw new PeerError("MALFORMED_TOPIC", `DPS response $rid is longer than ${MAX_ID_LENGTH} characters`);
  const parsed: { status: number; rid: string; retryAfterSeconds?: number; retryAfterInvalid?: string } = { status: Number(statusText), rid };
  if (retryAfterSeconds !== undefined) parsed.retryAfterSeconds = retryAfterSeconds;
  if (retryAfterInvalid !== undefined) parsed.retryAfterInvalid = retryAfterInvalid;
  return parsed;
}

export interface RegistrationState {
  readonly registrationId?: string;
  readonly createdDateTimeUtc?: string;
  readonly assignedHub?: string;
  readonly deviceId?: string;
  readonly status: RegistrationStatus;
  readonly substatus?: Substatus | string;
  readonly lastUpdatedDateTimeUtc?: string;
  readonly etag?: string;
  /** Data returned by a custom allocation function. */
  readonly payload?: unknown;
  readonly errorCode?: number;
  readonly errorMessage?: string;
  /** Present for symmetric-key attestation; this runtime needs nothing from it. */
  readonly symmetricKey?: unknown;
  readonly x509?: unknown;
  readonly trustBundle?: unknown;
  /**
   * The operational certificate DPS had issued from the request's CSR, leaf first, each the
   * base64 of its DER (API 2025-07-01-preview).
   */
  readonly issuedCertificateChain?: readonly string[];
}

export interface OperationStatus {
  readonly operationId?: string;
  readonly status: RegistrationStatus;
  readonly registrationState?: RegistrationState;
}

export interface ErrorBody {
  /** The six-digit code, e.g. 401002; divided by 1000 it is the HTTP status. */
  readonly errorCode?: number;
  readonly trackingId?: string;
  readonly message?: string;
  readonly timestampUtc?: string;
}

/** One DPS answer, parsed once, everything it says. */
export interface DpsResponse {
  readonly status: number;
  readonly rid: string;
  readonly retryAfterSeconds?: number;
  readonly retryAfterInvalid?: string;
  /** For status 200 and 202. */
  readonly operation?: OperationStatus;
  /** For status >= 300. */
  readonly error?: ErrorBody;
}

/** One DPS answer as readResponse gives it: all it could read, and why the rest is unusable. */
export interface DpsAnswer extends DpsResponse {
  /**
   * Set when the body or the status cannot be used: OVERSIZE, MALFORMED_UTF8, MALFORMED_JSON,
   * MALFORMED_BODY or UNKNOWN_STATUS. A 200/202 then has no `operation`; a status >= 300 has
   * `error: {}`. The topic's status, `$rid` and retry-after are kept all the same.
   */
  readonly problem?: PeerError;
}

/**
 * Reads one message on the DPS response topics without throwing for what the body says.
 *   topic   `$dps/registrations/res/202/?$rid=1&retry-after=3`
 *   payload `{"operationId":"4.002e3c2e.5f7c","status":"assigning"}`
 *   topic   `$dps/registrations/res/200/?$rid=2`
 *   payload `{"operationId":"...","status":"assigned","registrationState":{"registrationId":"dev-001",
 *            "assignedHub":"contoso.azure-devices.net","deviceId":"dev-001","status":"assigned",
 *            "substatus":"initialAssignment","etag":"IjAwMDAi","createdDateTimeUtc":"...",...}}`
 *   topic   `$dps/registrations/res/401/?$rid=1`
 *   payload `{"errorCode":401002,"trackingId":"...","message":"Unauthorized","timestampUtc":"..."}`
 *   topic   `$dps/registrations/res/503/?$rid=3&retry-after=5`
 *   payload `Service Unavailable`   (→ error {} and problem MALFORMED_JSON; retry-after 5 kept)
 * Returns undefined when the topic is not a DPS response topic.
 * @throws PeerError MALFORMED_TOPIC (only): the topic is a DPS response's but cannot be matched to
 *   a request (no status, no `$rid`, ...).
 */
export function readResponse(topic: string, payload: Uint8Array): DpsAnswer | undefined {
  const head = parseResponseTopic(topic);
  if (!head) return undefined;
  const answer: { -readonly [K in keyof DpsAnswer]: DpsAnswer[K] } = { ...head };
  try {
    if (head.status >= 300) {
      answer.error = {}; // an error answer whose body cannot be read still carries its status
      answer.error = parseErrorBody(parseJson(payload, "error body"));
    } else if (head.status === 200 || head.status === 202) {
      answer.operation = parseOperationStatus(parseJson(payload, "operation status"));
    } else {
      throw new PeerError("UNKNOWN_STATUS", `DPS answered with status ${head.status}, which this protocol does not use`);
    }
  } catch (cause) {
    if (!(cause instanceof PeerError)) throw cause;
    answer.problem = cause;
  }
  return answer;
}

/**
 * readResponse for callers that want the problem thrown: an answer with status >= 300 and an
 * unreadable body is returned with `error: {}`; any other problem is thrown.
 * @throws PeerError MALFORMED_TOPIC, OVERSIZE, MALFORMED_UTF8, MALFORMED_JSON, MALFORMED_BODY,
 *   UNKNOWN_STATUS.
 */
export function parseResponse(topic: string, payload: Uint8Array): DpsResponse | undefined {
  const answer = readResponse(topic, payload);
  if (!answer || !answer.problem) return answer;
  if (!answer.error) throw answer.problem;
  const { problem, ...response } = answer;
  return response;
}

/**
 * Parses a UTF-8 JSON object from a message body, `{"status":"assigning",...}`.
 * @throws PeerError OVERSIZE, MALFORMED_UTF8, MALFORMED_JSON (also when it is not an object or
 *   nests deeper than MAX_JSON_DEPTH).
 */
export function parseJson(payload: Uint8Array, what: string): Record<string, unknown> {
  if (payload.length > MAX_MESSAGE_BYTES) {
    throw new PeerError("OVERSIZE", `the ${what} is ${payload.length} bytes, over the ${MAX_MESSAGE_BYTES}-byte limit`);
  }
  if (nestsTooDeep(payload)) {
    throw new PeerError("MALFORMED_JSON", `the ${what} nests arrays or objects deeper than ${MAX_JSON_DEPTH} levels`);
  }
  const text = utf8Decode(payload);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new PeerError("MALFORMED_JSON", `the ${what} is not JSON: "${excerpt(text)}"`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new PeerError("MALFORMED_JSON", `the ${what} is JSON but not an object: "${excerpt(text)}"`);
  }
  return value as Record<string, unknown>;
}

/**
 * True when brackets outside strings nest deeper than MAX_JSON_DEPTH. It reads the UTF-8 bytes
 * (no byte of a multi-byte character is ASCII) before they are decoded. JSON.parse fails at the
 * first character that breaks the grammar, so it never goes deeper than this scan counts.
 */
export function nestsTooDeep(bytes: Uint8Array): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next character is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > MAX_JSON_DEPTH) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** Parses `{"operationId":"...","status":"assigning"|"assigned"|...,"registrationState":{...}}`. */
export function parseOperationStatus(body: Record<string, unknown>): OperationStatus {
  const status = statusField(own(body, "status"), "operation status");
  const operationId = optionalString(body, "operationId", "operation status");
  if (operationId !== undefined && (operationId.length === 0 || operationId.length > MAX_ID_LENGTH)) {
    throw new PeerError("MALFORMED_BODY", `operationId must be 1 to ${MAX_ID_LENGTH} characters`);
  }
  let registrationState: RegistrationState | undefined;
  const rawState = own(body, "registrationState");
  if (rawState !== undefined && rawState !== null) registrationState = parseRegistrationState(rawState);
  if (status === "assigned" && !registrationState) {
    throw new PeerError("MALFORMED_BODY", "DPS reported the device assigned but sent no registrationState");
  }
  const out: { operationId?: string; status: RegistrationStatus; registrationState?: RegistrationState } = { status };
  if (operationId !== undefined) out.operationId = operationId;
  if (registrationState) out.registrationState = registrationState;
  return out;
}

/**
 * Parses a registration state (in a 200 answer, or the whole body of a status lookup).
 * An assigned state must name its hub and device.
 */
export function parseRegistrationState(value: unknown): RegistrationState {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new PeerError("MALFORMED_BODY", "registrationState is not an object");
  }
  const body = value as Record<string, unknown>;
  const what = "registrationState";
  const state: Record<string, unknown> = { status: statusField(own(body, "status"), what) };
  const names = ["registrationId", "createdDateTimeUtc", "assignedHub", "deviceId", "lastUpdatedDateTimeUtc", "etag", "errorMessage"];
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const v = optionalString(body, name, what);
    if (v !== undefined) state[name] = v;
  }
  const substatus = optionalString(body, "substatus", what);
  if (substatus !== undefined) state.substatus = SUBSTATUSES.indexOf(substatus) >= 0 ? substatus : excerpt(substatus, 64);
  const errorCode = optionalCode(own(body, "errorCode"), what);
  if (errorCode !== undefined) state.errorCode = errorCode;
  const passed = ["payload", "symmetricKey", "x509", "trustBundle"];
  for (let i = 0; i < passed.length; i++) {
    const name = passed[i];
    const v = own(body, name);
    if (v !== undefined && v !== null) state[name] = v;
  }
  const chain = own(body, "issuedCertificateChain");
  if (chain !== undefined && chain !== null) {
    if (!Array.isArray(chain) || chain.length < 1 || chain.length > MAX_CHAIN_LENGTH) {
      throw new PeerError("MALFORMED_BODY", `issuedCertificateChain must be an array of 1 to ${MAX_CHAIN_LENGTH} certificates (${kindOf(chain)})`);
    }
    const certificates: string[] = [];
    for (let i = 0; i < chain.length; i++) {
      const c = chain[i];
      if (!isBase64Text(c, 16)) {
        throw new PeerError("MALFORMED_BODY", `issuedCertificateChain[${i}] is not the base64 of a certificate (${kindOf(c)})`);
      }
      certificates.push(c);
    }
    state.issuedCertificateChain = certificates;
  }
  if (state.status === "assigned") {
    if (!isHostName(own(state, "assignedHub"))) throw new PeerError("MALFORMED_BODY", "an assigned registrationState has no valid assignedHub");
    const deviceId = own(state, "deviceId");
    if (typeof deviceId !== "string" || deviceId.length === 0 || deviceId.length > 128) {
      throw new PeerError("MALFORMED_BODY", "an assigned registrationState has no valid deviceId");
    }
  }
  return state as unknown as RegistrationState;
}

/** Parses `{"errorCode":401002,"trackingId":"...","message":"...","timestampUtc":"..."}`. */
export function parseErrorBody(body: Record<string, unknown>): ErrorBody {
  const out: { errorCode?: number; trackingId?: string; message?: string; timestampUtc?: string } = {};
  const code = optionalCode(own(body, "errorCode"), "error body");
  if (code !== undefined) out.errorCode = code;
  const names = ["trackingId", "message", "timestampUtc"] as const;
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const v = own(body, name);
    if (typeof v === "string") out[name] = excerpt(v, 512);
  }
  return out;
}

/** The outcome of a registration status lookup. */
export interface LookupResult {
  readonly status: number;
  readonly registrationState?: RegistrationState;
  readonly error?: ErrorBody;
  /** `x-ms-error-code`, when the service sent it. */
  readonly errorCodeHeader?: string;
  readonly retryAfterSeconds?: number;
}

/**
 * Parses the lookup's HTTPS answer: 200 with a registration state, or an error body (read as
 * parseResponse reads one: unreadable gives `error: {}`).
 *   200  `{"registrationId":"dev-001","assignedHub":"contoso.azure-devices.net","deviceId":"dev-001",
 *         "status":"assigned","substatus":"initialAssignment","etag":"IjAwMDAi",...}`
 *   404  `x-ms-error-code: 404202`, `{"errorCode":404202,"trackingId":"...","message":"Not found"}`
 *   503  `retry-after: 5`, `{"errorCode":503000,"trackingId":"...","message":"..."}`
 * `retry-after` is read as in a topic (digits, at most Number.MAX_SAFE_INTEGER); an HTTP date or
 * anything else is left out.
 * @throws PeerError OVERSIZE, MALFORMED_UTF8, MALFORMED_JSON, MALFORMED_BODY, UNKNOWN_STATUS, for a
 *   200 whose body is not a registration state (nothing else).
 */
export function parseLookupResponse(response: HttpsResponse): LookupResult {
  const header = own(response.headers, "x-ms-error-code");
  const retry = own(response.headers, "retry-after");
  const base: { status: number; errorCodeHeader?: string; retryAfterSeconds?: number } = { status: response.status };
  if (typeof header === "string" && header) base.errorCodeHeader = excerpt(header, 64);
  const seconds = typeof retry === "string" ? secondsOf(retry) : undefined;
  if (seconds !== undefined) base.retryAfterSeconds = seconds;
  if (response.status === 200) {
    return { ...base, registrationState: parseRegistrationState(parseJson(response.body, "lookup answer")) };
  }
  let error: ErrorBody = {};
  try {
    error = parseErrorBody(parseJson(response.body, "lookup error body"));
  } catch (cause) {
    if (!(cause instanceof PeerError)) throw cause;
  }
  if (error.errorCode === undefined && base.errorCodeHeader && /^[0-9]{6}$/.test(base.errorCodeHeader)) {
    error = { ...error, errorCode: Number(base.errorCodeHeader) };
  }
  return { ...base, error };
}

function statusField(value: unknown, what: string): RegistrationStatus {
  if (typeof value !== "string") throw new PeerError("MALFORMED_BODY", `${what} has no status string`);
  if (STATUSES.indexOf(value) < 0) throw new PeerError("UNKNOWN_STATUS", `${what} has an unknown status "${excerpt(value, 32)}"`);
  return value as RegistrationStatus;
}

function optionalString(body: Record<string, unknown>, name: string, what: string): string | undefined {
  const v = own(body, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new PeerError("MALFORMED_BODY", `${what}.${name} should be a string, got ${kindOf(v)}`);
  return v;
}

function optionalCode(value: unknown, what: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  const n = typeof value === "string" && /^[0-9]{1,9}$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
    throw new PeerError("MALFORMED_BODY", `${what}.errorCode should be an integer, got ${kindOf(value)}`);
  }
  return n;
}

/** A field of untrusted JSON, own properties only: nothing is read through the prototype. */
/** A string of base64 characters (standard alphabet, padding at the end) of at least `min` characters. */
function isBase64Text(value: unknown, min: number): value is string {
  return typeof value === "string" && value.length >= min && /^[A-Za-z0-9+/]+={0,2}$/.test(value);
}

function own(body: object, name: string): unknown {
  return Object.hasOwn(body, name) ? (body as Record<string, unknown>)[name] : undefined;
}

/** Describes an untrusted JSON value without converting it: String() of an object can throw. */
function kindOf(value: unknown): string {
  if (typeof value === "string") return `"${excerpt(value, 20)}"`;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
}

/** `retry-after` as seconds: digits with an optional decimal part, capped, or undefined. */
function secondsOf(value: string): number | undefined {
  return /^[0-9]+(\.[0-9]+)?$/.test(value) ? Math.min(Number(value), Number.MAX_SAFE_INTEGER) : undefined;
}

function isHostName(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= 253 && /^[A-Za-z0-9]([A-Za-z0-9\-.]*[A-Za-z0-9])?(:[0-9]{1,5})?$/.test(value);
}

/** The HTTP status a six-digit DPS error code stands for (401002 → 401). */
export function httpStatusOfErrorCode(errorCode: number): number {
  return Math.floor(errorCode / 1000);
}
