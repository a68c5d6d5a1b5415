#!/usr/bin/env node
/**
 * dps-fleet: runs a fleet scenario file against the emulator and prints the summary and what the
 * troubleshooting table expects of it; exits 1 when an expectation fails.
 *
 *   dps-fleet --scenario hosts/desktop/scenarios/mass-boot.json
 *   dps-fleet --scenario hosts/desktop/scenarios/hub-outage.json --count 500 --seed 3
 *   npm run fleet -- --scenario hosts/desktop/scenarios/throttling-storm.json
 *
 * One fleet in several processes (or on several machines), against one service:
 *
 *   dps-fleet emulator-config --scenario S.json > shared.json     the emulator for that scenario
 *   dps-emulator --config shared.json                             started on its own
 *   dps-fleet --scenario S.json --shard 1/2 --emulator-admin http://127.0.0.1:8090 --json r1.json
 *   dps-fleet --scenario S.json --shard 2/2 --emulator-admin http://127.0.0.1:8090 --json r2.json
 *   dps-fleet merge r1.json r2.json                               one summary, the checks evaluated again
 *
 * The emulator runs in a child process unless --in-process is given. For 10,000 devices the
 * process needs about 10,000 file descriptors (`ulimit -n`) and a heap above Node's default
 * (`node --max-old-space-size=4096`, which `npm run fleet` passes).
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { checkConfig } from "../../simulator/config.js";
import { integer, port, runCommand, usageError, type OptionTable, type OptionValues } from "./args.js";
import type { FleetProgress } from "./fleet.js";
import { startFleetDashboard, type FleetDashboard } from "./fleet-dashboard.js";
import {
  formatReport,
  loadScenario,
  mergeReportFiles,
  MergeError,
  reportFile,
  runScenario,
  scenarioEmulatorConfig,
  targetProblem,
  type Scenario,
  type ScenarioReport,
  type ServiceTarget,
  type Shard,
} from "./scenario.js";

/** The command line: one entry per option (its help is the usage text); read in main. */
const command = {
  name: "dps-fleet",
  synopsis:
    "dps-fleet --scenario FILE [options]\n" +
    "       dps-fleet merge REPORT.json... [--json FILE]     one summary of the shards of a run\n" +
    "       dps-fleet emulator-config --scenario FILE [--seed N] [--count N]   the config of a shared emulator",
  options: {
    scenario: { type: "string", value: "FILE", help: "a scenario (see docs/FLEET.md and hosts/desktop/scenarios/)" },
    count: { type: "string", value: "N", help: "replace the scenario's number of devices (the whole fleet's, with --shard)" },
    seed: { type: "string", value: "N", help: "replace the scenario's seed" },
    stagger: { type: "string", value: "MS", help: "replace the window over which the devices boot" },
    "in-process": { type: "boolean", help: "run the emulator in this process (default: a child process)" },
    "max-connecting": {
      type: "string",
      value: "N",
      help: "connections in their handshake at once, the others wait their turn\n(default: the scenario's host.maxConnecting, else 256; 0: no limit)",
    },
    shard: { type: "string", value: "K/N", help: "run shard K of N: the devices i ≡ K−1 (mod N) at their boot times in\nthe whole fleet's schedule; needs --emulator-admin or --endpoint" },
    "emulator-admin": { type: "string", value: "URL", help: "an emulator started on its own (its admin API, e.g. http://127.0.0.1:8090),\nshared by every shard: it says where it listens, and takes the timeline's actions" },
    "id-scope": { type: "string", value: "SCOPE", help: "a DPS instead of an emulator: its ID scope (the group key from DPS_GROUP_KEY)" },
    endpoint: { type: "string", value: "HOST", help: "the DPS global endpoint (with --id-scope)" },
    "dps-port": { type: "string", value: "N", help: "where that DPS listens for MQTT (default 8883)" },
    "hub-port": { type: "string", value: "N", help: "where its hubs listen (default 8883)" },
    "lookup-port": { type: "string", value: "N", help: "where its HTTPS status lookup listens (default 443)" },
    ca: { type: "string", value: "FILE", help: "PEM of the CA to trust (default: the system's; with --emulator-admin, its CA file)" },
    "start-at": { type: "string", value: "TIME", help: "boot the fleet at this moment (ISO 8601, or ms since the epoch): shards\non several machines start together" },
    json: { type: "string", value: "FILE", help: "also write the whole report as JSON (what `dps-fleet merge` reads)" },
    quiet: { type: "boolean", help: "no progress display" },
    dashboard: { type: "boolean", help: "serve a live dashboard of the run on 127.0.0.1 (its URL is printed)" },
    "dashboard-port": { type: "string", value: "N", help: "the dashboard's port (default: a free one); implies --dashboard" },
  },
  footer:
    "Exit status: 0 every expectation held, 1 one failed (or the run failed), 2 usage error (a bad option, a scenario that\n" +
    "cannot be read or is invalid, an output file that cannot be written, reports that are not the shards of one run).",
} as const;

