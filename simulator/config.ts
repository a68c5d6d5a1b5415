// The emulator's configuration: the types of the public contract and the checks that turn a JSON
// file (or an object from a test) into something the service can trust. Every check throws an
// EmulatorError that names the field, so a typo in a config file is found at start, not mid-run.
//
// A file is checked against schemas/emulator-config.schema.json first (the schema editors use:
// `"$schema": "../schemas/emulator-config.schema.json"`), then by the checks below, which also
// cover what a schema cannot say (keys that decode to 16 bytes, hub names listed twice). An object
// from code goes through the checks below, then the same schema.
import { X509Certificate as NodeX509 } from "node:crypto";
import { readFileSync } from "node:fs";
import { EmulatorError, INJECTABLE_STATUSES } from "./errors.js";
import { formatIssues, validate } from "./json-schema.js";
import { decodeKey } from "./sas.js";
import { isDeviceId } from "./topics.js";

export type ReprovisionPolicy = "reprovisionAndMigrate" | "reprovisionAndReset" | "neverReprovision";

/**
 * X.509 attestation of an individual enrollment: the device's certificate (PEM) or its thumbprint
 * (SHA-1 or SHA-256 hex, colons allowed); either matches.
 */
export interface IndividualX509 {
  certificate?: string;
  thumbprint?: string;
}

/** X.509 attestation of a group: the root or intermediate CA (PEM) that signed its members' certificates. */
export interface GroupX509 {
  caCertificate: string;
}

/** Certificate metadata as DPS returns it with a trust bundle's certificate (computed from the PEM when absent). */
export interface TrustBundleMetadata {
  subjectName?: string;
  sha1Thumbprint?: string;
  sha256Thumbprint?: string;
  issuerName?: string;
  notBeforeUtc?: string;
  notAfterUtc?: string;
  serialNumber?: string;
  version?: number;
}

/** CA certificates DPS hands the device in the assigned registration state (`registrationState.trustBundle`). */
export interface TrustBundle {
  id: string;
  etag?: string;
  certificates: { certificate: string; metadata?: TrustBundleMetadata }[];
}

export interface IndividualEnrollment {
  registrationId: string;
  /** Symmetric key attestation (base64); absent when the enrollment has `x509`. */
  primaryKey?: string;
  /** X.509 attestation instead of keys (docs/EMULATOR.md, X.509 attestation). */
  x509?: IndividualX509;
  /** Returned in the assigned registration state. */
  trustBundle?: TrustBundle;
  secondaryKey?: string;
  enabled?: boolean;
  iotHubHostName?: string;
  initialTwin?: object;
  allocationPayload?: object;
  deviceId?: string;
  /** What a second registration does (default: the config's, which defaults to reprovisionAndMigrate). */
  reprovisionPolicy?: ReprovisionPolicy;
}

export interface GroupEnrollment {
  groupId: string;
  /** The group key (base64); absent when the group has `x509`. */
  primaryKey?: string;
  /** X.509 attestation instead of keys. */
  x509?: GroupX509;
  /** Returned in the assigned registration state of every member. */
  trustBundle?: TrustBundle;
  secondaryKey?: string;
  enabled?: boolean;
  iotHubHostName?: string;
  initialTwin?: object;
  allocationPayload?: object;
  /** Members of the group whose registrations are disabled (as DPS does with a disabled individual record under a group). */
  disabledRegistrations?: string[];
  reprovisionPolicy?: ReprovisionPolicy;
}

export type FaultStep = "connect" | "subscribe" | "register" | "poll" | "lookup" | "hub-connect" | "hub-publish" | "twin-get" | "twin-patch" | "issuance";
/**
 * Garbled answers. At register, poll and lookup: the whole body (non-json, missing-operation-id,
 * wrong-types, truncated). At issuance: the issued chain of an otherwise assigned answer
 * (truncated, wrong-types, bad-signature, missing-issuer).
 */
export type MalformedKind = "non-json" | "missing-operation-id" | "wrong-types" | "truncated" | "bad-signature" | "missing-issuer";

export interface FaultRule {
  step: FaultStep;
  registrationId?: string;
  groupId?: string;
  probability?: number;
  times?: number;
  status?: number;
  errorCode?: number;
  retryAfter?: number | string;
  connack?: number;
  drop?: boolean;
  delayMs?: number;
  malformed?: MalformedKind;
}

