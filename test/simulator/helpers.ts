// Test support for the emulator: a small raw MQTT 3.1.1 client over net/tls built on mqtt-packet
// (so tests can send exactly the bytes they mean, bad ones included), token helpers, and an
// emulator started on ephemeral ports in a temporary state directory.
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { generate, parser as createParser, type IConnackPacket, type IPublishPacket, type ISubackPacket, type Packet } from "mqtt-packet";
import { startEmulator, type Emulator, type EmulatorOptions } from "../../simulator/index.js";

export const ID_SCOPE = "0ne0000test";
export const HUB_1 = "hub-1.azure-devices.localhost";
export const HUB_2 = "hub-2.azure-devices.localhost";
/** base64 of 32 bytes, distinct per name, so every enrollment has its own key. */
export function keyFor(name: string): string {
  return createHmac("sha256", "emulator-tests").update(name).digest("base64");
}
export function derive(groupKey: string, registrationId: string): string {
  return createHmac("sha256", Buffer.from(groupKey, "base64")).update(registrationId, "utf8").digest("base64");
}

/** A DPS token as the Node SDK writes it (raw sr, skn) or as Embedded C does (encoded sr, no skn). */
export function dpsToken(
  registrationId: string,
  key: string,
  options: { expiry?: number; encoded?: boolean; skn?: string | null; idScope?: string } = {},
): string {
  const resource = `${options.idScope ?? ID_SCOPE}/registrations/${registrationId}`;
  const sr = options.encoded ? encodeURIComponent(resource).replace(/%2F/g, "%2f") : resource;
  const se = String(options.expiry ?? Math.floor(Date.now() / 1000) + 3600);
  const sig = createHmac("sha256", Buffer.from(key, "base64")).update(`${sr}\n${se}`).digest("base64");
  let token = `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
  const skn = options.skn === undefined ? (options.encoded ? null : "registration") : options.skn;
  if (skn !== null) token += `&skn=${skn}`;
  return token;
}

/** A hub device token: sr = url-encoded "{hub}/devices/{deviceId}", no skn. */
export function hubToken(hub: string, deviceId: string, key: string, expiry?: number): string {
  const sr = encodeURIComponent(`${hub}/devices/${deviceId}`);
  const se = String(expiry ?? Math.floor(Date.now() / 1000) + 3600);
  const sig = createHmac("sha256", Buffer.from(key, "base64")).update(`${sr}\n${se}`).digest("base64");
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

export class RawClient {
  readonly socket: Socket;
  readonly #queue: Packet[] = [];
  #waiter: { resolve: (p: Packet) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  #closed = false;
  readonly closed: Promise<void>;
  #messageId = 0;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    const parser = createParser({ protocolVersion: 4 });
    parser.on("packet", (p: Packet) => {
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = undefined;
        clearTimeout(w.timer);
        w.resolve(p);
      } else this.#queue.push(p);
    });
    socket.on("data", (chunk: Buffer) => parser.parse(chunk));
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.#closed = true;
        if (this.#waiter) {
          const w = this.#waiter;
          this.#waiter = undefined;
          clearTimeout(w.timer);
          w.reject(new Error("connection closed"));
        }
        resolve();
      }),
    );
  }

  static open(port: number, options: { host?: string; tls?: { ca: string; servername?: string; cert?: string; key?: string } } = {}): Promise<RawClient> {
    const host = options.host ?? "127.0.0.1";
    return new Promise((resolve, reject) => {
      const socket = options.tls
        ? tlsConnect({ host, port, ca: options.tls.ca, servername: options.tls.servername, cert: options.tls.cert, key: options.tls.key })
        : netConnect({ host, port });
      socket.once("error", reject);
      socket.once(options.tls ? "secureConnect" : "connect", () => {
        socket.off("error", reject);
        resolve(new RawClient(socket));
      });
    });
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  send(packet: Packet): void {
    this.socket.write(generate(packet));
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  nextMessageId(): number {
    this.#messageId = (this.#messageId % 65535) + 1;
    return this.#messageId;
  }

  /** The next packet from the server; rejects on close or after `timeoutMs`. */
  next(timeoutMs = 3000): Promise<Packet> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closed) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new Error(`no packet within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = { resolve, reject, timer };
    });
  }

  /** The next PUBLISH, acknowledging it when QoS 1; skips other packets. */
  async nextPublish(timeoutMs = 3000): Promise<IPublishPacket> {
    for (;;) {
      const p = await this.next(timeoutMs);
      if (p.cmd === "publish") {
        if (p.qos > 0) this.send({ cmd: "puback", messageId: p.messageId ?? 0 });
        return p;
      }
    }
  }

  async connect(fields: { clientId: string; username?: string; password?: string; keepalive?: number; protocolVersion?: 4 | 5 }): Promise<IConnackPacket> {
    this.send({
      cmd: "connect",
      protocolId: fields.protocolVersion === 5 ? "MQTT" : "MQTT",
      protocolVersion: fields.protocolVersion ?? 4,
      clean: true,
      clientId: fields.clientId,
      keepalive: fields.keepalive ?? 60,
      username: fields.username,
      password: fields.password === undefined ? undefined : Buffer.from(fields.password),
    });
    const p = await this.next();
    if (p.cmd !== "connack") throw new Error(`expected CONNACK, got ${p.cmd}`);
    return p;
  }

  async subscribe(topic: string, qos: 0 | 1 | 2 = 1): Promise<ISubackPacket> {
    const messageId = this.nextMessageId();
    this.send({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] });
    const p = await this.next();
    if (p.cmd !== "suback") throw new Error(`expected SUBACK, got ${p.cmd}`);
    return p;
  }

  /** Publishes QoS 1 and waits for the PUBACK. */
  async publish(topic: string, payload: string | Buffer, qos: 0 | 1 = 1): Promise<void> {
    if (qos === 0) {
      this.send({ cmd: "publish", topic, payload, qos: 0, retain: false, dup: false });
      return;
    }
    const messageId = this.nextMessageId();
    this.send({ cmd: "publish", topic, payload, qos: 1, messageId, retain: false, dup: false });
    const p = await this.next();
    if (p.cmd !== "puback" || p.messageId !== messageId) throw new Error(`expected PUBACK ${messageId}, got ${p.cmd}`);
  }

  end(): void {
    this.socket.destroy();
  }
}

