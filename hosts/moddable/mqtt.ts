/**
 * The MQTT port on the device: MQTT 3.1.1 framed by mqtt-wire.ts over an ECMA-419 stream socket,
 * the SDK's `embedded:io/socket/tcp/tls` (or plain `embedded:io/socket/tcp` towards a local
 * emulator). Why not the SDK's `embedded:network/mqtt/client`: docs/MODDABLE.md, "MQTT".
 *
 *   const mqtt = new ModdableMqttConnector({
 *     socket: { io: TLSSocket, TCP: { io: TCP }, secure: { certificate } },
 *     dns: { io: Resolver, servers: ["1.1.1.1"], socket: { io: UDP } },
 *     timers,
 *   });
 *
 * The options mirror the SDK's own network clients: `socket.io` is the socket class and every
 * other property of `socket` goes to its constructor; `dns.io` is the resolver class, constructed
 * with `dns` once per connector.
 *
 * Pipelining: SUBSCRIBE and PUBLISH may be called right after `connect`, before CONNACK and before
 * the socket is even open ([MQTT-3.1.4-2] allows it). They wait, with CONNECT first, in a queue of
 * at most `maxQueuedBytes`, and go out in call order once the socket is writable.
 *
 * Incoming PUBLISH: `onMessage` first, then PUBACK for QoS 1 (none if the core closed the session
 * inside `onMessage`, or if it threw). A PUBLISH over `maxPacketBytes` keeps the session: the
 * frame reader discards its payload as it streams in and `onMessage` gets its topic, an empty
 * payload and its whole size; another packet type over the limit ends it with fault "oversize".
 *
 * Callbacks to the core never run inside `connect`, `subscribe`, `publish` or `close`: they come
 * from socket, resolver and timer callbacks. After `close()` none is called.
 */
import { check } from "../../modules/errors.js";
import type { MqttConnectOptions, MqttConnector, MqttSession, MqttSessionCallbacks, TimerPort, TransportFaultKind } from "../../modules/ports.js";
import {
  CONNACK,
  decodePublish,
  disconnectPacket,
  encodeConnect,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  FrameReader,
  packetIdOf,
  pingreqPacket,
  PINGRESP,
  PUBACK,
  PUBLISH,
  SUBACK,
  type Packet,
} from "./mqtt-wire.js";
import type { DnsResolver, StreamSocket, StreamSocketClass } from "./sdk.js";
import { guardTlsSocket } from "./tls-guard.js";

export interface ModdableMqttConnectorOptions {
  /** The socket class in `io`; the other properties (TLS `TCP`, `secure`) go to its constructor. */
  readonly socket: { readonly io: StreamSocketClass; readonly [option: string]: unknown };
  /** The resolver class in `io`, constructed with this object. */
  readonly dns: { readonly io: new (options: never) => DnsResolver; readonly [option: string]: unknown };
  readonly timers: TimerPort;
  /** True when `socket.io` is TLS, so that a failure before the first write is reported as "tls". Default true. */
  readonly secure?: boolean;
  /** Largest incoming packet, fixed header included (a larger PUBLISH arrives without its payload). Default 8192. */
  readonly maxPacketBytes?: number;
  /** Largest backlog of outgoing bytes while the socket cannot take them. Default 8192. */
  readonly maxQueuedBytes?: number;
}

/** An IPv4 literal needs no resolver. */
const ipv4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * Opens MQTT sessions over the SDK's sockets. One resolver serves all sessions of the connector.
 * @throws UsageError INVALID_ARGUMENT for a limit out of range or a missing class.
 */
export class ModdableMqttConnector implements MqttConnector {
  readonly #options: ModdableMqttConnectorOptions;
  readonly #maxPacketBytes: number;
  readonly #maxQueuedBytes: number;
  #resolver: DnsResolver | undefined;

