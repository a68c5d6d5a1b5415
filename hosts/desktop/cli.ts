#!/usr/bin/env node
/**
 * dps-device: runs one device, or a fleet of N in one process, against the local emulator or any
 * DPS endpoint, printing each state change with its cause.
 *
 *   dps-device --emulator                                   one device against an embedded emulator
 *   dps-device --emulator --count 500 --stagger 5000        a fleet of a group enrollment
 *   DPS_KEY=... dps-device --id-scope 0ne00000001 --registration-id device-001 \
 *     --endpoint global.azure-devices-provisioning.localhost --dps-port 8883 --hub-port 8884 \
 *     --lookup-port 8443 --ca .cache/emulator/ca.pem       an emulator started on its own
 *   DPS_KEY=... dps-device --id-scope 0ne... --registration-id dev-001      the real service
 *   DPS_GROUP_KEY=... dps-device --id-scope 0ne... --count 100 --prefix lab-   a real group
 *
 * Keys are read from DPS_KEY / DPS_GROUP_KEY (or --key / --group-key, which a process list shows).
 * Every option is checked before anything starts; see args.ts for the exit codes.
 */
import { CloudMessages } from "../../modules/c2d.js";
import type { HubFeature } from "../../modules/hub-session.js";
import { DirectMethods } from "../../modules/methods.js";
import { DeviceTwin } from "../../modules/twin.js";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createSecureContext } from "node:tls";
import { DPS_GLOBAL_ENDPOINT } from "../../modules/dps-protocol.js";
import { DpsError } from "../../modules/errors.js";
import { LifecycleMachine } from "../../modules/lifecycle.js";
import { describeEvent, type RuntimeConfig, type RuntimeEvent } from "../../modules/runtime.js";
import { integer, json, port, runCommand, usageError, type OptionValues } from "./args.js";
import { createDesktopDevice, createTransport, emulatorTransport, serviceResolver, type DesktopTransport } from "./device.js";
import { formatSummary, runFleet } from "./fleet.js";
import { CERTIFICATE_FAILURE } from "./mqtt.js";
import { mathRandom, nodeCrypto, seededRandom } from "./platform.js";

const EMULATOR_CA = ".cache/emulator/ca.pem";

const command = {
  name: "dps-device",
  synopsis:
    "dps-device [options]\n" +
    "one device (or a fleet of a group enrollment) provisions through DPS and sends telemetry to its hub;\n" +
    "keys from DPS_KEY / DPS_GROUP_KEY",
  options: {
    emulator: { type: "boolean", help: "start the DPS + IoT Hub emulator in this process and enroll the device(s)" },
    "id-scope": { type: "string", value: "SCOPE", help: "DPS ID scope (with --emulator: the emulator's)" },
    "registration-id": { type: "string", value: "ID", help: "the device's registration id (one device; default cli-device-001)" },
    count: { type: "string", value: "N", help: "run a fleet of N devices named PREFIX00001.. (group enrollment; 1 to 100000)" },
    prefix: { type: "string", value: "P", help: 'registration id prefix of a fleet (default "fleet-")' },
    key: { type: "string", value: "BASE64", help: "individual enrollment key (prefer the DPS_KEY environment variable)" },
    "group-key": { type: "string", value: "BASE64", help: "group enrollment key; device keys are derived (prefer DPS_GROUP_KEY)" },
    endpoint: { type: "string", value: "HOST", help: `DPS global endpoint (default ${DPS_GLOBAL_ENDPOINT});\nnames under .localhost are dialled at 127.0.0.1` },
    "dps-port": { type: "string", value: "N", help: "where DPS over MQTT listens (default 8883; an emulator's: its DPS port)" },
    "hub-port": { type: "string", value: "N", help: "where the hubs listen (default 8883; an emulator's: its hub port)" },
    "lookup-port": { type: "string", value: "N", help: "where the HTTPS status lookup listens (default 443; an emulator's: 8443)" },
    ca: { type: "string", value: "FILE", help: `PEM of the CA to trust instead of the system roots (an emulator's: ${EMULATOR_CA})` },
    tcp: { type: "boolean", help: "plain MQTT instead of TLS (an emulator's TCP ports; the lookup stays HTTPS)" },
    payload: { type: "string", value: "JSON", help: "custom allocation payload" },
    flash: { type: "string", value: "DIR", help: "keep each device's cache in DIR/<registration id>.flash (default: in memory)" },
    messages: { type: "string", value: "N", help: "telemetry messages per device once connected (default 3)" },
    interval: { type: "string", value: "MS", help: "between messages of one device (default 1000)" },
    stagger: { type: "string", value: "MS", help: "spread fleet boots over MS (default 0)" },
    seed: { type: "string", value: "N", help: "seed of the jitter (fleets) and of the emulator" },
    timeout: { type: "string", value: "MS", help: "give up after MS (default 120000)" },
    quiet: { type: "boolean", help: "fleets: only the progress line and the summary" },
    "hub-features": {
      type: "boolean",
      help: "one device: answer direct methods (echo, blink, reprovision), acknowledge every desired\nproperty, print cloud-to-device messages; it stays connected until --timeout (or Ctrl-C)",
    },
  },
  footer:
    "Exit status: 0 connected and every message acknowledged, 1 failed or timed out, 2 usage error.\n" +
    "Against an emulator started on its own (npm run emulator), see README.md, Commands.",
} as const;

