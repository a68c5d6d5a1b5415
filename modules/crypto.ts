/**
 * The crypto port: what the core needs from a host's cryptography. A host passes a native
 * implementation (node:crypto on the desktop, the SDK's `crypt` Digest on the device); where it
 * passes nothing the portable code in sha256.ts serves.
 */
import { hmacSha256, sha256 } from "./sha256.js";

export interface CryptoPort {
  /** HMAC-SHA256 of `message` under `key`; returns 32 bytes. Must not keep references to `key`. */
  hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array;
  /** SHA-256 of `data`; returns 32 bytes. */
  sha256(data: Uint8Array): Uint8Array;
}

/** The portable implementation, frozen so that no caller can swap its methods. */
export const portableCrypto: CryptoPort = Object.freeze({ hmacSha256, sha256 });
