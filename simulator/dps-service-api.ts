// The DPS service REST API on the emulator's HTTPS port: what a backend (the official provisioning
// service SDK, `az iot dps enrollment`, a portal) calls to enrol devices. The paths and bodies are
// DPS's, api-version 2021-10-01:
//
//   PUT /enrollments/device-001?api-version=2021-10-01
//   Authorization: SharedAccessSignature sr=dps-emulator.azure-devices-provisioning.localhost&sig=...&se=1700003600&skn=provisioningserviceowner
//   If-Match: "IjAwMDAwMDAwMDAwMSI="          (optional: absent = create only)
//   Content-Type: application/json; charset=utf-8
//   {"registrationId":"device-001","deviceId":"boiler-1","attestation":{"type":"symmetricKey"},
//    "provisioningStatus":"enabled","initialTwin":{"tags":{"site":"lab"},"properties":{"desired":{"interval":30}}},
//    "reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":true}}
//
// answered 200 with the enrollment as DPS writes it (generated keys included, etag, times):
//
//   {"registrationId":"device-001","deviceId":"boiler-1","attestation":{"type":"symmetricKey",
//    "symmetricKey":{"primaryKey":"...","secondaryKey":"..."}},"provisioningStatus":"enabled",
//    "createdDateTimeUtc":"2024-05-01T10:00:00.0000000Z","lastUpdatedDateTimeUtc":"...","etag":"..."}
//
// Also GET and DELETE on the same paths, `/enrollmentGroups/{id}`, `POST /enrollments/query`,
// `POST /enrollmentGroups/query`, `GET`/`DELETE /registrations/{id}` and
// `POST /registrations/{groupId}/query`. The enrollments are the emulator's own (ProvisioningService):
// one created here is the one a device then provisions with, and one from the config or the admin
// API is visible here. Errors are DPS's error body with `x-ms-error-code`.
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { readBody } from "./http-body.js";
import type { GroupEnrollment, IndividualEnrollment, ReprovisionPolicy } from "./config.js";
import { checkDeviceId, checkRegistrationId } from "./config.js";
import { describeStatus } from "./errors.js";
import { Counters, type Logger } from "./log.js";
import { parseSasToken, signatureMatches } from "./sas.js";
import { registrationState, type Answer, type ProvisioningService } from "./service.js";
import { parseQuery } from "./topics.js";

/** Largest request body: an enrollment with a large initial twin fits many times over. */
export const SERVICE_API_MAX_BODY_BYTES = 128 * 1024;
/** A body nesting deeper than this is refused before anything walks it. */
export const SERVICE_API_MAX_DEPTH = 32;
/** Bytes read and thrown away after the limit before the connection is cut. */
const DRAIN_LIMIT = 8 * 1024 * 1024;
const MAX_PAGE = 1000;

export interface ServiceApiContext {
  readonly service: ProvisioningService;
  readonly log: Logger;
  readonly counters: Counters;
  /** The clock for token expiry (ms). */
  now(): number;
  /** `sr` of a valid token: the DPS host name (compared ignoring case). */
  readonly hostName: string;
  /** Policy name → its keys (primary first). */
  readonly policies: ReadonlyMap<string, readonly Buffer[]>;
  readonly skewSeconds: number;
}

/** True for the paths this module serves: the first segment is enrollments, enrollmentGroups or registrations. */
export function isServiceApiPath(url: string): boolean {
  return /^\/(enrollments|enrollmentgroups|registrations)(\/|\?|$)/i.test(url);
}

/** The caller's mistake in a request: a 400 whose message names the field. */
class BadRequest extends Error {
  constructor(field: string, problem: string) {
    super(`${field}: ${problem}`);
  }
}

/** Serves one request; never throws (an internal error is a 500 answer and a log line). */
export function serviceApiHandler(ctx: ServiceApiContext): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    readBody(req, res, SERVICE_API_MAX_BODY_BYTES, (body) => {
      let answer: Answer;
      try {
        answer = body === undefined
          ? ctx.service.error(413, ctx.now(), "body-too-large", 413001, `The request body is larger than ${SERVICE_API_MAX_BODY_BYTES} bytes.`)
          : route(ctx, req, body);
      } catch (error) {
        ctx.log.error("internal-error", { endpoint: "service-api", message: (error as Error).message });
        answer = ctx.service.error(500, ctx.now(), "internal-error");
      }
      send(ctx, req, res, answer);
    }, DRAIN_LIMIT);
  };
}

