/**
 * Provisioning N devices over TLS through the emulator, then holding N hub sessions open: this
 * project's desktop host against the official Azure IoT Node clients (azure-iot-provisioning-device
 * with its MQTT transport and azure-iot-security-symmetric-key, then azure-iot-device with
 * azure-iot-device-mqtt), same emulator settings (retry-after 0, limits out of the way, two hubs).
 *
 *   node scripts/build.mjs && node build/bench/provisioning.js [--devices 1000] [--rounds 1] [--json FILE]
 *
 * Each contender runs against a fresh emulator in a child process, in two phases, each in a child
 * process of its own (so that CPU and memory are the contender's alone). Every device starts at once.
 *   cold    provisioning: wall time from the first boot to the last device assigned by DPS, and to
 *           the last device connected to its hub (each device goes on to its hub as soon as it is
 *           assigned); CPU (user + system) of the process over that time; its peak RSS.
 *   warm    holding N hub sessions: ours starts from the assignment its flash cache kept (the cold
 *           phase runs on in-memory flash, whose images are then written to NOR-flash files), the
 *           official device client from the assignment its provisioning client returned; once all
 *           are open, after a full GC, RSS and JS heap (+ external) minus the baseline taken after
 *           loading the modules, divided by N. A process that only holds sessions, so the figure is
 *           not inflated by what provisioning allocated and the allocator kept.
 * Ratios (official ÷ ours) are printed from the same run. Nothing here asserts a time.
 */
import { fork } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { RuntimeEvent } from "../modules/runtime.js";

const DPS_HOST = "global.azure-devices-provisioning.localhost";
const CHILD_TIMEOUT_MS = 240_000;

interface Job {
  readonly contender: "ours" | "official";
  /** provision: cold, every device at once; hold: warm, hub sessions only, held and measured. */
  readonly phase: "provision" | "hold";
  readonly devices: number;
  readonly idScope: string;
  readonly groupKey: string;
  readonly caPem: string;
  readonly dpsPort: number;
  readonly hubPort: number;
  readonly lookupPort: number;
  /** ours: the directory of the devices' flash files (the cache the hold phase starts warm from). */
  readonly flashDir: string;
  /** official, hold phase: what DPS assigned in the provision phase. */
  readonly assignments?: readonly { readonly registrationId: string; readonly assignedHub: string; readonly deviceId: string }[];
}

interface PhaseResult {
  readonly contender: "ours" | "official";
  readonly phase: "provision" | "hold";
  readonly devices: number;
  readonly assigned: number;
  readonly connected: number;
  /** provision: to the last device assigned; hold: 0. */
  readonly provisionWallMs: number;
  /** To the last device connected to its hub. */
  readonly connectWallMs: number;
  readonly cpuMs: number;
  readonly peakRssBytes: number;
  readonly rssPerSessionBytes: number;
  readonly heapPerSessionBytes: number;
  readonly assignments?: { registrationId: string; assignedHub: string; deviceId: string }[];
  readonly errors: string[];
}

export interface ContenderResult {
  readonly contender: "ours" | "official";
  readonly devices: number;
  readonly assigned: number;
  readonly connected: number;
  readonly provisionWallMs: number;
  readonly connectWallMs: number;
  readonly cpuMs: number;
  readonly emulatorCpuMs: number;
  readonly peakRssBytes: number;
  readonly warmConnectWallMs: number;
  readonly heldSessions: number;
  readonly rssPerSessionBytes: number;
  readonly heapPerSessionBytes: number;
  readonly errors: string[];
}

// ---------------------------------------------------------------------------------------------
// The contenders (each phase in a process of its own)

async function gcAndMeasure(): Promise<{ rss: number; heap: number }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + m.external };
}

const idOf = (contender: string, i: number) => `bench-${contender}-${String(i).padStart(5, "0")}`;

