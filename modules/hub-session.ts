/**
 * The IoT Hub session, sans-I/O like the registration machine: connect to the assigned hub with
 * a hub SAS token, publish telemetry at QoS 1 and match each PUBACK, renew the token before it
 * expires by reconnecting, keep a bounded outgoing queue, and turn the hub's answers into what
 * the troubleshooting table asks:
 *
 *   CONNACK 4 or 5 (bad token, disabled or deleted device)  → re-provision: the cached identity
 *                                                              is no longer good
 *   CONNACK 3, a dropped connection, a timeout              → retry the same hub with backoff, at
 *                                                              least 5 s apart, for a window; then
 *                                                              re-provision
 *   CONNACK 1 or 2                                          → stop: the firmware is wrong
 *
 * Time comes in with each event; the session reports its next deadline as one `set-timer`.
 */
import type { CryptoPort } from "./crypto.js";
import { copyDefined, DpsError, UsageError, excerpt, type ErrorCode } from "./errors.js";
import { urlEncode, utf8Encode } from "./encoding.js";
import type { MqttConnectOptions, RandomSource, TransportFault } from "./ports.js";
import { retryDelayMs, retryPolicy, type RetryPolicy } from "./retry-policy.js";
import { hubSasToken, sasExpiry } from "./sas.js";

export const HUB_API_VERSION = "2021-04-12";
export const HUB_MQTT_PORT = 8883;
/** IoT Hub's own limit for a device-to-cloud message. */
export const HUB_MAX_MESSAGE_BYTES = 256 * 1024;

export type HubConnackAction = "retry" | "reprovision" | "fail";

export interface HubPolicy {
  /** What each CONNACK refusal leads to ("default" for codes not listed). */
  readonly connack: Readonly<Record<string, HubConnackAction>>;
  /** Backoff between reconnects to the same hub; never less than 5 s apart (Azure's guidance). */
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly jitter: number;
  /** How long to keep retrying the cached hub before going back to DPS. */
  readonly retryWindowMs: number;
  /** CONNECT to CONNACK. */
  readonly connectTimeoutMs: number;
  /** PUBLISH to PUBACK; a late PUBACK means the link is dead: reconnect. */
  readonly ackTimeoutMs: number;
}

export const defaultHubPolicy: HubPolicy = Object.freeze({
  connack: Object.freeze({ "1": "fail", "2": "fail", "3": "retry", "4": "reprovision", "5": "reprovision", default: "retry" }) as Readonly<Record<string, HubConnackAction>>,
  initialDelayMs: 5_000,
  maxDelayMs: 120_000,
  jitter: 0.5,
  retryWindowMs: 10 * 60_000,
  connectTimeoutMs: 30_000,
  ackTimeoutMs: 30_000,
});

/** Azure's floor between reconnects after a hub failure. */
export const HUB_MIN_RETRY_DELAY_MS = 5_000;

export interface HubSessionConfig {
  readonly hubHost: string;
  readonly deviceId: string;
  /** The device key (base64): individual, or derived from the group key. */
  readonly symmetricKey: string;
  readonly port?: number;
  /** Default 3600 s. */
  readonly tokenLifetimeSeconds?: number;
  /** Reconnect with a fresh token this long before the current one expires; default 10% of the lifetime, at least 60 s. */
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
  readonly policy?: Partial<HubPolicy>;
}

export interface HubSessionDeps {
  readonly crypto: CryptoPort;
  readonly random: RandomSource;
}

export type HubEvent =
  | { readonly kind: "start" }
  | { readonly kind: "connack"; readonly returnCode: number }
  | { readonly kind: "puback"; readonly tag: number }
  | { readonly kind: "message"; readonly topic: string; readonly payload: Uint8Array }
  | { readonly kind: "closed"; readonly fault: TransportFault }
  | { readonly kind: "timer" }
  | { readonly kind: "stop" };

