// The README's demo command: installs what is missing (npm packages only), builds, then runs the
// demo (hosts/desktop/demo.ts): the emulator on loopback, a device that provisions, caches its
// assignment, sends telemetry, reboots and warm-starts. Extra arguments go to the demo.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureNodeModules } from "./setup.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
mkdirSync(join(root, ".cache"), { recursive: true });
ensureNodeModules();
const { build } = await import("./build.mjs");
build();
try {
  execFileSync(process.execPath, [join(root, "build", "hosts", "desktop", "demo.js"), ...process.argv.slice(2)], { stdio: "inherit", cwd: root });
} catch (error) {
  process.exit(typeof error.status === "number" ? error.status : 1);
}
