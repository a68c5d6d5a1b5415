/**
 * The device's whole life as one sans-I/O machine: read the cache, go straight to the cached hub
 * or provision with DPS, write the cache, hold the hub session, and on every failure decide what
 * comes next. It owns the registration machine (registration.ts) while it runs and the hub session
 * (hub-session.ts, with the outgoing queue) for good, passes their commands through with the id
 * of the one MQTT link, and turns their outcomes into the next step:
 *
 *   hub refused (CONNACK 4, 5)      invalidate the cache, register again: at once the first time,
 *                                   then after long-tail waits (minutes, then up to an hour)
 *   hub unreachable (whole window)  ask DPS once, keeping the cache; DPS down or the same hub:
 *                                   wait in the long tail, then try the hub again
 *   DPS past its budget, or refused wait in the long tail, then one attempt, for ever
 *   a wrong request (400, CONNACK 1) final: `failed`, with what a person should do
 *
 * Everything resets once a hub session has proved stable. Cache reads, writes and invalidations
 * are commands like any other; their results come back as events. The runtime (runtime.ts) is
 * the thin driver that performs the commands on a host's ports.
 *
 *   idle → loading → (hub | provisioning → saving → hub) → … → failed | stopped
 *                              any failure → waiting (the long tail) → a new cycle
 */
import type { CachedAssignment, CachedAssignmentInput } from "./credential-cache.js";
import type { CryptoPort } from "./crypto.js";
import type { CertificateKey } from "./csr.js";
import { DPS_GLOBAL_ENDPOINT, type RegistrationState } from "./dps-protocol.js";
import { clause, UsageError, type ErrorCode } from "./errors.js";
import { base64Decode, utf8Encode } from "./encoding.js";
import { assignmentProblem, type MessageProperties } from "./hub-protocol.js";
import { HubSession, jsonMessage, type FeatureEvent, type FeatureIo, type HubCommand, type HubEvent, type HubFeature, type HubStatus } from "./hub-session.js";
import type { ClientCertificate, HttpsRequest, HttpsResponse, MqttConnectOptions, RandomSource, TransportFault } from "./ports.js";
import { RegistrationMachine, type FailureDiagnostics, type RegistrationCommand, type RegistrationEvent, type RegistrationStatus } from "./registration.js";
import { retryDelayMs, retryPolicy, type RetryPolicy, type RetryPolicyOverrides } from "./retry-policy.js";
import { deriveDeviceKey, type ResourceForm } from "./sas.js";

export interface RuntimeConfig {
  readonly idScope: string;
  readonly registrationId: string;
  /** Individual enrollment: the device's primary (or secondary) key, base64. */
  readonly symmetricKey?: string;
  /** Group enrollment: the group's key, base64; the device key is derived from it. */
  readonly groupKey?: string;
  /** DPS device endpoint; default global.azure-devices-provisioning.net. */
  readonly globalEndpoint?: string;
  /** DPS MQTT port; default 8883. */
  readonly dpsPort?: number;
  /** HTTPS port of the registration status lookup at the global endpoint; default 443. */
  readonly lookupPort?: number;
  /** Use the registration status lookup after a DPS 5xx (needs an HttpsPort); default true. */
  readonly statusLookup?: boolean;
  /** Custom allocation payload sent with the registration. */
  readonly payload?: unknown;
  /**
   * A certificate signing request (base64 DER, modules/csr.ts) sent with every registration: DPS
   * answers with an issued operational certificate (`issuedCertificateChain` in the assignment
   * event's registration state); with `certificateKey` the hub is then reached with it.
   */
  readonly certificateSigningRequest?: string;
  /**
   * The key of that request (modules/csr.ts): with a `tlsKey` the host's TLS can use, the hub is
   * reached with the issued certificate and an empty password instead of a SAS token. A warm start
   * from the cache uses SAS (the certificate is not cached yet).
   */
  readonly certificateKey?: CertificateKey;
  /** The largest DPS answer accepted (a trust bundle, a custom allocation payload); default 16 KiB. */
  readonly maxAnswerBytes?: number;
  /** IoT Plug and Play model id announced to the hub. */
  readonly modelId?: string;
  readonly userAgent?: string;
  /** SAS token lifetime for DPS and the hub; default 3600 s. */
  readonly tokenLifetimeSeconds?: number;
  readonly resourceForm?: ResourceForm;
  /** Overrides of the one retry table, DPS and hub (retry-policy.ts, docs/RETRY-POLICY.md). */
  readonly retryPolicy?: RetryPolicyOverrides;
  /** Pipeline SUBSCRIBE and the register behind CONNECT (default true; off after a pipelined attempt got no answer). */
  readonly pipeline?: boolean;
  readonly hub?: {
    readonly port?: number;
    readonly keepAliveSeconds?: number;
    readonly maxQueue?: number;
    readonly maxInFlight?: number;
    readonly maxMessageBytes?: number;
  };
  /** Where the two cache slots live in the flash port; default sectors 0 and 1. */
  readonly cache?: { readonly firstSector?: number; readonly sectorsPerSlot?: number };
}

