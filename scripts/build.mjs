// Type-checks modules/ alone (no Node types: a host API there fails here), then compiles every
// part that runs on Node or on the XS test tier to build/, type-checks the Moddable host and the
// example app (no emit), and wraps tweetnacl as an ES module. `node scripts/build.mjs [--force]`.
//
// Incremental, and skipped when nothing changed. Each tsc step runs with --incremental (its
// tsBuildInfo in build/.tsc/) and, once it succeeds, leaves a stamp there: a hash of every file in
// the repository that the step's program read (from the tsBuildInfo's file list) plus one of what
// every step depends on (the list of TypeScript files anywhere, every tsconfig*.json and
// package.json, package-lock.json, node_modules/.package-lock.json, this script). A step whose
// stamp still matches (and, for the emitting one, whose outputs all exist) is skipped; anything
// unexpected (no stamp, an unreadable tsBuildInfo, a file outside the repository) means it runs.
// A stamp is removed before its step runs and written only after it succeeded, from hashes taken
// before it ran, so a failed or interrupted build, or a file edited during one, is rebuilt next
// time. Builds of one tree take turns (build/.tsc/lock). Deleting build/ resets everything.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const self = fileURLToPath(import.meta.url);
export const root = join(dirname(self), "..");
export const NAME = "dps-device-runtime";

// `emits`: the outputs of the program's files are checked to exist before the step is skipped.
export const STEPS = [
  { id: "modules", project: "modules/tsconfig.json", emits: false },
  { id: "node", project: "tsconfig.json", emits: true }, // rootDir ".", outDir "build"
  { id: "moddable", project: "hosts/moddable/tsconfig.json", emits: false }, // the Moddable host against its SDK declarations
  { id: "example", project: "examples/minimal/tsconfig.json", emits: false }, // the example app, through the manifest's dps-runtime/ specifiers
  { id: "example-hub-features", project: "examples/hub-features/tsconfig.json", emits: false }, // the hub features example, the same way
];

/** A build that failed for a reason already explained (tsc printed its errors): one line, no stack. */
export class BuildError extends Error {}

/** Writes `dps-device-runtime: LINE` to stderr. */
export function say(line) {
  process.stderr.write(`${NAME}: ${line}\n`);
}

/** Why node_modules cannot build or run anything (a short reason), or null when it can. */
export function nodeModulesProblem(at = root) {
  const modules = join(at, "node_modules");
  if (!existsSync(modules)) return "node_modules is missing";
  for (const needed of [".package-lock.json", "typescript/bin/tsc", "tweetnacl/nacl-fast.js"]) {
    if (!existsSync(join(modules, needed))) return `node_modules is incomplete: no ${needed}`;
  }
  return null;
}

/** True when package-lock.json changed after the last npm install/ci. */
export function nodeModulesStale(at = root) {
  try {
    return statSync(join(at, "package-lock.json")).mtimeMs > statSync(join(at, "node_modules", ".package-lock.json")).mtimeMs;
  } catch {
    return false;
  }
}

// ---- what the steps read -------------------------------------------------------------------

const SOURCE = /\.(?:[cm]?ts|tsx)$/;
const CONFIG = /^(?:tsconfig.*\.json|package\.json)$/;

function hash(data) {
  return createHash("sha256").update(data).digest("hex").slice(0, 32);
}

function hashFile(path) {
  try {
    return hash(readFileSync(path));
  } catch {
    return "missing";
  }
}

const toPosix = (path) => path.split(sep).join("/");

/** Every file a tsc step could read in the tree: TypeScript sources, tsconfig*.json, package.json (relative, posix). */
export function candidateFiles(at = root) {
  const found = [];
  const walk = (dir, rel) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const name = entry.name;
      if (name === "node_modules" || name === ".git" || (rel === "" && (name === "build" || name === ".cache"))) continue;
      const path = rel === "" ? name : `${rel}/${name}`;
      let isFile = entry.isFile();
      if (entry.isSymbolicLink()) {
        try {
          isFile = statSync(join(dir, name)).isFile(); // a linked directory is not followed: what tsc reads there makes the step unstampable
        } catch {
          isFile = false;
        }
      } else if (entry.isDirectory()) {
        walk(join(dir, name), path);
        continue;
      }
      if (isFile && (SOURCE.test(name) || CONFIG.test(name))) found.push(path);
    }
  };
  walk(at, "");
  return found.sort();
}

/**
 * The state of the inputs now: `files` (relative path → content hash), `names` (a hash of the list
 * of candidate files: one added or removed reruns every step) and `shared` (a hash of what every
 * step depends on besides its own files).
 */
export function fingerprint(at = root) {
  const names = candidateFiles(at);
  const files = new Map(names.map((name) => [name, hashFile(join(at, name))]));
  const configs = names.filter((name) => CONFIG.test(name.slice(name.lastIndexOf("/") + 1))).map((name) => `${name}=${files.get(name)}`);
  const shared = hash(
    JSON.stringify({
      configs,
      lock: hashFile(join(at, "package-lock.json")),
      installed: hashFile(join(at, "node_modules", ".package-lock.json")),
      script: hashFile(self),
    }),
  );
  return { files, names: hash(names.join("\n")), shared };
}

