/**
 * The Moddable host's incoming PUBLISH path, portable: the same cases run on Node
 * (test/moddable-mqtt.test.ts) and on the real XS engine (test/xs/moddable-mqtt.xs.ts).
 *
 * FrameReader (hosts/moddable/mqtt-wire.ts) with a PUBLISH over its limit among other packets,
 * whole, byte by byte, split at every boundary and with trailing data; and ModdableMqttConnector
 * (hosts/moddable/mqtt.ts) on a stand-in ECMA-419 socket whose incoming bytes the case writes and
 * whose outgoing bytes it records: onMessage before PUBACK, no PUBACK when the core closed the
 * session inside onMessage or onMessage threw, an oversize PUBLISH delivered as topic, empty
 * payload and size with the session left open. Each case throws an AssertionError on failure.
 */
import { deepEqual, equal, ok } from "../xs/harness.js";
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import type { MqttSession, TimerPort, TransportFault } from "../../modules/ports.js";
import { ModdableMqttConnector } from "../../hosts/moddable/mqtt.js";
import { encodePublish, FrameReader, type Packet } from "../../hosts/moddable/mqtt-wire.js";
import { FixedAddressResolver } from "../../hosts/moddable/dns.js";
import type { StreamSocketOptions } from "../../hosts/moddable/sdk.js";

