// Seeded randomness for every choice the emulator makes (fault probabilities, operation ids,
// tracking ids, etags), so that a run with the same seed and the same requests makes the same
// choices. xoshiro128** over 32-bit state: fast, small, and good enough for test decisions (it is
// not, and must not be, used for anything secret).
import { randomBytes } from "node:crypto";

const HEX = "0123456789abcdef";

export class Random {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  readonly seed: number;

  /** @param seed any integer; omitted: a seed drawn from the OS (reported by `seed`). */
  constructor(seed?: number) {
    this.seed = seed === undefined ? randomBytes(4).readUInt32LE(0) : seed >>> 0;
    // splitmix32 spreads a small seed over the four words of state.
    let s = this.seed;
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1;
  }

  /** The next 32-bit unsigned integer. */
  uint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#b, 5), 7), 9) >>> 0;
    const t = this.#b << 9;
    this.#c ^= this.#a;
    this.#d ^= this.#b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return result;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.uint32() / 4294967296;
  }

  /** `length` lowercase hex digits. */
  hex(length: number): string {
    let out = "";
    while (out.length < length) {
      let word = this.uint32();
      for (let i = 0; i < 8 && out.length < length; i++) {
        out += HEX[word & 15];
        word >>>= 4;
      }
    }
    return out;
  }

  /** A version-4 UUID string drawn from this generator. */
  uuid(): string {
    const h = this.hex(32);
    const variant = HEX[8 + (parseInt(h[16], 16) & 3)];
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