type Kind = "enrollment" | "group";

function route(ctx: ServiceApiContext, req: IncomingMessage, body: string): Answer {
  const now = ctx.now();
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const segments = (q < 0 ? url : url.slice(0, q)).split("/").slice(1);
  let parts: string[];
  try {
    parts = segments.map(decodeURIComponent);
  } catch {
    return ctx.service.error(400, now, "bad-path-escape", 400004, "The path has an invalid %-escape.");
  }
  const auth = authorise(ctx, req.headers.authorization, now);
  if (auth) return ctx.service.error(401, now, auth, 401002, "Unauthorized");
  if (!parseQuery(q < 0 ? "" : url.slice(q + 1)).get("api-version")) {
    return ctx.service.error(400, now, "no-api-version", 400001, "The api-version query parameter is required.");
  }
  const method = req.method ?? "GET";
  const collection = parts[0].toLowerCase();
  const ifMatch = header(req, "if-match");
  if (collection === "enrollments" || collection === "enrollmentgroups") {
    const kind: Kind = collection === "enrollments" ? "enrollment" : "group";
    if (parts.length === 2 && parts[1] === "query") {
      if (method !== "POST") return ctx.service.error(405, now, "method");
      return query(ctx, kind, req, body, now);
    }
    if (parts.length !== 2 || parts[1] === "") return notFound(ctx, now, "unknown-path", "The resource was not found.");
    const id = parts[1];
    if (method === "GET") return get(ctx, kind, id, now);
    if (method === "PUT") return put(ctx, kind, id, ifMatch, req, body, now);
    if (method === "DELETE") return remove(ctx, kind, id, ifMatch, now);
    return ctx.service.error(405, now, "method");
  }
  // registrations
  if (parts.length === 3 && parts[2] === "query" && parts[1] !== "") {
    if (method !== "POST") return ctx.service.error(405, now, "method");
    return registrationQuery(ctx, parts[1], req, now);
  }
  if (parts.length !== 2 || parts[1] === "") return notFound(ctx, now, "unknown-path", "The resource was not found.");
  const record = ctx.service.registration(parts[1]);
  if (!record) return notFound(ctx, now, "no-registration", `The registration ${parts[1]} was not found.`);
  if (method === "GET") return { status: 200, body: registrationState(record) };
  if (method === "DELETE") {
    if (ifMatch !== undefined && !etagMatches(ifMatch, record.etag)) return stale(ctx, now);
    ctx.service.deleteRegistration(parts[1]);
    ctx.log.info("registration-deleted", { registrationId: parts[1], via: "service-api" });
    return { status: 204, body: {} };
  }
  return ctx.service.error(405, now, "method");
}

/** Undefined when the token is good; else the reason (logged, never the token). */
function authorise(ctx: ServiceApiContext, authorization: string | undefined, now: number): string | undefined {
  const token = parseSasToken(authorization);
  if (typeof token === "string") return token;
  if (token.resource.toLowerCase() !== ctx.hostName.toLowerCase()) return "wrong-resource";
  if (token.skn === undefined) return "no-policy";
  const keys = ctx.policies.get(token.skn);
  if (!keys) return "unknown-policy";
  if ((token.se + ctx.skewSeconds) * 1000 < now) return "expired";
  for (const key of keys) if (signatureMatches(token, key)) return undefined;
  return "bad-signature";
}

function get(ctx: ServiceApiContext, kind: Kind, id: string, now: number): Answer {
  const view = show(ctx, kind, id);
  return view ? { status: 200, body: view } : notFound(ctx, now, "no-enrollment", `The enrollment ${id} was not found.`);
}

/**
 * Create or update. Without If-Match the PUT creates and an existing id is a 409, as DPS answers
 * (the SDKs' issues: Azure/azure-iot-sdk-csharp#3076, Azure/azure-sdk-for-python#35187); with
 * If-Match it replaces when the etag is current (or `*`), else 412.
 */