  constructor(options: ModdableMqttConnectorOptions) {
    check(typeof options?.socket?.io === "function", "socket.io must be the socket class (embedded:io/socket/tcp or .../tls)");
    check(typeof options.dns?.io === "function", "dns.io must be the resolver class");
    check(typeof options.timers?.set === "function", "timers must be a TimerPort");
    this.#maxPacketBytes = options.maxPacketBytes ?? 8192;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? 8192;
    check(Number.isInteger(this.#maxQueuedBytes) && this.#maxQueuedBytes >= 64, "maxQueuedBytes must be an integer of at least 64");
    this.#options = options;
  }

  /**
   * Starts a session: resolve, open the socket, write CONNECT. The password lives on only inside
   * the queued CONNECT bytes, dropped once written.
   * @throws UsageError INVALID_ARGUMENT for options that cannot make a valid CONNECT.
   */
  connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession {
    check(typeof options.host === "string" && options.host.length > 0, "host must be a non-empty string");
    check(Number.isInteger(options.port) && options.port > 0 && options.port < 65536, "port must be an integer in 1..65535");
    const session = new ModdableMqttSession(callbacks, this.#options, new FrameReader(options.maxPacketBytes ?? this.#maxPacketBytes), this.#maxQueuedBytes, options.keepAliveSeconds * 1000);
    session.enqueue(encodeConnect(options));
    const open = (address: string) => session.open(address, options.host, options.port);
    if (ipv4.test(options.host)) {
      open(options.host);
    } else {
      const dns = this.#options.dns;
      this.#resolver ??= new dns.io(dns as never);
      this.#resolver.resolve({
        host: options.host,
        onResolved: (_host, address) => open(address),
        onError: (error) => session.fail("dns", `cannot resolve ${options.host}${reason(error)}`),
      });
    }
    return session;
  }

  /** Releases the resolver. Sessions still open stay open. */
  close(): void {
    this.#resolver?.close();
    this.#resolver = undefined;
  }
}

function reason(error: unknown): string {
  const text = error instanceof Error ? error.message : error === undefined ? "" : String(error);
  return text ? `: ${text}` : "";
}

/** Session phases: resolving, connecting and TLS handshake; CONNECT written; CONNACK in; over. */
const Phase = { Opening: 0, AwaitingConnack: 1, Open: 2, Closed: 3 } as const;

/** One session; created by `ModdableMqttConnector.connect`. */
class ModdableMqttSession implements MqttSession {
  readonly #callbacks: MqttSessionCallbacks;
  readonly #options: ModdableMqttConnectorOptions;
  readonly #reader: FrameReader;
  readonly #maxQueued: number;
  readonly #keepAliveMs: number;
  #socket: StreamSocket | undefined;
  #phase: number = Phase.Opening;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writable = 0;
  #packetId = 0;
  #timer: unknown;
  /** Keepalive quarters since the last write, and quarters left to hear back after a PINGREQ. */
  #idle = 0;
  #waiting = 0;

  constructor(callbacks: MqttSessionCallbacks, options: ModdableMqttConnectorOptions, reader: FrameReader, maxQueued: number, keepAliveMs: number) {
    this.#callbacks = callbacks;
    this.#options = options;
    this.#reader = reader;
    this.#maxQueued = maxQueued;
    this.#keepAliveMs = keepAliveMs;
  }

