/**
 * The runtime: the one object a firmware project creates, and the thin driver of the lifecycle
 * machine (lifecycle.ts) on a host's ports. It performs the machine's commands (sockets, the
 * one timer, the HTTPS lookup, the cache on flash, reports) and feeds back what happened, one
 * event at a time, never from inside another. It holds no decision of its own, and no exception
 * from a port or a listener escapes into a host callback.
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
import { CredentialCache } from "./credential-cache.js";
import { DpsError, UsageError } from "./errors.js";
import type { FlashPort } from "./flash.js";
import type { HubFeature, MessageProperties } from "./hub-session.js";
import {
  deviceKeyOf,
  LifecycleMachine,
  type Assignment,
  type LifecycleCommand,
  type LifecycleEvent,
  type RuntimeConfig,
  type RuntimeEvent,
  type RuntimeState,
} from "./lifecycle.js";
import type { Clock, HttpsPort, LogPort, MqttConnector, MqttSession, RandomSource, SecureRandom, TimerPort } from "./ports.js";

export type { Assignment, RuntimeConfig, RuntimeEvent, RuntimeState } from "./lifecycle.js";

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

export type RuntimeListener = (event: RuntimeEvent) => void;

interface Link {
  readonly id: number;
  session: MqttSession | undefined;
  /** Packet id → the machine's tag, for PUBACKs. */
  readonly tags: Map<number, number>;
}

export class DeviceRuntime {
  #machine: LifecycleMachine;
  #ports: RuntimePorts;
  #listener: RuntimeListener | undefined;
  #cache: CredentialCache | undefined;
  #link: Link | undefined;
  #timer: unknown;
  #lookup = 0;
  #abortLookup: (() => void) | undefined;
  #events: LifecycleEvent[] = [];
  #commands: LifecycleCommand[] = [];
  #busy = false;
  /** stop() was called (its event may still be queued behind others). */
  #stopping = false;