export type RuntimeState = "idle" | "provisioning" | "connecting" | "connected" | "backing-off" | "failed" | "stopped";

export interface Assignment {
  readonly assignedHub: string;
  readonly deviceId: string;
  readonly substatus?: string;
  /** Where it came from. */
  readonly source: "cache" | "dps";
}

export interface RuntimeError {
  readonly code: ErrorCode;
  /** What happened and what a person should do. */
  readonly message: string;
}

export type RuntimeEvent =
  /** `backing-off`: the long tail, `retryInMs` until the next attempt; `failed` is final. */
  | { readonly source: "runtime"; readonly state: RuntimeState; readonly error?: RuntimeError; readonly retryInMs?: number }
  | { readonly source: "cache"; readonly state: "loaded" | "empty" | "saved" | "invalidated" | "unavailable"; readonly detail?: string; readonly rejected?: readonly string[] }
  | { readonly source: "dps"; readonly status: RegistrationStatus }
  | { readonly source: "hub"; readonly status: HubStatus; readonly hub: string }
  | { readonly source: "assignment"; readonly assignment: Assignment; readonly registrationState?: RegistrationState }
  | { readonly source: "telemetry"; readonly state: "sent" | "dropped"; readonly id: number; readonly reason?: string }
  /** A message on a topic no feature claims. */
  | { readonly source: "message"; readonly topic: string; readonly payload: Uint8Array }
  | FeatureEvent;

/** What the driver feeds in: host callbacks tagged with their link, timers, cache results. */
export type LifecycleEvent =
  | { readonly kind: "start" | "stop" | "reprovision" | "timer" }
  | { readonly kind: "cache-loaded"; readonly assignment?: CachedAssignment; readonly detail: string; readonly rejected?: readonly string[] }
  | { readonly kind: "cache-saved" | "cache-invalidated" | "cache-failed"; readonly detail?: string }
  | { readonly kind: "connack"; readonly link: number; readonly returnCode: number }
  | { readonly kind: "suback"; readonly link: number; readonly granted: readonly number[] }
  | { readonly kind: "message"; readonly link: number; readonly topic: string; readonly payload: Uint8Array; readonly oversize?: number }
  /** An application's call into a hub feature (twin.ts, methods.ts...), at any time. */
  | { readonly kind: "call"; readonly feature: HubFeature; readonly fn: (io: FeatureIo) => void }
  | { readonly kind: "puback"; readonly link: number; readonly tag: number }
  | { readonly kind: "closed"; readonly link: number; readonly fault: TransportFault }
  | { readonly kind: "lookup-response"; readonly response: HttpsResponse }
  | { readonly kind: "lookup-failed"; readonly fault: TransportFault };

