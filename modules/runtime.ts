/**
 * The runtime: the one object a firmware project creates. It wires the registration machine, the
 * credential cache and the hub session to a host's ports, and reports what happens as events.
 *
 *   const device = new DeviceRuntime({ idScope, registrationId, symmetricKey }, ports, onEvent);
 *   device.start();                      // warm start from the cache, or provision with DPS
 *   device.send({ temperature: 21.5 });  // queued until the hub session is up; QoS 1
 *   device.reprovision();                // ask DPS again (falls back to the cache on a DPS 5xx)
 *   device.stop();
 *
 * Configuration names follow the Azure SDKs: idScope, registrationId, symmetricKey (individual
 * enrollment) or groupKey (group enrollment; the device key is derived), globalEndpoint, payload.
 */
import type { CryptoPort } from "./crypto.js";
import { CredentialCache, type CachedAssignment } from "./credential-cache.js";
import { DPS_GLOBAL_ENDPOINT, type RegistrationState } from "./dps-protocol.js";
import { DpsError, UsageError, type ErrorCode } from "./errors.js";
import { utf8Encode } from "./encoding.js";
import type { FlashPort } from "./flash.js";
import {
  HubSession,
  jsonMessage,
  type HubCommand,
  type HubEvent,
  type HubPolicy,
  type HubStatus,
  type MessageProperties,
} from "./hub-session.js";
import type { Clock, HttpsPort, LogPort, MqttConnector, MqttSession, RandomSource, SecureRandom, TimerPort } from "./ports.js";
import {
  RegistrationMachine,
  type RegistrationCommand,
  type RegistrationEvent,
  type RegistrationStatus,
} from "./registration.js";
import { retryPolicy, type RetryPolicy } from "./retry-policy.js";
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
  /** IoT Plug and Play model id announced to the hub. */
  readonly modelId?: string;
  readonly userAgent?: string;
  /** SAS token lifetime for DPS and the hub; default 3600 s. */
  readonly tokenLifetimeSeconds?: number;
  readonly resourceForm?: ResourceForm;
  /** Overrides of the DPS retry policy (see retry-policy.ts). */
  readonly retryPolicy?: Parameters<typeof retryPolicy>[0];
  /** Pipeline SUBSCRIBE and the register behind CONNECT (default true). */
  readonly pipeline?: boolean;
  readonly hub?: {
    readonly port?: number;
    readonly keepAliveSeconds?: number;
    readonly maxQueue?: number;
    readonly maxInFlight?: number;
    readonly maxMessageBytes?: number;
    readonly policy?: Partial<HubPolicy>;
  };
  /** Where the two cache slots live in the flash port; default sectors 0 and 1. */
  readonly cache?: { readonly firstSector?: number; readonly sectorsPerSlot?: number };
}

export interface RuntimePorts {
  readonly mqtt: MqttConnector;
  /** For the registration status lookup; without it a DPS 5xx is followed by a new register. */
  readonly https?: HttpsPort;
  readonly timers: TimerPort;
  readonly clock: Clock;
  readonly random: RandomSource;
  readonly secureRandom: SecureRandom;
  /** HMAC-SHA256: the host's native one, or `portableCrypto` from sha256.ts where it has none. */
  readonly crypto: CryptoPort;
  /** Where the assignment is cached; without it every start provisions with DPS. */
  readonly flash?: FlashPort;
  readonly log?: LogPort;
}

export type RuntimeState = "idle" | "provisioning" | "connecting" | "connected" | "failed" | "stopped";

export interface Assignment {
  readonly assignedHub: string;
  readonly deviceId: string;
  readonly substatus?: string;
  /** Where it came from on this start. */
  readonly source: "cache" | "dps";
}

