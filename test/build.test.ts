/**
 * scripts/build.mjs and scripts/run.mjs: a tsc step runs only when something it read changed (and
 * never skips after a failure), and every npm script on a clone without node_modules either is one
 * that installs (setup, start, test) or says in one line to run `npm install`. The build runs on a
 * fake tree with a fake tsc, so this takes well under a second.
 */
import test from "ava";
import { spawn } from "node:child_process";
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const root = resolve(import.meta.dirname, "..", "..");

interface Step {
  id: string;
  project: string;
  emits: boolean;
}
interface BuildModule {
  build(options: { at: string; force?: boolean; tsc: (at: string, step: Step, buildInfo: string) => void; log: (line: string) => void }): string[];
  BuildError: new (message: string) => Error;
  stampPath(at: string, step: Step): string;
  programFiles(at: string, step: Step): string[] | null;
  STEPS: Step[];
}
const scripts = (await import(pathToFileURL(join(root, "scripts", "build.mjs")).href)) as BuildModule;

// What each fake program reads: the top tsconfig follows the tests' imports into hosts/moddable/.
const PROGRAMS: Record<string, string[]> = {
  modules: ["modules/a.ts", "modules/types.d.ts"],
  node: ["modules/a.ts", "modules/types.d.ts", "hosts/desktop/d.ts", "hosts/moddable/m.ts", "test/t.test.ts"],
  moddable: ["modules/a.ts", "hosts/moddable/m.ts"],
  example: ["modules/a.ts", "hosts/moddable/m.ts", "examples/minimal/main.ts"],
  "example-hub-features": ["modules/a.ts", "hosts/moddable/m.ts", "examples/hub-features/main.ts"],
};

function fakeTree(): string {
  const at = mkdtempSync(join(tmpdir(), "dps-build-"));
  const files: Record<string, string> = {
    "package.json": '{ "type": "module" }',
    "package-lock.json": "{}",
    "tsconfig.base.json": "{}",
    "tsconfig.json": "{}",
    "modules/tsconfig.json": "{}",
    "hosts/moddable/tsconfig.json": "{}",
    "examples/minimal/tsconfig.json": "{}",
    "examples/hub-features/tsconfig.json": "{}",
    "node_modules/.package-lock.json": "{}",
    "README.md": "# fake",
  };
  for (const program of Object.values(PROGRAMS)) for (const file of program) files[file] = `export const x = 1; // ${file}\n`;
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(dirname(join(at, file)), { recursive: true });
    writeFileSync(join(at, file), text);
  }
  mkdirSync(join(at, "node_modules", "tweetnacl"), { recursive: true });
  copyFileSync(join(root, "node_modules", "tweetnacl", "nacl-fast.js"), join(at, "node_modules", "tweetnacl", "nacl-fast.js"));
  return at;
}

/** A tree and a build whose tsc writes a tsBuildInfo listing its program (and the outputs, for the emitting step). */
function harness() {
  const at = fakeTree();
  const failing = new Set<string>();
  const extra: Record<string, string[]> = {};
  let during: ((step: Step) => void) | undefined;
  let buildInfoAtStart: Record<string, boolean> = {};
  const tsc = (where: string, step: Step, buildInfo: string) => {
    buildInfoAtStart[step.id] = existsSync(buildInfo);
    during?.(step);
    if (failing.has(step.id)) throw new scripts.BuildError(`the build failed: tsc -p ${step.project}`);
    const program = [...PROGRAMS[step.id]!, ...(extra[step.id] ?? [])];
    const fileNames = ["node_modules/typescript/lib/lib.es2022.d.ts", ...program].map((file) => relative(dirname(buildInfo), resolve(where, file)));
    writeFileSync(buildInfo, JSON.stringify({ fileNames, version: "fake" }));
    if (step.emits) {
      for (const file of program.filter((f) => !f.endsWith(".d.ts"))) {
        const out = join(where, "build", file.replace(/\.ts$/, ".js"));
        mkdirSync(dirname(out), { recursive: true });
        writeFileSync(out, "// emitted\n");
      }
    }
  };
  const lines: string[] = [];
  const run = (force = false) => {
    buildInfoAtStart = {};
    return scripts.build({ at, force, tsc, log: (line) => lines.push(line) });
  };
  const edit = (file: string) => appendFileSync(join(at, file), "// edited\n");
  return {
    at,
    run,
    edit,
    failing,
    extra,
    lines,
    buildInfoAtStart: () => buildInfoAtStart,
    setDuring: (fn: typeof during) => (during = fn),
    cleanup: () => rmSync(at, { recursive: true, force: true }),
  };
}