const mergeCommand = {
  name: "dps-fleet merge",
  synopsis: "dps-fleet merge REPORT.json... [--json FILE]\nfolds the JSON reports of the shards of one run into one summary, the checks evaluated on the merged data",
  options: {
    json: { type: "string", value: "FILE", help: "also write the merged report as JSON" },
  },
  footer: "Exit status: 0 every expectation held, 1 one failed, 2 usage error (a file that is not a report, shards of different runs, a shard missing or twice).",
} as const;

const emulatorConfigCommand = {
  name: "dps-fleet emulator-config",
  synopsis: "dps-fleet emulator-config --scenario FILE [--seed N] [--count N]\nprints the config of an emulator for the scenario's shards (dps-emulator --config FILE): its hubs, limits, faults, the group",
  options: {
    scenario: command.options.scenario,
    seed: command.options.seed,
    count: command.options.count,
  },
  footer: "Give the same --seed and --count as the shards: the group key and the devices disabled from the start follow from them.",
} as const;

type Values = OptionValues<typeof command.options>;

/** The soft limit on open files, as the shell reports it (undefined where there is no sh). */
function openFileLimit(): number | undefined {
  const r = spawnSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && Number.isFinite(n) ? n : undefined;
}

/** An output file must be writable before the run starts: its folder exists, and it (or the folder) may be written. */
function checkOutput(option: string, path: string): void {
  const full = resolve(path);
  let stat;
  try {
    stat = statSync(full);
  } catch {
    stat = undefined;
  }
  if (stat?.isDirectory()) usageError(`--${option} ${path}: is a folder; give the file to write`);
  const target = stat ? full : dirname(full);
  if (!stat) {
    let folder;
    try {
      folder = statSync(target);
    } catch {
      usageError(`--${option} ${path}: the folder ${dirname(path) || "."} does not exist`);
    }
    if (!folder.isDirectory()) usageError(`--${option} ${path}: ${dirname(path)} is not a folder`);
  }
  try {
    accessSync(target, constants.W_OK);
  } catch {
    usageError(`--${option} ${path}: ${stat ? "the file" : `the folder ${dirname(path) || "."}`} cannot be written (permission denied)`);
  }
}

function shardOf(text: string | undefined): Shard | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d{1,5})\/(\d{1,5})$/.exec(text);
  const shard = m ? { index: Number(m[1]), count: Number(m[2]) } : undefined;
  if (!shard || shard.index < 1 || shard.index > shard.count) usageError(`--shard must be K/N with 1 ≤ K ≤ N ≤ 99999 (shard K of N), got "${text}"`);
  return shard;
}

function startAtOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const at = /^\d{1,16}$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(at)) usageError(`--start-at must be a time (ISO 8601, e.g. 2025-06-01T12:00:00Z, or ms since the epoch), got "${text}"`);
  const now = Date.now();
  if (at < now - 60_000 || at > now + 86_400_000) usageError(`--start-at ${text} is ${at < now ? "past" : "more than a day away"}: give a moment within the next 24 h`);
  return at;
}

