/**
 * The Moddable manifests against the sources, without the SDK: every module the firmware imports
 * by a `dps-runtime/...` specifier, or reaches through a relative import, is one the manifests
 * map and do not exclude. mcconfig would only find a gap when building, on a machine with the SDK.
 */
import test from "ava";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "..");

interface Manifest {
  include?: string | string[];
  modules?: Record<string, string | string[]>;
  platforms?: Record<string, { include?: string | string[]; modules?: Record<string, string | string[]> }>;
}

/** The specifier → file map a platform gets from a manifest and what it includes (this repository's files only). */
function moduleMap(file: string, platform: string, seen = new Set<string>()): Map<string, string> {
  const map = new Map<string, string>();
  if (seen.has(file)) return map;
  seen.add(file);
  const manifest = JSON.parse(readFileSync(file, "utf8")) as Manifest;
  const here = dirname(file);
  const section = manifest.platforms?.[platform];
  for (const include of [manifest.include, section?.include].flat()) {
    if (include && !include.startsWith("$(")) for (const [k, v] of moduleMap(resolve(here, include), platform, seen)) map.set(k, v);
  }
  const excluded = new Set<string>();
  for (const modules of [manifest.modules, section?.modules]) {
    for (const [specifier, target] of Object.entries(modules ?? {})) {
      const targets = [target].flat();
      if (specifier === "~") targets.forEach((t) => excluded.add(resolve(here, t)));
      else if (specifier.endsWith("/*") && targets[0].endsWith("/*")) {
        const dir = resolve(here, targets[0].slice(0, -2));
        for (const name of readdirSync(dir)) {
          const stem = join(dir, name.replace(/\.ts$/, ""));
          if (name.endsWith(".ts") && !name.endsWith(".d.ts") && !excluded.has(stem)) map.set(specifier.slice(0, -1) + name.slice(0, -3), stem);
        }
      } else if (specifier !== "*" && !targets[0].startsWith("$(")) map.set(specifier, resolve(here, targets[0]));
    }
  }
  return map;
}

/** The `dps-runtime/...` specifier of a file of this repository. */
const specifierOf = (file: string): string => `dps-runtime/${relative(root, file).replace(/\.(ts|js)$/, "")}`;

/** Every module a firmware build compiles from `entry`, following relative and dps-runtime/ imports. */
function reachable(entry: string, map: Map<string, string>): { missing: string[]; files: string[] } {
  const missing: string[] = [];
  const files: string[] = [];
  const queue = [entry];
  const done = new Set<string>();
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (done.has(file)) continue;
    done.add(file);
    files.push(file);
    const source = readFileSync(`${file}.ts`, "utf8");
    for (const [, specifier] of source.matchAll(/^(?:import|export)\s(?!type\s)[^;]*?from\s+"([^"]+)"/gms)) {
      // A relative import compiles to the dps-runtime/ specifier of the file it names.
      const name = specifier.startsWith(".") ? specifierOf(resolve(dirname(file), specifier)) : specifier;
      if (!name.startsWith("dps-runtime/")) continue; // an SDK module
      const mapped = map.get(name);
      if (!mapped) missing.push(`${relative(root, `${file}.ts`)} imports "${specifier}"`);
      else if (existsSync(`${mapped}.ts`)) queue.push(mapped); // not a generated .js (tweetnacl)
    }
  }
  return { missing, files };
}

for (const platform of ["esp32", "lin"]) {
  test(`manifests (${platform}): the demo app's modules are all mapped, none excluded`, (t) => {
    const map = moduleMap(join(root, "manifest.json"), platform);
    const { missing, files } = reachable(join(root, "hosts", "moddable", "main"), map);
    t.deepEqual(missing, []);
    t.true(files.some((f) => basename(f) === `target-${platform === "esp32" ? "esp32" : "sim"}`), "the platform's target module");
    t.false(files.some((f) => basename(f) === "sha256" || basename(f) === "memory-flash"), "no test-only module in the firmware");
  });

  test(`manifests (${platform}): examples/minimal builds from hosts/moddable/manifest.json alone`, (t) => {
    const map = moduleMap(join(root, "examples", "minimal", "manifest.json"), platform);
    const { missing, files } = reachable(join(root, "examples", "minimal", "main"), map);
    t.deepEqual(missing, []);
    t.true(files.some((f) => basename(f) === "tls-guard"), "the TLS guard comes with the MQTT adapter");
    t.false(files.some((f) => ["c2d", "methods", "twin", "hub-features"].includes(basename(f))), "no hub feature unless included");
  });

  test(`manifests (${platform}): examples/hub-features builds from the host manifest and one manifest per feature; the core manifest alone lacks them`, (t) => {
    const map = moduleMap(join(root, "examples", "hub-features", "manifest.json"), platform);
    const { missing, files } = reachable(join(root, "examples", "hub-features", "main"), map);
    t.deepEqual(missing, []);
    for (const f of ["c2d", "methods", "twin", "hub-features"]) t.true(files.some((x) => basename(x) === f), f);
    const core = moduleMap(join(root, "hosts", "moddable", "manifest.json"), platform);
    t.deepEqual(reachable(join(root, "examples", "hub-features", "main"), core).missing.sort(), [
      'examples/hub-features/main.ts imports "dps-runtime/modules/c2d"',
      'examples/hub-features/main.ts imports "dps-runtime/modules/methods"',
      'examples/hub-features/main.ts imports "dps-runtime/modules/twin"',
    ]);
  });
}

test("manifests: a module left out of the host manifest is found", (t) => {
  const map = moduleMap(join(root, "hosts", "moddable", "manifest.json"), "lin");
  map.delete("dps-runtime/hosts/moddable/tls-guard");
  const { missing } = reachable(join(root, "hosts", "moddable", "mqtt"), map);
  t.deepEqual(missing, ['hosts/moddable/mqtt.ts imports "./tls-guard.js"']);
});
