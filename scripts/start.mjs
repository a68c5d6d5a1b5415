// The README's demo command: installs what is missing (npm packages only), builds what changed,
// then runs the demo (hosts/desktop/demo.ts): the emulator on loopback, a device that provisions,
// caches its assignment, sends telemetry, reboots and warm-starts. Extra arguments go to the demo.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, BuildError, say } from "./build.mjs";
import { ensureNodeModules } from "./setup.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
mkdirSync(join(root, ".cache"), { recursive: true });
try {
  ensureNodeModules();
} catch (error) {
  say(`installing the npm packages failed (${error.message.split("\n")[0]}); its output is above`);
  process.exit(1);
}
try {
  build();
} catch (error) {
  if (!(error instanceof BuildError)) throw error;
  say(error.message);
  process.exit(1);
}
try {
  execFileSync(process.execPath, [join(root, "build", "hosts", "desktop", "demo.js"), ...process.argv.slice(2)], { stdio: "inherit", cwd: root });
} catch (error) {
  process.exit(typeof error.status === "number" ? error.status : 1);
}
