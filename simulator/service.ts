// The provisioning service and the hubs' device registries, with no I/O: requests come in as
// values (registration id, parsed token, body, the time) and leave as answers (status, JSON body,
// retry-after). The MQTT and HTTPS front ends only move bytes; everything a device can observe
// about DPS's decisions is made here, which is what the unit tests drive directly.
import { createHash, randomBytes, X509Certificate as NodeX509 } from "node:crypto";
import type { EmulatorConfig, GroupEnrollment, IndividualEnrollment, ReprovisionPolicy, TrustBundle, TrustBundleMetadata } from "./config.js";
import { checkGroupEnrollment, checkIndividualEnrollment, checkMaxMessageBytes, HUB_MAX_MESSAGE_BYTES } from "./config.js";
import { EmulatorError, errorBody, timestampUtc } from "./errors.js";
import type { C2dMessage } from "./hub-features.js";
import { chainsTo, commonNameOf, normaliseThumbprint, thumbprintsOf } from "./issuance.js";
import type { Random } from "./random.js";
import { checkSasClaims, decodeKey, deriveDeviceKey, signatureMatches, type SasFailure, type SasToken } from "./sas.js";

export type RegistrationStatus = "unassigned" | "assigning" | "assigned" | "failed" | "disabled";
export type Substatus = "initialAssignment" | "deviceDataMigrated" | "deviceDataReset" | "reprovisionedToInitialAssignment";

export interface RegistrationRecord {
  registrationId: string;
  deviceId?: string;
  assignedHub?: string;
  status: RegistrationStatus;
  substatus?: Substatus;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  etag: string;
  /** The enrollment that vouched for the device. */
  enrollment: { kind: "individual"; registrationId: string } | { kind: "group"; groupId: string };
  /** Custom allocation data returned to the device (`registrationState.payload`). */
  payload?: object;
  /** The `payload` the device sent with its request, if any. */
  requestPayload?: unknown;
  /** The enrollment's trust bundle as the registration state carries it (assigned only). */
  trustBundle?: Record<string, unknown>;
  /** The certificate last issued from the device's CSR (simulator/issuance.ts). */
  issuedCertificate?: { thumbprint: string; notAfter: string };
}

/**
 * What became of a register request's CSR, decided before the (synchronous) register call: the
 * chain to return (possibly broken by an `issuance` fault), or the reason it was refused.
 */
export type CsrOutcome =
  | { ok: true; chain: unknown; thumbprint: string; notAfter: string }
  | { ok: false; problem: string; status?: number; errorCode?: number };

/** The certificates a device presented in its TLS handshake (DER, leaf first): X.509 attestation. */
export interface PresentedCertificates {
  readonly x509: readonly Buffer[];
}
/** How a device proves itself to DPS: a parsed SAS token (or why it is none), or its certificates. */
export type DeviceCredential = SasToken | SasFailure | PresentedCertificates;

/** Certificates the hub keeps per device for X.509 CONNECT (the newest first; older ones stay valid until they expire). */
export const DEVICE_CERTIFICATES_KEPT = 4;

interface EnrollmentBase {
  keys: Buffer[];
  enabled: boolean;
  iotHubHostName?: string;
  initialTwin?: object;
  allocationPayload?: object;
  reprovisionPolicy?: ReprovisionPolicy;
  /** What the service API reports (a new etag on every change). */
  etag: string;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
}
interface IndividualRecord extends EnrollmentBase {
  kind: "individual";
  source: IndividualEnrollment;
  registrationId: string;
  deviceId?: string;
  /** X.509 attestation: the thumbprints (SHA-1 and SHA-256) the device's certificate may have. */
  thumbprints?: Set<string>;
}
interface GroupRecord extends EnrollmentBase {
  kind: "group";
  source: GroupEnrollment;
  groupId: string;
  disabledRegistrations: Set<string>;
  /** X.509 attestation: the CA members' certificates chain to. */
  ca?: NodeX509;
  /** Derived device keys by registration id, bounded (a cache: cheap to recompute). */
  derived: Map<string, Buffer[]>;
}
type EnrollmentRecord = IndividualRecord | GroupRecord;

export interface HubDevice {
  deviceId: string;
  hubHostName: string;
  registrationId: string;
  groupId?: string;
  enabled: boolean;
  keys: Buffer[];
  desired: Record<string, unknown>;
  reported: Record<string, unknown>;
  tags: Record<string, unknown>;
  desiredVersion: number;
  reportedVersion: number;
  /** The twin's version (and etag): one more on every change of tags, desired or reported. */
  twinVersion: number;
  /** ISO time of the twin's last change. */
  twinUpdated?: string;
  /** ISO time of the device's last message or twin request. */
  lastActivity?: string;
  /** C2D messages not yet acknowledged, oldest first (at most C2D_QUEUE_LIMIT). */
  c2d: C2dMessage[];
  connections: number;
  /** Certificates the hub accepts from the device: issued from its CSRs or attested with, newest first (at most DEVICE_CERTIFICATES_KEPT). */
  certificates?: { thumbprint: string; notAfter: string }[];
}

/** A shared access policy of a hub's service API, keys decoded. */
export interface HubPolicy {
  keyName: string;
  primaryKey: string;
  secondaryKey?: string;
  keys: Buffer[];
}

