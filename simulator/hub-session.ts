// The IoT Hub side of one device connection. The hub is chosen by the CONNECT user name
// (`{hub}/{deviceId}/?api-version=...`); when the client sent SNI naming another emulated hub,
// the connection is refused. Telemetry is stored and acknowledged; the device twin can be read
// and its reported properties patched (within IoT Hub's limits, throttled when the config says so);
// desired patches are pushed to a subscribed device; C2D messages are delivered at QoS 1 and stay
// queued until the device PUBACKs them (so a new connection gets them again); direct methods go
// out on `$iothub/methods/POST/` and their answers go back to the HubBroker. Anything else a real
// hub would refuse closes the connection.
// The device id is the same bytes everywhere, as the official clients write it: client id, user
// name and topic raw, the token's `sr` URL-encoded (and compared decoded).
//
//   CONNECT  client id sensor:01, user hub-1.azure-devices.localhost/sensor:01/?api-version=2021-04-12
//            password SharedAccessSignature sr=hub-1.azure-devices.localhost%2Fdevices%2Fsensor%3A01&sig=...&se=...
//   PUBLISH  devices/sensor:01/messages/events/  {"temperature":21.5}   -> PUBACK
//   PUBLISH  devices/sensor%3A01/messages/events/                       -> closed: another device's topic
//   SUBSCRIBE devices/sensor:01/messages/devicebound/#  -> PUBLISH devices/sensor:01/messages/devicebound/%24.mid=..&%24.to=..  (QoS 1, until PUBACK)
//   PUBLISH  $iothub/twin/PATCH/properties/reported/?$rid=4  {"fw":"1.0"}  -> $iothub/twin/res/204/?$rid=4&$version=3
import { X509Certificate as NodeX509 } from "node:crypto";
import type { Socket } from "node:net";
import { commonNameOf, thumbprintOf } from "./issuance.js";
import type { IConnectPacket, IPublishPacket, ISubscribePacket } from "mqtt-packet";
import type { FaultSubject } from "./faults.js";
import { Counters } from "./log.js";
import { MqttSession, peerCertificateOf, serverNameOf, type SessionContext } from "./mqtt-session.js";
import { checkSasClaims, parseSasToken, signatureMatches } from "./sas.js";
import type { HubDevice, HubState } from "./service.js";
import { HUB_MAX_MESSAGE_BYTES } from "./config.js";
import { connackForStatus } from "./dps-session.js";
import { hubSubscriptionAllowed, isDeviceId, parseHubTopic, parseHubUserName } from "./topics.js";
import type { BrokerSession } from "./hub-broker.js";
import { c2dTopic, deviceTwinDocument, patchedSection, TWIN_LIMITS } from "./hub-features.js";
import { timestampUtc } from "./errors.js";
import type { FaultRule } from "./config.js";

/** Messages above this size make a real hub close the connection (per hub: `maxMessageBytes`). */
export { HUB_MAX_MESSAGE_BYTES };

export class HubSession extends MqttSession implements BrokerSession {
  readonly endpoint = "hub" as const;
  deviceId: string | undefined;
  hubHostName: string | undefined;
  device: HubDevice | undefined;
  #hub: HubState | undefined;
  #twinQos = -1;
  #c2dQos = -1;
  #methodsQos = -1;
  #desiredQos = -1;
  /** C2D messages published on this connection and not yet acknowledged: packet id -> message id. */
  readonly #inflight = new Map<number, string>();

  get subscribedC2d(): boolean {
    return this.#c2dQos >= 0;
  }
  get subscribedMethods(): boolean {
    return this.#methodsQos >= 0;
  }
  get subscribedDesired(): boolean {
    return this.#desiredQos >= 0;
  }

  constructor(socket: Socket, ctx: SessionContext, transport: "tls" | "tcp") {
    super(socket, ctx, transport);
  }

  clientLabel(): string | undefined {
    return this.deviceId;
  }

