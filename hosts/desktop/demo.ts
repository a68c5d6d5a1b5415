/**
 * The main job (`npm start`): the emulator on loopback, a demo device enrolled, provisioned over
 * TLS, its assignment cached in a NOR-flash file, telemetry sent to its hub; then a "reboot" (a new
 * runtime on the same flash) that goes straight to the hub without asking DPS.
 *
 *   npm start                      cold start, telemetry, reboot, warm start
 *   npm start -- --fault 429       the register is throttled once (also 400 401 403 404 405 409 412
 *                                  415 500 503, connack-3, connack-5, drop-register, hub-connack-5)
 *   npm start -- --fleet 200       200 devices of a group enrollment at once, with a summary
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describeEvent, type RuntimeConfig, type RuntimeEvent } from "../../modules/runtime.js";
import { startEmulator, type Emulator, type FaultRule } from "../../simulator/index.js";
import { integer, runCommand, usageError, type OptionValues } from "./args.js";
import { createDesktopDevice, emulatorTransport, type DesktopTransport } from "./device.js";
import { formatSummary, runFleet, type FleetProgress } from "./fleet.js";
import { seededRandom } from "./platform.js";

const DPS_HOST = "global.azure-devices-provisioning.localhost";
const FAULTS = "a status code (400 401 403 404 405 409 412 415 429 500 503), connack-N or hub-connack-N (N 1 to 5), or drop-register";

const command = {
  name: "dps-demo",
  synopsis: "npm start [-- options]      (after a build: node build/hosts/desktop/demo.js [options])\n" +
    "the emulator on loopback; a device provisions over TLS, caches its hub, sends telemetry, reboots warm",
  options: {
    fault: { type: "string", value: "SPEC", help: "inject a fault once (in a fleet: at 20% of the devices):\n400 401 403 404 405 409 412 415 429 500 503 (DPS answers that status to the register),\nconnack-N (DPS refuses CONNECT), hub-connack-N (the hub does; N 1 to 5), drop-register" },
    fleet: { type: "string", value: "N", help: "run N devices of a group enrollment instead (1 to 100000), with a summary" },
    messages: { type: "string", value: "N", help: "telemetry messages per device once connected (0 to 10000, default 3)" },
    tcp: { type: "boolean", help: "plain MQTT instead of TLS" },
    seed: { type: "string", value: "N", help: "seed of the emulator and of the fleet's jitter (0 to 4294967295)" },
    quiet: { type: "boolean", help: "only state changes, retries and refusals" },
  },
  footer: "Exit status: 0 when the demo went as the troubleshooting table says, 1 when not, 2 for a usage error.",
} as const;

type Values = OptionValues<typeof command.options>;

interface Settings {
  readonly fault?: string;
  readonly fleet?: number;
  readonly messages: number;
  readonly tcp: boolean;
  readonly seed?: number;
  readonly quiet: boolean;
}

/** Every option checked before anything starts. */
function settingsOf(values: Values): Settings {
  if (values.fault !== undefined) faultRule(values.fault, "check");
  return {
    fault: values.fault,
    fleet: integer("fleet", values.fleet, { min: 1, max: 100_000 }),
    messages: integer("messages", values.messages, { min: 0, max: 10_000 }, 3)!,
    tcp: values.tcp === true,
    seed: integer("seed", values.seed, { min: 0, max: 0xffff_ffff }),
    quiet: values.quiet === true,
  };
}

let settings: Settings;

function say(line: string): void {
  process.stdout.write(line + "\n");
}