export interface HubConfig {
  hostName: string;
  allocationWeight?: number;
  /** Largest telemetry body the hub takes (default 256 KiB, the real hub's limit); a larger one closes the connection. */
  maxMessageBytes?: number;
  /**
   * Shared access policies of the hub's service API (HTTPS). Default: one `iothubowner` policy
   * with a key drawn at start (read it with `Emulator.hubServiceConnectionString()` or GET /hubs).
   */
  sharedAccessPolicies?: SharedAccessPolicy[];
}

/** A shared access policy of a hub: a key name and its keys (base64, at least 16 bytes). */
export interface SharedAccessPolicy {
  keyName: string;
  primaryKey: string;
  secondaryKey?: string;
}

export interface EmulatorConfig {
  /** The schema a file follows, for editors (ignored). */
  $schema?: string;
  idScope: string;
  hubs: HubConfig[];
  allocationPolicy?: "hashed" | "static";
  assignAfterPolls?: number;
  retryAfterSeconds?: number;
  enrollments?: { individual?: IndividualEnrollment[]; groups?: GroupEnrollment[] };
  limits?: { registrationsPerMinute?: number; operationsPerMinute?: number; pollsPerDevicePer10s?: number; twinOperationsPerSecond?: number };
  faults?: FaultRule[];
  /** Re-provisioning policy of enrollments that do not set one (default reprovisionAndMigrate, as DPS). */
  reprovisionPolicy?: ReprovisionPolicy;
  /** Answer for a registration id no enrollment can vouch for when the scope has no group enrollment (default 404). */
  unknownRegistrationStatus?: 401 | 404;
  /** Messages kept for `telemetry()` (default 10,000). */
  telemetryLimit?: number;
  /** The DPS service REST API (enrollments, registration states) on the HTTPS port. */
  serviceApi?: ServiceApiConfig;
  /** Certificates issued from the CSR of a register request (API 2025-07-01-preview). */
  certificateIssuance?: CertificateIssuanceConfig;
}

export interface CertificateIssuanceConfig {
  /** Default true; false: a register request carrying a CSR gets 400. */
  enabled?: boolean;
  /** Lifetime of issued certificates, 30 s to 90 days (default 7 days). */
  lifetimeSeconds?: number;
}

export const DEFAULT_CERTIFICATE_LIFETIME_SECONDS = 7 * 86_400;
export const MAX_CERTIFICATE_LIFETIME_SECONDS = 90 * 86_400;
export const MIN_CERTIFICATE_LIFETIME_SECONDS = 30;

/** A shared access policy of the DPS service API (`skn` in a service token). */
export interface ServicePolicy {
  name: string;
  /** base64, at least 16 bytes; generated at start (from the seed) when absent. */
  primaryKey?: string;
  secondaryKey?: string;
}

export interface ServiceApiConfig {
  /**
   * The DPS host name service tokens name in `sr` (default dps-emulator.azure-devices-provisioning.localhost,
   * which the server certificate covers). The connection string's HostName.
   */
  hostName?: string;
  /** Default: one policy, provisioningserviceowner, with a generated key. */
  policies?: ServicePolicy[];
}

export const DEFAULT_SERVICE_HOST_NAME = "dps-emulator.azure-devices-provisioning.localhost";
export const DEFAULT_SERVICE_POLICY = "provisioningserviceowner";

export const DEFAULT_CONFIG: EmulatorConfig = {
  idScope: "0ne00000001",
  hubs: [{ hostName: "hub-1.azure-devices.localhost" }],
};

export const FAULT_STEPS: readonly FaultStep[] = ["connect", "subscribe", "register", "poll", "lookup", "hub-connect", "hub-publish", "twin-get", "twin-patch", "issuance"];
export const MALFORMED_KINDS: readonly MalformedKind[] = ["non-json", "missing-operation-id", "wrong-types", "truncated", "bad-signature", "missing-issuer"];
/** The malformed kinds each step takes. */
const MALFORMED_BY_STEP: Partial<Record<FaultStep, readonly MalformedKind[]>> = {
  register: ["non-json", "missing-operation-id", "wrong-types", "truncated"],
  poll: ["non-json", "missing-operation-id", "wrong-types", "truncated"],
  lookup: ["non-json", "missing-operation-id", "wrong-types", "truncated"],
  issuance: ["truncated", "wrong-types", "bad-signature", "missing-issuer"],
};
const POLICIES: readonly ReprovisionPolicy[] = ["reprovisionAndMigrate", "reprovisionAndReset", "neverReprovision"];

