// What every `npm run` of a built entry goes through:
//   node [node options] scripts/run.mjs ENTRY.js [arguments]
// Says in one line to run `npm install` when node_modules is missing (and exits 1), builds what
// changed (scripts/build.mjs: nothing, usually, in well under a second), then runs ENTRY in this
// process with `arguments` as its process.argv.slice(2) — exactly as `node ENTRY.js arguments`
// would, signals and exit codes included; node options (e.g. --max-old-space-size) go before
// scripts/run.mjs. Uses only Node built-ins so that it runs on a fresh clone.
import { existsSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { build, BuildError, nodeModulesProblem, nodeModulesStale, root, say } from "./build.mjs";

const [target, ...args] = process.argv.slice(2);
if (!target) {
  say("usage: node [node options] scripts/run.mjs ENTRY.js [arguments]");
  process.exit(2);
}
const problem = nodeModulesProblem();
if (problem) {
  say(`run "npm install" first (${problem})`);
  process.exit(1);
}
if (nodeModulesStale()) say('package-lock.json is newer than node_modules: run "npm install" if this fails');
try {
  build();
} catch (error) {
  if (!(error instanceof BuildError)) throw error;
  say(error.message);
  process.exit(1);
}
const entry = resolve(root, target);
if (!existsSync(entry)) {
  say(`${target} does not exist after the build (is its source in a directory tsconfig.json includes?)`);
  process.exit(1);
}
const real = realpathSync(entry);
process.argv = [process.argv[0], real, ...args];
await import(pathToFileURL(real).href);
