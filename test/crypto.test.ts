/**
 * Encodings, SHA-256 and HMAC-SHA256 of the portable core: the published vectors, and by property
 * against node:crypto and Node's own encoders.
 */
import test from "ava";
import fc from "fast-check";
import { createHash, createHmac } from "node:crypto";
import { base64Decode, base64Encode, urlDecode, urlEncode, utf8Decode, utf8Encode } from "../modules/encoding.js";
import { hmacSha256, sha256, Sha256 } from "../modules/sha256.js";
import { bytesToHex, hexToBytes, hmacVectors, sha256Vectors } from "./vectors/crypto.js";

for (const v of sha256Vectors) {
  test(`sha256: FIPS 180-4 vector "${v.name}"`, (t) => {
    const h = new Sha256();
    const chunk = v.hex !== undefined ? hexToBytes(v.hex) : utf8Encode(v.text!);
    for (let i = 0; i < (v.repeat ?? 1); i += 1000) h.update(v.repeat ? utf8Encode(v.text!.repeat(Math.min(1000, v.repeat - i))) : chunk);
    t.is(bytesToHex(h.digest()), v.digest);
  });
}

for (const v of hmacVectors) {
  test(`hmac-sha256: ${v.name}`, (t) => {
    t.is(bytesToHex(hmacSha256(hexToBytes(v.key), hexToBytes(v.data))).slice(0, v.mac.length), v.mac);
  });
}

test("sha256: equals node:crypto for any message, whole or fed in arbitrary pieces", (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(700), { maxLength: 5 }), (data, cuts) => {
      const expected = createHash("sha256").update(data).digest("hex");
      if (bytesToHex(sha256(data)) !== expected) return false;
      const h = new Sha256();
      let at = 0;
      for (const cut of [...cuts].sort((a, b) => a - b)) {
        const end = Math.min(cut, data.length);
        if (end > at) h.update(data.subarray(at, end));
        at = Math.max(at, end);
      }
      h.update(data.subarray(at));
      return bytesToHex(h.digest()) === expected;
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test("hmac-sha256: equals node:crypto for any key (short, block-sized, long) and message", (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 300 }), (key, data) => {
      return bytesToHex(hmacSha256(key, data)) === createHmac("sha256", key).update(data).digest("hex");
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test("sha256: digest twice or update after digest is a TypeError", (t) => {
  const h = new Sha256().update(new Uint8Array(3));
  h.digest();
  t.throws(() => h.digest(), { instanceOf: TypeError });
  t.throws(() => h.update(new Uint8Array(1)), { instanceOf: TypeError });
});

test("utf8: encode and decode match Node for any string (lone surrogates become U+FFFD)", (t) => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 100 }), (s) => {
      const mine = utf8Encode(s);
      if (Buffer.compare(Buffer.from(mine), Buffer.from(s, "utf8")) !== 0) return false;
      return utf8Decode(mine) === Buffer.from(s, "utf8").toString("utf8");
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test("utf8: decoding rejects stray, truncated, overlong and surrogate sequences with MALFORMED_UTF8", (t) => {
  for (const hex of ["80", "c3", "e282", "c0af", "eda080", "f4908080", "ff"]) {
    t.throws(() => utf8Decode(hexToBytes(hex)), { code: "MALFORMED_UTF8" } as never, hex);
  }
});

test("base64: matches Node both ways for any bytes", (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 100 }), (data) => {
      const text = base64Encode(data);
      return text === Buffer.from(data).toString("base64") && Buffer.compare(Buffer.from(base64Decode(text)), Buffer.from(data)) === 0;
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test("base64: a key that is not canonical base64 is a UsageError that never echoes the key", (t) => {
  for (const bad of ["abc", "ab=c", "a$bc", "cGFzc3dvcmR=", "===="]) {
    const error = t.throws(() => base64Decode(bad, "the symmetric key"), { code: "MALFORMED_BASE64" } as never);
    t.false(error!.message.includes(bad), "the message must not repeat the input");
    t.true(error!.message.startsWith("the symmetric key"));
  }
});

test("urlEncode equals encodeURIComponent, and urlDecode inverts it, for any string", (t) => {
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 40 }), (s) => urlEncode(s) === encodeURIComponent(s) && urlDecode(urlEncode(s)) === s),
    { numRuns: 500 },
  );
  t.throws(() => urlDecode("%4"), { code: "MALFORMED_TOPIC" } as never);
  t.throws(() => urlDecode("%zz"), { code: "MALFORMED_TOPIC" } as never);
});