async function runOurs(job: Job): Promise<PhaseResult> {
  const { createTransport, loopbackResolver } = await import("../hosts/desktop/device.js");
  const { runFleet } = await import("../hosts/desktop/fleet.js");
  const { join } = await import("node:path");
  const { MemoryFlash } = await import("../modules/memory-flash.js");
  const { DESKTOP_FLASH_GEOMETRY } = await import("../hosts/desktop/device.js");
  const { writeFileSync } = await import("node:fs");
  // Cold: in-memory flash (the official client keeps no cache, and the file flash's fsync per
  // write would time the disk); the images are written out afterwards for the warm phase, which
  // opens them as NOR-flash files.
  const memory = job.phase === "provision" ? Array.from({ length: job.devices }, () => new MemoryFlash(DESKTOP_FLASH_GEOMETRY)) : undefined;
  const flashPath = (i: number) => join(job.flashDir, `${idOf("ours", i)}.flash`);
  const transport = createTransport({
    tls: true,
    ca: job.caPem,
    resolve: loopbackResolver({ dpsHost: DPS_HOST, dpsPort: job.dpsPort, lookupPort: job.lookupPort, hubPort: job.hubPort }),
  });
  const baseline = await gcAndMeasure();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let assigned = 0;
  let provisionWallMs = 0;
  let connectWallMs = 0;
  let cpuMs = 0;
  let held = baseline;
  const errors: string[] = [];
  const summary = await runFleet({
    count: job.devices,
    transport,
    messages: 0,
    timeoutMs: CHILD_TIMEOUT_MS - 30_000,
    flashFor: (i) => memory?.[i] ?? flashPath(i),
    configFor: (i) => ({ idScope: job.idScope, registrationId: idOf("ours", i), groupKey: job.groupKey, globalEndpoint: DPS_HOST }),
    onEvent: (_i, _id, e: RuntimeEvent) => {
      if (e.source === "assignment" && ++assigned === job.devices) provisionWallMs = performance.now() - t0;
      if (e.source === "runtime" && e.state === "failed" && errors.length < 5) errors.push(`${e.error?.code}: ${e.error?.message}`);
    },
    hold: async (fleet) => {
      await fleet.settled;
      connectWallMs = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      cpuMs = (cpu.user + cpu.system) / 1000;
      if (job.phase === "hold") held = await gcAndMeasure();
    },
  });
  const size = DESKTOP_FLASH_GEOMETRY.sectorSize * DESKTOP_FLASH_GEOMETRY.sectorCount;
  memory?.forEach((flash, i) => writeFileSync(flashPath(i), flash.read(0, size)));
  return result(job, assigned, summary.connected, provisionWallMs, connectWallMs, cpuMs, baseline, held, errors);
}

async function runOfficial(job: Job): Promise<PhaseResult> {
  const require = createRequire(import.meta.url);
  const provisioning = require("azure-iot-provisioning-device");
  const provisioningMqtt = require("azure-iot-provisioning-device-mqtt");
  const symmetricKey = require("azure-iot-security-symmetric-key");
  const device = require("azure-iot-device");
  const deviceMqtt = require("azure-iot-device-mqtt");
  // The transport's own MQTT base (npm may nest it), whose options carry the CA.
  const mqttBase = createRequire(require.resolve("azure-iot-provisioning-device-mqtt"))("azure-iot-mqtt-base");
  const baseline = await gcAndMeasure();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let assigned = 0;
  let connected = 0;
  let provisionWallMs = 0;
  const errors: string[] = [];
  const clients: { close(): Promise<unknown> }[] = [];
  const assignments: { registrationId: string; assignedHub: string; deviceId: string }[] = [];
  const one = async (i: number) => {
    const registrationId = idOf("official", i);
    const key = createHmac("sha256", Buffer.from(job.groupKey, "base64")).update(registrationId, "utf8").digest("base64");
    let state = job.assignments?.[i];
    if (job.phase === "provision") {
      const base = new mqttBase.MqttBase();
      base.setOptions({ ca: job.caPem });
      const security = new symmetricKey.SymmetricKeySecurityClient(registrationId, key);
      const client = provisioning.ProvisioningDeviceClient.create(`127.0.0.1:${job.dpsPort}`, job.idScope, new provisioningMqtt.Mqtt(base), security);
      const registered = await client.register();
      state = { registrationId, assignedHub: registered.assignedHub, deviceId: registered.deviceId };
      assignments.push(state);
      if (++assigned === job.devices) provisionWallMs = performance.now() - t0;
    }
    const hub = device.Client.fromConnectionString(
      `HostName=${state!.assignedHub};DeviceId=${state!.deviceId};SharedAccessKey=${key};GatewayHostName=127.0.0.1:${job.hubPort}`,
      deviceMqtt.Mqtt,
    );
    clients.push(hub);
    await hub.setOptions({ ca: job.caPem });
    await hub.open();
    connected++;
  };
  await Promise.all(
    Array.from({ length: job.devices }, (_, i) =>
      one(i).catch((error: Error) => {
        if (errors.length < 5) errors.push(`${error.name}: ${error.message}`);
      }),
    ),
  );
  const connectWallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const held = job.phase === "hold" ? await gcAndMeasure() : baseline;
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  assignments.sort((a, b) => (a.registrationId < b.registrationId ? -1 : 1));
  return { ...result(job, assigned, connected, provisionWallMs, connectWallMs, (cpu.user + cpu.system) / 1000, baseline, held, errors), assignments };
}

