/**
 * Published test vectors, shared by the Node tests and the XS tier.
 * SHA-256: FIPS 180-4 examples (NIST CSRC "SHA256.pdf") plus the empty and million-"a" messages.
 * HMAC-SHA256: RFC 4231 test cases 1-7 (case 5 is truncated to 128 bits by the RFC).
 */

export interface HashVector {
  name: string;
  /** The message as hex, or `repeat` of a UTF-8 string. */
  hex?: string;
  text?: string;
  repeat?: number;
  digest: string;
}

export const sha256Vectors: HashVector[] = [
  { name: "FIPS 180-4 one block (abc)", text: "abc", digest: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
  {
    name: "FIPS 180-4 two blocks (448 bits)",
    text: "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    digest: "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  },
  {
    name: "896-bit message",
    text: "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
    digest: "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
  },
  { name: "empty message", text: "", digest: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
  { name: "one million a", text: "a", repeat: 1_000_000, digest: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
];

export interface HmacVector {
  name: string;
  key: string;
  data: string;
  /** Expected MAC as hex; may be a prefix (RFC 4231 case 5 truncates). */
  mac: string;
}

export const hmacVectors: HmacVector[] = [
  {
    name: "RFC 4231 case 1",
    key: "0b".repeat(20),
    data: "4869205468657265",
    mac: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  },
  {
    name: "RFC 4231 case 2 (key shorter than the output)",
    key: "4a656665",
    data: "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
    mac: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  },
  {
    name: "RFC 4231 case 3",
    key: "aa".repeat(20),
    data: "dd".repeat(50),
    mac: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
  },
  {
    name: "RFC 4231 case 4",
    key: "0102030405060708090a0b0c0d0e0f10111213141516171819",
    data: "cd".repeat(50),
    mac: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
  },
  {
    name: "RFC 4231 case 5 (truncated to 128 bits)",
    key: "0c".repeat(20),
    data: "546573742057697468205472756e636174696f6e",
    mac: "a3b6167473100ee06e0c796c2955552b",
  },
  {
    name: "RFC 4231 case 6 (key longer than a block)",
    key: "aa".repeat(131),
    data: "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
    mac: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  },
  {
    name: "RFC 4231 case 7 (long key and long data)",
    key: "aa".repeat(131),
    data:
      "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f726974686d2e",
    mac: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
  },
];

/** docs/PROTOCOL.md's SAS vectors. */
export const sasVectors = {
  key: "cGFzc3dvcmQ=",
  idScope: "0neFEEDC0DE",
  registrationId: "myRegistrationId",
  expiry: 1578941692,
  signatureEncodedResource: "RhG6DlNDE8RoBLI4NnGGKNctS/8IYC339eQ3prAWc3Y=",
  signatureRawResource: "M4+pq5ITdNx//L956Jl30+OqL3j3M+UjOkdaKUn3hpA=",
  derivedKey: "EmETEWdwqAe/mz3WJdmjOEmq5G2ID39kzC7SFMnR/uo=",
};

export function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function bytesToHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
  return s;
}