export type RuntimeEvent =
  | { readonly source: "runtime"; readonly state: RuntimeState; readonly error?: { readonly code: ErrorCode; readonly message: string } }
  | { readonly source: "cache"; readonly state: "loaded" | "empty" | "saved" | "invalidated" | "unavailable"; readonly detail?: string; readonly rejected?: readonly string[] }
  | { readonly source: "dps"; readonly status: RegistrationStatus }
  | { readonly source: "hub"; readonly status: HubStatus; readonly hub: string }
  | { readonly source: "assignment"; readonly assignment: Assignment; readonly registrationState?: RegistrationState }
  | { readonly source: "telemetry"; readonly state: "sent"; readonly id: number }
  | { readonly source: "message"; readonly topic: string; readonly payload: Uint8Array };

export type RuntimeListener = (event: RuntimeEvent) => void;

interface Backlog {
  readonly id: number;
  readonly body: Uint8Array;
  readonly properties?: MessageProperties;
}

export class DeviceRuntime {
  #config: RuntimeConfig;
  #ports: RuntimePorts;
  #crypto: CryptoPort;
  #listener: RuntimeListener | undefined;
  #deviceKey: string;
  #dpsPolicy: RetryPolicy;
  #state: RuntimeState = "idle";
  #cache: CredentialCache | undefined;
  #assignment: Assignment | undefined;
  #dps: RegistrationMachine | undefined;
  #hub: HubSession | undefined;
  #link: { session?: MqttSession; generation: number; packets: Map<number, number> } = { generation: 0, packets: new Map() };
  #timer: unknown;
  #timerOwner: "dps" | "hub" | undefined;
  #abortLookup: (() => void) | undefined;
  #backlog: Backlog[] = [];
  #tagToId = new Map<number, number>();
  #nextId = 1;
  #busy = false;
  #pendingEvents: (() => void)[] = [];