export interface PortableCase {
  readonly name: string;
  readonly fn: () => void;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

/** What a reader hands out, one line per packet. */
function describePacket(p: Packet): string {
  const payload = p.oversize === undefined ? ` ${utf8Decode(p.body)}` : "";
  return `type=${p.type} flags=${p.flags} body=${p.body.length}${p.oversize === undefined ? "" : ` oversize=${p.oversize}`}${payload}`;
}

/** Pushes `chunks` through a reader of `limit`; the packets out, then the error if any. */
function read(limit: number, chunks: readonly Uint8Array[]): string[] {
  const reader = new FrameReader(limit);
  const out: string[] = [];
  for (const chunk of chunks) {
    const error = reader.push(chunk, (p) => out.push(describePacket(p)));
    if (error !== undefined) {
      out.push(`error${reader.oversize ? " (oversize)" : ""}: ${error}`);
      break;
    }
  }
  return out;
}

const PINGRESP = Uint8Array.of(0xd0, 0);
const puback = (id: number): number[] => [0x40, 2, id >> 8, id & 0xff];

// ---------------------------------------------------------------------------------------------
// A stand-in socket and timers: the case delivers incoming chunks and reads what was written.

interface Peer {
  readonly written: number[];
  /** Delivers each chunk as its own read, from "the event loop" (outside any session call). */
  deliver(...chunks: Uint8Array[]): void;
  /** Runs the timers due (the adapter's work moved out of a call). */
  drain(): void;
  closed: boolean;
}

function connectToPeer(maxPacketBytes: number | undefined, callbacks: { onMessage: (topic: string, payload: Uint8Array, oversize?: number) => void; onClose?: (fault: TransportFault) => void }): { session: MqttSession; peer: Peer } {
  const incoming: Uint8Array[] = [];
  const queue: { fn: () => void; live: boolean }[] = [];
  let options: StreamSocketOptions | undefined;
  let self: unknown;
  const peer: Peer = {
    written: [],
    closed: false,
    deliver(...chunks) {
      for (const chunk of chunks) {
        incoming.push(chunk);
        options!.onReadable?.call(self as never, chunk.length);
      }
    },
    drain() {
      for (let steps = 0; queue.length > 0; steps++) {
        if (steps > 1000) throw new Error("timers: no progress after 1000 steps");
        const next = queue.shift()!;
        if (next.live) next.fn();
      }
    },
  };
  class PeerSocket {
    constructor(o: StreamSocketOptions) {
      options = o;
      self = this;
    }
    read(): ArrayBuffer | undefined {
      const next = incoming.shift();
      return next ? (next.slice().buffer as ArrayBuffer) : undefined;
    }
    write(data: ArrayBuffer | Uint8Array): number {
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
      for (let i = 0; i < bytes.length; i++) peer.written.push(bytes[i]);
      return 4096;
    }
    close(): void {
      peer.closed = true;
    }
  }
  const timers: TimerPort = {
    set: (fn) => {
      const entry = { fn, live: true };
      queue.push(entry);
      return entry;
    },
    clear: (handle) => {
      if (handle) (handle as { live: boolean }).live = false;
    },
  };
  const mqtt = new ModdableMqttConnector({ socket: { io: PeerSocket as never }, dns: { io: FixedAddressResolver, address: "127.0.0.1" }, timers, secure: false, maxPacketBytes });
  const session = mqtt.connect(
    { host: "10.0.0.1", port: 1883, clientId: "c", username: "u", password: "p", keepAliveSeconds: 0, cleanSession: false },
    { onConnack: () => {}, onSuback: () => {}, onPuback: () => {}, onMessage: callbacks.onMessage, onClose: callbacks.onClose ?? (() => {}) },
  );
  options!.onWritable?.call(self as never, 4096); // CONNECT goes out
  peer.deliver(Uint8Array.of(0x20, 2, 0, 0)); // CONNACK, accepted
  peer.written.length = 0;
  return { session, peer };
}

// ---------------------------------------------------------------------------------------------

export const moddableMqttCases: readonly PortableCase[] = [
  {
    name: "frame reader: oversize PUBLISHes among other packets, whole, byte by byte, split at every boundary: the others whole and in order, the big ones as topic and id with their size",
    fn: () => {
      const bigQos1 = encodePublish("devices/d1/messages/devicebound/x", new Uint8Array(300).fill(0x41), 1, 6);
      const bigQos0 = encodePublish("q", new Uint8Array(100).fill(0x42), 0, 0);
      const stream = concat([encodePublish("t/a", utf8Encode("before"), 1, 5), PINGRESP, bigQos1, Uint8Array.of(0x90, 3, 0, 2, 1), encodePublish("t/b", utf8Encode("after"), 0, 0), bigQos0, PINGRESP]);
      const expected = [
        `type=3 flags=2 body=${2 + 3 + 2 + 6} ${utf8Decode(encodePublish("t/a", utf8Encode("before"), 1, 5).subarray(2))}`,
        "type=13 flags=0 body=0 ",
        `type=3 flags=2 body=${2 + 33 + 2} oversize=${bigQos1.length}`,
        `type=9 flags=0 body=3 ${utf8Decode(Uint8Array.of(0, 2, 1))}`,
        `type=3 flags=0 body=${2 + 3 + 5} ${utf8Decode(encodePublish("t/b", utf8Encode("after"), 0, 0).subarray(2))}`,
        `type=3 flags=0 body=${2 + 1} oversize=${bigQos0.length}`,
        "type=13 flags=0 body=0 ",
      ];
      deepEqual(read(64, [stream]), expected, "whole");
      const bytes: Uint8Array[] = [];
      for (let i = 0; i < stream.length; i++) bytes.push(stream.subarray(i, i + 1));
      deepEqual(read(64, bytes), expected, "byte by byte");
      for (let cut = 1; cut < stream.length; cut++) deepEqual(read(64, [stream.subarray(0, cut), stream.subarray(cut)]), expected, `split at byte ${cut}`);
      // The body of the skipped one is what decodePublish needs: topic length, topic, packet id.
      const reader = new FrameReader(64);
      const out: Packet[] = [];
      reader.push(bigQos1, (p) => out.push(p));
      equal(utf8Decode(out[0].body.subarray(2, 35)), "devices/d1/messages/devicebound/x", "topic kept");
      deepEqual([out[0].body[35], out[0].body[36]], [0, 6], "packet id kept");
    },
  },
  {
    name: "frame reader: a PUBLISH announcing the largest remaining length (268,435,455) is discarded 1 MiB at a time, then reading resumes",
    fn: () => {
      const topic = utf8Encode("devices/d1/messages/devicebound/");
      // 0x32: PUBLISH QoS 1; ff ff ff 7f: remaining length 268,435,455 (2.2.3).
      const head = concat([Uint8Array.of(0x32, 0xff, 0xff, 0xff, 0x7f, 0, topic.length), topic, Uint8Array.of(0x12, 0x34)]);
      let payload = 268_435_455 - (head.length - 5);
      const block = new Uint8Array(1024 * 1024);
      const chunks: Uint8Array[] = [head];
      for (; payload > block.length; payload -= block.length) chunks.push(block);
      chunks.push(concat([block.subarray(0, payload), PINGRESP]));
      deepEqual(read(8192, chunks), [`type=3 flags=2 body=${2 + topic.length + 2} oversize=268435460`, "type=13 flags=0 body=0 "]);
    },
  },
  {
    name: "frame reader: another type or a PUBLISH whose topic alone is over the limit is refused as oversize; QoS 3 and a five-byte length are protocol errors",
    fn: () => {
      deepEqual(read(16, [concat([Uint8Array.of(0x90, 20, 0, 1), new Uint8Array(18).fill(1)])]), ["error (oversize): an incoming packet of 22 bytes, over the 16-byte limit"]);
      deepEqual(read(16, [encodePublish("a/long/topic/name", utf8Encode("x"), 0, 0)]), ["error (oversize): an incoming PUBLISH of 22 bytes whose topic alone takes 21, over the 16-byte limit"]);
      deepEqual(read(16, [Uint8Array.of(0x36, 0x20, 0, 1, 0x61)]), ["error: PUBLISH with QoS 3 (3.3.1-4)"]);
      deepEqual(read(16, [Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x01)]), ["error: malformed remaining length: more than four bytes (2.2.3)"]);
      const exact = encodePublish("t", new Uint8Array(11).fill(0x43), 0, 0);
      equal(exact.length, 16, "a packet of exactly the limit");
      deepEqual(read(16, [exact]), [`type=3 flags=0 body=14 ${utf8Decode(exact.subarray(2))}`], "exactly at the limit is read whole");
    },
  },
  {
    name: "Moddable MQTT adapter: a 64 KiB PUBLISH over an 8 KiB limit, in 1 KiB reads, the small one behind it in the last: onMessage gets topic, empty payload and size, then the small one; both PUBACKed; the session stays open",
    fn: () => {
      const messages: string[] = [];
      const faults: TransportFault[] = [];
      const { session, peer } = connectToPeer(8192, {
        onMessage: (topic, payload, oversize) => messages.push(`${topic} ${payload.length} ${oversize} ${utf8Decode(payload)}`),
        onClose: (f) => faults.push(f),
      });
      const big = encodePublish("devices/d1/messages/devicebound/", new Uint8Array(64 * 1024).fill(7), 1, 7);
      const small = encodePublish("devices/d1/messages/devicebound/", utf8Encode("small"), 1, 8);
      const stream = concat([big, small]);
      const reads: Uint8Array[] = [];
      for (let at = 0; at < stream.length; at += 1024) reads.push(stream.subarray(at, at + 1024));
      ok(reads[reads.length - 1].length > stream.length - big.length, "the last read holds the big one's tail and the small one");
      peer.deliver(...reads);
      peer.drain();
      deepEqual(messages, [`devices/d1/messages/devicebound/ 0 ${big.length} `, "devices/d1/messages/devicebound/ 5 undefined small"]);
      equal(big.length, 65_536 + 32 + 8, "the size counts the fixed header (4), topic length (2), topic, packet id (2) and payload");
      deepEqual(peer.written, [...puback(7), ...puback(8)], "PUBACK for both, in order");
      deepEqual(faults, [], "no fault");
      equal(peer.closed, false, "the socket is open");
      session.close();
    },
  },
  {
    name: "Moddable MQTT adapter: onMessage comes before the PUBACK; a session closed inside onMessage sends no PUBACK; a throw inside it is contained, sends none, and the next message is PUBACKed",
    fn: () => {
      // Order: when onMessage runs, nothing has been written yet.
      const seenInside: number[] = [];
      const order = connectToPeer(undefined, { onMessage: () => seenInside.push(order.peer.written.length) });
      order.peer.deliver(encodePublish("down/1", utf8Encode("one"), 1, 1));
      deepEqual(seenInside, [0], "no PUBACK written before onMessage");
      deepEqual(order.peer.written, puback(1), "PUBACK once onMessage returned");
      order.session.close();

      // Closing inside onMessage: DISCONNECT only, no PUBACK.
      const closing = connectToPeer(undefined, { onMessage: () => closing.session.close() });
      closing.peer.deliver(encodePublish("down/2", utf8Encode("two"), 1, 2));
      closing.peer.drain();
      deepEqual(closing.peer.written, [0xe0, 0], "DISCONNECT and no PUBACK");
      ok(closing.peer.closed, "closed");

      // A throw inside onMessage: no PUBACK for it, nothing escapes the socket callback, the session goes on.
      const faults: TransportFault[] = [];
      const got: string[] = [];
      const throwing = connectToPeer(undefined, {
        onMessage: (topic) => {
          got.push(topic);
          if (topic === "down/throw") throw new Error("the core broke");
        },
        onClose: (f) => faults.push(f),
      });
      throwing.peer.deliver(concat([encodePublish("down/throw", utf8Encode("x"), 1, 3), encodePublish("down/fine", utf8Encode("y"), 1, 4)]));
      throwing.peer.drain();
      deepEqual(got, ["down/throw", "down/fine"], "both delivered");
      deepEqual(throwing.peer.written, puback(4), "PUBACK for the second only");
      deepEqual(faults, [], "no fault");
      throwing.session.close();
    },
  },
];
