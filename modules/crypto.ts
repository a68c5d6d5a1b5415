/**
 * The crypto port: what the core needs from a host's cryptography. A host passes a native
 * implementation (node:crypto on the desktop, the SDK's `crypt` Digest on the device), or the
 * portable one (`portableCrypto` in sha256.ts) where it has none, as the XS test tier does. The
 * core imports only this interface, so firmware does not carry the portable SHA-256.
 */
export interface CryptoPort {
  /** HMAC-SHA256 of `message` under `key`; returns 32 bytes. Must not keep references to `key`. */
  hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array;
  /** SHA-256 of `data`; returns 32 bytes. */
  sha256(data: Uint8Array): Uint8Array;
}
