// The README's test command: installs what is missing, builds what changed, then runs every ava
// test (Node tier, XS tier, emulator, end to end). Extra arguments go to ava.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, BuildError, say } from "./build.mjs";
import { setup } from "./setup.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
mkdirSync(join(root, ".cache"), { recursive: true });
try {
  setup();
} catch (error) {
  say(`setup failed (${error.message.split("\n")[0]}); its output is above`);
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
  execFileSync(process.execPath, [join(root, "node_modules", "ava", "entrypoints", "cli.mjs"), ...process.argv.slice(2)], {
    stdio: "inherit",
    cwd: root,
  });
} catch (error) {
  process.exit(typeof error.status === "number" ? error.status : 1);
}
