/**
 * The firmware carries only the secretbox part of tweetnacl (scripts/build.mjs cuts it out of
 * nacl-fast.js). It must seal and open exactly as the untouched package does.
 */
import test from "ava";
import fc from "fast-check";
import full from "tweetnacl";
import trimmed from "../modules/tweetnacl.js";

test("tweetnacl trimmed: only secretbox (and randomBytes, which needs no PRNG to load) is left", (t) => {
  t.deepEqual(Object.keys(trimmed).sort(), ["randomBytes", "secretbox"]);
  t.is(trimmed.secretbox.keyLength, 32);
  t.is(trimmed.secretbox.nonceLength, 24);
  t.is(trimmed.secretbox.overheadLength, 16);
});

test("tweetnacl trimmed: seals byte for byte as the package does, and each opens the other's box", (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.uint8Array({ minLength: 24, maxLength: 24 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (message, nonce, key) => {
      const mine = trimmed.secretbox(message, nonce, key);
      const theirs = full.secretbox(message, nonce, key);
      if (Buffer.compare(Buffer.from(mine), Buffer.from(theirs)) !== 0) return false;
      const opened = full.secretbox.open(mine, nonce, key);
      const back = trimmed.secretbox.open(theirs, nonce, key);
      return opened !== null && back !== null && Buffer.from(opened).equals(Buffer.from(message)) && Buffer.from(back).equals(Buffer.from(message));
    }),
    { numRuns: 200 },
  );
  t.pass();
});

test("tweetnacl trimmed: a tampered box does not open", (t) => {
  const key = new Uint8Array(32).fill(7);
  const nonce = new Uint8Array(24).fill(9);
  const box = trimmed.secretbox(new Uint8Array([1, 2, 3]), nonce, key);
  box[box.length - 1] ^= 1;
  t.is(trimmed.secretbox.open(box, nonce, key), null);
});
