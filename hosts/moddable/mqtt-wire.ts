/**
 * MQTT 3.1.1 on the wire, for the device: the few packets a DPS or IoT Hub client sends and
 * receives, encoded into and decoded from plain byte arrays. Pure functions and one incremental
 * frame reader with a size limit; no I/O. mqtt.ts moves the bytes over an ECMA-419 socket.
 *
 * Only what the runtime needs: CONNECT (user name and password, no will), SUBSCRIBE of one topic
 * at QoS 0 or 1, PUBLISH at QoS 0 or 1, PUBACK, PINGREQ and DISCONNECT out; CONNACK, SUBACK,
 * PUBLISH (QoS 0 or 1), PUBACK and PINGRESP in. Section numbers are those of the OASIS standard.
 */
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import { check } from "../../modules/errors.js";

/** Control packet types (2.2.1). */
export const CONNECT = 1;
export const CONNACK = 2;
export const PUBLISH = 3;
export const PUBACK = 4;
export const SUBSCRIBE = 8;
export const SUBACK = 9;
export const PINGREQ = 12;
export const PINGRESP = 13;
export const DISCONNECT = 14;

/** The largest remaining length a four-byte varint can express (2.2.3). */
const MAX_REMAINING = 268_435_455;

/** Where a packet of `body` bytes goes: fixed header (type, flags, remaining length) first. */
function frame(typeAndFlags: number, body: number): { bytes: Uint8Array; at: number } {
  check(body <= MAX_REMAINING, `MQTT packet body of ${body} bytes is over the limit of 2.2.3`);
  let header = 2;
  for (let n = body; n >= 128; n = Math.floor(n / 128)) header++;
  const bytes = new Uint8Array(header + body);
  bytes[0] = typeAndFlags;
  let at = 1;
  let n = body;
  do {
    let digit = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) digit |= 0x80;
    bytes[at++] = digit;
  } while (n > 0);
  return { bytes, at };
}

/** Writes a UTF-8 string with its two-byte length (1.5.3); returns the next offset. */
function putString(bytes: Uint8Array, at: number, text: Uint8Array): number {
  bytes[at] = text.length >> 8;
  bytes[at + 1] = text.length & 0xff;
  bytes.set(text, at + 2);
  return at + 2 + text.length;
}

function encodedString(text: string, what: string): Uint8Array {
  const bytes = utf8Encode(text);
  check(bytes.length <= 0xffff, `${what} is ${bytes.length} bytes of UTF-8; MQTT strings hold at most 65535 (1.5.3)`);
  return bytes;
}

export interface ConnectFields {
  readonly clientId: string;
  readonly username: string;
  readonly password: string;
  readonly keepAliveSeconds: number;
  readonly cleanSession: boolean;
}

/**
 * CONNECT for MQTT 3.1.1 (3.1): protocol "MQTT" level 4, user name and password always present.
 * The returned bytes hold the password: the caller drops them once written.
 * @throws UsageError INVALID_ARGUMENT for a keepalive outside 0..65535 or an oversize string.
 */
export function encodeConnect(f: ConnectFields): Uint8Array {
  check(Number.isInteger(f.keepAliveSeconds) && f.keepAliveSeconds >= 0 && f.keepAliveSeconds <= 0xffff, "keepAliveSeconds must be an integer in 0..65535");
  const id = encodedString(f.clientId, "client id");
  const user = encodedString(f.username, "user name");
  const pass = encodedString(f.password, "password");
  const { bytes, at } = frame(CONNECT << 4, 10 + 6 + id.length + user.length + pass.length);
  // Protocol name, level 4, flags (user name 0x80, password 0x40, clean session 0x02), keepalive.
  bytes.set([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0xc0 | (f.cleanSession ? 2 : 0), f.keepAliveSeconds >> 8, f.keepAliveSeconds & 0xff], at);
  putString(bytes, putString(bytes, putString(bytes, at + 10, id), user), pass);
  return bytes;
}

/** SUBSCRIBE of one topic filter (3.8); fixed-header flags 0b0010 as 3.8.1 requires. */
export function encodeSubscribe(packetId: number, topic: string, qos: 0 | 1): Uint8Array {
  const t = encodedString(topic, "topic filter");
  const { bytes, at } = frame((SUBSCRIBE << 4) | 2, 2 + 2 + t.length + 1);
  bytes[at] = packetId >> 8;
  bytes[at + 1] = packetId & 0xff;
  bytes[putString(bytes, at + 2, t)] = qos;
  return bytes;
}

