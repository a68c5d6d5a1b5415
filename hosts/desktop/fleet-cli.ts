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
import { parseArgs } from "node:util";
import { formatReport, loadScenario, runScenario } from "./scenario.js";

const usage = `usage: dps-fleet --scenario FILE [options]
  --scenario FILE   a scenario (see docs/FLEET.md and hosts/desktop/scenarios/)
  --count N         replace the scenario's number of devices
  --seed N          replace the scenario's seed
  --stagger MS      replace the window over which the devices boot
  --in-process      run the emulator in this process (default: a child process)
  --max-connecting N  connections in their handshake at once, the others wait their turn
                    (default: the scenario's host.maxConnecting, else 256; 0: no limit)
  --json FILE       also write the whole report as JSON
  --quiet           no progress display
  -h, --help`;

function fail(message: string): never {
  process.stderr.write(`dps-fleet: ${message}\n${usage}\n`);
  process.exit(2);
}

/** The soft limit on open files, as the shell reports it (undefined where there is no sh). */
function openFileLimit(): number | undefined {
  const r = spawnSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && Number.isFinite(n) ? n : undefined;
}

async function main(): Promise<number> {
  let values;
  try {
    values = parseArgs({
      options: {
        scenario: { type: "string" },
        count: { type: "string" },
        seed: { type: "string" },
        stagger: { type: "string" },
        "in-process": { type: "boolean", default: false },
        "max-connecting": { type: "string" },
        json: { type: "string" },
        quiet: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (error) {
    fail((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(usage + "\n");
    return 0;
  }
  if (!values.scenario) fail("--scenario FILE is required");
  const int = (name: string, text: string | undefined, min: number) => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer ≥ ${min}`);
    return n;
  };
  const count = int("count", values.count, 1);
  const seed = int("seed", values.seed, 0);
  const maxConnecting = int("max-connecting", values["max-connecting"], 0);
  const staggerMs = int("stagger", values.stagger, 0);
  const scenario = loadScenario(values.scenario);
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
      process.stdout.write(`timeline: ${step.do}${step.fraction !== undefined ? ` ${step.fraction}` : ""}${step.hub ? ` ${step.hub}` : ""} at ${(at / 1000).toFixed(1)} s\n`);
    },
    onProgress: values.quiet
      ? undefined
      : (p) => {
          const line = `${(p.elapsedMs / 1000).toFixed(1).padStart(6)} s  booted ${p.booted}  connected ${p.connected} (ever ${p.everConnected})  settled ${p.done}  terminal ${p.failed}  of ${p.total}`;
          process.stdout.write(tty ? `\r${line}\u001b[K` : line + "\n");
        },
  });
  if (tty) process.stdout.write("\n");
  process.stdout.write(formatReport(report) + "\n");
  if (values.json) writeFileSync(values.json, JSON.stringify({ ...report, summary: { ...report.summary, failed: report.summary.failed.slice(0, 100) } }, null, 2));
  return report.checks.every((c) => c.ok) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`dps-fleet: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
