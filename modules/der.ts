/**
 * The little of ASN.1 DER (ITU-T X.690) that certificate requests and certificates need: a writer
 * of definite-length TLVs, and a reader that walks them without copying. Opt-in with the
 * certificate modules (csr.ts); the SAS path never loads it.
 *
 *   30 0b              SEQUENCE, 11 bytes
 *      06 03 55 04 03  OBJECT IDENTIFIER 2.5.4.3 (commonName)
 *      0c 04 64 65 76 31  UTF8String "dev1"
 */
import { utf8Encode } from "./encoding.js";
import { PeerError, UsageError } from "./errors.js";

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One TLV: the tag, then the length in the shortest form (X.690 §8.1.3, §10.1), then the contents. */
export function tlv(tag: number, content: Uint8Array): Uint8Array {
  const n = content.length;
  const lengthBytes = n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x1000000 ? 4 : 0;
  if (lengthBytes === 0) throw new UsageError("OVERSIZE", `a DER value of ${n} bytes is over the 16 MiB this writer handles`);
  const out = new Uint8Array(1 + lengthBytes + n);
  out[0] = tag;
  if (n < 0x80) out[1] = n;
  else {
    out[1] = 0x80 | (lengthBytes - 1);
    for (let i = 0; i < lengthBytes - 1; i++) out[2 + i] = (n >>> (8 * (lengthBytes - 2 - i))) & 0xff;
  }
  out.set(content, 1 + lengthBytes);
  return out;
}

/** The parts one after the other (the contents of a SEQUENCE or SET). */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (let i = 0; i < parts.length; i++) n += parts[i].length;
  const out = new Uint8Array(n);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    out.set(parts[i], at);
    at += parts[i].length;
  }
  return out;
}

export function sequence(parts: readonly Uint8Array[]): Uint8Array {
  return tlv(TAG.SEQUENCE, concat(parts));
}

export function set(parts: readonly Uint8Array[]): Uint8Array {
  return tlv(TAG.SET, concat(parts));
}

/**
 * An OBJECT IDENTIFIER from its dotted form (X.690 §8.19): the first two arcs in one byte, each
 * later arc in base 128, high bit set on all but its last byte.
 * @throws UsageError INVALID_ARGUMENT for a malformed identifier.
 */
export function oid(dotted: string): Uint8Array {
  const arcs = dotted.split(".");
  const bytes: number[] = [];
  const first = Number(arcs[0]);
  const second = Number(arcs[1]);
  if (arcs.length < 2 || !(first >= 0 && first <= 2) || !(second >= 0 && (first === 2 || second < 40))) {
    throw new UsageError("INVALID_ARGUMENT", `"${dotted}" is not an object identifier`);
  }
  for (let i = 1; i < arcs.length; i++) {
    let value = i === 1 ? first * 40 + second : Number(arcs[i]);
    if (!/^[0-9]{1,9}$/.test(arcs[i]) || !Number.isInteger(value)) throw new UsageError("INVALID_ARGUMENT", `"${dotted}" is not an object identifier`);
    const group: number[] = [value & 0x7f];
    value = Math.floor(value / 128);
    while (value > 0) {
      group.unshift((value & 0x7f) | 0x80);
      value = Math.floor(value / 128);
    }
    for (let k = 0; k < group.length; k++) bytes.push(group[k]);
  }
  return tlv(TAG.OID, Uint8Array.from(bytes));
}

/** A small non-negative INTEGER (a version number). */
export function smallInteger(value: number): Uint8Array {
  if (!(Number.isInteger(value) && value >= 0 && value < 128)) throw new UsageError("INVALID_ARGUMENT", "smallInteger takes 0..127");
  return tlv(TAG.INTEGER, Uint8Array.of(value));
}

export function utf8String(text: string): Uint8Array {
  return tlv(TAG.UTF8_STRING, utf8Encode(text));
}

/** A BIT STRING of whole bytes (no unused bits). */
export function bitString(bytes: Uint8Array): Uint8Array {
  const content = new Uint8Array(bytes.length + 1);
  content.set(bytes, 1);
  return tlv(TAG.BIT_STRING, content);
}

/** A TLV as read: its tag, and where its contents start and end in the buffer. */
export interface Node {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
  /** The byte after the whole TLV. */
  readonly next: number;
}

/**
 * Reads the TLV at `at` of `bytes`, within `limit` (default the buffer's end): definite lengths
 * only, in their shortest form, as DER requires.
 * @throws PeerError MALFORMED_BODY for a truncated or non-DER encoding.
 */
export function read(bytes: Uint8Array, at: number, limit = bytes.length): Node {
  if (at + 2 > limit) throw new PeerError("MALFORMED_BODY", `DER: truncated at offset ${at}`);
  const tag = bytes[at];
  if ((tag & 0x1f) === 0x1f) throw new PeerError("MALFORMED_BODY", `DER: a high tag number at offset ${at} is not used here`);
  let length = bytes[at + 1];
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4 || start + count > limit) throw new PeerError("MALFORMED_BODY", `DER: a length of ${count} bytes at offset ${at}`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[start + i];
    if (length < 0x80 || (count > 1 && bytes[start] === 0)) throw new PeerError("MALFORMED_BODY", `DER: a length not in its shortest form at offset ${at}`);
    start += count;
  }
  const end = start + length;
  if (end > limit) throw new PeerError("MALFORMED_BODY", `DER: a value of ${length} bytes at offset ${at} runs past its container`);
  return { tag, start, end, next: end };
}

/** The children of a constructed TLV, in order. @throws PeerError MALFORMED_BODY. */
export function children(bytes: Uint8Array, parent: Node): Node[] {
  const out: Node[] = [];
  for (let at = parent.start; at < parent.end; ) {
    const node = read(bytes, at, parent.end);
    out.push(node);
    at = node.next;
  }
  return out;
}

/** The bytes of a TLV, whole (tag and length included), without copying. */
export function whole(bytes: Uint8Array, at: number, node: Node): Uint8Array {
  return bytes.subarray(at, node.next);
}
