/**
 * A backend and a fleet: `count` desktop devices (a group enrollment, each with a twin and direct
 * methods) provision and connect through the emulator; then the backend patches the desired
 * property `interval` of every device at once and, once all have acknowledged it, invokes the
 * method `blink` on every device at once. It reports how long each device took, from the
 * backend's call to the acknowledgement it can read in the twin (or to the method's answer), as
 * percentiles.
 *
 *   npm run bench:hub-features [-- --devices 1000]
 *
 * test/fleet-hub-features.test.ts runs the same with its assertions.
 */
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { emulatorTransport } from "../hosts/desktop/device.js";
import { percentiles, runFleet, type FleetControl, type Percentiles } from "../hosts/desktop/fleet.js";
import { seededRandom } from "../hosts/desktop/platform.js";
import { DirectMethods } from "../modules/methods.js";
import { DeviceTwin } from "../modules/twin.js";
import { startEmulator } from "../simulator/index.js";
import type { HubFeature } from "../modules/hub-session.js";

export interface BackendRunSummary {
  readonly devices: number;
  readonly connected: number;
  /** Devices whose acknowledgement of the desired patch the twin shows. */
  readonly acknowledged: number;
  /** Method calls answered 200. */
  readonly answered: number;
  readonly desiredMs: Percentiles;
  readonly methodMs: Percentiles;
  readonly wallMs: number;
}

const DPS_HOST = "global.azure-devices-provisioning.localhost";

export async function runBackendScenario(count: number, options: { stateDir?: string; tls?: boolean } = {}): Promise<BackendRunSummary> {
  const groupKey = randomBytes(32).toString("base64");
  const emulator = await startEmulator({
    stateDir: options.stateDir,
    seed: 11,
    config: {
      idScope: "0ne0000FEA7",
      hubs: [{ hostName: "hub-1.azure-devices.localhost" }, { hostName: "hub-2.azure-devices.localhost" }],
      retryAfterSeconds: 0,
      limits: { registrationsPerMinute: 100_000, operationsPerMinute: 100_000 },
      enrollments: { groups: [{ groupId: "backend-fleet", primaryKey: groupKey }] },
    },
  });
  const ids = Array.from({ length: count }, (_, i) => `backend-${String(i).padStart(5, "0")}`);
  const acknowledgedAt = new Map<string, number>();
  const twins: DeviceTwin[] = [];
  const featuresFor = (i: number): HubFeature[] => {
    const twin: DeviceTwin = new DeviceTwin({
      onDesired: (desired, version) => {
        if (typeof desired.interval === "number") twin.acknowledge("interval", desired.interval, version, 200, "applied");
      },
    });
    twins[i] = twin;
    const methods = new DirectMethods().on("blink", (r) => ({ status: 200, payload: { blinked: (r.payload as { times?: number } | null)?.times ?? 1, device: ids[i] } }));
    return [methods, twin];
  };
  const desiredMs: number[] = [];
  const methodMs: number[] = [];
  let acknowledged = 0;
  let answered = 0;
  let connected = 0;
  const started = Date.now();
  try {
    await runFleet({
      count,
      transport: emulatorTransport(emulator.endpoints, emulator.caPem, DPS_HOST, options.tls ?? true),
      random: seededRandom(11),
      staggerMs: Math.min(10_000, count * 5),
      messages: 1,
      timeoutMs: 300_000,
      maxConnecting: 128,
      configFor: (i) => ({ idScope: emulator.idScope, registrationId: ids[i], groupKey, globalEndpoint: DPS_HOST }),
      featuresFor,
      onEvent: (i, _id, e) => {
        if (e.source === "twin" && e.state === "reported" && twins[i]?.desiredVersion !== undefined && !acknowledgedAt.has(ids[i])) {
          const reported = emulator.twin(ids[i]) as { properties?: { reported?: { interval?: { ac?: number } } } };
          if (reported.properties?.reported?.interval?.ac === 200) acknowledgedAt.set(ids[i], Date.now());
        }
      },
      hold: async (fleet: FleetControl) => {
        await fleet.settled;
        connected = fleet.connectedNow();
        // Every device has read its twin once connected: wait for that before patching.
        await until(() => twins.every((tw) => tw?.desiredVersion !== undefined), 60_000);
        const patchedAt = new Map<string, number>();
        for (const id of ids) {
          patchedAt.set(id, Date.now());
          emulator.updateTwin(id, { properties: { desired: { interval: 30 } } });
        }
        await until(() => acknowledgedAt.size === count, 60_000);
        for (const [id, at] of acknowledgedAt) desiredMs.push(at - patchedAt.get(id)!);
        acknowledged = acknowledgedAt.size;
        const calls = ids.map(async (id) => {
          const t0 = Date.now();
          const r = await emulator.invokeMethod(id, { methodName: "blink", payload: { times: 2 }, responseTimeoutInSeconds: 30 });
          if (r.status === 200) {
            answered++;
            methodMs.push(Date.now() - t0);
          }
        });
        await Promise.allSettled(calls);
      },
    });
  } finally {
    await emulator.stop();
  }
  return { devices: count, connected, acknowledged, answered, desiredMs: percentiles(desiredMs), methodMs: percentiles(methodMs), wallMs: Date.now() - started };
}

async function until(check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function formatBackendSummary(s: BackendRunSummary): string {
  const p = (x: Percentiles) => `min ${x.min} ms, median ${x.median} ms, p99 ${x.p99} ms, max ${x.max} ms`;
  return [
    `backend against a fleet: ${s.devices} devices, ${s.connected} connected, in ${(s.wallMs / 1000).toFixed(1)} s`,
    `desired patch of all at once → acknowledgement in the twin: ${s.acknowledged}/${s.devices}; ${p(s.desiredMs)}`,
    `method blink on all at once → answer: ${s.answered}/${s.devices} answered 200; ${p(s.methodMs)}`,
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--devices");
  const count = i > 0 ? Number(process.argv[i + 1]) : 1000;
  if (!Number.isInteger(count) || count < 1 || count > 100_000) {
    console.error("--devices must be an integer in 1..100000");
    process.exit(2);
  }
  runBackendScenario(count).then(
    (s) => console.log(formatBackendSummary(s)),
    (error: Error) => {
      console.error(error.message);
      process.exit(1);
    },
  );
}
