// The limits that keep a hostile or broken client from costing the emulator more than a device
// does: how many connections are open at once, the largest packet a connection may send, how long
// a packet may take to arrive once it has begun, how long a connection may stay silent, and how
// long a TLS handshake may take. The checks here are pure: time comes in as `now`, and the
// emulator's sweep (simulator/index.ts) and sessions (simulator/mqtt-session.ts) act on the answers.
import { HUB_MAX_MESSAGE_BYTES } from "./config.js";
import { EmulatorError } from "./errors.js";
import type { Endpoint } from "./mqtt-session.js";

/**
 * IoT Hub caps the server side of MQTT keep-alive at 1767 s (29.45 minutes, the Azure load
 * balancer's TCP idle timeout): it closes a connection silent for 1.5 x the client's keep-alive or
 * 1767 s, whichever is shorter, so a keep-alive of 0 (none) or above 1177 s gets 1767 s
 * (learn.microsoft.com, "Communicate with an IoT hub using the MQTT protocol", keep-alive section).
 */
export const IOT_HUB_MAX_IDLE_MS = 1_767_000;

/** DPS takes register bodies of up to 96 KiB; 4 KiB more for the topic, the CONNECT's token and the headers. */
export const DPS_MAX_PACKET_BYTES = 96 * 1024 + 4096;
/** A 256 KiB telemetry body plus 4 KiB for the topic (a 128-character device id and its property bag) and the headers. */
export const HUB_MAX_PACKET_BYTES = HUB_MAX_MESSAGE_BYTES + 4096;

export interface ConnectionLimits {
  /** MQTT connections open at once over the four listeners, TLS handshakes included; over it a new socket is closed at once. */
  readonly maxConnections: number;
  /** The largest packet a connection may send, per listener kind; a larger one closes the connection when its fixed header arrives. */
  readonly maxPacketBytes: Readonly<Record<Endpoint, number>>;
  /** Once the first byte of a packet has arrived, the whole packet must arrive within this (ms). */
  readonly packetTimeoutMs: number;
  /** A connection that sends no CONNECT within this is closed (ms). */
  readonly connectTimeoutMs: number;
  /** The longest silence allowed on a connected session, whatever its keep-alive (ms). */
  readonly maxIdleMs: number;
  /** A TLS socket that has not completed its handshake within this is destroyed (ms). */
  readonly tlsHandshakeTimeoutMs: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = Object.freeze({
  maxConnections: 20_000,
  maxPacketBytes: Object.freeze({ dps: DPS_MAX_PACKET_BYTES, hub: HUB_MAX_PACKET_BYTES }),
  packetTimeoutMs: 30_000,
  connectTimeoutMs: 10_000,
  maxIdleMs: IOT_HUB_MAX_IDLE_MS,
  tlsHandshakeTimeoutMs: 10_000,
});

/** The limit options of `startEmulator` (simulator/index.ts documents each one). */
export interface LimitOptions {
  maxConnections?: number;
  dpsMaxPacketBytes?: number;
  hubMaxPacketBytes?: number;
  packetTimeoutMs?: number;
  connectTimeoutMs?: number;
  maxIdleMs?: number;
  tlsHandshakeTimeoutMs?: number;
}

/** The limits with defaults filled in. Throws EmulatorError(INVALID_ARGUMENT) naming an option that is not a positive integer. */
export function connectionLimits(options: LimitOptions): ConnectionLimits {
  const pick = (name: keyof LimitOptions, fallback: number): number => {
    const value = options[name];
    if (value === undefined) return fallback;
    if (!Number.isSafeInteger(value) || value < 1) throw new EmulatorError("INVALID_ARGUMENT", `${name} must be a positive integer, got ${String(value)}`);
    return value;
  };
  const d = DEFAULT_LIMITS;
  return Object.freeze({
    maxConnections: pick("maxConnections", d.maxConnections),
    maxPacketBytes: Object.freeze({ dps: pick("dpsMaxPacketBytes", d.maxPacketBytes.dps), hub: pick("hubMaxPacketBytes", d.maxPacketBytes.hub) }),
    packetTimeoutMs: pick("packetTimeoutMs", d.packetTimeoutMs),
    connectTimeoutMs: pick("connectTimeoutMs", d.connectTimeoutMs),
    maxIdleMs: pick("maxIdleMs", d.maxIdleMs),
    tlsHandshakeTimeoutMs: pick("tlsHandshakeTimeoutMs", d.tlsHandshakeTimeoutMs),
  });
}

/** Why the sweep closes a connection; counted as `closed-<reason>` in the endpoint's counters. */
export type TimeoutReason = "connect-timeout" | "keepalive-timeout" | "idle-timeout" | "packet-timeout";

/** What the sweep reads of a session (times are Date.now() ms; partialSince 0 = no packet under way). */
export interface SessionTimes {
  readonly connected: boolean;
  readonly acceptedAt: number;
  readonly lastSeen: number;
  readonly keepAliveMs: number;
  readonly partialSince: number;
}

/**
 * The deadline a session has passed at `now`, if any. A packet under way for longer than
 * packetTimeoutMs comes first (a PUBLISH sent a byte a second keeps the connection "active" but
 * never finishes); then the CONNECT deadline; then silence: 1.5 x the keep-alive [MQTT-3.1.2-24],
 * capped at maxIdleMs, which is also the limit of a keep-alive of 0.
 */
export function overdue(s: SessionTimes, now: number, limits: ConnectionLimits): TimeoutReason | undefined {
  if (s.partialSince > 0 && now - s.partialSince > limits.packetTimeoutMs) return "packet-timeout";
  if (!s.connected) return now - s.acceptedAt > limits.connectTimeoutMs ? "connect-timeout" : undefined;
  const byKeepAlive = s.keepAliveMs * 1.5;
  const keepAliveRules = s.keepAliveMs > 0 && byKeepAlive <= limits.maxIdleMs;
  const allowed = keepAliveRules ? byKeepAlive : limits.maxIdleMs;
  if (now - s.lastSeen <= allowed) return undefined;
  return keepAliveRules ? "keepalive-timeout" : "idle-timeout";
}

/**
 * Follows MQTT packet boundaries in a byte stream without keeping any of it, so that limits can
 * be applied before the parser buffers a packet: the fixed header (one byte of type and flags,
 * then the remaining length in 1 to 4 bytes of 7 bits, least significant first [MQTT-2.2.3]) gives
 * the size of each packet, and the body is skipped.
 *
 *   30 82 80 12 ...   a PUBLISH whose remaining length is 0x02 + 0x00 * 128 + 0x12 * 16384 = 294,914 bytes
 *
 * A remaining length longer than 4 bytes makes the frame `broken`; it then ignores the rest (the
 * parser reports the malformed packet).
 */
export class PacketFrame {
  #phase: "header" | "length" | "body" = "header";
  #length = 0;
  #lengthBytes = 0;
  #remaining = 0;
  #seen = 0;
  #broken = false;

