/**
 * Runs a compiled XS-tier entry (build/test/xs/*.xs.js) on the real XS engine (xsnap, built by
 * scripts/setup.mjs) and reads back what the harness printed.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const projectRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export function xsnapPath(): string {
  if (process.env.XSNAP) return process.env.XSNAP;
  const setupFile = join(projectRoot, ".cache", "setup.json");
  if (existsSync(setupFile)) {
    const recorded = (JSON.parse(readFileSync(setupFile, "utf8")) as { xsnap?: string }).xsnap;
    if (recorded && existsSync(recorded)) return recorded;
  }
  const conventional = join(projectRoot, ".cache", "xsnap", "0.15.0", "package", "moddable", "build", "bin", "lin", "release", "xsnap");
  if (existsSync(conventional)) return conventional;
  throw new Error("xsnap is not built: run `npm test` (or `npm run setup`), which builds it into .cache/xsnap");
}

export interface XsRun {
  suite: string;
  passed: number;
  failed: number;
  failures: { name: string; message: string }[];
  emitted: Map<string, unknown>;
  output: string;
}

/**
 * Runs one entry; rejects when the process fails, the final result line is missing, the module's
 * evaluation did not complete, or XS reported an exception or a rejection nobody handled, wherever
 * it printed it (xsnap exits 0 in all of those cases).
 *
 * The entry is loaded by a small driver with a dynamic import, so that whatever the module does
 * after its result line (a throw, a rejected promise) is seen too.
 */
export function runXs(entry: string, timeoutMs = 120_000): Promise<XsRun> {
  const dir = mkdtempSync(join(tmpdir(), "xs-run-"));
  const driver = join(dir, "driver.js");
  writeFileSync(driver, `import(${JSON.stringify(resolve(entry))}).then(() => print("XS-TIER-DONE"), (e) => print("XS-TIER-CRASH " + e));\n`);
  return new Promise((resolvePromise, reject) => {
    execFile(xsnapPath(), ["-m", driver], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      const output = stdout + stderr;
      const failures: XsRun["failures"] = [];
      const emitted = new Map<string, unknown>();
      let result: { suite: string; passed: number; failed: number } | undefined;
      let done = false;
      for (const line of stdout.split("\n")) {
        if (line.startsWith("XS-TIER-FAIL ")) failures.push(JSON.parse(line.slice(13)));
        else if (line.startsWith("XS-TIER-EMIT ")) {
          const { key, value } = JSON.parse(line.slice(13)) as { key: string; value: unknown };
          emitted.set(key, value);
        } else if (line.startsWith("XS-TIER-RESULT ")) result = JSON.parse(line.slice(15));
        else if (line === "XS-TIER-DONE") done = true;
      }
      const unhandled = /Unhandled exception|unhandled rejection|XS-TIER-CRASH/.exec(output);
      if (error && !result) {
        reject(new Error(`xsnap failed on ${entry}: ${error.message}\n${output.slice(-2000)}`));
      } else if (!result) {
        reject(new Error(`xsnap ended without a result line on ${entry} (an uncaught exception or a rejected promise?):\n${output.slice(-2000)}`));
      } else if (unhandled) {
        reject(new Error(`XS reported "${unhandled[0]}" on ${entry}, after ${result.passed} passing case(s):\n${output.slice(-2000)}`));
      } else if (!done) {
        reject(new Error(`the module ${entry} never finished evaluating:\n${output.slice(-2000)}`));
      } else {
        resolvePromise({ ...result, failures, emitted, output });
      }
    });
  });
}