const ALL = ["modules", "node", "moddable", "example", "example-hub-features"];

test("build: each step runs once, then none until something it read changes", (t) => {
  const h = harness();
  try {
    t.deepEqual(h.run(), ALL, "a first build runs every step");
    t.true(existsSync(join(h.at, "build", "modules", "tweetnacl.js")), "and writes the tweetnacl wrapper");
    t.deepEqual(h.run(), [], "nothing changed: nothing runs");

    h.edit("test/t.test.ts");
    t.deepEqual(h.run(), ["node"], "a test file is read by the top tsconfig only");
    t.true(h.lines.some((line) => line.includes("test/t.test.ts changed")), "the log says why");

    h.edit("hosts/moddable/m.ts");
    t.deepEqual(h.run(), ["node", "moddable", "example", "example-hub-features"], "the no-emit checks run when their inputs change");

    h.edit("modules/types.d.ts");
    t.deepEqual(h.run(), ["modules", "node"]);
    h.edit("modules/a.ts");
    t.deepEqual(h.run(), ALL);

    h.edit("README.md");
    t.deepEqual(h.run(), [], "a file no tsc reads changes nothing");

    for (const file of ["tsconfig.base.json", "modules/tsconfig.json", "package.json", "package-lock.json", "node_modules/.package-lock.json"]) {
      h.edit(file);
      t.deepEqual(h.run(), ALL, `${file} is read by every step`);
    }

    writeFileSync(join(h.at, "simulator.ts"), "export {};\n");
    t.deepEqual(h.run(), ALL, "a TypeScript file added anywhere reruns every step");
    rmSync(join(h.at, "simulator.ts"));
    t.deepEqual(h.run(), ALL, "and so does one removed");

    t.deepEqual(h.run(true), ALL, "--force runs every step");
    t.deepEqual(h.buildInfoAtStart(), { modules: false, node: false, moddable: false, example: false, "example-hub-features": false }, "from scratch");
  } finally {
    h.cleanup();
  }
});

test("build: a missing output reruns the emitting step from scratch; a missing wrapper is only rewritten", (t) => {
  const h = harness();
  try {
    h.run();
    rmSync(join(h.at, "build", "hosts", "moddable", "m.js"));
    t.deepEqual(h.run(), ["node"]);
    t.false(h.buildInfoAtStart().node, "tsc --incremental would not rewrite an output that is gone: its tsBuildInfo is dropped");
    t.true(existsSync(join(h.at, "build", "hosts", "moddable", "m.js")));

    const wrapper = join(h.at, "build", "modules", "tweetnacl.js");
    const text = readFileSync(wrapper, "utf8");
    rmSync(wrapper);
    t.deepEqual(h.run(), [], "no tsc step for the wrapper");
    t.is(readFileSync(wrapper, "utf8"), text);
    writeFileSync(wrapper, "stale");
    h.run();
    t.is(readFileSync(wrapper, "utf8"), text, "a stale wrapper is rewritten");
  } finally {
    h.cleanup();
  }
});

test("build: a failed step leaves no stamp, so the next build runs it (and what did not run) even with nothing changed", (t) => {
  const h = harness();
  try {
    h.run();
    h.edit("modules/a.ts");
    h.failing.add("moddable");
    t.throws(() => h.run(), { instanceOf: scripts.BuildError });
    const moddable = scripts.STEPS.find((step) => step.id === "moddable")!;
    t.false(existsSync(scripts.stampPath(h.at, moddable)), "no stamp for the failed step");
    t.false(existsSync(join(h.at, "build", ".tsc", "lock")), "the lock is released");

    t.throws(() => h.run(), { instanceOf: scripts.BuildError }, "still failing: still run");
    h.failing.clear();
    t.deepEqual(h.run(), ["moddable", "example", "example-hub-features"], "the steps that succeeded keep their stamps");
    t.deepEqual(h.run(), []);
  } finally {
    h.cleanup();
  }
});

