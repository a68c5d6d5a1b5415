/**
 * The IoT Hub session, sans-I/O like the registration machine: connect to the assigned hub with
 * a hub SAS token, publish telemetry at QoS 1 and match each PUBACK, renew the token before it
 * expires by reconnecting, keep a bounded outgoing queue, and turn the hub's answers into an
 * outcome by the one retry table (retry-policy.ts):
 *
 *   CONNACK 4 or 5 (reauthenticate: a bad token, a disabled or deleted device) → "refused"
 *   CONNACK 3, a drop, a timeout (retry, recover) → the same hub again, at least 5 s apart, for
 *                                                   `windowMs`; then "unreachable"
 *   CONNACK 1 or 2 (fail)                         → "failed"
 *
 * A session counts as up only once it has lasted `hub.stableMs` or seen a PUBACK: a hub that
 * accepts the connection and drops it at once is failing, not recovering. A message that was the
 * oldest unacknowledged one at `hub.maxMessageAttempts` link losses in a row is dropped and
 * reported, so that one message the hub refuses cannot stop the queue forever.
 *
 * One session lives as long as the device: each `start` names the hub to connect to (the cached
 * or the assigned one) and runs until an outcome; the queue and its tags outlive the runs, so
 * what was sent while there was no hub goes out, oldest first, once there is one.
 *
 * Time comes in with each event; the session reports its next deadline as one `set-timer`.
 */
import type { CryptoPort } from "./crypto.js";
import { copyDefined, DpsError, UsageError, excerpt, type ErrorCode } from "./errors.js";
import { utf8Encode } from "./encoding.js";
import { assignmentProblem, encodeProperties, hubUsername, telemetryTopic, type MessageProperties } from "./hub-protocol.js";
import type { ClientCertificate, MqttConnectOptions, RandomSource, TransportFault } from "./ports.js";
import {
  actionForConnack,
  actionForFault,
  connackMeaning,
  defaultRetryPolicy,
  HUB_MIN_RETRY_DELAY_MS,
  retryDelayMs,
  type RetryAction,
  type RetryPolicy,
} from "./retry-policy.js";
import { hubSasToken, sasExpiry } from "./sas.js";

export type { MessageProperties } from "./hub-protocol.js";
export const HUB_MQTT_PORT = 8883;
/** IoT Hub's own limit for a device-to-cloud message. */
export const HUB_MAX_MESSAGE_BYTES = 256 * 1024;

export interface HubSessionConfig {
  /** The device key (base64): individual, or derived from the group key. */
  readonly symmetricKey: string;
  readonly port?: number;
  /** Default 3600 s. */
  readonly tokenLifetimeSeconds?: number;
  /** Reconnect with a fresh token this long before it expires; default 10 % of the lifetime, 60 s to half of it. */
  readonly renewBeforeSeconds?: number;
  /** Default 60 s; the hub closes after 1.5 × this without traffic. */
  readonly keepAliveSeconds?: number;
  /** Messages waiting or awaiting PUBACK; default 16. */
  readonly maxQueue?: number;
  /** PUBLISHes awaiting PUBACK at once; default 4. */
  readonly maxInFlight?: number;
  /** Largest message body accepted by `send`; default 16 KiB (the hub takes up to 256 KiB). */
  readonly maxMessageBytes?: number;
  /** IoT Plug and Play model id, sent in the CONNECT user name. */
  readonly modelId?: string;
  readonly userAgent?: string;
  readonly policy?: RetryPolicy;
  /** What else the session does on the hub (c2d.ts, methods.ts, twin.ts); none by default. */
  readonly features?: readonly HubFeature[];
}

/**
 * What a hub feature can do from inside the session, during one event: publish on the open
 * session (QoS 0; the feature matches its own answers), hand work to the driver (an application
 * handler runs outside the machine, after this event), report, or ask for re-provisioning.
 */
