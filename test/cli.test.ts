/**
 * The commands as a person runs them: the demo (npm start), dps-device, dps-fleet and dps-emulator,
 * each spawned from build/ with bad arguments, --help and --version (exit codes, what goes to
 * stdout and stderr, never a stack trace); dps-device against an emulator started on its own
 * (hub names under .localhost dialled at loopback, the port options, --ca); the hint for a CA
 * that does not fit; the demo's progress on a pipe. The parser (hosts/desktop/args.ts) and the
 * connector's localhost names and certificate faults, in process.
 *
 * Every spawned process is killed by its pid if it outlives its time, and the test then fails.
 */
import test, { type ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CommandLineError, integer, parseCommandLine, usageOf } from "../hosts/desktop/args.js";
import { NodeHttpsPort } from "../hosts/desktop/https.js";
import { isLocalhostName, NodeMqttConnector, transportFaultOf } from "../hosts/desktop/mqtt.js";
import type { TransportFault } from "../modules/ports.js";
import { scenarioEmulatorConfig, scenarioGroupKey, scenarioHash, loadScenario as loadScenarioFile } from "../hosts/desktop/scenario.js";
import { startEmulator, type Emulator } from "../simulator/index.js";
import { createTestCertificates } from "./support/certs.js";

const BUILD = fileURLToPath(new URL("..", import.meta.url));
const ROOT = join(BUILD, "..");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const BIN = {
  "dps-demo": join(BUILD, "hosts", "desktop", "demo.js"),
  "dps-device": join(BUILD, "hosts", "desktop", "cli.js"),
  "dps-fleet": join(BUILD, "hosts", "desktop", "fleet-cli.js"),
  "dps-emulator": join(BUILD, "simulator", "cli.js"),
} as const;
type Command = keyof typeof BIN;
const SCENARIO = join(ROOT, "hosts", "desktop", "scenarios", "mass-boot.json");
const STACK = /^\s+at /m;

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/** Spawned processes at once: ava runs the tests of a file concurrently, and a machine has few cores. */
let running = 0;
const waiting: Array<() => void> = [];
const SLOTS = Math.max(2, availableParallelism());

/**
 * Runs a built command (once a slot is free); past `timeoutMs` from its start it is killed by its
 * pid and `timedOut` is set.
 */
async function run(command: Command, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<Ran> {
  if (running >= SLOTS) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await spawned(command, args, options);
  } finally {
    running--;
    waiting.shift()?.();
  }
}

function spawned(command: Command, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number }): Promise<Ran> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ["DPS_KEY", "DPS_GROUP_KEY", "DPS_DEBUG"]) delete env[name];
  Object.assign(env, options.env);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN[command], ...args], { cwd: options.cwd ?? ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
    }, options.timeoutMs ?? 30_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

function finished(t: ExecutionContext, r: Ran, code: number): void {
  t.false(r.timedOut, `killed after its time; stdout: ${r.stdout.slice(-500)} stderr: ${r.stderr.slice(-500)}`);
  t.is(r.code, code, `stdout: ${r.stdout.slice(-1500)}\nstderr: ${r.stderr.slice(-1500)}`);
  t.notRegex(r.stdout + r.stderr, STACK, "no stack trace");
}

// ---- usage errors, --help, --version -------------------------------------------------------

/** Files the usage errors below read: a scenario with misspelt keys, a JSON file that is no report. */
const scratch = mkdtempSync(join(tmpdir(), "cli-test-files-"));
const TYPO_SCENARIO = join(scratch, "typo.json");
writeFileSync(TYPO_SCENARIO, JSON.stringify({ name: "typo", seed: 1, devices: { count: 2, mesages: 1 }, expct: {} }));
const NOT_A_REPORT = join(scratch, "not-a-report.json");
writeFileSync(NOT_A_REPORT, '{"hello": 1}');
test.after.always(() => rmSync(scratch, { recursive: true, force: true }));
const esc = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