export type LifecycleCommand =
  | { readonly kind: "connect"; readonly link: number; readonly options: MqttConnectOptions }
  | { readonly kind: "subscribe"; readonly link: number; readonly topic: string; readonly qos: 1 }
  /** `tag` (hub telemetry): the driver reports the PUBACK of this publish as a `puback` with it. */
  | { readonly kind: "publish"; readonly link: number; readonly topic: string; readonly payload: Uint8Array; readonly qos: 0 | 1; readonly tag?: number }
  | { readonly kind: "close"; readonly link: number }
  | { readonly kind: "set-timer"; readonly delayMs: number }
  | { readonly kind: "clear-timer" }
  | { readonly kind: "lookup"; readonly request: HttpsRequest }
  | { readonly kind: "cancel-lookup" }
  | { readonly kind: "cache-load" }
  | { readonly kind: "cache-save"; readonly assignment: CachedAssignmentInput }
  | { readonly kind: "cache-invalidate" }
  | { readonly kind: "report"; readonly event: RuntimeEvent }
  /** Call an application handler of a hub feature (`what` names it), outside the machine. */
  | { readonly kind: "invoke"; readonly what: string; readonly run: () => void };

export interface LifecycleDeps {
  readonly crypto: CryptoPort;
  /** Jitter, [0, 1). */
  readonly random: RandomSource;
}

export type LifecyclePhase = "idle" | "loading" | "provisioning" | "saving" | "invalidating" | "hub" | "waiting" | "failed" | "stopped";

/**
 * The device key: the individual key, or the one derived from the group key.
 * @throws UsageError INVALID_ARGUMENT unless exactly one is given; MALFORMED_BASE64.
 */
export function deviceKeyOf(config: RuntimeConfig, crypto: CryptoPort): string {
  if ((config.symmetricKey === undefined) === (config.groupKey === undefined)) {
    throw new UsageError("INVALID_ARGUMENT", "give exactly one of symmetricKey (individual enrollment) and groupKey (group enrollment)");
  }
  return config.groupKey !== undefined ? deriveDeviceKey(crypto, config.groupKey, config.registrationId) : config.symmetricKey!;
}

export class LifecycleMachine {
  readonly policy: RetryPolicy;
  #config: RuntimeConfig;
  #deps: LifecycleDeps;
  #key: string;
  #hasCache: boolean;
  #hasLookup: boolean;
  #out: LifecycleCommand[] = [];
  #now = 0;
  #phase: LifecyclePhase = "idle";
  #state: RuntimeState = "idle";
  #dps: RegistrationMachine | undefined;
  /** The one hub session (and queue); `#hubRun` while a run of it is on. */
  #hub: HubSession;
  #hubRun = false;
  /** The open MQTT link (0: none) and the last id given out. */
  #link = 0;
  #links = 0;
  /** The deadline of the running machine's timer, or of the long-tail wait; what the host was told. */
  #subAt: number | undefined;
  #waitAt: number | undefined;
  #timerAt: number | undefined;
  /** What the cache holds as far as this machine knows; the assignment in use. */
  #cached: Assignment | undefined;
  #assignment: Assignment | undefined;
  /** An assignment to the hub that refused the device: written only once that hub accepts it. */
  #pendingSave: Assignment | undefined;
  /** Past the fast tiers: one attempt per long-tail wait. */
  #longTail = false;
  #waits = 0;
  #refusals = 0;
  #refusedHub: string | undefined;
  /** The hub that was unreachable in this cycle (and why), and whether this cycle has asked DPS already. */
  #failedHub: string | undefined;
  #hubFailure: RuntimeError | undefined;
  #askedDps = false;
  #keepCache = false;
  #pipeline: boolean;