function result(
  job: Job,
  assigned: number,
  connected: number,
  provisionWallMs: number,
  connectWallMs: number,
  cpuMs: number,
  baseline: { rss: number; heap: number },
  held: { rss: number; heap: number },
  errors: string[],
): PhaseResult {
  return {
    contender: job.contender,
    phase: job.phase,
    devices: job.devices,
    assigned,
    connected,
    provisionWallMs: Math.round(provisionWallMs),
    connectWallMs: Math.round(connectWallMs),
    cpuMs: Math.round(cpuMs),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    rssPerSessionBytes: Math.round((held.rss - baseline.rss) / Math.max(1, connected)),
    heapPerSessionBytes: Math.round((held.heap - baseline.heap) / Math.max(1, connected)),
    errors,
  };
}

// ---------------------------------------------------------------------------------------------
// The orchestrator

function runChild(job: Job): Promise<PhaseResult> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ["--child"], { execArgv: ["--expose-gc"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${job.contender} ${job.phase}: no result within ${CHILD_TIMEOUT_MS / 1000} s`));
    }, CHILD_TIMEOUT_MS);
    child.once("message", (m: PhaseResult | { error: string }) => {
      clearTimeout(timer);
      if ("error" in m) reject(new Error(`${job.contender} ${job.phase}: ${m.error}`));
      else resolve(m);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${job.contender} ${job.phase}: the process exited (code ${code}) without a result`));
    });
    child.send(job);
  });
}

async function contend(contender: "ours" | "official", devices: number): Promise<ContenderResult> {
  const { launchEmulator } = await import("../hosts/desktop/fleet-emulator.js");
  const groupKey = randomBytes(32).toString("base64");
  const flashDir = mkdtempSync(join(tmpdir(), "bench-flash-"));
  const emulator = await launchEmulator({
    separateProcess: true,
    seed: 11,
    config: {
      idScope: "0ne00BE7C40",
      hubs: [{ hostName: "hub-1.azure-devices.localhost" }, { hostName: "hub-2.azure-devices.localhost" }],
      retryAfterSeconds: 0,
      limits: { registrationsPerMinute: 1_000_000, operationsPerMinute: 1_000_000, pollsPerDevicePer10s: 1000 },
      enrollments: { groups: [{ groupId: "bench", primaryKey: groupKey }] },
    },
  });
  try {
    const job = {
      contender,
      devices,
      idScope: emulator.idScope,
      groupKey,
      caPem: emulator.caPem,
      dpsPort: emulator.endpoints.dps.tlsPort,
      hubPort: emulator.endpoints.hub.tlsPort,
      lookupPort: emulator.endpoints.https.port,
      flashDir,
    };
    const before = await emulator.usage();
    const cold = await runChild({ ...job, phase: "provision" });
    const after = await emulator.usage();
    const warm = await runChild({ ...job, phase: "hold", assignments: cold.assignments });
    return {
      contender,
      devices,
      assigned: cold.assigned,
      connected: cold.connected,
      provisionWallMs: cold.provisionWallMs,
      connectWallMs: cold.connectWallMs,
      cpuMs: cold.cpuMs,
      emulatorCpuMs: Math.round(after.cpuMs - before.cpuMs),
      peakRssBytes: cold.peakRssBytes,
      warmConnectWallMs: warm.connectWallMs,
      heldSessions: warm.connected,
      rssPerSessionBytes: warm.rssPerSessionBytes,
      heapPerSessionBytes: warm.heapPerSessionBytes,
      errors: [...cold.errors, ...warm.errors],
    };
  } finally {
    await emulator.stop();
    rmSync(flashDir, { recursive: true, force: true });
  }
}

