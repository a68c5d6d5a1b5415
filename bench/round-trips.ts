/**
 * Round trips of a cold and a warm start, counted on the wire: a TCP relay between the device and
 * the emulator notes which side sends each chunk, and counts a round trip each time the server
 * answers after the client sent (a "turn"), plus one per connection for the TCP handshake. It sees
 * TLS records, not MQTT packets, so it counts what a network would: the TLS handshake's flights
 * as well as MQTT's. The same relay serves this project's runtime and the official Azure clients.
 *
 *   node scripts/build.mjs && node build/bench/round-trips.js
 *
 * The physical minimum (the issue's): a cold start needs, toward DPS, the TCP handshake, the TLS
 * handshake (one round trip with TLS 1.3), one round trip for CONNECT with SUBSCRIBE and the
 * register pipelined behind it, the service's retry-after, one poll; then toward the hub, TCP, TLS
 * and CONNECT: 4 + 3 = 7 round trips. A warm start needs the hub's 3. The emulator answers with
 * retry-after 0 here, so the waits are the round trips alone.
 */
import { createHmac, randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { MemoryFlash } from "../modules/memory-flash.js";
import { createDesktopDevice, createTransport, DESKTOP_FLASH_GEOMETRY, loopbackResolver } from "../hosts/desktop/device.js";
import { launchEmulator } from "../hosts/desktop/fleet-emulator.js";

const DPS_HOST = "global.azure-devices-provisioning.localhost";

interface Flight {
  readonly from: "client" | "server";
  bytes: number;
}

interface Connection {
  readonly target: "dps" | "hub";
  readonly flights: Flight[];
}

/** A TCP relay that records the flights of every connection through it. */
class CountingRelay {
  readonly connections: Connection[] = [];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();

  constructor(target: "dps" | "hub", port: number) {
    this.#server = createServer({ noDelay: true }, (client) => {
      const connection: Connection = { target, flights: [] };
      this.connections.push(connection);
      const upstream = netConnect({ host: "127.0.0.1", port, noDelay: true });
      this.#sockets.add(client).add(upstream);
      const note = (from: "client" | "server", bytes: number) => {
        const last = connection.flights[connection.flights.length - 1];
        if (last && last.from === from) last.bytes += bytes;
        else connection.flights.push({ from, bytes });
      };
      client.on("data", (d: Buffer) => (note("client", d.length), upstream.write(d)));
      upstream.on("data", (d: Buffer) => (note("server", d.length), client.write(d)));
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("close", end).on("error", end);
      upstream.on("close", end).on("error", end);
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) => this.#server.listen(0, "127.0.0.1", () => resolve((this.#server.address() as AddressInfo).port)));
  }

  reset(): void {
    this.connections.length = 0;
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/** Round trips of one connection: the TCP handshake, then each server flight that follows a client one. */
function roundTrips(c: Connection): number {
  let turns = 0;
  for (let i = 1; i < c.flights.length; i++) if (c.flights[i].from === "server" && c.flights[i - 1].from === "client") turns++;
  return 1 + turns;
}

function describe(connections: Connection[]): string {
  return connections
    .map((c) => `${c.target}: ${roundTrips(c)} RTT (TCP + ${c.flights.map((f) => `${f.from === "client" ? "→" : "←"}${f.bytes}`).join(" ")})`)
    .join("; ");
}

interface Row {
  readonly who: string;
  readonly start: string;
  readonly connections: Connection[];
}

async function measure(tlsMaxVersion: "TLSv1.2" | "TLSv1.3"): Promise<{ protocol: string; rows: Row[] }> {
  const groupKey = randomBytes(32).toString("base64");
  const emulator = await launchEmulator({
    tlsMaxVersion,
    config: {
      idScope: "0ne00000F11",
      hubs: [{ hostName: "hub-1.azure-devices.localhost" }],
      retryAfterSeconds: 0,
      enrollments: { groups: [{ groupId: "rt", primaryKey: groupKey }] },
    },
  });
  const dpsRelay = new CountingRelay("dps", emulator.endpoints.dps.tlsPort);
  const hubRelay = new CountingRelay("hub", emulator.endpoints.hub.tlsPort);
  const dpsPort = await dpsRelay.listen();
  const hubPort = await hubRelay.listen();
  const settle = () => new Promise((resolve) => setTimeout(resolve, 300)); // let closes and late records pass
  const take = () => {
    const all = [...dpsRelay.connections, ...hubRelay.connections];
    dpsRelay.reset();
    hubRelay.reset();
    return all;
  };
  const rows: Row[] = [];
  try {
    // TLS version actually negotiated with the emulator.
    const protocol = await new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ host: "127.0.0.1", port: emulator.endpoints.dps.tlsPort, servername: DPS_HOST, ca: emulator.caPem }, () => {
        resolve(s.getProtocol() ?? "?");
        s.destroy();
      });
      s.on("error", reject);
    });

    // This project: cold (DPS, then hub), warm (from the flash cache), and cold without pipelining.
    const transport = createTransport({ tls: true, ca: emulator.caPem, resolve: loopbackResolver({ dpsHost: DPS_HOST, dpsPort, lookupPort: emulator.endpoints.https.port, hubPort }) });
    const bootOurs = (registrationId: string, flash: MemoryFlash, pipeline: boolean) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${registrationId} did not connect`)), 20_000);
        const device = createDesktopDevice({
          config: { idScope: emulator.idScope, registrationId, groupKey, globalEndpoint: DPS_HOST, pipeline },
          transport,
          flash,
          listener: (e) => {
            if (e.source === "runtime" && (e.state === "connected" || e.state === "failed")) {
              clearTimeout(timer);
              device.stop();
              if (e.state === "connected") resolve();
              else reject(new Error(`${registrationId} failed: ${e.error?.message}`));
            }
          },
        });
        device.start();
      });
    const flash = new MemoryFlash(DESKTOP_FLASH_GEOMETRY);
    await bootOurs(`rt-ours-1-${tlsMaxVersion}`, flash, true);
    await settle();
    rows.push({ who: "this project", start: "cold", connections: take() });
    await bootOurs(`rt-ours-1-${tlsMaxVersion}`, flash, true);
    await settle();
    rows.push({ who: "this project", start: "warm (cached assignment)", connections: take() });
    await bootOurs(`rt-ours-2-${tlsMaxVersion}`, new MemoryFlash(DESKTOP_FLASH_GEOMETRY), false);
    await settle();
    rows.push({ who: "this project, pipeline off", start: "cold", connections: take() });

    // The official clients: register, then open the device client.
    const require = createRequire(import.meta.url);
    const provisioning = require("azure-iot-provisioning-device");
    const provisioningMqtt = require("azure-iot-provisioning-device-mqtt");
    const symmetricKey = require("azure-iot-security-symmetric-key");
    const device = require("azure-iot-device");
    const deviceMqtt = require("azure-iot-device-mqtt");
    const mqttBase = createRequire(require.resolve("azure-iot-provisioning-device-mqtt"))("azure-iot-mqtt-base");
    const registrationId = `rt-official-${tlsMaxVersion}`;
    const key = createHmac("sha256", Buffer.from(groupKey, "base64")).update(registrationId, "utf8").digest("base64");
    const base = new mqttBase.MqttBase();
    base.setOptions({ ca: emulator.caPem });
    const client = provisioning.ProvisioningDeviceClient.create(`127.0.0.1:${dpsPort}`, emulator.idScope, new provisioningMqtt.Mqtt(base), new symmetricKey.SymmetricKeySecurityClient(registrationId, key));
    const state = await client.register();
    const open = async () => {
      const hub = device.Client.fromConnectionString(`HostName=${state.assignedHub};DeviceId=${state.deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${hubPort}`, deviceMqtt.Mqtt);
      await hub.setOptions({ ca: emulator.caPem });
      await hub.open();
      await settle();
      await hub.close();
    };
    await open();
    await settle();
    rows.push({ who: "official clients", start: "cold (register, then open)", connections: take() });
    await open();
    await settle();
    rows.push({ who: "official clients", start: "warm (open with a kept assignment)", connections: take() });

    return { protocol, rows };
  } finally {
    await dpsRelay.close();
    await hubRelay.close();
    await emulator.stop();
  }
}

async function main(): Promise<void> {
  const out = (s: string) => process.stdout.write(s + "\n");
  out("round trips on the wire (retry-after 0; physical minimum with TLS 1.3: cold 7, warm 3)");
  out("");
  out("| TLS | client | start | connections | round trips | flights per connection (→ client bytes, ← server bytes) |");
  out("|---|---|---|---|---|---|");
  for (const version of ["TLSv1.3", "TLSv1.2"] as const) {
    const { protocol, rows } = await measure(version);
    for (const r of rows) {
      const total = r.connections.reduce((n, c) => n + roundTrips(c), 0);
      out(`| ${protocol} | ${r.who} | ${r.start} | ${r.connections.length} | ${total} | ${describe(r.connections)} |`);
    }
  }
}

main().then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`bench/round-trips: ${error.stack ?? error.message}\n`);
    process.exit(1);
  },
);