export interface FeatureIo {
  readonly now: number;
  /** The device id of the current (or last) run. */
  readonly deviceId: string;
  /** The session is connected and this feature's subscriptions are granted. */
  readonly ready: boolean;
  readonly random: RandomSource;
  readonly policy: RetryPolicy;
  /** Publishes at QoS 0; false, and nothing sent, when the feature is not ready. */
  publish(topic: string, payload: Uint8Array): boolean;
  /** Has the driver call `run` once this event is over (`what` names it in logs and transcripts). */
  invoke(what: string, run: () => void): void;
  report(event: FeatureEvent): void;
  /** Asks the lifecycle to provision with DPS again (the hub run ends). */
  reprovision(reason: string): void;
}

/**
 * An opt-in part of the hub session (cloud-to-device messages, direct methods, the twin). The
 * session subscribes to a feature's topics after each CONNACK 0, tells it when they are granted
 * and when the link is gone, offers it every message first, and wakes it at its deadline.
 */
export interface HubFeature {
  /** "c2d", "methods", "twin": named in reports. */
  readonly name: string;
  /** The largest message body this feature accepts (the session's packet limit follows it). */
  readonly maxIncomingBytes: number;
  /** Topic filters to subscribe to (QoS 1) on each connection. */
  subscriptions(deviceId: string): readonly string[];
  /** Every subscription was granted: the feature may publish. */
  ready(io: FeatureIo): void;
  /** True when the message is this feature's. `oversize`: the host skipped a body of that many bytes. */
  message(topic: string, payload: Uint8Array, oversize: number | undefined, io: FeatureIo): boolean;
  /** The link is gone (a drop, a renewal, the end of the run). */
  lost(io: FeatureIo): void;
  /** The next time (ms since 1970) the feature wants `timer`, while ready. */
  deadline(): number | undefined;
  timer(io: FeatureIo): void;
  /** Called once by the driver: how the application's calls reach the machine (as a `call` event). */
  attach(call: (fn: (io: FeatureIo) => void) => void): void;
  /** Builds the plumbing that runs a set of features (FeatureSet, hub-features.ts): the session uses the first feature's. */
  readonly driver: (features: readonly HubFeature[]) => FeatureDriver;
}

/** What the session sees of itself during one event, for its features. */
export interface SessionView {
  readonly out: HubCommand[];
  readonly now: number;
  readonly deviceId: string;
  /** Connected, with the link open. */
  readonly connected: boolean;
  readonly random: RandomSource;
  readonly policy: RetryPolicy;
}

/**
 * The session's side of its features, kept out of this module so that a firmware without them
 * does not carry it (hub-features.ts).
 */
export interface FeatureDriver {
  /** The largest PUBLISH the features take, topic included: the host's packet limit. */
  readonly maxPacketBytes: number;
  /** CONNACK 0: each feature's subscriptions go out. */
  up(view: SessionView): void;
  suback(granted: readonly number[], view: SessionView): void;
  /** True when a ready feature claims the message. */
  message(topic: string, payload: Uint8Array, oversize: number | undefined, view: SessionView): boolean;
  /** The link is gone. */
  down(view: SessionView): void;
  /** The next time a ready feature wants `timer`. */
  deadline(): number | undefined;
  timer(view: SessionView): void;
  call(feature: HubFeature, fn: (io: FeatureIo) => void, view: SessionView): void;
}

/** What the features report (through the runtime's listener). */
export type FeatureEvent =
  /** A cloud-to-device message handed to the application, or one refused (`reason`). */
  | { readonly source: "c2d"; readonly state: "received" | "rejected"; readonly messageId?: string; readonly bytes: number; readonly reason?: string }
  /** A direct method answered with `status` (`reason` when the device answered for the application). */
  | { readonly source: "method"; readonly state: "answered" | "late"; readonly name: string; readonly rid: string; readonly status: number; readonly reason?: string }
  /**
   * The twin: the whole document read (`synced`), a desired patch applied or ignored, reported
   * properties accepted, a request retrying or failed.
   */
  | { readonly source: "twin"; readonly state: "synced" | "desired" | "ignored" | "reported" | "retrying" | "failed"; readonly version?: number; readonly status?: number; readonly delayMs?: number; readonly reason?: string }
  /** A feature's subscription refused by the hub: it stays off on this connection. */
  | { readonly source: "feature"; readonly state: "unavailable"; readonly feature: string; readonly reason: string };