export interface HubStatus {
  readonly state: "connecting" | "connected" | "renewing" | "retrying" | "refused" | "reprovision" | "failed" | "stopped";
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
  | { readonly kind: "reprovision"; readonly reason: HubFailure }
  | { readonly kind: "failed"; readonly error: HubFailure }
  | { readonly kind: "stopped"; readonly dropped: number };

export type HubCommand =
  | { readonly kind: "connect"; readonly options: MqttConnectOptions }
  | { readonly kind: "subscribe"; readonly topic: string; readonly qos: 1 }
  | { readonly kind: "publish"; readonly tag: number; readonly topic: string; readonly payload: Uint8Array; readonly qos: 1 }
  | { readonly kind: "close" }
  | { readonly kind: "set-timer"; readonly delayMs: number }
  | { readonly kind: "clear-timer" }
  | { readonly kind: "status"; readonly status: HubStatus }
  | { readonly kind: "sent"; readonly tag: number }
  | { readonly kind: "received"; readonly topic: string; readonly payload: Uint8Array }
  | { readonly kind: "done"; readonly outcome: HubOutcome };

export type HubPhase = "idle" | "connecting" | "connected" | "waiting" | "reprovision" | "failed" | "stopped";

interface Outgoing {
  readonly tag: number;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly properties?: MessageProperties;
  /** PUBACK deadline while in flight. */
  deadline?: number;
}

/** Application properties of a telemetry message, sent URL-encoded after the topic. */
export type MessageProperties = Readonly<Record<string, string>>;

export class HubSession {
  #config: HubSessionConfig;
  #deps: HubSessionDeps;
  #policy: HubPolicy;
  #backoff: RetryPolicy;
  #out: HubCommand[] = [];
  #phase: HubPhase = "idle";
  #now = 0;
  #attempt = 0;
  #failingSince: number | undefined;
  #connectDeadline: number | undefined;
  #retryAt: number | undefined;
  #renewAt: number | undefined;
  #timerAt: number | undefined;
  #linkOpen = false;
  #waiting: Outgoing[] = [];
  #inFlight: Outgoing[] = [];
  #nextTag = 1;
  #maxQueue: number;
  #maxInFlight: number;
  #maxMessageBytes: number;
  #topic: string;

