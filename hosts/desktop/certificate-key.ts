/**
 * A software ECC P-256 key on the desktop host, for certificate requests (modules/csr.ts): made
 * with node:crypto from the system's secure random source. The private key stays in this object
 * (and in `pkcs8()`, for whoever must store it sealed); it never reaches a log or an event.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign as signData, type KeyObject } from "node:crypto";
import type { CertificateKey } from "../../modules/csr.js";

export class SoftwareKey implements CertificateKey {
  readonly publicKey: Uint8Array;
  readonly #privateKey: KeyObject;

  /**
   * A new key, or the one whose PKCS#8 DER is given.
   * @throws Error for a key that is not ECC P-256.
   */
  constructor(pkcs8?: Uint8Array) {
    this.#privateKey = pkcs8 ? createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" }) : generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
    if (this.#privateKey.asymmetricKeyType !== "ec" || this.#privateKey.asymmetricKeyDetails?.namedCurve !== "prime256v1") throw new Error("SoftwareKey takes an ECC P-256 key");
    // A P-256 SubjectPublicKeyInfo ends with the 65-byte uncompressed point.
    const spki = createPublicKey(this.#privateKey).export({ format: "der", type: "spki" });
    this.publicKey = new Uint8Array(spki.subarray(spki.length - 65));
  }

  /** PKCS#8 PEM, for node:tls (never logged). */
  get tlsKey(): string {
    return this.#privateKey.export({ format: "pem", type: "pkcs8" }) as string;
  }

  sign(data: Uint8Array): Uint8Array {
    return new Uint8Array(signData("sha256", data, { key: this.#privateKey, dsaEncoding: "der" }));
  }

  /** The private key as PKCS#8 DER, to be stored sealed. */
  pkcs8(): Uint8Array {
    return new Uint8Array(this.#privateKey.export({ format: "der", type: "pkcs8" }));
  }
}