type Values = OptionValues<typeof command.options>;

interface Settings {
  readonly emulator: boolean;
  readonly count?: number;
  readonly registrationId: string;
  readonly prefix: string;
  readonly messages: number;
  readonly intervalMs: number;
  readonly staggerMs: number;
  readonly timeoutMs: number;
  readonly seed?: number;
  readonly payload: unknown;
  readonly tls: boolean;
  readonly idScope?: string;
  readonly endpoint: string;
  key?: string;
  groupKey?: string;
  /** Against a DPS of our choosing (not --emulator): where its parts listen, and its CA. */
  readonly dpsPort?: number;
  readonly hubPort?: number;
  readonly lookupPort?: number;
  readonly caFile?: string;
  readonly caPem?: string;
  readonly flash?: string;
  readonly quiet: boolean;
  readonly hubFeatures: boolean;
}

/** Every option checked, the CA file read and the device configuration checked, before any I/O. */
function settingsOf(v: Values): Settings {
  const count = integer("count", v.count, { min: 1, max: 100_000 });
  const s: Settings = {
    emulator: v.emulator === true,
    count,
    registrationId: v["registration-id"] ?? "cli-device-001",
    prefix: v.prefix ?? "fleet-",
    messages: integer("messages", v.messages, { min: 0, max: 1_000_000 }, 3)!,
    intervalMs: integer("interval", v.interval, { min: 0, max: 86_400_000 }, 1000)!,
    staggerMs: integer("stagger", v.stagger, { min: 0, max: 86_400_000 }, 0)!,
    timeoutMs: integer("timeout", v.timeout, { min: 1, max: 2_147_483_647 }, 120_000)!,
    seed: integer("seed", v.seed, { min: 0, max: 0xffff_ffff }),
    payload: json("payload", v.payload),
    tls: v.tcp !== true,
    idScope: v["id-scope"],
    endpoint: v.endpoint ?? DPS_GLOBAL_ENDPOINT,
    key: v.key ?? process.env.DPS_KEY,
    groupKey: v["group-key"] ?? process.env.DPS_GROUP_KEY,
    dpsPort: v["dps-port"] === undefined ? undefined : port("dps-port", v["dps-port"], 8883),
    hubPort: v["hub-port"] === undefined ? undefined : port("hub-port", v["hub-port"], 8883),
    lookupPort: v["lookup-port"] === undefined ? undefined : port("lookup-port", v["lookup-port"], 443),
    caFile: v.ca,
    caPem: v.ca === undefined ? undefined : readCa(v.ca),
    flash: v.flash,
    quiet: v.quiet === true,
    hubFeatures: v["hub-features"] === true,
  };
  if (s.hubFeatures && count !== undefined) usageError("--hub-features is for one device (leave out --count)");
  if (v["id-scope"] === "") usageError("--id-scope must not be empty");
  if (count !== undefined && v["registration-id"] !== undefined) usageError("--registration-id names one device; a fleet's are PREFIX00001.. (--prefix)");
  if (s.emulator) {
    const own = (["endpoint", "dps-port", "hub-port", "lookup-port", "ca"] as const).filter((name) => v[name] !== undefined);
    if (own.length > 0) usageError(`--${own[0]} does not go with --emulator, which picks its own ports and CA (for an emulator started on its own, leave --emulator out)`);
    // The embedded emulator enrolls the device(s) with these keys.
    if (count !== undefined) s.groupKey ??= randomBytes(32).toString("base64");
    else s.key ??= randomBytes(32).toString("base64");
  } else {
    if (!s.idScope) usageError("--id-scope is required (or --emulator)");
    if (count !== undefined && !s.groupKey) usageError("a fleet needs DPS_GROUP_KEY (or --group-key): the devices derive their keys from it");
    if (count === undefined && !s.key && !s.groupKey) usageError("give DPS_KEY (or --key), or DPS_GROUP_KEY (or --group-key)");
  }
  // The runtime checks a configuration at construction, without I/O: do it now, for the first device.
  try {
    new LifecycleMachine(configOf(s, count !== undefined ? fleetId(s, 0) : s.registrationId, s.idScope ?? "0ne0000C11E"), { crypto: nodeCrypto, random: mathRandom }, { cache: false, lookup: true });
  } catch (error) {
    if (error instanceof DpsError) usageError(optionNames(error.message));
    throw error;
  }
  return s;
}

