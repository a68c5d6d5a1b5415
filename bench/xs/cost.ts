/**
 * XS cost entry (run by bench/xs-cost.ts on xsnap): computations metered by XS for a cold start
 * (DPS register, poll, cache sealed, hub connected, one message acknowledged), a warm start (cache
 * opened, hub connected, one message), and one portable HMAC-SHA256; plus wall time on this XS.
 *
 * The meter is XS's own count of the work it did (bytecodes run, property accesses, string
 * bytes copied...), read with xsnap's `resetMeter(limit, index)`, which returns the count so far
 * and sets it. It is an engine-level measure of computation, independent of the machine's speed.
 */
import { hmacSha256 } from "../../modules/sha256.js";
import { utf8Encode } from "../../modules/encoding.js";
import { newFlash } from "../../test/support/virtual-world.js";
import { boot, counts } from "./world.js";

declare const print: (...values: unknown[]) => void;
declare const resetMeter: (limit: number, index: number) => number;

function metered(fn: () => void): { meter: number; ms: number } {
  const t0 = Date.now();
  resetMeter(0, 0);
  fn();
  const meter = resetMeter(0, 0);
  return { meter, ms: Date.now() - t0 };
}

// Once to settle whatever is done lazily on first use, then measured.
boot(newFlash(), true);
const flash = newFlash();
counts.hmac = 0;
let ok = true;
const cold = metered(() => {
  ok = boot(flash, true).acknowledged === 1 && ok;
});
const coldHmacs = counts.hmac;
counts.hmac = 0;
const warm = metered(() => {
  ok = boot(flash, true).acknowledged === 1 && ok;
});
const warmHmacs = counts.hmac;

const key = new Uint8Array(32).fill(0x5a);
const message = utf8Encode("0ne00000001/registrations/dev-001\n1700003600");
const N = 200;
const hmac = metered(() => {
  for (let i = 0; i < N; i++) hmacSha256(key, message);
});

print(
  "XS-COST " +
    JSON.stringify({
      ok,
      cold: { meter: cold.meter, ms: cold.ms, hmacs: coldHmacs },
      warm: { meter: warm.meter, ms: warm.ms, hmacs: warmHmacs },
      hmac: { meter: Math.round(hmac.meter / N), us: (hmac.ms * 1000) / N, messageBytes: message.length },
    }),
);