test("build: a file edited while its step runs, or one outside what the build hashes, means the step runs again", (t) => {
  const h = harness();
  try {
    h.run();
    h.edit("test/t.test.ts");
    h.setDuring((step) => {
      if (step.id === "node") h.edit("test/t.test.ts");
    });
    t.deepEqual(h.run(), ["node"]);
    h.setDuring(undefined);
    t.deepEqual(h.run(), ["node"], "the stamp holds the hashes from before the step ran");
    t.deepEqual(h.run(), []);

    h.extra.modules = ["../elsewhere/x.ts"];
    h.edit("modules/a.ts");
    t.deepEqual(h.run(), ALL);
    t.deepEqual(h.run(), ["modules"], "a program file outside the repository: no stamp");
    t.true(h.lines.some((line) => line.includes("could not stamp tsc -p modules/tsconfig.json")));
  } finally {
    h.cleanup();
  }
});

test("build: this TypeScript's tsBuildInfo names the program's files, as the stamps need", (t) => {
  // The build that compiled this file wrote it; were its format to change, every step would run every time.
  const node = scripts.STEPS.find((step) => step.id === "node")!;
  const files = scripts.programFiles(root, node);
  t.truthy(files, "build/.tsc/node.tsbuildinfo has a fileNames list");
  t.true(files!.includes("test/build.test.ts") && files!.includes("modules/runtime.ts"));
  t.false(files!.some((file) => file.includes("node_modules")));
});

// ---- a clone without node_modules ----------------------------------------------------------

const INSTALLING = new Set(["setup", "start", "test"]); // these run npm ci themselves (scripts/setup.mjs)

function sh(command: string, cwd: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn("sh", ["-c", command], { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("close", (status) => done({ status, stdout, stderr }));
  });
}

test("a clone without node_modules: every npm script but setup, start and test says in one line to run npm install", async (t) => {
  const clone = mkdtempSync(join(tmpdir(), "dps-clone-"));
  try {
    mkdirSync(join(clone, "scripts"));
    for (const file of ["build.mjs", "run.mjs"]) copyFileSync(join(root, "scripts", file), join(clone, "scripts", file));
    copyFileSync(join(root, "package.json"), join(clone, "package.json"));
    const { scripts: entries } = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };
    const line = 'dps-device-runtime: run "npm install" first (node_modules is missing)\n';
    const checked = Object.entries(entries).filter(([name]) => !INSTALLING.has(name));
    t.true(checked.some(([name]) => name === "device") && checked.some(([name]) => name === "build"));
    // A script that starts with `node [options] scripts/run.mjs|build.mjs` stops before its entry
    // is looked at: one run per such prefix; any other script runs as it is.
    const first = (command: string) => /^node (?:--\S+ )*scripts\/(?:run|build)\.mjs\b/.exec(command)?.[0] ?? command;
    const commands = [...new Set(checked.map(([, command]) => first(command)))];
    t.true(commands.length < checked.length);
    const results = new Map(await Promise.all(commands.map(async (command) => [command, await sh(`${command} --help`, clone)] as const)));
    for (const [name, command] of checked) {
      const { status, stdout, stderr } = results.get(first(command))!;
      t.is(status, 1, `npm run ${name} (${command}) exits 1`);
      t.is(stderr, line, `npm run ${name}: the one line, no stack trace`);
      t.is(stdout, "", `npm run ${name}`);
    }

    mkdirSync(join(clone, "node_modules"));
    const partial = await sh("node scripts/run.mjs build/hosts/desktop/cli.js --help", clone);
    t.is(partial.status, 1);
    t.is(partial.stderr, 'dps-device-runtime: run "npm install" first (node_modules is incomplete: no .package-lock.json)\n');
  } finally {
    rmSync(clone, { recursive: true, force: true });
  }
});