/** IoT Hub's limit on a device-to-cloud message: 256 KiB. */
export const HUB_MAX_MESSAGE_BYTES = 256 * 1024;

/** The schema of a config file, in schemas/ (simulator/json-schema.ts reads it). */
export const CONFIG_SCHEMA = "emulator-config.schema.json";

const CONFIG_FIELDS = ["$schema", "idScope", "hubs", "allocationPolicy", "assignAfterPolls", "retryAfterSeconds", "enrollments", "limits", "faults", "reprovisionPolicy", "unknownRegistrationStatus", "telemetryLimit", "serviceApi", "certificateIssuance"];
const HUB_FIELDS = ["hostName", "allocationWeight", "maxMessageBytes", "sharedAccessPolicies"];
const LIMIT_FIELDS = ["registrationsPerMinute", "operationsPerMinute", "pollsPerDevicePer10s", "twinOperationsPerSecond"] as const;

// DPS registration ids: up to 128 characters, alphanumerics and - . _ :
const REGISTRATION_ID = /^[A-Za-z0-9\-._:]{1,128}$/;
const HOST_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*$/;

function fail(field: string, problem: string): never {
  throw new EmulatorError("INVALID_CONFIG", `${field}: ${problem}`);
}

/** A typo in a field name is an error at start, not a setting silently ignored. */
function knownFields(value: object, known: readonly string[], field: string): void {
  for (const key of Object.keys(value)) if (!known.includes(key)) fail(field ? `${field}.${key}` : key, `is not a known field (${known.join(", ")})`);
}

/** hubs[].maxMessageBytes: 1 to 256 KiB (a hub that takes more than the real one would hide a device's oversize bug). */
export function checkMaxMessageBytes(value: unknown, field: string): void {
  if (value !== undefined && !(Number.isInteger(value) && (value as number) >= 1 && (value as number) <= HUB_MAX_MESSAGE_BYTES)) {
    fail(field, `must be an integer from 1 to ${HUB_MAX_MESSAGE_BYTES} (the real hub's limit, 256 KiB)`);
  }
}

function optionalObject(value: unknown, field: string): void {
  if (value !== undefined && (typeof value !== "object" || value === null || Array.isArray(value))) fail(field, "must be a JSON object");
}

function optionalBoolean(value: unknown, field: string): void {
  if (value !== undefined && typeof value !== "boolean") fail(field, "must be true or false");
}

function nonNegativeInteger(value: unknown, field: string): void {
  if (value !== undefined && (!Number.isInteger(value) || (value as number) < 0)) fail(field, "must be a non-negative integer");
}

export function checkRegistrationId(id: unknown, field: string): asserts id is string {
  if (typeof id !== "string" || !REGISTRATION_ID.test(id)) {
    fail(field, "must be 1-128 characters of letters, digits, '-', '.', '_' or ':'");
  }
}

/**
 * IoT Hub device ids: case-sensitive, 1-128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '
 * (learn.microsoft.com, the deviceId of IoT Hub's Event Grid events and the identity registry).
 * `+` and `#` are accepted as the registry accepts them, though MQTT cannot carry them in a topic.
 */
export function checkDeviceId(id: unknown, field: string): asserts id is string {
  if (!isDeviceId(id)) fail(field, "must be 1-128 characters of letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '");
}

function checkKeys(e: { primaryKey: unknown; secondaryKey?: unknown }, field: string): void {
  if (typeof e.primaryKey !== "string") fail(`${field}.primaryKey`, "is required (base64)");
  try {
    decodeKey(e.primaryKey, `${field}.primaryKey`);
    if (e.secondaryKey !== undefined) decodeKey(e.secondaryKey as string, `${field}.secondaryKey`);
  } catch (error) {
    fail(field, (error as Error).message);
  }
}