  subscribe(topic: string, qos: 0 | 1): number {
    if (this.#phase === Phase.Closed) return 0;
    const id = this.#nextId();
    this.enqueue(encodeSubscribe(id, topic, qos));
    return id;
  }

  publish(topic: string, payload: Uint8Array, qos: 0 | 1): number {
    if (this.#phase === Phase.Closed) return 0;
    const id = qos ? this.#nextId() : 0;
    this.enqueue(encodePublish(topic, payload, qos, id));
    return id;
  }

  close(): void {
    if (this.#phase === Phase.Closed) return;
    const socket = this.#socket;
    if (socket && this.#phase !== Phase.Opening && this.#writable >= 2) {
      try {
        socket.write(disconnectPacket);
      } catch {
        // The socket is full or gone: DISCONNECT is a courtesy, closing is what matters.
      }
    }
    this.#end();
  }

  /** Queues a packet; a backlog over the limit ends the session (the peer stopped reading). */
  enqueue(packet: Uint8Array): void {
    if (this.#queued + packet.length > this.#maxQueued) {
      this.fail("closed", `outgoing backlog would exceed maxQueuedBytes (${this.#maxQueued}): the connection is not draining`);
      return;
    }
    this.#queue.push(packet);
    this.#queued += packet.length;
    this.#flush();
  }

  /** Opens the socket to `address` (called once the name is resolved). */
  open(address: string, host: string, port: number): void {
    if (this.#phase === Phase.Closed) return;
    const { io: Socket, ...rest } = guardTlsSocket(this.#options.socket, (error) => this.#onThrown(error));
    try {
      this.#socket = new Socket({
        ...rest,
        address,
        host,
        port,
        onReadable: (count) => this.#onReadable(count),
        onWritable: (count) => this.#onWritable(count),
        onError: (error) => this.#onError(error),
      });
    } catch (error) {
      this.#later(() => this.fail("refused", `cannot open a socket to ${address}:${port}${reason(error)}`));
    }
  }

  /** Ends the session for a reason of the transport's or the peer's and tells the core, once. */
  fail(kind: TransportFaultKind, message: string): void {
    if (this.#phase === Phase.Closed) return;
    this.#end();
    this.#callbacks.onClose({ kind, message });
  }

  #end(): void {
    this.#phase = Phase.Closed;
    if (this.#timer !== undefined) this.#options.timers.clear(this.#timer);
    this.#timer = undefined;
    this.#queue = [];
    this.#queued = 0;
    const socket = this.#socket;
    this.#socket = undefined;
    socket?.close();
  }

  /** Runs `work` from the event loop (a failure found inside a call must not call back inside it). */
  #later(work: () => void): void {
    this.#options.timers.set(work, 0);
  }

  #nextId(): number {
    this.#packetId = this.#packetId >= 0xffff ? 1 : this.#packetId + 1;
    return this.#packetId;
  }

  #flush(): void {
    const socket = this.#socket;
    if (!socket) return;
    try {
      while (this.#queue.length > 0 && this.#writable > 0) {
        const head = this.#queue[0];
        const part = head.length <= this.#writable ? head : head.subarray(0, this.#writable);
        const left = socket.write(part);
        this.#writable = typeof left === "number" ? left : this.#writable - part.length;
        this.#queued -= part.length;
        this.#idle = 0;
        if (part === head) this.#queue.shift();
        else this.#queue[0] = head.subarray(part.length);
      }
    } catch (error) {
      this.#later(() => this.fail("closed", `socket write failed${reason(error)}`));
    }
  }

  #onWritable(count: number): void {
    if (this.#phase === Phase.Closed) return;
    if (this.#phase === Phase.Opening) this.#phase = Phase.AwaitingConnack;
    this.#writable = count;
    this.#flush();
  }

  #onReadable(count: number): void {
    const socket = this.#socket;
    if (!socket || count <= 0) return;
    this.#waiting = 0;
    let chunk: ArrayBuffer | number | undefined;
    while (this.#phase !== Phase.Closed && (chunk = socket.read()) instanceof ArrayBuffer) {
      const error = this.#reader.push(new Uint8Array(chunk), (packet) => this.#onPacket(packet));
      if (error) this.fail(this.#reader.oversize ? "oversize" : "protocol", error);
    }
  }

  #onError(error: unknown): void {
    if (this.#phase === Phase.Opening) {
      // Nothing was ever writable: the connection or (TLS) the handshake failed.
      this.fail(this.#options.secure === false ? "refused" : "tls", `could not connect${reason(error)}`);
    } else {
      this.fail("closed", `connection closed${reason(error)}`);
    }
  }

  /** An exception thrown inside the TLS layer's socket callbacks (see tls-guard.ts). */
  #onThrown(error: unknown): void {
    if (this.#phase === Phase.Opening) this.fail("tls", `the TLS handshake failed${reason(error)}`);
    else this.fail("closed", `the TLS layer failed${reason(error)}`);
  }

  #onPacket(p: Packet): void {
    if (this.#phase === Phase.Closed) return;
    if (this.#phase !== Phase.Open) {
      // The first packet from the server must be CONNACK [MQTT-3.2.0-1].
      if (p.type !== CONNACK || p.body.length !== 2) return this.fail("protocol", `expected CONNACK, received packet type ${p.type} [MQTT-3.2.0-1]`);
      this.#phase = Phase.Open;
      this.#armKeepalive();
      return this.#callbacks.onConnack(p.body[1], (p.body[0] & 1) === 1);
    }
    switch (p.type) {
      case PUBLISH: {
        const m = decodePublish(p.flags, p.body);
        if (typeof m === "string") return this.fail("protocol", m);
        if (m.qos === 2) return this.fail("protocol", "QoS 2 PUBLISH on a session that subscribes with QoS 0 or 1 only");
        try {
          if (p.oversize === undefined) this.#callbacks.onMessage(m.topic, m.payload);
          else this.#callbacks.onMessage(m.topic, m.payload, p.oversize);
        } catch {
          // onMessage must not throw; if it does, this message goes unacknowledged (the hub
          // redelivers it to a later session) rather than the exception escaping a socket callback.
          return;
        }
        // Acknowledged once the core has it, unless the core closed the session meanwhile.
        if (m.qos === 1 && this.#phase === Phase.Open) this.enqueue(encodePuback(m.packetId));
        return;
      }
      case PUBACK:
        return this.#callbacks.onPuback(packetIdOf(p.body));
      case SUBACK:
        return this.#callbacks.onSuback(packetIdOf(p.body), Array.from(p.body.subarray(2)));
      case PINGRESP:
        return;
      default:
        this.fail("protocol", `unexpected packet type ${p.type} from the server`);
    }
  }

  /**
   * Keepalive in quarters of the interval: a PINGREQ once a whole interval passed without a
   * write, and the session ends when nothing arrives within half an interval after it.
   */
  #armKeepalive(): void {
    if (this.#keepAliveMs <= 0 || this.#phase !== Phase.Open) return;
    this.#timer = this.#options.timers.set(() => {
      this.#timer = undefined;
      if (this.#phase !== Phase.Open) return;
      if (this.#waiting > 0 && --this.#waiting === 0) return this.fail("timeout", "no PINGRESP or other packet within half a keepalive of PINGREQ");
      if (++this.#idle >= 4 && this.#waiting === 0) {
        this.enqueue(pingreqPacket);
        this.#waiting = 2;
      }
      this.#armKeepalive();
    }, this.#keepAliveMs / 4);
  }
}
