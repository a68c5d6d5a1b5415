/**
 * MQTT on the wire, fuzzed: the peer side of both hosts' MQTT adapters. A `WireServer` reads the
 * device's packets (CONNECT, SUBSCRIBE, PUBLISH, PINGREQ, decoded by whoever carries the bytes)
 * and answers as DPS or the hub might, with frames that are valid, mutated (bytes flipped,
 * lengths changed, types and flags changed, truncated, duplicated, garbage, five-byte lengths,
 * oversize lengths, bad UTF-8 topics) and split at random boundaries, and closes at random.
 * Portable: the encoder is injected (Node: mqtt-packet's generate; XS: `portableEncoder` here),
 * and so is the decoder of the device's bytes (Node: mqtt-packet's parser; XS: `DeviceStream`).
 *
 * `moddableSequence` runs a DeviceRuntime over the Moddable host's ModdableMqttConnector
 * (hosts/moddable/mqtt.ts) on stand-ins for the SDK's socket and resolver whose far end is a
 * WireServer; the stand-ins invoke the adapter's onReadable, onWritable and onError (and the
 * resolver's callbacks) from a virtual event loop, and any exception that escapes one is a
 * failure, as are the driver checks of machine-fuzz.ts (two sockets open at once, a 0 ms timer
 * loop, a "runtime: ... was not handled" log, stuck, something left open after stop()).
 */
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import type { CryptoPort } from "../../modules/crypto.js";
import type { TimerPort } from "../../modules/ports.js";
import { DeviceRuntime, type RuntimeEvent } from "../../modules/runtime.js";
import { portableCrypto } from "../../modules/sha256.js";
import { ModdableMqttConnector } from "../../hosts/moddable/mqtt.js";
import type { StreamSocketOptions } from "../../hosts/moddable/sdk.js";
import { runRandom, describeError, type Random } from "./fuzz.js";
import {
  DriverWorld,
  FaultyFlash,
  FuzzCloud,
  FuzzHttps,
  campaign,
  drawDelay,
  fuzzRuntimeConfig,
  int,
  pick,
  type CheckerLimits,
  type Pace,
  type Reaction,
  type SequenceReport,
  type SequenceResult,
} from "./machine-fuzz.js";

// ---------------------------------------------------------------------------------------------
// Frames

/** A packet the device sent, as the peer reads it. */
export interface DevicePacket {
  readonly type: "connect" | "subscribe" | "publish" | "puback" | "pingreq" | "disconnect" | "other";
  readonly id?: number;
  readonly topic?: string;
  readonly qos?: number;
  readonly username?: string;
}

/** Encodes what the peer sends. */
export interface FrameEncoder {
  connack(code: number, sessionPresent: boolean): Uint8Array;
  suback(id: number, granted: readonly number[]): Uint8Array;
  publish(topic: string, payload: Uint8Array, qos: 0 | 1, id: number): Uint8Array;
  puback(id: number): Uint8Array;
  pingresp(): Uint8Array;
}

function frame(first: number, body: readonly number[] | Uint8Array): Uint8Array {
  const length: number[] = [];
  let n = body.length;
  do {
    let digit = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) digit |= 0x80;
    length.push(digit);
  } while (n > 0);
  const out = new Uint8Array(1 + length.length + body.length);
  out[0] = first;
  out.set(length, 1);
  out.set(body, 1 + length.length);
  return out;
}

/** An encoder of its own (not the adapter's), for the XS tier. */
export const portableEncoder: FrameEncoder = {
  connack: (code, sessionPresent) => frame(0x20, [sessionPresent ? 1 : 0, code & 0xff]),
  suback: (id, granted) => frame(0x90, [id >> 8, id & 0xff, ...granted.map((g) => g & 0xff)]),
  publish: (topic, payload, qos, id) => {
    const t = utf8Encode(topic);
    const body = new Uint8Array(2 + t.length + (qos ? 2 : 0) + payload.length);
    body[0] = t.length >> 8;
    body[1] = t.length & 0xff;
    body.set(t, 2);
    let at = 2 + t.length;
    if (qos) {
      body[at++] = id >> 8;
      body[at++] = id & 0xff;
    }
    body.set(payload, at);
    return frame(0x30 | (qos << 1), body);
  },
  puback: (id) => frame(0x40, [id >> 8, id & 0xff]),
  pingresp: () => frame(0xd0, []),
};

/** Reads the device's byte stream into packets (tolerant: what it cannot read is "other"). */
export class DeviceStream {
  #buffer = new Uint8Array(0);