/** The fault rule of a --fault spec. @throws CommandLineError for a spec the demo does not know. */
function faultRule(spec: string, registrationId: string): FaultRule {
  if (/^(400|401|403|404|405|409|412|415|429|500|503)$/.test(spec)) {
    const status = Number(spec);
    return { step: "register", registrationId, status, times: 1, ...(status === 429 ? { retryAfter: 2 } : {}) };
  }
  const connack = /^connack-([1-5])$/.exec(spec);
  if (connack) return { step: "connect", registrationId, connack: Number(connack[1]), times: 1 };
  const hub = /^hub-connack-([1-5])$/.exec(spec);
  if (hub) return { step: "hub-connect", registrationId, connack: Number(hub[1]), times: 1 };
  if (spec === "drop-register") return { step: "register", registrationId, drop: true, times: 1 };
  usageError(`unknown --fault "${spec}": use ${FAULTS}`);
}

/** What --quiet still shows: state changes of the runtime, and every retry or refusal with its cause. */
function important(event: RuntimeEvent): boolean {
  if (event.source === "runtime" || event.source === "assignment") return true;
  if (event.source === "dps") return ["retrying", "failed", "fallback", "looking-up"].includes(event.status.state);
  if (event.source === "hub") return ["retrying", "refused", "unreachable", "failed"].includes(event.status.state);
  if (event.source === "telemetry") return event.state === "dropped";
  return false;
}

/**
 * A device whose `done` resolves once it is connected and its messages are acknowledged, or it
 * failed, or it went into the long tail (the next try is minutes away: the demo ends there).
 */
function makeDevice(config: RuntimeConfig, transport: DesktopTransport, flash: string, label: string, events: RuntimeEvent[], messages: number) {
  let forward: (e: RuntimeEvent) => void = () => {};
  const device = createDesktopDevice({ config, transport, flash, listener: (e) => forward(e) });
  const done = new Promise<"delivered" | "failed" | "backing-off">((resolve) => {
    let acked = 0;
    forward = (event) => {
      events.push(event);
      if (!settings.quiet || important(event)) say(`  [${label}] ${describeEvent(event)}`);
      if (event.source === "runtime" && event.state === "connected" && acked === 0) {
        for (let i = 0; i < messages; i++) device.send({ seq: i + 1, temperature: 20 + i / 2, boot: label });
        if (messages === 0) resolve("delivered");
      }
      if (event.source === "runtime" && (event.state === "failed" || event.state === "backing-off")) resolve(event.state);
      if (event.source === "telemetry" && event.state === "sent" && ++acked === messages) resolve("delivered");
    };
  });
  return { device, done };
}

async function main(values: Values): Promise<number> {
  settings = settingsOf(values);
  const stateDir = join(process.cwd(), ".cache", "emulator");
  const demoDir = join(process.cwd(), ".cache", "demo");
  mkdirSync(demoDir, { recursive: true });
  const emulator: Emulator = await startEmulator({
    stateDir,
    seed: settings.seed,
    config: { idScope: "0ne0000DE00", hubs: [{ hostName: "hub-1.azure-devices.localhost" }, { hostName: "hub-2.azure-devices.localhost" }], retryAfterSeconds: 1 },
  });
  const tls = !settings.tcp;
  say(`emulator: DPS mqtts://127.0.0.1:${emulator.endpoints.dps.tlsPort} (tcp ${emulator.endpoints.dps.tcpPort}), hub ${emulator.endpoints.hub.tlsPort}, lookup https ${emulator.endpoints.https.port}, admin ${emulator.endpoints.admin.url}; CA ${emulator.caPath}`);
  const transport = emulatorTransport(emulator.endpoints, emulator.caPem, DPS_HOST, tls);
  try {
    if (settings.fleet !== undefined) return await fleet(emulator, transport, settings.fleet);
    return await single(emulator, transport, demoDir);
  } finally {
    await emulator.stop();
  }
}