export interface HubSessionDeps {
  readonly crypto: CryptoPort;
  readonly random: RandomSource;
}

export type HubEvent =
  /** A run to this hub; `windowMs` (default `policy.hub.windowMs`, 0: one attempt) until "unreachable". */
  | { readonly kind: "start"; readonly hubHost: string; readonly deviceId: string; readonly windowMs?: number }
  | { readonly kind: "connack"; readonly returnCode: number }
  | { readonly kind: "puback"; readonly tag: number }
  | { readonly kind: "message"; readonly topic: string; readonly payload: Uint8Array; readonly oversize?: number }
  | { readonly kind: "suback"; readonly granted: readonly number[] }
  /** An application call into a feature (any phase, run or no run). */
  | { readonly kind: "call"; readonly feature: HubFeature; readonly fn: (io: FeatureIo) => void }
  | { readonly kind: "closed"; readonly fault: TransportFault }
  | { readonly kind: "timer" }
  | { readonly kind: "stop" };

export interface HubStatus {
  readonly state: "connecting" | "connected" | "renewing" | "retrying" | "refused" | "unreachable" | "failed" | "stopped";
  readonly attempt: number;
  readonly delayMs?: number;
  readonly connack?: number;
  readonly fault?: string;
  readonly message?: string;
  /** Messages waiting or in flight. */
  readonly queued?: number;
}

export interface HubFailure {
  readonly code: ErrorCode;
  readonly message: string;
  readonly connack?: number;
}

export type HubOutcome =
  /** The hub refused the identity (reauthenticate): the cached assignment is no longer good. */
  | { readonly kind: "refused"; readonly reason: HubFailure }
  /** Retries for the whole window failed: ask DPS, keeping the cache. */
  | { readonly kind: "unreachable"; readonly reason: HubFailure }
  | { readonly kind: "failed"; readonly error: HubFailure }
  /** The run was stopped; `queued` messages wait for the next one. */
  | { readonly kind: "stopped"; readonly queued: number };

export type HubCommand =
  | { readonly kind: "connect"; readonly options: MqttConnectOptions }
  | { readonly kind: "subscribe"; readonly topic: string; readonly qos: 1 }
  /** Telemetry at QoS 1 with its tag; a feature's publish at QoS 0 without one. */
  | { readonly kind: "publish"; readonly tag?: number; readonly topic: string; readonly payload: Uint8Array; readonly qos: 0 | 1 }
  | { readonly kind: "close" }
  | { readonly kind: "set-timer"; readonly delayMs: number }
  | { readonly kind: "clear-timer" }
  | { readonly kind: "status"; readonly status: HubStatus }
  | { readonly kind: "sent"; readonly tag: number }
  /** A message given up on: `reason` says why (never its content). */
  | { readonly kind: "dropped"; readonly tag: number; readonly reason: string }
  | { readonly kind: "received"; readonly topic: string; readonly payload: Uint8Array }
  | { readonly kind: "feature"; readonly event: FeatureEvent }
  /** Run `run` (an application handler) outside the machine, after this event. */
  | { readonly kind: "invoke"; readonly what: string; readonly run: () => void }
  | { readonly kind: "reprovision"; readonly reason: string }
  | { readonly kind: "done"; readonly outcome: HubOutcome };

export type HubPhase = "idle" | "connecting" | "connected" | "waiting";

interface Outgoing {
  readonly tag: number;
  /** The property bag, encoded once (the topic's device id is the run's). */
  readonly bag: string;
  readonly payload: Uint8Array;
  /** PUBACK deadline while in flight. */
  deadline?: number;
  /** Link losses in a row while this was the oldest unacknowledged message. */
  losses: number;
}

