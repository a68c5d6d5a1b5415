/**
 * Cloud-to-device messages: an opt-in hub feature (a firmware that does not include it pays
 * nothing). It subscribes to `devices/{deviceId}/messages/devicebound/#` at QoS 1 on every
 * connection and hands each message to the application:
 *
 *   devices/sensor-01/messages/devicebound/%24.mid=6b1c&%24.to=%2Fdevices%2Fsensor-01%2Fmessages%2FdeviceBound&%24.ct=application%2Fjson&color=red
 *   {"led":"on"}
 *
 * The hub redelivers a message until the device acknowledges it. The host sends the PUBACK when
 * its message callback returns, and the handler has run by then: a message is acknowledged once
 * the application has it. If the device loses power between the two, the hub sends the message
 * again. A message over `maxBytes` is not handed on. It is acknowledged and reported "rejected"
 * with its size, because a message that can never fit would otherwise come back for ever.
 *
 *   const c2d = new CloudMessages({ onMessage: (m) => trace(`${m.text()} ${m.properties.color}\n`) });
 *   const device = new DeviceRuntime(config, ports, listener, [c2d]);
 */
import { utf8Decode } from "./encoding.js";
import { UsageError, excerpt } from "./errors.js";
import { featureSet, parseJsonValue, parsePropertyBag } from "./hub-features.js";
import type { FeatureIo, HubFeature } from "./hub-session.js";

/** IoT Hub's own limit for a cloud-to-device message body. */
export const HUB_MAX_C2D_BYTES = 64 * 1024;

export interface CloudMessage {
  readonly body: Uint8Array;
  /** Application properties, decoded. */
  readonly properties: Readonly<Record<string, string>>;
  /** System properties by their wire names (`$.mid`, `$.cid`, `$.to`, `$.ct`, `$.ce`, `$.exp`, `$.uid`...). */
  readonly system: Readonly<Record<string, string>>;
  readonly messageId?: string;
  readonly correlationId?: string;
  /** The body as UTF-8 text. @throws PeerError MALFORMED_UTF8. */
  text(): string;
  /** The body as JSON. @throws PeerError MALFORMED_JSON, MALFORMED_UTF8. */
  json(): unknown;
}

export interface CloudMessagesOptions {
  /** Called once per message, outside the machine; what it throws is logged, and the message is still acknowledged. */
  readonly onMessage: (message: CloudMessage) => void;
  /** The largest body handed on; default 8 KiB (IoT Hub sends up to 64 KiB). */
  readonly maxBytes?: number;
}

export class CloudMessages implements HubFeature {
  readonly name = "c2d";
  readonly driver = featureSet;
  readonly maxIncomingBytes: number;
  #onMessage: (message: CloudMessage) => void;
  #prefix = "";

  /** @throws UsageError INVALID_ARGUMENT without a handler or with a bad `maxBytes`. */
  constructor(options: CloudMessagesOptions) {
    if (!options || typeof options.onMessage !== "function") throw new UsageError("INVALID_ARGUMENT", "CloudMessages needs an onMessage handler");
    const max = options.maxBytes ?? 8 * 1024;
    if (!(Number.isInteger(max) && max >= 1 && max <= HUB_MAX_C2D_BYTES)) throw new UsageError("INVALID_ARGUMENT", `maxBytes must be an integer in 1..${HUB_MAX_C2D_BYTES}`);
    this.maxIncomingBytes = max;
    this.#onMessage = options.onMessage;
  }

  subscriptions(deviceId: string): readonly string[] {
    this.#prefix = `devices/${deviceId}/messages/devicebound/`;
    return [this.#prefix + "#"];
  }

  ready(): void {}

  message(topic: string, payload: Uint8Array, oversize: number | undefined, io: FeatureIo): boolean {
    if (this.#prefix === "" || topic.slice(0, this.#prefix.length) !== this.#prefix) return false;
    let bag: Record<string, string>;
    try {
      bag = parsePropertyBag(topic.slice(this.#prefix.length));
    } catch (error) {
      io.report({ source: "c2d", state: "rejected", bytes: oversize ?? payload.length, reason: `its property bag cannot be read: ${(error as Error).message}` });
      return true;
    }
    const messageId = bag["$.mid"];
    const bytes = oversize ?? payload.length;
    if (oversize !== undefined || payload.length > this.maxIncomingBytes) {
      io.report({ source: "c2d", state: "rejected", messageId, bytes, reason: `${bytes} bytes, over the ${this.maxIncomingBytes}-byte limit (maxBytes); acknowledged so that the hub does not send it again` });
      return true;
    }
    const properties: Record<string, string> = {};
    const system: Record<string, string> = {};
    const keys = Object.keys(bag);
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (k.slice(0, 2) === "$.") system[k] = bag[k];
      else properties[k] = bag[k];
    }
    const message: CloudMessage = {
      body: payload,
      properties,
      system,
      messageId,
      correlationId: bag["$.cid"],
      text: () => utf8Decode(payload),
      json: () => parseJsonValue(payload, "cloud-to-device message", HUB_MAX_C2D_BYTES),
    };
    io.report({ source: "c2d", state: "received", messageId, bytes });
    const handler = this.#onMessage;
    io.invoke(`c2d ${messageId === undefined ? "(no id)" : excerpt(messageId, 40)}`, () => handler(message));
    return true;
  }

  lost(): void {}

  deadline(): number | undefined {
    return undefined;
  }

  timer(): void {}

  attach(): void {}
}