function readable(option: string, path: string): string {
  try {
    readFileSync(path);
  } catch (error) {
    usageError(`--${option}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  return path;
}

function scenarioOf(path: string | undefined): Scenario {
  if (path === undefined) usageError("--scenario FILE is required");
  try {
    return loadScenario(path);
  } catch (error) {
    usageError(`--scenario: ${(error as Error).message}`);
  }
}

/** Where the devices go: the run's own emulator (undefined), a shared emulator, or a DPS. */
function targetOf(v: Values): ServiceTarget | undefined {
  const service = (["id-scope", "endpoint", "dps-port", "hub-port", "lookup-port"] as const).filter((name) => v[name] !== undefined);
  if (v["emulator-admin"] !== undefined) {
    if (service.length) usageError(`--${service[0]} does not go with --emulator-admin: the emulator's admin API says where it listens`);
    if (v["in-process"]) usageError("--in-process does not go with --emulator-admin: the emulator runs on its own");
    let url: URL;
    try {
      url = new URL(v["emulator-admin"]);
    } catch {
      usageError(`--emulator-admin must be a URL (http://HOST:PORT), got "${v["emulator-admin"]}"`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") usageError(`--emulator-admin must be an http:// URL, got "${v["emulator-admin"]}"`);
    return { kind: "emulator", adminUrl: v["emulator-admin"].replace(/\/+$/, ""), caFile: v.ca === undefined ? undefined : readable("ca", v.ca) };
  }
  if (service.length) {
    if (v["in-process"]) usageError("--in-process does not go with a DPS (--id-scope, --endpoint)");
    if (!v["id-scope"] || !v.endpoint) usageError("a DPS needs --id-scope and --endpoint (and DPS_GROUP_KEY)");
    const groupKey = process.env.DPS_GROUP_KEY;
    if (!groupKey) usageError("a DPS needs the group enrollment's key in DPS_GROUP_KEY: the devices derive their keys from it");
    if (!/^[A-Za-z0-9+/]{22,}={0,2}$/.test(groupKey)) usageError("DPS_GROUP_KEY is not a base64 key of at least 16 bytes (the group enrollment's primary key)");
    return {
      kind: "service",
      idScope: v["id-scope"],
      endpoint: v.endpoint,
      dpsPort: v["dps-port"] === undefined ? undefined : port("dps-port", v["dps-port"], 8883),
      hubPort: v["hub-port"] === undefined ? undefined : port("hub-port", v["hub-port"], 8883),
      lookupPort: v["lookup-port"] === undefined ? undefined : port("lookup-port", v["lookup-port"], 443),
      caFile: v.ca === undefined ? undefined : readable("ca", v.ca),
      groupKey,
    };
  }
  if (v.ca !== undefined) usageError("--ca goes with --emulator-admin or a DPS (--id-scope, --endpoint); the run's own emulator brings its CA");
  return undefined;
}

async function main(values: Values): Promise<number> {
  // Everything is checked before anything starts: the options, the scenario, the output file.
  const count = integer("count", values.count, { min: 1, max: 1_000_000 });
  const seed = integer("seed", values.seed, { min: 0, max: 0xffff_ffff });
  const maxConnecting = integer("max-connecting", values["max-connecting"], { min: 0, max: 1_000_000 });
  const staggerMs = integer("stagger", values.stagger, { min: 0, max: 86_400_000 });
  const shard = shardOf(values.shard);
  const startAt = startAtOf(values["start-at"]);
  const target = targetOf(values);
  if (shard && shard.count > 1 && target === undefined) {
    usageError(`--shard ${values.shard}: the shards of one fleet run against one service: give --emulator-admin URL (an emulator started on its own) or a DPS (--id-scope, --endpoint)`);
  }
  const scenario = scenarioOf(values.scenario);
  const problem = targetProblem(scenario, target);
  if (problem) usageError(problem);
  if (values.json !== undefined) checkOutput("json", values.json);
  const dashboardPort = values["dashboard-port"] === undefined ? (values.dashboard ? 0 : undefined) : port("dashboard-port", values["dashboard-port"], 0, true);
  const devices = Math.ceil((count ?? scenario.devices.count) / (shard?.count ?? 1));
  const separateProcess = !values["in-process"];
  const limit = openFileLimit();
  const needed = devices * (target === undefined && !separateProcess ? 2 : 1) + 200;
  if (limit !== undefined && limit < needed) {
    process.stderr.write(`dps-fleet: warning: the open-file limit is ${limit} and ${devices} devices need about ${needed}; raise it with \`ulimit -n ${needed}\`\n`);
  }
  const tty = process.stdout.isTTY && !values.quiet;
  process.stdout.write(
    `scenario ${scenario.name}: ${devices} devices${shard && shard.count > 1 ? ` (shard ${shard.index}/${shard.count})` : ""}, seed ${seed ?? scenario.seed}${scenario.description ? `\n  ${scenario.description}` : ""}\n`,
  );
  if (startAt !== undefined) process.stdout.write(`waiting until ${new Date(startAt).toISOString()} to boot\n`);
  const progressLine = values.quiet
    ? undefined
    : (p: FleetProgress) => {
        const line = `${(p.elapsedMs / 1000).toFixed(1).padStart(6)} s  booted ${p.booted}  connected ${p.connected} (ever ${p.everConnected})  settled ${p.done}  failed or backing off ${p.failed}  of ${p.total}`;
        process.stdout.write(tty ? `\r${line}\u001b[K` : line + "\n");
      };
  // The live dashboard (docs/FLEET.md): fed by the run's events and progress, left with the final
  // figures on the page until the command ends.
  let dashboard: FleetDashboard | undefined;
  if (dashboardPort !== undefined) {
    dashboard = await startFleetDashboard({ port: dashboardPort, title: scenario.name, emulatorUrl: target?.kind === "emulator" ? target.adminUrl : undefined });
    process.stdout.write(`dashboard: ${dashboard.url}\n`);
  }
  try {
    return await runWithDashboard(dashboard);
  } finally {
    await dashboard?.close();
  }

  async function runWithDashboard(dashboard: FleetDashboard | undefined): Promise<number> {
  const report = await runScenario(scenario, {
    count,
    seed,
    maxConnecting,
    staggerMs,
    separateProcess,
    shard,
    target,
    startAt,
    scenarioFile: values.scenario,
    onEvent: dashboard?.onEvent,
    onStep: (step, at) => {
      dashboard?.mark(step.mark ?? step.do);
      if (tty) process.stdout.write("\n");
      process.stdout.write(`timeline: ${step.do}${step.fraction !== undefined ? ` ${step.fraction}` : ""}${step.hub ? ` ${step.hub}` : ""}${step.mark ? ` (mark ${step.mark})` : ""} at ${(at / 1000).toFixed(1)} s\n`);
    },
    onProgress: dashboard
      ? (p) => {
          dashboard.onProgress(p);
          progressLine?.(p);
        }
      : progressLine,
  });
  dashboard?.finish(report.summary);
  if (tty) process.stdout.write("\n");
  process.stdout.write(formatReport(report) + "\n");
  if (values.json !== undefined) writeReport(values.json, report);
  return report.checks.every((c) => c.ok) ? 0 : 1;
  }
}

function writeReport(path: string, report: ScenarioReport): void {
  try {
    writeFileSync(path, JSON.stringify(reportFile(report)) + "\n");
  } catch (error) {
    throw new Error(`--json ${path}: ${(error as Error).message} (the summary above is the run's)`);
  }
}

/** `merge`: the words that are not options (nor an option's value) are the reports. */
function splitPositionals(options: OptionTable, argv: readonly string[]): { files: string[]; rest: string[] } {
  const files: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.startsWith("-") && arg !== "-") {
      rest.push(arg);
      const name = arg.startsWith("--") ? arg.slice(2) : "";
      if (!name.includes("=") && options[name]?.type === "string" && i + 1 < argv.length) rest.push(argv[++i]);
    } else files.push(arg);
  }
  return { files, rest };
}

async function merge(files: readonly string[], values: OptionValues<typeof mergeCommand.options>): Promise<number> {
  if (files.length === 0) usageError("give the JSON reports of the shards: dps-fleet merge r1.json r2.json ...");
  if (values.json !== undefined) checkOutput("json", values.json);
  let report: ScenarioReport;
  try {
    report = mergeReportFiles(files);
  } catch (error) {
    if (error instanceof MergeError) usageError(error.message);
    throw error;
  }
  process.stdout.write(formatReport(report) + "\n");
  if (values.json !== undefined) writeReport(values.json, report);
  return report.checks.every((c) => c.ok) ? 0 : 1;
}

function emulatorConfig(values: OptionValues<typeof emulatorConfigCommand.options>): number {
  const count = integer("count", values.count, { min: 1, max: 1_000_000 });
  const seed = integer("seed", values.seed, { min: 0, max: 0xffff_ffff });
  const scenario = scenarioOf(values.scenario);
  const config = scenarioEmulatorConfig(scenario, { seed, count });
  checkConfig(config);
  process.stdout.write(JSON.stringify(config, null, 2) + "\n");
  return 0;
}

const argv = process.argv.slice(2);
if (argv[0] === "merge") {
  const { files, rest } = splitPositionals(mergeCommand.options, argv.slice(1));
  runCommand(mergeCommand, (values) => merge(files, values), rest);
} else if (argv[0] === "emulator-config") {
  runCommand(emulatorConfigCommand, emulatorConfig, argv.slice(1));
} else {
  runCommand(command, main, argv);
}