/** Keys or x509, not both; a certificate must parse (a CA must be a CA). */
function checkAttestation(e: { primaryKey?: unknown; secondaryKey?: unknown; x509?: unknown }, field: string, kind: "individual" | "group"): void {
  if (e.x509 === undefined) return checkKeys(e as { primaryKey: unknown }, field);
  if (e.primaryKey !== undefined || e.secondaryKey !== undefined) fail(field, "has both keys and x509: an enrollment has one attestation");
  optionalObject(e.x509, `${field}.x509`);
  const x = e.x509 as Record<string, unknown>;
  const pem = (value: unknown, at: string): NodeX509 => {
    if (typeof value !== "string") fail(at, "must be a PEM certificate");
    try {
      return new NodeX509(value);
    } catch (error) {
      fail(at, `is not a certificate: ${(error as Error).message}`);
    }
  };
  if (kind === "individual") {
    knownFields(x, ["certificate", "thumbprint"], `${field}.x509`);
    if (x.certificate === undefined && x.thumbprint === undefined) fail(`${field}.x509`, "needs certificate (PEM) or thumbprint");
    if (x.certificate !== undefined) pem(x.certificate, `${field}.x509.certificate`);
    if (x.thumbprint !== undefined && (typeof x.thumbprint !== "string" || !/^(?:[0-9A-Fa-f]{2}[:\s]?){20}$|^(?:[0-9A-Fa-f]{2}[:\s]?){32}$/.test(x.thumbprint.trim()))) {
      fail(`${field}.x509.thumbprint`, "must be a SHA-1 (40) or SHA-256 (64) hex thumbprint");
    }
  } else {
    knownFields(x, ["caCertificate"], `${field}.x509`);
    if (!pem(x.caCertificate, `${field}.x509.caCertificate`).ca) fail(`${field}.x509.caCertificate`, "is not a CA certificate (basicConstraints CA:true)");
  }
}

const METADATA_FIELDS = ["subjectName", "sha1Thumbprint", "sha256Thumbprint", "issuerName", "notBeforeUtc", "notAfterUtc", "serialNumber", "version"];

function checkTrustBundle(b: TrustBundle | undefined, field: string): void {
  if (b === undefined) return;
  optionalObject(b, field);
  knownFields(b, ["id", "etag", "certificates"], field);
  if (typeof b.id !== "string" || b.id.length === 0 || b.id.length > 128) fail(`${field}.id`, "must be a string of 1-128 characters");
  if (b.etag !== undefined && typeof b.etag !== "string") fail(`${field}.etag`, "must be a string");
  if (!Array.isArray(b.certificates) || b.certificates.length === 0) fail(`${field}.certificates`, "must list at least one certificate");
  b.certificates.forEach((c, i) => {
    const at = `${field}.certificates[${i}]`;
    optionalObject(c, at);
    knownFields(c, ["certificate", "metadata"], at);
    if (typeof c.certificate !== "string") fail(`${at}.certificate`, "must be a PEM certificate");
    try {
      new NodeX509(c.certificate);
    } catch (error) {
      fail(`${at}.certificate`, `is not a certificate: ${(error as Error).message}`);
    }
    optionalObject(c.metadata, `${at}.metadata`);
    if (c.metadata !== undefined) knownFields(c.metadata, METADATA_FIELDS, `${at}.metadata`);
  });
}

function checkPolicy(value: unknown, field: string): void {
  if (value !== undefined && !POLICIES.includes(value as ReprovisionPolicy)) fail(field, `must be one of ${POLICIES.join(", ")}`);
}

export function checkIndividualEnrollment(e: IndividualEnrollment, field = "enrollment"): void {
  if (typeof e !== "object" || e === null) fail(field, "must be an object");
  checkRegistrationId(e.registrationId, `${field}.registrationId`);
  checkAttestation(e, field, "individual");
  checkTrustBundle(e.trustBundle, `${field}.trustBundle`);
  optionalBoolean(e.enabled, `${field}.enabled`);
  optionalObject(e.initialTwin, `${field}.initialTwin`);
  optionalObject(e.allocationPayload, `${field}.allocationPayload`);
  if (e.deviceId !== undefined) checkDeviceId(e.deviceId, `${field}.deviceId`);
  if (e.iotHubHostName !== undefined && typeof e.iotHubHostName !== "string") fail(`${field}.iotHubHostName`, "must be a string");
  checkPolicy(e.reprovisionPolicy, `${field}.reprovisionPolicy`);
}

