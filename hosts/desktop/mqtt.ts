/**
 * The MQTT port over Node: one MQTT 3.1.1 session per TCP or TLS socket, framed by mqtt-packet.
 *
 * A host owns sockets and timers and no protocol decisions: this file connects, frames, answers
 * PINGRESP-keeping and PUBACK duties the transport owes the broker, and reports everything else to
 * the core through `MqttSessionCallbacks`. It is built to run thousands of sessions in one process:
 * one parser and a few listeners per session, no timer per session (one keepalive sweep per
 * connector, unref'd, that exists only while sessions do), no closure per packet, one TLS secure
 * context per connector.
 *
 * Pipelining: `subscribe` and `publish` may be called at once after `connect`, before CONNACK (and
 * even before the socket is connected). The packets are written right after CONNECT, in call order
 * (Node's socket buffers them until the TCP or TLS connection is up). MQTT 3.1.1 allows this
 * ([MQTT-3.1.4], "Clients are permitted to send further Control Packets immediately after sending
 * a CONNECT Packet"); a broker that refuses the CONNECT closes the connection without acting on
 * them. The core uses it to save a round trip per registration.
 *
 * Keepalive: when nothing has been written for `keepAliveSeconds`, the session writes PINGREQ; if
 * nothing at all (PINGRESP or any other packet) arrives within a further `keepAliveSeconds / 2`, it
 * closes with fault "timeout". A keepalive of 0 turns both off ([MQTT-3.1.2-10]).
 *
 * Incoming PUBLISH: `onMessage` is called first and a QoS 1 PUBLISH is acknowledged (PUBACK) once
 * it returns, unless the core closed the session inside it or it threw. A PUBLISH larger than the
 * session's `maxPacketBytes` does not end the session: FrameLimiter keeps its topic and packet id,
 * discards its payload unbuffered as it streams in, and `onMessage` gets the topic, an empty
 * payload and the PUBLISH's whole size; any other oversize packet ends it with fault "oversize".
 *
 * Callbacks run from Node's event loop (socket events and the sweep timer), never from inside
 * `connect`, `subscribe`, `publish` or `close`. They must not throw: an exception propagates as an
 * uncaught one, as for any Node event handler (except from `onMessage`, whose exception is caught
 * and leaves the message unacknowledged). Payloads handed to `onMessage` are Buffers (which are
 * Uint8Arrays); a core that keeps one beyond the call should copy it, since a Buffer's `slice` is
 * a view, not a copy.
 */
import { isIP } from "node:net";
import * as net from "node:net";
import * as tls from "node:tls";
import mqttPacket from "mqtt-packet";
import type { Packet } from "mqtt-packet";
import { check } from "../../modules/errors.js";
import type {
  ClientCertificate,
  MqttConnectOptions,
  MqttConnector,
  MqttSession,
  MqttSessionCallbacks,
  TransportFault,
  TransportFaultKind,
} from "../../modules/ports.js";

/** Where a socket really goes for a service host and port (the TLS name stays the service's). */
export type AddressResolver = (host: string, port: number) => { host: string; port: number };

export interface NodeMqttConnectorOptions {
  /** TLS (MQTT on 8883) or plain TCP (tests, a loopback emulator). Default true. */
  readonly tls?: boolean;
  /**
   * PEM certificate(s) to trust, such as the emulator's CA. As with node:tls, giving `ca` replaces
   * Node's default root store for these sessions. Parsed once per connector.
   */
  readonly ca?: string | Buffer;
  /** Verify the server certificate and its name. Default true. */
  readonly rejectUnauthorized?: boolean;
  /**
   * Maps the service address (`hub-1.azure-devices.localhost`, 8883) to where the socket really
   * connects (`127.0.0.1`, an ephemeral port). The TLS server name, the certificate name check and
   * everything at the MQTT level keep the service's host name. Default: the identity. Either way a
   * localhost name (`localhost`, `*.localhost`) is then dialled at 127.0.0.1 (see isLocalhostName).
   * A resolver that throws ends the session with fault "dns".
   */
  readonly resolve?: AddressResolver;
  /** From `connect()` to CONNACK (TCP, TLS handshake and CONNACK together). Default 30000. */
  readonly connectTimeoutMs?: number;
  /**
   * Largest incoming packet, fixed header included, when the session's options do not say
   * (`MqttConnectOptions.maxPacketBytes`); a bigger PUBLISH reaches `onMessage` with its payload
   * discarded, a bigger packet of another type closes with "oversize". Default 128 KiB.
   */
  readonly maxPacketBytes?: number;
}