  /**
   * @throws UsageError INVALID_ARGUMENT for a configuration that could never work (no key, both
   *   keys, a bad ID scope or registration id); MALFORMED_BASE64 for a key that is not base64.
   */
  constructor(config: RuntimeConfig, ports: RuntimePorts, listener?: RuntimeListener) {
    if (!config || typeof config !== "object") throw new UsageError("INVALID_ARGUMENT", "DeviceRuntime needs a configuration object");
    if (!ports || !ports.mqtt || !ports.timers || !ports.crypto || typeof ports.clock !== "function" || typeof ports.random !== "function" || typeof ports.secureRandom !== "function") {
      throw new UsageError("INVALID_ARGUMENT", "DeviceRuntime needs the ports mqtt, timers, clock, random, secureRandom and crypto");
    }
    if ((config.symmetricKey === undefined) === (config.groupKey === undefined)) {
      throw new UsageError("INVALID_ARGUMENT", "give exactly one of symmetricKey (individual enrollment) and groupKey (group enrollment)");
    }
    this.#config = config;
    this.#ports = ports;
    this.#crypto = ports.crypto;
    this.#listener = listener;
    this.#deviceKey = config.groupKey !== undefined ? deriveDeviceKey(this.#crypto, config.groupKey, config.registrationId) : config.symmetricKey!;
    this.#dpsPolicy = retryPolicy(config.retryPolicy ?? {});
    // Check the DPS and hub sides of the configuration now, before any I/O.
    this.#newRegistration(false);
    this.#newHubSession({ assignedHub: "check.azure-devices.net", deviceId: config.registrationId, source: "dps" });
    if (ports.flash) {
      this.#cache = new CredentialCache({
        flash: ports.flash,
        random: ports.secureRandom,
        deviceKey: this.#deviceKey,
        registrationId: config.registrationId,
        crypto: this.#crypto,
        clock: ports.clock,
        firstSector: config.cache?.firstSector,
        sectorsPerSlot: config.cache?.sectorsPerSlot,
      });
    }
  }

  get state(): RuntimeState {
    return this.#state;
  }

  /** The hub assignment in use, once known. */
  get assignment(): Assignment | undefined {
    return this.#assignment;
  }

  /**
   * Starts: a good cached assignment goes straight to its hub; otherwise DPS is asked.
   * @throws UsageError ILLEGAL_EVENT when already started.
   */
  start(): void {
    if (this.#state !== "idle") throw new UsageError("ILLEGAL_EVENT", `start() was called in state "${this.#state}"; it can be called once`);
    this.#run(() => {
      const cached = this.#loadCache();
      if (cached) {
        this.#assignment = { assignedHub: cached.assignedHub, deviceId: cached.deviceId, substatus: cached.substatus, source: "cache" };
        this.#emit({ source: "assignment", assignment: this.#assignment });
        this.#startHub();
      } else {
        this.#startDps(false);
      }
    });
  }

  /**
   * Queues a telemetry message (an object or a string is sent as JSON or UTF-8 text); returns its
   * id, reported in a `telemetry sent` event when the hub acknowledges it.
   * @throws UsageError QUEUE_FULL, OVERSIZE, STOPPED, INVALID_ARGUMENT.
   */
  send(message: Uint8Array | string | object, properties?: MessageProperties): number {
    if (this.#state === "stopped") throw new UsageError("STOPPED", "send() after stop()");
    let body: Uint8Array;
    let props: MessageProperties | undefined = properties;
    if (message instanceof Uint8Array) body = message;
    else if (typeof message === "string") body = utf8Encode(message);
    else {
      const json = jsonMessage(message);
      body = json.body;
      props = { ...json.properties, ...properties };
    }
    const id = this.#nextId++;
    if (this.#hub && this.#hub.phase !== "reprovision" && this.#hub.phase !== "failed" && this.#hub.phase !== "stopped") {
      const hub = this.#hub;
      let commands: HubCommand[] = [];
      const { tag, commands: c } = hub.send(body, props, this.#ports.clock());
      commands = c;
      this.#tagToId.set(tag, id);
      this.#run(() => this.#doHub(commands));
      return id;
    }
    const limit = this.#config.hub?.maxQueue ?? 16;
    if (this.#backlog.length >= limit) {
      throw new UsageError("QUEUE_FULL", `the outgoing queue is full: ${limit} messages wait for the hub connection; wait for "sent" events, or raise hub.maxQueue`);
    }
    const maxBytes = this.#config.hub?.maxMessageBytes ?? 16 * 1024;
    if (body.length > maxBytes) throw new UsageError("OVERSIZE", `the message is ${body.length} bytes; at most ${maxBytes} (hub.maxMessageBytes)`);
    this.#backlog.push({ id, body, properties: props });
    return id;
  }

  /**
   * Asks DPS for an assignment again, now. While DPS answers 5xx the cached hub stays in use.
   * @throws UsageError ILLEGAL_EVENT before start or after stop.
   */
  reprovision(): void {
    if (this.#state === "idle" || this.#state === "stopped") throw new UsageError("ILLEGAL_EVENT", `reprovision() in state "${this.#state}"`);
    this.#run(() => {
      this.#endHub();
      this.#endDps();
      this.#startDps(this.#assignment !== undefined);
    });
  }

  /** Stops everything; idempotent. Messages not yet acknowledged are dropped. */
  stop(): void {
    if (this.#state === "stopped") return;
    this.#run(() => {
      this.#endHub();
      this.#endDps();
      this.#clearTimer();
      this.#closeLink();
      this.#backlog = [];
      this.#cache?.close();
      this.#setState("stopped");
    });
  }

  // -------------------------------------------------------------------------------------------
  // Cache

  #loadCache(): CachedAssignment | undefined {
    if (!this.#cache) return undefined;
    try {
      const result = this.#cache.load();
      const rejected = result.rejected.filter((r) => r.reason !== "empty").map((r) => `slot ${r.slot}: ${r.reason} (${r.detail})`);
      const a = result.assignment;
      if (a && (a.idScope === undefined || a.idScope === this.#config.idScope)) {
        this.#emit({ source: "cache", state: "loaded", detail: `slot ${result.slot}, sequence ${result.sequence}, hub ${a.assignedHub}`, rejected });
        return a;
      }
      this.#emit({ source: "cache", state: "empty", detail: a ? "the cached assignment is for another ID scope" : "no valid record", rejected });
    } catch (error) {
      this.#emit({ source: "cache", state: "unavailable", detail: describeError(error) });
    }
    return undefined;
  }

  #saveCache(a: Assignment): void {
    if (!this.#cache) return;
    try {
      const r = this.#cache.save({ assignedHub: a.assignedHub, deviceId: a.deviceId, registrationId: this.#config.registrationId, substatus: a.substatus, idScope: this.#config.idScope });
      this.#emit({ source: "cache", state: "saved", detail: `slot ${r.slot}, sequence ${r.sequence}` });
    } catch (error) {
      // The device works on without a cache; the next start provisions again.
      this.#emit({ source: "cache", state: "unavailable", detail: describeError(error) });
    }
  }

  #invalidateCache(): void {
    if (!this.#cache) return;
    try {
      this.#cache.invalidate();
      this.#emit({ source: "cache", state: "invalidated" });
    } catch (error) {
      this.#emit({ source: "cache", state: "unavailable", detail: describeError(error) });
    }
  }

  // -------------------------------------------------------------------------------------------
  // DPS

  #newRegistration(hasCachedAssignment: boolean): RegistrationMachine {
    const c = this.#config;
    const host = c.globalEndpoint ?? DPS_GLOBAL_ENDPOINT;
    return new RegistrationMachine(
      {
        idScope: c.idScope,
        registrationId: c.registrationId,
        symmetricKey: this.#deviceKey,
        host,
        port: c.dpsPort,
        lookup: this.#ports.https && c.statusLookup !== false ? { host, port: c.lookupPort ?? 443 } : undefined,
        payload: c.payload,
        tokenLifetimeSeconds: c.tokenLifetimeSeconds,
        resourceForm: c.resourceForm,
        userAgent: c.userAgent,
        pipeline: c.pipeline,
        hasCachedAssignment,
        policy: this.#dpsPolicy,
      },
      { crypto: this.#crypto, random: this.#ports.random },
    );
  }

  #startDps(hasCachedAssignment: boolean): void {
    this.#setState("provisioning");
    this.#dps = this.#newRegistration(hasCachedAssignment);
    this.#feedDps({ kind: "start" });
  }

  #feedDps(event: RegistrationEvent): void {
    const machine = this.#dps;
    if (!machine) return;
    this.#doDps(machine, machine.handle(event, this.#ports.clock()));
  }

  #doDps(machine: RegistrationMachine, commands: RegistrationCommand[]): void {
    for (let i = 0; i < commands.length; i++) {
      const command = commands[i];
      if (this.#dps !== machine) return;
      switch (command.kind) {
        case "connect":
          this.#openLink(command.options, (e) => this.#feedDps(e));
          break;
        case "subscribe":
          this.#link.session?.subscribe(command.topic, command.qos);
          break;
        case "publish":
          this.#link.session?.publish(command.topic, command.payload, command.qos);
          break;
        case "close":
          this.#closeLink();
          break;
        case "set-timer":
          this.#setTimer("dps", command.delayMs);
          break;
        case "clear-timer":
          this.#clearTimer();
          break;
        case "lookup": {
          const https = this.#ports.https!;
          let settled = false;
          this.#abortLookup = https.request(
            command.request,
            (response) => {
              if (settled || this.#dps !== machine) return;
              settled = true;
              this.#abortLookup = undefined;
              this.#run(() => this.#feedDps({ kind: "lookup-response", response }));
            },
            (fault) => {
              if (settled || this.#dps !== machine) return;
              settled = true;
              this.#abortLookup = undefined;
              this.#run(() => this.#feedDps({ kind: "lookup-failed", fault }));
            },
          );
          break;
        }
        case "cancel-lookup":
          this.#abortLookup?.();
          this.#abortLookup = undefined;
          break;
        case "status":
          this.#emit({ source: "dps", status: command.status });
          break;
        case "done":
          this.#dps = undefined;
          this.#onDpsDone(command.outcome);
          break;
      }
    }
  }

  #onDpsDone(outcome: Extract<RegistrationCommand, { kind: "done" }>["outcome"]): void {
    if (outcome.kind === "assigned") {
      const s = outcome.registrationState;
      this.#assignment = { assignedHub: s.assignedHub!, deviceId: s.deviceId!, substatus: s.substatus, source: "dps" };
      this.#emit({ source: "assignment", assignment: this.#assignment, registrationState: s });
      this.#saveCache(this.#assignment);
      this.#startHub();
    } else if (outcome.kind === "fallback" && this.#assignment) {
      this.#startHub();
    } else if (outcome.kind === "failed") {
      this.#setState("failed", outcome.error);
    } else if (outcome.kind === "fallback") {
      this.#setState("failed", { code: outcome.reason.code, message: outcome.reason.message });
    }
  }

  #endDps(): void {
    const machine = this.#dps;
    if (!machine) return;
    const commands = machine.handle({ kind: "stop" }, this.#ports.clock());
    // Perform the closing commands, but not the outcome: the caller decides what comes next.
    this.#dps = undefined;
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      if (c.kind === "close") this.#closeLink();
      else if (c.kind === "clear-timer") this.#clearTimer();
      else if (c.kind === "cancel-lookup") {
        this.#abortLookup?.();
        this.#abortLookup = undefined;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Hub

  #newHubSession(a: Assignment): HubSession {
    const c = this.#config;
    return new HubSession(
      {
        hubHost: a.assignedHub,
        deviceId: a.deviceId,
        symmetricKey: this.#deviceKey,
        port: c.hub?.port,
        tokenLifetimeSeconds: c.tokenLifetimeSeconds,
        keepAliveSeconds: c.hub?.keepAliveSeconds,
        maxQueue: c.hub?.maxQueue,
        maxInFlight: c.hub?.maxInFlight,
        maxMessageBytes: c.hub?.maxMessageBytes,
        modelId: c.modelId,
        userAgent: c.userAgent,
        policy: c.hub?.policy,
      },
      { crypto: this.#crypto, random: this.#ports.random },
    );
  }

  #startHub(): void {
    const a = this.#assignment!;
    this.#setState("connecting");
    this.#hub = this.#newHubSession(a);
    this.#feedHub({ kind: "start" });
    // Messages queued while there was no hub session go out now, oldest first.
    const backlog = this.#backlog;
    this.#backlog = [];
    for (let i = 0; i < backlog.length; i++) {
      const m = backlog[i];
      const hub = this.#hub;
      if (!hub) break;
      const { tag, commands } = hub.send(m.body, m.properties, this.#ports.clock());
      this.#tagToId.set(tag, m.id);
      this.#doHub(commands);
    }
  }

  #feedHub(event: HubEvent): void {
    const hub = this.#hub;
    if (!hub) return;
    this.#doHub(hub.handle(event, this.#ports.clock()));
  }

  #doHub(commands: HubCommand[]): void {
    const hub = this.#hub;
    for (let i = 0; i < commands.length; i++) {
      const command = commands[i];
      if (this.#hub !== hub) return;
      switch (command.kind) {
        case "connect":
          this.#openLink(command.options, (e) => this.#onHubLinkEvent(e));
          break;
        case "subscribe":
          this.#link.session?.subscribe(command.topic, command.qos);
          break;
        case "publish": {
          const packetId = this.#link.session?.publish(command.topic, command.payload, command.qos);
          if (packetId !== undefined) this.#link.packets.set(packetId, command.tag);
          break;
        }
        case "close":
          this.#closeLink();
          break;
        case "set-timer":
          this.#setTimer("hub", command.delayMs);
          break;
        case "clear-timer":
          this.#clearTimer();
          break;
        case "status":
          this.#emit({ source: "hub", status: command.status, hub: this.#assignment?.assignedHub ?? "" });
          if (command.status.state === "connected") this.#setState("connected");
          else if (command.status.state === "retrying" || command.status.state === "connecting" || command.status.state === "renewing") {
            if (this.#state === "connected") this.#setState("connecting");
          }
          break;
        case "sent": {
          const id = this.#tagToId.get(command.tag);
          this.#tagToId.delete(command.tag);
          if (id !== undefined) this.#emit({ source: "telemetry", state: "sent", id });
          break;
        }
        case "received":
          this.#emit({ source: "message", topic: command.topic, payload: command.payload });
          break;
        case "done":
          this.#onHubDone(command.outcome);
          break;
      }
    }
  }

  #onHubLinkEvent(e: RegistrationEvent): void {
    // The link speaks the registration machine's event shapes; translate the few that differ.
    if (e.kind === "suback") return;
    this.#feedHub(e as HubEvent);
  }

  #onHubDone(outcome: Extract<HubCommand, { kind: "done" }>["outcome"]): void {
    const hub = this.#hub;
    this.#hub = undefined;
    if (outcome.kind === "reprovision") {
      this.#keepPending(hub);
      this.#invalidateCache();
      this.#assignment = undefined;
      this.#startDps(false);
    } else if (outcome.kind === "failed") {
      this.#keepPending(hub);
      this.#setState("failed", outcome.error);
    }
  }

  /** Moves what a hub session still holds (unacknowledged first) to the front of the backlog. */
  #keepPending(hub: HubSession | undefined): void {
    if (!hub) return;
    const kept: Backlog[] = [];
    const pending = hub.pending();
    for (let i = 0; i < pending.length; i++) {
      const m = pending[i];
      const id = this.#tagToId.get(m.tag);
      this.#tagToId.delete(m.tag);
      if (id !== undefined) kept.push({ id, body: m.payload, properties: m.properties });
    }
    this.#backlog = kept.concat(this.#backlog);
  }

  #endHub(): void {
    const hub = this.#hub;
    if (!hub) return;
    this.#hub = undefined;
    // Unsent messages wait for the next hub session.
    this.#keepPending(hub);
    const commands = hub.handle({ kind: "stop" }, this.#ports.clock());
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      if (c.kind === "close") this.#closeLink();
      else if (c.kind === "clear-timer") this.#clearTimer();
    }
  }

  // -------------------------------------------------------------------------------------------
  // The one MQTT link and the one timer

  #openLink(options: Parameters<MqttConnector["connect"]>[0], deliver: (e: RegistrationEvent) => void): void {
    this.#closeLink();
    const generation = ++this.#link.generation;
    const packets = new Map<number, number>();
    const live = () => this.#link.generation === generation;
    const session = this.#ports.mqtt.connect(options, {
      onConnack: (returnCode) => live() && this.#run(() => deliver({ kind: "connack", returnCode })),
      onSuback: (_id, granted) => live() && this.#run(() => deliver({ kind: "suback", granted })),
      onMessage: (topic, payload) => live() && this.#run(() => deliver({ kind: "message", topic, payload })),
      onPuback: (packetId) => {
        if (!live()) return;
        const tag = packets.get(packetId);
        packets.delete(packetId);
        if (tag !== undefined) this.#run(() => this.#feedHub({ kind: "puback", tag }));
      },
      onClose: (fault) => {
        if (!live()) return;
        this.#link = { generation: this.#link.generation + 1, packets: new Map() };
        this.#run(() => deliver({ kind: "closed", fault }));
      },
    });
    this.#link = { session, generation, packets };
  }

  #closeLink(): void {
    const session = this.#link.session;
    this.#link = { generation: this.#link.generation + 1, packets: new Map() };
    session?.close();
  }

  #setTimer(owner: "dps" | "hub", delayMs: number): void {
    this.#clearTimer();
    this.#timerOwner = owner;
    const handle = this.#ports.timers.set(() => {
      if (this.#timer !== handle) return;
      this.#timer = undefined;
      this.#timerOwner = undefined;
      this.#run(() => (owner === "dps" ? this.#feedDps({ kind: "timer" }) : this.#feedHub({ kind: "timer" })));
    }, delayMs);
    this.#timer = handle;
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#ports.timers.clear(this.#timer);
    this.#timer = undefined;
    this.#timerOwner = undefined;
  }

  // -------------------------------------------------------------------------------------------

  /** Runs `work` now, or after the work in progress when called from inside it (no reentrancy). */
  #run(work: () => void): void {
    if (this.#busy) {
      this.#pendingEvents.push(work);
      return;
    }
    this.#busy = true;
    try {
      work();
      while (this.#pendingEvents.length > 0) this.#pendingEvents.shift()!();
    } finally {
      this.#busy = false;
    }
  }

  #setState(state: RuntimeState, error?: { code: ErrorCode; message: string }): void {
    if (this.#state === state && !error) return;
    this.#state = state;
    this.#emit(error ? { source: "runtime", state, error: { code: error.code, message: error.message } } : { source: "runtime", state });
  }

  #emit(event: RuntimeEvent): void {
    const log = this.#ports.log;
    if (log) {
      const level = event.source === "runtime" && event.state === "failed" ? "error" : event.source === "telemetry" ? "debug" : "info";
      log(level, describeEvent(event), event as unknown as Record<string, unknown>);
    }
    if (this.#listener) {
      try {
        this.#listener(event);
      } catch (error) {
        // A listener's bug must not break the device's state; say so once per event.
        log?.("error", `runtime listener threw: ${describeError(error)}`);
      }
    }
  }
}

