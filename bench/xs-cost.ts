/**
 * Cost on the XS engine (xsnap, the engine of the XS test tier): a whole provisioning transcript
 * from a cold start, a warm start, the memory a connected device keeps, and HMAC-SHA256 signing,
 * portable against native.
 *
 *   node scripts/build.mjs && node build/bench/xs-cost.js
 *
 * What the figures are:
 *   computation  XS's own meter (bench/xs/cost.ts reads it with xsnap's resetMeter): the count of
 *                bytecodes, property accesses and string bytes the engine worked through; machine
 *                independent, comparable across changes, not a time. Cold start = DPS register,
 *                one poll, the assignment sealed into the flash cache (tweetnacl secretbox), the
 *                hub connected and one message acknowledged, on the virtual world of
 *                test/support/virtual-world.ts; warm start = the cache opened, the hub connected,
 *                one message. Both with the portable HMAC (the tier has no native digest); the
 *                figure without it subtracts the metered HMACs, since a device signs with the
 *                native `crypt` Digest.
 *   memory       what one connected device keeps alive on XS: snapshots (`xsnap -w`, written after
 *                a full collection at exit) of the same world with and without the device,
 *                compared section by section (BLOC: chunks such as strings and buffers; HEAP:
 *                slots, 32 bytes each on this 64-bit build, 16 on ESP32). The flash is in both,
 *                so it is not counted. This is live memory after a collection, not the total
 *                allocated during the run: this xsnap build does not report allocation.
 *   HMAC         microseconds per HMAC-SHA256 of a 44-byte SAS string to sign under a 32-byte
 *                key: node:crypto, the portable sha256.ts on Node, and the portable one on XS.
 */
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { hmacSha256 } from "../modules/sha256.js";
import { xsnapPath } from "../test/support/xs.js";

const here = dirname(fileURLToPath(import.meta.url));

interface XsCost {
  ok: boolean;
  cold: { meter: number; ms: number; hmacs: number };
  warm: { meter: number; ms: number; hmacs: number };
  hmac: { meter: number; us: number; messageBytes: number };
}

function runXs(args: string[]): string {
  return execFileSync(xsnapPath(), args, { encoding: "utf8", timeout: 120_000, stdio: ["ignore", "pipe", "pipe"] });
}

/** Section sizes of an xsnap snapshot, from `xsnap -d` (which prints the dump on stderr). */
function snapshotSections(path: string): Record<string, number> {
  const out = execFileSync("sh", ["-c", `"$0" -d "$1" 2>&1`, xsnapPath(), path], { encoding: "utf8", timeout: 60_000, maxBuffer: 256 * 1024 * 1024 });
  const sections: Record<string, number> = {};
  for (const line of out.split("\n")) {
    const m = /^([A-Z]{4}) (\d+)$/.exec(line);
    if (m) sections[m[1]] = Number(m[2]);
  }
  if (!sections.HEAP) throw new Error(`no HEAP section in the dump of ${path}`);
  return sections;
}

function perOpMicros(fn: () => void, minMs = 300): number {
  for (let i = 0; i < 200; i++) fn(); // warm the JIT
  let n = 0;
  const t0 = performance.now();
  let elapsed = 0;
  while (elapsed < minMs) {
    for (let i = 0; i < 100; i++) fn();
    n += 100;
    elapsed = performance.now() - t0;
  }
  return (elapsed * 1000) / n;
}

function main(): void {
  const costOut = runXs(["-m", join(here, "xs", "cost.js")]);
  const line = costOut.split("\n").find((l) => l.startsWith("XS-COST "));
  if (!line) throw new Error(`the XS cost entry printed no result:\n${costOut.slice(-2000)}`);
  const cost = JSON.parse(line.slice(8)) as XsCost;
  if (!cost.ok) throw new Error("the XS cost entry's boots did not complete");

  const dir = mkdtempSync(join(tmpdir(), "xs-cost-"));
  let baseline: Record<string, number>;
  let connected: Record<string, number>;
  try {
    runXs(["-w", join(dir, "baseline.xss"), "-m", join(here, "xs", "memory-baseline.js")]);
    const out = runXs(["-w", join(dir, "connected.xss"), "-m", join(here, "xs", "memory-connected.js")]);
    if (!out.includes("XS-MEMORY-CONNECTED")) throw new Error(`the device did not connect on XS:\n${out}`);
    baseline = snapshotSections(join(dir, "baseline.xss"));
    connected = snapshotSections(join(dir, "connected.xss"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const delta = (k: string) => (connected[k] ?? 0) - (baseline[k] ?? 0);

  const key = new Uint8Array(32).fill(0x5a);
  const message = new TextEncoder().encode("0ne00000001/registrations/dev-001\n1700003600");
  const nativeUs = perOpMicros(() => createHmac("sha256", key).update(message).digest());
  const portableUs = perOpMicros(() => hmacSha256(key, message));

  const hmacMeter = cost.hmac.meter;
  const out = (s: string) => process.stdout.write(s + "\n");
  out("cost on XS (xsnap, XS 13.3, the XS test tier; meter = XS computations, machine independent)");
  out("");
  out("| on XS | computations (meter) | of which portable HMAC | without HMAC (native digest) | wall on this machine |");
  out("|---|---|---|---|---|");
  out(`| cold start: register, poll, cache sealed, hub connected, 1 message | ${cost.cold.meter} | ${cost.cold.hmacs} × ${hmacMeter} | ${cost.cold.meter - cost.cold.hmacs * hmacMeter} | ${cost.cold.ms} ms |`);
  out(`| warm start: cache opened, hub connected, 1 message | ${cost.warm.meter} | ${cost.warm.hmacs} × ${hmacMeter} | ${cost.warm.meter - cost.warm.hmacs * hmacMeter} | ${cost.warm.ms} ms |`);
  out(`| warm ÷ cold | ${(cost.warm.meter / cost.cold.meter).toFixed(2)} | | ${((cost.warm.meter - cost.warm.hmacs * hmacMeter) / (cost.cold.meter - cost.cold.hmacs * hmacMeter)).toFixed(2)} | |`);
  out("");
  out(`memory one connected device keeps on XS (live, after a collection): chunks ${delta("BLOC")} bytes + slots ${delta("HEAP")} bytes (${delta("HEAP") / 32} slots) = ${delta("BLOC") + delta("HEAP")} bytes; on a 32-bit ESP32 slots are 16 bytes: about ${delta("BLOC") + delta("HEAP") / 2} bytes`);
  out("");
  out(`| HMAC-SHA256, ${cost.hmac.messageBytes}-byte message, 32-byte key | µs per HMAC | ratio to node:crypto |`);
  out("|---|---|---|");
  out(`| node:crypto (native) | ${nativeUs.toFixed(2)} | 1 |`);
  out(`| portable sha256.ts on Node | ${portableUs.toFixed(2)} | ${(portableUs / nativeUs).toFixed(1)}× |`);
  out(`| portable sha256.ts on XS (xsnap), ${hmacMeter} computations each | ${cost.hmac.us.toFixed(0)} | ${(cost.hmac.us / nativeUs).toFixed(0)}× |`);
}

main();
