#!/usr/bin/env node
// dps-emulator: runs the DPS + IoT Hub emulator until SIGINT/SIGTERM.
//
//   dps-emulator --config simulator/emulator.example.json --seed 7 --fault '{"step":"register","probability":0.1,"status":503}'
//
// Prints the endpoints, the CA path and the idScope on stdout; logs JSON lines on stderr.
import { choice, integer, json, port, runCommand, usageError, type OptionValues } from "../hosts/desktop/args.js";
import { checkFaultRule, type FaultRule } from "./config.js";
import { EmulatorError } from "./errors.js";
import { startEmulator, type Emulator } from "./index.js";
import { LOG_LEVELS, type LogLevel } from "./log.js";

const command = {
  name: "dps-emulator",
  synopsis: "dps-emulator [options]\nthe DPS + IoT Hub emulator, until SIGINT or SIGTERM; endpoints on stdout, JSON log lines on stderr",
  options: {
    config: { type: "string", value: "FILE", help: "JSON config (idScope, hubs, enrollments, limits, faults); see docs/EMULATOR.md" },
    seed: { type: "string", value: "N", help: "seed for every random choice (fault probability, operation ids)" },
    host: { type: "string", value: "ADDRESS", help: "listen address (default 127.0.0.1)" },
    "dps-port": { type: "string", value: "N", help: "DPS over MQTT/TLS (default 8883)" },
    "dps-tcp-port": { type: "string", value: "N", help: "DPS over plain MQTT (default 1883)" },
    "hub-port": { type: "string", value: "N", help: "IoT Hub over MQTT/TLS, all hubs (default 8884)" },
    "hub-tcp-port": { type: "string", value: "N", help: "IoT Hub over plain MQTT (default 1884)" },
    "https-port": { type: "string", value: "N", help: "registration status lookup (default 8443)" },
    "hub-https-port": { type: "string", value: "N", help: "the hubs' service REST API: twins, direct methods (default 8445)" },
    "admin-port": { type: "string", value: "N", help: "admin HTTP API (default 8090)" },
    "state-dir": { type: "string", value: "DIR", help: "where the CA is kept (default .cache/emulator)" },
    "clock-skew": { type: "string", value: "S", help: "SAS expiry tolerance in seconds (default 300)" },
    "tls-max-version": { type: "string", value: "V", help: "TLSv1.2 or TLSv1.3 (default TLSv1.3)" },
    "max-connections": { type: "string", value: "N", help: "MQTT connections open at once, all listeners (default 20000); over it new sockets are closed" },
    "dps-max-packet-bytes": { type: "string", value: "N", help: "largest packet a DPS connection may send (default 102400)" },
    "hub-max-packet-bytes": { type: "string", value: "N", help: "largest packet a hub connection may send (default 266240)" },
    "packet-timeout-ms": { type: "string", value: "MS", help: "a packet begun must be complete within this (default 30000)" },
    "connect-timeout-ms": { type: "string", value: "MS", help: "CONNECT must arrive within this (default 10000)" },
    "max-idle-ms": { type: "string", value: "MS", help: "longest silence, whatever the keep-alive; keep-alive 0 gets this (default 1767000, IoT Hub's)" },
    "tls-handshake-timeout-ms": { type: "string", value: "MS", help: "TLS handshakes not done by then are destroyed (default 10000)" },
    fault: { type: "string", multiple: true, value: "JSON", help: "a fault rule; repeatable" },
    "log-level": { type: "string", value: "LEVEL", help: "error | warn | info | debug (default info)" },
  },
  footer:
    "Port 0 picks a free port.\n" +
    "Exit status: 0 after SIGINT or SIGTERM, 1 when it cannot start (a config file, a port in use), 2 usage error.",
} as const;

