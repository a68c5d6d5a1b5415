#!/usr/bin/env node
// dps-emulator: runs the DPS + IoT Hub emulator until SIGINT/SIGTERM.
//
//   dps-emulator --config simulator/emulator.example.json --seed 7 --fault '{"step":"register","probability":0.1,"status":503}'
//
// Prints the endpoints, the CA path and the idScope on stdout; logs JSON lines on stderr.
import { parseArgs } from "node:util";
import { checkFaultRule, type FaultRule } from "./config.js";
import { EmulatorError } from "./errors.js";
import { startEmulator, type Emulator } from "./index.js";
import { LOG_LEVELS, type LogLevel } from "./log.js";

const USAGE = `usage: dps-emulator [options]
  --config FILE          JSON config (idScope, hubs, enrollments, limits, faults); see docs/EMULATOR.md
  --seed N               seed for every random choice (fault probability, operation ids)
  --host ADDRESS         listen address (default 127.0.0.1)
  --dps-port N           DPS over MQTT/TLS (default 8883)
  --dps-tcp-port N       DPS over plain MQTT (default 1883)
  --hub-port N           IoT Hub over MQTT/TLS, all hubs (default 8884)
  --hub-tcp-port N       IoT Hub over plain MQTT (default 1884)
  --https-port N         registration status lookup (default 8443)
  --admin-port N         admin HTTP API (default 8090)
  --state-dir DIR        where the CA is kept (default .cache/emulator)
  --clock-skew S         SAS expiry tolerance in seconds (default 300)
  --tls-max-version V    TLSv1.2 or TLSv1.3 (default TLSv1.3)
  --fault JSON           a fault rule; repeatable
  --log-level LEVEL      error | warn | info | debug (default info)
  --help                 this text
Port 0 picks a free port.`;

function fail(message: string, code = 2): never {
  process.stderr.write(`dps-emulator: ${message}\n`);
  process.exit(code);
}

function port(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`--${name} must be a port number from 0 to 65535`);
  return n;
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        config: { type: "string" },
        seed: { type: "string" },
        host: { type: "string" },
        "dps-port": { type: "string" },
        "dps-tcp-port": { type: "string" },
        "hub-port": { type: "string" },
        "hub-tcp-port": { type: "string" },
        "https-port": { type: "string" },
        "admin-port": { type: "string" },
        "state-dir": { type: "string" },
        "clock-skew": { type: "string" },
        "tls-max-version": { type: "string" },
        fault: { type: "string", multiple: true },
        "log-level": { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
    });
  } catch (error) {
    fail(`${(error as Error).message}\n${USAGE}`);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE + "\n");
    return;
  }
  const level = (v["log-level"] ?? "info") as LogLevel;
  if (!LOG_LEVELS.includes(level)) fail(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
  const seed = v.seed === undefined ? undefined : Number(v.seed);
  if (seed !== undefined && !Number.isInteger(seed)) fail("--seed must be an integer");
  const skew = v["clock-skew"] === undefined ? undefined : Number(v["clock-skew"]);
  if (skew !== undefined && !(Number.isInteger(skew) && skew >= 0)) fail("--clock-skew must be a whole number of seconds");
  const tlsMaxVersion = v["tls-max-version"];
  if (tlsMaxVersion !== undefined && tlsMaxVersion !== "TLSv1.2" && tlsMaxVersion !== "TLSv1.3") fail("--tls-max-version must be TLSv1.2 or TLSv1.3");
  const faults: FaultRule[] = (v.fault ?? []).map((text, i) => {
    let rule: FaultRule;
    try {
      rule = JSON.parse(text) as FaultRule;
    } catch {
      fail(`--fault #${i + 1} is not JSON: ${text}`);
    }
    try {
      checkFaultRule(rule, `--fault #${i + 1}`);
    } catch (error) {
      fail((error as Error).message);
    }
    return rule;
  });

  let emulator: Emulator;
  try {
    emulator = await startEmulator({
      config: v.config,
      seed,
      host: v.host,
      dpsTlsPort: port(v["dps-port"], "dps-port", 8883),
      dpsTcpPort: port(v["dps-tcp-port"], "dps-tcp-port", 1883),
      hubTlsPort: port(v["hub-port"], "hub-port", 8884),
      hubTcpPort: port(v["hub-tcp-port"], "hub-tcp-port", 1884),
      httpsPort: port(v["https-port"], "https-port", 8443),
      adminPort: port(v["admin-port"], "admin-port", 8090),
      stateDir: v["state-dir"],
      clockSkewSeconds: skew,
      tlsMaxVersion,
      logLevel: level,
      log: (entry) => process.stderr.write(JSON.stringify(entry) + "\n"),
    });
  } catch (error) {
    if (error instanceof EmulatorError) fail(error.message, 1);
    fail(`cannot start: ${(error as Error).message}`, 1);
  }
  for (const rule of faults) emulator.addFault(rule);

  // Handlers first: whoever reads the banner may signal at once.
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: "info", event: "signal", signal }) + "\n");
    emulator.stop().then(
      () => process.exit(0),
      (error: Error) => fail(`stop failed: ${error.message}`, 1),
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));

  const e = emulator.endpoints;
  const hubs = emulator.hubs().map((h) => h.hostName).join(", ");
  process.stdout.write(
    [
      "DPS emulator ready",
      `  idScope   ${emulator.idScope}`,
      `  DPS       mqtts://${e.dps.host}:${e.dps.tlsPort}  mqtt://${e.dps.host}:${e.dps.tcpPort}`,
      `  Hubs      mqtts://${e.hub.host}:${e.hub.tlsPort}  mqtt://${e.hub.host}:${e.hub.tcpPort}  (${hubs})`,
      `  Lookup    https://${e.https.host}:${e.https.port}`,
      `  Admin     ${e.admin.url}`,
      `  CA        ${emulator.caPath}`,
      `  seed      ${emulator.seed}`,
      `  faults    ${emulator.faults().length}`,
      "",
    ].join("\n"),
  );

}

main().catch((error: Error) => fail(error.stack ?? error.message, 1));