/** The runtime's configuration fields, in its messages, as the options that set them. */
function optionNames(message: string): string {
  const names: Record<string, string> = {
    symmetricKey: "the key (DPS_KEY or --key)",
    groupKey: "the group key (DPS_GROUP_KEY or --group-key)",
    registrationId: "the registration id (--registration-id, or --prefix of a fleet)",
    idScope: "--id-scope",
    globalEndpoint: "--endpoint",
    payload: "--payload",
  };
  return message.replace(/\b(symmetricKey|groupKey|registrationId|idScope|globalEndpoint|payload)\b/g, (name) => names[name]);
}

function readCa(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (error) {
    usageError(`--ca: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  try {
    createSecureContext({ ca: pem });
  } catch (error) {
    usageError(`--ca: ${file} is not a PEM certificate (${(error as Error).message})`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) usageError(`--ca: ${file} holds no PEM certificate`);
  return pem;
}

function fleetId(s: Settings, i: number): string {
  return `${s.prefix}${String(i + 1).padStart(5, "0")}`;
}

function configOf(s: Settings, registrationId: string, idScope: string): RuntimeConfig {
  const endpoint = s.emulator ? "global.azure-devices-provisioning.localhost" : s.endpoint;
  if (s.count !== undefined || !s.key) return { idScope, registrationId, groupKey: s.groupKey, globalEndpoint: endpoint, payload: s.payload };
  return { idScope, registrationId, symmetricKey: s.key, globalEndpoint: endpoint, payload: s.payload };
}

/**
 * What to do about a fault, from the text of an event: a certificate that fails verification, a
 * TLS handshake that does not happen, nothing listening. Undefined for anything else.
 */
function hintFor(text: string, caFile: string | undefined, tcp: boolean): string | undefined {
  const at = text.indexOf(CERTIFICATE_FAILURE);
  if (at >= 0) {
    const detail = text.slice(at + CERTIFICATE_FAILURE.length).replace(/^: /, "").replace(/…$/, "");
    const m = /^(.*?) \(([A-Z][A-Z0-9_]*)/.exec(detail);
    const reason = (m?.[1] ?? detail).trim();
    const code = m?.[2] ?? "";
    if (/^(CERT_HAS_EXPIRED|CERT_NOT_YET_VALID)$/.test(code) || /expired|not yet valid/.test(reason)) {
      return `the server's certificate is not valid at this time (${reason}): check this machine's clock (an emulator renews its own when it starts)`;
    }
    if (/^(ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH)$/.test(code) || /names do not include/.test(reason)) {
      return `the server's certificate is not for the name dialled (${reason}): check --endpoint (the emulator's covers localhost, *.azure-devices-provisioning.localhost, *.azure-devices.localhost and 127.0.0.1)`;
    }
    if (caFile) return `the server's certificate is not trusted (${reason}): the CA in ${caFile} did not sign it; pass the one that did with --ca (an emulator's is the CA path its banner prints, ${EMULATOR_CA} by default)`;
    return `the server's certificate is not trusted (${reason}): pass the CA that signed it with --ca (the emulator's is ${EMULATOR_CA})`;
  }
  if (!tcp && /\(tls\)/.test(text)) return "the TLS handshake failed: is that port a TLS one? (an emulator's plain MQTT ports need --tcp)";
  const refused = /ECONNREFUSED[^0-9]*([0-9.:a-f]+:\d+)/.exec(text);
  if (refused) return `nothing listens at ${refused[1]}: is the emulator (or DPS) running there? check --dps-port and --hub-port`;
  return undefined;
}

async function main(v: Values): Promise<number> {
  const s = settingsOf(v);
  let idScope = s.idScope;
  let transport: DesktopTransport;
  let stopEmulator = async () => {};
  if (s.emulator) {
    const { startEmulator } = await import("../../simulator/index.js");
    const emulator = await startEmulator({ stateDir: join(process.cwd(), ".cache", "emulator"), seed: s.seed, config: { idScope: idScope ?? "0ne0000C11E", hubs: [{ hostName: "hub-1.azure-devices.localhost" }, { hostName: "hub-2.azure-devices.localhost" }], retryAfterSeconds: 1 } });
    stopEmulator = () => emulator.stop();
    idScope = emulator.idScope;
    if (s.count !== undefined) emulator.addGroupEnrollment({ groupId: "cli-fleet", primaryKey: s.groupKey! });
    else emulator.addIndividualEnrollment({ registrationId: s.registrationId, primaryKey: s.key! });
    const e = emulator.endpoints;
    process.stdout.write(`emulator: ID scope ${idScope}, DPS ${s.tls ? "mqtts" : "mqtt"}://127.0.0.1:${s.tls ? e.dps.tlsPort : e.dps.tcpPort}, admin ${e.admin.url}\n`);
    transport = emulatorTransport(e, emulator.caPem, "global.azure-devices-provisioning.localhost", s.tls);
  } else {
    const ports = s.dpsPort !== undefined || s.hubPort !== undefined || s.lookupPort !== undefined;
    transport = createTransport({
      tls: s.tls,
      ca: s.caPem,
      resolve: ports ? serviceResolver({ dpsHost: s.endpoint, dpsPort: s.dpsPort, hubPort: s.hubPort, lookupPort: s.lookupPort }) : undefined,
    });
  }
  if (s.flash) mkdirSync(s.flash, { recursive: true });
  const flashFor = (registrationId: string) => (s.flash ? join(s.flash, `${registrationId}.flash`) : undefined);

  // The first time a fault calls for it, say what to do (the device goes on retrying as its table says).
  const hinted = new Set<string>();
  let lastHint: string | undefined;
  const watch = (e: RuntimeEvent) => {
    const hint = hintFor(describeEvent(e), s.caFile, !s.tls);
    if (hint === undefined) return;
    lastHint = hint;
    if (hinted.has(hint)) return;
    hinted.add(hint);
    process.stderr.write(`dps-device: ${hint}\n`);
  };

  try {
    if (s.count !== undefined) {
      const summary = await runFleet({
        count: s.count,
        transport,
        random: s.seed !== undefined ? seededRandom(s.seed) : undefined,
        staggerMs: s.staggerMs,
        messages: s.messages,
        timeoutMs: s.timeoutMs,
        configFor: (i) => configOf(s, fleetId(s, i), idScope!),
        flashFor: (i) => flashFor(fleetId(s, i)),
        onEvent: (_i, id, e) => {
          watch(e);
          if (!s.quiet) process.stdout.write(`[${id}] ${describeEvent(e)}\n`);
        },
        onProgress: (p) => process.stdout.write(`progress: ${(p.elapsedMs / 1000).toFixed(1)} s, ${p.booted} booted, ${p.connected} connected, ${p.done} done, ${p.failed} failed of ${p.total}\n`),
      });
      process.stdout.write(formatSummary(summary) + "\n");
      return summary.failed.length === 0 && summary.timedOut.length === 0 ? 0 : 1;
    }
    const registrationId = s.registrationId;
    const config = configOf(s, registrationId, idScope!);
    return await new Promise<number>((resolve) => {
      let sent = 0;
      let acked = 0;
      let timer: NodeJS.Timeout | undefined;
      const deadline = setTimeout(() => finish(1, `timed out after ${s.timeoutMs / 1000} s${lastHint ? `; ${lastHint}` : ""}`), s.timeoutMs);
      let over = false;
      const finish = (code: number, why: string) => {
        if (over) return;
        over = true;
        clearTimeout(deadline);
        clearTimeout(stay);
        if (timer) clearInterval(timer);
        device.stop();
        process.stdout.write(`[${registrationId}] ${why}\n`);
        resolve(code);
      };
      const say = (line: string) => process.stdout.write(`[${registrationId}] ${line}\n`);
      const features = s.hubFeatures ? demoFeatures(say) : undefined;
      let connectedOnce = false;
      let stay: NodeJS.Timeout | undefined;
      if (features) {
        // Answering the cloud is the point: stay until --timeout, and end well if connected.
        clearTimeout(deadline);
        stay = setTimeout(() => finish(connectedOnce ? 0 : 1, connectedOnce ? `stopping after ${s.timeoutMs / 1000} s (--timeout)` : `timed out after ${s.timeoutMs / 1000} s`), s.timeoutMs);
      }
      const device = createDesktopDevice({
        config,
        transport,
        flash: flashFor(registrationId),
        features,
        listener: (e) => {
          say(describeEvent(e));
          watch(e);
          if (e.source === "runtime" && e.state === "connected") connectedOnce = true;
          if (e.source === "runtime" && e.state === "connected" && !timer) {
            if (s.messages === 0 && !features) return finish(0, "connected");
            const tick = () => {
              if (sent < s.messages) device.send({ seq: ++sent, at: new Date().toISOString() });
            };
            tick();
            timer = setInterval(tick, s.intervalMs);
          }
          if (e.source === "telemetry" && e.state === "sent" && ++acked === s.messages && !features) finish(0, `${acked} message(s) acknowledged`);
          if (e.source === "runtime" && e.state === "failed") finish(1, "failed");
        },
      });
      device.start();
    });
  } finally {
    await stopEmulator();
  }
}

