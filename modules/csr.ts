/**
 * Certificate signing requests (PKCS#10, RFC 2986) for an operational certificate issued by DPS,
 * and the few fields of an X.509 certificate (RFC 5280) a device needs to plan its renewal. Opt-in:
 * the SAS path never loads it. The key is a port: a host's software key (node:crypto on the desktop)
 * or a secure element whose private key never leaves it; this module only asks it to sign.
 *
 *   CertificationRequest ::= SEQUENCE {
 *     certificationRequestInfo SEQUENCE {
 *       version 0, subject SEQUENCE { SET { SEQUENCE { 2.5.4.3 commonName, UTF8String "dev-1" } } },
 *       subjectPKInfo SEQUENCE { SEQUENCE { 1.2.840.10045.2.1 ecPublicKey, 1.2.840.10045.3.1.7 P-256 },
 *                                BIT STRING 04 || X || Y },
 *       attributes [0] { } },
 *     signatureAlgorithm SEQUENCE { 1.2.840.10045.4.3.2 ecdsa-with-SHA256 },
 *     signature BIT STRING ECDSA-Sig-Value }
 */
import { base64Encode, bytesEqual, utf8Decode } from "./encoding.js";
import { PeerError, UsageError, excerpt } from "./errors.js";
import { bitString, children, oid, read, sequence, set, smallInteger, TAG, tlv, utf8String, type Node } from "./der.js";

const OID_COMMON_NAME = "2.5.4.3";
const OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const OID_P256 = "1.2.840.10045.3.1.7";
const OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2";

/**
 * An ECC P-256 key the device holds. A secure element implements this without ever handing out
 * the private key.
 */
export interface CertificateKey {
  /** The public key as an uncompressed point: 65 bytes, 0x04 then X and Y. */
  readonly publicKey: Uint8Array;
  /** ECDSA with SHA-256 over `data` (the key hashes it), as a DER ECDSA-Sig-Value: SEQUENCE { r INTEGER, s INTEGER }. */
  sign(data: Uint8Array): Uint8Array;
  /** The handle the host's TLS takes for this key (a PEM on the desktop); without it no TLS client certificate. */
  readonly tlsKey?: unknown;
}

/**
 * The DER of a PKCS#10 request for `commonName` (the registration id, which DPS puts in the
 * issued certificate's subject), signed by `key`.
 * @throws UsageError INVALID_ARGUMENT for an empty or over-long name or a public key that is not
 *   an uncompressed P-256 point; the key's own errors; PeerError MALFORMED_BODY when the key's
 *   signature is not an ECDSA-Sig-Value.
 */
export function certificateRequest(commonName: string, key: CertificateKey): Uint8Array {
  if (typeof commonName !== "string" || commonName.length < 1 || commonName.length > 128) {
    throw new UsageError("INVALID_ARGUMENT", "the common name of a certificate request is the registration id: 1 to 128 characters");
  }
  const point = key.publicKey;
  if (!(point instanceof Uint8Array) || point.length !== 65 || point[0] !== 0x04) {
    throw new UsageError("INVALID_ARGUMENT", "the key's publicKey must be an uncompressed P-256 point (65 bytes starting with 0x04)");
  }
  const info = sequence([
    smallInteger(0),
    sequence([set([sequence([oid(OID_COMMON_NAME), utf8String(commonName)])])]),
    sequence([sequence([oid(OID_EC_PUBLIC_KEY), oid(OID_P256)]), bitString(point)]),
    tlv(0xa0, new Uint8Array(0)),
  ]);
  const signature = key.sign(info);
  checkEcdsaSignature(signature);
  return sequence([info, sequence([oid(OID_ECDSA_SHA256)]), bitString(signature)]);
}

/** The request as the DPS register payload carries it: base64 of the DER, no PEM armour. */
export function certificateRequestBase64(commonName: string, key: CertificateKey): string {
  return base64Encode(certificateRequest(commonName, key));
}