/** PUBLISH (3.3); `packetId` only for QoS 1. */
export function encodePublish(topic: string, payload: Uint8Array, qos: 0 | 1, packetId: number): Uint8Array {
  const t = encodedString(topic, "topic");
  const { bytes, at } = frame((PUBLISH << 4) | (qos << 1), 2 + t.length + (qos ? 2 : 0) + payload.length);
  let p = putString(bytes, at, t);
  if (qos) {
    bytes[p++] = packetId >> 8;
    bytes[p++] = packetId & 0xff;
  }
  bytes.set(payload, p);
  return bytes;
}

/** PUBACK (3.4). */
export function encodePuback(packetId: number): Uint8Array {
  return Uint8Array.of(PUBACK << 4, 2, packetId >> 8, packetId & 0xff);
}

export const pingreqPacket: Uint8Array = Uint8Array.of(PINGREQ << 4, 0);
export const disconnectPacket: Uint8Array = Uint8Array.of(DISCONNECT << 4, 0);

/** One packet read off the wire: its type, the four flag bits and the variable header and payload. */
export interface Packet {
  readonly type: number;
  readonly flags: number;
  readonly body: Uint8Array;
  /**
   * Set for a PUBLISH over the reader's limit: its whole size on the wire in bytes (fixed header,
   * topic, packet id and payload). `body` then holds only the topic length, topic and packet id;
   * the payload was discarded unread.
   */
  readonly oversize?: number;
}

/** Where a FrameReader is within a packet; an oversize PUBLISH goes through the last three. */
const Stage = { Type: 0, Length: 1, Body: 2, TopicLength: 3, Topic: 4, Discard: 5 } as const;

/**
 * Splits a byte stream into packets. Bytes may arrive in any split (one at a time, several
 * packets at once); a packet is handed out once whole. Memory is bounded by `maxPacketBytes`
 * whatever a packet announces. A larger PUBLISH is not refused: its topic and packet id are kept
 * (they must fit within the limit with the fixed header), its payload is discarded as it streams
 * in, and once its last byte has passed it is handed out with `oversize` set and a body of topic
 * and packet id only. Any other packet over the limit is refused before anything is buffered.
 *
 * A PUBLISH of 64 KiB to `devices/d1/messages/devicebound/` with a limit of 8 KiB: the header
 * `32 a4 80 04` (QoS 1, remaining length 65,572), `00 20` and the 32 topic bytes, `00 07` (packet
 * id 7), then 65,536 payload bytes discarded; out comes `{ type: 3, flags: 2, body: <the 36 bytes
 * of topic length, topic and id>, oversize: 65576 }`.
 */
export class FrameReader {
  readonly #max: number;
  #stage: number = Stage.Type;
  #type = 0;
  #length = 0;
  #shift = 1;
  #lengthBytes = 0;
  #body: Uint8Array | undefined;
  #filled = 0;
  /** The oversize PUBLISH being read: its whole size, its topic length, and its body bytes not yet read or discarded. */
  #size = 0;
  #topicLength = 0;
  #left = 0;
  /** Set when `push` refused a packet for its size (the session reports "oversize", not "protocol"). */
  oversize = false;

  /** @throws UsageError INVALID_ARGUMENT unless `maxPacketBytes` is an integer of at least 16. */
  constructor(maxPacketBytes: number) {
    check(Number.isInteger(maxPacketBytes) && maxPacketBytes >= 16, "maxPacketBytes must be an integer of at least 16");
    this.#max = maxPacketBytes;
  }