  /**
   * @throws UsageError INVALID_ARGUMENT for a configuration that could never work (no key, both
   *   keys, a bad ID scope or registration id); MALFORMED_BASE64 for a key that is not base64.
   */
  /**
   * @param features what the device does on the hub besides telemetry, each an opt-in module:
   *   `new CloudMessages(...)` (c2d.ts), `new DirectMethods()` (methods.ts), `new DeviceTwin(...)` (twin.ts).
   */
  constructor(config: RuntimeConfig, ports: RuntimePorts, listener?: RuntimeListener, features?: readonly HubFeature[]) {
    if (!ports || !ports.mqtt || !ports.timers || !ports.crypto || typeof ports.clock !== "function" || typeof ports.random !== "function" || typeof ports.secureRandom !== "function") {
      throw new UsageError("INVALID_ARGUMENT", "DeviceRuntime needs the ports mqtt, timers, clock, random, secureRandom and crypto");
    }
    this.#ports = ports;
    this.#listener = listener;
    this.#machine = new LifecycleMachine(config, { crypto: ports.crypto, random: ports.random }, { cache: ports.flash !== undefined, lookup: ports.https !== undefined }, features);
    if (features) for (let i = 0; i < features.length; i++) {
      const feature = features[i];
      feature.attach((fn) => this.#feed({ kind: "call", feature, fn }));
    }
    if (ports.flash) {
      this.#cache = new CredentialCache({
        flash: ports.flash,
        random: ports.secureRandom,
        deviceKey: deviceKeyOf(config, ports.crypto),
        registrationId: config.registrationId,
        crypto: ports.crypto,
        clock: ports.clock,
        firstSector: config.cache?.firstSector,
        sectorsPerSlot: config.cache?.sectorsPerSlot,
      });
    }
  }

  get state(): RuntimeState {
    return this.#machine.state;
  }

  /** The hub assignment in use, once known. */
  get assignment(): Assignment | undefined {
    return this.#machine.assignment;
  }

  /**
   * Starts: a good cached assignment goes straight to its hub; otherwise DPS is asked.
   * @throws UsageError ILLEGAL_EVENT when already started.
   */
  start(): void {
    if (this.#machine.phase !== "idle" || this.#stopping) throw new UsageError("ILLEGAL_EVENT", `start() in state "${this.state}"; it can be called once`);
    this.#feed({ kind: "start" });
  }

  /**
   * Queues a telemetry message (an object or a string is sent as JSON or UTF-8 text); returns its
   * id, reported in a `telemetry sent` event when the hub acknowledges it (`dropped` when the hub
   * keeps refusing it).
   * @throws UsageError QUEUE_FULL, OVERSIZE, STOPPED, INVALID_ARGUMENT.
   */
  send(message: Uint8Array | string | object, properties?: MessageProperties): number {
    const { id, commands } = this.#machine.send(message, properties, this.#ports.clock());
    this.#perform(commands);
    return id;
  }

  /**
   * Asks DPS for an assignment again, now. While DPS answers 5xx the cached hub stays in use.
   * @throws UsageError ILLEGAL_EVENT before start or after stop.
   */
  reprovision(): void {
    const phase = this.#machine.phase;
    if (phase === "idle" || this.#stopping) throw new UsageError("ILLEGAL_EVENT", `reprovision() in state "${this.state}"${this.#stopping ? " after stop()" : ""}`);
    this.#feed({ kind: "reprovision" });
  }

  /** Stops everything; idempotent. Messages not yet acknowledged are dropped. */
  stop(): void {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#feed({ kind: "stop" });
  }

  // -------------------------------------------------------------------------------------------

  /** Feeds an event now, or after the work in progress when called from inside it. */
  #feed(event: LifecycleEvent): void {
    this.#events.push(event);
    this.#drain();
  }

  #perform(commands: LifecycleCommand[]): void {
    for (let i = 0; i < commands.length; i++) this.#commands.push(commands[i]);
    this.#drain();
  }

  #drain(): void {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (;;) {
        const command = this.#commands.shift();
        if (command) {
          this.#do(command);
          continue;
        }
        const event = this.#events.shift();
        if (!event) break;
        try {
          const commands = this.#machine.handle(event, this.#ports.clock());
          for (let i = 0; i < commands.length; i++) this.#commands.push(commands[i]);
        } catch (error) {
          // A bug, not an outcome: say so, and go on with the next event.
          this.#ports.log?.("error", `runtime: ${event.kind} was not handled: ${describeError(error)}`);
        }
      }
    } finally {
      this.#busy = false;
    }
    // What was queued before the stop has run: the cache's key can go now.
    if (this.#machine.phase === "stopped") this.#cache?.close();
  }

  #do(c: LifecycleCommand): void {
    const ports = this.#ports;
    try {
      switch (c.kind) {
        case "connect":
          this.#connect(c.link, c.options);
          break;
        case "subscribe":
          if (this.#link?.id === c.link) this.#link.session?.subscribe(c.topic, c.qos);
          break;
        case "publish": {
          const link = this.#link;
          if (link?.id !== c.link || !link.session) break;
          const packetId = link.session.publish(c.topic, c.payload, c.qos);
          if (c.tag !== undefined) link.tags.set(packetId, c.tag);
          break;
        }
        case "close":
          this.#closeLink();
          break;
        case "set-timer": {
          this.#clearTimer();
          const handle = ports.timers.set(() => {
            if (this.#timer !== handle) return;
            this.#timer = undefined;
            this.#feed({ kind: "timer" });
          }, c.delayMs);
          this.#timer = handle;
          break;
        }
        case "clear-timer":
          this.#clearTimer();
          break;
        case "lookup":
          this.#startLookup(c.request);
          break;
        case "cancel-lookup":
          this.#lookup++;
          this.#abortLookup?.();
          this.#abortLookup = undefined;
          break;
        case "cache-load": {
          const result = this.#cache!.load();
          const rejected: string[] = [];
          for (let i = 0; i < result.rejected.length; i++) {
            const r = result.rejected[i];
            if (r.reason !== "empty") rejected.push(`slot ${r.slot}: ${r.reason} (${r.detail})`);
          }
          const a = result.assignment;
          this.#feed({ kind: "cache-loaded", assignment: a, detail: a ? `slot ${result.slot}, sequence ${result.sequence}, hub ${a.assignedHub}` : "no valid record", rejected });
          break;
        }
        case "cache-save": {
          const r = this.#cache!.save(c.assignment);
          this.#feed({ kind: "cache-saved", detail: `slot ${r.slot}, sequence ${r.sequence}` });
          break;
        }
        case "cache-invalidate":
          this.#cache!.invalidate();
          this.#feed({ kind: "cache-invalidated" });
          break;
        case "report":
          this.#report(c.event);
          break;
        case "invoke":
          c.run();
          break;
      }
    } catch (error) {
      // A port that throws: the command it was is answered as a failure of its own kind.
      const message = describeError(error);
      if (c.kind === "connect" || c.kind === "subscribe" || c.kind === "publish") {
        this.#closeLink();
        this.#feed({ kind: "closed", link: c.link, fault: { kind: "refused", message } });
      } else if (c.kind === "lookup") this.#feed({ kind: "lookup-failed", fault: { kind: "refused", message } });
      else if (c.kind === "cache-load" || c.kind === "cache-save" || c.kind === "cache-invalidate") this.#feed({ kind: "cache-failed", detail: message });
      else ports.log?.("error", `runtime: ${c.kind} failed: ${message}`);
    }
  }

  #connect(id: number, options: Parameters<MqttConnector["connect"]>[0]): void {
    this.#closeLink();
    const tags = new Map<number, number>();
    const link: Link = { id, session: undefined, tags };
    // The link exists before connect() returns: a host may call back from inside it.
    this.#link = link;
    const live = () => this.#link === link;
    const session = this.#ports.mqtt.connect(options, {
      onConnack: (returnCode) => live() && this.#feed({ kind: "connack", link: id, returnCode }),
      onSuback: (_packetId, granted) => live() && this.#feed({ kind: "suback", link: id, granted }),
      onMessage: (topic, payload, oversize) => live() && this.#feed({ kind: "message", link: id, topic, payload, oversize }),
      onPuback: (packetId) => {
        const tag = tags.get(packetId);
        tags.delete(packetId);
        if (live() && tag !== undefined) this.#feed({ kind: "puback", link: id, tag });
      },
      onClose: (fault) => {
        if (!live()) return;
        this.#link = undefined;
        this.#feed({ kind: "closed", link: id, fault });
      },
    });
    link.session = session;
    // Closed from inside connect(): the session is over already (close() is idempotent).
    if (!live()) session.close();
  }

  #closeLink(): void {
    const link = this.#link;
    this.#link = undefined;
    link?.session?.close();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#ports.timers.clear(this.#timer);
    this.#timer = undefined;
  }

  /** The machine asks for a lookup only when there is an HttpsPort (see the constructor). */
  #startLookup(request: Parameters<HttpsPort["request"]>[0]): void {
    const serial = ++this.#lookup;
    const settle = (event: LifecycleEvent) => {
      if (serial !== this.#lookup) return;
      this.#lookup++;
      this.#abortLookup = undefined;
      this.#feed(event);
    };
    this.#abortLookup = this.#ports.https!.request(
      request,
      (response) => settle({ kind: "lookup-response", response }),
      (fault) => settle({ kind: "lookup-failed", fault }),
    );
  }

  #report(event: RuntimeEvent): void {
    const log = this.#ports.log;
    if (log) {
      const level = event.source === "runtime" && event.state === "failed" ? "error" : event.source === "runtime" && event.state === "backing-off" ? "warn" : event.source === "telemetry" && event.state === "sent" ? "debug" : "info";
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

/** What each status field is called in a log line, in the order it is written. */
const FIELDS = ["attempt", "attempt", "httpStatus", "status", "errorCode", "code", "connack", "connack", "fault", "fault", "trackingId", "tracking", "delayMs", "next in", "assignedHub", "hub"];

/** One line for logs and consoles; never carries a key or token. */
export function describeEvent(e: RuntimeEvent): string {
  if (e.source === "dps" || e.source === "hub") {
    const s = e.status as unknown as Record<string, unknown>;
    let line = e.source === "dps" ? `dps ${s.state}` : `hub ${e.hub} ${s.state}`;
    for (let i = 0; i < FIELDS.length; i += 2) {
      const v = s[FIELDS[i]];
      if (v !== undefined && v !== 0) line += ` ${FIELDS[i + 1]} ${v}${i === 12 ? " ms" : i === 14 ? ` device ${s.deviceId}` : ""}`;
    }
    return s.message !== undefined && (e.source === "hub" || s.state === "failed" || s.state === "retrying" || s.state === "fallback") ? `${line} — ${s.message}` : line;
  }
  if (e.source === "assignment") {
    const a = e.assignment;
    return `assigned to ${a.assignedHub} as ${a.deviceId} (from ${a.source}${a.substatus ? `, ${a.substatus}` : ""})`;
  }
  if (e.source === "runtime") return `runtime ${e.state}${e.error ? `: ${e.error.code} ${e.error.message}` : ""}`;
  if (e.source === "cache") return `cache ${e.state}${e.detail ? `: ${e.detail}` : ""}${e.rejected && e.rejected.length ? ` (rejected ${e.rejected.join("; ")})` : ""}`;
  if (e.source === "telemetry") return `telemetry ${e.id} ${e.state === "sent" ? "acknowledged" : `dropped: ${e.reason}`}`;
  if (e.source === "message") return `message on ${e.topic}`;
  // The hub features' events (c2d, method, twin, feature): each field as it is, the reason last.
  const f = e as unknown as Record<string, unknown>;
  let line = `${e.source} ${e.state}`;
  const keys = Object.keys(f);
  for (let i = 0; i < keys.length; i++) if (keys[i] !== "source" && keys[i] !== "state" && keys[i] !== "reason") line += ` ${keys[i]} ${f[keys[i]]}`;
  return f.reason === undefined ? line : `${line} — ${f.reason}`;
}

function describeError(error: unknown): string {
  if (error instanceof DpsError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}


