// One MQTT 3.1.1 connection on the server side: bytes in through mqtt-packet's parser, packets out
// through its generator, keep-alive, connect and packet deadlines checked by the emulator's sweep,
// packet sizes checked here against simulator/limits.ts before the parser buffers anything. A packet
// the parser rejects, or one that breaks the protocol's order, closes this connection (with a log
// line) and nothing else. Subclasses (DPS, hub) decide what CONNECT, SUBSCRIBE and PUBLISH mean.
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import {
  generate,
  parser as createParser,
  type IConnectPacket,
  type IPublishPacket,
  type ISubscribePacket,
  type Packet,
} from "mqtt-packet";
import type { FaultRule, FaultStep } from "./config.js";
import type { CertificateIssuer } from "./issuance.js";
import type { FaultBook, FaultSubject } from "./faults.js";
import { PacketFrame, type ConnectionLimits } from "./limits.js";
import type { HubBroker } from "./hub-broker.js";
import { Counters, type Logger } from "./log.js";
import type { ProvisioningService } from "./service.js";

/** What a session needs from the emulator that owns it. */
export interface SessionContext {
  readonly service: ProvisioningService;
  readonly faults: FaultBook;
  readonly log: Logger;
  readonly counters: Counters;
  /** Packet sizes and deadlines (simulator/limits.ts). */
  readonly limits: ConnectionLimits;
  /** The hub's cross-connection state: live sessions, pending methods, C2D, desired pushes. */
  readonly broker: HubBroker;
  /** The clock for token expiry and rate limits (ms). */
  now(): number;
  /** Runs `fn` after `ms` unless the emulator stops first. */
  later(ms: number, fn: () => void): void;
  /** Called when the session closes, to drop it from the emulator's books. */
  forget(session: MqttSession): void;
  /** Certificate issuance from CSRs, and the CA the hub trusts for X.509 devices (simulator/issuance.ts). */
  readonly issuance: { readonly issuer: CertificateIssuer; readonly enabled: boolean; readonly lifetimeSeconds: number };
}

const PINGRESP = generate({ cmd: "pingresp" });
const CONNACKS = [0, 1, 2, 3, 4, 5].map((returnCode) => generate({ cmd: "connack", returnCode, sessionPresent: false }));

export type Endpoint = "dps" | "hub";

export abstract class MqttSession {
  readonly socket: Socket;
  readonly ctx: SessionContext;
  readonly transport: "tls" | "tcp";
  abstract readonly endpoint: Endpoint;
  /** Real time (Date.now) of the last bytes received: keep-alive is about the wire, not the emulated clock. */
  lastSeen: number;
  readonly acceptedAt: number;
  /** Keep-alive in ms announced by the client (0: none). */
  keepAliveMs = 0;
  /** Real time when the first byte of the packet still under way arrived (0: none under way). */
  partialSince = 0;
  connected = false;
  closed = false;
  #connectSeen = false;
  #packetId = 0;
  readonly #parser = createParser({ protocolVersion: 4 });
  /** Packet boundaries, to refuse an oversize packet before the parser buffers it. */
  readonly #frame = new PacketFrame();
  /** Packets written while a chunk is being handled, sent together when it is done. */
  #batch: Buffer[] | undefined;

