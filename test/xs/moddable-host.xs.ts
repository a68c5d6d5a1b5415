// The Moddable host's adapters on XS, with stand-ins for the SDK classes (xsnap has no SDK
// modules): an ECMA-419 socket whose far end is a scripted DPS + hub, a resolver, timers on a
// virtual clock, a Digest over the portable SHA-256, a File over memory. The provisioning
// transcript (CONNACK, SUBACK, 202, poll, 200, hub CONNACK, PUBACK) runs through
// ModdableMqttConnector and the DeviceRuntime, and the bytes that reach the stand-in are checked.
import { deepEqual, equal, ok, run, test, throwsCode } from "./harness.js";
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import { hmacSha256, Sha256 } from "../../modules/sha256.js";
import { DeviceRuntime, type RuntimeEvent } from "../../modules/runtime.js";
import type { HttpsRequest, HttpsResponse, TimerPort, TransportFault } from "../../modules/ports.js";
import { FixedAddressResolver } from "../../hosts/moddable/dns.js";
import { FileFlash } from "../../hosts/moddable/flash.js";
import { ModdableHttpsPort } from "../../hosts/moddable/https.js";
import { ModdableMqttConnector } from "../../hosts/moddable/mqtt.js";
import { encodeConnect, encodePublish, FrameReader } from "../../hosts/moddable/mqtt-wire.js";
import { digestCrypto } from "../../hosts/moddable/platform.js";
import { readSettings } from "../../hosts/moddable/settings.js";
import type { HttpRequestHandle, HttpRequestOptions, StreamSocketOptions } from "../../hosts/moddable/sdk.js";

// ---------------------------------------------------------------------------------------------
// A virtual event loop: timers and socket callbacks run in due order; a step bound catches livelock.