function put(ctx: ServiceApiContext, kind: Kind, id: string, ifMatch: string | undefined, req: IncomingMessage, body: string, now: number): Answer {
  if (!/^application\/json\b/i.test(header(req, "content-type") ?? "")) return ctx.service.error(415, now, "content-type", 415001, "The body must be application/json.");
  const which = kind === "enrollment" ? { registrationId: id } : { groupId: id };
  const existing = ctx.service.enrollmentInfo(which);
  if (existing === undefined && ifMatch !== undefined && ifMatch.trim() !== "*") return stale(ctx, now);
  if (existing !== undefined && ifMatch === undefined) {
    return ctx.service.error(409, now, "exists", 409001, `The enrollment ${id} already exists; send its etag in If-Match to update it.`);
  }
  if (existing !== undefined && ifMatch !== undefined && !etagMatches(ifMatch, existing.etag)) return stale(ctx, now);
  try {
    const parsed = parseJson(body);
    if (kind === "enrollment") {
      const e = toIndividual(ctx, parsed, id, existing?.kind === "individual" ? existing.source : undefined);
      ctx.service.addIndividualEnrollment(e, now);
    } else {
      const e = toGroup(ctx, parsed, id, existing?.kind === "group" ? existing.source : undefined);
      ctx.service.addGroupEnrollment(e, now);
    }
  } catch (error) {
    if (error instanceof BadRequest) return ctx.service.error(400, now, "bad-body", 400004, error.message);
    if ((error as { code?: string }).code === "INVALID_CONFIG" || (error as { code?: string }).code === "UNKNOWN_HUB") {
      return ctx.service.error(400, now, "bad-body", 400004, (error as Error).message);
    }
    throw error;
  }
  ctx.log.info(existing ? "enrollment-changed" : "enrollment-added", { [kind === "enrollment" ? "registrationId" : "groupId"]: id, via: "service-api" });
  return { status: 200, body: show(ctx, kind, id) ?? {} };
}

function remove(ctx: ServiceApiContext, kind: Kind, id: string, ifMatch: string | undefined, now: number): Answer {
  const which = kind === "enrollment" ? { registrationId: id } : { groupId: id };
  const existing = ctx.service.enrollmentInfo(which);
  if (!existing) return notFound(ctx, now, "no-enrollment", `The enrollment ${id} was not found.`);
  if (ifMatch !== undefined && !etagMatches(ifMatch, existing.etag)) return stale(ctx, now);
  ctx.service.removeEnrollment(which);
  ctx.log.info("enrollment-removed", { ...which, via: "service-api" });
  return { status: 204, body: {} };
}

/**
 * `POST /enrollments/query` with `{"query":"*"}`: every enrollment, in pages of
 * `x-ms-max-item-count` (default 100), `x-ms-continuation` naming the next page. Only `*` (or
 * `SELECT * FROM enrollments`) is understood: the emulator does not evaluate DPS's query language.
 */
function query(ctx: ServiceApiContext, kind: Kind, req: IncomingMessage, body: string, now: number): Answer {
  try {
    const spec = body.trim() === "" ? {} : parseJson(body);
    const text = (spec as { query?: unknown } | null)?.query;
    if (text !== undefined && typeof text !== "string") throw new BadRequest("query", "must be a string");
    if (typeof text === "string" && !/^\s*(\*|select\s+\*\s+from\s+enrollment(s|groups))\s*$/i.test(text)) {
      throw new BadRequest("query", 'only "*" (every enrollment) is understood by the emulator');
    }
  } catch (error) {
    if (error instanceof BadRequest) return ctx.service.error(400, now, "bad-query", 400004, error.message);
    throw error;
  }
  const ids = ctx.service.enrollmentIds(kind === "enrollment" ? "individual" : "group");
  return page(ctx, req, now, ids.length, (i) => show(ctx, kind, ids[i]) ?? {});
}

/** `POST /registrations/{groupId}/query`: the registration states of a group's members. */
function registrationQuery(ctx: ServiceApiContext, groupId: string, req: IncomingMessage, now: number): Answer {
  if (!ctx.service.enrollmentInfo({ groupId })) return notFound(ctx, now, "no-enrollment", `The enrollment group ${groupId} was not found.`);
  const members = ctx.service.registrations().filter((r) => r.enrollment.kind === "group" && r.enrollment.groupId === groupId);
  return page(ctx, req, now, members.length, (i) => registrationState(members[i]));
}