  /**
   * Consumes `chunk`, calling `onPacket` for each complete packet. Returns undefined, or the
   * reason the stream is not valid MQTT (then the connection must close; the reader is spent).
   */
  push(chunk: Uint8Array, onPacket: (packet: Packet) => void): string | undefined {
    let i = 0;
    while (i < chunk.length) {
      switch (this.#stage) {
        case Stage.Type:
          this.#type = chunk[i++];
          this.#length = 0;
          this.#shift = 1;
          this.#lengthBytes = 0;
          this.#stage = Stage.Length;
          continue;
        case Stage.Length: {
          const digit = chunk[i++];
          this.#length += (digit & 0x7f) * this.#shift;
          this.#shift *= 128;
          if (++this.#lengthBytes > 4) return "malformed remaining length: more than four bytes (2.2.3)";
          if (digit & 0x80) continue;
          const size = this.#length + 1 + this.#lengthBytes;
          if (size <= this.#max) {
            this.#body = new Uint8Array(this.#length);
            this.#filled = 0;
            this.#stage = Stage.Body;
          } else if (this.#type >> 4 !== PUBLISH) {
            this.oversize = true;
            return `an incoming packet of ${size} bytes, over the ${this.#max}-byte limit`;
          } else if (((this.#type >> 1) & 3) === 3) {
            return "PUBLISH with QoS 3 (3.3.1-4)";
          } else {
            this.#size = size;
            this.#left = this.#length;
            this.#topicLength = 0;
            this.#filled = 0;
            this.#stage = Stage.TopicLength;
          }
          break;
        }
        case Stage.Body: {
          const body = this.#body!;
          const n = Math.min(body.length - this.#filled, chunk.length - i);
          body.set(chunk.subarray(i, i + n), this.#filled);
          this.#filled += n;
          i += n;
          break;
        }
        case Stage.TopicLength: {
          this.#topicLength = this.#topicLength * 256 + chunk[i++];
          this.#left--;
          if (++this.#filled < 2) continue;
          const head = 2 + this.#topicLength + (this.#type & 6 ? 2 : 0);
          if (1 + this.#lengthBytes + head > this.#max) {
            this.oversize = true;
            return `an incoming PUBLISH of ${this.#size} bytes whose topic alone takes ${1 + this.#lengthBytes + head}, over the ${this.#max}-byte limit`;
          }
          // Within the limit, and the whole packet is over it: the topic ends inside the packet.
          const body = (this.#body = new Uint8Array(head));
          body[0] = this.#topicLength >> 8;
          body[1] = this.#topicLength & 0xff;
          this.#stage = Stage.Topic;
          break;
        }
        case Stage.Topic: {
          const body = this.#body!;
          const n = Math.min(body.length - this.#filled, chunk.length - i);
          body.set(chunk.subarray(i, i + n), this.#filled);
          this.#filled += n;
          this.#left -= n;
          i += n;
          if (this.#filled === body.length) this.#stage = Stage.Discard;
          break;
        }
        default: {
          const n = Math.min(this.#left, chunk.length - i);
          this.#left -= n;
          i += n;
          break;
        }
      }
      if (this.#stage === Stage.Body && this.#filled === this.#body!.length) {
        const packet: Packet = { type: this.#type >> 4, flags: this.#type & 15, body: this.#body! };
        this.#stage = Stage.Type;
        this.#body = undefined;
        onPacket(packet);
      } else if (this.#stage === Stage.Discard && this.#left === 0) {
        const packet: Packet = { type: PUBLISH, flags: this.#type & 15, body: this.#body!, oversize: this.#size };
        this.#stage = Stage.Type;
        this.#body = undefined;
        onPacket(packet);
      }
    }
    return undefined;
  }
}

/** The packet id at the start of a body (PUBACK, SUBACK), or -1 when it is too short. */
export function packetIdOf(body: Uint8Array): number {
  return body.length >= 2 ? (body[0] << 8) | body[1] : -1;
}

/** A PUBLISH's topic, payload, QoS and packet id (3.3); a string says why it is malformed. */
export function decodePublish(flags: number, body: Uint8Array): { topic: string; payload: Uint8Array; qos: number; packetId: number } | string {
  const qos = (flags >> 1) & 3;
  if (qos === 3) return "PUBLISH with QoS 3 (3.3.1-4)";
  if (body.length < 2) return "PUBLISH too short for its topic length";
  const end = 2 + ((body[0] << 8) | body[1]);
  const idEnd = end + (qos ? 2 : 0);
  if (idEnd > body.length) return "PUBLISH topic runs past the end of the packet";
  let topic: string;
  try {
    topic = utf8Decode(body.subarray(2, end));
  } catch {
    return "PUBLISH topic is not valid UTF-8 (1.5.3)";
  }
  return { topic, qos, packetId: qos ? (body[end] << 8) | body[end + 1] : 0, payload: body.slice(idEnd) };
}