// ---- stamps ---------------------------------------------------------------------------------

const stateDir = (at) => join(at, "build", ".tsc");
export const buildInfoPath = (at, step) => join(stateDir(at), `${step.id}.tsbuildinfo`);
export const stampPath = (at, step) => join(stateDir(at), `${step.id}.stamp.json`);

/**
 * The repository files the step's program read the last time it ran (relative, posix), from its
 * tsBuildInfo; null when that cannot be read or names a file this build does not hash. Files in
 * a node_modules are left out: node_modules/.package-lock.json stands for them.
 */
export function programFiles(at, step) {
  let info;
  try {
    info = JSON.parse(readFileSync(buildInfoPath(at, step), "utf8"));
  } catch {
    return null;
  }
  if (!Array.isArray(info.fileNames)) return null;
  const base = dirname(buildInfoPath(at, step));
  let real = at;
  try {
    real = realpathSync(at);
  } catch {}
  const out = [];
  for (const name of info.fileNames) {
    if (typeof name !== "string") return null;
    const path = resolve(base, name);
    if (toPosix(path).includes("/node_modules/")) continue;
    let rel = relative(at, path);
    if (rel.startsWith("..") || isAbsolute(rel)) rel = relative(real, path);
    if (rel.startsWith("..") || isAbsolute(rel)) return null;
    out.push(toPosix(rel));
  }
  return out;
}

/** What the emitting step writes for its program's files (rootDir ".", outDir "build"). */
export function outputsOf(files) {
  return files
    .filter((file) => SOURCE.test(file) && !/\.d\.[cm]?ts$/.test(file))
    .map((file) => `build/${file.replace(/\.tsx?$/, ".js").replace(/\.mts$/, ".mjs").replace(/\.cts$/, ".cjs")}`);
}

/** Why the step must run (a short phrase), or null when its stamp matches the inputs `now`. */
export function staleReason(at, step, now) {
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(stampPath(at, step), "utf8"));
  } catch {
    return "no stamp of a successful build";
  }
  if (stamp.shared !== now.shared) return "a tsconfig, package.json, the lock files or the build script changed";
  if (stamp.names !== now.names) return "TypeScript files were added or removed";
  if (!stamp.files || typeof stamp.files !== "object") return "unreadable stamp";
  for (const [file, digest] of Object.entries(stamp.files)) {
    if (now.files.get(file) !== digest) return `${file} changed`;
  }
  for (const output of stamp.outputs ?? []) {
    if (!existsSync(join(at, output))) return `${output} is missing`;
  }
  return null;
}