/** The port names of the Node error codes, by kind. TLS is recognised separately (see below). */
const faultKindByCode: Readonly<Record<string, TransportFaultKind>> = {
  ENOTFOUND: "dns",
  EAI_AGAIN: "dns",
  EAI_FAIL: "dns",
  EAI_NONAME: "dns",
  EAI_NODATA: "dns",
  ECONNREFUSED: "refused",
  EHOSTUNREACH: "refused",
  ENETUNREACH: "refused",
  EHOSTDOWN: "refused",
  ENETDOWN: "refused",
  EADDRNOTAVAIL: "refused",
  ECONNRESET: "closed",
  EPIPE: "closed",
  ECONNABORTED: "closed",
  ETIMEDOUT: "timeout",
};

/**
 * OpenSSL certificate verification results as Node reports them in `error.code`
 * (`UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `SELF_SIGNED_CERT_IN_CHAIN`, `CERT_HAS_EXPIRED`, ...), and
 * Node's own name check (`ERR_TLS_CERT_ALTNAME_INVALID`).
 */
const verificationCode = /^(UNABLE_TO_|CERT_|DEPTH_ZERO_|SELF_SIGNED_|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH_|HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME_INVALID)/;

/** Other TLS failures by code: the handshake itself (a plain server, no common cipher or version). */
const tlsCode = /^(ERR_TLS_|ERR_SSL_)/;

/** The start of every certificate verification fault's message (hosts match on it to give a hint). */
export const CERTIFICATE_FAILURE = "certificate verification failed";

/**
 * Turns an error from node:net, node:tls, node:dns or node:https into a transport fault.
 * `inHandshake` says the error came before the TLS handshake finished, where a reset or an early
 * close means the TLS negotiation failed (a server that does not speak TLS, a refused cipher).
 * `host` is the service's name, for the message of a certificate that fails verification:
 * `certificate verification failed: self-signed certificate in certificate chain
 * (SELF_SIGNED_CERT_IN_CHAIN; server hub-1.azure-devices.localhost)` (kind "tls").
 * The message carries the Node code and message (host names and ports, never a credential).
 */
export function transportFaultOf(error: unknown, inHandshake = false, host?: string): TransportFault {
  const e = error as { code?: unknown; message?: unknown; library?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  const text = typeof e?.message === "string" ? e.message : String(error);
  if (verificationCode.test(code)) {
    const reason = code === "ERR_TLS_CERT_ALTNAME_INVALID" || code === "HOSTNAME_MISMATCH" ? `its names do not include ${host ?? "the server name"}` : text;
    return { kind: "tls", message: short(`${CERTIFICATE_FAILURE}: ${reason} (${code}${host ? `; server ${host}` : ""})`) };
  }
  let kind: TransportFaultKind | undefined = faultKindByCode[code];
  if (kind === undefined || (inHandshake && kind === "closed")) {
    if (tlsCode.test(code) || typeof e?.library === "string" || inHandshake) kind = "tls";
    else kind = kind ?? "closed";
  }
  return { kind, message: short(code ? `${code}: ${text}` : text) };
}

/**
 * RFC 6761 §6.3: `localhost` and the names under `.localhost` are loopback names, whatever a
 * resolver says (glibc's finds no `hub-1.azure-devices.localhost`). The desktop host dials them
 * at 127.0.0.1 itself, so that the emulator's hub names work here as they do for the emulator.
 */
export function isLocalhostName(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, "");
  return name === "localhost" || name.endsWith(".localhost");
}

/** Where a socket for `host` is dialled: 127.0.0.1 for a localhost name, else the name itself. */
export function dialAddress(host: string): string {
  return isLocalhostName(host) ? "127.0.0.1" : host;
}