export interface HubState {
  hostName: string;
  weight: number;
  available: boolean;
  /** Largest telemetry body accepted; a larger one closes the connection. */
  maxMessageBytes: number;
  devices: Map<string, HubDevice>;
  /** Service API policies by key name. */
  policies: Map<string, HubPolicy>;
}

interface Operation {
  operationId: string;
  registrationId: string;
  enrollment: EnrollmentRecord;
  polls: number;
  requestPayload: unknown;
  /** The certificate issued from the request's CSR, if it carried one. */
  issued?: CsrOutcome & { ok: true };
  /** The certificate the device attested with (X.509), which the hub then accepts too. */
  attested?: { thumbprint: string; notAfter: string };
  /** The final answer, fixed once the operation completes. */
  result?: Record<string, unknown>;
}

/** What the front end sends back: an HTTP-like status, the JSON object, an optional retry-after. */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
  retryAfter?: number | string;
  /** For logs: why an error answer was given (never a secret). */
  reason?: string;
}

export type AuthResult =
  | { ok: true; enrollment: EnrollmentRecord }
  | { ok: false; status: 401 | 404; reason: SasFailure | "no-enrollment" | "group-key-used-directly" | "wrong-scope" | X509Failure };

/** Why a device's certificate did not authenticate it. */
export type X509Failure =
  | "x509-unreadable"
  | "x509-missing"
  | "x509-cn-mismatch"
  | "x509-expired"
  | "x509-for-key-enrollment"
  | "x509-thumbprint-mismatch"
  | "x509-untrusted-chain";

export interface TelemetryMessage {
  deviceId: string;
  hubHostName: string;
  topic: string;
  payload: string;
  receivedAt: number;
}

const DERIVED_CACHE_LIMIT = 50_000;
const OPERATION_LIMIT = 200_000;

export class ProvisioningService {
  readonly idScope: string;
  readonly #config: EmulatorConfig;
  readonly #random: Random;
  readonly #individual = new Map<string, IndividualRecord>();
  readonly #groups = new Map<string, GroupRecord>();
  readonly #hubs = new Map<string, HubState>();
  readonly #registrations = new Map<string, RegistrationRecord>();
  readonly #operations = new Map<string, Operation>();
  readonly #telemetry: TelemetryMessage[] = [];
  #telemetryNext = 0;
  readonly #telemetryLimit: number;
  /**
   * Tokens already verified (a session polls with the token it registered with): the HMAC is
   * not computed again while the enrollments are unchanged; expiry is still checked each time.
   */
  readonly #verified = new WeakMap<SasToken, { registrationId: string; idScope: string; enrollment: EnrollmentRecord; generation: number }>();
  #generation = 0;
  #enrollmentVersion = 0;
  skewSeconds: number;
  assignAfterPolls: number;
  retryAfterSeconds: number;