async function single(emulator: Emulator, transport: DesktopTransport, demoDir: string): Promise<number> {
  const registrationId = "demo-device-001";
  const key = randomBytes(32).toString("base64");
  emulator.addIndividualEnrollment({ registrationId, primaryKey: key });
  if (settings.fault) emulator.addFault(faultRule(settings.fault, registrationId));
  const flash = join(demoDir, `${registrationId}.flash`);
  rmSync(flash, { force: true });
  const messages = settings.messages;
  const config: RuntimeConfig = {
    idScope: emulator.idScope,
    registrationId,
    symmetricKey: key,
    globalEndpoint: DPS_HOST,
    payload: { demo: true },
    userAgent: "dps-device-runtime-demo/0.1",
  };

  say(`\nboot 1 (cold: empty flash ${flash}${settings.fault ? `, fault ${settings.fault} injected` : ""})`);
  const events1: RuntimeEvent[] = [];
  const first = makeDevice(config, transport, flash, "boot 1", events1, messages);
  first.device.start();
  const outcome1 = await withTimeout(first.done, 120_000);
  first.device.stop();
  const registrationsAfterBoot1 = emulator.counters().registrations;
  if (outcome1 !== "delivered") {
    say(`\nboot 1 ended without a hub connection (${outcome1}); for this fault that is what the troubleshooting table asks.`);
    return settings.fault ? 0 : 1;
  }
  say(`  → the hub received ${emulator.telemetry(first.device.assignment?.deviceId).length} message(s) from ${first.device.assignment?.deviceId}`);

  say("\nboot 2 (warm: a new runtime on the same flash file, as after a reboot)");
  const events2: RuntimeEvent[] = [];
  const second = makeDevice({ ...config }, transport, flash, "boot 2", events2, 1);
  second.device.start();
  const outcome2 = await withTimeout(second.done, 60_000);
  second.device.stop();
  const askedDps = events2.some((e) => e.source === "dps");
  const registrationsAfterBoot2 = emulator.counters().registrations;
  say(
    `\nsummary: boot 1 provisioned through DPS and cached ${first.device.assignment?.assignedHub}; boot 2 ${askedDps ? "asked DPS again (unexpected)" : "went straight to the hub from the cache"}; ` +
      `DPS registrations: ${registrationsAfterBoot1} after boot 1, ${registrationsAfterBoot2} after boot 2; telemetry at the hub: ${emulator.telemetry().length} message(s)`,
  );
  return outcome2 === "delivered" && !askedDps ? 0 : 1;
}

async function fleet(emulator: Emulator, transport: DesktopTransport, count: number): Promise<number> {
  const groupKey = randomBytes(32).toString("base64");
  emulator.addGroupEnrollment({ groupId: "demo-fleet", primaryKey: groupKey });
  const random = seededRandom(settings.seed ?? 1);
  if (settings.fault) emulator.addFault({ ...faultRule(settings.fault, ""), registrationId: undefined, groupId: "demo-fleet", probability: 0.2, times: undefined } as FaultRule);
  say(`\nfleet: ${count} devices of group enrollment "demo-fleet" (derived keys, in-memory flash), booting over 2 s`);
  // On a terminal one line rewritten in place; elsewhere (a pipe, a file, CI) a line every 5 s.
  const tty = process.stdout.isTTY === true;
  const line = (p: FleetProgress) => `${(p.elapsedMs / 1000).toFixed(1)} s: ${p.booted} booted, ${p.connected} connected, ${p.done} done, ${p.failed} failed of ${p.total}`;
  const summary = await runFleet({
    count,
    transport,
    random,
    staggerMs: 2000,
    messages: settings.messages,
    configFor: (i) => ({ idScope: emulator.idScope, registrationId: `fleet-${String(i + 1).padStart(5, "0")}`, groupKey, globalEndpoint: DPS_HOST }),
    progressMs: tty ? 1000 : 5000,
    onProgress: (p) => process.stdout.write(tty ? `\r  ${line(p)}\u001b[K` : `  ${line(p)}\n`),
  });
  say((tty ? "\n" : "") + formatSummary(summary));
  return summary.timedOut.length === 0 ? 0 : 1;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout;
  return Promise.race([promise, new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)))]).finally(() => clearTimeout(timer));
}

runCommand(command, main);