function page(ctx: ServiceApiContext, req: IncomingMessage, now: number, total: number, item: (i: number) => Record<string, unknown>): Answer {
  const sizeText = header(req, "x-ms-max-item-count");
  const startText = header(req, "x-ms-continuation");
  const size = sizeText === undefined ? 100 : Number(sizeText);
  const start = startText === undefined ? 0 : Number(startText);
  if (!Number.isInteger(size) || size < 1 || size > MAX_PAGE) return ctx.service.error(400, now, "bad-page", 400004, `x-ms-max-item-count: must be an integer from 1 to ${MAX_PAGE}`);
  if (!Number.isInteger(start) || start < 0) return ctx.service.error(400, now, "bad-page", 400004, "x-ms-continuation: not a token this service issued");
  const items: Record<string, unknown>[] = [];
  for (let i = start; i < Math.min(total, start + size); i++) items.push(item(i));
  const answer: Answer & { headers?: Record<string, string> } = { status: 200, body: items as unknown as Record<string, unknown> };
  if (start + size < total) answer.headers = { "x-ms-continuation": String(start + size) };
  return answer;
}

// ---- bodies -------------------------------------------------------------------------------------

/** JSON.parse, then a depth check (iterative: a hostile body cannot exhaust the stack here). */
function parseJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new BadRequest("body", `is not JSON (${(error as Error).message})`);
  }
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as [unknown, number];
    if (typeof v !== "object" || v === null) continue;
    if (depth > SERVICE_API_MAX_DEPTH) throw new BadRequest("body", `nests deeper than ${SERVICE_API_MAX_DEPTH} levels`);
    for (const child of Object.values(v)) if (typeof child === "object" && child !== null) stack.push([child, depth + 1]);
  }
  return value;
}

type Json = Record<string, unknown>;

function object(value: unknown, field: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new BadRequest(field, "must be a JSON object");
  return value as Json;
}

function optionalString(value: unknown, field: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new BadRequest(field, "must be a string");
  return value;
}

/** DPS generates 64-byte keys when an enrollment gives none. */
function generatedKey(): string {
  return randomBytes(64).toString("base64");
}

/** The fields both kinds share, mapped to the emulator's enrollment model. */
function common(ctx: ServiceApiContext, b: Json, previous: { primaryKey?: string; secondaryKey?: string } | undefined) {
  const attestation = object(b.attestation, "attestation");
  if (attestation.type !== "symmetricKey") {
    throw new BadRequest("attestation.type", `must be "symmetricKey" (the emulator has no ${typeof attestation.type === "string" ? attestation.type : "other"} attestation)`);
  }
  const keys = attestation.symmetricKey === undefined || attestation.symmetricKey === null ? {} : object(attestation.symmetricKey, "attestation.symmetricKey");
  const given = {
    primaryKey: optionalString(keys.primaryKey, "attestation.symmetricKey.primaryKey"),
    secondaryKey: optionalString(keys.secondaryKey, "attestation.symmetricKey.secondaryKey"),
  };
  for (const [name, key] of Object.entries(given)) {
    if (key !== undefined && (!/^[A-Za-z0-9+/]+={0,2}$/.test(key) || Buffer.from(key, "base64").length < 16)) {
      throw new BadRequest(`attestation.symmetricKey.${name}`, "must be base64 of at least 16 bytes");
    }
  }
  // Keys left out: generated on create; an update that leaves them out keeps the enrolled ones.
  const primaryKey = given.primaryKey ?? previous?.primaryKey ?? generatedKey();
  const secondaryKey = given.secondaryKey ?? previous?.secondaryKey ?? generatedKey();
  let enabled = true;
  if (b.provisioningStatus !== undefined && b.provisioningStatus !== null) {
    if (b.provisioningStatus !== "enabled" && b.provisioningStatus !== "disabled") throw new BadRequest("provisioningStatus", 'must be "enabled" or "disabled"');
    enabled = b.provisioningStatus === "enabled";
  }
  const hubNames = ctx.service.hubNames();
  const linked = (name: string, field: string): string => {
    const hub = hubNames.find((h) => h.toLowerCase() === name.toLowerCase());
    if (!hub) throw new BadRequest(field, `${name} is not one of the emulator's hubs (${hubNames.join(", ")})`);
    return hub;
  };
  let iotHubHostName = optionalString(b.iotHubHostName, "iotHubHostName");
  if (iotHubHostName !== undefined) iotHubHostName = linked(iotHubHostName, "iotHubHostName");
  if (b.iotHubs !== undefined && b.iotHubs !== null) {
    if (!Array.isArray(b.iotHubs) || b.iotHubs.some((h) => typeof h !== "string")) throw new BadRequest("iotHubs", "must be an array of hub host names");
    const hubs = (b.iotHubs as string[]).map((h, i) => linked(h, `iotHubs[${i}]`));
    // The emulator's enrollment names at most one hub; a single-hub list pins it, a longer list
    // leaves the choice to the emulator's allocation over all its hubs.
    if (iotHubHostName === undefined && hubs.length === 1) iotHubHostName = hubs[0];
  }
  const allocationPolicy = b.allocationPolicy;
  if (allocationPolicy !== undefined && allocationPolicy !== null && !["hashed", "geoLatency", "static", "custom"].includes(allocationPolicy as string)) {
    throw new BadRequest("allocationPolicy", "must be hashed, geoLatency, static or custom");
  }
  let initialTwin: object | undefined;
  if (b.initialTwin !== undefined && b.initialTwin !== null) {
    const twin = object(b.initialTwin, "initialTwin");
    const out: { tags?: object; properties?: { desired?: object } } = {};
    if (twin.tags !== undefined && twin.tags !== null) out.tags = object(twin.tags, "initialTwin.tags");
    if (twin.properties !== undefined && twin.properties !== null) {
      const properties = object(twin.properties, "initialTwin.properties");
      if (properties.desired !== undefined && properties.desired !== null) out.properties = { desired: object(properties.desired, "initialTwin.properties.desired") };
    }
    initialTwin = out;
  }
  let reprovisionPolicy: ReprovisionPolicy | undefined;
  if (b.reprovisionPolicy !== undefined && b.reprovisionPolicy !== null) {
    const policy = object(b.reprovisionPolicy, "reprovisionPolicy");
    const flag = (name: string, fallback: boolean): boolean => {
      const v = policy[name];
      if (v === undefined || v === null) return fallback;
      if (typeof v !== "boolean") throw new BadRequest(`reprovisionPolicy.${name}`, "must be true or false");
      return v;
    };
    // DPS's defaults when a flag is left out: both true.
    const update = flag("updateHubAssignment", true);
    const migrate = flag("migrateDeviceData", true);
    reprovisionPolicy = !update ? "neverReprovision" : migrate ? "reprovisionAndMigrate" : "reprovisionAndReset";
  }
  const out: Omit<IndividualEnrollment, "registrationId" | "x509"> = { primaryKey, secondaryKey, enabled };
  if (iotHubHostName !== undefined) out.iotHubHostName = iotHubHostName;
  if (initialTwin !== undefined) out.initialTwin = initialTwin;
  if (reprovisionPolicy !== undefined) out.reprovisionPolicy = reprovisionPolicy;
  return out;
}