  constructor(socket: Socket, ctx: SessionContext, transport: "tls" | "tcp") {
    this.socket = socket;
    this.ctx = ctx;
    this.transport = transport;
    this.lastSeen = this.acceptedAt = Date.now();
    this.#parser.on("packet", (packet: Packet) => this.#dispatch(packet));
    this.#parser.on("error", (error: Error) => this.protocolError(`malformed packet: ${error.message}`));
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (ctx.log.enabled("debug")) ctx.log.debug("socket-error", { endpoint: this.endpoint, client: this.clientLabel(), code: error.code });
    });
    socket.on("close", () => this.#onClose());
  }

  /** The device named by this connection, for logs (registration id or device id). */
  abstract clientLabel(): string | undefined;
  protected abstract onConnect(packet: IConnectPacket): void;
  protected abstract onPublish(packet: IPublishPacket): void;
  protected abstract onSubscribe(packet: ISubscribePacket): void;
  protected onClosed(): void {}
  /** A PUBACK from the client for one of our QoS 1 publishes. */
  protected onPuback(_messageId: number): void {}

  #onData(chunk: Buffer): void {
    if (this.closed) return;
    const now = Date.now();
    this.lastSeen = now;
    const completed = this.#frame.feed(chunk);
    if (this.#frame.pending) {
      const budget = this.ctx.limits.maxPacketBytes[this.endpoint];
      if (this.#frame.packetBytes > budget) {
        this.closeForLimit("packet-budget", { packetBytes: this.#frame.packetBytes, budget });
        return;
      }
      // A packet began in this chunk (after one that ended, or after none was under way).
      if (completed > 0 || this.partialSince === 0) this.partialSince = now;
    } else {
      this.partialSince = 0;
    }
    // Everything answered synchronously to this chunk (PUBACK + response) leaves in one write.
    this.#batch = [];
    try {
      this.#parser.parse(chunk);
    } catch (error) {
      this.protocolError(`malformed packet: ${(error as Error).message}`);
      return;
    } finally {
      this.#flush();
    }
  }

  /**
   * A limit of simulator/limits.ts was reached: counted as `closed-<reason>` in the endpoint's
   * counters, logged, and the connection closed. Not a protocol error: the peer may be only slow.
   */
  closeForLimit(reason: string, fields: Record<string, unknown> = {}): void {
    if (this.closed) return;
    Counters.bump(this.endpoint === "dps" ? this.ctx.counters.dps : this.ctx.counters.hub, `closed-${reason}`);
    this.close(reason, "info", { remote: this.socket.remoteAddress, ...fields });
  }

  #flush(): void {
    const batch = this.#batch;
    this.#batch = undefined;
    if (!batch || batch.length === 0 || this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(batch.length === 1 ? batch[0] : Buffer.concat(batch));
  }

  #dispatch(packet: Packet): void {
    if (this.closed) return;
    try {
      if (!this.#connectSeen) {
        if (packet.cmd !== "connect") return this.protocolError(`first packet was ${packet.cmd}, not CONNECT [MQTT-3.1.0-1]`);
        this.#connectSeen = true;
        const keepalive = (packet as IConnectPacket).keepalive ?? 0;
        this.keepAliveMs = keepalive * 1000;
        this.onConnect(packet as IConnectPacket);
        return;
      }
      if (!this.connected) return this.protocolError(`${packet.cmd} before the connection was accepted`);
      switch (packet.cmd) {
        case "publish":
          // mqtt-packet parses these; a server must not accept them (hence no device id with + or # can publish telemetry).
          if (/[+#]/.test(packet.topic)) return this.protocolError("PUBLISH topic name holds a wildcard character (+ or #) [MQTT-3.3.2-2]");
          return this.onPublish(packet);
        case "subscribe":
          return this.onSubscribe(packet);
        case "unsubscribe":
          this.write(generate({ cmd: "unsuback", messageId: packet.messageId ?? 0, granted: [] }));
          return;
        case "pingreq":
          this.write(PINGRESP);
          return;
        case "disconnect":
          this.close("client-disconnect", "debug");
          return;
        case "puback":
          return this.onPuback(packet.messageId ?? 0);
        case "pubrec":
        case "pubrel":
        case "pubcomp":
          return; // QoS 2 acknowledgements: the emulator never publishes at QoS 2
        case "connect":
          return this.protocolError("second CONNECT [MQTT-3.1.0-2]");
        default:
          return this.protocolError(`unexpected ${packet.cmd} from a client`);
      }
    } catch (error) {
      this.ctx.log.error("internal-error", { endpoint: this.endpoint, client: this.clientLabel(), message: (error as Error).message });
      this.close("internal-error", "error");
    }
  }

  /** The peer broke the protocol: log it, close this connection only. */
  protocolError(reason: string): void {
    if (this.closed) return;
    this.ctx.counters.badPackets++;
    Counters.bump(this.endpoint === "dps" ? this.ctx.counters.dps : this.ctx.counters.hub, "bad-packet");
    this.ctx.log.warn("bad-packet", { endpoint: this.endpoint, client: this.clientLabel(), remote: this.socket.remoteAddress, reason });
    this.close("bad-packet", "debug");
  }

  write(bytes: Buffer): void {
    if (this.closed || !this.socket.writable) return;
    if (this.#batch) this.#batch.push(bytes);
    else this.socket.write(bytes);
  }

  connack(returnCode: number): void {
    Counters.bump(this.endpoint === "dps" ? this.ctx.counters.dps : this.ctx.counters.hub, `connack-${returnCode}`);
    this.write(CONNACKS[returnCode]);
    if (returnCode === 0) {
      this.connected = true;
    } else {
      this.ctx.log.info("connect-refused", { endpoint: this.endpoint, client: this.clientLabel(), returnCode });
      // [MQTT-3.2.2-5]: after a non-zero CONNACK the server closes the connection.
      this.#flush();
      this.socket.end();
      this.socket.setTimeout(2000, () => this.socket.destroy());
      this.closed = true;
    }
  }

  puback(messageId: number | undefined): void {
    // Four fixed bytes (MQTT 3.1.1 section 3.4): cheaper than a trip through the generator on the hot path.
    const id = messageId ?? 0;
    const bytes = Buffer.allocUnsafe(4);
    bytes[0] = 0x40;
    bytes[1] = 0x02;
    bytes[2] = id >> 8;
    bytes[3] = id & 0xff;
    this.write(bytes);
  }

  suback(messageId: number | undefined, granted: number[]): void {
    this.write(generate({ cmd: "suback", messageId: messageId ?? 0, granted }));
  }

  /** Publishes; returns the packet id of a QoS 1 publish (0 for QoS 0). */
  publish(topic: string, payload: string | Buffer, qos: 0 | 1): number {
    if (qos === 0) {
      this.write(generate({ cmd: "publish", topic, payload, qos: 0, retain: false, dup: false }));
      return 0;
    }
    this.#packetId = this.#packetId >= 65535 ? 1 : this.#packetId + 1;
    this.write(generate({ cmd: "publish", topic, payload, qos: 1, messageId: this.#packetId, retain: false, dup: false }));
    return this.#packetId;
  }

  /** Closes the socket at once (no goodbye: MQTT 3.1.1 servers have none). Idempotent. */
  close(reason: string, level: "debug" | "info" | "warn" | "error" = "info", fields?: Record<string, unknown>): void {
    if (this.socket.destroyed) {
      this.closed = true;
      return;
    }
    this.closed = true;
    if (this.ctx.log.enabled(level)) this.ctx.log.write(level, "connection-closed", { endpoint: this.endpoint, client: this.clientLabel(), reason, ...fields });
    this.socket.destroy();
  }

  #onClose(): void {
    this.closed = true;
    this.ctx.forget(this);
    this.onClosed();
  }

  /**
   * Runs a step under the fault rules: no rule, or a rule that only delays or malforms, leads to
   * `proceed`; `drop` closes the socket without an answer; `connack` and `status` go to their
   * handlers (or, without one, close the connection as a hub does on an error it cannot express).
   */
  withFault(
    step: FaultStep,
    subject: FaultSubject,
    handlers: {
      proceed: (rule?: FaultRule) => void;
      status?: (rule: FaultRule) => void;
      connack?: (code: number) => void;
      /** Runs at once, before any delay: e.g. the PUBACK of a request whose answer comes late. */
      first?: (rule?: FaultRule) => void;
    },
  ): void {
    const rule = this.ctx.faults.match(step, subject);
    handlers.first?.(rule);
    if (!rule) {
      handlers.proceed();
      return;
    }
    Counters.bump(this.ctx.counters.faults, step);
    this.ctx.log.info("fault-injected", { step, client: this.clientLabel(), ...describeRule(rule) });
    const act = (): void => {
      if (this.closed) return;
      if (rule.drop) return this.close(`fault-drop-at-${step}`);
      if (rule.connack !== undefined && handlers.connack) return handlers.connack(rule.connack);
      if (rule.status !== undefined) {
        if (handlers.status) return handlers.status(rule);
        return this.close(`fault-status-${rule.status}-at-${step}`);
      }
      handlers.proceed(rule);
    };
    if (rule.delayMs) this.ctx.later(rule.delayMs, act);
    else act();
  }
}

/** A rule as a log field set (it holds no secrets). */
export function describeRule(rule: FaultRule): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of ["status", "errorCode", "retryAfter", "connack", "drop", "delayMs", "malformed"] as const) {
    if (rule[key] !== undefined) out[key] = rule[key];
  }
  return out;
}

/** The SNI a TLS client sent, if any. */
export function serverNameOf(socket: Socket): string | undefined {
  const name = (socket as TLSSocket).servername;
  return typeof name === "string" && name.length > 0 ? name : undefined;
}

/** The DER of the client certificate a TLS peer presented (the hub listener asks for one), or undefined. */
export function peerCertificateOf(socket: Socket): Buffer | undefined {
  const tls = socket as TLSSocket;
  if (typeof tls.getPeerCertificate !== "function") return undefined;
  const cert = tls.getPeerCertificate(false);
  return cert && Buffer.isBuffer(cert.raw) && cert.raw.length > 0 ? cert.raw : undefined;
}

/** The certificates a TLS peer presented, leaf first (DER), or undefined when it presented none. */
export function peerCertificateChainOf(socket: Socket): Buffer[] | undefined {
  const tls = socket as TLSSocket;
  if (typeof tls.getPeerCertificate !== "function") return undefined;
  let cert = tls.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: unknown } | undefined;
  const out: Buffer[] = [];
  while (cert && Buffer.isBuffer(cert.raw) && cert.raw.length > 0 && out.length < 10) {
    if (out.some((c) => c.equals(cert!.raw as Buffer))) break; // a self-signed root points at itself
    out.push(cert.raw);
    cert = cert.issuerCertificate as typeof cert;
  }
  return out.length > 0 ? out : undefined;
}