class Loop implements TimerPort {
  now = 1_767_225_600_000;
  #queue: { due: number; seq: number; fn: () => void; live: boolean }[] = [];
  #seq = 0;
  set(fn: () => void, delayMs: number): unknown {
    const entry = { due: this.now + Math.max(0, delayMs), seq: this.#seq++, fn, live: true };
    this.#queue.push(entry);
    return entry;
  }
  clear(handle: unknown): void {
    if (handle) (handle as { live: boolean }).live = false;
  }
  /** Runs until `until()` holds or nothing is left; returns the steps taken. */
  run(until: () => boolean, maxSteps = 10_000): number {
    let steps = 0;
    while (!until()) {
      const live = this.#queue.filter((e) => e.live);
      if (live.length === 0) break;
      live.sort((a, b) => a.due - b.due || a.seq - b.seq);
      const next = live[0];
      next.live = false;
      this.#queue = live.slice(1);
      this.now = Math.max(this.now, next.due);
      next.fn();
      if (++steps > maxSteps) throw new Error(`no progress after ${maxSteps} steps`);
    }
    return steps;
  }
}

// ---------------------------------------------------------------------------------------------
// The far end: reads the device's packets (with its own minimal decoder, not the adapter's) and
// answers as DPS or the hub would.

interface Seen {
  readonly type: number;
  readonly flags: number;
  readonly topic?: string;
  readonly payload?: string;
  readonly clientId?: string;
  readonly username?: string;
}

function decodeDevicePacket(bytes: Uint8Array): Seen[] {
  const out: Seen[] = [];
  let i = 0;
  while (i < bytes.length) {
    const first = bytes[i++];
    let length = 0;
    let shift = 1;
    let digit: number;
    do {
      digit = bytes[i++];
      length += (digit & 0x7f) * shift;
      shift *= 128;
    } while (digit & 0x80);
    const body = bytes.subarray(i, i + length);
    i += length;
    const type = first >> 4;
    const str = (at: number): [string, number] => {
      const n = (body[at] << 8) | body[at + 1];
      return [utf8Decode(body.subarray(at + 2, at + 2 + n)), at + 2 + n];
    };
    if (type === 1) {
      const [clientId, a] = str(10);
      const [username] = str(a);
      out.push({ type, flags: body[7], clientId, username });
    } else if (type === 3) {
      const [topic, a] = str(0);
      const qos = (first >> 1) & 3;
      out.push({ type, flags: first & 15, topic, payload: utf8Decode(body.subarray(a + (qos ? 2 : 0))) });
    } else if (type === 8) {
      const [topic] = str(2);
      out.push({ type, flags: first & 15, topic });
    } else {
      out.push({ type, flags: first & 15 });
    }
  }
  return out;
}

const ridOf = (topic: string): string => /\$rid=([^&]+)/.exec(topic)![1];
const idOf = (bytes: Uint8Array, topicLength: number): number => (bytes[2 + 2 + topicLength] << 8) | bytes[2 + 2 + topicLength + 1];

/** Everything the stand-in sockets saw, for the assertions. */
interface Network {
  loop: Loop;
  sockets: { host?: string; address: string; port: number; options: Record<string, unknown> }[];
  seen: Seen[];
  written: number[];
  refuseConnack?: number;
}

function socketClass(net: Network) {
  return class StandInSocket {
    #options: StreamSocketOptions;
    #incoming: Uint8Array[] = [];
    #closed = false;
    constructor(options: StreamSocketOptions & Record<string, unknown>) {
      this.#options = options;
      const { onReadable: _r, onWritable: _w, onError: _e, ...rest } = options;
      net.sockets.push({ host: options.host, address: options.address, port: options.port, options: rest });
      // ECMA-419: the callbacks come later, from the event loop, with the socket as `this`.
      net.loop.set(() => !this.#closed && options.onWritable?.call(this, 1024), 1);
    }
    read(): ArrayBuffer | undefined {
      const next = this.#incoming.shift();
      return next ? (next.slice().buffer as ArrayBuffer) : undefined;
    }
    write(data: ArrayBuffer | Uint8Array): number {
      if (this.#closed) throw new Error("closed");
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
      for (const b of bytes) net.written.push(b);
      for (const p of decodeDevicePacket(bytes)) {
        net.seen.push(p);
        this.#answer(p, bytes);
      }
      return 1024;
    }
    close(): void {
      this.#closed = true;
    }
    #send(packet: Uint8Array): void {
      net.loop.set(() => {
        if (this.#closed) return;
        this.#incoming.push(packet);
        this.#options.onReadable?.call(this, packet.length);
      }, 5);
    }
    #answer(p: Seen, bytes: Uint8Array): void {
      const dps = (this.#options.host ?? "").includes("provisioning");
      if (p.type === 1) this.#send(Uint8Array.of(0x20, 2, 0, net.refuseConnack ?? 0));
      else if (p.type === 8) this.#send(Uint8Array.of(0x90, 3, bytes[2], bytes[3], 1));
      else if (p.type === 3 && dps && p.topic!.includes("iotdps-register")) {
        const topic = `$dps/registrations/res/202/?$rid=${ridOf(p.topic!)}&retry-after=1`;
        // Split in two reads, to exercise the frame reader across chunks.
        const whole = encodePublish(topic, utf8Encode('{"operationId":"4.op1","status":"assigning"}'), 0, 0);
        const cut = 7;
        this.#send(whole.subarray(0, cut));
        this.#send(whole.subarray(cut));
      } else if (p.type === 3 && dps && p.topic!.includes("iotdps-get-operationstatus")) {
        const topic = `$dps/registrations/res/200/?$rid=${ridOf(p.topic!)}`;
        const body = '{"operationId":"4.op1","status":"assigned","registrationState":{"registrationId":"xs-device","assignedHub":"hub-1.azure-devices.net","deviceId":"xs-device","status":"assigned","substatus":"initialAssignment"}}';
        this.#send(encodePublish(topic, utf8Encode(body), 0, 0));
      } else if (p.type === 3 && !dps && (p.flags & 6) === 2) {
        const id = idOf(bytes, utf8Encode(p.topic!).length);
        this.#send(Uint8Array.of(0x40, 2, id >> 8, id & 0xff));
      }
    }
  };
}

function network(): Network {
  return { loop: new Loop(), sockets: [], seen: [], written: [] };
}

const KEY = "eHMtdGllci1tb2RkYWJsZS1ob3N0LWtleS0wMTIzNDU=";

function device(net: Network, flash = new MemoryFlash({ sectorSize: 4096, sectorCount: 2 })) {
  const events: RuntimeEvent[] = [];
  const mqtt = new ModdableMqttConnector({
    socket: { io: socketClass(net), TCP: { io: "tcp-class" }, secure: { certificate: "ca" } },
    dns: { io: FixedAddressResolver, address: "127.0.0.1" },
    timers: net.loop,
  });
  let n = 7;
  const runtime = new DeviceRuntime(
    { idScope: "0ne00XS0001", registrationId: "xs-device", symmetricKey: KEY, hub: { keepAliveSeconds: 60 } },
    {
      mqtt,
      timers: net.loop,
      clock: () => net.loop.now,
      random: () => 0.5,
      secureRandom: (bytes) => bytes.forEach((_, i) => (bytes[i] = n++ & 0xff)),
      crypto: digestCrypto(PortableDigest),
      flash,
    },
    (e) => events.push(e),
  );
  return { runtime, events, flash };
}

/** A stand-in for the SDK's `crypt` Digest over the portable SHA-256. */
class PortableDigest {
  #h = new Sha256();
  constructor(algorithm: "SHA256") {
    if (algorithm !== "SHA256") throw new Error("only SHA256");
  }
  write(data: ArrayBuffer): void {
    this.#h.update(new Uint8Array(data));
  }
  close(): ArrayBuffer {
    return this.#h.digest().slice().buffer as ArrayBuffer;
  }
  reset(): void {
    this.#h = new Sha256();
  }
}

// ---------------------------------------------------------------------------------------------

test("provisioning transcript through the Moddable MQTT adapter: CONNACK, SUBACK, 202, poll, 200, hub CONNACK, PUBACK", () => {
  const net = network();
  const { runtime, events } = device(net);
  runtime.start();
  runtime.send({ n: 1 });
  net.loop.run(() => events.some((e) => e.source === "telemetry"));

  deepEqual(
    net.seen.map((p) => (p.type === 3 ? `PUBLISH ${p.topic!.split("?")[0]}` : p.type === 8 ? `SUBSCRIBE ${p.topic}` : `type ${p.type}`)),
    [
      "type 1",
      "SUBSCRIBE $dps/registrations/res/#",
      "PUBLISH $dps/registrations/PUT/iotdps-register/",
      "PUBLISH $dps/registrations/GET/iotdps-get-operationstatus/",
      "type 14",
      "type 1",
      "PUBLISH devices/xs-device/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
    ],
    "packets that reached the stand-in sockets, in order (CONNECT, ..., DISCONNECT, hub CONNECT, telemetry)",
  );
  // The DPS CONNECT names the scope and registration; the hub CONNECT names the hub and device.
  const connects = net.seen.filter((p) => p.type === 1);
  equal(connects[0].clientId, "xs-device", "DPS client id");
  ok(connects[0].username!.startsWith("0ne00XS0001/registrations/xs-device/api-version="), "DPS user name");
  equal(connects[1].clientId, "xs-device", "hub client id");
  ok(connects[1].username!.startsWith("hub-1.azure-devices.net/xs-device/?api-version="), "hub user name");
  // The sockets went to the resolver's address, with the service names for TLS, and the socket
  // options (TCP class, secure) passed through.
  deepEqual(
    net.sockets.map((s) => `${s.host} ${s.address}:${s.port}`),
    ["global.azure-devices-provisioning.net 127.0.0.1:8883", "hub-1.azure-devices.net 127.0.0.1:8883"],
    "socket targets",
  );
  deepEqual(net.sockets[0].options, { TCP: { io: "tcp-class" }, secure: { certificate: "ca" }, address: "127.0.0.1", host: "global.azure-devices-provisioning.net", port: 8883 }, "socket options passed through");
  equal(runtime.state, "connected", "runtime state");
  ok(events.some((e) => e.source === "cache" && e.state === "saved"), "the assignment was cached");
  runtime.stop();
});

test("a refused CONNACK reaches the core with its return code (5: not authorized)", () => {
  const net = network();
  net.refuseConnack = 5;
  const { runtime, events } = device(net);
  runtime.start();
  net.loop.run(() => events.some((e) => e.source === "dps" && e.status.connack !== undefined));
  const status = events.find((e) => e.source === "dps" && e.status.connack !== undefined);
  equal(status && status.source === "dps" ? status.status.connack : undefined, 5, "connack code in the DPS status");
  runtime.stop();
});

test("pipelining: SUBSCRIBE and PUBLISH called before the socket is writable go out after CONNECT, in order", () => {
  const net = network();
  const mqtt = new ModdableMqttConnector({ socket: { io: socketClass(net) }, dns: { io: FixedAddressResolver, address: "127.0.0.1" }, timers: net.loop });
  const acks: number[] = [];
  const session = mqtt.connect(
    { host: "dps.example", port: 8883, clientId: "c", username: "u", password: "secret-token", keepAliveSeconds: 0, cleanSession: true },
    { onConnack: (code) => acks.push(code), onSuback: () => {}, onMessage: () => {}, onPuback: () => {}, onClose: () => {} },
  );
  const sub = session.subscribe("a/#", 1);
  const pub = session.publish("b", utf8Encode("x"), 1);
  equal(net.written.length, 0, "nothing written before the socket is writable");
  net.loop.run(() => acks.length > 0);
  deepEqual(net.seen.map((p) => p.type), [1, 8, 3], "CONNECT, SUBSCRIBE, PUBLISH");
  deepEqual([sub, pub], [1, 2], "packet ids");
  session.close();
  session.close();
  equal(net.seen[net.seen.length - 1].type, 14, "close() sent DISCONNECT once and is idempotent");
});

test("the outgoing backlog is bounded: a flood before the socket opens ends the session with a fault", () => {
  const net = network();
  const mqtt = new ModdableMqttConnector({ socket: { io: socketClass(net) }, dns: { io: FixedAddressResolver, address: "127.0.0.1" }, timers: net.loop, maxQueuedBytes: 256 });
  const faults: TransportFault[] = [];
  const session = mqtt.connect(
    { host: "10.0.0.1", port: 1883, clientId: "c", username: "u", password: "p", keepAliveSeconds: 0, cleanSession: true },
    { onConnack: () => {}, onSuback: () => {}, onMessage: () => {}, onPuback: () => {}, onClose: (f) => faults.push(f) },
  );
  for (let i = 0; i < 10; i++) session.publish("t", new Uint8Array(40), 0);
  equal(faults.length, 1, "one fault");
  equal(faults[0].kind, "closed", "fault kind");
  equal(net.sockets[0].address, "10.0.0.1", "an IPv4 host needs no resolver");
});

/**
 * A stand-in for the SDK's TLSSocket where it matters here: it opens the TCP socket class it is
 * given (`TCP.io`) with callbacks of its own and runs its handshake inside them, letting the
 * handshake's exception escape, as `embedded:io/socket/tcp/tls` does with a rejected certificate.
 */
class RejectingTls {
  #tcp: { close(): void };
  constructor(options: StreamSocketOptions & Record<string, unknown>) {
    const TCP = (options.TCP as { io: new (o: StreamSocketOptions) => { close(): void } }).io;
    this.#tcp = new TCP({
      ...options,
      onReadable: () => {},
      onWritable: () => {
        throw new Error("ssl: certificate: no trusted root for global.azure-devices-provisioning.net");
      },
      onError: () => options.onError?.(),
    });
  }
  read(): undefined {
    return undefined;
  }
  write(): number {
    return 0;
  }
  close(): void {
    this.#tcp.close();
  }
}

test("a certificate the SDK's TLS layer rejects becomes a \"tls\" fault and a retry, not an abort", () => {
  const net = network();
  const mqtt = new ModdableMqttConnector({ socket: { io: RejectingTls, TCP: { io: socketClass(net) } }, dns: { io: FixedAddressResolver, address: "127.0.0.1" }, timers: net.loop });
  const faults: TransportFault[] = [];
  mqtt.connect(
    { host: "global.azure-devices-provisioning.net", port: 8883, clientId: "c", username: "u", password: "p", keepAliveSeconds: 0, cleanSession: true },
    { onConnack: () => {}, onSuback: () => {}, onMessage: () => {}, onPuback: () => {}, onClose: (f) => faults.push(f) },
  );
  net.loop.run(() => faults.length > 0);
  equal(faults.length, 1, "one fault");
  equal(faults[0].kind, "tls", "fault kind");
  ok(faults[0].message.includes("no trusted root"), `the TLS layer's reason is kept: ${faults[0].message}`);
  equal(net.written.length, 0, "nothing reached the socket");

  // Through the runtime: the retry policy schedules a new attempt.
  const events: RuntimeEvent[] = [];
  const runtime = new DeviceRuntime(
    { idScope: "0ne00XS0001", registrationId: "xs-device", symmetricKey: KEY },
    { mqtt, timers: net.loop, clock: () => net.loop.now, random: () => 0.5, secureRandom: (b) => b.fill(1), crypto: digestCrypto(PortableDigest) },
    (e) => events.push(e),
  );
  runtime.start();
  net.loop.run(() => events.some((e) => e.source === "dps" && e.status.state === "retrying"));
  const retry = events.find((e) => e.source === "dps" && e.status.state === "retrying");
  equal(retry && retry.source === "dps" ? retry.status.fault : undefined, "tls", "the DPS status names the fault");
  equal(runtime.state, "provisioning", "still provisioning, with a retry scheduled");
  runtime.stop();
});

/**
 * A stand-in for the SDK's HTTP client: it opens its socket (`socket.io` with the rest of
 * `socket`, as the SDK's does), and answers the request from `reply` through the request's
 * callbacks, from the event loop.
 */
function httpClientClass(loop: Loop, reply: { status: number; headers: [string, string][]; body: string }, seen: { host?: string; path?: string; headers?: Map<string, string>; body: number[]; closed: number }) {
  return class StandInHttpClient {
    constructor(options: { host: string; port: number; socket?: Record<string, unknown> } & Record<string, unknown>) {
      seen.host = options.host;
      if (options.socket) {
        const { io: Socket, ...rest } = options.socket as { io: new (o: Record<string, unknown>) => unknown };
        new Socket({ ...rest, address: "127.0.0.1", host: options.host, port: options.port, onReadable: () => {}, onWritable: () => {}, onError: () => {} });
      }
    }
    request(options: HttpRequestOptions): HttpRequestHandle {
      seen.path = options.path;
      seen.headers = options.headers;
      let body = utf8Encode(reply.body);
      const handle: HttpRequestHandle = {
        read: (count?: number) => {
          const part = body.subarray(0, count ?? body.length);
          body = body.subarray(part.length);
          return part.slice().buffer as ArrayBuffer;
        },
        write: (data: ArrayBuffer) => seen.body.push(...new Uint8Array(data)),
      };
      loop.set(() => options.onWritable?.call(handle, 1024), 1);
      loop.set(() => options.onHeaders?.call(handle, reply.status, new Map(reply.headers)), 2);
      loop.set(() => options.onReadable?.call(handle, body.length), 3);
      loop.set(() => options.onDone?.call(handle, undefined), 4);
      return handle;
    }
    close(): void {
      seen.closed++;
    }
  };
}

const LOOKUP: HttpsRequest = {
  method: "POST",
  host: "global.azure-devices-provisioning.net",
  port: 443,
  path: "/0ne00XS0001/registrations/xs-device?api-version=2021-06-01",
  headers: { host: "global.azure-devices-provisioning.net", authorization: "SharedAccessSignature sr=x&sig=y&se=1", "content-type": "application/json" },
  body: utf8Encode('{"registrationId":"xs-device"}'),
};

test("HTTPS adapter: the status lookup's response read whole, headers lower-cased, one callback, the client closed", () => {
  const loop = new Loop();
  const seen = { body: [] as number[], closed: 0 } as { host?: string; path?: string; headers?: Map<string, string>; body: number[]; closed: number };
  const https = new ModdableHttpsPort({ client: { io: httpClientClass(loop, { status: 200, headers: [["Content-Type", "application/json"]], body: '{"status":"assigned"}' }, seen) } });
  const responses: HttpsResponse[] = [];
  const faults: TransportFault[] = [];
  https.request(LOOKUP, (r) => responses.push(r), (f) => faults.push(f));
  loop.run(() => false);
  equal(faults.length, 0, "no fault");
  equal(responses.length, 1, "one response");
  equal(responses[0].status, 200, "status");
  equal(responses[0].headers["content-type"], "application/json", "header names lower-cased");
  equal(utf8Decode(responses[0].body), '{"status":"assigned"}', "body");
  equal(utf8Decode(Uint8Array.from(seen.body)), '{"registrationId":"xs-device"}', "request body written");
  equal(seen.headers!.get("content-length"), "30", "content-length sent");
  equal(seen.headers!.has("host"), false, "the client writes its own host line");
  equal(seen.closed, 1, "client closed once");
});

test("HTTPS adapter: a body over maxResponseBytes is a \"protocol\" fault, reported once", () => {
  const loop = new Loop();
  const seen = { body: [] as number[], closed: 0 };
  const https = new ModdableHttpsPort({ client: { io: httpClientClass(loop, { status: 200, headers: [], body: "x".repeat(100) }, seen) }, maxResponseBytes: 64 });
  const faults: TransportFault[] = [];
  https.request(LOOKUP, () => faults.push({ kind: "closed", message: "unexpected response" }), (f) => faults.push(f));
  loop.run(() => false);
  deepEqual(faults.map((f) => f.kind), ["protocol"], "one protocol fault, no response");
});

test("HTTPS adapter: a certificate the SDK's TLS layer rejects is a \"tls\" fault, not an abort", () => {
  const loop = new Loop();
  const net = network();
  net.loop = loop;
  const seen = { body: [] as number[], closed: 0 };
  const https = new ModdableHttpsPort({
    client: { io: httpClientClass(loop, { status: 200, headers: [], body: "{}" }, seen), socket: { io: RejectingTls, TCP: { io: socketClass(net) } } },
  });
  const faults: TransportFault[] = [];
  const responses: HttpsResponse[] = [];
  https.request(LOOKUP, (r) => responses.push(r), (f) => faults.push(f));
  loop.run(() => false);
  deepEqual(faults.map((f) => f.kind), ["tls"], "one tls fault");
  ok(faults[0].message.includes("no trusted root"), `the TLS layer's reason is kept: ${faults[0].message}`);
  equal(responses.length, 0, "no response after the fault");
});

test("frame reader: whole, byte by byte, several packets in one chunk, an oversize SUBACK refused (an oversize PUBLISH: test/support/moddable-mqtt-cases.ts)", () => {
  const packets = [encodePublish("t/1", utf8Encode("hello"), 1, 9), Uint8Array.of(0xd0, 0), encodeConnect({ clientId: "c", username: "u", password: "p", keepAliveSeconds: 30, cleanSession: true })];
  const all = new Uint8Array(packets.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of packets) {
    all.set(p, at);
    at += p.length;
  }
  const whole: number[] = [];
  equal(new FrameReader(64).push(all, (p) => whole.push(p.type)), undefined, "no error");
  deepEqual(whole, [3, 13, 1], "three packets from one chunk");
  const split: number[] = [];
  const reader = new FrameReader(64);
  for (let i = 0; i < all.length; i++) reader.push(all.subarray(i, i + 1), (p) => split.push(p.body.length));
  deepEqual(split, [packets[0].length - 2, 0, packets[2].length - 2], "byte by byte");
  const small = new FrameReader(16);
  const suback = new Uint8Array(2 + 2 + 100).fill(1);
  suback.set([0x90, 102, 0, 1]);
  ok(small.push(suback, () => {})?.includes("an incoming packet of 104 bytes, over the 16-byte limit"), "oversize refused");
  ok(small.oversize, "and marked oversize, for the session's fault kind");
  const broken = new FrameReader(64);
  ok(broken.push(Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x01), () => {})?.includes("four bytes"), "five-byte length refused");
  ok(!broken.oversize, "a broken length is a protocol fault, not oversize");
});