/** One line for logs and consoles; never carries a key or token. */
export function describeEvent(e: RuntimeEvent): string {
  switch (e.source) {
    case "runtime":
      return `runtime ${e.state}${e.error ? `: ${e.error.code} ${e.error.message}` : ""}`;
    case "cache":
      return `cache ${e.state}${e.detail ? `: ${e.detail}` : ""}${e.rejected && e.rejected.length ? ` (rejected ${e.rejected.join("; ")})` : ""}`;
    case "dps": {
      const s = e.status;
      let line = `dps ${s.state}`;
      if (s.attempt) line += ` attempt ${s.attempt}`;
      if (s.httpStatus !== undefined) line += ` status ${s.httpStatus}`;
      if (s.errorCode !== undefined) line += ` code ${s.errorCode}`;
      if (s.connack !== undefined) line += ` connack ${s.connack}`;
      if (s.fault !== undefined) line += ` fault ${s.fault}`;
      if (s.trackingId !== undefined) line += ` tracking ${s.trackingId}`;
      if (s.delayMs !== undefined) line += ` next in ${s.delayMs} ms`;
      if (s.assignedHub !== undefined) line += ` hub ${s.assignedHub} device ${s.deviceId}`;
      if (s.message !== undefined && (s.state === "failed" || s.state === "retrying" || s.state === "fallback")) line += ` — ${s.message}`;
      return line;
    }
    case "hub": {
      const s = e.status;
      let line = `hub ${e.hub} ${s.state}`;
      if (s.attempt) line += ` attempt ${s.attempt}`;
      if (s.connack !== undefined) line += ` connack ${s.connack}`;
      if (s.fault !== undefined) line += ` fault ${s.fault}`;
      if (s.delayMs !== undefined) line += ` next in ${s.delayMs} ms`;
      if (s.message !== undefined) line += ` — ${s.message}`;
      return line;
    }
    case "assignment":
      return `assigned to ${e.assignment.assignedHub} as ${e.assignment.deviceId} (from ${e.assignment.source}${e.assignment.substatus ? `, ${e.assignment.substatus}` : ""})`;
    case "telemetry":
      return `telemetry ${e.id} acknowledged`;
    case "message":
      return `message on ${e.topic}`;
  }
}

function describeError(error: unknown): string {
  if (error instanceof DpsError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