  push(bytes: Uint8Array): DevicePacket[] {
    const joined = new Uint8Array(this.#buffer.length + bytes.length);
    joined.set(this.#buffer, 0);
    joined.set(bytes, this.#buffer.length);
    const out: DevicePacket[] = [];
    let at = 0;
    for (;;) {
      if (joined.length - at < 2) break;
      let length = 0;
      let shift = 1;
      let i = at + 1;
      let complete = false;
      for (let k = 0; k < 4 && i < joined.length; k++) {
        const digit = joined[i++];
        length += (digit & 0x7f) * shift;
        shift *= 128;
        if (!(digit & 0x80)) {
          complete = true;
          break;
        }
      }
      if (!complete || i + length > joined.length) break;
      out.push(decode(joined[at], joined.subarray(i, i + length)));
      at = i + length;
    }
    this.#buffer = joined.slice(at);
    return out;
  }
}

function decode(first: number, body: Uint8Array): DevicePacket {
  const type = first >> 4;
  const str = (at: number): [string, number] => {
    const n = (body[at] << 8) | body[at + 1];
    let text = "";
    try {
      text = utf8Decode(body.subarray(at + 2, at + 2 + n));
    } catch {
      text = "";
    }
    return [text, at + 2 + n];
  };
  try {
    if (type === 1) {
      // Protocol name, level, flags, keepalive; client id; user name (flag 0x80).
      const [, afterName] = str(0);
      const flags = body[afterName + 1];
      let [, at] = str(afterName + 4);
      if (flags & 0x04) {
        at = str(at)[1];
        at = str(at)[1];
      }
      const username = flags & 0x80 ? str(at)[0] : "";
      return { type: "connect", username };
    }
    if (type === 8) return { type: "subscribe", id: (body[0] << 8) | body[1], topic: str(2)[0] };
    if (type === 3) {
      const qos = (first >> 1) & 3;
      const [topic, at] = str(0);
      return { type: "publish", topic, qos, id: qos ? (body[at] << 8) | body[at + 1] : 0 };
    }
    if (type === 4) return { type: "puback", id: (body[0] << 8) | body[1] };
    if (type === 12) return { type: "pingreq" };
    if (type === 14) return { type: "disconnect" };
  } catch {
    // fall through
  }
  return { type: "other" };
}

const BAD_TOPICS: readonly number[][] = [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80]];

/** One mutation of a frame: what a broken or hostile peer might write. */
export function mutateFrame(r: Random, bytes: Uint8Array): { bytes: Uint8Array; label: string } {
  const x = int(r, 12);
  const copy = bytes.slice();
  switch (x) {
    case 0: {
      const n = 1 + int(r, 3);
      for (let i = 0; i < n && copy.length > 0; i++) copy[int(r, copy.length)] ^= 1 << int(r, 8);
      return { bytes: copy, label: `flip×${n}` };
    }
    case 1:
      if (copy.length > 1) copy[1] = int(r, 256);
      return { bytes: copy, label: "length byte" };
    case 2:
      return { bytes: Uint8Array.of(copy[0] ?? 0x30, 0xff, 0xff, 0xff, 0xff, 0x01), label: "five-byte length" };
    case 3:
      return { bytes: Uint8Array.of(copy[0] ?? 0x30, 0xff, 0xff, 0xff, 0x7f), label: "huge length" };
    case 4:
      copy[0] = (int(r, 16) << 4) | (copy[0] & 15);
      return { bytes: copy, label: `type ${copy[0] >> 4}` };
    case 5:
      copy[0] = (copy[0] & 0xf0) | int(r, 16);
      return { bytes: copy, label: `flags ${copy[0] & 15}` };
    case 6:
      return { bytes: copy.subarray(0, int(r, copy.length)), label: "truncated" };
    case 7: {
      const out = new Uint8Array(copy.length * 2);
      out.set(copy, 0);
      out.set(copy, copy.length);
      return { bytes: out, label: "duplicated" };
    }
    case 8: {
      const junk = new Uint8Array(1 + int(r, 16));
      for (let i = 0; i < junk.length; i++) junk[i] = int(r, 256);
      const out = new Uint8Array(copy.length + junk.length);
      const at = int(r, copy.length + 1);
      out.set(copy.subarray(0, at), 0);
      out.set(junk, at);
      out.set(copy.subarray(at), at + junk.length);
      return { bytes: out, label: "garbage" };
    }
    case 9:
      // A PUBLISH whose topic length runs past the packet.
      return { bytes: frame(0x30, [0xff, 0xf0, 0x61]), label: "topic past the end" };
    case 10: {
      const bad = pick(r, BAD_TOPICS);
      return { bytes: frame(0x30, [0, bad.length, ...bad, 0x7b, 0x7d]), label: "bad UTF-8 topic" };
    }
    default:
      return { bytes: frame(pick(r, [0x00, 0xf0, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0x10, 0x80, 0xc0, 0xe0, 0x36, 0x20]), int(r, 2) ? [] : [0, 1, 2]), label: "stray packet type" };
  }
}

/** Cuts a byte string at random boundaries (sometimes one byte at a time). */
export function splitBytes(r: Random, bytes: Uint8Array): Uint8Array[] {
  if (bytes.length <= 1) return [bytes];
  const x = r();
  if (x < 0.5) return [bytes];
  if (x < 0.05 + 0.5 && bytes.length < 64) {
    const out: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i++) out.push(bytes.subarray(i, i + 1));
    return out;
  }
  const cuts: number[] = [];
  for (let i = 0, n = 1 + int(r, 4); i < n; i++) cuts.push(1 + int(r, bytes.length - 1));
  cuts.sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < cuts.length; i++) {
    if (cuts[i] > at) out.push(bytes.subarray(at, cuts[i]));
    at = cuts[i];
  }
  out.push(bytes.subarray(at));
  return out;
}