export interface DpsAnswer {
  status: number;
  rid: string | undefined;
  retryAfter: string | undefined;
  text: string;
  json: any;
}

/** Parses `$dps/registrations/res/{status}/?$rid=..&retry-after=..` and its body (JSON when it is). */
export function dpsAnswer(p: IPublishPacket): DpsAnswer {
  const m = /^\$dps\/registrations\/res\/(\d{3})\/\?(.*)$/.exec(p.topic);
  if (!m) throw new Error(`not a DPS response topic: ${p.topic}`);
  const params = new Map(m[2].split("&").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)] as [string, string]));
  const text = p.payload.toString();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: Number(m[1]), rid: params.get("$rid"), retryAfter: params.get("retry-after"), text, json };
}

export interface DpsDevice {
  client: RawClient;
  registrationId: string;
  register(rid?: string, body?: string): Promise<DpsAnswer>;
  poll(operationId: string, rid?: string): Promise<DpsAnswer>;
}

/** Connects and subscribes a DPS device; throws when the CONNACK is not 0. */
export async function dpsDevice(
  emulator: Emulator,
  registrationId: string,
  key: string,
  options: { tls?: boolean; token?: string; username?: string; keepalive?: number; subscribe?: boolean } = {},
): Promise<DpsDevice> {
  const client = options.tls
    ? await RawClient.open(emulator.endpoints.dps.tlsPort, { tls: { ca: emulator.caPem } })
    : await RawClient.open(emulator.endpoints.dps.tcpPort);
  const connack = await client.connect({
    clientId: registrationId,
    username: options.username ?? `${emulator.idScope}/registrations/${registrationId}/api-version=2019-03-31`,
    password: options.token ?? dpsToken(registrationId, key, { idScope: emulator.idScope }),
    keepalive: options.keepalive,
  });
  if (connack.returnCode !== 0) {
    client.end();
    throw new Error(`CONNACK ${connack.returnCode}`);
  }
  if (options.subscribe !== false) await client.subscribe("$dps/registrations/res/#");
  let rids = 0;
  return {
    client,
    registrationId,
    async register(rid = String(++rids), body = JSON.stringify({ registrationId })) {
      await client.publish(`$dps/registrations/PUT/iotdps-register/?$rid=${rid}`, body);
      return dpsAnswer(await client.nextPublish());
    },
    async poll(operationId, rid = String(++rids)) {
      await client.publish(`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=${rid}&operationId=${operationId}`, " ");
      return dpsAnswer(await client.nextPublish());
    },
  };
}

/** Registers and polls until assigned (or another final answer); returns the last answer. */
export async function provision(emulator: Emulator, registrationId: string, key: string, options: { tls?: boolean } = {}): Promise<DpsAnswer> {
  const device = await dpsDevice(emulator, registrationId, key, options);
  try {
    let answer = await device.register();
    for (let i = 0; i < 20 && answer.status === 202; i++) answer = await device.poll(answer.json.operationId);
    return answer;
  } finally {
    device.client.end();
  }
}

/** Connects a device to its hub (plain TCP unless `tls`); returns the client and the CONNACK code. */
export async function hubConnect(
  emulator: Emulator,
  hub: string,
  deviceId: string,
  key: string,
  options: { tls?: boolean; servername?: string; token?: string; keepalive?: number; username?: string } = {},
): Promise<{ client: RawClient; returnCode: number }> {
  const client = options.tls
    ? await RawClient.open(emulator.endpoints.hub.tlsPort, { tls: { ca: emulator.caPem, servername: options.servername ?? hub } })
    : await RawClient.open(emulator.endpoints.hub.tcpPort);
  const connack = await client.connect({
    clientId: deviceId,
    username: options.username ?? `${hub}/${deviceId}/?api-version=2021-04-12`,
    password: options.token ?? hubToken(hub, deviceId, key),
    keepalive: options.keepalive,
  });
  return { client, returnCode: connack.returnCode ?? -1 };
}

/** Starts an emulator on ephemeral ports in its own state directory; `stop` also removes the directory. */
export async function withEmulator(options: EmulatorOptions = {}): Promise<Emulator & { dispose(): Promise<void> }> {
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), "dps-emulator-test-"));
  const emulator = await startEmulator({
    config: {
      idScope: ID_SCOPE,
      hubs: [{ hostName: HUB_1 }, { hostName: HUB_2 }],
      retryAfterSeconds: 0,
    },
    ...options,
    stateDir,
  });
  return Object.assign(emulator, {
    async dispose() {
      await emulator.stop();
      if (!options.stateDir) rmSync(stateDir, { recursive: true, force: true });
    },
  });
}

/** A shared CA/state directory for a test file (creating the identity once per file). */
export function tempStateDir(): string {
  return mkdtempSync(join(tmpdir(), "dps-emulator-test-"));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** JSON over the admin API. */
export async function admin(emulator: Emulator, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(emulator.endpoints.admin.url + path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}