function toIndividual(ctx: ServiceApiContext, body: unknown, id: string, previous: IndividualEnrollment | undefined): IndividualEnrollment {
  const b = object(body, "body");
  if (b.registrationId === undefined || b.registrationId === null) throw new BadRequest("registrationId", "is required");
  if (b.registrationId !== id) throw new BadRequest("registrationId", `must equal the id in the path (${id})`);
  try {
    checkRegistrationId(b.registrationId, "registrationId");
  } catch (error) {
    throw new BadRequest("registrationId", (error as Error).message.replace(/^registrationId: /, ""));
  }
  const deviceId = optionalString(b.deviceId, "deviceId");
  if (deviceId !== undefined) {
    try {
      checkDeviceId(deviceId, "deviceId");
    } catch (error) {
      throw new BadRequest("deviceId", (error as Error).message.replace(/^deviceId: /, ""));
    }
  }
  const e: IndividualEnrollment = { registrationId: id, ...common(ctx, b, previous) };
  if (deviceId !== undefined) e.deviceId = deviceId;
  if (previous?.allocationPayload !== undefined) e.allocationPayload = previous.allocationPayload;
  return e;
}

function toGroup(ctx: ServiceApiContext, body: unknown, id: string, previous: GroupEnrollment | undefined): GroupEnrollment {
  const b = object(body, "body");
  if (b.enrollmentGroupId === undefined || b.enrollmentGroupId === null) throw new BadRequest("enrollmentGroupId", "is required");
  if (b.enrollmentGroupId !== id) throw new BadRequest("enrollmentGroupId", `must equal the id in the path (${id})`);
  try {
    checkRegistrationId(b.enrollmentGroupId, "enrollmentGroupId");
  } catch (error) {
    throw new BadRequest("enrollmentGroupId", (error as Error).message.replace(/^enrollmentGroupId: /, ""));
  }
  const e: GroupEnrollment = { groupId: id, ...common(ctx, b, previous) };
  if (previous?.allocationPayload !== undefined) e.allocationPayload = previous.allocationPayload;
  if (previous?.disabledRegistrations !== undefined && previous.disabledRegistrations.length > 0) e.disabledRegistrations = previous.disabledRegistrations;
  return e;
}

