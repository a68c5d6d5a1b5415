/**
 * The part of tweetnacl 1.0.3 (nacl-fast.js, public domain) that the runtime uses. At run time
 * `./tweetnacl.js` is the ES-module wrapper that scripts/build.mjs generates beside the compiled
 * modules (build/modules/tweetnacl.js); the UMD original cannot load on XS.
 *
 * Only secretbox (XSalsa20-Poly1305) is declared. The caller always passes the nonce, so
 * tweetnacl's own random source (which does not exist on XS) is never reached.
 */

/** `secretbox(message, nonce, key)`: the sealed box, `overheadLength` bytes longer than `message`. */
interface Secretbox {
  /**
   * Seals `message` under `key` (keyLength bytes) with `nonce` (nonceLength bytes). Returns a new
   * box (a view into a buffer of tweetnacl's own).
   * @throws TypeError when an argument is not a Uint8Array; Error on a wrong key or nonce size.
   */
  (message: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array;
  /**
   * Opens a box sealed by `secretbox`. Returns the message, or null when the box is too short or
   * does not authenticate under this key and nonce (tampered, truncated or foreign).
   * @throws TypeError when an argument is not a Uint8Array; Error on a wrong key or nonce size.
   */
  open(box: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | null;
  /** 32 */
  readonly keyLength: number;
  /** 24 */
  readonly nonceLength: number;
  /** 16: the Poly1305 tag */
  readonly overheadLength: number;
}

declare const nacl: {
  readonly secretbox: Secretbox;
};

export default nacl;