function checkEcdsaSignature(signature: Uint8Array): void {
  try {
    const top = read(signature, 0);
    const parts = top.tag === TAG.SEQUENCE && top.next === signature.length ? children(signature, top) : [];
    if (parts.length === 2 && parts[0].tag === TAG.INTEGER && parts[1].tag === TAG.INTEGER) return;
  } catch {
    // reported below
  }
  throw new PeerError("MALFORMED_BODY", "the key's signature is not a DER ECDSA-Sig-Value (SEQUENCE of two INTEGERs)");
}

/** What a device reads from a certificate (its own, issued by DPS, or a root of its trust store). */
export interface CertificateSummary {
  readonly subjectCommonName?: string;
  readonly issuerCommonName?: string;
  /** Validity, ms since 1970. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/**
 * Reads the subject and issuer common names and the validity of a DER X.509 certificate. It does
 * not verify anything: the TLS stack checks the chain; this is for planning a renewal.
 * @throws PeerError MALFORMED_BODY for anything that is not a certificate's structure.
 */
export function readCertificate(der: Uint8Array): CertificateSummary {
  const top = read(der, 0);
  if (top.tag !== TAG.SEQUENCE || top.next !== der.length) throw new PeerError("MALFORMED_BODY", "a certificate is one DER SEQUENCE");
  const tbs = children(der, top)[0];
  if (!tbs || tbs.tag !== TAG.SEQUENCE) throw new PeerError("MALFORMED_BODY", "a certificate starts with its TBSCertificate SEQUENCE");
  const fields = children(der, tbs);
  // [0] version is optional (v1 certificates have none).
  const i = fields[0]?.tag === 0xa0 ? 1 : 0;
  const issuer = fields[i + 2];
  const validity = fields[i + 3];
  const subject = fields[i + 4];
  if (!issuer || !validity || !subject || validity.tag !== TAG.SEQUENCE) throw new PeerError("MALFORMED_BODY", "a certificate's TBSCertificate lacks its issuer, validity or subject");
  const times = children(der, validity);
  if (times.length !== 2) throw new PeerError("MALFORMED_BODY", "a certificate's validity is two times");
  return { subjectCommonName: commonNameOf(der, subject), issuerCommonName: commonNameOf(der, issuer), notBefore: timeOf(der, times[0]), notAfter: timeOf(der, times[1]) };
}

function commonNameOf(der: Uint8Array, name: Node): string | undefined {
  if (name.tag !== TAG.SEQUENCE) throw new PeerError("MALFORMED_BODY", "a certificate's name is a SEQUENCE of RDNs");
  const cn = oid(OID_COMMON_NAME);
  const rdns = children(der, name);
  for (let r = 0; r < rdns.length; r++) {
    const attributes = children(der, rdns[r]);
    for (let a = 0; a < attributes.length; a++) {
      const parts = children(der, attributes[a]);
      if (parts.length !== 2 || parts[0].tag !== TAG.OID) continue;
      // The type's whole TLV starts where its AttributeTypeAndValue's contents do.
      if (bytesEqual(der.subarray(attributes[a].start, parts[0].next), cn)) return utf8Decode(der.subarray(parts[1].start, parts[1].end));
    }
  }
  return undefined;
}

/** UTCTime `YYMMDDHHMMSSZ` (RFC 5280 §4.1.2.5.1: 50–99 are 19xx) or GeneralizedTime `YYYYMMDDHHMMSSZ`. */
function timeOf(der: Uint8Array, node: Node): number {
  const text = utf8Decode(der.subarray(node.start, node.end));
  const m = node.tag === TAG.UTC_TIME ? /^([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z$/.exec(text) : node.tag === TAG.GENERALIZED_TIME ? /^([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z$/.exec(text) : null;
  if (!m) throw new PeerError("MALFORMED_BODY", `a certificate time that is not UTCTime or GeneralizedTime in UTC: "${excerpt(text, 20)}"`);
  let year = Number(m[1]);
  if (node.tag === TAG.UTC_TIME) year += year >= 50 ? 1900 : 2000;
  return Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}
