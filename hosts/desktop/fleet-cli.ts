#!/usr/bin/env node
/**
 * dps-fleet: runs a fleet scenario file against the emulator and prints the summary and what the
 * troubleshooting table expects of it; exits 1 when an expectation fails.
 *
 *   dps-fleet --scenario hosts/desktop/scenarios/mass-boot.json
 *   dps-fleet --scenario hosts/desktop/scenarios/hub-outage.json --count 500 --seed 3
 *   npm run fleet -- --scenario hosts/desktop/scenarios/throttling-storm.json
 *
 * The emulator runs in a child process unless --in-process is given. For 10,000 devices the
 * process needs about 10,000 file descriptors (`ulimit -n`) and a heap above Node's default
 * (`node --max-old-space-size=4096`, which `npm run fleet` passes).
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { integer, runCommand, usageError, type OptionValues } from "./args.js";
import { formatReport, loadScenario, runScenario } from "./scenario.js";

/** The command line: one entry per option (its help is the usage text); read in main. */
const command = {
  name: "dps-fleet",
  synopsis: "dps-fleet --scenario FILE [options]",
  options: {
    scenario: { type: "string", value: "FILE", help: "a scenario (see docs/FLEET.md and hosts/desktop/scenarios/)" },
    count: { type: "string", value: "N", help: "replace the scenario's number of devices" },
    seed: { type: "string", value: "N", help: "replace the scenario's seed" },
    stagger: { type: "string", value: "MS", help: "replace the window over which the devices boot" },
    "in-process": { type: "boolean", help: "run the emulator in this process (default: a child process)" },
    "max-connecting": {
      type: "string",
      value: "N",
      help: "connections in their handshake at once, the others wait their turn\n(default: the scenario's host.maxConnecting, else 256; 0: no limit)",
    },
    json: { type: "string", value: "FILE", help: "also write the whole report as JSON" },
    quiet: { type: "boolean", help: "no progress display" },
  },
  footer: "Exit status: 0 every expectation held, 1 one failed, 2 usage error (a bad option, a scenario that cannot be read or is invalid).",
} as const;

type Values = OptionValues<typeof command.options>;

/** The soft limit on open files, as the shell reports it (undefined where there is no sh). */
function openFileLimit(): number | undefined {
  const r = spawnSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && Number.isFinite(n) ? n : undefined;
}

async function main(values: Values): Promise<number> {
  if (values.scenario === undefined) usageError("--scenario FILE is required");
  const count = integer("count", values.count, { min: 1, max: 1_000_000 });
  const seed = integer("seed", values.seed, { min: 0, max: 0xffff_ffff });
  const maxConnecting = integer("max-connecting", values["max-connecting"], { min: 0, max: 1_000_000 });
  const staggerMs = integer("stagger", values.stagger, { min: 0, max: 86_400_000 });
  let scenario;
  try {
    scenario = loadScenario(values.scenario);
  } catch (error) {
    usageError(`--scenario: ${(error as Error).message}`);
  }
  const devices = count ?? scenario.devices.count;
  const separateProcess = !values["in-process"];
  const limit = openFileLimit();
  const needed = devices * (separateProcess ? 1 : 2) + 200;
  if (limit !== undefined && limit < needed) {
    process.stderr.write(`dps-fleet: warning: the open-file limit is ${limit} and ${devices} devices need about ${needed}; raise it with \`ulimit -n ${needed}\`\n`);
  }
  const tty = process.stdout.isTTY && !values.quiet;
  process.stdout.write(`scenario ${scenario.name}: ${devices} devices, seed ${seed ?? scenario.seed}${scenario.description ? `\n  ${scenario.description}` : ""}\n`);
  const report = await runScenario(scenario, {
    count,
    seed,
    maxConnecting,
    staggerMs,
    separateProcess,
    onStep: (step, at) => {
      if (tty) process.stdout.write("\n");
      process.stdout.write(`timeline: ${step.do}${step.fraction !== undefined ? ` ${step.fraction}` : ""}${step.hub ? ` ${step.hub}` : ""}${step.mark ? ` (mark ${step.mark})` : ""} at ${(at / 1000).toFixed(1)} s\n`);
    },
    onProgress: values.quiet
      ? undefined
      : (p) => {
          const line = `${(p.elapsedMs / 1000).toFixed(1).padStart(6)} s  booted ${p.booted}  connected ${p.connected} (ever ${p.everConnected})  settled ${p.done}  failed or backing off ${p.failed}  of ${p.total}`;
          process.stdout.write(tty ? `\r${line}\u001b[K` : line + "\n");
        },
  });
  if (tty) process.stdout.write("\n");
  process.stdout.write(formatReport(report) + "\n");
  if (values.json) writeFileSync(values.json, JSON.stringify({ ...report, summary: { ...report.summary, failed: report.summary.failed.slice(0, 100) } }, null, 2));
  return report.checks.every((c) => c.ok) ? 0 : 1;
}

runCommand(command, main);