  /** @param config a config already checked by checkConfig (defaults filled in). */
  constructor(config: EmulatorConfig, random: Random, skewSeconds: number) {
    this.#config = config;
    this.idScope = config.idScope;
    this.#random = random;
    this.skewSeconds = skewSeconds;
    this.assignAfterPolls = config.assignAfterPolls ?? 1;
    this.retryAfterSeconds = config.retryAfterSeconds ?? 3;
    this.#telemetryLimit = config.telemetryLimit ?? 10_000;
    for (const hub of config.hubs) {
      this.#hubs.set(hub.hostName.toLowerCase(), {
        hostName: hub.hostName,
        weight: hub.allocationWeight ?? 1,
        available: true,
        maxMessageBytes: hub.maxMessageBytes ?? HUB_MAX_MESSAGE_BYTES,
        devices: new Map(),
        policies: policiesOf(hub.sharedAccessPolicies),
      });
    }
    for (const e of config.enrollments?.individual ?? []) this.addIndividualEnrollment(e);
    for (const e of config.enrollments?.groups ?? []) this.addGroupEnrollment(e);
  }

  // ---- enrollments ------------------------------------------------------------------------------

  /** Adds or replaces an individual enrollment. Throws EmulatorError when it is invalid or names an unknown hub. */
  addIndividualEnrollment(e: IndividualEnrollment, nowMs = Date.now()): void {
    checkIndividualEnrollment(e);
    this.#checkHub(e.iotHubHostName);
    this.#generation++;
    this.#individual.set(e.registrationId, {
      ...this.#stamp(this.#individual.get(e.registrationId), nowMs),
      kind: "individual",
      source: { ...e },
      registrationId: e.registrationId,
      deviceId: e.deviceId,
      keys: keysOf(e),
      thumbprints: individualThumbprints(e),
      enabled: e.enabled ?? true,
      iotHubHostName: e.iotHubHostName,
      initialTwin: e.initialTwin,
      allocationPayload: e.allocationPayload,
      reprovisionPolicy: e.reprovisionPolicy,
    });
  }

  /** Adds or replaces a group enrollment. Throws EmulatorError when it is invalid or names an unknown hub. */
  addGroupEnrollment(e: GroupEnrollment, nowMs = Date.now()): void {
    checkGroupEnrollment(e);
    this.#checkHub(e.iotHubHostName);
    this.#generation++;
    this.#groups.set(e.groupId, {
      ...this.#stamp(this.#groups.get(e.groupId), nowMs),
      kind: "group",
      source: { ...e },
      groupId: e.groupId,
      keys: keysOf(e),
      enabled: e.enabled ?? true,
      iotHubHostName: e.iotHubHostName,
      initialTwin: e.initialTwin,
      allocationPayload: e.allocationPayload,
      reprovisionPolicy: e.reprovisionPolicy,
      disabledRegistrations: new Set(e.disabledRegistrations ?? []),
      ca: e.x509 ? new NodeX509(e.x509.caCertificate) : undefined,
      derived: new Map(),
    });
  }

  /** Throws EmulatorError(NOT_FOUND) when no such enrollment exists. */
  setEnrollmentEnabled(which: { registrationId?: string; groupId?: string }, enabled: boolean): void {
    const record = this.#findEnrollment(which);
    record.enabled = enabled;
    record.source.enabled = enabled;
    Object.assign(record, this.#stamp(record, Date.now()));
  }

  /** The etag and times of a record being replaced (its creation time kept), or of a new one. */
  #stamp(previous: EnrollmentRecord | undefined, nowMs: number): Pick<EnrollmentBase, "etag" | "createdDateTimeUtc" | "lastUpdatedDateTimeUtc"> {
    const now = timestampUtc(nowMs);
    // A counter, not the seeded generator: adding enrollments must not shift the seeded faults.
    const etag = Buffer.from(`"${(++this.#enrollmentVersion).toString(16).padStart(12, "0")}"`).toString("base64");
    return { etag, createdDateTimeUtc: previous?.createdDateTimeUtc ?? now, lastUpdatedDateTimeUtc: now };
  }

  /**
   * One enrollment as the service API shows it: the config object with its keys, whether it is
   * enabled, its etag and times. Undefined when there is none. A copy: changing it changes nothing.
   */
  enrollmentInfo(which: { registrationId: string } | { groupId: string }):
    | { kind: "individual"; source: IndividualEnrollment; etag: string; createdDateTimeUtc: string; lastUpdatedDateTimeUtc: string }
    | { kind: "group"; source: GroupEnrollment; etag: string; createdDateTimeUtc: string; lastUpdatedDateTimeUtc: string }
    | undefined {
    if ("registrationId" in which) {
      const r = this.#individual.get(which.registrationId);
      return r && { kind: "individual", source: structuredClone({ ...r.source, enabled: r.enabled }), etag: r.etag, createdDateTimeUtc: r.createdDateTimeUtc, lastUpdatedDateTimeUtc: r.lastUpdatedDateTimeUtc };
    }
    const g = this.#groups.get(which.groupId);
    return g && { kind: "group", source: structuredClone({ ...g.source, enabled: g.enabled, disabledRegistrations: [...g.disabledRegistrations] }), etag: g.etag, createdDateTimeUtc: g.createdDateTimeUtc, lastUpdatedDateTimeUtc: g.lastUpdatedDateTimeUtc };
  }

  /** Registration ids of the individual enrollments, or ids of the groups, in insertion order. */
  enrollmentIds(kind: "individual" | "group"): string[] {
    return [...(kind === "individual" ? this.#individual.keys() : this.#groups.keys())];
  }

  /** Returns false when there was no such enrollment. Registrations and hub devices stay, as in DPS. */
  removeEnrollment(which: { registrationId?: string; groupId?: string }): boolean {
    this.#generation++;
    if (which.registrationId !== undefined) return this.#individual.delete(which.registrationId);
    if (which.groupId !== undefined) return this.#groups.delete(which.groupId);
    throw new EmulatorError("INVALID_ARGUMENT", "name a registrationId or a groupId");
  }

  /** Enrollments as configured, keys left out. */
  enrollments(): { individual: Omit<IndividualEnrollment, "primaryKey" | "secondaryKey">[]; groups: Omit<GroupEnrollment, "primaryKey" | "secondaryKey">[] } {
    const strip = <T extends { primaryKey?: string; secondaryKey?: string; enabled?: boolean }>(s: T, enabled: boolean) => {
      const { primaryKey: _p, secondaryKey: _s, ...rest } = s;
      return { ...rest, enabled };
    };
    return {
      individual: [...this.#individual.values()].map((r) => strip(r.source, r.enabled)),
      groups: [...this.#groups.values()].map((r) => ({ ...strip(r.source, r.enabled), disabledRegistrations: [...r.disabledRegistrations] })),
    };
  }

  #findEnrollment(which: { registrationId?: string; groupId?: string }): EnrollmentRecord {
    const record =
      which.registrationId !== undefined ? this.#individual.get(which.registrationId) : which.groupId !== undefined ? this.#groups.get(which.groupId) : undefined;
    if (!record) throw new EmulatorError("NOT_FOUND", `no enrollment ${which.registrationId ?? which.groupId ?? "(none named)"}`);
    return record;
  }

  #checkHub(hostName: string | undefined): void {
    if (hostName !== undefined && !this.#hubs.has(hostName.toLowerCase())) {
      throw new EmulatorError("UNKNOWN_HUB", `iotHubHostName ${hostName} is not one of the configured hubs`);
    }
  }

  // ---- authentication ---------------------------------------------------------------------------

  /**
   * Finds the enrollment that vouches for `registrationId` with this token. Individual enrollments
   * come first (as in DPS); then every group whose derived key signed the token. A token signed
   * with a group key itself is refused with 401. When nothing vouches: 401 if the scope has group
   * enrollments (DPS cannot tell an unknown member from a wrong key), else
   * `unknownRegistrationStatus` (404 by default).
   */
  authenticate(registrationId: string, token: DeviceCredential, nowMs: number, idScope = this.idScope): AuthResult {
    if (typeof token === "string") return { ok: false, status: 401, reason: token };
    if (idScope !== this.idScope) return { ok: false, status: 401, reason: "wrong-scope" };
    if ("x509" in token) return this.#verifyX509(registrationId, token, nowMs);
    const claims = checkSasClaims(token, {
      resource: `${this.idScope}/registrations/${registrationId}`,
      keyName: "registration",
      nowMs,
      skewSeconds: this.skewSeconds,
    });
    if (claims) return { ok: false, status: 401, reason: claims };
    const known = this.#verified.get(token);
    if (known && known.generation === this.#generation && known.registrationId === registrationId && known.idScope === idScope) {
      return { ok: true, enrollment: known.enrollment };
    }
    const result = this.#verify(registrationId, token);
    if (result.ok) this.#verified.set(token, { registrationId, idScope, enrollment: result.enrollment, generation: this.#generation });
    return result;
  }

  #verify(registrationId: string, token: SasToken): AuthResult {
    const individual = this.#individual.get(registrationId);
    if (individual) {
      for (const key of individual.keys) if (signatureMatches(token, key)) return { ok: true, enrollment: individual };
      return { ok: false, status: 401, reason: "bad-signature" };
    }
    for (const group of this.#groups.values()) {
      for (const key of this.#derivedKeys(group, registrationId)) if (signatureMatches(token, key)) return { ok: true, enrollment: group };
    }
    for (const group of this.#groups.values()) {
      for (const key of group.keys) if (signatureMatches(token, key)) return { ok: false, status: 401, reason: "group-key-used-directly" };
    }
    if (this.#groups.size > 0) return { ok: false, status: 401, reason: "bad-signature" };
    return { ok: false, status: this.#config.unknownRegistrationStatus ?? 404, reason: "no-enrollment" };
  }

  /**
   * X.509 attestation: the leaf's CN must be the registration id and the leaf valid now; an
   * individual enrollment must name its thumbprint, else a group's CA must be reached through the
   * certificates the device sent.
   */
  #verifyX509(registrationId: string, credential: PresentedCertificates, nowMs: number): AuthResult {
    let leaf: NodeX509;
    let presented: NodeX509[];
    try {
      [leaf, ...presented] = credential.x509.map((der) => new NodeX509(der));
    } catch {
      return { ok: false, status: 401, reason: "x509-unreadable" };
    }
    if (leaf === undefined) return { ok: false, status: 401, reason: "x509-missing" };
    if (commonNameOf(leaf.subject) !== registrationId) return { ok: false, status: 401, reason: "x509-cn-mismatch" };
    if (nowMs < Date.parse(leaf.validFrom) || nowMs > Date.parse(leaf.validTo)) return { ok: false, status: 401, reason: "x509-expired" };
    const individual = this.#individual.get(registrationId);
    if (individual) {
      if (!individual.thumbprints) return { ok: false, status: 401, reason: "x509-for-key-enrollment" };
      const [sha1, sha256] = thumbprintsOf(leaf.raw);
      return individual.thumbprints.has(sha1) || individual.thumbprints.has(sha256) ? { ok: true, enrollment: individual } : { ok: false, status: 401, reason: "x509-thumbprint-mismatch" };
    }
    let x509Groups = 0;
    for (const group of this.#groups.values()) {
      if (!group.ca) continue;
      x509Groups++;
      if (chainsTo(leaf, presented, group.ca, nowMs)) return { ok: true, enrollment: group };
    }
    if (x509Groups > 0) return { ok: false, status: 401, reason: "x509-untrusted-chain" };
    return { ok: false, status: this.#config.unknownRegistrationStatus ?? 404, reason: "no-enrollment" };
  }

  #derivedKeys(group: GroupRecord, registrationId: string): Buffer[] {
    let keys = group.derived.get(registrationId);
    if (keys === undefined) {
      keys = group.keys.map((k) => deriveDeviceKey(k, registrationId));
      if (group.derived.size >= DERIVED_CACHE_LIMIT) group.derived.clear();
      group.derived.set(registrationId, keys);
    }
    return keys;
  }

  /** The group id a device belongs to (by its token), for fault rules that name a group. */
  groupOf(registrationId: string, token: DeviceCredential, nowMs: number): string | undefined {
    const auth = this.authenticate(registrationId, token, nowMs);
    return auth.ok && auth.enrollment.kind === "group" ? auth.enrollment.groupId : this.#memberGroup(registrationId);
  }

  /** The group of a registration DPS already knows. */
  #memberGroup(registrationId: string): string | undefined {
    const record = this.#registrations.get(registrationId);
    return record?.enrollment.kind === "group" ? record.enrollment.groupId : undefined;
  }

  // ---- registration -----------------------------------------------------------------------------

  /**
   * A register request (`$dps/registrations/PUT/iotdps-register/`). The body is the device's JSON
   * text: `{"registrationId":"device-1","payload":{...}}`.
   */
  register(registrationId: string, token: DeviceCredential, bodyText: string, nowMs: number, idScope?: string, csr?: CsrOutcome): Answer {
    let body: unknown;
    try {
      body = JSON.parse(bodyText);
    } catch {
      return this.error(400, nowMs, "body-not-json");
    }
    if (typeof body !== "object" || body === null || (body as { registrationId?: unknown }).registrationId !== registrationId) {
      return this.error(400, nowMs, "body-registration-id-mismatch");
    }
    const auth = this.authenticate(registrationId, token, nowMs, idScope);
    if (!auth.ok) return this.error(auth.status, nowMs, auth.reason);
    if (csr !== undefined && !csr.ok) return this.error(csr.status ?? 400, nowMs, "csr-refused", csr.errorCode ?? (csr.status === undefined ? 400004 : undefined), csr.problem);
    const operationId = `4.${this.#random.hex(16)}.${this.#random.uuid()}`;
    const operation: Operation = {
      operationId,
      registrationId,
      enrollment: auth.enrollment,
      polls: 0,
      requestPayload: (body as { payload?: unknown }).payload,
    };
    if (csr?.ok) operation.issued = csr;
    if (typeof token === "object" && "x509" in token) {
      const leaf = new NodeX509(token.x509[0]); // authenticate() has read it
      operation.attested = { thumbprint: thumbprintsOf(leaf.raw)[1], notAfter: new Date(leaf.validTo).toISOString() };
    }
    if (this.#operations.size >= OPERATION_LIMIT) {
      const oldest = this.#operations.keys().next().value;
      if (oldest !== undefined) this.#operations.delete(oldest);
    }
    this.#operations.set(operationId, operation);
    const now = timestampUtc(nowMs);
    const existing = this.#registrations.get(registrationId);
    if (existing) {
      existing.status = "assigning";
      existing.lastUpdatedDateTimeUtc = now;
    } else {
      this.#registrations.set(registrationId, {
        registrationId,
        status: "assigning",
        createdDateTimeUtc: now,
        lastUpdatedDateTimeUtc: now,
        etag: this.#etag(),
        enrollment: enrollmentRef(auth.enrollment),
      });
    }
    if (this.assignAfterPolls === 0) return { status: 200, body: this.#complete(operation, nowMs) };
    return { status: 202, body: { operationId, status: "assigning" }, retryAfter: this.retryAfterSeconds };
  }

  /** A poll (`$dps/registrations/GET/iotdps-get-operationstatus/?operationId=...`). */
  poll(registrationId: string, token: DeviceCredential, operationId: string | undefined, nowMs: number, idScope?: string): Answer {
    if (!operationId) return this.error(400, nowMs, "no-operation-id");
    const auth = this.authenticate(registrationId, token, nowMs, idScope);
    if (!auth.ok) return this.error(auth.status, nowMs, auth.reason);
    const operation = this.#operations.get(operationId);
    if (!operation || operation.registrationId !== registrationId) return this.error(404, nowMs, "unknown-operation", 404202, "The operation was not found.");
    if (operation.result) return { status: 200, body: operation.result };
    operation.polls++;
    if (operation.polls >= this.assignAfterPolls) return { status: 200, body: this.#complete(operation, nowMs) };
    return { status: 202, body: { operationId, status: "assigning" }, retryAfter: this.retryAfterSeconds };
  }

  /**
   * The HTTPS Device Registration Status Lookup: the registration state as DPS knows it.
   * 404 (404202) when the device is enrolled but never registered.
   */
  lookup(registrationId: string, token: DeviceCredential, nowMs: number, idScope?: string): Answer {
    const auth = this.authenticate(registrationId, token, nowMs, idScope);
    if (!auth.ok) return this.error(auth.status, nowMs, auth.reason);
    const record = this.#registrations.get(registrationId);
    if (!record) return this.error(404, nowMs, "not-registered", 404202, "The registration was not found.");
    return { status: 200, body: registrationState(record) };
  }

  /** An error answer with a body like the real service's. */
  error(status: number, nowMs: number, reason?: string, errorCode?: number, message?: string, retryAfter?: number | string): Answer {
    const answer: Answer = { status, body: errorBody(status, this.#random, nowMs, errorCode, message) as unknown as Record<string, unknown>, reason };
    if (retryAfter !== undefined) answer.retryAfter = retryAfter;
    return answer;
  }

  #complete(operation: Operation, nowMs: number): Record<string, unknown> {
    const record = this.#registrations.get(operation.registrationId);
    const now = timestampUtc(nowMs);
    const enrollment = operation.enrollment;
    if (!record) throw new Error("registration record missing for a live operation");
    record.lastUpdatedDateTimeUtc = now;
    record.etag = this.#etag();
    record.requestPayload = operation.requestPayload;
    record.enrollment = enrollmentRef(enrollment);
    const disabled = !enrollment.enabled || (enrollment.kind === "group" && enrollment.disabledRegistrations.has(operation.registrationId));
    if (disabled) {
      record.status = "disabled";
      delete record.substatus;
      operation.result = {
        operationId: operation.operationId,
        status: "disabled",
        registrationState: {
          registrationId: record.registrationId,
          createdDateTimeUtc: record.createdDateTimeUtc,
          status: "disabled",
          lastUpdatedDateTimeUtc: now,
          etag: record.etag,
        },
      };
      return operation.result;
    }
    const deviceId = enrollment.kind === "individual" ? (enrollment.deviceId ?? operation.registrationId) : operation.registrationId;
    const policy = enrollment.reprovisionPolicy ?? this.#config.reprovisionPolicy ?? "reprovisionAndMigrate";
    const previousHub = record.assignedHub;
    const previousDevice = previousHub !== undefined ? this.#hubs.get(previousHub.toLowerCase())?.devices.get(record.deviceId ?? deviceId) : undefined;
    let hub: HubState;
    let substatus: Substatus;
    if (previousHub === undefined) {
      hub = this.#allocate(enrollment, operation.registrationId);
      substatus = "initialAssignment";
    } else if (policy === "neverReprovision") {
      hub = this.#hubs.get(previousHub.toLowerCase()) ?? this.#allocate(enrollment, operation.registrationId);
      substatus = "reprovisionedToInitialAssignment";
    } else {
      hub = this.#allocate(enrollment, operation.registrationId);
      substatus = policy === "reprovisionAndReset" ? "deviceDataReset" : "deviceDataMigrated";
    }
    const keys = enrollment.kind === "individual" ? enrollment.keys : this.#derivedKeys(enrollment, operation.registrationId);
    const device = this.#upsertDevice(hub, deviceId, operation.registrationId, enrollment, keys);
    if (substatus === "initialAssignment" || substatus === "deviceDataReset") {
      applyInitialTwin(device, enrollment.initialTwin);
    } else if (substatus === "deviceDataMigrated" && previousDevice && previousDevice !== device) {
      device.desired = structuredClone(previousDevice.desired);
      device.reported = structuredClone(previousDevice.reported);
      device.tags = structuredClone(previousDevice.tags);
      // The versions move too: a device that compares $version must not see them go back.
      device.desiredVersion = Math.max(device.desiredVersion, previousDevice.desiredVersion);
      device.reportedVersion = Math.max(device.reportedVersion, previousDevice.reportedVersion);
      device.twinVersion = Math.max(device.twinVersion, previousDevice.twinVersion) + 1;
      device.twinUpdated = timestampUtc(nowMs);
    }
    // DPS removes the device from the hub it leaves ("device data was removed from the previously assigned IoT hub").
    if (previousDevice && previousDevice !== device && policy !== "neverReprovision") {
      this.#hubs.get(previousDevice.hubHostName.toLowerCase())?.devices.delete(previousDevice.deviceId);
    }
    record.status = "assigned";
    record.substatus = substatus;
    record.assignedHub = hub.hostName;
    record.deviceId = deviceId;
    if (enrollment.allocationPayload !== undefined) record.payload = enrollment.allocationPayload;
    else delete record.payload;
    if (enrollment.source.trustBundle !== undefined) record.trustBundle = trustBundleState(enrollment.source.trustBundle);
    else delete record.trustBundle;
    const state = registrationState(record);
    if (operation.attested) {
      const attested = operation.attested;
      device.certificates = [attested, ...(device.certificates ?? []).filter((c) => c.thumbprint !== attested.thumbprint)].slice(0, DEVICE_CERTIFICATES_KEPT);
    }
    if (operation.issued) {
      const issued = { thumbprint: operation.issued.thumbprint, notAfter: operation.issued.notAfter };
      record.issuedCertificate = issued;
      device.certificates = [issued, ...(device.certificates ?? []).filter((c) => c.thumbprint !== issued.thumbprint)].slice(0, DEVICE_CERTIFICATES_KEPT);
      // Only the operation's answer carries the chain (the status lookup does not).
      state.issuedCertificateChain = operation.issued.chain;
    }
    operation.result = { operationId: operation.operationId, status: "assigned", registrationState: state };
    return operation.result;
  }

  /** hashed: weighted by a stable hash of the registration id; static: the first hub. An enrollment's own hub wins. */
  #allocate(enrollment: EnrollmentRecord, registrationId: string): HubState {
    if (enrollment.iotHubHostName !== undefined) {
      const own = this.#hubs.get(enrollment.iotHubHostName.toLowerCase());
      if (own) return own;
    }
    const hubs = [...this.#hubs.values()];
    if (this.#config.allocationPolicy === "static") return hubs[0];
    const weighted = hubs.filter((h) => h.weight > 0);
    if (weighted.length === 0) return hubs[0];
    const total = weighted.reduce((sum, h) => sum + h.weight, 0);
    const point = (createHash("sha256").update(registrationId).digest().readUInt32BE(0) / 4294967296) * total;
    let acc = 0;
    for (const hub of weighted) {
      acc += hub.weight;
      if (point < acc) return hub;
    }
    return weighted[weighted.length - 1];
  }

  #upsertDevice(hub: HubState, deviceId: string, registrationId: string, enrollment: EnrollmentRecord, keys: Buffer[]): HubDevice {
    let device = hub.devices.get(deviceId);
    if (!device) {
      device = {
        deviceId,
        hubHostName: hub.hostName,
        registrationId,
        enabled: true,
        keys,
        desired: {},
        reported: {},
        tags: {},
        desiredVersion: 1,
        reportedVersion: 1,
        twinVersion: 1,
        c2d: [],
        connections: 0,
      };
      hub.devices.set(deviceId, device);
    }
    device.keys = keys;
    device.registrationId = registrationId;
    device.groupId = enrollment.kind === "group" ? enrollment.groupId : undefined;
    return device;
  }

  #etag(): string {
    return Buffer.from(`"${this.#random.uuid()}"`).toString("base64");
  }

  /** Every registration DPS knows, copied. */
  registrations(): RegistrationRecord[] {
    return [...this.#registrations.values()].map((r) => structuredClone(r));
  }

  registration(registrationId: string): RegistrationRecord | undefined {
    const r = this.#registrations.get(registrationId);
    return r ? structuredClone(r) : undefined;
  }

  /** Forgets a registration (the next one is an initial assignment). */
  deleteRegistration(registrationId: string): boolean {
    return this.#registrations.delete(registrationId);
  }

  get registrationCount(): number {
    return this.#registrations.size;
  }

  // ---- hubs ---------------------------------------------------------------------------------------

  hub(hostName: string): HubState | undefined {
    return this.#hubs.get(hostName.toLowerCase());
  }

  hubNames(): string[] {
    return [...this.#hubs.values()].map((h) => h.hostName);
  }

  /**
   * Hubs with their settings, and the service API's shared access policies with their keys (for a
   * backend's connection string: this is the emulator's loopback admin view, as the portal shows them).
   */
  hubsSummary(): {
    hostName: string;
    allocationWeight: number;
    available: boolean;
    maxMessageBytes: number;
    devices: number;
    sharedAccessPolicies: { keyName: string; primaryKey: string; secondaryKey?: string }[];
    serviceConnectionString: string;
  }[] {
    return [...this.#hubs.values()].map((h) => {
      const policies = [...h.policies.values()].map((p) => ({ keyName: p.keyName, primaryKey: p.primaryKey, secondaryKey: p.secondaryKey }));
      const first = policies.find((p) => p.keyName === "iothubowner") ?? policies[0];
      return {
        hostName: h.hostName,
        allocationWeight: h.weight,
        available: h.available,
        maxMessageBytes: h.maxMessageBytes,
        devices: h.devices.size,
        sharedAccessPolicies: policies,
        serviceConnectionString: `HostName=${h.hostName};SharedAccessKeyName=${first.keyName};SharedAccessKey=${first.primaryKey}`,
      };
    });
  }

  /** Throws EmulatorError(UNKNOWN_HUB). */
  setHubAvailable(hostName: string, available: boolean): void {
    const hub = this.#hubs.get(hostName.toLowerCase());
    if (!hub) throw new EmulatorError("UNKNOWN_HUB", `no hub ${hostName}`);
    hub.available = available;
  }

  /** Throws EmulatorError(UNKNOWN_HUB), or INVALID_ARGUMENT unless 1 <= bytes <= 256 KiB. Open connections get the new limit at once. */
  setHubMaxMessageBytes(hostName: string, bytes: number): void {
    const hub = this.#hubs.get(hostName.toLowerCase());
    if (!hub) throw new EmulatorError("UNKNOWN_HUB", `no hub ${hostName}`);
    try {
      checkMaxMessageBytes(bytes ?? null, "maxMessageBytes");
    } catch (error) {
      throw new EmulatorError("INVALID_ARGUMENT", (error as Error).message);
    }
    hub.maxMessageBytes = bytes;
  }

  /** The devices named `deviceId` (on one hub when `hubHostName` is given). */
  findDevices(deviceId: string, hubHostName?: string): HubDevice[] {
    const out: HubDevice[] = [];
    for (const hub of this.#hubs.values()) {
      if (hubHostName !== undefined && hub.hostName.toLowerCase() !== hubHostName.toLowerCase()) continue;
      const device = hub.devices.get(deviceId);
      if (device) out.push(device);
    }
    return out;
  }

  /** Throws EmulatorError(NOT_FOUND) when no hub has the device. */
  setDeviceEnabled(deviceId: string, enabled: boolean, hubHostName?: string): HubDevice[] {
    const devices = this.findDevices(deviceId, hubHostName);
    if (devices.length === 0) throw new EmulatorError("NOT_FOUND", `no device ${deviceId}${hubHostName ? ` on ${hubHostName}` : ""}`);
    for (const d of devices) d.enabled = enabled;
    return devices;
  }

  /** Throws EmulatorError(NOT_FOUND) when no hub has the device. */
  deleteDevice(deviceId: string, hubHostName?: string): HubDevice[] {
    const devices = this.findDevices(deviceId, hubHostName);
    if (devices.length === 0) throw new EmulatorError("NOT_FOUND", `no device ${deviceId}${hubHostName ? ` on ${hubHostName}` : ""}`);
    for (const d of devices) this.#hubs.get(d.hubHostName.toLowerCase())?.devices.delete(d.deviceId);
    return devices;
  }

  /** Devices with C2D messages waiting. */
  *devicesWithC2d(): Iterable<HubDevice> {
    for (const hub of this.#hubs.values()) for (const d of hub.devices.values()) if (d.c2d.length > 0) yield d;
  }

  devices(): { deviceId: string; hubHostName: string; registrationId: string; groupId?: string; enabled: boolean; connections: number }[] {
    const out = [];
    for (const hub of this.#hubs.values()) {
      for (const d of hub.devices.values()) {
        out.push({ deviceId: d.deviceId, hubHostName: d.hubHostName, registrationId: d.registrationId, groupId: d.groupId, enabled: d.enabled, connections: d.connections });
      }
    }
    return out;
  }

  // ---- telemetry ----------------------------------------------------------------------------------

  /** Stores a message, keeping the last `telemetryLimit`. */
  addTelemetry(message: TelemetryMessage): void {
    if (this.#telemetryLimit === 0) return;
    if (this.#telemetry.length < this.#telemetryLimit) {
      this.#telemetry.push(message);
    } else {
      this.#telemetry[this.#telemetryNext] = message;
      this.#telemetryNext = (this.#telemetryNext + 1) % this.#telemetryLimit;
    }
  }

  /** Stored messages, oldest first, optionally of one device. */
  telemetry(deviceId?: string): TelemetryMessage[] {
    const ordered = this.#telemetry.slice(this.#telemetryNext).concat(this.#telemetry.slice(0, this.#telemetryNext));
    return (deviceId === undefined ? ordered : ordered.filter((m) => m.deviceId === deviceId)).map((m) => ({ ...m }));
  }

  clearTelemetry(): void {
    this.#telemetry.length = 0;
    this.#telemetryNext = 0;
  }
}

function individualThumbprints(e: IndividualEnrollment): Set<string> | undefined {
  if (e.x509 === undefined) return undefined;
  const out = new Set<string>();
  if (e.x509.thumbprint !== undefined) out.add(normaliseThumbprint(e.x509.thumbprint));
  if (e.x509.certificate !== undefined) for (const t of thumbprintsOf(new NodeX509(e.x509.certificate).raw)) out.add(t);
  return out;
}

function keysOf(e: { primaryKey?: string; secondaryKey?: string }): Buffer[] {
  if (e.primaryKey === undefined) return []; // an X.509 enrollment
  const keys = [decodeKey(e.primaryKey, "primaryKey")];
  if (e.secondaryKey !== undefined) keys.push(decodeKey(e.secondaryKey, "secondaryKey"));
  return keys;
}

function enrollmentRef(e: EnrollmentRecord): RegistrationRecord["enrollment"] {
  return e.kind === "individual" ? { kind: "individual", registrationId: e.registrationId } : { kind: "group", groupId: e.groupId };
}

/** The `registrationState` object of a 200 answer and of the HTTPS lookup. */
export function registrationState(record: RegistrationRecord): Record<string, unknown> {
  const state: Record<string, unknown> = {
    registrationId: record.registrationId,
    createdDateTimeUtc: record.createdDateTimeUtc,
  };
  if (record.assignedHub !== undefined && record.status === "assigned") state.assignedHub = record.assignedHub;
  if (record.deviceId !== undefined && record.status === "assigned") state.deviceId = record.deviceId;
  state.status = record.status;
  if (record.substatus !== undefined && record.status === "assigned") state.substatus = record.substatus;
  state.lastUpdatedDateTimeUtc = record.lastUpdatedDateTimeUtc;
  state.etag = record.etag;
  if (record.payload !== undefined && record.status === "assigned") state.payload = record.payload;
  if (record.trustBundle !== undefined && record.status === "assigned") state.trustBundle = record.trustBundle;
  return state;
}

/**
 * A trust bundle as the registration state carries it:
 *   {"id":"tb-1","etag":"...","certificates":[{"certificate":"-----BEGIN CERTIFICATE-----...",
 *    "metadata":{"subjectName":"CN=Root","sha1Thumbprint":"...","sha256Thumbprint":"...","issuerName":"CN=Root",
 *    "notBeforeUtc":"2026-...Z","notAfterUtc":"2036-...Z","serialNumber":"...","version":3}}]}
 * Metadata a config leaves out is computed from the certificate; the etag defaults to a hash of the PEMs.
 */
export function trustBundleState(bundle: TrustBundle): Record<string, unknown> {
  const certificates = bundle.certificates.map((c) => {
    const cert = new NodeX509(c.certificate);
    const [sha1, sha256] = thumbprintsOf(cert.raw);
    const computed: TrustBundleMetadata = {
      subjectName: cert.subject.split("\n").reverse().join(", "),
      sha1Thumbprint: sha1,
      sha256Thumbprint: sha256,
      issuerName: cert.issuer.split("\n").reverse().join(", "),
      notBeforeUtc: new Date(cert.validFrom).toISOString(),
      notAfterUtc: new Date(cert.validTo).toISOString(),
      serialNumber: cert.serialNumber,
      version: 3,
    };
    return { certificate: c.certificate, metadata: { ...computed, ...(c.metadata ?? {}) } };
  });
  const etag = bundle.etag ?? createHash("sha256").update(bundle.certificates.map((c) => c.certificate).join("")).digest("base64").slice(0, 22);
  return { id: bundle.id, etag, certificates };
}

/** An enrollment's initial twin: `{"tags":{...},"properties":{"desired":{...}}}`. */
function applyInitialTwin(device: HubDevice, twin: object | undefined): void {
  const t = (twin ?? {}) as { tags?: Record<string, unknown>; properties?: { desired?: Record<string, unknown> } };
  device.tags = { ...(t.tags ?? {}) };
  device.desired = { ...(t.properties?.desired ?? {}) };
  device.reported = {};
  device.desiredVersion++;
  device.reportedVersion++;
  device.twinVersion++;
}

/** A hub's policies from its config; without any, `iothubowner` with a fresh random key. */
function policiesOf(configured: { keyName: string; primaryKey: string; secondaryKey?: string }[] | undefined): Map<string, HubPolicy> {
  const list = configured ?? [{ keyName: "iothubowner", primaryKey: randomBytes(32).toString("base64") }];
  const out = new Map<string, HubPolicy>();
  for (const p of list) {
    const keys = [decodeKey(p.primaryKey, "primaryKey")];
    if (p.secondaryKey !== undefined) keys.push(decodeKey(p.secondaryKey, "secondaryKey"));
    out.set(p.keyName, { keyName: p.keyName, primaryKey: p.primaryKey, secondaryKey: p.secondaryKey, keys });
  }
  return out;
}
