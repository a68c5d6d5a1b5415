/**
 * The ports: the few things a host provides so that the core can reach the world. Each host
 * (hosts/desktop on Node, hosts/moddable on the SDK) implements them; the core never imports a
 * host. Callbacks follow the ECMA-419 habit: one options object, callbacks inside it, errors
 * carry a reason, `close()` may be called twice.
 */

/** Why a connection ended or could not be made. Maps to a row of the retry policy. */
export type TransportFaultKind =
  | "dns" // the host name did not resolve
  | "refused" // TCP connect refused or unreachable
  | "tls" // TLS handshake or certificate verification failed
  | "closed" // the peer or the network closed an open connection
  | "protocol" // the peer sent bytes that are not valid MQTT
  | "oversize" // the peer sent a packet over `MqttConnectOptions.maxPacketBytes` (a PUBLISH: only if its topic alone is)
  | "timeout"; // the host gave up on a connect or a keepalive

export interface TransportFault {
  readonly kind: TransportFaultKind;
  /** A short reason for logs; never contains a credential. */
  readonly message: string;
}

/** Where a DPS or hub MQTT session goes and who it says it is. */
export interface MqttConnectOptions {
  /** Host name as the service knows it (also the TLS server name). */
  readonly host: string;
  readonly port: number;
  readonly clientId: string;
  readonly username: string;
  /** The SAS token; a host drops its reference once CONNECT has been written. */
  readonly password: string;
  readonly keepAliveSeconds: number;
  readonly cleanSession: boolean;
  /**
   * The largest packet the host accepts from the peer (fixed header included). A larger PUBLISH
   * does not end the session: the host keeps its topic and packet id, discards its payload as it
   * streams in (never buffering it), and reports it through `onMessage` with `oversize` set; but
   * if even its fixed header, topic and packet id exceed this, or the larger packet is of another
   * type, the session ends with fault "oversize" (its message says how large it was). Default:
   * the host's own.
   */
  readonly maxPacketBytes?: number;
  /**
   * X.509 authentication: the TLS client certificate chain (leaf first, each DER) and the host's
   * handle of its private key (`CertificateKey.tlsKey`). The password is then empty.
   */
  readonly clientCertificate?: ClientCertificate;
}

export interface ClientCertificate {
  readonly chain: readonly Uint8Array[];
  /** What the host's TLS takes as the key (a PEM on the desktop); opaque to the core. */
  readonly key: unknown;
}

export interface MqttSessionCallbacks {
  /** CONNACK arrived. `returnCode` 0 is accepted; 1..5 are refusals (MQTT 3.1.1, 3.2.2.3). */
  onConnack(returnCode: number, sessionPresent: boolean): void;
  /** SUBACK arrived for `packetId`: one granted QoS per topic, 0x80 for a refusal. */
  onSuback(packetId: number, granted: readonly number[]): void;
  /**
   * A PUBLISH arrived; a QoS 1 one is acknowledged (PUBACK) when this returns, so a message the
   * core has handed to the application is acknowledged, and one lost in a crash in between is
   * redelivered by the hub. No PUBACK follows if the core closed the session inside this call
   * (the hub redelivers the message to a later session) or if this threw (it must not).
   *
   * `oversize` is set when the PUBLISH was larger than `MqttConnectOptions.maxPacketBytes`: it is
   * the PUBLISH's whole size in bytes on the wire (fixed header, topic, packet id and payload),
   * `payload` is then empty (the host discarded it unread), and the PUBLISH is still acknowledged
   * as above: the core decides what to do about it (report, reject), since a redelivery of a
   * message that can never fit would loop. Undefined for every PUBLISH within the limit.
   */
  onMessage(topic: string, payload: Uint8Array, oversize?: number): void;
  /** PUBACK arrived for a QoS 1 publish. */
  onPuback(packetId: number): void;
  /** The session is over (never called after the core's own `close()`). */
  onClose(fault: TransportFault): void;
}

/** One MQTT 3.1.1 session. All methods are safe after close (they do nothing). */
export interface MqttSession {
  /** Sends SUBSCRIBE; returns the packet id. */
  subscribe(topic: string, qos: 0 | 1): number;
  /** Sends PUBLISH; returns the packet id (0 for QoS 0). */
  publish(topic: string, payload: Uint8Array, qos: 0 | 1): number;
  /** Sends DISCONNECT if connected and closes. Idempotent. */
  close(): void;
}

/** Opens MQTT sessions. Connecting starts at once; the result arrives through the callbacks. */
export interface MqttConnector {
  connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession;
}

/** An HTTPS request for the registration status lookup. */
export interface HttpsRequest {
  readonly method: "POST" | "GET" | "PUT";
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
}

export interface HttpsResponse {
  readonly status: number;
  /** Header names in lowercase. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
}

export interface HttpsPort {
  /** Calls exactly one of `onResponse`, `onError`; returns a function that aborts the request. */
  request(request: HttpsRequest, onResponse: (response: HttpsResponse) => void, onError: (fault: TransportFault) => void): () => void;
}

/** One-shot timers. */
export interface TimerPort {
  /** Calls `callback` once after `delayMs`; returns a handle for `clear`. */
  set(callback: () => void, delayMs: number): unknown;
  /** Cancels a timer; a handle already fired or cleared is ignored. */
  clear(handle: unknown): void;
}

/** Wall-clock time in milliseconds since 1970 (SAS expiry depends on it being right). */
export type Clock = () => number;

/** A uniform random number in [0, 1) for jitter. */
export type RandomSource = () => number;

/** Fills `bytes` with cryptographically strong random bytes (nonces for the cache record). */
export type SecureRandom = (bytes: Uint8Array) => void;

export type LogLevel = "debug" | "info" | "warn" | "error";
/** Structured log line; `fields` never contain secrets. */
export type LogPort = (level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>) => void;