export class HubSession {
  #config: HubSessionConfig;
  #deps: HubSessionDeps;
  #policy: RetryPolicy;
  #hubHost = "";
  #deviceId = "";
  #windowMs = 0;
  #out: HubCommand[] = [];
  #phase: HubPhase = "idle";
  #now = 0;
  #attempt = 0;
  #failingSince: number | undefined;
  #connectDeadline: number | undefined;
  #retryAt: number | undefined;
  #renewAt: number | undefined;
  #stableAt: number | undefined;
  #stable = false;
  #timerAt: number | undefined;
  #linkOpen = false;
  #waiting: Outgoing[] = [];
  #inFlight: Outgoing[] = [];
  #nextTag = 1;
  #maxQueue: number;
  #maxInFlight: number;
  #maxMessageBytes: number;
  #features: FeatureDriver | undefined;
  #certificate: ClientCertificate | undefined;

  /** @throws UsageError INVALID_ARGUMENT for a bad configuration. */
  constructor(config: HubSessionConfig, deps: HubSessionDeps) {
    check(typeof config.symmetricKey === "string" && config.symmetricKey.length > 0, "symmetricKey is required");
    this.#maxQueue = config.maxQueue ?? 16;
    this.#maxInFlight = config.maxInFlight ?? Math.min(4, this.#maxQueue);
    this.#maxMessageBytes = config.maxMessageBytes ?? 16 * 1024;
    check(Number.isInteger(this.#maxQueue) && this.#maxQueue >= 1 && this.#maxQueue <= 1024, "maxQueue must be an integer in 1..1024");
    check(Number.isInteger(this.#maxInFlight) && this.#maxInFlight >= 1 && this.#maxInFlight <= this.#maxQueue, "maxInFlight must be an integer in 1..maxQueue");
    check(this.#maxMessageBytes >= 1 && this.#maxMessageBytes <= HUB_MAX_MESSAGE_BYTES, `maxMessageBytes must be within 1..${HUB_MAX_MESSAGE_BYTES}`);
    this.#config = config;
    this.#deps = deps;
    this.#policy = config.policy ?? defaultRetryPolicy;
    const features = config.features;
    if (features && features.length > 0) {
      check(typeof features[0]?.driver === "function", "features must be hub features (c2d.ts, methods.ts, twin.ts)");
      this.#features = features[0].driver(features);
    }
    // Checks the model id now rather than at the first connect.
    hubUsername("h", "d", config);
  }

  /**
   * Authenticates the next connections with a TLS client certificate (an operational certificate
   * DPS issued) and an empty password instead of a SAS token; undefined: SAS again.
   */
  useCertificate(certificate: ClientCertificate | undefined): void {
    this.#certificate = certificate;
  }

  get phase(): HubPhase {
    return this.#phase;
  }

  /** True once the session has lasted `hub.stableMs` or seen a PUBACK; false again after a loss. */
  get stable(): boolean {
    return this.#stable;
  }

  /** Messages waiting or awaiting PUBACK. */
  get queued(): number {
    return this.#waiting.length + this.#inFlight.length;
  }

  /**
   * Queues a telemetry message, with or without a run; returns its tag (reported back in a
   * `sent` or `dropped` command) and the commands to perform now.
   * @throws UsageError QUEUE_FULL when `maxQueue` messages are waiting or unacknowledged;
   *   OVERSIZE when the body exceeds `maxMessageBytes`; INVALID_ARGUMENT for a property that is not a string.
   */
  send(body: Uint8Array, properties: MessageProperties | undefined, now: number): { tag: number; commands: HubCommand[] } {
    if (body.length > this.#maxMessageBytes) {
      throw new UsageError("OVERSIZE", `the message is ${body.length} bytes; this session accepts at most ${this.#maxMessageBytes} (maxMessageBytes)`);
    }
    if (this.queued >= this.#maxQueue) {
      throw new UsageError("QUEUE_FULL", `the outgoing queue is full: ${this.#maxQueue} messages wait for the hub to acknowledge them; wait for a "sent" event, or raise maxQueue`);
    }
    this.#begin(now);
    const tag = this.#nextTag++;
    this.#waiting.push({ tag, bag: encodeProperties(properties), payload: body, losses: 0 });
    if (this.#phase === "connected") this.#flush();
    return { tag, commands: this.#end() };
  }

  /**
   * Feeds one event that happened at `now`; returns the commands to perform.
   * @throws UsageError ILLEGAL_EVENT for an event the host cannot legitimately deliver now.
   */
  handle(event: HubEvent, now: number): HubCommand[] {
    const kind = event.kind;
    if (kind === "call") {
      // An application's call into a feature: in any phase (a twin patch while offline is queued).
      this.#begin(now);
      this.#features?.call(event.feature, event.fn, this.#view());
      return this.#end();
    }
    if (kind === "start" ? this.#phase !== "idle" : kind === "timer" && this.#timerAt === undefined) {
      throw new UsageError("ILLEGAL_EVENT", `hub session: event "${kind}" cannot happen in phase "${this.#phase}"${kind === "timer" ? " (no timer is set)" : ""}`);
    }
    // Between runs, and from a link it has closed, nothing is news.
    if ((this.#phase === "idle" && kind !== "start") || (!this.#linkOpen && (kind === "connack" || kind === "puback" || kind === "message" || kind === "closed"))) return [];
    this.#begin(now);
    if (kind === "timer") this.#timerAt = undefined;
    switch (event.kind) {
      case "start": {
        const problem = assignmentProblem(event.hubHost, event.deviceId);
        check(problem === undefined, problem!);
        this.#hubHost = event.hubHost;
        this.#deviceId = event.deviceId;
        this.#windowMs = event.windowMs ?? this.#policy.hub.windowMs;
        this.#attempt = 0;
        this.#failingSince = undefined;
        this.#connect("connecting");
        break;
      }
      case "connack":
        this.#onConnack(event.returnCode);
        break;
      case "puback":
        this.#onPuback(event.tag);
        break;
      case "message":
        if (this.#phase === "connected" && !this.#features?.message(event.topic, event.payload, event.oversize, this.#view())) {
          this.#out.push({ kind: "received", topic: event.topic, payload: event.payload });
        }
        break;
      case "suback":
        this.#features?.suback(event.granted, this.#view());
        break;
      case "closed":
        this.#lost(event.fault.kind, `the hub connection ended (${event.fault.kind}): ${excerpt(event.fault.message, 120)}`);
        break;
      case "timer":
        this.#onTimer();
        break;
      case "stop":
        this.#close();
        this.#requeue();
        this.#finish({ kind: "stopped", queued: this.queued }, "stopped");
        break;
    }
    return this.#end();
  }

  #begin(now: number): void {
    this.#now = now;
    this.#out = [];
  }

  #end(): HubCommand[] {
    let next: number | undefined;
    if (this.#phase !== "idle") {
      // Renewal and stability only matter on an open session: a renewal due while still
      // connecting waits for the CONNACK instead of firing at once, over and over.
      const connected = this.#phase === "connected";
      const times = [this.#connectDeadline, this.#retryAt, connected ? this.#renewAt : undefined, connected ? this.#stableAt : undefined];
      for (let i = 0; i < this.#inFlight.length; i++) times.push(this.#inFlight[i].deadline);
      if (connected) times.push(this.#features?.deadline());
      for (let i = 0; i < times.length; i++) {
        const t = times[i];
        if (t !== undefined && (next === undefined || t < next)) next = t;
      }
    }
    if (next !== this.#timerAt) {
      if (next === undefined) this.#out.push({ kind: "clear-timer" });
      else this.#out.push({ kind: "set-timer", delayMs: Math.max(0, next - this.#now) });
      this.#timerAt = next;
    }
    return this.#out;
  }

  #connect(state: "connecting" | "renewing"): void {
    const c = this.#config;
    const lifetime = c.tokenLifetimeSeconds ?? 3600;
    let password: string;
    let expiry: number;
    try {
      expiry = sasExpiry(this.#now, lifetime);
      password = hubSasToken(this.#deps.crypto, { hubHost: this.#hubHost, deviceId: this.#deviceId, symmetricKey: c.symmetricKey, expiry });
    } catch (error) {
      if (error instanceof DpsError) return this.#finish({ kind: "failed", error: { code: error.code, message: error.message } }, "failed");
      throw error;
    }
    const renewBefore = c.renewBeforeSeconds ?? Math.min(Math.max(60, Math.floor(lifetime / 10)), Math.floor(lifetime / 2));
    this.#renewAt = Math.max(this.#now + 1000, expiry * 1000 - renewBefore * 1000);
    const username = hubUsername(this.#hubHost, this.#deviceId, c);
    this.#phase = "connecting";
    this.#retryAt = undefined;
    this.#connectDeadline = this.#now + this.#policy.timeouts.connectMs;
    this.#status({ state, queued: this.queued });
    this.#linkOpen = true;
    this.#out.push({
      kind: "connect",
      options: {
        host: this.#hubHost,
        port: c.port ?? HUB_MQTT_PORT,
        clientId: this.#deviceId,
        username,
        password: this.#certificate ? "" : password,
        keepAliveSeconds: c.keepAliveSeconds ?? 60,
        cleanSession: true,
        maxPacketBytes: this.#features?.maxPacketBytes,
        clientCertificate: this.#certificate,
      },
    });
  }

  #onConnack(code: number): void {
    if (this.#phase !== "connecting") {
      // A second CONNACK: the hub is confused. Close this link before anything else opens one.
      this.#close();
      return this.#lost("protocol", "the hub sent a CONNACK on an open session");
    }
    this.#connectDeadline = undefined;
    if (code === 0) {
      this.#phase = "connected";
      this.#stableAt = this.#now + this.#policy.hub.stableMs;
      this.#status({ state: "connected", queued: this.queued });
      this.#flush();
      this.#features?.up(this.#view());
      return;
    }
    this.#close();
    this.#failure(actionForConnack(this.#policy, code), `connack-${code}`, `the hub ${this.#hubHost} refused the connection with CONNACK ${code} (${connackMeaning(code)})`, code);
  }

  #onPuback(tag: number): void {
    let index = -1;
    for (let i = 0; i < this.#inFlight.length; i++) if (this.#inFlight[i].tag === tag) index = i;
    if (index < 0) return; // a duplicate or a PUBACK from before a reconnect
    this.#inFlight.splice(index, 1);
    this.#out.push({ kind: "sent", tag });
    this.#settle();
    this.#flush();
  }

  #onTimer(): void {
    const now = this.#now;
    if (this.#connectDeadline !== undefined && now >= this.#connectDeadline) {
      this.#close();
      return this.#lost("timeout", "no CONNACK from the hub within the connect timeout");
    }
    for (let i = 0; i < this.#inFlight.length; i++) {
      const deadline = this.#inFlight[i].deadline;
      if (deadline !== undefined && now >= deadline) {
        this.#close();
        return this.#lost("timeout", "no PUBACK from the hub within the acknowledgement timeout");
      }
    }
    if (this.#retryAt !== undefined && now >= this.#retryAt) return this.#connect("connecting");
    if (this.#phase !== "connected") return;
    if (this.#stableAt !== undefined && now >= this.#stableAt) this.#settle();
    if (this.#renewAt !== undefined && now >= this.#renewAt) {
      // The hub drops a session whose token expires: reconnect with a fresh one first.
      this.#close();
      this.#requeue();
      return this.#connect("renewing");
    }
    this.#features?.timer(this.#view());
  }

  #view(): SessionView {
    return { out: this.#out, now: this.#now, deviceId: this.#deviceId, connected: this.#phase === "connected" && this.#linkOpen, random: this.#deps.random, policy: this.#policy };
  }

  /** The session has proved itself: the failure count and window start again from zero. */
  #settle(): void {
    this.#stableAt = undefined;
    this.#stable = true;
    this.#attempt = 0;
    this.#failingSince = undefined;
  }

  #flush(): void {
    while (this.#inFlight.length < this.#maxInFlight && this.#waiting.length > 0) {
      const m = this.#waiting.shift()!;
      m.deadline = this.#now + this.#policy.timeouts.ackMs;
      this.#inFlight.push(m);
      this.#out.push({ kind: "publish", tag: m.tag, topic: telemetryTopic(this.#deviceId) + m.bag, payload: m.payload, qos: 1 });
    }
  }

  #requeue(): void {
    // At least once: what the hub did not acknowledge goes out again after the reconnect.
    for (let i = 0; i < this.#inFlight.length; i++) this.#inFlight[i].deadline = undefined;
    this.#waiting = this.#inFlight.concat(this.#waiting);
    this.#inFlight = [];
  }

  /** The link is gone (a drop, a timeout, a protocol error): blame, requeue, retry. */
  #lost(fault: TransportFault["kind"], message: string): void {
    this.#linkOpen = false;
    this.#features?.down(this.#view());
    this.#connectDeadline = undefined;
    const oldest = this.#inFlight[0];
    if (oldest && ++oldest.losses >= this.#policy.hub.maxMessageAttempts) {
      this.#inFlight.shift();
      this.#out.push({
        kind: "dropped",
        tag: oldest.tag,
        reason: `the hub ended the connection ${oldest.losses} times in a row while this message was the oldest unacknowledged one (too large for the hub, or a topic or property it refuses)`,
      });
    }
    this.#requeue();
    this.#failure(actionForFault(this.#policy, fault), fault, message);
  }

  #failure(action: RetryAction, fault: string, message: string, connack?: number): void {
    this.#phase = "waiting";
    this.#stable = false;
    this.#renewAt = undefined;
    this.#stableAt = undefined;
    const reason: HubFailure = connack === undefined ? { code: "HUB_REFUSED", message } : { code: "HUB_REFUSED", message, connack };
    if (action === "reauthenticate") return this.#finish({ kind: "refused", reason: { ...reason, message: `${message}: the cached identity is no longer good` } }, "refused");
    if (action === "fail") return this.#finish({ kind: "failed", error: { ...reason, message: `${message}: retrying cannot help` } }, "failed");
    if (this.#failingSince === undefined) this.#failingSince = this.#now;
    const failing = this.#now - this.#failingSince;
    if (failing >= this.#windowMs) {
      return this.#finish({ kind: "unreachable", reason: { ...reason, code: "HUB_UNREACHABLE", message: `${message}; failing for ${Math.round(failing / 1000)} s` } }, "unreachable");
    }
    this.#attempt++;
    const delayMs = Math.max(HUB_MIN_RETRY_DELAY_MS, retryDelayMs(this.#policy, this.#attempt, this.#deps.random(), undefined, this.#policy.hub));
    this.#retryAt = this.#now + delayMs;
    this.#status({ state: "retrying", delayMs, fault, message, queued: this.queued, connack });
  }

  #finish(outcome: HubOutcome, state: HubStatus["state"]): void {
    this.#close();
    this.#phase = "idle";
    this.#stable = false;
    this.#connectDeadline = this.#retryAt = this.#renewAt = this.#stableAt = undefined;
    // The timer ends before the outcome, so that `done` is the last command.
    if (this.#timerAt !== undefined) this.#out.push({ kind: "clear-timer" });
    this.#timerAt = undefined;
    const r = outcome.kind === "failed" ? outcome.error : outcome.kind === "stopped" ? undefined : outcome.reason;
    this.#status({ state, message: r?.message, connack: r?.connack });
    this.#out.push({ kind: "done", outcome });
  }

  #close(): void {
    if (this.#linkOpen) this.#out.push({ kind: "close" });
    this.#linkOpen = false;
    this.#features?.down(this.#view());
  }

  #status(fields: Omit<HubStatus, "attempt">): void {
    const s: Record<string, unknown> = { state: fields.state, attempt: this.#attempt };
    copyDefined(s, fields);
    this.#out.push({ kind: "status", status: s as unknown as HubStatus });
  }
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new UsageError("INVALID_ARGUMENT", message);
}

/** A JSON telemetry body with the system properties that tell the hub it is UTF-8 JSON. */
export function jsonMessage(value: unknown): { body: Uint8Array; properties: MessageProperties } {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw new UsageError("INVALID_ARGUMENT", `the telemetry cannot be written as JSON: ${(error as Error).message}`);
  }
  if (text === undefined) throw new UsageError("INVALID_ARGUMENT", "the telemetry cannot be written as JSON (undefined or a function)");
  return { body: utf8Encode(text), properties: { "$.ct": "application/json", "$.ce": "utf-8" } };
}
