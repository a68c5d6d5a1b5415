/**
 * A seeded generator, portable (no Node API): the desktop host's fleets and the fuzz harnesses
 * (test/support/fuzz.ts, which the XS tier runs too) draw from it.
 */
import { check } from "../../modules/errors.js";
import type { RandomSource } from "../../modules/ports.js";

/**
 * A small, fast, deterministic PRNG for reproducible fleets and tests: sfc32 (Chris Doty-Humphrey's
 * Small Fast Counting generator, 128-bit state), its state filled from the seed by splitmix32.
 * The same seed gives the same sequence on every run and every host. Not for secrets.
 * Throws a UsageError unless `seed` is a finite number (it is taken modulo 2^32).
 */
export function seededRandom(seed: number): RandomSource {
  check(Number.isFinite(seed), "seed must be a finite number");
  let s = seed >>> 0;
  const splitmix32 = (): number => {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix32();
  let b = splitmix32();
  let c = splitmix32();
  let d = splitmix32();
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  // The first outputs of a fresh state are the least mixed: skip a few, as sfc32's author advises.
  for (let i = 0; i < 12; i++) next();
  return next;
}