function short(text: string): string {
  return text.length > 200 ? text.slice(0, 199) + "…" : text;
}

/** Packet ids run 1..65535 and wrap; 0 is not a valid id ([MQTT-2.3.1-1]). */
function nextPacketId(id: number): number {
  return id >= 0xffff ? 1 : id + 1;
}

type SessionState = "connecting" | "handshaking" | "awaitingConnack" | "open" | "closed";

const pingreq: Buffer = mqttPacket.generate({ cmd: "pingreq" });
const disconnect: Buffer = mqttPacket.generate({ cmd: "disconnect" });

/** What a FrameLimiter hands on, in the order of the stream. */
export interface FrameSink {
  /** Bytes of packets within the limit, for mqtt-packet's parser (any split; whole packets only). */
  bytes(chunk: Buffer): void;
  /**
   * A PUBLISH over the limit, its payload discarded: its topic, QoS (0..2), packet id (0 for QoS 0)
   * and whole size on the wire in bytes (fixed header, topic, packet id and payload).
   */
  oversizePublish(topic: string, qos: number, packetId: number, size: number): void;
}

/** Where a FrameLimiter is within a packet: its fixed header, a body handed on, or an oversize PUBLISH's topic and payload. */
type FrameStage = "header" | "body" | "topic" | "discard";

/** Decodes a skipped PUBLISH's topic; invalid UTF-8 is a protocol fault, as [MQTT-1.5.3-1] asks. */
const topicDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Sits ahead of mqtt-packet's parser, which buffers whole packets: reads each incoming packet's
 * fixed header and hands on only packets of at most `limit` bytes (fixed header included). A
 * PUBLISH over the limit is held back: its topic and packet id are kept (they must fit within
 * the limit with the fixed header), its payload is swallowed as it streams in, and once its last
 * byte has passed the sink hears of it through `oversizePublish`; parsing resumes with the next
 * packet. Memory stays within `limit` whatever the announced size (up to 268,435,455 bytes of
 * remaining length, [MQTT-2.2.3]).
 *
 * A PUBLISH of 64 KiB to `devices/d1/messages/devicebound/` with a limit of 8 KiB: the header
 * `32 a4 80 04` (QoS 1, remaining length 65,572), `00 20` and the 32 topic bytes, `00 07` (packet
 * id 7), then 65,536 payload bytes discarded; the sink gets `oversizePublish(topic, 1, 7, 65576)`.
 */
export class FrameLimiter {
  readonly #limit: number;
  #stage: FrameStage = "header";
  /** The fixed header read so far, kept until the packet is known to be handed on or skipped. */
  readonly #header = Buffer.alloc(5);
  #headerBytes = 0;
  #length = 0;
  #multiplier = 1;
  /** Bytes of the current packet's body still to hand on ("body") or to read or swallow ("topic", "discard"). */
  #remaining = 0;
  /** The PUBLISH being skipped: its fixed header's length, whole size and QoS. */
  #fixed = 0;
  #size = 0;
  #qos = 0;
  /** Its topic length (read first, two bytes), then its topic length, topic and packet id. */
  #topicLength = 0;
  #variable: Buffer | undefined;
  #filled = 0;
  #topic = "";
  #packetId = 0;

  /** `limit`: the largest packet handed on, fixed header included (the caller checked it is at least 16). */
  constructor(limit: number) {
    this.#limit = limit;
  }

  get max(): number {
    return this.#limit;
  }