function writeAtomically(path, data) {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/** Records a successful step, from the hashes taken before it ran; false when it cannot be stamped. */
function writeStamp(at, step, before) {
  const files = programFiles(at, step);
  if (!files || files.length === 0) return false;
  const hashes = {};
  for (const file of files) {
    const digest = before.files.get(file);
    if (digest === undefined) return false; // read by tsc but not hashed before: run again next time
    hashes[file] = digest;
  }
  const outputs = step.emits ? outputsOf(files) : [];
  if (outputs.some((output) => !existsSync(join(at, output)))) return false;
  writeAtomically(stampPath(at, step), JSON.stringify({ shared: before.shared, names: before.names, files: hashes, outputs }));
  return true;
}

// ---- one build at a time --------------------------------------------------------------------

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function holderIsGone(lock) {
  let text;
  try {
    text = readFileSync(lock, "utf8");
  } catch {
    return false; // already released
  }
  const [pid, host] = text.split(" ");
  if (host === hostname() && Number(pid) > 0) {
    try {
      process.kill(Number(pid), 0);
      return false;
    } catch (error) {
      return error.code === "ESRCH";
    }
  }
  // another machine or container (or a lock still being written): trust it for 10 minutes
  try {
    return Date.now() - statSync(lock).mtimeMs > 10 * 60_000;
  } catch {
    return false;
  }
}

export function withLock(at, fn, log) {
  mkdirSync(stateDir(at), { recursive: true });
  const lock = join(stateDir(at), "lock");
  const deadline = Date.now() + 15 * 60_000;
  let waiting = false;
  for (;;) {
    try {
      writeFileSync(lock, `${process.pid} ${hostname()}`, { flag: "wx" });
      break;
    } catch (error) {
      if (error.code !== "EEXIST") throw error;
    }
    if (holderIsGone(lock)) {
      rmSync(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new BuildError(`another build has held ${relative(at, lock)} for 15 minutes; delete it if no build is running`);
    if (!waiting) log(`build: waiting for another build of this tree (${relative(at, lock)})`);
    waiting = true;
    sleep(200);
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

// ---- the build ------------------------------------------------------------------------------

function runTsc(at, step, buildInfo) {
  const tsc = join(at, "node_modules", "typescript", "bin", "tsc");
  try {
    execFileSync(process.execPath, [tsc, "-p", step.project, "--incremental", "--tsBuildInfoFile", buildInfo], { stdio: "inherit", cwd: at });
  } catch (error) {
    if (typeof error.status === "number") throw new BuildError(`the build failed: tsc -p ${step.project} (its errors are above)`);
    if (error.signal) throw new BuildError(`the build stopped: tsc -p ${step.project} was killed (${error.signal})`);
    throw error;
  }
}

/**
 * Runs the steps whose inputs changed, then makes sure build/modules/tweetnacl.js is current.
 * Returns the ids of the steps that ran. Throws BuildError when a step fails (no stamp is left).
 * `tsc(at, step, buildInfoFile)` and `log(line)` are replaceable (tests).
 */
export function build({ at = root, force = false, tsc = runTsc, log = (line) => process.stderr.write(`${line}\n`) } = {}) {
  const ran = [];
  const pending = (now) => STEPS.filter((step) => force || staleReason(at, step, now) !== null);
  if (force || pending(fingerprint(at)).length > 0) {
    withLock(
      at,
      () => {
        const now = fingerprint(at); // again: another build may have finished while this one waited
        for (const step of STEPS) {
          const reason = force ? "forced" : staleReason(at, step, now);
          if (reason === null) continue;
          rmSync(stampPath(at, step), { force: true });
          // tsc --incremental does not rewrite an output that is gone: start that step afresh
          const known = step.emits ? programFiles(at, step) : [];
          if (force || known === null || outputsOf(known).some((output) => !existsSync(join(at, output)))) rmSync(buildInfoPath(at, step), { force: true });
          log(`build: tsc -p ${step.project} (${reason})`);
          tsc(at, step, buildInfoPath(at, step));
          if (!writeStamp(at, step, now)) log(`build: could not stamp tsc -p ${step.project}; it will run again next time`);
          ran.push(step.id);
        }
      },
      log,
    );
  }
  wrapTweetnacl(join(at, "build", "modules", "tweetnacl.js"), at);
  return ran;
}

// tweetnacl ships a UMD script that attaches itself to `module.exports` or `self.nacl`; XS has
// neither. Declaring a module-scoped `module` makes it an ES module that Node, xsnap and the
// Moddable module map can all load.
//
// Only secretbox is kept: the runtime seals its cache with it and uses nothing else, and the rest
// (curve25519, ed25519, SHA-512, box, sign, the PRNG set-up) is two thirds of the bytecode a
// device would carry. The cut follows the file's own layout, located by markers that must each
// occur exactly once in tweetnacl 1.0.3's nacl-fast.js; test/tweetnacl.test.ts checks the result
// against the untouched package, byte for byte.
const KEEP = [
  // gf helpers, salsa20, hsalsa20, the stream ciphers, poly1305, crypto_secretbox(_open)
  ["(function(nacl) {", "function set25519(r, a) {"],
  // the size constants
  ["var crypto_secretbox_KEYBYTES = 32,", "nacl.lowlevel = {"],
  // argument checks, nacl.randomBytes (throws without a PRNG: nonces come from the host) and nacl.secretbox
  ["function checkLengths(k, n) {", "nacl.scalarMult = function(n, p) {"],
];
const CLOSE = "})(typeof module !== 'undefined' && module.exports ? module.exports : (self.nacl = self.nacl || {}));";

export function secretboxOnly(source) {
  const at = (marker) => {
    const first = source.indexOf(marker);
    if (first < 0 || source.indexOf(marker, first + 1) >= 0) {
      throw new Error(`tweetnacl: the marker "${marker}" must occur exactly once in nacl-fast.js; has the package changed from 1.0.3?`);
    }
    return first;
  };
  let out = "";
  for (const [from, to] of KEEP) out += source.slice(at(from), at(to));
  at(CLOSE);
  return out + CLOSE + "\n";
}

/** Writes the wrapper when it is missing or differs from what the installed tweetnacl gives; true when it wrote. */
export function wrapTweetnacl(target, at = root) {
  const source = readFileSync(join(at, "node_modules", "tweetnacl", "nacl-fast.js"), "utf8");
  const text =
    "// Generated by scripts/build.mjs from tweetnacl 1.0.3 (public domain): the secretbox part of\n" +
    "// nacl-fast.js, as an ES module.\n" +
    "const module = { exports: {} };\n" +
    secretboxOnly(source) +
    "export default module.exports;\n";
  try {
    if (readFileSync(target, "utf8") === text) return false;
  } catch {}
  mkdirSync(dirname(target), { recursive: true });
  writeAtomically(target, text);
  return true;
}

/** The command line (`npm run build`): the one-line answers for a missing node_modules or a failed build. */
export function main(args = process.argv.slice(2)) {
  const problem = nodeModulesProblem();
  if (problem) {
    say(`run "npm install" first (${problem})`);
    process.exit(1);
  }
  if (nodeModulesStale()) say('package-lock.json is newer than node_modules: run "npm install" if the build fails');
  try {
    build({ force: args.includes("--force") });
  } catch (error) {
    if (!(error instanceof BuildError)) throw error;
    say(error.message);
    process.exit(1);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === self) main();