  /** Takes the next chunk; returns how many packets ended in it. */
  feed(chunk: Uint8Array): number {
    let completed = 0;
    let i = 0;
    while (i < chunk.length && !this.#broken) {
      if (this.#phase === "header") {
        this.#phase = "length";
        this.#length = this.#lengthBytes = 0;
        this.#seen = 1;
        i++;
      } else if (this.#phase === "length") {
        const byte = chunk[i++];
        this.#length += (byte & 0x7f) * 128 ** this.#lengthBytes;
        this.#lengthBytes++;
        this.#seen++;
        if (byte & 0x80) {
          if (this.#lengthBytes === 4) this.#broken = true;
        } else if (this.#length === 0) {
          this.#phase = "header";
          completed++;
        } else {
          this.#phase = "body";
          this.#remaining = this.#length;
        }
      } else {
        const take = Math.min(this.#remaining, chunk.length - i);
        i += take;
        this.#remaining -= take;
        this.#seen += take;
        if (this.#remaining === 0) {
          this.#phase = "header";
          completed++;
        }
      }
    }
    return completed;
  }

  /** A packet has begun and not ended. */
  get pending(): boolean {
    return this.#phase !== "header" && !this.#broken;
  }

  /** The whole size of the packet under way once its length is known (header included), else the bytes seen of it. */
  get packetBytes(): number {
    if (this.#phase === "body") return 1 + this.#lengthBytes + this.#length;
    return this.#phase === "header" ? 0 : this.#seen;
  }

  get broken(): boolean {
    return this.#broken;
  }
}