export function checkGroupEnrollment(e: GroupEnrollment, field = "group"): void {
  if (typeof e !== "object" || e === null) fail(field, "must be an object");
  checkRegistrationId(e.groupId, `${field}.groupId`);
  checkAttestation(e, field, "group");
  checkTrustBundle(e.trustBundle, `${field}.trustBundle`);
  optionalBoolean(e.enabled, `${field}.enabled`);
  optionalObject(e.initialTwin, `${field}.initialTwin`);
  optionalObject(e.allocationPayload, `${field}.allocationPayload`);
  if (e.iotHubHostName !== undefined && typeof e.iotHubHostName !== "string") fail(`${field}.iotHubHostName`, "must be a string");
  if (e.disabledRegistrations !== undefined) {
    if (!Array.isArray(e.disabledRegistrations)) fail(`${field}.disabledRegistrations`, "must be an array of registration ids");
    e.disabledRegistrations.forEach((id, i) => checkRegistrationId(id, `${field}.disabledRegistrations[${i}]`));
  }
  checkPolicy(e.reprovisionPolicy, `${field}.reprovisionPolicy`);
}

export function checkFaultRule(rule: FaultRule, field = "fault"): void {
  if (typeof rule !== "object" || rule === null) fail(field, "must be an object");
  if (!FAULT_STEPS.includes(rule.step)) fail(`${field}.step`, `must be one of ${FAULT_STEPS.join(", ")}`);
  if (rule.registrationId !== undefined && typeof rule.registrationId !== "string") fail(`${field}.registrationId`, "must be a string");
  if (rule.groupId !== undefined && typeof rule.groupId !== "string") fail(`${field}.groupId`, "must be a string");
  if (rule.probability !== undefined && !(typeof rule.probability === "number" && rule.probability >= 0 && rule.probability <= 1)) {
    fail(`${field}.probability`, "must be a number from 0 to 1");
  }
  if (rule.times !== undefined && (!Number.isInteger(rule.times) || rule.times < 1)) fail(`${field}.times`, "must be a positive integer");
  if (rule.status !== undefined && !INJECTABLE_STATUSES.includes(rule.status)) {
    fail(`${field}.status`, `must be one of ${INJECTABLE_STATUSES.join(", ")}`);
  }
  if (rule.errorCode !== undefined && (!Number.isInteger(rule.errorCode) || rule.errorCode < 100000 || rule.errorCode > 599999)) {
    fail(`${field}.errorCode`, "must be a six-digit integer");
  }
  if (rule.retryAfter !== undefined && typeof rule.retryAfter !== "number" && typeof rule.retryAfter !== "string") {
    fail(`${field}.retryAfter`, "must be a number or a string");
  }
  if (rule.connack !== undefined && (!Number.isInteger(rule.connack) || rule.connack < 1 || rule.connack > 5)) {
    fail(`${field}.connack`, "must be a CONNACK return code from 1 to 5");
  }
  if (rule.connack !== undefined && rule.step !== "connect" && rule.step !== "hub-connect") {
    fail(`${field}.connack`, "applies only to the connect and hub-connect steps");
  }
  optionalBoolean(rule.drop, `${field}.drop`);
  if (rule.delayMs !== undefined && !(Number.isInteger(rule.delayMs) && rule.delayMs >= 0 && rule.delayMs <= 600_000)) {
    fail(`${field}.delayMs`, "must be an integer from 0 to 600000");
  }
  if (rule.malformed !== undefined) {
    if (!MALFORMED_KINDS.includes(rule.malformed)) fail(`${field}.malformed`, `must be one of ${MALFORMED_KINDS.join(", ")}`);
    const kinds = MALFORMED_BY_STEP[rule.step];
    if (kinds === undefined) fail(`${field}.malformed`, "applies only to the register, poll, lookup and issuance steps");
    if (!kinds.includes(rule.malformed)) fail(`${field}.malformed`, `at step ${rule.step} must be one of ${kinds.join(", ")}`);
  }
  const known = new Set(["step", "registrationId", "groupId", "probability", "times", "status", "errorCode", "retryAfter", "connack", "drop", "delayMs", "malformed"]);
  for (const key of Object.keys(rule)) if (!known.has(key)) fail(`${field}.${key}`, "is not a fault rule field");
}

