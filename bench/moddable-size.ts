/**
 * The runtime's compiled size on the device: XS bytecode of every portable module, built with the
 * Moddable SDK's own `mcrun` for esp32 (release), next to the SDK's MQTT client built the same way
 * in the same run. Then the same modules again with every message taken out (string literals of
 * more than 12 characters and all template literals replaced by ""), compiled with the SDK's
 * `xsc`: what the code alone weighs, the floor that shorter messages could reach.
 *
 *   MODDABLE=/path/to/moddable npm run bench:size
 *
 * Needs a built SDK (its Linux host tools: mcrun, xsc) and nothing else: the ESP-IDF is not
 * used, `-t build` stops at the bytecode. Run from the repository after `npm run build`.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import ts from "typescript";

const root = resolve(import.meta.dirname, "..", "..");
const sdk = process.env.MODDABLE;
if (!sdk) {
  console.error("MODDABLE is not set: point it at a built Moddable SDK (see docs/MODDABLE.md, \"What you need\").");
  process.exit(2);
}
const bin = join(sdk, "build", "bin", process.platform === "darwin" ? "mac" : "lin", "release");
const env = { ...process.env, PATH: `${bin}:${join(root, "node_modules", ".bin")}:${process.env.PATH}` };
const work = mkdtempSync(join(tmpdir(), "dps-size-"));

/**
 * Builds a mod manifest for esp32; returns every .xsb with its size, the archive's size, and the
 * JS that mcrun's tsc step emitted for each module (under out/tmp/…/tsc/).
 */
function build(name: string, manifest: object): { files: Map<string, number>; archive: number; js: Map<string, string> } {
  const dir = join(work, name);
  mkdirSync(join(dir, "out"), { recursive: true });
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
  execFileSync("mcrun", ["-m", "-p", "esp32", "-t", "build", "-o", join(dir, "out"), join(dir, "manifest.json")], { env, cwd: dir, stdio: "pipe", timeout: 300_000 });
  const files = new Map<string, number>();
  const js = new Map<string, string>();
  let archive = 0;
  const walk = (d: string): void => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".xsb")) files.set(entry.name.slice(0, -4), statSync(path).size);
      else if (entry.name.endsWith(".xsa")) archive = statSync(path).size;
      else if (entry.name.endsWith(".js") && path.includes(join("", "tsc", "")) && !js.has(entry.name.slice(0, -3))) js.set(entry.name.slice(0, -3), path);
    }
  };
  walk(join(dir, "out"));
  return { files, archive, js };
}

/** The module with its messages taken out, compiled by xsc; bytes. */
function withoutMessages(js: string, name: string): number {
  const source = ts.createSourceFile(name, js, ts.ScriptTarget.Latest, true);
  const edits: [number, number][] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) return;
    const message =
      (ts.isStringLiteral(node) && node.text.length > 12 && !ts.isPropertyAssignment(node.parent)) ||
      ts.isNoSubstitutionTemplateLiteral(node) ||
      ts.isTemplateExpression(node);
    if (message) edits.push([node.getStart(), node.end]);
    else ts.forEachChild(node, visit);
  };
  visit(source);
  let text = js;
  for (const [start, end] of edits.sort((a, b) => b[0] - a[0])) text = `${text.slice(0, start)}""${text.slice(end)}`;
  const dir = join(work, "stripped");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.js`), text);
  execFileSync("xsc", [join(dir, `${name}.js`), "-e", "-o", dir, "-r", name], { env, stdio: "pipe" });
  return statSync(join(dir, `${name}.xsb`)).size;
}

try {
  // The core and the opt-in hub features in one build; each module compiles on its own, so the
  // core's rows are what a firmware without the features pays.
  const features = ["hub-features", "c2d", "methods", "twin", "der", "csr"];
  const ours = build("runtime", { include: [join(root, "modules", "manifest.json"), ...["c2d", "methods", "twin", "csr"].map((f) => join(root, "modules", `manifest.${f}.json`))] });
  const mqtt = build("sdk-mqtt", { modules: { "embedded:network/mqtt/client": "$(MODDABLE)/examples/io/tcp/mqttclient/mqttclient" } });
  const rows: { name: string; bytes: number; floor: number }[] = [];
  for (const [name, bytes] of ours.files) {
    if (name === "check" || name === "tweetnacl" || features.includes(name)) continue;
    const js = ours.js.get(name);
    rows.push({ name, bytes, floor: js ? withoutMessages(readFileSync(js, "utf8"), name) : bytes });
  }
  rows.sort((a, b) => b.bytes - a.bytes);
  const total = rows.reduce((n, r) => n + r.bytes, 0);
  const floor = rows.reduce((n, r) => n + r.floor, 0);
  const sdkMqtt = [...mqtt.files].filter(([n]) => n !== "check").reduce((n, [, b]) => n + b, 0);
  const pad = (s: string | number, n: number) => String(s).padStart(n);
  console.log(`${"module".padEnd(20)}${pad("bytes", 8)}${pad("no messages", 13)}`);
  for (const r of rows) console.log(`${r.name.padEnd(20)}${pad(r.bytes, 8)}${pad(r.floor, 13)}`);
  console.log(`${"runtime, total".padEnd(20)}${pad(total, 8)}${pad(floor, 13)}`);
  for (const f of features) {
    const js = ours.js.get(f);
    console.log(`${`+ ${f}${f === "hub-features" ? " (any)" : ""}`.padEnd(20)}${pad(ours.files.get(f) ?? 0, 8)}${pad(js ? withoutMessages(readFileSync(js, "utf8"), f) : 0, 13)}`);
  }
  console.log(`tweetnacl (secretbox only): ${ours.files.get("tweetnacl")} bytes; mod archive of all: ${ours.archive} bytes`);
  console.log(`SDK MQTT client (embedded:network/mqtt/client): ${sdkMqtt} bytes; archive ${mqtt.archive} bytes`);
  console.log(`ratios: runtime / SDK MQTT client = ${(total / sdkMqtt).toFixed(2)}; runtime / 20 KB goal = ${(total / 20_000).toFixed(2)}; without messages / goal = ${(floor / 20_000).toFixed(2)}`);
  console.log(`(built in ${basename(work)} with ${basename(sdk)} for esp32, release)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