const kb = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
const mb = (b: number) => `${(b / 1048576).toFixed(0)} MiB`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { devices: { type: "string", default: "1000" }, rounds: { type: "string", default: "1" }, json: { type: "string" }, only: { type: "string" } } });
  const devices = Number(values.devices);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(devices) || devices < 1 || !Number.isInteger(rounds) || rounds < 1) throw new Error("--devices and --rounds must be positive integers");
  process.stdout.write(`provisioning ${devices} devices over TLS, retry-after 0, emulator in a child process, each contender in its own; ${rounds} round(s)\n`);
  const all: ContenderResult[] = [];
  for (let round = 0; round < rounds; round++) {
    // Alternate the order, so that neither always runs on a warmer machine.
    for (const contender of round % 2 === 0 ? (["ours", "official"] as const) : (["official", "ours"] as const)) {
      if (values.only !== undefined && values.only !== contender) continue;
      const r = await contend(contender, devices);
      all.push(r);
      process.stdout.write(
        `  ${contender.padEnd(8)} cold: assigned ${r.assigned}/${devices} in ${r.provisionWallMs} ms, connected ${r.connected} in ${r.connectWallMs} ms, CPU ${r.cpuMs} ms (emulator ${r.emulatorCpuMs} ms), peak RSS ${mb(r.peakRssBytes)}; ` +
          `warm: ${r.heldSessions} sessions in ${r.warmConnectWallMs} ms, per held session RSS ${kb(r.rssPerSessionBytes)} heap ${kb(r.heapPerSessionBytes)}${r.errors.length ? `; errors: ${r.errors.join(" | ")}` : ""}\n`,
      );
    }
  }
  const pick = (c: "ours" | "official", f: (r: ContenderResult) => number) => median(all.filter((r) => r.contender === c).map(f));
  const rows: [string, (r: ContenderResult) => number, (n: number) => string][] = [
    ["wall time to all assigned", (r) => r.provisionWallMs, (n) => `${n} ms`],
    ["wall time to all connected to the hub", (r) => r.connectWallMs, (n) => `${n} ms`],
    ["CPU time (user + system)", (r) => r.cpuMs, (n) => `${n} ms`],
    ["peak RSS (cold run)", (r) => r.peakRssBytes, mb],
    ["wall time to all hub sessions open again (warm: ours from its flash cache)", (r) => r.warmConnectWallMs, (n) => `${n} ms`],
    ["RSS per held hub session", (r) => r.rssPerSessionBytes, kb],
    ["JS heap + external per held hub session", (r) => r.heapPerSessionBytes, kb],
  ];
  process.stdout.write(`\n| ${devices} devices (median of ${rounds}) | this project | official clients | official ÷ ours |\n|---|---|---|---|\n`);
  for (const [name, f, fmt] of rows) {
    const ours = pick("ours", f);
    const official = pick("official", f);
    process.stdout.write(`| ${name} | ${fmt(ours)} | ${fmt(official)} | ${(official / ours).toFixed(1)}× |\n`);
  }
  if (values.json) writeFileSync(values.json, JSON.stringify(all, null, 2));
}

if (process.argv[2] === "--child") {
  process.once("message", (job: Job) => {
    (job.contender === "ours" ? runOurs(job) : runOfficial(job)).then(
      (r) => process.send!(r, () => process.exit(0)),
      (error: Error) => process.send!({ error: error.stack ?? error.message }, () => process.exit(1)),
    );
  });
} else {
  main().then(
    () => process.exit(0),
    (error: Error) => {
      process.stderr.write(`bench/provisioning: ${error.message}\n`);
      process.exit(1);
    },
  );
}