function checkServiceApi(api: ServiceApiConfig | undefined): void {
  if (api === undefined) return;
  optionalObject(api, "serviceApi");
  knownFields(api, ["hostName", "policies"], "serviceApi");
  if (api.hostName !== undefined && (typeof api.hostName !== "string" || !HOST_NAME.test(api.hostName))) fail("serviceApi.hostName", "must be a host name");
  if (api.policies === undefined) return;
  if (!Array.isArray(api.policies) || api.policies.length === 0) fail("serviceApi.policies", "must list at least one policy");
  const names = new Set<string>();
  api.policies.forEach((p, i) => {
    const field = `serviceApi.policies[${i}]`;
    if (typeof p !== "object" || p === null) fail(field, "must be an object");
    knownFields(p, ["name", "primaryKey", "secondaryKey"], field);
    if (typeof p.name !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(p.name)) fail(`${field}.name`, "must be 1-64 letters, digits, '.', '_' or '-'");
    if (names.has(p.name)) fail(`${field}.name`, "is listed twice");
    names.add(p.name);
    try {
      if (p.primaryKey !== undefined) decodeKey(p.primaryKey, `${field}.primaryKey`);
      if (p.secondaryKey !== undefined) decodeKey(p.secondaryKey, `${field}.secondaryKey`);
    } catch (error) {
      fail(field, (error as Error).message);
    }
  });
}

function checkCertificateIssuance(c: CertificateIssuanceConfig | undefined): void {
  if (c === undefined) return;
  optionalObject(c, "certificateIssuance");
  knownFields(c, ["enabled", "lifetimeSeconds"], "certificateIssuance");
  optionalBoolean(c.enabled, "certificateIssuance.enabled");
  const s = c.lifetimeSeconds;
  if (s !== undefined && !(Number.isInteger(s) && s >= MIN_CERTIFICATE_LIFETIME_SECONDS && s <= MAX_CERTIFICATE_LIFETIME_SECONDS)) {
    fail("certificateIssuance.lifetimeSeconds", `must be an integer from ${MIN_CERTIFICATE_LIFETIME_SECONDS} to ${MAX_CERTIFICATE_LIFETIME_SECONDS} (90 days)`);
  }
}