async function main(v: OptionValues<typeof command.options>): Promise<number> {
  const level: LogLevel = choice("log-level", v["log-level"], LOG_LEVELS, "info");
  const seed = integer("seed", v.seed);
  const skew = integer("clock-skew", v["clock-skew"], { min: 0 });
  const tlsMaxVersion = choice("tls-max-version", v["tls-max-version"], ["TLSv1.2", "TLSv1.3"] as const, "TLSv1.3");
  const ports = {
    dpsTlsPort: port("dps-port", v["dps-port"], 8883, true),
    dpsTcpPort: port("dps-tcp-port", v["dps-tcp-port"], 1883, true),
    hubTlsPort: port("hub-port", v["hub-port"], 8884, true),
    hubTcpPort: port("hub-tcp-port", v["hub-tcp-port"], 1884, true),
    httpsPort: port("https-port", v["https-port"], 8443, true),
    hubHttpsPort: port("hub-https-port", v["hub-https-port"], 8445, true),
    adminPort: port("admin-port", v["admin-port"], 8090, true),
  };
  const positive = (name: keyof typeof v & string): number | undefined => integer(name, v[name] as string | undefined, { min: 1 });
  const limits = {
    maxConnections: positive("max-connections"),
    dpsMaxPacketBytes: positive("dps-max-packet-bytes"),
    hubMaxPacketBytes: positive("hub-max-packet-bytes"),
    packetTimeoutMs: positive("packet-timeout-ms"),
    connectTimeoutMs: positive("connect-timeout-ms"),
    maxIdleMs: positive("max-idle-ms"),
    tlsHandshakeTimeoutMs: positive("tls-handshake-timeout-ms"),
  };
  const faults: FaultRule[] = (v.fault ?? []).map((text, i) => {
    const rule = json(`fault #${i + 1}`, text) as FaultRule;
    try {
      checkFaultRule(rule, `--fault #${i + 1}`);
    } catch (error) {
      usageError((error as Error).message);
    }
    return rule;
  });

  let emulator: Emulator;
  try {
    emulator = await startEmulator({
      config: v.config,
      seed,
      host: v.host,
      ...ports,
      stateDir: v["state-dir"],
      clockSkewSeconds: skew,
      ...limits,
      tlsMaxVersion: v["tls-max-version"] === undefined ? undefined : tlsMaxVersion,
      logLevel: level,
      log: (entry) => process.stderr.write(JSON.stringify(entry) + "\n"),
    });
  } catch (error) {
    if (error instanceof EmulatorError) throw error;
    throw new Error(`cannot start: ${(error as Error).message}`);
  }
  for (const rule of faults) emulator.addFault(rule);

  // Handlers first: whoever reads the banner may signal at once.
  let stopping = false;
  const stopped = new Promise<number>((resolve, reject) => {
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: "info", event: "signal", signal }) + "\n");
      emulator.stop().then(
        () => resolve(0),
        (error: Error) => reject(new Error(`stop failed: ${error.message}`)),
      );
    };
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
  });

  const e = emulator.endpoints;
  const hubs = emulator.hubs().map((h) => h.hostName).join(", ");
  process.stdout.write(
    [
      "DPS emulator ready",
      `  idScope   ${emulator.idScope}`,
      `  DPS       mqtts://${e.dps.host}:${e.dps.tlsPort}  mqtt://${e.dps.host}:${e.dps.tcpPort}`,
      `  Hubs      mqtts://${e.hub.host}:${e.hub.tlsPort}  mqtt://${e.hub.host}:${e.hub.tcpPort}  (${hubs})`,
      `  Lookup    https://${e.https.host}:${e.https.port}  (and the DPS service API, HostName ${emulator.serviceApi.hostName}; keys: GET /service-api)`,
      `  Service   https://${e.hubService.host}:${e.hubService.port}  (twins, methods; connection strings: GET ${e.admin.url}/hubs)`,
      `  Admin     ${e.admin.url}`,
      `  CA        ${emulator.caPath}`,
      `  seed      ${emulator.seed}`,
      `  faults    ${emulator.faults().length}`,
      "",
    ].join("\n"),
  );
  return stopped;
}

runCommand(command, main);
