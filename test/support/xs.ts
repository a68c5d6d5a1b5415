/**
 * Runs a compiled XS-tier entry (build/test/xs/*.xs.js) on the real XS engine (xsnap, built by
 * scripts/setup.mjs) and reads back what the harness printed.
 */
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
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

/** Runs one entry; rejects when the process fails or the final result line is missing. */
export function runXs(entry: string, timeoutMs = 120_000): Promise<XsRun> {
  return new Promise((resolve, reject) => {
    execFile(xsnapPath(), ["-m", entry], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const output = stdout + stderr;
      const failures: XsRun["failures"] = [];
      const emitted = new Map<string, unknown>();
      let result: { suite: string; passed: number; failed: number } | undefined;
      for (const line of stdout.split("\n")) {
        if (line.startsWith("XS-TIER-FAIL ")) failures.push(JSON.parse(line.slice(13)));
        else if (line.startsWith("XS-TIER-EMIT ")) {
          const { key, value } = JSON.parse(line.slice(13)) as { key: string; value: unknown };
          emitted.set(key, value);
        } else if (line.startsWith("XS-TIER-RESULT ")) result = JSON.parse(line.slice(15));
      }
      if (error && !result) {
        reject(new Error(`xsnap failed on ${entry}: ${error.message}\n${output.slice(-2000)}`));
      } else if (!result) {
        reject(new Error(`xsnap ended without a result line on ${entry} (an uncaught exception or a rejected promise?):\n${output.slice(-2000)}`));
      } else {
        resolve({ ...result, failures, emitted, output });
      }
    });
  });
}