  /**
   * Reads `chunk` (bytes may arrive in any split) and calls `sink` for what it holds, in order.
   * Returns undefined, or the fault that must end the session (the limiter is spent then): "protocol"
   * for a malformed remaining length, a QoS 3 PUBLISH or a topic that is not UTF-8, "oversize" for
   * a packet over the limit that is not a PUBLISH or a PUBLISH whose topic alone does not fit.
   */
  push(chunk: Buffer, sink: FrameSink): TransportFault | undefined {
    const n = chunk.length;
    let i = 0;
    /** Start of the bytes of this chunk still to hand on; -1 while a PUBLISH is being skipped. */
    let from = this.#stage === "topic" || this.#stage === "discard" ? -1 : 0;
    /** Where a fixed header began in this chunk; -1 when it began in an earlier one (or none did). */
    let headerAt = -1;
    while (i < n) {
      switch (this.#stage) {
        case "body": {
          const take = Math.min(this.#remaining, n - i);
          this.#remaining -= take;
          i += take;
          if (this.#remaining === 0) this.#stage = "header";
          break;
        }
        case "header": {
          const byte = chunk[i];
          if (this.#headerBytes === 0) {
            headerAt = i;
            this.#length = 0;
            this.#multiplier = 1;
          }
          this.#header[this.#headerBytes++] = byte;
          i++;
          if (this.#headerBytes === 1) break; // the type and flags byte
          // Remaining length: up to four bytes of 7 bits, least significant first ([MQTT-2.2.3]).
          this.#length += (byte & 0x7f) * this.#multiplier;
          this.#multiplier *= 128;
          if (byte & 0x80) {
            if (this.#headerBytes === 5) return { kind: "protocol", message: "malformed remaining length (more than four bytes) [MQTT-2.2.3]" };
            break;
          }
          const fixed = this.#headerBytes;
          this.#headerBytes = 0;
          const size = fixed + this.#length;
          if (size <= this.#limit) {
            if (headerAt < 0) {
              // The header began in an earlier chunk and was held back: hand it on now.
              sink.bytes(Buffer.from(this.#header.subarray(0, fixed)));
              from = i;
            }
            this.#remaining = this.#length;
            if (this.#remaining > 0) this.#stage = "body";
            break;
          }
          const type = this.#header[0] >> 4;
          if (type !== 3) return { kind: "oversize", message: `an incoming packet of ${size} bytes, over the ${this.#limit}-byte limit` };
          const qos = (this.#header[0] >> 1) & 3;
          if (qos === 3) return { kind: "protocol", message: "PUBLISH with QoS 3 [MQTT-3.3.1-4]" };
          if (from >= 0 && headerAt > from) sink.bytes(chunk.subarray(from, headerAt));
          from = -1;
          this.#fixed = fixed;
          this.#size = size;
          this.#qos = qos;
          this.#remaining = this.#length;
          this.#topicLength = 0;
          this.#variable = undefined;
          this.#filled = 0;
          this.#stage = "topic";
          break;
        }
        case "topic": {
          if (this.#variable === undefined) {
            this.#topicLength = this.#topicLength * 256 + chunk[i++];
            this.#remaining--;
            if (++this.#filled < 2) break;
            const need = 2 + this.#topicLength + (this.#qos > 0 ? 2 : 0);
            if (this.#fixed + need > this.#limit) {
              return { kind: "oversize", message: `an incoming PUBLISH of ${this.#size} bytes whose topic alone takes ${this.#fixed + need}, over the ${this.#limit}-byte limit` };
            }
            // Within the limit, and the whole packet is over it: the topic ends inside the packet.
            this.#variable = Buffer.allocUnsafe(need);
            this.#variable[0] = this.#topicLength >> 8;
            this.#variable[1] = this.#topicLength & 0xff;
          }
          const variable = this.#variable;
          if (this.#filled < variable.length) {
            const take = Math.min(variable.length - this.#filled, n - i);
            chunk.copy(variable, this.#filled, i, i + take);
            this.#filled += take;
            this.#remaining -= take;
            i += take;
          }
          if (this.#filled === variable.length) {
            const end = 2 + this.#topicLength;
            try {
              this.#topic = topicDecoder.decode(variable.subarray(2, end));
            } catch {
              return { kind: "protocol", message: "PUBLISH topic is not valid UTF-8 [MQTT-1.5.3-1]" };
            }
            this.#packetId = this.#qos > 0 ? (variable[end] << 8) | variable[end + 1] : 0;
            this.#variable = undefined;
            this.#stage = "discard";
          }
          break;
        }
        case "discard": {
          const take = Math.min(this.#remaining, n - i);
          this.#remaining -= take;
          i += take;
          break;
        }
      }
      if (this.#stage === "discard" && this.#remaining === 0) {
        this.#stage = "header";
        from = i;
        sink.oversizePublish(this.#topic, this.#qos, this.#packetId, this.#size);
      }
    }
    if (from >= 0) {
      // Hand on what is left, but hold back a fixed header not yet complete.
      const end = this.#stage === "header" && this.#headerBytes > 0 ? Math.max(from, headerAt) : n;
      if (end > from) sink.bytes(chunk.subarray(from, end));
    }
    return undefined;
  }
}

/**
 * Opens MQTT 3.1.1 sessions over node:net or node:tls. One connector serves any number of
 * sessions; it holds the TLS context and the one keepalive sweep timer they share.
 * Throws a UsageError for an option out of range.
 */
export class NodeMqttConnector implements MqttConnector {
  readonly #tls: boolean;
  readonly #secureContext: tls.SecureContext | undefined;
  readonly #ca: NodeMqttConnectorOptions["ca"];
  readonly #clientContexts = new WeakMap<ClientCertificate, tls.SecureContext>();
  readonly #rejectUnauthorized: boolean;
  readonly #resolve: AddressResolver | undefined;
  readonly #connectTimeoutMs: number;
  readonly #maxPacketBytes: number;
  readonly #sessions = new Set<NodeMqttSession>();
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweepPeriodMs = 0;
  readonly #sweep = (): void => this.#sweepSessions();

  constructor(options: NodeMqttConnectorOptions = {}) {
    const connectTimeoutMs = options.connectTimeoutMs ?? 30_000;
    const maxPacketBytes = options.maxPacketBytes ?? 128 * 1024;
    check(Number.isFinite(connectTimeoutMs) && connectTimeoutMs > 0, "connectTimeoutMs must be a positive number of milliseconds");
    check(Number.isInteger(maxPacketBytes) && maxPacketBytes >= 16, "maxPacketBytes must be an integer of at least 16");
    this.#tls = options.tls ?? true;
    this.#rejectUnauthorized = options.rejectUnauthorized ?? true;
    this.#ca = options.ca;
    this.#secureContext = this.#tls && options.ca !== undefined ? tls.createSecureContext({ ca: options.ca }) : undefined;
    this.#resolve = options.resolve;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#maxPacketBytes = maxPacketBytes;
  }
  /**
   * A TLS context that presents the device's certificate chain (X.509 to the hub), with the CA
   * trusted as for every session; made once per certificate, not at every reconnect.
   */
  #clientContext(certificate: ClientCertificate): tls.SecureContext {
    let context = this.#clientContexts.get(certificate);
    if (context) return context;
    const pem = (der: Uint8Array) => `-----BEGIN CERTIFICATE-----\n${Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE-----\n`;
    check(typeof certificate.key === "string" && certificate.chain.length > 0, "clientCertificate needs a chain and a PEM key (SoftwareKey.tlsKey)");
    context = tls.createSecureContext({ ca: this.#ca, cert: certificate.chain.map(pem).join(""), key: certificate.key as string });
    this.#clientContexts.set(certificate, context);
    return context;
  }


  /** Number of sessions not yet closed (for a fleet's statistics and for tests). */
  get openSessions(): number {
    return this.#sessions.size;
  }

  /**
   * Starts a session: the socket opens and CONNECT is written at once; the outcome arrives through
   * `callbacks` from the event loop, never from inside this call. Throws a UsageError for options
   * that cannot make a valid CONNECT (empty host, port out of range, keepalive over 65535).
   */
  connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession {
    check(typeof options.host === "string" && options.host.length > 0, "host must be a non-empty string");
    check(Number.isInteger(options.port) && options.port > 0 && options.port < 65536, "port must be an integer in 1..65535");
    check(
      Number.isInteger(options.keepAliveSeconds) && options.keepAliveSeconds >= 0 && options.keepAliveSeconds <= 0xffff,
      "keepAliveSeconds must be an integer in 0..65535",
    );
    check(typeof options.clientId === "string", "clientId must be a string");
    const connect = mqttPacket.generate({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clientId: options.clientId,
      username: options.username,
      password: Buffer.from(options.password, "utf8"),
      keepalive: options.keepAliveSeconds,
      clean: options.cleanSession,
    });
    // From here on only the CONNECT bytes hold the password; the options object is not kept.

    let target = { host: options.host, port: options.port };
    let resolveError: unknown;
    if (this.#resolve) {
      try {
        target = this.#resolve(options.host, options.port);
      } catch (error) {
        resolveError = error;
      }
    }
    target = { host: dialAddress(target.host), port: target.port };
    const session = new NodeMqttSession(callbacks, options.host, options.keepAliveSeconds * 1000, options.maxPacketBytes ?? this.#maxPacketBytes, this.#forget);
    this.#sessions.add(session);
    this.#ensureSweep(options.keepAliveSeconds * 1000);
    if (resolveError !== undefined) {
      session.failSoon({ kind: "dns", message: short(`cannot resolve ${options.host}: ${String((resolveError as Error)?.message ?? resolveError)}`) });
      return session;
    }

    let socket: net.Socket;
    if (this.#tls) {
      socket = tls.connect({
        host: target.host,
        port: target.port,
        // RFC 6066 forbids an IP address as SNI; the name check below still covers an IP.
        servername: isIP(options.host) === 0 ? options.host : undefined,
        secureContext: options.clientCertificate ? this.#clientContext(options.clientCertificate) : this.#secureContext,
        rejectUnauthorized: this.#rejectUnauthorized,
        checkServerIdentity: serviceIdentityCheck(options.host),
      });
    } else {
      socket = net.connect({ host: target.host, port: target.port, noDelay: true });
    }
    socket.setNoDelay(true);
    session.attach(socket, this.#tls, connect, Date.now() + this.#connectTimeoutMs);
    return session;
  }

  readonly #forget = (session: NodeMqttSession): void => {
    this.#sessions.delete(session);
    if (this.#sessions.size === 0 && this.#sweepTimer !== undefined) {
      clearInterval(this.#sweepTimer);
      this.#sweepTimer = undefined;
      this.#sweepPeriodMs = 0;
    }
  };

  /**
   * One interval for all sessions. Its period is a quarter of the shortest keepalive or connect
   * timeout it serves, at most a second and at least 25 ms, so a PINGREQ goes out within a quarter
   * keepalive of being due (brokers allow half a keepalive more, [MQTT-3.1.2-24]).
   */
  #ensureSweep(keepAliveMs: number): void {
    let period = Math.min(1000, this.#connectTimeoutMs / 4);
    if (keepAliveMs > 0) period = Math.min(period, keepAliveMs / 4);
    period = Math.max(25, Math.floor(period));
    if (this.#sweepTimer !== undefined && period >= this.#sweepPeriodMs) return;
    if (this.#sweepTimer !== undefined) clearInterval(this.#sweepTimer);
    this.#sweepPeriodMs = period;
    this.#sweepTimer = setInterval(this.#sweep, period);
    this.#sweepTimer.unref();
  }

  #sweepSessions(): void {
    const now = Date.now();
    for (const session of this.#sessions) session.tick(now);
  }
}

/** Checks the certificate against the service's name, wherever the socket really went. */
function serviceIdentityCheck(serviceHost: string): (hostname: string, cert: tls.PeerCertificate) => Error | undefined {
  return (_hostname, cert) => tls.checkServerIdentity(serviceHost, cert);
}

/** One MQTT session; created by `NodeMqttConnector.connect`. */
class NodeMqttSession implements MqttSession {
  readonly #callbacks: MqttSessionCallbacks;
  /** The service's host name (for fault messages). */
  readonly #host: string;
  readonly #keepAliveMs: number;
  readonly #limiter: FrameLimiter;
  readonly #forget: (session: NodeMqttSession) => void;
  #socket: net.Socket | undefined;
  #parser: mqttPacket.Parser | undefined;
  #state: SessionState = "connecting";
  #packetId = 0;
  #connectDeadline = 0;
  #lastWriteAt = 0;
  /** When the PINGREQ in flight must have been answered by; 0 when none is. */
  #pingDeadline = 0;
  /** Something arrived since the last sweep. */
  #heard = false;

  constructor(callbacks: MqttSessionCallbacks, host: string, keepAliveMs: number, maxPacketBytes: number, forget: (session: NodeMqttSession) => void) {
    this.#callbacks = callbacks;
    this.#host = host;
    this.#keepAliveMs = keepAliveMs;
    this.#limiter = new FrameLimiter(maxPacketBytes);
    this.#forget = forget;
  }

  /** Wires the socket and writes CONNECT (Node holds it until the connection is up). */
  attach(socket: net.Socket, secure: boolean, connect: Buffer, connectDeadline: number): void {
    this.#socket = socket;
    this.#connectDeadline = connectDeadline;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    this.#parser = parser;
    parser.on("packet", this.#onPacket);
    parser.on("error", this.#onParseError);
    socket.on(secure ? "secureConnect" : "connect", this.#onConnected);
    if (secure) socket.once("connect", this.#onTcpConnected);
    socket.on("data", this.#onData);
    socket.on("error", this.#onError);
    socket.on("close", this.#onSocketClose);
    this.#write(connect);
  }

  subscribe(topic: string, qos: 0 | 1): number {
    if (this.#state === "closed") return 0;
    check(typeof topic === "string" && topic.length > 0, "topic filter must be a non-empty string");
    check(qos === 0 || qos === 1, "qos must be 0 or 1");
    const messageId = (this.#packetId = nextPacketId(this.#packetId));
    this.#write(mqttPacket.generate({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] }));
    return messageId;
  }

  publish(topic: string, payload: Uint8Array, qos: 0 | 1): number {
    if (this.#state === "closed") return 0;
    check(typeof topic === "string" && topic.length > 0, "topic must be a non-empty string");
    check(payload instanceof Uint8Array, "payload must be a Uint8Array");
    check(qos === 0 || qos === 1, "qos must be 0 or 1");
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    let messageId = 0;
    if (qos === 1) messageId = this.#packetId = nextPacketId(this.#packetId);
    this.#write(mqttPacket.generate({ cmd: "publish", topic, payload: body, qos, messageId, dup: false, retain: false }));
    return messageId;
  }

  close(): void {
    if (this.#state === "closed") return;
    const connected = this.#state === "awaitingConnack" || this.#state === "open";
    this.#state = "closed";
    this.#forget(this);
    const socket = this.#socket;
    if (socket === undefined) return;
    if (connected && !socket.destroyed) {
      // DISCONNECT, then FIN (and TLS close_notify); the socket is destroyed once that is flushed.
      socket.end(disconnect, () => socket.destroy());
    } else {
      socket.destroy();
    }
  }

  /** Called by the connector's sweep. */
  tick(now: number): void {
    if (this.#state === "closed") return;
    if (this.#state !== "open") {
      if (now >= this.#connectDeadline) this.#fail("timeout", "no CONNACK within the connect timeout");
      return;
    }
    if (this.#heard) {
      this.#heard = false;
      this.#pingDeadline = 0;
    }
    if (this.#keepAliveMs === 0) return;
    if (this.#pingDeadline !== 0) {
      if (now >= this.#pingDeadline) this.#fail("timeout", "no PINGRESP or other traffic within half a keepalive of PINGREQ");
      return;
    }
    if (now - this.#lastWriteAt >= this.#keepAliveMs) {
      this.#write(pingreq);
      this.#pingDeadline = now + this.#keepAliveMs / 2;
    }
  }

  /** Ends the session with a fault from the event loop (for faults found inside `connect`). */
  failSoon(fault: TransportFault): void {
    setImmediate(() => this.#fail(fault.kind, fault.message));
  }

  #write(packet: Buffer): void {
    this.#lastWriteAt = Date.now();
    this.#socket?.write(packet);
  }

  /** Ends the session for a reason of its own or the peer's, and tells the core once. */
  #fail(kind: TransportFaultKind, message: string): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#forget(this);
    this.#socket?.destroy();
    this.#callbacks.onClose({ kind, message });
  }

  readonly #onTcpConnected = (): void => {
    if (this.#state === "connecting") this.#state = "handshaking";
  };

  readonly #onConnected = (): void => {
    if (this.#state === "connecting" || this.#state === "handshaking") this.#state = "awaitingConnack";
  };

  readonly #onData = (chunk: Buffer): void => {
    if (this.#state === "closed") return;
    this.#heard = true;
    const fault = this.#limiter.push(chunk, this.#sink);
    if (fault !== undefined) this.#fail(fault.kind, fault.message);
  };

  /** Where the limiter hands what it read: to the parser, or an oversize PUBLISH to the core. */
  readonly #sink: FrameSink = {
    bytes: (bytes) => {
      if (this.#state !== "closed") this.#parser?.parse(bytes);
    },
    oversizePublish: (topic, qos, packetId, size) => {
      if (this.#state === "closed") return;
      if (this.#state !== "open") return this.#fail("protocol", "expected CONNACK, received PUBLISH [MQTT-3.2.0-1]");
      if (qos === 2) return this.#fail("protocol", "QoS 2 PUBLISH on a session that subscribes with QoS 0 or 1 only");
      this.#deliver(topic, Buffer.alloc(0), qos, packetId, size);
    },
  };

  /**
   * Hands a PUBLISH to the core, then acknowledges it if it is QoS 1 and the session is still
   * open: a message the core closed the session on, or threw on, stays unacknowledged, and the
   * hub redelivers it to a later session.
   */
  #deliver(topic: string, payload: Buffer, qos: number, packetId: number, oversize: number | undefined): void {
    try {
      if (oversize === undefined) this.#callbacks.onMessage(topic, payload);
      else this.#callbacks.onMessage(topic, payload, oversize);
    } catch {
      // onMessage must not throw; if it does, this message goes unacknowledged rather than the
      // exception ending the process from inside a socket event.
      return;
    }
    if (qos === 1 && this.#state === "open") this.#write(mqttPacket.generate({ cmd: "puback", messageId: packetId }));
  }

  readonly #onParseError = (error: Error): void => {
    this.#fail("protocol", short(`malformed packet: ${error.message}`));
  };

  readonly #onError = (error: Error): void => {
    if (this.#state === "closed") return;
    const fault = transportFaultOf(error, this.#state === "handshaking", this.#host);
    this.#fail(fault.kind, fault.message);
  };

  readonly #onSocketClose = (): void => {
    if (this.#state === "closed") return;
    if (this.#state === "handshaking") this.#fail("tls", "connection closed during the TLS handshake");
    else if (this.#state === "connecting") this.#fail("refused", "connection closed before it was established");
    else this.#fail("closed", this.#state === "open" ? "connection closed by the peer" : "connection closed by the peer before CONNACK");
  };

  readonly #onPacket = (packet: Packet): void => {
    if (this.#state === "closed") return;
    if (this.#state !== "open") {
      // The first packet from the server MUST be CONNACK ([MQTT-3.2.0-1]).
      if (packet.cmd !== "connack") {
        this.#fail("protocol", `expected CONNACK, received ${packet.cmd.toUpperCase()} [MQTT-3.2.0-1]`);
        return;
      }
      this.#state = "open";
      this.#callbacks.onConnack(packet.returnCode ?? 0, packet.sessionPresent);
      return;
    }
    switch (packet.cmd) {
      case "publish":
        if (packet.qos === 2) {
          this.#fail("protocol", "QoS 2 PUBLISH on a session that subscribes with QoS 0 or 1 only");
          return;
        }
        this.#deliver(packet.topic, typeof packet.payload === "string" ? Buffer.from(packet.payload, "utf8") : packet.payload, packet.qos, packet.messageId ?? 0, undefined);
        return;
      case "puback":
        this.#callbacks.onPuback(packet.messageId ?? 0);
        return;
      case "suback":
        this.#callbacks.onSuback(packet.messageId ?? 0, packet.granted as number[]);
        return;
      case "pingresp":
        return;
      default:
        this.#fail("protocol", `unexpected ${packet.cmd.toUpperCase()} from the server`);
    }
  };
}
