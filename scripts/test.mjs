// The README's test command: installs what is missing, builds, then runs every ava test
// (Node tier, XS tier, emulator, end to end). Extra arguments go to ava.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setup } from "./setup.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
mkdirSync(join(root, ".cache"), { recursive: true });
setup();
const { build } = await import("./build.mjs");
build();
try {
  execFileSync(process.execPath, [join(root, "node_modules", "ava", "entrypoints", "cli.mjs"), ...process.argv.slice(2)], {
    stdio: "inherit",
    cwd: root,
  });
} catch (error) {
  process.exit(typeof error.status === "number" ? error.status : 1);
}
