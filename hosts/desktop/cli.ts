#!/usr/bin/env node
/**
 * dps-device: runs one device, or a fleet of N in one process, against the local emulator or any
 * DPS endpoint, printing each state change with its cause.
 *
 *   dps-device --emulator                                   one device against an embedded emulator
 *   dps-device --emulator --count 500 --stagger 5000        a fleet of a group enrollment
 *   DPS_KEY=... dps-device --id-scope 0ne... --registration-id dev-001      the real service
 *   DPS_GROUP_KEY=... dps-device --id-scope 0ne... --count 100 --prefix lab-   a real group
 *
 * Keys are read from DPS_KEY / DPS_GROUP_KEY (or --key / --group-key, which a process list shows).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DPS_GLOBAL_ENDPOINT } from "../../modules/dps-protocol.js";
import { describeEvent, type RuntimeConfig } from "../../modules/runtime.js";
import { createDesktopDevice, createTransport, emulatorTransport, type DesktopTransport } from "./device.js";
import { formatSummary, runFleet } from "./fleet.js";
import { seededRandom } from "./platform.js";

const usage = `usage: dps-device [options]
  --emulator              start the DPS + IoT Hub emulator in this process and enroll the device(s)
  --id-scope SCOPE        DPS ID scope (with --emulator: the emulator's)
  --registration-id ID    the device's registration id (one device)
  --count N               run a fleet of N devices named PREFIX00001.. (group enrollment)
  --prefix P              registration id prefix of a fleet (default "fleet-")
  --key BASE64            individual enrollment key (prefer the DPS_KEY environment variable)
  --group-key BASE64      group enrollment key; device keys are derived (prefer DPS_GROUP_KEY)
  --endpoint HOST         DPS global endpoint (default ${DPS_GLOBAL_ENDPOINT})
  --ca FILE               PEM of the CA to trust instead of the system roots
  --tcp                   plain MQTT instead of TLS (emulator only)
  --payload JSON          custom allocation payload
  --flash DIR             keep each device's cache in DIR/<registration id>.flash (default: in memory)
  --messages N            telemetry messages per device once connected (default 3)
  --interval MS           between messages of one device (default 1000)
  --stagger MS            spread fleet boots over MS (default 0)
  --seed N                seed of the jitter (fleets) and of the emulator
  --timeout MS            give up after MS (default 120000)
  --quiet                 fleets: only the progress line and the summary
  -h, --help`;

const { values } = parseArgs({
  options: {
    emulator: { type: "boolean", default: false },
    "id-scope": { type: "string" },
    "registration-id": { type: "string" },
    count: { type: "string" },
    prefix: { type: "string", default: "fleet-" },
    key: { type: "string" },
    "group-key": { type: "string" },
    endpoint: { type: "string" },
    ca: { type: "string" },
    tcp: { type: "boolean", default: false },
    payload: { type: "string" },
    flash: { type: "string" },
    messages: { type: "string", default: "3" },
    interval: { type: "string", default: "1000" },
    stagger: { type: "string", default: "0" },
    seed: { type: "string" },
    timeout: { type: "string", default: "120000" },
    quiet: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});

function fail(message: string): never {
  process.stderr.write(`dps-device: ${message}\n${usage}\n`);
  process.exit(2);
}

function int(name: string, text: string | undefined, min = 0): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer ≥ ${min}, got "${text}"`);
  return n;
}

async function main(): Promise<number> {
  if (values.help) {
    process.stdout.write(usage + "\n");
    return 0;
  }
  const count = values.count !== undefined ? int("count", values.count, 1) : undefined;
  const messages = int("messages", values.messages);
  const interval = int("interval", values.interval);
  const timeoutMs = int("timeout", values.timeout, 1);
  const seed = values.seed !== undefined ? int("seed", values.seed) : undefined;
  let payload: unknown;
  if (values.payload !== undefined) {
    try {
      payload = JSON.parse(values.payload);
    } catch {
      fail("--payload is not JSON");
    }
  }
  let key = values.key ?? process.env.DPS_KEY;
  let groupKey = values["group-key"] ?? process.env.DPS_GROUP_KEY;
  let idScope = values["id-scope"];
  let endpoint = values.endpoint ?? DPS_GLOBAL_ENDPOINT;
  let transport: DesktopTransport;
  let stopEmulator = async () => {};
  const tls = !values.tcp;

  if (values.emulator) {
    const { startEmulator } = await import("../../simulator/index.js");
    const emulator = await startEmulator({ stateDir: join(process.cwd(), ".cache", "emulator"), seed, config: { idScope: idScope ?? "0ne0000C11E", hubs: [{ hostName: "hub-1.azure-devices.localhost" }, { hostName: "hub-2.azure-devices.localhost" }], retryAfterSeconds: 1 } });
    stopEmulator = () => emulator.stop();
    idScope = emulator.idScope;
    endpoint = "global.azure-devices-provisioning.localhost";
    if (count !== undefined) {
      groupKey ??= randomBytes(32).toString("base64");
      emulator.addGroupEnrollment({ groupId: "cli-fleet", primaryKey: groupKey });
    } else {
      key ??= randomBytes(32).toString("base64");
      emulator.addIndividualEnrollment({ registrationId: values["registration-id"] ?? "cli-device-001", primaryKey: key });
    }
    process.stdout.write(`emulator: ID scope ${idScope}, DPS ${tls ? "mqtts" : "mqtt"}://127.0.0.1:${tls ? emulator.endpoints.dps.tlsPort : emulator.endpoints.dps.tcpPort}, admin ${emulator.endpoints.admin.url}\n`);
    transport = emulatorTransport(emulator.endpoints, emulator.caPem, endpoint, tls);
  } else {
    if (!idScope) fail("--id-scope is required (or --emulator)");
    transport = createTransport({ tls, ca: values.ca ? readFileSync(values.ca, "utf8") : undefined });
  }
  if (values.flash) mkdirSync(values.flash, { recursive: true });
  const flashFor = (registrationId: string) => (values.flash ? join(values.flash, `${registrationId}.flash`) : undefined);

  try {
    if (count !== undefined) {
      if (!groupKey) fail("a fleet needs --group-key or DPS_GROUP_KEY (devices derive their keys from it)");
      const summary = await runFleet({
        count,
        transport,
        random: seed !== undefined ? seededRandom(seed) : undefined,
        staggerMs: int("stagger", values.stagger),
        messages,
        timeoutMs,
        configFor: (i) => ({ idScope: idScope!, registrationId: `${values.prefix}${String(i + 1).padStart(5, "0")}`, groupKey, globalEndpoint: endpoint, payload }),
        flashFor: (i) => flashFor(`${values.prefix}${String(i + 1).padStart(5, "0")}`),
        onEvent: values.quiet ? undefined : (_i, id, e) => process.stdout.write(`[${id}] ${describeEvent(e)}\n`),
        onProgress: (p) => process.stdout.write(`progress: ${(p.elapsedMs / 1000).toFixed(1)} s, ${p.booted} booted, ${p.connected} connected, ${p.done} done, ${p.failed} failed of ${p.total}\n`),
      });
      process.stdout.write(formatSummary(summary) + "\n");
      return summary.failed.length === 0 && summary.timedOut.length === 0 ? 0 : 1;
    }
    const registrationId = values["registration-id"] ?? "cli-device-001";
    if (!key && !groupKey) fail("give DPS_KEY (or --key), or DPS_GROUP_KEY (or --group-key)");
    const config: RuntimeConfig = key ? { idScope: idScope!, registrationId, symmetricKey: key, globalEndpoint: endpoint, payload } : { idScope: idScope!, registrationId, groupKey, globalEndpoint: endpoint, payload };
    return await new Promise<number>((resolve) => {
      let sent = 0;
      let acked = 0;
      let timer: NodeJS.Timeout | undefined;
      const deadline = setTimeout(() => finish(1, "timed out"), timeoutMs);
      const finish = (code: number, why: string) => {
        clearTimeout(deadline);
        if (timer) clearInterval(timer);
        device.stop();
        process.stdout.write(`[${registrationId}] ${why}\n`);
        resolve(code);
      };
      const device = createDesktopDevice({
        config,
        transport,
        flash: flashFor(registrationId),
        listener: (e) => {
          process.stdout.write(`[${registrationId}] ${describeEvent(e)}\n`);
          if (e.source === "runtime" && e.state === "connected" && !timer) {
            if (messages === 0) return finish(0, "connected");
            const tick = () => {
              if (sent < messages) device.send({ seq: ++sent, at: new Date().toISOString() });
            };
            tick();
            timer = setInterval(tick, interval);
          }
          if (e.source === "telemetry" && e.state === "sent" && ++acked === messages) finish(0, `${acked} message(s) acknowledged`);
          if (e.source === "runtime" && e.state === "failed") finish(1, "failed");
        },
      });
      device.start();
    });
  } finally {
    await stopEmulator();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`dps-device: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