test("HMAC-SHA256 over a Digest matches the portable HMAC (short key, 64-byte key, long key)", () => {
  const crypto = digestCrypto(PortableDigest);
  for (const keyLength of [16, 64, 100]) {
    const key = new Uint8Array(keyLength).map((_, i) => i * 7);
    const message = utf8Encode("0ne00XS0001%2Fregistrations%2Fxs-device\n1767229200");
    deepEqual(Array.from(crypto.hmacSha256(key, message)), Array.from(hmacSha256(key, message)), `key of ${keyLength} bytes`);
  }
});

test("FileFlash keeps NOR semantics over a file: writes AND, erase sets 0xFF, range checked", () => {
  const store = { bytes: new Uint8Array(0) };
  class MemoryFile {
    position = 0;
    get length(): number {
      return store.bytes.length;
    }
    read(_type: typeof ArrayBuffer, count: number): ArrayBuffer {
      const out = store.bytes.slice(this.position, this.position + count);
      this.position += count;
      return out.buffer as ArrayBuffer;
    }
    write(data: ArrayBuffer): void {
      const bytes = new Uint8Array(data);
      if (this.position + bytes.length > store.bytes.length) {
        const grown = new Uint8Array(this.position + bytes.length);
        grown.set(store.bytes);
        store.bytes = grown;
      }
      store.bytes.set(bytes, this.position);
      this.position += bytes.length;
    }
    close(): void {}
  }
  const flash = new FileFlash({ File: MemoryFile, path: "/tmp/x.flash", sectorSize: 256, sectorCount: 2 });
  equal(store.bytes.length, 512, "created at full size");
  ok(store.bytes.every((b) => b === 0xff), "created erased");
  flash.write(10, Uint8Array.of(0xf0, 0x0f));
  flash.write(10, Uint8Array.of(0x3c, 0xff));
  deepEqual(Array.from(flash.read(10, 2)), [0x30, 0x0f], "writes only clear bits");
  flash.erase(0);
  deepEqual(Array.from(flash.read(10, 2)), [0xff, 0xff], "erase restores 0xFF");
  throwsCode(() => flash.read(500, 20), "INVALID_ARGUMENT", "read past the end");
});

test("settings: config and preferences, preferences first; a missing key is named", () => {
  const config = { idScope: "0ne00XS0001", registrationId: "from-config", symmetricKey: KEY, transport: "tcp", dpsPort: "1883", messages: 2 };
  const s = readSettings(config, (name) => (name === "registrationId" ? "from-preference" : undefined), true);
  equal(s.runtime.registrationId, "from-preference", "preference wins");
  equal(s.runtime.dpsPort, 1883, "numbers parsed");
  equal(s.host.transport, "tcp", "transport");
  deepEqual(s.host.ntpServers, [], "no NTP on a simulator by default");
  equal(readSettings(config, () => undefined, false).host.ntpServers.length > 0, true, "NTP on a device by default");
  const error = throwsCode(() => readSettings({ idScope: "x", symmetricKey: KEY }, () => undefined, true), "INVALID_ARGUMENT", "missing registrationId");
  ok(error.message.includes("registrationId"), "the message names the setting");
  throwsCode(() => readSettings({ ...config, ca: "letsencrypt" }, () => undefined, true), "INVALID_ARGUMENT", "unknown CA");
});

await run("moddable-host");