  /** @throws UsageError INVALID_ARGUMENT for a bad configuration. */
  constructor(config: HubSessionConfig, deps: HubSessionDeps) {
    const check = (ok: boolean, message: string): void => {
      if (!ok) throw new UsageError("INVALID_ARGUMENT", message);
    };
    check(typeof config.hubHost === "string" && /^[A-Za-z0-9.\-]{1,253}$/.test(config.hubHost), "hubHost must be a host name such as contoso.azure-devices.net");
    check(typeof config.deviceId === "string" && config.deviceId.length > 0 && config.deviceId.length <= 128, "deviceId must be 1 to 128 characters");
    check(typeof config.symmetricKey === "string" && config.symmetricKey.length > 0, "symmetricKey is required");
    this.#maxQueue = config.maxQueue ?? 16;
    this.#maxInFlight = config.maxInFlight ?? Math.min(4, this.#maxQueue);
    this.#maxMessageBytes = config.maxMessageBytes ?? 16 * 1024;
    check(Number.isInteger(this.#maxQueue) && this.#maxQueue >= 1 && this.#maxQueue <= 1024, "maxQueue must be an integer in 1..1024");
    check(Number.isInteger(this.#maxInFlight) && this.#maxInFlight >= 1 && this.#maxInFlight <= this.#maxQueue, "maxInFlight must be an integer in 1..maxQueue");
    check(this.#maxMessageBytes >= 1 && this.#maxMessageBytes <= HUB_MAX_MESSAGE_BYTES, `maxMessageBytes must be within 1..${HUB_MAX_MESSAGE_BYTES}`);
    this.#config = config;
    this.#deps = deps;
    this.#policy = { ...defaultHubPolicy, ...config.policy };
    check(this.#policy.initialDelayMs >= HUB_MIN_RETRY_DELAY_MS, `hub retries must be at least ${HUB_MIN_RETRY_DELAY_MS} ms apart (Azure's guidance)`);
    this.#backoff = hubBackoff(this.#policy);
    this.#topic = `devices/${urlEncode(config.deviceId)}/messages/events/`;
  }

  get phase(): HubPhase {
    return this.#phase;
  }

  /** Messages waiting or awaiting PUBACK. */
  get queued(): number {
    return this.#waiting.length + this.#inFlight.length;
  }

  /**
   * Queues a telemetry message; returns its tag (reported back in a `sent` command on PUBACK)
   * and the commands to perform now.
   * @throws UsageError QUEUE_FULL when `maxQueue` messages are waiting or unacknowledged;
   *   OVERSIZE when the body exceeds `maxMessageBytes`; STOPPED after the session ended.
   */
  send(body: Uint8Array, properties: MessageProperties | undefined, now: number): { tag: number; commands: HubCommand[] } {
    if (this.#phase === "stopped" || this.#phase === "failed" || this.#phase === "reprovision") {
      throw new UsageError("STOPPED", `the hub session has ended (${this.#phase}); messages can no longer be queued on it`);
    }
    if (body.length > this.#maxMessageBytes) {
      throw new UsageError("OVERSIZE", `the message is ${body.length} bytes; this session accepts at most ${this.#maxMessageBytes} (maxMessageBytes)`);
    }
    if (this.queued >= this.#maxQueue) {
      throw new UsageError(
        "QUEUE_FULL",
        `the outgoing queue is full: ${this.#maxQueue} messages are waiting for the hub to acknowledge them; wait for a "sent" event, or raise maxQueue`,
      );
    }
    this.#begin(now);
    const tag = this.#nextTag++;
    this.#waiting.push({ tag, topic: this.#topic + encodeProperties(properties), payload: body, properties });
    if (this.#phase === "connected") this.#flush();
    return { tag, commands: this.#end() };
  }

  /**
   * Feeds one event that happened at `now`; returns the commands to perform.
   * @throws UsageError ILLEGAL_EVENT for an event the host cannot legitimately deliver now.
   */
  handle(event: HubEvent, now: number): HubCommand[] {
    const ended = this.#phase === "stopped" || this.#phase === "failed" || this.#phase === "reprovision";
    if (event.kind === "start") {
      if (this.#phase !== "idle") throw new UsageError("ILLEGAL_EVENT", `hub session: event "start" cannot happen in phase "${this.#phase}"`);
    } else if (ended) {
      if (event.kind === "timer") throw new UsageError("ILLEGAL_EVENT", `hub session: event "timer" in phase "${this.#phase}" but no timer is set`);
      return [];
    } else if (this.#phase === "idle" && event.kind !== "stop") {
      throw new UsageError("ILLEGAL_EVENT", `hub session: event "${event.kind}" cannot happen before "start"`);
    }
    if (event.kind === "timer" && this.#timerAt === undefined) {
      throw new UsageError("ILLEGAL_EVENT", `hub session: event "timer" in phase "${this.#phase}" but no timer is set`);
    }
    this.#begin(now);
    if (event.kind === "timer") this.#timerAt = undefined;
    switch (event.kind) {
      case "start":
        this.#connect("connecting");
        break;
      case "connack":
        this.#onConnack(event.returnCode);
        break;
      case "puback":
        this.#onPuback(event.tag);
        break;
      case "message":
        if (this.#phase === "connected") this.#out.push({ kind: "received", topic: event.topic, payload: event.payload });
        break;
      case "closed":
        this.#linkOpen = false;
        if (this.#phase === "connecting" || this.#phase === "connected") {
          this.#lost(event.fault.kind, `the hub connection ended (${event.fault.kind}): ${excerpt(event.fault.message, 120)}`);
        }
        break;
      case "timer":
        this.#onTimer();
        break;
      case "stop":
        this.#stop();
        break;
    }
    return this.#end();
  }

  #begin(now: number): void {
    this.#now = now;
    this.#out = [];
  }

  #end(): HubCommand[] {
    const ended = this.#phase === "stopped" || this.#phase === "failed" || this.#phase === "reprovision";
    let next: number | undefined;
    if (!ended) {
      const times = [this.#connectDeadline, this.#retryAt, this.#renewAt, ...this.#inFlight.map((m) => m.deadline)];
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
    const lifetime = this.#config.tokenLifetimeSeconds ?? 3600;
    let password: string;
    let expiry: number;
    try {
      expiry = sasExpiry(this.#now, lifetime);
      password = hubSasToken(this.#deps.crypto, {
        hubHost: this.#config.hubHost,
        deviceId: this.#config.deviceId,
        symmetricKey: this.#config.symmetricKey,
        expiry,
      });
    } catch (error) {
      if (error instanceof DpsError) return this.#finish({ kind: "failed", error: { code: error.code, message: error.message } });
      throw error;
    }
    const renewBefore = this.#config.renewBeforeSeconds ?? Math.max(60, Math.floor(lifetime / 10));
    this.#renewAt = Math.max(this.#now + 1000, expiry * 1000 - renewBefore * 1000);
    let username = `${this.#config.hubHost}/${this.#config.deviceId}/?api-version=${HUB_API_VERSION}`;
    if (this.#config.userAgent) username += `&DeviceClientType=${urlEncode(this.#config.userAgent)}`;
    if (this.#config.modelId) username += `&model-id=${urlEncode(this.#config.modelId)}`;
    this.#phase = "connecting";
    this.#retryAt = undefined;
    this.#connectDeadline = this.#now + this.#policy.connectTimeoutMs;
    this.#status({ state, queued: this.queued });
    this.#linkOpen = true;
    this.#out.push({
      kind: "connect",
      options: {
        host: this.#config.hubHost,
        port: this.#config.port ?? HUB_MQTT_PORT,
        clientId: this.#config.deviceId,
        username,
        password,
        keepAliveSeconds: this.#config.keepAliveSeconds ?? 60,
        cleanSession: true,
      },
    });
  }

  #onConnack(code: number): void {
    if (this.#phase !== "connecting") {
      return this.#lost("protocol", `the hub sent a CONNACK on an open session`);
    }
    this.#connectDeadline = undefined;
    if (code === 0) {
      this.#phase = "connected";
      this.#attempt = 0;
      this.#failingSince = undefined;
      this.#status({ state: "connected", queued: this.queued });
      this.#flush();
      return;
    }
    this.#close();
    const action = this.#policy.connack[String(code)] ?? this.#policy.connack.default ?? "retry";
    const message = `the hub ${this.#config.hubHost} refused the connection with CONNACK ${code} (${connackText(code)})`;
    if (action === "reprovision") {
      return this.#finish({ kind: "reprovision", reason: { code: "HUB_REFUSED", message: `${message}: the cached identity is no longer good, provisioning again`, connack: code } }, "refused");
    }
    if (action === "fail") {
      return this.#finish({ kind: "failed", error: { code: "HUB_REFUSED", message: `${message}: retrying cannot help`, connack: code } });
    }
    this.#retryLater(`connack-${code}`, message, code);
  }

  #onPuback(tag: number): void {
    const index = this.#inFlight.findIndex((m) => m.tag === tag);
    if (index < 0) return; // a duplicate or a PUBACK from before a reconnect
    this.#inFlight.splice(index, 1);
    this.#out.push({ kind: "sent", tag });
    this.#flush();
  }

  #onTimer(): void {
    const now = this.#now;
    if (this.#connectDeadline !== undefined && now >= this.#connectDeadline) {
      this.#connectDeadline = undefined;
      this.#close();
      return this.#lost("timeout", "no CONNACK from the hub within the connect timeout");
    }
    if (this.#inFlight.some((m) => m.deadline !== undefined && now >= m.deadline)) {
      this.#close();
      return this.#lost("timeout", "no PUBACK from the hub within the acknowledgement timeout");
    }
    if (this.#retryAt !== undefined && now >= this.#retryAt) {
      this.#retryAt = undefined;
      return this.#connect("connecting");
    }
    if (this.#renewAt !== undefined && now >= this.#renewAt && this.#phase === "connected") {
      // The hub drops a session whose token expires: reconnect with a fresh one first.
      this.#close();
      this.#requeueInFlight();
      return this.#connect("renewing");
    }
  }

  #flush(): void {
    while (this.#inFlight.length < this.#maxInFlight && this.#waiting.length > 0) {
      const m = this.#waiting.shift()!;
      m.deadline = this.#now + this.#policy.ackTimeoutMs;
      this.#inFlight.push(m);
      this.#out.push({ kind: "publish", tag: m.tag, topic: m.topic, payload: m.payload, qos: 1 });
    }
  }

  #requeueInFlight(): void {
    // At least once: what the hub did not acknowledge goes out again after the reconnect.
    for (let i = 0; i < this.#inFlight.length; i++) this.#inFlight[i].deadline = undefined;
    this.#waiting.unshift(...this.#inFlight);
    this.#inFlight = [];
  }

  #lost(fault: string, message: string): void {
    this.#linkOpen = false;
    this.#connectDeadline = undefined;
    this.#requeueInFlight();
    this.#retryLater(fault, message);
  }

  #retryLater(fault: string, message: string, connack?: number): void {
    this.#phase = "waiting";
    this.#renewAt = undefined;
    if (this.#failingSince === undefined) this.#failingSince = this.#now;
    if (this.#now - this.#failingSince >= this.#policy.retryWindowMs) {
      return this.#finish({
        kind: "reprovision",
        reason: {
          code: "HUB_REFUSED",
          message: `${message}; the hub has been unreachable for ${Math.round((this.#now - this.#failingSince) / 1000)} s: asking DPS for an assignment again`,
          connack,
        },
      });
    }
    this.#attempt++;
    const delayMs = Math.max(HUB_MIN_RETRY_DELAY_MS, retryDelayMs(this.#backoff, this.#attempt, this.#deps.random()));
    this.#retryAt = this.#now + delayMs;
    const status: { state: "retrying"; delayMs: number; fault: string; message: string; queued: number; connack?: number } = { state: "retrying", delayMs, fault, message, queued: this.queued };
    if (connack !== undefined) status.connack = connack;
    this.#status(status);
  }

  #stop(): void {
    this.#close();
    this.#clearTimer();
    const dropped = this.queued;
    this.#waiting = [];
    this.#inFlight = [];
    this.#phase = "stopped";
    this.#status({ state: "stopped" });
    this.#out.push({ kind: "done", outcome: { kind: "stopped", dropped } });
  }

  #finish(outcome: HubOutcome, reprovisionState: "refused" | "reprovision" = "reprovision"): void {
    this.#close();
    this.#clearTimer();
    this.#phase = outcome.kind === "reprovision" ? "reprovision" : outcome.kind === "failed" ? "failed" : "stopped";
    if (outcome.kind === "failed") this.#status({ state: "failed", message: outcome.error.message, connack: outcome.error.connack });
    if (outcome.kind === "reprovision") this.#status({ state: reprovisionState, message: outcome.reason.message, connack: outcome.reason.connack });
    this.#out.push({ kind: "done", outcome });
  }

  /** Ends the one timer before a final outcome, so that `done` is the last command. */
  #clearTimer(): void {
    if (this.#timerAt === undefined) return;
    this.#timerAt = undefined;
    this.#out.push({ kind: "clear-timer" });
  }

  #close(): void {
    if (this.#linkOpen) this.#out.push({ kind: "close" });
    this.#linkOpen = false;
  }

  #status(fields: Omit<HubStatus, "attempt">): void {
    const s: Record<string, unknown> = { state: fields.state, attempt: this.#attempt };
    copyDefined(s, fields);
    this.#out.push({ kind: "status", status: s as unknown as HubStatus });
  }

  /** Messages still waiting or unacknowledged, oldest first (for a caller that must keep them). */
  pending(): { tag: number; payload: Uint8Array; properties?: MessageProperties }[] {
    return [...this.#inFlight, ...this.#waiting].map((m) => ({ tag: m.tag, payload: m.payload, properties: m.properties }));
  }
}

/** The backoff table of a hub policy, built once per distinct policy (a fleet shares one). */
const backoffPolicies = new Map<string, RetryPolicy>();
function hubBackoff(p: HubPolicy): RetryPolicy {
  const key = `${p.initialDelayMs}/${p.maxDelayMs}/${p.jitter}`;
  let policy = backoffPolicies.get(key);
  if (!policy) {
    policy = retryPolicy({ backoff: { initialMs: p.initialDelayMs, maxMs: Math.max(p.maxDelayMs, p.initialDelayMs), multiplier: 2, jitter: p.jitter } });
    if (backoffPolicies.size < 16) backoffPolicies.set(key, policy);
  }
  return policy;
}

/** `key=value&...`, URL-encoded, as IoT Hub reads message properties from the topic. */
export function encodeProperties(properties: MessageProperties | undefined): string {
  if (!properties) return "";
  const parts: string[] = [];
  const keys = Object.keys(properties);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const v = properties[k];
    if (typeof v !== "string") throw new UsageError("INVALID_ARGUMENT", `message property "${excerpt(k, 40)}" must be a string`);
    parts.push(`${urlEncode(k)}=${urlEncode(v)}`);
  }
  return parts.join("&");
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

function connackText(code: number): string {
  return ["accepted", "unacceptable protocol version", "identifier rejected", "server unavailable", "bad user name or password", "not authorized"][code] ?? "unknown return code";
}

