/**
 * Portable cases of modules/der.ts and modules/csr.ts, run on Node (test/csr.test.ts) and on XS
 * (test/xs/csr.xs.ts): the DER writer's lengths and identifiers against X.690's own examples, the
 * request built with a fixed stand-in key (its bytes are compared between the engines), and the
 * certificate vector read back.
 */
import { base64Decode } from "../../modules/encoding.js";
import { DpsError } from "../../modules/errors.js";
import { oid, read, tlv } from "../../modules/der.js";
import { certificateRequest, readCertificate, type CertificateKey } from "../../modules/csr.js";
import { certificateVector, fixedKeyPoint, fixedSignature } from "../vectors/certificate.js";

export const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export const fixedKey: CertificateKey = { publicKey: fixedKeyPoint, sign: () => fixedSignature };

export interface Case {
  readonly name: string;
  /** Returns a problem, or undefined. */
  readonly run: () => string | undefined;
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    return error instanceof DpsError ? error.code : `untyped ${(error as Error).name}: ${(error as Error).message}`;
  }
  return "nothing thrown";
}

export const csrCases: Case[] = [
  {
    name: "der: lengths in their shortest form at 127, 128, 255, 256 and 65,536 bytes",
    run: () => {
      const heads = [127, 128, 255, 256, 65_536].map((n) => hex(tlv(0x04, new Uint8Array(n)).subarray(0, 5)));
      const want = ["047f000000", "048180000000".slice(0, 10), "0481ff0000", "0482010000", "0483010000"];
      return heads.join() === want.join() ? undefined : `${heads} != ${want}`;
    },
  },
  {
    name: "der: object identifiers as X.690 encodes them (commonName, ecdsa-with-SHA256, P-256, a big arc)",
    run: () => {
      const got = ["2.5.4.3", "1.2.840.10045.4.3.2", "1.2.840.10045.3.1.7", "2.999.3"].map((o) => hex(oid(o)));
      const want = ["0603550403", "06082a8648ce3d040302", "06082a8648ce3d030107", "0603883703"];
      return got.join() === want.join() ? undefined : `${got} != ${want}`;
    },
  },
  {
    name: "der: the reader refuses truncation, indefinite and non-minimal lengths, and a value past its container",
    run: () => {
      const bad = ["30", "3005020100", "3080", "30810100", "300402010002"].map((h) => codeOf(() => read(Uint8Array.from(h.match(/../g)!.map((x) => parseInt(x, 16))), 0, h === "300402010002" ? 4 : undefined)));
      return bad.every((c) => c === "MALFORMED_BODY") ? undefined : `codes ${bad}`;
    },
  },
  {
    name: "csr: a fixed key's request has the PKCS#10 structure, byte for byte on both engines",
    run: () => {
      const der = certificateRequest("sensor-01", fixedKey);
      const h = hex(der);
      // SEQUENCE { SEQUENCE { INTEGER 0, subject CN=sensor-01, SPKI (ecPublicKey, P-256), [0] {} }, ecdsa-with-SHA256, BIT STRING sig }
      const info = "3081" + h.slice(6, 8);
      if (!h.startsWith("3081") || !h.includes("0201003014311230100603550403" + "0c0973656e736f722d3031") || !h.includes("3059301306072a8648ce3d020106082a8648ce3d030107034200") || !h.includes("a000300a06082a8648ce3d040302034700" + hex(fixedSignature))) {
        return `unexpected structure ${info}: ${h}`;
      }
      return undefined;
    },
  },
  {
    name: "csr: a bad public key is INVALID_ARGUMENT; a signer that returns garbage is MALFORMED_BODY; an empty name INVALID_ARGUMENT",
    run: () => {
      const codes = [
        codeOf(() => certificateRequest("d", { publicKey: new Uint8Array(64), sign: () => fixedSignature })),
        codeOf(() => certificateRequest("d", { publicKey: fixedKeyPoint, sign: () => Uint8Array.of(1, 2, 3) })),
        codeOf(() => certificateRequest("", fixedKey)),
      ];
      return codes.join() === "INVALID_ARGUMENT,MALFORMED_BODY,INVALID_ARGUMENT" ? undefined : `codes ${codes}`;
    },
  },
  {
    name: "certificate: subject and issuer common names and validity read from the vector",
    run: () => {
      const s = readCertificate(base64Decode(certificateVector.base64));
      const want = { subjectCommonName: certificateVector.subjectCommonName, issuerCommonName: certificateVector.issuerCommonName, notBefore: certificateVector.notBefore, notAfter: certificateVector.notAfter };
      return JSON.stringify(s) === JSON.stringify(want) ? undefined : `${JSON.stringify(s)} != ${JSON.stringify(want)}`;
    },
  },
  {
    name: "certificate: every truncation of the vector, and every single-byte change of its header, is a typed error or a summary, never an untyped throw",
    run: () => {
      const der = base64Decode(certificateVector.base64);
      for (let n = 0; n < der.length; n++) {
        const c = codeOf(() => readCertificate(der.subarray(0, n)));
        if (c !== "MALFORMED_BODY" && c !== "MALFORMED_UTF8") return `truncated to ${n}: ${c}`;
      }
      for (let i = 0; i < Math.min(64, der.length); i++) {
        for (const v of [0x00, 0x80, 0xff]) {
          const copy = der.slice();
          copy[i] = v;
          const c = codeOf(() => readCertificate(copy));
          if (c.startsWith("untyped")) return `byte ${i} = ${v}: ${c}`;
        }
      }
      return undefined;
    },
  },
];