const usageErrors: ReadonlyArray<readonly [Command, readonly string[], RegExp]> = [
  ["dps-demo", ["--bogus"], /^dps-demo: unknown option --bogus\n/],
  ["dps-demo", ["stray"], /^dps-demo: unexpected argument "stray"/],
  ["dps-demo", ["--fleet", "abc"], /^dps-demo: --fleet must be an integer from 1 to \d+, got "abc"\n/],
  ["dps-demo", ["--fleet", "-1"], /^dps-demo: --fleet must be an integer from 1 to \d+, got "-1"\n/],
  ["dps-demo", ["--messages", "x"], /^dps-demo: --messages must be an integer from 0 to \d+, got "x"\n/],
  ["dps-demo", ["--fault", "418"], /^dps-demo: unknown --fault "418": use a status code \(400 401/],
  ["dps-demo", ["--fault"], /^dps-demo: --fault needs a value/],
  ["dps-device", ["--bogus"], /^dps-device: unknown option --bogus\n/],
  ["dps-device", ["--emulator", "stray"], /^dps-device: unexpected argument "stray"/],
  ["dps-device", ["--emulator", "--count", "-1"], /^dps-device: --count must be an integer from 1 to \d+, got "-1"\n/],
  ["dps-device", ["--emulator", "--messages", "x"], /^dps-device: --messages must be an integer from 0 to \d+, got "x"\n/],
  ["dps-device", ["--id-scope", "0ne00000001", "--dps-port", "65536"], /^dps-device: --dps-port must be an integer from 1 to 65535, got "65536"\n/],
  ["dps-device", ["--emulator", "--hub-port", "8884"], /^dps-device: --hub-port does not go with --emulator/],
  ["dps-device", ["--id-scope", "0ne00000001"], /^dps-device: give DPS_KEY \(or --key\)/],
  ["dps-device", ["--registration-id", "x"], /^dps-device: --id-scope is required/],
  ["dps-device", ["--id-scope", "0ne00000001", "--key", "abc"], /^dps-device: the key \(DPS_KEY or --key\) is not valid base64/],
  ["dps-device", ["--id-scope", "0ne00000001", "--key", "a2V5a2V5a2V5a2V5a2V5a2V5", "--ca", "/nonexistent/ca.pem"], /^dps-device: --ca: cannot read \/nonexistent\/ca\.pem \(ENOENT\)\n/],
  ["dps-device", ["--emulator", "--payload", "{"], /^dps-device: --payload is not JSON/],
  ["dps-device", ["--emulator", "--count", "2", "--hub-features"], /^dps-device: --hub-features is for one device \(leave out --count\)\n/],
  ["dps-fleet", ["--bogus"], /^dps-fleet: unknown option --bogus\n/],
  ["dps-fleet", ["stray"], /^dps-fleet: unexpected argument "stray"/],
  ["dps-fleet", [], /^dps-fleet: --scenario FILE is required\n/],
  ["dps-fleet", ["--scenario", SCENARIO, "--count", "-1"], /^dps-fleet: --count must be an integer from 1 to \d+, got "-1"\n/],
  ["dps-fleet", ["--scenario", SCENARIO, "--max-connecting", "many"], /^dps-fleet: --max-connecting must be an integer from 0 to \d+, got "many"\n/],
  ["dps-fleet", ["--scenario", "/nonexistent/scenario.json"], /^dps-fleet: --scenario: \/nonexistent\/scenario\.json: ENOENT/],
  ["dps-fleet", ["--scenario", TYPO_SCENARIO], new RegExp(`^dps-fleet: --scenario: ${esc(TYPO_SCENARIO)}: devices\\.mesages: unknown key "mesages" \\(did you mean "messages"\\?\\)\n${esc(TYPO_SCENARIO)}: expct: unknown key "expct" \\(did you mean "expect"\\?\\)\n`)],
  ["dps-fleet", ["--scenario", SCENARIO, "--json", "/nonexistent/dir/r.json"], /^dps-fleet: --json \/nonexistent\/dir\/r\.json: the folder \/nonexistent\/dir does not exist\n/],
  ["dps-fleet", ["--scenario", SCENARIO, "--json", tmpdir()], /^dps-fleet: --json .*: is a folder; give the file to write\n/],
  ["dps-fleet", ["--scenario", SCENARIO, "--shard", "3/2"], /^dps-fleet: --shard must be K\/N with 1 ≤ K ≤ N ≤ 99999 \(shard K of N\), got "3\/2"\n/],
  ["dps-fleet", ["--scenario", SCENARIO, "--shard", "2/2"], /^dps-fleet: --shard 2\/2: the shards of one fleet run against one service: give --emulator-admin URL/],
  ["dps-fleet", ["--scenario", SCENARIO, "--emulator-admin", "localhost:8090"], /^dps-fleet: --emulator-admin must be an http:\/\/ URL, got "localhost:8090"\n/],
  ["dps-fleet", ["--scenario", SCENARIO, "--emulator-admin", "http://127.0.0.1:8090", "--dps-port", "8883"], /^dps-fleet: --dps-port does not go with --emulator-admin/],
  ["dps-fleet", ["--scenario", SCENARIO, "--start-at", "soon"], /^dps-fleet: --start-at must be a time \(ISO 8601/],
  ["dps-fleet", ["--scenario", SCENARIO, "--start-at", "2001-01-01T00:00:00Z"], /^dps-fleet: --start-at 2001-01-01T00:00:00Z is past: give a moment within the next 24 h\n/],
  ["dps-fleet", ["--scenario", join(ROOT, "hosts", "desktop", "scenarios", "hub-outage.json"), "--id-scope", "0ne00000001", "--endpoint", "dps.example"], /^dps-fleet: a DPS needs the group enrollment's key in DPS_GROUP_KEY/],
  ["dps-fleet", ["merge"], /^dps-fleet merge: give the JSON reports of the shards: dps-fleet merge r1\.json r2\.json \.\.\.\n/],
  ["dps-fleet", ["merge", NOT_A_REPORT], new RegExp(`^dps-fleet merge: ${esc(NOT_A_REPORT)}: not a dps-fleet report \\(no "format": "dps-fleet-report/1"\\)`)],
  ["dps-fleet", ["merge", "/nonexistent/r1.json"], /^dps-fleet merge: \/nonexistent\/r1\.json: ENOENT/],
  ["dps-fleet", ["merge", NOT_A_REPORT, "--bogus"], /^dps-fleet merge: unknown option --bogus\n/],
  ["dps-fleet", ["emulator-config"], /^dps-fleet emulator-config: --scenario FILE is required\n/],
  ["dps-emulator", ["--bogus"], /^dps-emulator: unknown option --bogus\n/],
  ["dps-emulator", ["stray"], /^dps-emulator: unexpected argument "stray"/],
  ["dps-emulator", ["--seed", "x"], /^dps-emulator: --seed must be an integer, got "x"\n/],
  ["dps-emulator", ["--admin-port", "-1"], /^dps-emulator: --admin-port must be an integer from 0 to 65535, got "-1"\n/],
  ["dps-emulator", ["--fault", "{"], /^dps-emulator: --fault #1 is not JSON/],
  ["dps-emulator", ["--fault", '{"step":"register","status":200}'], /^dps-emulator: --fault #1\.status: must be one of 400/],
  ["dps-emulator", ["--log-level", "loud"], /^dps-emulator: --log-level must be one of error, warn, info, debug, got "loud"\n/],
];

for (const [command, args, message] of usageErrors) {
  test(`${command} ${args.join(" ")}: a usage error, exit 2, the message and the usage on stderr, nothing started`, async (t) => {
    const r = await run(command, args);
    finished(t, r, 2);
    t.regex(r.stderr, message);
    t.regex(r.stderr, /\nusage: /);
    t.is(r.stdout, "", "nothing on stdout: nothing started");
  });
}

for (const command of Object.keys(BIN) as Command[]) {
  for (const flag of command === "dps-demo" ? ["--help", "-h"] : ["--help"]) {
    test(`${command} ${flag}: the usage on stdout, exit 0`, async (t) => {
      const r = await run(command, [flag]);
      finished(t, r, 0);
      t.regex(r.stdout, /^usage: /);
      t.regex(r.stdout, /\n {2}-h, --help +this text\n {2}--version +print the version and exit\n/);
      t.is(r.stderr, "");
    });
  }
  test(`${command} --version: "${command} ${VERSION}", exit 0`, async (t) => {
    const r = await run(command, ["--version"]);
    finished(t, r, 0);
    t.is(r.stdout, `${command} ${VERSION}\n`);
    t.is(r.stderr, "");
  });
}

test("dps-emulator: an error after the options are checked (a port in use) is one line and exit 1", async (t) => {
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
  t.teardown(() => busy.close());
  const taken = (busy.address() as { port: number }).port;
  const stateDir = mkdtempSync(join(tmpdir(), "cli-test-"));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  const ports = ["--dps-port", "0", "--dps-tcp-port", "0", "--hub-port", "0", "--hub-tcp-port", "0", "--https-port", "0", "--hub-https-port", "0"];
  const r = await run("dps-emulator", ["--state-dir", stateDir, "--log-level", "error", ...ports, "--admin-port", String(taken)]);
  finished(t, r, 1);
  t.regex(r.stderr, new RegExp(`^dps-emulator: cannot start: .*EADDRINUSE.*${taken}\\n$`));
});

// ---- dps-device against an emulator started on its own ------------------------------------

const stateDir = mkdtempSync(join(tmpdir(), "cli-test-emulator-"));
let emulatorStarted: Promise<Emulator> | undefined;
/** One emulator for the tests below, on ephemeral ports, as `dps-emulator` would run it. */
function emulator(): Promise<Emulator> {
  emulatorStarted ??= startEmulator({
    stateDir,
    seed: 11,
    config: { idScope: "0ne0000C1E5", hubs: [{ hostName: "hub-1.azure-devices.localhost" }], retryAfterSeconds: 0 },
  });
  return emulatorStarted;
}
test.after.always(async () => {
  if (emulatorStarted) await (await emulatorStarted).stop();
  rmSync(stateDir, { recursive: true, force: true });
});

function deviceArgs(e: Emulator, registrationId: string): string[] {
  return [
    "--id-scope", e.idScope,
    "--registration-id", registrationId,
    "--endpoint", "global.azure-devices-provisioning.localhost",
    "--dps-port", String(e.endpoints.dps.tlsPort),
    "--hub-port", String(e.endpoints.hub.tlsPort),
    "--lookup-port", String(e.endpoints.https.port),
  ];
}

function enroll(e: Emulator, registrationId: string): string {
  const key = randomBytes(32).toString("base64");
  e.addIndividualEnrollment({ registrationId, primaryKey: key });
  return key;
}

test("dps-device: an emulator started on its own, its hub name under .localhost dialled at loopback, the ports and --ca given", async (t) => {
  const e = await emulator();
  const key = enroll(e, "cli-apart-001");
  const r = await run("dps-device", [...deviceArgs(e, "cli-apart-001"), "--ca", e.caPath, "--messages", "2", "--interval", "100", "--timeout", "30000"], { env: { DPS_KEY: key }, timeoutMs: 45_000 });
  finished(t, r, 0);
  t.regex(r.stdout, /\[cli-apart-001\] assigned to hub-1\.azure-devices\.localhost as cli-apart-001 \(from dps, initialAssignment\)\n/);
  t.regex(r.stdout, /\[cli-apart-001\] hub hub-1\.azure-devices\.localhost connected\n/);
  t.regex(r.stdout, /\[cli-apart-001\] 2 message\(s\) acknowledged\n/);
  t.is(e.telemetry("cli-apart-001").length, 2);
  t.is(r.stderr, "");
});

test("dps-device --hub-features: answers a method, acknowledges a desired property, prints a C2D message, and stays until --timeout (exit 0)", async (t) => {
  const e = await emulator();
  const key = enroll(e, "cli-features-001");
  t.timeout(120_000);
  // Spawned at once, not queued behind the other commands (run() takes turns): the backend's calls
  // below are timed against this process. Generous: a loaded machine starts node slowly.
  const running = spawned("dps-device", [...deviceArgs(e, "cli-features-001"), "--ca", e.caPath, "--hub-features", "--messages", "1", "--timeout", "45000"], { env: { DPS_KEY: key }, timeoutMs: 90_000 });
  let answer: { status: number; payload: unknown } | undefined;
  for (let i = 0; i < 400 && !answer; i++) {
    answer = await e.invokeMethod("cli-features-001", { methodName: "echo", payload: { hello: 1 }, responseTimeoutInSeconds: 5 }).catch(() => undefined);
    if (!answer) await new Promise((r) => setTimeout(r, 100));
  }
  t.deepEqual(answer, { status: 200, payload: { hello: 1 } });
  e.updateTwin("cli-features-001", { properties: { desired: { interval: 30 } } });
  e.sendC2D("cli-features-001", { body: "led on", properties: { color: "red" }, messageId: "cli-m1" });
  const r = await running;
  finished(t, r, 0);
  t.regex(r.stdout, /\[cli-features-001\] method answered name echo rid \d+ status 200\n/);
  t.regex(r.stdout, /\[cli-features-001\] desired version \d+: \{"interval":30\}\n/);
  t.regex(r.stdout, /\[cli-features-001\] cloud-to-device cli-m1: led on \{"color":"red"\}\n/);
  t.regex(r.stdout, /stopping after 45 s \(--timeout\)\n$/);
  t.like((e.twin("cli-features-001") as { properties: { reported: Record<string, unknown> } }).properties.reported, { interval: { value: 30, ac: 200 } });
});

test("dps-device: without the emulator's CA, the fault says certificate verification failed and the hint says to pass --ca", async (t) => {
  const e = await emulator();
  const key = enroll(e, "cli-untrusted-001");
  const r = await run("dps-device", [...deviceArgs(e, "cli-untrusted-001"), "--timeout", "3000"], { env: { DPS_KEY: key } });
  finished(t, r, 1);
  const hint = "the server's certificate is not trusted (self-signed certificate in certificate chain): pass the CA that signed it with --ca (the emulator's is .cache/emulator/ca.pem)";
  t.is(r.stderr, `dps-device: ${hint}\n`, "the hint once, on stderr");
  t.regex(r.stdout, /dps retrying attempt 1 fault tls .* certificate verification failed: self-signed certificate in certificate chain \(SELF_SIGNED_CERT_IN_CHAIN/);
  t.true(r.stdout.endsWith(`[cli-untrusted-001] timed out after 3 s; ${hint}\n`), r.stdout.slice(-400));
});

test("dps-device: with a CA that did not sign the emulator's certificate, the hint names the file", async (t) => {
  const e = await emulator();
  const key = enroll(e, "cli-wrong-ca-001");
  const dir = mkdtempSync(join(tmpdir(), "cli-test-ca-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const wrong = join(dir, "other-ca.pem");
  writeFileSync(wrong, (await createTestCertificates({ caName: "not the emulator's CA" })).caCert);
  const r = await run("dps-device", [...deviceArgs(e, "cli-wrong-ca-001"), "--ca", wrong, "--timeout", "3000"], { env: { DPS_KEY: key } });
  finished(t, r, 1);
  t.regex(r.stderr, new RegExp(`^dps-device: the server's certificate is not trusted \\(self-signed certificate in certificate chain\\): the CA in ${wrong.replace(/[.]/g, "\\.")} did not sign it; pass the one that did with --ca`));
  t.regex(r.stdout, /timed out after 3 s; the server's certificate is not trusted/);
});

// ---- the connector and the HTTPS port: localhost names, certificate faults -----------------

test("isLocalhostName: localhost and the names under it (RFC 6761), nothing else", (t) => {
  for (const name of ["localhost", "LOCALHOST", "localhost.", "hub-1.azure-devices.localhost", "global.azure-devices-provisioning.localhost", "a.b.Localhost."]) t.true(isLocalhostName(name), name);
  for (const name of ["localhost.net", "mylocalhost", "hub-1.azure-devices.net", "127.0.0.1", "localhost.localdomain", ""]) t.false(isLocalhostName(name), name);
});

function closed(connect: (onClose: (fault: TransportFault) => void, onConnack: (code: number) => void) => void): Promise<{ fault?: TransportFault; connack?: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("neither CONNACK nor a fault within 15 s")), 15_000);
    connect(
      (fault) => (clearTimeout(timer), resolve({ fault })),
      (connack) => (clearTimeout(timer), resolve({ connack })),
    );
  });
}

test("NodeMqttConnector: hub-1.azure-devices.localhost is dialled at 127.0.0.1 without a resolver", async (t) => {
  const e = await emulator();
  const connector = new NodeMqttConnector({ tls: false });
  let session: { close(): void } | undefined;
  const outcome = await closed((onClose, onConnack) => {
    session = connector.connect(
      { host: "hub-1.azure-devices.localhost", port: e.endpoints.hub.tcpPort, clientId: "nobody", username: "hub-1.azure-devices.localhost/nobody/?api-version=2021-04-12", password: "x", keepAliveSeconds: 0, cleanSession: true },
      { onConnack, onClose, onSuback: () => {}, onMessage: () => {}, onPuback: () => {} },
    );
  });
  session?.close();
  t.is(outcome.fault, undefined, outcome.fault?.message);
  t.is(typeof outcome.connack, "number", "the emulator's hub answered (it refuses an unknown device)");
});

test("NodeMqttConnector and NodeHttpsPort: an untrusted certificate is fault tls, saying what failed and for which host", async (t) => {
  const e = await emulator();
  const connector = new NodeMqttConnector();
  const outcome = await closed((onClose, onConnack) => {
    connector.connect(
      { host: "hub-1.azure-devices.localhost", port: e.endpoints.hub.tlsPort, clientId: "c", username: "u", password: "p", keepAliveSeconds: 0, cleanSession: true },
      { onConnack, onClose, onSuback: () => {}, onMessage: () => {}, onPuback: () => {} },
    );
  });
  t.is(outcome.fault?.kind, "tls");
  t.is(outcome.fault?.message, "certificate verification failed: self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN; server hub-1.azure-devices.localhost)");

  const port = new NodeHttpsPort();
  const fault = await new Promise<TransportFault | undefined>((resolve) => {
    port.request(
      { method: "POST", host: "global.azure-devices-provisioning.localhost", port: e.endpoints.https.port, path: "/x", headers: {}, body: new Uint8Array(0) },
      () => resolve(undefined),
      resolve,
    );
  });
  t.is(fault?.kind, "tls");
  t.is(fault?.message, "certificate verification failed: self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN; server global.azure-devices-provisioning.localhost)");
});

test("transportFaultOf: certificate verification results are kind tls with the cause and host; other TLS errors keep their code", (t) => {
  const fault = (code: string, message: string) => transportFaultOf(Object.assign(new Error(message), { code }), true, "dps.example");
  t.deepEqual(fault("CERT_HAS_EXPIRED", "certificate has expired"), { kind: "tls", message: "certificate verification failed: certificate has expired (CERT_HAS_EXPIRED; server dps.example)" });
  t.deepEqual(fault("ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP does not match certificate's altnames: ..."), {
    kind: "tls",
    message: "certificate verification failed: its names do not include dps.example (ERR_TLS_CERT_ALTNAME_INVALID; server dps.example)",
  });
  t.deepEqual(fault("ERR_SSL_WRONG_VERSION_NUMBER", "wrong version number"), { kind: "tls", message: "ERR_SSL_WRONG_VERSION_NUMBER: wrong version number" });
  t.deepEqual(fault("ECONNRESET", "socket hang up"), { kind: "tls", message: "ECONNRESET: socket hang up" });
  t.is(transportFaultOf(Object.assign(new Error("x"), { code: "ECONNREFUSED" })).kind, "refused");
});

// ---- the parser ----------------------------------------------------------------------------

const spec = {
  name: "probe",
  synopsis: "probe [options]",
  options: {
    count: { type: "string", value: "N", help: "how many" },
    fault: { type: "string", multiple: true, value: "JSON", help: "repeatable" },
    quiet: { type: "boolean", help: "hush" },
  },
} as const;

test("parseCommandLine: values, inline values, negative numbers, repeats; every mistake a CommandLineError", (t) => {
  t.deepEqual(parseCommandLine(spec, ["--count", "-1", "--fault", "a", "--fault=b", "--quiet"]), { count: "-1", fault: ["a", "b"], quiet: true });
  t.deepEqual(parseCommandLine(spec, ["--count=3", "--count", "4"]), { count: "4" }, "the last wins");
  t.deepEqual(parseCommandLine(spec, ["-h"]), { help: true });
  const wrong = (argv: string[], message: string) => t.throws(() => parseCommandLine(spec, argv), { instanceOf: CommandLineError, message }, argv.join(" "));
  wrong(["--cuont", "1"], "unknown option --cuont (did you mean --count?)");
  wrong(["-x"], "unknown option -x");
  wrong(["word"], 'unexpected argument "word": this command takes options only (see the usage below)');
  wrong(["--", "--count"], 'unexpected argument "--"');
  wrong(["--count"], "--count needs a value (--count N)");
  wrong(["--count", "--quiet"], "--count needs a value (--count N)");
  wrong(["--quiet=1"], "--quiet takes no value");
  t.throws(() => integer("count", "1.5", { min: 1, max: 9 }), { message: '--count must be an integer from 1 to 9, got "1.5"' });
  t.throws(() => integer("count", "0x10", { min: 0 }), { message: '--count must be an integer ≥ 0, got "0x10"' });
  t.is(integer("count", undefined, { min: 1 }, 7), 7);
  t.is(integer("count", "+12", { min: 1 }), 12);
  t.is(usageOf(spec), ["usage: probe [options]", "  --count N     how many", "  --fault JSON  repeatable", "  --quiet       hush", "  -h, --help    this text", "  --version     print the version and exit"].join("\n"));
});

// ---- the demo on a pipe ----------------------------------------------------------------------

test("dps-demo --fleet on a pipe: no carriage returns, progress lines at most every 5 s", async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), "cli-test-demo-"));
  t.teardown(() => rmSync(cwd, { recursive: true, force: true }));
  const r = await run("dps-demo", ["--fleet", "20", "--messages", "1", "--seed", "3"], { cwd, timeoutMs: 50_000 });
  finished(t, r, 0);
  t.false(r.stdout.includes("\r"), "no \\r when stdout is not a terminal");
  t.regex(r.stdout, /^fleet: 20\/20 connected/m);
  const seconds = Number(/ in ([\d.]+) s\n/.exec(r.stdout)?.[1] ?? NaN);
  const progress = r.stdout.split("\n").filter((line) => /^ {2}\d+\.\d s: \d+ booted/.test(line)).length;
  t.true(progress <= Math.floor(seconds / 5) + 1, `${progress} progress lines in ${seconds} s`);
});

// ---- dps-fleet: shards of one run against one emulator started on its own, and their merge -------

test("dps-fleet --shard 1/2 and 2/2 against one emulator (--emulator-admin), then dps-fleet merge: one summary of the fleet; a shard of another run is refused (exit 2); --id-scope/--endpoint runs against any DPS", async (t) => {
  const scenario = loadScenarioFile(SCENARIO);
  const dir = mkdtempSync(join(tmpdir(), "cli-test-shards-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const e = await startEmulator({ stateDir: join(dir, "emulator"), seed: 3, config: scenarioEmulatorConfig(scenario, { count: 40 }) });
  t.teardown(() => e.stop());
  const shard = (k: number) =>
    run("dps-fleet", ["--scenario", SCENARIO, "--count", "40", "--stagger", "500", "--shard", `${k}/2`, "--emulator-admin", e.endpoints.admin.url, "--json", join(dir, `r${k}.json`), "--quiet"], { timeoutMs: 60_000 });
  const [one, two] = await Promise.all([shard(1), shard(2)]);
  finished(t, one, 0);
  finished(t, two, 0);
  t.regex(one.stdout, /^scenario mass-boot: 20 devices \(shard 1\/2\), seed 1\n/);
  t.regex(one.stdout, /\nrun: count 40 \(--count\), seed 1 \(the scenario's seed\), stagger 500 ms \(--stagger\), max-connecting 256 \(the scenario's host\.maxConnecting\), messages 1, timeout 600000 ms, shard 1\/2 \(20 devices here\); scenario sha256 [0-9a-f]{16}\n/);
  t.regex(two.stdout, new RegExp(`\\nreproduce: dps-fleet --scenario ${esc(SCENARIO)} --count 40 --seed 1 --stagger 500 --max-connecting 256 --shard 2/2 --emulator-admin ${esc(e.endpoints.admin.url)}\\n`));
  t.is(e.registrations().length, 40, "the emulator registered the whole fleet");

  const merged = await run("dps-fleet", ["merge", join(dir, "r1.json"), join(dir, "r2.json"), "--json", join(dir, "merged.json")]);
  finished(t, merged, 0);
  t.regex(merged.stdout, /^merged 2 shards of scenario mass-boot: 40 devices, seed 1, against the shared emulator at http/);
  t.regex(merged.stdout, /\nfleet: 40\/40 connected \(40 at the end\), 40 delivered all telemetry/);
  t.regex(merged.stdout, /\nPASS every device connected: 40\/40 connected\n/);
  t.notRegex(merged.stdout, /\nFAIL /);
  const report = JSON.parse(readFileSync(join(dir, "merged.json"), "utf8")) as { format: string; summary: { total: number }; shards: unknown[] };
  t.is(report.format, "dps-fleet-report/1");
  t.is(report.summary.total, 40);
  t.is(report.shards.length, 2);

  const other = JSON.parse(readFileSync(join(dir, "r2.json"), "utf8")) as { run: { seed: number } };
  other.run.seed = 2;
  writeFileSync(join(dir, "other.json"), JSON.stringify(other));
  const refused = await run("dps-fleet", ["merge", join(dir, "r1.json"), join(dir, "other.json")]);
  finished(t, refused, 2);
  t.regex(refused.stderr, new RegExp(`^dps-fleet merge: ${esc(join(dir, "other.json"))} is not a shard of the same run as ${esc(join(dir, "r1.json"))}: seed 2, not 1\\n`));

  // The same fleet as a DPS sees it: no admin API, the group key from DPS_GROUP_KEY.
  const direct = await run(
    "dps-fleet",
    ["--scenario", SCENARIO, "--count", "10", "--stagger", "200", "--quiet", "--id-scope", e.idScope, "--endpoint", "global.azure-devices-provisioning.localhost",
      "--dps-port", String(e.endpoints.dps.tlsPort), "--hub-port", String(e.endpoints.hub.tlsPort), "--lookup-port", String(e.endpoints.https.port), "--ca", e.caPath],
    { env: { DPS_GROUP_KEY: scenarioGroupKey(scenarioHash(scenario), scenario.seed) }, timeoutMs: 60_000 },
  );
  finished(t, direct, 0);
  t.regex(direct.stdout, /against DPS global\.azure-devices-provisioning\.localhost:\d+ \(id scope 0ne00F1EE70\)\n/);
  t.regex(direct.stdout, /\nreproduce: DPS_GROUP_KEY=… dps-fleet --scenario .* --id-scope 0ne00F1EE70 --endpoint global\.azure-devices-provisioning\.localhost --dps-port \d+ --hub-port \d+ --lookup-port \d+ --ca /);
  t.regex(direct.stdout, /\nfleet: 10\/10 connected/);
});

// ---- dps-fleet --dashboard ---------------------------------------------------------------

test("dps-fleet --dashboard-port 0: prints the dashboard's URL, serves the page and its snapshot during the run, and ends with the run", async (t) => {
  const child = spawn(process.execPath, [BIN["dps-fleet"], "--scenario", SCENARIO, "--count", "20", "--stagger", "4000", "--in-process", "--quiet", "--dashboard-port", "0"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const killer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, "SIGKILL"), 60_000);
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const m = /^dashboard: (http:\/\/127\.0\.0\.1:\d+\/\S*)$/m.exec(stdout);
      if (m) resolve(m[1]);
    });
    child.on("close", () => reject(new Error(`exited before printing the dashboard's URL: ${stdout} ${stderr}`)));
  });
  const base = new URL(url);
  const page = await fetch(new URL("/dashboard", base));
  t.is(page.status, 200);
  t.regex(await page.text(), /<html/i);
  const state = await fetch(new URL("/dashboard/state", base));
  t.is(state.status, 200);
  t.is(typeof (await state.json()), "object");
  const code = await exited;
  clearTimeout(killer);
  t.is(code, 0, `stdout: ${stdout.slice(-1500)}\nstderr: ${stderr.slice(-1500)}`);
  t.notRegex(stdout + stderr, STACK);
  await t.throwsAsync(fetch(new URL("/dashboard/state", base)), undefined, "the dashboard closes with the command");
});