/** An enrollment in DPS's JSON shape, keys included (the service API is for the owner of the keys). */
function show(ctx: ServiceApiContext, kind: Kind, id: string): Record<string, unknown> | undefined {
  const info = ctx.service.enrollmentInfo(kind === "enrollment" ? { registrationId: id } : { groupId: id });
  if (!info) return undefined;
  const s = info.source;
  const out: Record<string, unknown> = {};
  if (info.kind === "individual") {
    out.registrationId = info.source.registrationId;
    if (info.source.deviceId !== undefined) out.deviceId = info.source.deviceId;
  } else {
    out.enrollmentGroupId = info.source.groupId;
  }
  if (s.x509 !== undefined) {
    // The emulator's own x509 model (certificate or thumbprint; a group's CA), not DPS's clientCertificates/signingCertificates shape.
    out.attestation = { type: "x509", x509: { ...s.x509 } };
  } else {
    const symmetricKey: Record<string, string> = { primaryKey: s.primaryKey ?? "" };
    if (s.secondaryKey !== undefined) symmetricKey.secondaryKey = s.secondaryKey;
    out.attestation = { type: "symmetricKey", symmetricKey };
  }
  out.capabilities = { iotEdge: false };
  if (s.iotHubHostName !== undefined) {
    out.iotHubHostName = s.iotHubHostName;
    out.iotHubs = [s.iotHubHostName];
  }
  if (s.initialTwin !== undefined) {
    const twin = s.initialTwin as { tags?: object; properties?: { desired?: object } };
    out.initialTwin = { tags: twin.tags ?? {}, properties: { desired: twin.properties?.desired ?? {} } };
  }
  out.provisioningStatus = s.enabled === false ? "disabled" : "enabled";
  const policy = s.reprovisionPolicy;
  if (policy !== undefined) {
    out.reprovisionPolicy = { updateHubAssignment: policy !== "neverReprovision", migrateDeviceData: policy === "reprovisionAndMigrate" };
  }
  out.allocationPolicy = s.iotHubHostName !== undefined ? "static" : "hashed";
  out.createdDateTimeUtc = info.createdDateTimeUtc;
  out.lastUpdatedDateTimeUtc = info.lastUpdatedDateTimeUtc;
  out.etag = info.etag;
  return out;
}

// ---- answers ------------------------------------------------------------------------------------

/** If-Match as a client writes it: the etag as DPS gave it, with or without quotes or `W/`, or `*`. */
function etagMatches(ifMatch: string, etag: string): boolean {
  const bare = (t: string): string => t.trim().replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
  return ifMatch.split(",").some((candidate) => candidate.trim() === "*" || bare(candidate) === bare(etag));
}

function stale(ctx: ServiceApiContext, now: number): Answer {
  return ctx.service.error(412, now, "stale-etag", 412001, "The ETag in If-Match does not match the current one: get the record again.");
}

function notFound(ctx: ServiceApiContext, now: number, reason: string, message: string): Answer {
  return ctx.service.error(404, now, reason, 404201, message);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function send(ctx: ServiceApiContext, req: IncomingMessage, res: ServerResponse, answer: Answer & { headers?: Record<string, string> }): void {
  if (res.destroyed) return;
  Counters.bump(ctx.counters.dpsService, answer.status);
  const headers: Record<string, string> = { ...(answer.headers ?? {}) };
  if (answer.status >= 300) {
    headers["x-ms-error-code"] = String(answer.body.errorCode ?? describeStatus(answer.status).errorCode);
    // The reason is ours (never the token or a key); the body's message is what the caller reads.
    if (ctx.log.enabled("info")) ctx.log.info("service-api-error-answer", { method: req.method, status: answer.status, errorCode: answer.body.errorCode, reason: answer.reason });
  }
  if (answer.status === 204) {
    res.writeHead(204, headers);
    res.end();
    return;
  }
  const text = JSON.stringify(answer.body);
  headers["content-type"] = "application/json; charset=utf-8";
  headers["content-length"] = String(Buffer.byteLength(text));
  if (typeof answer.body.trackingId === "string") headers["x-ms-request-id"] = answer.body.trackingId;
  if (answer.status === 200 && typeof answer.body.etag === "string") headers.etag = answer.body.etag;
  res.writeHead(answer.status, headers);
  res.end(text);
}