/** Checks a whole configuration; returns it with defaults filled in. Throws EmulatorError. */
export function checkConfig(input: EmulatorConfig): EmulatorConfig {
  if (typeof input !== "object" || input === null) fail("config", "must be an object");
  knownFields(input, CONFIG_FIELDS, "");
  if (typeof input.idScope !== "string" || !/^[A-Za-z0-9]{1,64}$/.test(input.idScope)) fail("idScope", "must be letters and digits, like 0ne00000001");
  if (!Array.isArray(input.hubs) || input.hubs.length === 0) fail("hubs", "must list at least one hub");
  const names = new Set<string>();
  input.hubs.forEach((h, i) => {
    if (typeof h !== "object" || h === null) fail(`hubs[${i}]`, "must be an object");
    knownFields(h, HUB_FIELDS, `hubs[${i}]`);
    if (typeof h.hostName !== "string" || !HOST_NAME.test(h.hostName)) fail(`hubs[${i}].hostName`, "must be a host name");
    if (names.has(h.hostName.toLowerCase())) fail(`hubs[${i}].hostName`, "is listed twice");
    names.add(h.hostName.toLowerCase());
    if (h.allocationWeight !== undefined && !(typeof h.allocationWeight === "number" && h.allocationWeight >= 0 && h.allocationWeight <= 1000)) {
      fail(`hubs[${i}].allocationWeight`, "must be a number from 0 to 1000");
    }
    checkMaxMessageBytes(h.maxMessageBytes, `hubs[${i}].maxMessageBytes`);
    if (h.sharedAccessPolicies !== undefined) {
      if (!Array.isArray(h.sharedAccessPolicies) || h.sharedAccessPolicies.length === 0) fail(`hubs[${i}].sharedAccessPolicies`, "must be a non-empty array");
      const keyNames = new Set<string>();
      h.sharedAccessPolicies.forEach((p, j) => {
        const field = `hubs[${i}].sharedAccessPolicies[${j}]`;
        if (typeof p !== "object" || p === null) fail(field, "must be an object");
        knownFields(p, ["keyName", "primaryKey", "secondaryKey"], field);
        if (typeof p.keyName !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(p.keyName)) fail(`${field}.keyName`, "must be 1-64 letters, digits, '.', '_' or '-'");
        if (keyNames.has(p.keyName)) fail(`${field}.keyName`, "is listed twice");
        keyNames.add(p.keyName);
        checkKeys(p, field);
      });
    }
  });
  if (input.allocationPolicy !== undefined && input.allocationPolicy !== "hashed" && input.allocationPolicy !== "static") {
    fail("allocationPolicy", 'must be "hashed" or "static"');
  }
  nonNegativeInteger(input.assignAfterPolls, "assignAfterPolls");
  nonNegativeInteger(input.retryAfterSeconds, "retryAfterSeconds");
  nonNegativeInteger(input.telemetryLimit, "telemetryLimit");
  checkPolicy(input.reprovisionPolicy, "reprovisionPolicy");
  if (input.unknownRegistrationStatus !== undefined && input.unknownRegistrationStatus !== 401 && input.unknownRegistrationStatus !== 404) {
    fail("unknownRegistrationStatus", "must be 401 or 404");
  }
  const limits = input.limits ?? {};
  optionalObject(input.limits, "limits");
  knownFields(limits, LIMIT_FIELDS, "limits");
  for (const key of LIMIT_FIELDS) {
    if (limits[key] !== undefined && (!Number.isInteger(limits[key]) || (limits[key] as number) < 1)) fail(`limits.${key}`, "must be a positive integer");
  }
  checkServiceApi(input.serviceApi);
  checkCertificateIssuance(input.certificateIssuance);
  optionalObject(input.enrollments, "enrollments");
  knownFields(input.enrollments ?? {}, ["individual", "groups"], "enrollments");
  const individual = input.enrollments?.individual ?? [];
  const groups = input.enrollments?.groups ?? [];
  if (!Array.isArray(individual)) fail("enrollments.individual", "must be an array");
  if (!Array.isArray(groups)) fail("enrollments.groups", "must be an array");
  individual.forEach((e, i) => checkIndividualEnrollment(e, `enrollments.individual[${i}]`));
  groups.forEach((e, i) => checkGroupEnrollment(e, `enrollments.groups[${i}]`));
  const faults = input.faults ?? [];
  if (!Array.isArray(faults)) fail("faults", "must be an array");
  faults.forEach((f, i) => checkFaultRule(f, `faults[${i}]`));
  // What the checks above do not look at (a key misspelt inside an enrollment or an initialTwin),
  // the schema does; for a file it already has (loadConfigFile).
  const issues = validate(CONFIG_SCHEMA, input);
  if (issues.length > 0) throw new EmulatorError("INVALID_CONFIG", formatIssues("", issues));
  return {
    ...input,
    allocationPolicy: input.allocationPolicy ?? "hashed",
    assignAfterPolls: input.assignAfterPolls ?? 1,
    retryAfterSeconds: input.retryAfterSeconds ?? 3,
    limits: {
      registrationsPerMinute: limits.registrationsPerMinute ?? 1000,
      operationsPerMinute: limits.operationsPerMinute ?? 1000,
      pollsPerDevicePer10s: limits.pollsPerDevicePer10s ?? 5,
      ...(limits.twinOperationsPerSecond === undefined ? {} : { twinOperationsPerSecond: limits.twinOperationsPerSecond }),
    },
    enrollments: { individual, groups },
    faults,
    reprovisionPolicy: input.reprovisionPolicy ?? "reprovisionAndMigrate",
    unknownRegistrationStatus: input.unknownRegistrationStatus ?? 404,
    telemetryLimit: input.telemetryLimit ?? 10_000,
    certificateIssuance: {
      enabled: input.certificateIssuance?.enabled ?? true,
      lifetimeSeconds: input.certificateIssuance?.lifetimeSeconds ?? DEFAULT_CERTIFICATE_LIFETIME_SECONDS,
    },
  };
}

/** Reads and checks a JSON config file. Throws EmulatorError naming the file and the field. */
export function loadConfigFile(path: string): EmulatorConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new EmulatorError("CONFIG_UNREADABLE", `cannot read config file ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new EmulatorError("INVALID_CONFIG", `config file ${path} is not JSON: ${(error as Error).message}`);
  }
  const issues = validate(CONFIG_SCHEMA, parsed);
  if (issues.length > 0) throw new EmulatorError("INVALID_CONFIG", formatIssues(path, issues));
  try {
    return checkConfig(parsed as EmulatorConfig);
  } catch (error) {
    if (error instanceof EmulatorError) throw new EmulatorError(error.code, `${path}: ${error.message}`);
    throw error;
  }
}