/** What the peer does next: write bytes, or close the connection, after `delay` ms. */
export type WireAction = { readonly delay: number; readonly bytes: Uint8Array; readonly label: string } | { readonly delay: number; readonly close: true; readonly label: string };

/**
 * The peer of one connection. Feed it the device's packets; it answers with actions, in order.
 * `mutation` is the chance that a frame is mutated.
 */
export class WireServer {
  readonly #r: Random;
  readonly #cloud: FuzzCloud;
  readonly #encoder: FrameEncoder;
  readonly #mutation: number;
  #isDps = true;
  #connected = false;
  #ended = false;
  #id = 0;

  constructor(r: Random, cloud: FuzzCloud, encoder: FrameEncoder, mutation: number) {
    this.#r = r;
    this.#cloud = cloud;
    this.#encoder = encoder;
    this.#mutation = mutation;
  }

  get ended(): boolean {
    return this.#ended;
  }

  onPacket(p: DevicePacket): WireAction[] {
    if (this.#ended) return [];
    const cloud = this.#cloud;
    const r = this.#r;
    if (p.type === "connect") {
      this.#isDps = (p.username ?? "").indexOf("/registrations/") > 0;
      if (this.#connected) return this.#actions([{ kind: "close", fault: { kind: "protocol", message: "second CONNECT" }, delay: cloud.delay() }]);
      this.#connected = true;
      return this.#actions(cloud.connect());
    }
    if (!this.#connected) return [];
    if (p.type === "subscribe") return this.#actions(cloud.subscribe(p.id ?? 0));
    if (p.type === "publish") {
      if (this.#isDps) return this.#actions(cloud.dps(p.topic ?? ""));
      return p.qos ? this.#actions(cloud.hub(p.id ?? 0)) : [];
    }
    if (p.type === "pingreq") return r() < 0.9 ? this.#out(this.#encoder.pingresp(), cloud.delay(), "PINGRESP") : [];
    if (p.type === "disconnect") {
      this.#ended = true;
      return [{ delay: 0, close: true, label: "after DISCONNECT" }];
    }
    return [];
  }

  /** Something the peer does on its own. */
  noise(): WireAction[] {
    if (this.#ended || !this.#connected) return [];
    const r = this.#r;
    if (r() < 0.15) {
      const m = mutateFrame(r, this.#encoder.connack(int(r, 6), false));
      return this.#out(m.bytes, this.#cloud.delay(), `stray ${m.label}`, false);
    }
    return this.#actions([this.#cloud.noise(this.#isDps)]);
  }

  #actions(reactions: readonly Reaction[]): WireAction[] {
    const out: WireAction[] = [];
    const e = this.#encoder;
    const r = this.#r;
    for (let i = 0; i < reactions.length; i++) {
      const x = reactions[i];
      if (x.kind === "close") {
        this.#ended = true;
        out.push({ delay: x.delay, close: true, label: `close (${x.fault.kind})` });
        break;
      }
      const bytes =
        x.kind === "connack"
          ? e.connack(x.code, r() < 0.1)
          : x.kind === "suback"
            ? e.suback(x.id, x.granted)
            : x.kind === "puback"
              ? e.puback(x.id & 0xffff)
              : e.publish(x.topic.length > 0 ? x.topic : "t", x.payload, r() < 0.3 ? 1 : 0, (this.#id = (this.#id % 0xffff) + 1));
      const pushed = this.#out(bytes, x.delay, x.kind === "message" ? `PUBLISH ${x.label}` : x.kind.toUpperCase());
      for (let k = 0; k < pushed.length; k++) out.push(pushed[k]);
    }
    return out;
  }

  #out(bytes: Uint8Array, delay: number, label: string, mutate = true): WireAction[] {
    const r = this.#r;
    let b = bytes;
    let name = label;
    if (mutate && r() < this.#mutation) {
      const m = mutateFrame(r, b);
      b = m.bytes;
      name = `${label} ${m.label}`;
    }
    const parts = splitBytes(r, b);
    const out: WireAction[] = [];
    for (let i = 0; i < parts.length; i++) out.push({ delay: i === 0 ? delay : r() < 0.6 ? 0 : 1 + int(r, 20), bytes: parts[i], label: parts.length > 1 ? `${name} [${i + 1}/${parts.length}]` : name });
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// The Moddable adapter on stand-ins for the SDK's socket and resolver

export interface ModdableSequenceOptions {
  readonly crypto?: CryptoPort;
  readonly maxSteps?: number;
  readonly limits?: Partial<CheckerLimits>;
  /** Listener calls back into the runtime with these (default send, reprovision, stop). */
  readonly reentrant?: readonly string[];
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.slice().buffer as ArrayBuffer;
}

/**
 * One random sequence: a DeviceRuntime over ModdableMqttConnector whose sockets are stand-ins
 * talking to a WireServer. `(seed, index)` rebuilds it.
 */
export function moddableSequence(seed: number, index: number, options: ModdableSequenceOptions = {}): SequenceResult {
  const r = runRandom(seed ^ 0x5eed0005, index);
  const w = new DriverWorld(r, index, options.limits);
  const loop = w.loop;
  const pace: Pace = pick(r, ["instant", "fast", "fast", "mixed"] as const);
  const cloud = new FuzzCloud(r, pace);
  const mutation = pick(r, [0, 0.02, 0.1, 0.3]);
  const crypto = options.crypto ?? portableCrypto;
  const config = fuzzRuntimeConfig(r);
  const reentrant = options.reentrant ?? ["send", "send", "reprovision", "stop"];
  const socketsOpen: number[] = [];
  let sockets = 0;

  /** The stand-in socket: its far end is a WireServer; its callbacks come from the loop. */
  class FuzzSocket {
    readonly #id: number;
    readonly #options: StreamSocketOptions;
    readonly #stream = new DeviceStream();
    readonly #server = new WireServer(r, cloud, portableEncoder, mutation);
    #incoming: Uint8Array[] = [];
    #writable = 0;
    #closed = false;
    #dead = false;
    #last = 0;
    constructor(o: StreamSocketOptions & Record<string, unknown>) {
      this.#id = ++sockets;
      this.#options = o;
      if (r() < 0.03) throw new Error("fuzz: no socket available");
      if (socketsOpen.length > 0) w.fail("second-session", `socket ${this.#id} opened while socket ${socketsOpen.join(", ")} is open`);
      socketsOpen.push(this.#id);
      w.mark("socket");
      const x = r();
      if (x < 0.08) this.#later(cloud.delay(), "onError (connect failed)", () => this.#error());
      else this.#later(cloud.delay(), "onWritable", () => this.#grant());
    }
    #owner(): string {
      return `socket${this.#id}`;
    }
    #later(delay: number, name: string, f: () => void): void {
      const at = Math.max(loop.now + delay, this.#last);
      this.#last = at;
      loop.add(at - loop.now, this.#owner(), () => {
        if (this.#closed || this.#dead) return;
        w.invoke(`${this.#owner()} ${name}`, f);
      }, () => !this.#closed && !this.#dead);
    }
    #grant(): void {
      const count = r() < 0.2 ? 1 + int(r, 32) : 256 + int(r, 4096);
      this.#writable = count;
      this.#options.onWritable?.call(this, count);
    }
    #error(): void {
      this.#dead = true;
      this.#forget();
      this.#options.onError?.call(this, r() < 0.5 ? undefined : new Error("fuzz: connection reset"));
    }
    #forget(): void {
      const i = socketsOpen.indexOf(this.#id);
      if (i >= 0) socketsOpen.splice(i, 1);
    }
    read(): ArrayBuffer | undefined {
      const next = this.#incoming.shift();
      return next ? toArrayBuffer(next) : undefined;
    }
    write(data: ArrayBuffer | Uint8Array): number | void {
      if (this.#closed || this.#dead) throw new Error("fuzz: write on a closed socket");
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
      if (bytes.length > this.#writable) throw new Error(`fuzz: ${bytes.length} bytes do not fit in ${this.#writable}`);
      if (r() < 0.01) throw new Error("fuzz: the socket failed");
      this.#writable -= bytes.length;
      const packets = this.#stream.push(bytes);
      for (let i = 0; i < packets.length; i++) {
        const actions = this.#server.onPacket(packets[i]);
        this.#perform(actions);
      }
      if (r() < 0.05) this.#perform(this.#server.noise());
      if (this.#writable < 64 && r() < 0.9) this.#later(drawDelay(r, pace), "onWritable (more room)", () => this.#grant());
      return r() < 0.1 ? undefined : this.#writable;
    }
    #perform(actions: readonly { delay: number; label: string; bytes?: Uint8Array; close?: true }[]): void {
      for (let i = 0; i < actions.length; i++) {
        const a = actions[i];
        if (a.close) this.#later(a.delay, `onError (${a.label})`, () => this.#error());
        else {
          const bytes = a.bytes!;
          this.#later(a.delay, `onReadable ${a.label}`, () => {
            this.#incoming.push(bytes);
            let total = 0;
            for (let k = 0; k < this.#incoming.length; k++) total += this.#incoming[k].length;
            this.#options.onReadable?.call(this, total);
          });
        }
      }
    }
    close(): void {
      this.#closed = true;
      this.#forget();
    }
  }

  /** The resolver stand-in: answers from the loop, sometimes at once (as FixedAddressResolver does), sometimes fails. */
  class FuzzResolver {
    resolve(o: { readonly host: string; onResolved(host: string, address: string): void; onError(error?: unknown): void }): void {
      const x = r();
      if (x < 0.3) {
        o.onResolved(o.host, "10.0.0.1");
        return;
      }
      loop.add(drawDelay(r, pace), "resolver", () => {
        if (x < 0.92) w.invoke(`resolver onResolved ${o.host}`, () => o.onResolved(o.host, "10.0.0.1"));
        else w.invoke(`resolver onError ${o.host}`, () => o.onError(r() < 0.5 ? undefined : new Error("fuzz: NXDOMAIN")));
      }, () => true);
    }
    close(): void {}
  }

  // The adapter's own timers (keepalive, work moved out of a call) run on the same loop.
  const adapterTimers: TimerPort = {
    set: (callback, delayMs) => loop.add(delayMs, "adapter", () => w.invoke("adapter timer", callback), () => false),
    clear: (handle) => loop.clear(handle),
  };
  let runtimeTimer: { live: boolean } | undefined;
  const timers: TimerPort = {
    set: (callback, delayMs) => (runtimeTimer = loop.set(() => w.invoke("timer", callback), delayMs) as { live: boolean }),
    clear: (handle) => loop.clear(handle),
  };
  let flash: FaultyFlash | undefined;
  if (r() < 0.7) flash = new FaultyFlash(new MemoryFlash({ sectorSize: 4096, sectorCount: 2 }), r, r() < 0.7 ? 0 : 0.1);
  let runtime: DeviceRuntime | undefined;
  let stopped = false;
  let started = false;
  const appCall = (name: string): void => {
    const rt = runtime!;
    const codes = name === "send" ? (stopped ? ["STOPPED", "QUEUE_FULL", "OVERSIZE"] : ["QUEUE_FULL", "OVERSIZE"]) : name === "start" ? (started || stopped ? ["ILLEGAL_EVENT"] : []) : name === "reprovision" ? (rt.state === "idle" || stopped ? ["ILLEGAL_EVENT"] : []) : [];
    if (name === "stop") stopped = true;
    try {
      if (name === "send") rt.send(r() < 0.5 ? { t: 21.5 } : "x".repeat(int(r, 3000)));
      else if (name === "reprovision") rt.reprovision();
      else if (name === "stop") rt.stop();
      else {
        started = true;
        rt.start();
      }
    } catch (error) {
      const code = (error as { code?: string }).code;
      if ((error as { side?: string }).side === "usage" && code !== undefined && codes.indexOf(code) >= 0) w.documented.push(`${name} ${code}`);
      else w.fail("exception", `the app's ${name}() threw ${describeError(error)}`);
    }
  };
  try {
    const mqtt = new ModdableMqttConnector({
      socket: { io: FuzzSocket as never },
      dns: { io: FuzzResolver as never },
      timers: adapterTimers,
      secure: r() < 0.5,
      maxPacketBytes: r() < 0.3 ? 64 + int(r, 1024) : undefined,
      maxQueuedBytes: r() < 0.3 ? 64 + int(r, 4096) : undefined,
    });
    runtime = new DeviceRuntime(
      config,
      {
        mqtt,
        https: r() < 0.5 ? new FuzzHttps(w, cloud, { throwConnect: 0, throwSubscribe: 0, throwPublish: 0, sync: 0, afterClose: 0, twice: 0, throwHttps: 0.05, listener: 0, reentrant: 0, flash: 0 }) : undefined,
        timers,
        clock: () => loop.now,
        random: r,
        secureRandom: (bytes) => {
          for (let i = 0; i < bytes.length; i++) bytes[i] = int(r, 256);
        },
        crypto,
        flash,
        log: (_level, message) => {
          if (message.indexOf("runtime: ") === 0) w.fail("not-handled", message);
        },
      },
      (e: RuntimeEvent) => {
        if (e.source === "runtime") w.mark(`runtime ${e.state}`);
        else if (e.source === "telemetry") w.mark(`telemetry ${e.state}`);
        else if (e.source === "message") w.mark("message");
        if (r() < 0.01) {
          const name = pick(r, reentrant);
          w.say(`  listener calls ${name}()`);
          appCall(name);
        }
        if (r() < 0.03) throw new Error("fuzz: the listener broke");
      },
    );
  } catch (error) {
    w.fail("exception", `construction: ${describeError(error)}`);
    return { steps: 0, failure: w.failure, outcome: "not constructed", marks: w.marks, documented: w.documented };
  }
  const rt = runtime;
  const stuck = (): void => {
    const state = rt.state;
    if (state === "failed" || state === "stopped" || state === "idle") return;
    if (runtimeTimer?.live || loop.owes("socket") || loop.owes("resolver") || loop.owes("https")) return;
    w.fail("stuck", `state ${state}: no timer armed and no callback owed`);
  };
  appCall("start");
  for (let i = 0, n = int(r, 8); i < n; i++) {
    const name = pick(r, ["send", "send", "send", "reprovision", "stop", "start"]);
    loop.add(drawDelay(r, "mixed") * (1 + int(r, 5)), "app", () => w.invoke(`app ${name}`, () => appCall(name)), () => false);
  }
  const maxSteps = options.maxSteps ?? 20 + int(r, 300);
  while (!w.failure && w.steps < maxSteps && loop.step()) stuck();
  if (!w.failure) {
    w.say("app stop (end)");
    appCall("stop");
    for (let i = 0; i < 200 && loop.step(); i++);
    if (rt.state !== "stopped") w.fail("stop", `state ${rt.state} after stop()`);
    if (socketsOpen.length > 0) w.fail("stop", `socket ${socketsOpen.join(", ")} still open after stop()`);
    if (runtimeTimer?.live) w.fail("stop", "a timer is still armed after stop()");
  }
  return { steps: w.steps, failure: w.failure, outcome: rt.state, marks: w.marks, documented: w.documented };
}

export function fuzzModdable(count: number, seed: number, options: ModdableSequenceOptions = {}): SequenceReport {
  return campaign("Moddable MQTT adapter + runtime", count, (index) => moddableSequence(seed, index, options));
}

// ---------------------------------------------------------------------------------------------
// The sample the XS tier runs (test/xs/fuzz.xs.ts), and what it emits for the Node comparison

/** Sized for a few seconds on xsnap, which runs these some 20 times slower than Node. */
export const XS_FUZZ_SAMPLE = { seed: 11, registration: 25, hub: 50, lifecycle: 25, driver: 50, moddable: 80 } as const;


/** The engine-independent part of a report: the same on Node and XS. */
export function fuzzSummary(report: SequenceReport): { runs: number; steps: number; failures: number; outcomes: Record<string, number>; documented: Record<string, number> } {
  return { runs: report.runs, steps: report.steps, failures: report.failures, outcomes: report.outcomes, documented: report.documented };
}
