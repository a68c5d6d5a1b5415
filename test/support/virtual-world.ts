/**
 * A portable, in-memory world for running a whole DeviceRuntime on XS (and Node) without sockets:
 * a virtual clock and timer queue, and a scripted cloud behind the MqttConnector port that answers
 * like DPS (202, then 200 on the poll) and like a hub (CONNACK, PUBACK). It is deliberately small:
 * the protocol itself is checked against the independent emulator in test/e2e; this exists so that
 * the runtime's wiring, the cache and tweetnacl run on the XS engine too.
 */
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import { portableCrypto } from "../../modules/sha256.js";
import type { MqttConnectOptions, MqttConnector, MqttSession, MqttSessionCallbacks, TimerPort } from "../../modules/ports.js";
import { DeviceRuntime, type RuntimeConfig, type RuntimeEvent } from "../../modules/runtime.js";
import { T0 } from "./transcript.js";

export class VirtualClock implements TimerPort {
  now = T0;
  #queue: { at: number; seq: number; callback: () => void; handle: object }[] = [];
  #seq = 0;
  set(callback: () => void, delayMs: number): unknown {
    const handle = {};
    this.#queue.push({ at: this.now + Math.max(0, delayMs), seq: this.#seq++, callback, handle });
    return handle;
  }
  clear(handle: unknown): void {
    this.#queue = this.#queue.filter((t) => t.handle !== handle);
  }
  /**
   * Runs due work in time order until nothing is left, or the next timer is later than `until`;
   * more than `limit` steps is a livelock and throws. Returns the steps taken.
   */
  run(limit = 10_000, until = Number.POSITIVE_INFINITY): number {
    let steps = 0;
    while (this.#queue.length > 0 && steps < limit) {
      this.#queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
      if (this.#queue[0].at > until) break;
      const next = this.#queue.shift()!;
      this.now = Math.max(this.now, next.at);
      next.callback();
      steps++;
    }
    if (steps >= limit) throw new Error(`the virtual world did not settle within ${limit} steps (livelock?)`);
    return steps;
  }
}

export interface CloudScript {
  /** Status of the answer to each register, in turn (default 202 then the poll's 200). */
  registerAnswers?: number[];
  /** CONNACK code of each hub connection, in turn (default 0). */
  hubConnacks?: number[];
}

/** The cloud side: one "socket" per connect, answering after a 1 ms virtual round trip. */
export class ScriptedCloud implements MqttConnector {
  readonly log: string[] = [];
  registers = 0;
  hubConnects = 0;
  readonly telemetry: string[] = [];
  #clock: VirtualClock;
  #script: CloudScript;
  constructor(clock: VirtualClock, script: CloudScript = {}) {
    this.#clock = clock;
    this.#script = script;
  }
  connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession {
    const later = (f: () => void) => this.#clock.set(() => !closed && f(), 1);
    let closed = false;
    let packetId = 0;
    const isDps = options.username.indexOf("/registrations/") > 0;
    this.log.push(`connect ${isDps ? "dps" : "hub"} ${options.host}`);
    if (isDps) later(() => callbacks.onConnack(0, false));
    else {
      const code = this.#script.hubConnacks?.[this.hubConnects] ?? 0;
      this.hubConnects++;
      later(() => callbacks.onConnack(code, false));
    }
    return {
      subscribe: (topic) => {
        const id = ++packetId;
        later(() => callbacks.onSuback(id, [1]));
        return id;
      },
      publish: (topic, payload) => {
        const id = ++packetId;
        const rid = /\$rid=([^&]*)/.exec(topic)?.[1] ?? "";
        if (topic.indexOf("iotdps-register") >= 0) {
          const status = this.#script.registerAnswers?.[this.registers] ?? 202;
          this.registers++;
          this.log.push(`register ${status}`);
          later(() =>
            callbacks.onMessage(
              `$dps/registrations/res/${status}/?$rid=${rid}&retry-after=1`,
              utf8Encode(status === 202 ? '{"operationId":"op-1","status":"assigning"}' : `{"errorCode":${status}001,"trackingId":"t","message":"scripted"}`),
            ),
          );
        } else if (topic.indexOf("iotdps-get-operationstatus") >= 0) {
          this.log.push("poll");
          later(() =>
            callbacks.onMessage(
              `$dps/registrations/res/200/?$rid=${rid}`,
              utf8Encode('{"operationId":"op-1","status":"assigned","registrationState":{"registrationId":"dev-001","assignedHub":"hub-1.azure-devices.net","deviceId":"dev-001","status":"assigned","substatus":"initialAssignment"}}'),
            ),
          );
        } else {
          this.telemetry.push(utf8Decode(payload));
          later(() => callbacks.onPuback(id));
        }
        return id;
      },
      close: () => {
        closed = true;
      },
    };
  }
}

export interface RunResult {
  readonly events: string[];
  readonly registers: number;
  readonly telemetry: string[];
}

export const virtualConfig: RuntimeConfig = { idScope: "0ne00000001", registrationId: "dev-001", symmetricKey: "cGFzc3dvcmQ=", globalEndpoint: "dps.example" };

/** One boot on `flash`: start, send `messages` once connected, run the world until it settles, stop. */
export function bootOnce(flash: MemoryFlash, script: CloudScript = {}, messages = 1, seedByte = 7): RunResult & { cloud: ScriptedCloud } {
  const clock = new VirtualClock();
  const cloud = new ScriptedCloud(clock, script);
  const events: string[] = [];
  let runtime: DeviceRuntime | undefined;
  const listener = (e: RuntimeEvent) => {
    events.push(summarize(e));
    if (e.source === "runtime" && e.state === "connected") for (let i = 0; i < messages; i++) runtime!.send({ n: i });
    if (e.source === "telemetry" && e.id === messages) runtime!.stop();
  };
  runtime = new DeviceRuntime(
    virtualConfig,
    {
      mqtt: cloud,
      timers: clock,
      clock: () => clock.now,
      random: () => 0.5,
      secureRandom: (bytes) => bytes.fill(seedByte),
      crypto: portableCrypto,
      flash,
    },
    listener,
  );
  runtime.start();
  clock.run();
  return { events, registers: cloud.registers, telemetry: cloud.telemetry, cloud };
}

export function newFlash(): MemoryFlash {
  return new MemoryFlash({ sectorSize: 4096, sectorCount: 2 });
}

function summarize(e: RuntimeEvent): string {
  switch (e.source) {
    case "runtime":
      return `runtime ${e.state}${e.error ? ` ${e.error.code}` : ""}`;
    case "cache":
      return `cache ${e.state}`;
    case "dps":
      return `dps ${e.status.state}${e.status.httpStatus ? ` ${e.status.httpStatus}` : ""}`;
    case "hub":
      return `hub ${e.status.state}${e.status.connack !== undefined ? ` ${e.status.connack}` : ""}`;
    case "assignment":
      return `assignment ${e.assignment.source} ${e.assignment.assignedHub}`;
    case "telemetry":
      return `sent ${e.id}`;
    case "message":
      return `message ${e.topic}`;
    default:
      return `${e.source} ${e.state}`;
  }
}