  /**
   * @param has whether the driver has a cache to load and save (a flash port), and an HTTPS port
   *   for the registration status lookup.
   * @throws UsageError for a configuration that could never work (checked before any I/O).
   */
  constructor(config: RuntimeConfig, deps: LifecycleDeps, has: { readonly cache: boolean; readonly lookup: boolean }, features?: readonly HubFeature[]) {
    if (!config || typeof config !== "object") throw new UsageError("INVALID_ARGUMENT", "the runtime needs a configuration object");
    this.#config = config;
    this.#deps = deps;
    this.#hasCache = has.cache;
    this.#hasLookup = has.lookup;
    this.#key = deviceKeyOf(config, deps.crypto);
    this.policy = retryPolicy(config.retryPolicy ?? {});
    this.#pipeline = config.pipeline ?? true;
    // Both machines check their side of the configuration now.
    this.#newDps();
    const h = config.hub;
    this.#hub = new HubSession(
      {
        symmetricKey: this.#key,
        port: h?.port,
        tokenLifetimeSeconds: config.tokenLifetimeSeconds,
        keepAliveSeconds: h?.keepAliveSeconds,
        maxQueue: h?.maxQueue,
        maxInFlight: h?.maxInFlight,
        maxMessageBytes: h?.maxMessageBytes,
        modelId: config.modelId,
        userAgent: config.userAgent,
        policy: this.policy,
        features,
      },
      deps,
    );
  }

  get phase(): LifecyclePhase {
    return this.#phase;
  }

  get state(): RuntimeState {
    return this.#state;
  }

  get assignment(): Assignment | undefined {
    return this.#assignment;
  }

  /**
   * Queues a telemetry message (an object or a string is sent as JSON or UTF-8 text); returns its
   * id, reported in a `telemetry sent` (or `dropped`) event.
   * @throws UsageError QUEUE_FULL, OVERSIZE, STOPPED, INVALID_ARGUMENT.
   */
  send(message: Uint8Array | string | object, properties: MessageProperties | undefined, now: number): { id: number; commands: LifecycleCommand[] } {
    if (this.#phase === "stopped") throw new UsageError("STOPPED", "send() after stop()");
    let body: Uint8Array;
    let props = properties;
    if (message instanceof Uint8Array) body = message;
    else if (typeof message === "string") body = utf8Encode(message);
    else {
      const json = jsonMessage(message);
      body = json.body;
      props = { ...json.properties, ...properties };
    }
    this.#begin(now);
    // Queued on the hub session, run or no run: its tag is the message's id.
    const sent = this.#hub.send(body, props, now);
    this.#doHub(sent.commands);
    return { id: sent.tag, commands: this.#end() };
  }

  /**
   * Feeds one event that happened at `now` (ms since 1970); returns the commands to perform.
   * Events on a link that is no longer the open one are ignored.
   * @throws UsageError ILLEGAL_EVENT for `start` twice, or `reprovision` before start or after stop.
   */
  handle(event: LifecycleEvent, now: number): LifecycleCommand[] {
    this.#begin(now);
    const phase = this.#phase;
    switch (event.kind) {
      case "start":
        if (phase !== "idle") throw new UsageError("ILLEGAL_EVENT", `start in phase "${phase}"; a runtime starts once`);
        if (this.#hasCache) this.#await("loading", { kind: "cache-load" });
        else this.#provision(false);
        break;
      case "stop":
        if (phase !== "stopped") this.#stop();
        break;
      case "reprovision":
        if (phase === "idle" || phase === "stopped") throw new UsageError("ILLEGAL_EVENT", `reprovision in phase "${phase}"`);
        this.#reprovision();
        break;
      case "timer":
        this.#timerAt = undefined;
        // The host's timer is the clock of a wait: a wall clock set back (NTP) must not stretch it.
        if (this.#waitAt !== undefined) {
          this.#waitAt = undefined;
          this.#cycle();
        } else if (this.#subAt !== undefined) {
          this.#subAt = undefined;
          this.#feed({ kind: "timer" });
        }
        break;
      case "cache-loaded":
        this.#onLoaded(event.assignment, event.detail, event.rejected);
        break;
      case "cache-saved":
      case "cache-invalidated":
      case "cache-failed":
        this.#onCacheDone(event.kind, event.detail);
        break;
      case "call":
        this.#doHub(this.#hub.handle(event, now));
        break;
      case "lookup-response":
      case "lookup-failed":
        // Only for the lookup in flight (a run that ended, or has moved on, is not asked).
        if (this.#dps?.phase === "looking-up") this.#feed(event);
        break;
      default:
        // A callback of a link: only the open link speaks; a PUBACK only to a hub run.
        if (event.link !== this.#link || this.#link === 0 || (event.kind === "puback" && !this.#hubRun)) break;
        if (event.kind === "closed") this.#link = 0;
        this.#feed(event.kind === "puback" ? event : (event as unknown as RegistrationEvent));
    }
    return this.#end();
  }

  // -------------------------------------------------------------------------------------------

  #begin(now: number): void {
    this.#now = now;
    this.#out = [];
  }

  #end(): LifecycleCommand[] {
    const at = this.#waitAt ?? this.#subAt;
    if (at !== this.#timerAt) {
      this.#out.push(at === undefined ? { kind: "clear-timer" } : { kind: "set-timer", delayMs: Math.max(0, at - this.#now) });
      this.#timerAt = at;
    }
    return this.#out;
  }

  #report(event: RuntimeEvent): void {
    this.#out.push({ kind: "report", event });
  }

  #setState(state: RuntimeState, error?: RuntimeError, retryInMs?: number): void {
    if (this.#state === state && !error) return;
    this.#state = state;
    const e: { source: "runtime"; state: RuntimeState; error?: RuntimeError; retryInMs?: number } = { source: "runtime", state };
    if (error) e.error = { code: error.code, message: error.message };
    if (retryInMs !== undefined) e.retryInMs = retryInMs;
    this.#report(e);
  }

  /** Issues a cache command and waits in `phase` for its result. */
  #await(phase: LifecyclePhase, command: LifecycleCommand): void {
    this.#phase = phase;
    this.#out.push(command);
  }

  // ---- the cache

  #onLoaded(a: CachedAssignment | undefined, detail: string, rejected?: readonly string[]): void {
    if (this.#phase !== "loading") return;
    const foreign = a !== undefined && a.idScope !== undefined && a.idScope !== this.#config.idScope;
    const problem = a && (foreign ? "it is for another ID scope" : assignmentProblem(a.assignedHub, a.deviceId));
    if (a && !problem) {
      this.#report({ source: "cache", state: "loaded", detail, rejected });
      this.#cached = { assignedHub: a.assignedHub, deviceId: a.deviceId, substatus: a.substatus, source: "cache" };
      this.#assignment = this.#cached;
      this.#report({ source: "assignment", assignment: this.#cached });
      return this.#startHub();
    }
    this.#report({ source: "cache", state: "empty", detail: a ? `the cached assignment is not usable: ${problem}` : detail, rejected });
    // A record this code cannot use is erased, so no later boot trusts it either; one of another
    // ID scope is left for the next save to replace.
    if (a && !foreign) return this.#await("invalidating", { kind: "cache-invalidate" });
    this.#provision(false);
  }

  #onCacheDone(kind: "cache-saved" | "cache-invalidated" | "cache-failed", detail?: string): void {
    const phase = this.#phase;
    if (kind === "cache-failed") {
      // The device works on without a cache; the next start provisions again.
      if (phase === "loading") this.#cached = undefined;
      this.#report({ source: "cache", state: "unavailable", detail });
    } else if (kind === "cache-invalidated") {
      this.#cached = undefined;
      this.#report({ source: "cache", state: "invalidated" });
    } else {
      this.#report({ source: "cache", state: "saved", detail });
    }
    if (phase === "loading" || phase === "invalidating") this.#provision(false);
    else if (phase === "saving") this.#startHub();
  }

  #save(a: Assignment): void {
    this.#pendingSave = undefined;
    this.#cached = a;
    this.#out.push({ kind: "cache-save", assignment: { assignedHub: a.assignedHub, deviceId: a.deviceId, registrationId: this.#config.registrationId, substatus: a.substatus, idScope: this.#config.idScope } });
  }

  // ---- DPS

  #newDps(keepCache = false): RegistrationMachine {
    const c = this.#config;
    const host = c.globalEndpoint ?? DPS_GLOBAL_ENDPOINT;
    const single = this.#longTail ? 0 : undefined;
    return new RegistrationMachine(
      {
        idScope: c.idScope,
        registrationId: c.registrationId,
        symmetricKey: this.#key,
        host,
        port: c.dpsPort,
        lookup: this.#hasLookup && c.statusLookup !== false ? { host, port: c.lookupPort ?? 443 } : undefined,
        payload: c.payload,
        certificateSigningRequest: c.certificateSigningRequest,
        tokenLifetimeSeconds: c.tokenLifetimeSeconds,
        resourceForm: c.resourceForm,
        userAgent: c.userAgent,
        pipeline: this.#pipeline,
        hasCachedAssignment: keepCache,
        policy: this.policy,
        maxAttempts: single,
        maxReauthentications: single,
        distrustHub: this.#refusedHub,
        maxAnswerBytes: c.maxAnswerBytes,
      },
      this.#deps,
    );
  }

  /** A provisioning run; with `keepCache` a DPS failure falls back to the cached hub. */
  #provision(keepCache: boolean): void {
    this.#askedDps = true;
    this.#keepCache = keepCache && this.#cached !== undefined;
    this.#phase = "provisioning";
    this.#setState("provisioning");
    this.#dps = this.#newDps(this.#keepCache);
    this.#feed({ kind: "start" });
  }

  #onDpsDone(outcome: Extract<RegistrationCommand, { kind: "done" }>["outcome"]): void {
    this.#pipeline = this.#dps!.pipeline;
    this.#dps = undefined;
    this.#subAt = undefined;
    if (outcome.kind === "assigned") {
      const s = outcome.registrationState;
      const problem = assignmentProblem(s.assignedHub, s.deviceId);
      // Checked before anything is written: an assignment the hub session cannot use would fail
      // every later boot too.
      if (problem) return this.#escalate({ code: "ASSIGNMENT_UNUSABLE", message: `DPS assigned a hub this device cannot use: ${problem}; check the allocation policy or custom allocation function` });
      const a: Assignment = { assignedHub: s.assignedHub!, deviceId: s.deviceId!, substatus: s.substatus, source: "dps" };
      const tlsKey = this.#config.certificateKey?.tlsKey;
      const chain = s.issuedCertificateChain;
      let certificate: ClientCertificate | undefined;
      if (chain && tlsKey !== undefined) {
        try {
          const der: Uint8Array[] = [];
          for (let i = 0; i < chain.length; i++) der.push(base64Decode(chain[i], "an issued certificate"));
          certificate = { chain: der, key: tlsKey };
        } catch {
          // A chain that is not base64 after all: the SAS token still works.
          certificate = undefined;
        }
      }
      this.#hub.useCertificate(certificate);
      this.#assignment = a;
      this.#report({ source: "assignment", assignment: a, registrationState: s });
      const cached = this.#cached;
      if (cached && cached.assignedHub === a.assignedHub && cached.deviceId === a.deviceId) {
        this.#assignment = cached;
        if (a.assignedHub === this.#failedHub) return this.#escalate({ code: "HUB_UNREACHABLE", message: `DPS assigns the hub ${a.assignedHub} again, which has not answered` });
        return this.#startHub();
      }
      if (a.assignedHub === this.#refusedHub || !this.#hasCache) {
        this.#pendingSave = this.#hasCache ? a : undefined;
        return this.#startHub();
      }
      this.#save(a);
      this.#phase = "saving";
      return;
    }
    if (outcome.kind === "failed" && !outcome.recheck) return this.#final(outcome.error);
    const error = outcome.kind === "failed" ? outcome.error : outcome.kind === "fallback" ? outcome.reason : undefined;
    if (!error) return;
    if (this.#keepCache && this.#cached) {
      // DPS is down or refuses: the cached hub, unless it has just failed too.
      this.#assignment = this.#cached;
      // Reported against the hub, which is what failed first; DPS's reason rides along.
      const hub = this.#hubFailure;
      if (this.#failedHub === this.#cached.assignedHub) return this.#escalate(hub ? { code: hub.code, message: `${hub.message}; DPS could not be asked either (${error.message})` } : error);
      return this.#startHub();
    }
    this.#escalate(error);
  }

  // ---- the hub

  /** A run of the hub session to the assignment in use; what is queued goes out, oldest first. */
  #startHub(): void {
    const a = this.#assignment!;
    this.#hubRun = true;
    this.#phase = "hub";
    this.#setState("connecting");
    this.#doHub(this.#hub.handle({ kind: "start", hubHost: a.assignedHub, deviceId: a.deviceId, windowMs: this.#longTail ? 0 : undefined }, this.#now));
  }

  #onHubDone(outcome: Extract<HubCommand, { kind: "done" }>["outcome"]): void {
    this.#hubRun = false;
    this.#subAt = undefined;
    const a = this.#assignment!;
    if (outcome.kind === "refused") {
      this.#refusals++;
      this.#refusedHub = a.assignedHub;
      this.#assignment = undefined;
      this.#pendingSave = undefined;
      // The table: register again at once. A second refusal in a row, or one in a long-tail
      // cycle that has asked DPS already, waits: at most one registration per cycle.
      if (this.#refusals > 1 || (this.#longTail && this.#askedDps)) return this.#escalate(outcome.reason, true);
      if (this.#cached) return this.#await("invalidating", { kind: "cache-invalidate" });
      return this.#provision(false);
    }
    if (outcome.kind === "unreachable") {
      if (this.#failedHub === a.assignedHub || (this.#longTail && this.#askedDps)) return this.#escalate(outcome.reason);
      // Ask DPS once, keeping the cache: the hub may have moved, or DPS may be down too.
      this.#failedHub = a.assignedHub;
      this.#hubFailure = outcome.reason;
      this.#longTail = true;
      return this.#provision(true);
    }
    if (outcome.kind === "failed") this.#final(outcome.error);
  }

  /** The hub session has proved itself: every count of this episode starts again. */
  #settled(): void {
    this.#longTail = false;
    this.#waits = 0;
    this.#refusals = 0;
    this.#refusedHub = undefined;
    this.#failedHub = undefined;
    this.#askedDps = false;
    if (this.#pendingSave) this.#save(this.#pendingSave);
  }

  // ---- escalation

  /** Past the fast tiers: wait in the long tail, then a new cycle (one attempt at each step). */
  #escalate(error: FailureDiagnostics | RuntimeError, invalidate = false): void {
    this.#longTail = true;
    this.#waits++;
    const delayMs = retryDelayMs(this.policy, this.#waits, this.#deps.random(), undefined, this.policy.longTail);
    this.#phase = "waiting";
    this.#waitAt = this.#now + delayMs;
    this.#setState("backing-off", { code: error.code, message: `${clause(error.message)}; trying again in ${Math.round(delayMs / 60_000)} min` }, delayMs);
    if (invalidate && this.#cached) this.#out.push({ kind: "cache-invalidate" });
  }

  #cycle(): void {
    this.#failedHub = undefined;
    this.#askedDps = false;
    if (this.#cached) {
      this.#assignment = this.#cached;
      return this.#startHub();
    }
    this.#provision(false);
  }

  #final(error: RuntimeError): void {
    this.#phase = "failed";
    this.#setState("failed", error);
  }

  #stop(): void {
    this.#endMachines();
    this.#waitAt = undefined;
    this.#phase = "stopped";
    this.#setState("stopped");
  }

  /** Ends the running machine, performing its closing commands but not acting on its outcome. */
  #endMachines(): void {
    const dps = this.#dps;
    const run = this.#hubRun;
    this.#dps = undefined;
    this.#hubRun = false;
    const commands: (RegistrationCommand | HubCommand)[] = dps ? dps.handle({ kind: "stop" }, this.#now) : run ? this.#hub.handle({ kind: "stop" }, this.#now) : [];
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      if (c.kind === "close") this.#close();
      else if (c.kind === "cancel-lookup") this.#out.push(c);
    }
    this.#subAt = undefined;
    this.#close();
  }

  // ---- plumbing between the machines and the link

  #feed(event: RegistrationEvent | HubEvent): void {
    if (this.#dps) this.#doDps(this.#dps, this.#dps.handle(event as RegistrationEvent, this.#now));
    else if (this.#hubRun) this.#doHub(this.#hub.handle(event as HubEvent, this.#now));
  }

  #close(): void {
    if (this.#link !== 0) this.#out.push({ kind: "close", link: this.#link });
    this.#link = 0;
  }

  #common(c: RegistrationCommand | HubCommand): boolean {
    switch (c.kind) {
      case "connect":
        // Never a second link beside a live one.
        this.#close();
        this.#link = ++this.#links;
        this.#out.push({ kind: "connect", link: this.#link, options: c.options });
        return true;
      case "subscribe":
        if (this.#link !== 0) this.#out.push({ kind: "subscribe", link: this.#link, topic: c.topic, qos: c.qos });
        return true;
      case "publish":
        if (this.#link !== 0) this.#out.push({ kind: "publish", link: this.#link, topic: c.topic, payload: c.payload, qos: c.qos, tag: (c as { tag?: number }).tag });
        return true;
      case "close":
        this.#close();
        return true;
      case "set-timer":
        this.#subAt = this.#now + c.delayMs;
        return true;
      case "clear-timer":
        this.#subAt = undefined;
        return true;
    }
    return false;
  }

  #doDps(machine: RegistrationMachine, commands: RegistrationCommand[]): void {
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      if (this.#dps !== machine || this.#common(c)) continue;
      if (c.kind === "status") this.#report({ source: "dps", status: c.status });
      else if (c.kind === "done") this.#onDpsDone(c.outcome);
      else this.#out.push(c as LifecycleCommand);
    }
  }

  #doHub(commands: HubCommand[]): void {
    let reprovision: string | undefined;
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      // Commands of a run are the link's; reports of sent and dropped messages come any time.
      if ((this.#hubRun && this.#common(c)) || c.kind === "connect" || c.kind === "close" || c.kind === "subscribe" || c.kind === "publish") continue;
      switch (c.kind) {
        case "status":
          this.#report({ source: "hub", status: c.status, hub: this.#assignment?.assignedHub ?? "" });
          if (c.status.state === "connected") this.#setState("connected");
          else if (this.#state === "connected" && c.status.state !== "stopped") this.#setState("connecting");
          break;
        case "sent":
          this.#report({ source: "telemetry", state: "sent", id: c.tag });
          break;
        case "dropped":
          this.#report({ source: "telemetry", state: "dropped", id: c.tag, reason: c.reason });
          break;
        case "received":
          this.#report({ source: "message", topic: c.topic, payload: c.payload });
          break;
        case "feature":
          this.#report(c.event);
          break;
        case "invoke":
          this.#out.push(c);
          break;
        case "reprovision":
          reprovision = c.reason;
          break;
        case "done":
          this.#onHubDone(c.outcome);
          break;
      }
    }
    if (this.#hubRun && this.#hub.stable && (this.#longTail || this.#refusals > 0 || this.#pendingSave)) this.#settled();
    // Asked for from the cloud (a method, a desired property): as `reprovision()` would.
    if (reprovision !== undefined && this.#hubRun) this.#reprovision();
  }

  /** DPS again, now, keeping the cache (the `reprovision` event, or a feature asking for it). */
  #reprovision(): void {
    this.#endMachines();
    this.#waitAt = undefined;
    this.#failedHub = undefined;
    this.#provision(true);
  }
}