/**
 * What `--hub-features` gives a device: the methods `echo` (answers its payload) and `blink`, the
 * built-in `reprovision`, every desired property acknowledged (ac 200), and C2D messages printed.
 */
function demoFeatures(say: (line: string) => void): HubFeature[] {
  const methods = new DirectMethods()
    .on("echo", (r) => ({ status: 200, payload: r.payload }))
    .on("blink", (r) => {
      const times = (r.payload as { times?: unknown } | null)?.times;
      const n = typeof times === "number" && times >= 1 && times <= 10 ? Math.floor(times) : 1;
      say(`blink ×${n}`);
      return { status: 200, payload: { blinked: n } };
    });
  const twin: DeviceTwin = new DeviceTwin({
    onDesired: (desired, version, complete) => {
      say(`desired ${complete ? "(whole) " : ""}version ${version}: ${JSON.stringify(desired)}`);
      for (const name of Object.keys(desired)) if (name !== "reprovision" && desired[name] !== null) twin.acknowledge(name, desired[name], version, 200, "applied");
    },
  });
  const c2d = new CloudMessages({ onMessage: (m) => say(`cloud-to-device ${m.messageId ?? "(no id)"}: ${m.text()} ${JSON.stringify(m.properties)}`) });
  return [methods, twin, c2d];
}

runCommand(command, main);