  #subject(): FaultSubject {
    return { registrationId: this.device?.registrationId ?? this.deviceId, groupId: this.device?.groupId };
  }

  /**
   * X.509 CONNECT (empty password, a TLS client certificate): the certificate must be one DPS
   * issued to this device from its CSR or that the device attested with at DPS (its thumbprint
   * among the device's certificates), valid now, with the device id or its registration id as CN.
   * Returns why not, or undefined.
   */
  #checkCertificate(der: Buffer, device: HubDevice): string | undefined {
    let cert: NodeX509;
    try {
      cert = new NodeX509(der);
    } catch {
      return "not-a-certificate";
    }
    const thumbprint = thumbprintOf(der);
    const now = this.ctx.now();
    if (!device.certificates?.some((c) => c.thumbprint === thumbprint)) {
      return this.ctx.issuance.issuer.check(der, now).ok ? "certificate-not-issued-to-device" : "unknown-certificate";
    }
    if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) return "certificate-expired";
    const cn = commonNameOf(cert.subject);
    if (cn !== device.deviceId && cn !== device.registrationId) return "certificate-cn-mismatch";
    return undefined;
  }

  protected onConnect(packet: IConnectPacket): void {
    if (packet.protocolVersion !== 4) return this.connack(1);
    const user = parseHubUserName(packet.username);
    if (!user.ok) {
      this.deviceId = packet.clientId || undefined;
      this.ctx.log.info("hub-bad-username", { client: this.deviceId, problem: user.problem });
      return this.connack(4);
    }
    this.deviceId = user.deviceId;
    if (packet.clientId !== user.deviceId) return this.connack(2);
    // A client id that cannot be an IoT Hub device id (a character outside the registry's set, or
    // over 128 characters) is refused as MQTT 3.1.1 says a server refuses a client identifier it
    // does not allow: CONNACK 2, identifier rejected [MQTT-3.1.3-9]. Microsoft documents the
    // charset (learn.microsoft.com, IoT Hub identity registry and the Event Grid deviceId field)
    // but not which return code the hub sends for an id outside it; 2 is also what the emulator
    // answers for a client id that differs from the user name's device id.
    if (!isDeviceId(user.deviceId)) {
      this.ctx.log.info("hub-bad-device-id", { client: this.deviceId.slice(0, 140) });
      return this.connack(2);
    }
    const hub = this.ctx.service.hub(user.hubHostName);
    if (!hub) {
      this.ctx.log.info("hub-unknown", { client: this.deviceId, hub: user.hubHostName });
      return this.connack(5);
    }
    const sni = serverNameOf(this.socket);
    if (sni !== undefined && sni.toLowerCase() !== hub.hostName.toLowerCase() && this.ctx.service.hub(sni)) {
      this.ctx.log.info("hub-sni-mismatch", { client: this.deviceId, hub: hub.hostName, sni });
      return this.connack(5);
    }
    this.hubHostName = hub.hostName;
    this.device = hub.devices.get(user.deviceId);
    const token = parseSasToken(packet.password);
    this.withFault("hub-connect", this.#subject(), {
      connack: (code) => this.connack(code),
      status: (rule) => this.connack(connackForStatus(rule.status ?? 500)),
      proceed: () => {
        if (!hub.available) return this.connack(3);
        const device = hub.devices.get(user.deviceId);
        if (!device || !device.enabled) {
          this.ctx.log.info("hub-device-refused", { client: this.deviceId, hub: hub.hostName, reason: device ? "disabled" : "not-found" });
          return this.connack(5);
        }
        let failure: string | undefined;
        const certificate = packet.password === undefined || packet.password.length === 0 ? peerCertificateOf(this.socket) : undefined;
        if (certificate !== undefined) failure = this.#checkCertificate(certificate, device);
        else if (typeof token === "string") failure = token;
        else {
          failure = checkSasClaims(token, {
            resource: `${hub.hostName}/devices/${user.deviceId}`,
            hostIgnoreCase: true,
            keyName: null,
            nowMs: this.ctx.now(),
            skewSeconds: this.ctx.service.skewSeconds,
          });
          if (!failure && !device.keys.some((k) => signatureMatches(token, k))) failure = "bad-signature";
        }
        if (failure) {
          this.ctx.log.info(certificate ? "hub-certificate-refused" : "hub-token-refused", { client: this.deviceId, hub: hub.hostName, reason: failure });
          return this.connack(5);
        }
        this.device = device;
        this.#hub = hub;
        device.connections++;
        if (certificate !== undefined) Counters.bump(this.ctx.counters.hub, "x509-connect");
        this.connack(0);
        device.lastActivity = timestampUtc(this.ctx.now());
        this.ctx.broker.attach(this);
        if (this.ctx.log.enabled("debug")) this.ctx.log.debug("hub-connected", { client: this.deviceId, hub: hub.hostName, transport: this.transport });
      },
    });
  }

  protected onSubscribe(packet: ISubscribePacket): void {
    const granted = packet.subscriptions.map((s) => {
      if (!hubSubscriptionAllowed(s.topic, this.deviceId as string)) return 0x80;
      const qos = Math.min(s.qos, 1);
      if (s.topic === "$iothub/twin/res/#") this.#twinQos = qos;
      else if (s.topic === "$iothub/twin/PATCH/properties/desired/#") this.#desiredQos = qos;
      else if (s.topic === "$iothub/methods/POST/#") this.#methodsQos = qos;
      else this.#c2dQos = qos;
      return qos;
    });
    this.suback(packet.messageId, granted);
    const device = this.device as HubDevice;
    if (this.#c2dQos >= 0) this.deliverC2d();
    if (this.#methodsQos >= 0) this.ctx.broker.methodsSubscribed(device);
  }

  /**
   * Publishes every queued C2D message this connection has not sent yet, at QoS 1 (IoT Hub sends
   * C2D at QoS 1 whatever the subscription asked, and keeps a message until its PUBACK).
   */
  deliverC2d(): void {
    const device = this.device;
    if (!device || this.closed || this.#c2dQos < 0) return;
    this.ctx.broker.dropExpired(device);
    const sent = new Set(this.#inflight.values());
    for (const m of device.c2d) {
      if (sent.has(m.messageId)) continue;
      m.deliveries++;
      Counters.bump(this.ctx.counters.hub, m.deliveries > 1 ? "c2d-redelivered" : "c2d-sent");
      const id = this.publish(c2dTopic(device.deviceId, m), m.body, 1);
      this.#inflight.set(id, m.messageId);
    }
  }

  protected override onPuback(messageId: number): void {
    const id = this.#inflight.get(messageId);
    if (id === undefined) return; // the PUBACK of a twin answer or a method call
    this.#inflight.delete(messageId);
    const device = this.device as HubDevice;
    const before = device.c2d.length;
    device.c2d = device.c2d.filter((m) => m.messageId !== id);
    if (device.c2d.length < before) Counters.bump(this.ctx.counters.hub, "c2d-acked");
  }

  sendMethod(methodName: string, rid: string, body: string): void {
    this.publish(`$iothub/methods/POST/${methodName}/?$rid=${rid}`, body, this.#methodsQos as 0 | 1);
  }

  sendDesired(patch: Record<string, unknown>, version: number): void {
    this.publish(`$iothub/twin/PATCH/properties/desired/?$version=${version}`, JSON.stringify({ ...patch, $version: version }), this.#desiredQos as 0 | 1);
  }

  protected onPublish(packet: IPublishPacket): void {
    const device = this.device as HubDevice;
    const request = parseHubTopic(packet.topic);
    const payload = typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload;
    if (payload.length > HUB_MAX_MESSAGE_BYTES) {
      Counters.bump(this.ctx.counters.hub, "message-too-large");
      return this.protocolError(`message of ${payload.length} bytes exceeds the hub's ${HUB_MAX_MESSAGE_BYTES}`);
    }
    switch (request.kind) {
      case "telemetry": {
        // Byte for byte: `devices/sensor%3A01/...` is another device's topic for `sensor:01`.
        if (request.deviceId !== device.deviceId) return this.protocolError("telemetry published on another device's topic");
        const limit = this.#hub?.maxMessageBytes ?? HUB_MAX_MESSAGE_BYTES;
        if (payload.length > limit) {
          // The hub cannot answer an error over MQTT 3.1.1: it closes the connection, no PUBACK.
          Counters.bump(this.ctx.counters.hub, "message-too-large");
          return this.protocolError(`telemetry message of ${payload.length} bytes exceeds the hub's maxMessageBytes (${limit})`);
        }
        this.withFault("hub-publish", this.#subject(), {
          proceed: () => {
            this.ctx.service.addTelemetry({
              deviceId: device.deviceId,
              hubHostName: device.hubHostName,
              topic: packet.topic,
              payload: payload.toString("utf8"),
              receivedAt: Date.now(),
            });
            Counters.bump(this.ctx.counters.hub, "telemetry");
            if (packet.qos > 0) {
              Counters.bump(this.ctx.counters.hub, "puback");
              this.puback(packet.messageId);
            }
          },
        });
        return;
      }
      case "twin-get":
        device.lastActivity = timestampUtc(this.ctx.now());
        this.#twinStep("twin-get", packet, request.rid, () => {
          Counters.bump(this.ctx.counters.hub, "twin-get");
          this.#twinAnswer(200, request.rid, JSON.stringify(deviceTwinDocument(device)));
        });
        return;
      case "twin-patch-reported":
        device.lastActivity = timestampUtc(this.ctx.now());
        this.#twinStep("twin-patch", packet, request.rid, () => {
          Counters.bump(this.ctx.counters.hub, "twin-patch");
          let patch: unknown;
          try {
            patch = JSON.parse(payload.toString("utf8"));
          } catch {
            patch = undefined;
          }
          if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return this.#twinError(400, request.rid, "The reported properties patch is not a JSON object.");
          const next = patchedSection(device.reported, patch as Record<string, unknown>, TWIN_LIMITS.sectionBytes, "properties.reported");
          if (!next.ok) return this.#twinError(next.problem.status, request.rid, next.problem.message);
          device.reported = next.value;
          device.reportedVersion++;
          device.twinVersion++;
          device.twinUpdated = timestampUtc(this.ctx.now());
          this.#twinAnswer(204, request.rid, "", device.reportedVersion);
        });
        return;
      case "method-response":
        if (packet.qos > 0) this.puback(packet.messageId);
        device.lastActivity = timestampUtc(this.ctx.now());
        this.ctx.broker.methodAnswered(device, request.rid, request.status, payload.toString("utf8"));
        return;
      default:
        return this.protocolError(`publish to a topic the hub does not serve: ${packet.topic.slice(0, 80)}`);
    }
  }

  /**
   * A twin request under its fault step and the hub's twin throttle: the PUBACK at once, then
   * (after any injected delay) a fault's status, a 429, or `proceed`.
   */
  #twinStep(step: "twin-get" | "twin-patch", packet: IPublishPacket, rid: string | undefined, proceed: () => void): void {
    this.withFault(step, this.#subject(), {
      first: () => {
        if (packet.qos > 0) this.puback(packet.messageId);
      },
      status: (rule: FaultRule) => this.#twinError(rule.status ?? 500, rid, undefined, rule.errorCode),
      proceed: () => {
        const wait = this.ctx.broker.twinThrottle((this.device as HubDevice).hubHostName);
        if (wait > 0) {
          this.ctx.counters.throttled++;
          return this.#twinError(429, rid, "Operations are being throttled by the service.", 429001);
        }
        proceed();
      },
    });
  }

  /** `$iothub/twin/res/{status}/?$rid=` with an error body like the hub's. */
  #twinError(status: number, rid: string | undefined, message?: string, errorCode?: number): void {
    const body = this.ctx.service.error(status, this.ctx.now(), undefined, errorCode ?? (status === 400 ? 400004 : undefined), message).body;
    this.#twinAnswer(status, rid, JSON.stringify(body));
  }

  #twinAnswer(status: number, rid: string | undefined, body: string, version?: number): void {
    Counters.bump(this.ctx.counters.hub, `twin-${status}`);
    if (this.#twinQos < 0 || rid === undefined) return;
    const topic = `$iothub/twin/res/${status}/?$rid=${rid}` + (version === undefined ? "" : `&$version=${version}`);
    this.publish(topic, body, this.#twinQos as 0 | 1);
  }

  protected override onClosed(): void {
    if (this.device && this.connected) {
      this.device.connections = Math.max(0, this.device.connections - 1);
      this.ctx.broker.detach(this);
    }
    // Unacknowledged C2D messages stay queued: the next connection gets them again.
    this.#inflight.clear();
  }
}
