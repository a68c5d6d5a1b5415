// The dps-emulator command: starts from a config file with --fault rules, prints its endpoints,
// serves, and exits cleanly on SIGTERM (sent to its own pid).
import test from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Emulator } from "../../simulator/index.js";
import { admin, dpsDevice, keyFor, tempStateDir } from "./helpers.js";

const CLI = fileURLToPath(new URL("../../simulator/cli.js", import.meta.url));
const EXAMPLE = fileURLToPath(new URL("../../../simulator/emulator.example.json", import.meta.url));

interface Started {
  child: ChildProcess;
  stdout: string;
  exit: Promise<number | null>;
}

function run(args: string[]): Promise<Started> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`no ready banner; stderr: ${stderr}`));
    }, 40_000); // a first start generates the CA; CI machines can be slow
    child.stdout?.on("data", (c: Buffer) => {
      stdout += c.toString();
      if (/faults\s+\d+/.test(stdout)) {
        clearTimeout(timer);
        resolve({ child, stdout, exit });
      }
    });
    child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before ready: ${stderr}`));
    });
  });
}

function field(stdout: string, pattern: RegExp): string {
  const m = pattern.exec(stdout);
  if (!m) throw new Error(`no ${pattern} in ${stdout}`);
  return m[1];
}

test("cli: starts from a config file with --fault rules, prints its endpoints, stops on SIGTERM", async (t) => {
  const stateDir = tempStateDir();
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const config = join(stateDir, "config.json");
  writeFileSync(config, JSON.stringify({ idScope: "0ne00000cli", hubs: [{ hostName: "hub-1.azure-devices.localhost" }], retryAfterSeconds: 0, enrollments: { individual: [{ registrationId: "cli-dev", primaryKey: keyFor("cli-dev") }] } }));
  const ports = ["--dps-port", "0", "--dps-tcp-port", "0", "--hub-port", "0", "--hub-tcp-port", "0", "--https-port", "0", "--hub-https-port", "0", "--admin-port", "0"];
  const started = await run(["--config", config, "--state-dir", stateDir, "--seed", "5", "--log-level", "warn", ...ports, "--max-connections", "50", "--packet-timeout-ms", "5000", "--max-idle-ms", "60000", "--fault", '{"step":"register","registrationId":"cli-dev","status":500,"times":1}']);
  t.teardown(() => {
    if (started.child.exitCode === null) started.child.kill("SIGKILL");
  });
  t.is(field(started.stdout, /idScope\s+(\S+)/), "0ne00000cli");
  t.is(field(started.stdout, /CA\s+(\S+)/), join(stateDir, "ca.pem"));
  t.is(field(started.stdout, /seed\s+(\S+)/), "5");
  const adminUrl = field(started.stdout, /Admin\s+(\S+)/);
  const tcpPort = Number(field(started.stdout, /DPS\s+mqtts:\/\/\S+:\d+\s+mqtt:\/\/[^:]+:(\d+)/));
  const handle = { endpoints: { admin: { url: adminUrl }, dps: { tcpPort } }, idScope: "0ne00000cli" } as unknown as Emulator;
  t.is((await admin(handle, "GET", "/faults")).json.length, 1);
  const device = await dpsDevice(handle, "cli-dev", keyFor("cli-dev"));
  t.is((await device.register()).status, 500);
  t.is((await device.register()).status, 202);
  device.client.end();
  started.child.kill("SIGTERM");
  t.is(await started.exit, 0);
});

test("cli: a bad option, a stray word or a bad fault rule exits 2 with the message and the usage; --help, --version exit 0; never a stack trace", async (t) => {
  const once = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      const timer = setTimeout(() => {
        if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
        reject(new Error(`dps-emulator ${args.join(" ")} still running after 30 s`));
      }, 30_000);
      child.stdout?.on("data", (c: Buffer) => (stdout += c.toString()));
      child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  const noStack = (r: { stdout: string; stderr: string }) => t.notRegex(r.stdout + r.stderr, /^\s+at /m);
  const unknown = await once(["--frobnicate"]);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /^dps-emulator: unknown option --frobnicate\nusage: dps-emulator/);
  noStack(unknown);
  const stray = await once(["--seed", "1", "extra"]);
  t.is(stray.code, 2);
  t.regex(stray.stderr, /^dps-emulator: unexpected argument "extra"/);
  const badFault = await once(["--fault", '{"step":"register","status":200}']);
  t.is(badFault.code, 2);
  t.regex(badFault.stderr, /status/);
  noStack(badFault);
  const badLimit = await once(["--max-connections", "0"]);
  t.is(badLimit.code, 2);
  t.regex(badLimit.stderr, /^dps-emulator: --max-connections must be/);
  const badConfig = await once(["--config", "/nonexistent/config.json", "--admin-port", "0"]);
  t.is(badConfig.code, 1);
  t.regex(badConfig.stderr, /^dps-emulator: cannot read config file[^\n]*\n$/);
  noStack(badConfig);
  const help = await once(["-h"]);
  t.is(help.code, 0);
  t.regex(help.stdout, /^usage: dps-emulator \[options\]\n[\s\S]*--dps-port N/);
  const version = await once(["--version"]);
  t.is(version.code, 0);
  t.regex(version.stdout, /^dps-emulator \d+\.\d+\.\d+\n$/);
});

test("cli: the shipped example config is valid", async (t) => {
  const stateDir = tempStateDir();
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const ports = ["--dps-port", "0", "--dps-tcp-port", "0", "--hub-port", "0", "--hub-tcp-port", "0", "--https-port", "0", "--hub-https-port", "0", "--admin-port", "0"];
  const started = await run(["--config", EXAMPLE, "--state-dir", stateDir, "--log-level", "error", ...ports]);
  t.teardown(() => {
    if (started.child.exitCode === null) started.child.kill("SIGKILL");
  });
  t.is(field(started.stdout, /idScope\s+(\S+)/), "0ne00000001");
  t.regex(started.stdout, /hub-1\.azure-devices\.localhost, hub-2\.azure-devices\.localhost/);
  started.child.kill("SIGINT");
  t.is(await started.exit, 0);
});
