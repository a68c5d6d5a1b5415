// The IoT Hub side of one device connection. The hub is chosen by the CONNECT user name
// (`{hub}/{deviceId}/?api-version=...`); when the client sent SNI naming another emulated hub,
// the connection is refused. Telemetry is stored and acknowledged; the device twin can be read
// and its reported properties patched; anything else a real hub would refuse closes the connection.
// The device id is the same bytes everywhere, as the official clients write it: client id, user
// name and topic raw, the token's `sr` URL-encoded (and compared decoded).
//
//   CONNECT  client id sensor:01, user hub-1.azure-devices.localhost/sensor:01/?api-version=2021-04-12
//            password SharedAccessSignature sr=hub-1.azure-devices.localhost%2Fdevices%2Fsensor%3A01&sig=...&se=...
//   PUBLISH  devices/sensor:01/messages/events/  {"temperature":21.5}   -> PUBACK
//   PUBLISH  devices/sensor%3A01/messages/events/                       -> closed: another device's topic
import type { Socket } from "node:net";
import type { IConnectPacket, IPublishPacket, ISubscribePacket } from "mqtt-packet";
import type { FaultSubject } from "./faults.js";
import { Counters } from "./log.js";
import { MqttSession, serverNameOf, type SessionContext } from "./mqtt-session.js";
import { checkSasClaims, parseSasToken, signatureMatches } from "./sas.js";
import type { HubDevice, HubState } from "./service.js";
import { HUB_MAX_MESSAGE_BYTES } from "./config.js";
import { connackForStatus } from "./dps-session.js";
import { hubSubscriptionAllowed, isDeviceId, parseHubTopic, parseHubUserName } from "./topics.js";

/** Messages above this size make a real hub close the connection (per hub: `maxMessageBytes`). */
export { HUB_MAX_MESSAGE_BYTES };

export class HubSession extends MqttSession {
  readonly endpoint = "hub" as const;
  deviceId: string | undefined;
  hubHostName: string | undefined;
  device: HubDevice | undefined;
  #hub: HubState | undefined;
  #twinQos = -1;

  constructor(socket: Socket, ctx: SessionContext, transport: "tls" | "tcp") {
    super(socket, ctx, transport);
  }

  clientLabel(): string | undefined {
    return this.deviceId;
  }

  #subject(): FaultSubject {
    return { registrationId: this.device?.registrationId ?? this.deviceId, groupId: this.device?.groupId };
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
        if (typeof token === "string") failure = token;
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
          this.ctx.log.info("hub-token-refused", { client: this.deviceId, hub: hub.hostName, reason: failure });
          return this.connack(5);
        }
        this.device = device;
        this.#hub = hub;
        device.connections++;
        this.connack(0);
        if (this.ctx.log.enabled("debug")) this.ctx.log.debug("hub-connected", { client: this.deviceId, hub: hub.hostName, transport: this.transport });
      },
    });
  }

  protected onSubscribe(packet: ISubscribePacket): void {
    const granted = packet.subscriptions.map((s) => {
      if (!hubSubscriptionAllowed(s.topic, this.deviceId as string)) return 0x80;
      const qos = Math.min(s.qos, 1);
      if (s.topic === "$iothub/twin/res/#") this.#twinQos = qos;
      return qos;
    });
    this.suback(packet.messageId, granted);
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
        if (packet.qos > 0) this.puback(packet.messageId);
        this.#twinAnswer(200, request.rid, JSON.stringify({
          desired: { ...device.desired, $version: device.desiredVersion },
          reported: { ...device.reported, $version: device.reportedVersion },
        }));
        return;
      case "twin-patch-reported": {
        let patch: unknown;
        try {
          patch = JSON.parse(payload.toString("utf8"));
        } catch {
          patch = undefined;
        }
        if (packet.qos > 0) this.puback(packet.messageId);
        if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return this.#twinAnswer(400, request.rid, "");
        mergePatch(device.reported, patch as Record<string, unknown>);
        device.reportedVersion++;
        this.#twinAnswer(204, request.rid, "", device.reportedVersion);
        return;
      }
      default:
        return this.protocolError(`publish to a topic the hub does not serve: ${packet.topic.slice(0, 80)}`);
    }
  }

  #twinAnswer(status: number, rid: string | undefined, body: string, version?: number): void {
    Counters.bump(this.ctx.counters.hub, `twin-${status}`);
    if (this.#twinQos < 0 || rid === undefined) return;
    const topic = `$iothub/twin/res/${status}/?$rid=${rid}` + (version === undefined ? "" : `&$version=${version}`);
    this.publish(topic, body, this.#twinQos as 0 | 1);
  }

  protected override onClosed(): void {
    if (this.device && this.connected) this.device.connections = Math.max(0, this.device.connections - 1);
  }
}

/** JSON merge patch of reported properties: null deletes. */
function mergePatch(target: Record<string, unknown>, patch: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete target[key];
    else if (typeof value === "object" && !Array.isArray(value) && typeof target[key] === "object" && target[key] !== null) {
      mergePatch(target[key] as Record<string, unknown>, value as Record<string, unknown>);
    } else target[key] = value;
  }
}
