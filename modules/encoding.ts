/**
 * The encodings the core needs, written for plain ES2022 so that they run on any XS build (the
 * device's TextEncoder is a module there, not a global, and the test tier's XS has no
 * Uint8Array.fromBase64): UTF-8, standard base64 and URL-encoding as Azure's SAS tokens use it.
 */
import { PeerError, UsageError } from "./errors.js";

/** Encodes a string as UTF-8. Lone surrogates become U+FFFD, as TextEncoder does. */
export function utf8Encode(text: string): Uint8Array {
  let size = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) size += 1;
    else if (c < 0x800) size += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && isLow(text.charCodeAt(i + 1))) {
      size += 4;
      i++;
    } else size += 3;
  }
  const out = new Uint8Array(size);
  let o = 0;
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      out[o++] = c;
    } else if (c < 0x800) {
      out[o++] = 0xc0 | (c >> 6);
      out[o++] = 0x80 | (c & 0x3f);
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && isLow(text.charCodeAt(i + 1))) {
      c = 0x10000 + ((c - 0xd800) << 10) + (text.charCodeAt(++i) - 0xdc00);
      out[o++] = 0xf0 | (c >> 18);
      out[o++] = 0x80 | ((c >> 12) & 0x3f);
      out[o++] = 0x80 | ((c >> 6) & 0x3f);
      out[o++] = 0x80 | (c & 0x3f);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      out[o++] = 0xe0 | (c >> 12);
      out[o++] = 0x80 | ((c >> 6) & 0x3f);
      out[o++] = 0x80 | (c & 0x3f);
    }
  }
  return out;
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/**
 * Decodes UTF-8 strictly.
 * @throws PeerError MALFORMED_UTF8 on overlong forms, surrogates, truncated or stray bytes.
 */
export function utf8Decode(bytes: Uint8Array): string {
  let out = "";
  let chunk: number[] = [];
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let cp: number;
    let need: number;
    let min: number;
    if (b < 0x80) {
      cp = b;
      need = 0;
      min = 0;
    } else if (b >= 0xc2 && b <= 0xdf) {
      cp = b & 0x1f;
      need = 1;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      cp = b & 0x0f;
      need = 2;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      cp = b & 0x07;
      need = 3;
      min = 0x10000;
    } else {
      throw new PeerError("MALFORMED_UTF8", `invalid UTF-8: byte 0x${hex(b)} at offset ${i} cannot start a character`);
    }
    if (i + need >= bytes.length) {
      throw new PeerError("MALFORMED_UTF8", `invalid UTF-8: character at offset ${i} is truncated`);
    }
    for (let k = 1; k <= need; k++) {
      const next = bytes[i + k];
      if ((next & 0xc0) !== 0x80) {
        throw new PeerError("MALFORMED_UTF8", `invalid UTF-8: byte at offset ${i + k} should continue the character at ${i}`);
      }
      cp = (cp << 6) | (next & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      throw new PeerError("MALFORMED_UTF8", `invalid UTF-8: overlong or out-of-range character at offset ${i}`);
    }
    i += need + 1;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    } else chunk.push(cp);
    // XS passes apply's arguments on its stack: 256 at a time fits a device's (768 slots).
    if (chunk.length >= 256) {
      out += String.fromCharCode.apply(null, chunk);
      chunk = [];
    }
  }
  return out + String.fromCharCode.apply(null, chunk);
}

function hex(b: number): string {
  return (b < 16 ? "0" : "") + b.toString(16);
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
let decodeTable: Int16Array | undefined;

/** Encodes bytes as standard base64 with padding (RFC 4648 section 4). */
export function base64Encode(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64[n >> 18] + B64[(n >> 12) & 63] + "==";
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + "=";
  }
  return out;
}

/**
 * Decodes standard base64 (padding required, as Azure writes keys). `what` names the value in
 * the error message, which never repeats the input: it may be a key.
 * @throws UsageError MALFORMED_BASE64 when the text is not canonical base64.
 */
