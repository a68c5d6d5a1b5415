// Installs everything the tests, the demo and the benchmarks need, and nothing twice:
//   - the npm packages (npm ci, when node_modules is missing or older than the lock file);
//   - the XS engine as a command-line `xsnap`, built from the sources in the npm package
//     @agoric/xsnap (fetched with `npm pack`, so no install script of a dependency is relied on);
//   - Debian's mosquitto, the real MQTT broker some tests run against (when root and missing);
//   - Debian's chromium, the headless browser the dashboard test drives (when root and missing).
// Uses only Node built-ins so that it runs on a fresh clone.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const XSNAP_VERSION = "0.15.0";
export const xsnapDir = join(root, ".cache", "xsnap", XSNAP_VERSION);
export const xsnapBin = join(xsnapDir, "package", "moddable", "build", "bin", "lin", "release", "xsnap");

function run(cmd, args, options = {}) {
  execFileSync(cmd, args, { stdio: "inherit", cwd: root, ...options });
}

function say(line) {
  process.stdout.write(`setup: ${line}\n`);
}

export function ensureNodeModules() {
  const marker = join(root, "node_modules", ".package-lock.json");
  const lock = join(root, "package-lock.json");
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return;
  say("installing npm packages (npm ci)");
  run("npm", ["ci", "--no-audit", "--no-fund"]);
}

export function ensureXsnap() {
  if (existsSync(xsnapBin)) return xsnapBin;
  say(`building the XS engine (xsnap) from @agoric/xsnap@${XSNAP_VERSION}`);
  mkdirSync(xsnapDir, { recursive: true });
  if (!existsSync(join(xsnapDir, "package"))) {
    run("npm", ["pack", `@agoric/xsnap@${XSNAP_VERSION}`, "--silent", "--pack-destination", xsnapDir]);
    const tarball = readdirSync(xsnapDir).find((name) => name.endsWith(".tgz"));
    if (!tarball) throw new Error(`npm pack left no tarball in ${xsnapDir}`);
    run("tar", ["xzf", tarball], { cwd: xsnapDir });
  }
  const makeDir = join(xsnapDir, "package", "xsnap-native", "xsnap", "makefiles", "lin");
  run("make", ["-f", "xsnap.mk", `MODDABLE=${join(xsnapDir, "package", "moddable")}`, "GOAL=release", "-j2"], {
    cwd: makeDir,
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (!existsSync(xsnapBin)) throw new Error(`the xsnap build finished but ${xsnapBin} is missing`);
  return xsnapBin;
}

function hasCommand(name) {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export function ensureMosquitto() {
  if (hasCommand("mosquitto") || existsSync("/usr/sbin/mosquitto")) return true;
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    say("mosquitto is missing and this is not root: the broker tests will be skipped");
    return false;
  }
  say("installing Debian's mosquitto");
  run("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"] });
  run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "mosquitto"], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  return true;
}

// The dashboard test drives it with playwright-core; playwright's own browser download does not
// work here (no network but the package registries), so Debian's package is the browser.
export const chromiumBin = "/usr/bin/chromium";

export function ensureChromium() {
  if (existsSync(chromiumBin)) return true;
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    say(`chromium is missing (${chromiumBin}) and this is not root: the dashboard's browser test will be skipped`);
    return false;
  }
  say("installing Debian's chromium (for the dashboard's browser test)");
  run("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"] });
  run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "chromium"], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  return true;
}

export function setup({ xs = true, broker = true, browser = true } = {}) {
  ensureNodeModules();
  if (xs) ensureXsnap();
  if (broker) ensureMosquitto();
  if (browser) ensureChromium();
  writeFileSync(join(root, ".cache", "setup.json"), JSON.stringify({ xsnap: xs ? xsnapBin : null }, null, 2));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  mkdirSync(join(root, ".cache"), { recursive: true });
  setup();
}