export function base64Decode(text: string, what = "value"): Uint8Array {
  if (!decodeTable) {
    decodeTable = new Int16Array(128).fill(-1);
    for (let i = 0; i < 64; i++) decodeTable[B64.charCodeAt(i)] = i;
  }
  const table = decodeTable;
  if (text.length % 4 !== 0) {
    throw new UsageError("MALFORMED_BASE64", `${what} is not valid base64: its length (${text.length}) is not a multiple of 4`);
  }
  let pad = 0;
  if (text.length > 0 && text[text.length - 1] === "=") pad = text[text.length - 2] === "=" ? 2 : 1;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    let n = 0;
    for (let k = 0; k < 4; k++) {
      const c = text.charCodeAt(i + k);
      const last = i + 4 === text.length;
      if (c === 61 /* = */ && last && k >= 4 - pad) {
        n <<= 6;
        continue;
      }
      const v = c < 128 ? table[c] : -1;
      if (v < 0) {
        throw new UsageError("MALFORMED_BASE64", `${what} is not valid base64: unexpected character at offset ${i + k}`);
      }
      n = (n << 6) | v;
    }
    out[o++] = (n >> 16) & 255;
    if (o < out.length) out[o++] = (n >> 8) & 255;
    if (o < out.length) out[o++] = n & 255;
  }
  if (pad > 0 && base64Encode(out) !== text) {
    throw new UsageError("MALFORMED_BASE64", `${what} is not valid base64: non-zero bits before the padding`);
  }
  return out;
}

/**
 * URL-encodes like encodeURIComponent (unreserved: A-Z a-z 0-9 - _ . ! ~ * ' ( )), with
 * uppercase hex. Written out rather than calling encodeURIComponent so that the exact output is
 * fixed by this project, whatever the engine.
 */
export function urlEncode(text: string): string {
  return encode(text, false);
}

/**
 * URL-encodes as azure-iot-common's `encodeUriComponentStrict` does (the official Node clients'
 * hub token `sr`): encodeURIComponent, then `! ' ( ) *` escaped too, each as `%` and
 * `charCodeAt(0).toString(16)`: `%21 %27 %28 %29` and a lowercase `%2a`.
 */
export function urlEncodeStrict(text: string): string {
  return encode(text, true);
}

function encode(text: string, strict: boolean): string {
  const bytes = utf8Encode(text);
  let out = "";
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if ((b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x5f || b === 0x2e || b === 0x7e) {
      out += String.fromCharCode(b);
    } else if (b === 0x21 || b === 0x2a || b === 0x27 || b === 0x28 || b === 0x29) {
      out += strict ? "%" + b.toString(16) : String.fromCharCode(b);
    } else {
      out += "%" + (b < 16 ? "0" : "") + b.toString(16).toUpperCase();
    }
  }
  return out;
}

/**
 * Decodes %XX escapes (either case) as UTF-8; `+` stays `+` (topics and SAS tokens use
 * percent-encoding only).
 * @throws PeerError MALFORMED_TOPIC on a broken escape, MALFORMED_UTF8 on bad UTF-8.
 */
export function urlDecode(text: string): string {
  if (text.indexOf("%") < 0) return text;
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x25) {
      const pair = text.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(pair)) {
        throw new PeerError("MALFORMED_TOPIC", `broken percent-escape at offset ${i}`);
      }
      bytes.push(parseInt(pair, 16));
      i += 2;
    } else {
      const enc = utf8Encode(text[i]);
      for (let k = 0; k < enc.length; k++) bytes.push(enc[k]);
    }
  }
  return utf8Decode(Uint8Array.from(bytes));
}

/** Constant-time comparison of two byte arrays of equal length (false if lengths differ). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Concatenates byte arrays. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let size = 0;
  for (let i = 0; i < parts.length; i++) size += parts[i].length;
  const out = new Uint8Array(size);
  for (let i = 0, o = 0; i < parts.length; o += parts[i].length, i++) out.set(parts[i], o);
  return out;
}
