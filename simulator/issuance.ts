// Certificate issuance from a CSR (DPS API 2025-07-01-preview, Azure Device Registry certificate
// management): the device sends a PKCS#10 request with its register call, the emulator checks it
// and signs a client certificate with its "issuing CA" (ECDSA P-384, as Azure's issuing CAs are,
// chained to the emulator's root CA), and the assigned registration state carries the chain.
//
//   PUBLISH $dps/registrations/PUT/iotdps-register/?$rid=1      (user name ...api-version=2025-07-01-preview)
//     {"registrationId":"dev-1","csr":"MIIBFjCBvQIBADAQMQ4wDAYDVQQDDAVkZXYtMT..."}
//   ... PUBLISH $dps/registrations/res/200/?$rid=2
//     {"operationId":"4...","status":"assigned","registrationState":{...,
//      "issuedCertificateChain":["MIIB8jCCAXig...(leaf)","MIICGDCCAb6g...(issuing CA)"]}}
//
// The issuing CA is kept in `issuing-ca.json` beside the TLS identity (simulator/certs.ts), made
// with the same first-writer-wins hard link, and remade when the root it chains to changes.
import { createHash, createPrivateKey, createPublicKey, X509Certificate as NodeX509, type webcrypto } from "node:crypto";
import { linkSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import type { MalformedKind } from "./config.js";

const FILE = "issuing-ca.json";
const VERSION = 1;
const DAY_MS = 86_400_000;
const CA_ALGORITHM = { name: "ECDSA", namedCurve: "P-384", hash: "SHA-384" } as const;
/** The largest CSR taken (base64 text): an RSA 4096 request is under 2 KB of DER. */
export const CSR_MAX_CHARS = 8192;

interface StoredIssuingCa {
  version: number;
  /** SHA-256 of the root's DER: the issuing CA is remade when the root changes. */
  root: string;
  certPem: string;
  keyPem: string;
}

/** A leaf issued from a CSR: the chain as DPS returns it (base64 DER, leaf first) and its thumbprints. */
export interface IssuedCertificate {
  ok: true;
  chain: string[];
  /** SHA-256 of the leaf's DER, upper-case hex (what the hub records). */
  thumbprint: string;
  notAfter: string;
}
export interface RefusedCsr {
  ok: false;
  /** What is wrong with the request, for the 400 answer's message. */
  problem: string;
}
export type IssuanceResult = IssuedCertificate | RefusedCsr;

export interface IssuingCa {
  readonly certPem: string;
  readonly cert: NodeX509;
}

/** Loads or creates the issuing CA under `stateDir`, signed by the root (PEMs of simulator/certs.ts). */
export async function ensureIssuingCa(stateDir: string, root: { caPem: string; caKeyPem: string }): Promise<CertificateIssuer> {
  const path = join(stateDir, FILE);
  const rootThumb = thumbprintOf(new NodeX509(root.caPem).raw);
  let stored = readStored(path, root.caPem, rootThumb);
  if (!stored) {
    const fresh = await createIssuingCa(root, rootThumb);
    const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(temp, JSON.stringify(fresh), { mode: 0o600 });
    try {
      linkSync(temp, path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      if (!readStored(path, root.caPem, rootThumb)) renameSync(temp, path);
    } finally {
      rmSync(temp, { force: true });
    }
    stored = readStored(path, root.caPem, rootThumb) ?? fresh;
  }
  x509.cryptoProvider.set(globalThis.crypto);
  const key = await crypto.subtle.importKey("pkcs8", pemBody(stored.keyPem), { name: "ECDSA", namedCurve: "P-384" }, false, ["sign"]);
  return new CertificateIssuer(stored.certPem, key);
}

function readStored(path: string, rootPem: string, rootThumb: string): StoredIssuingCa | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as StoredIssuingCa;
    if (parsed.version !== VERSION || parsed.root !== rootThumb) return undefined;
    const cert = new NodeX509(parsed.certPem);
    const rootCert = new NodeX509(rootPem);
    if (Date.parse(cert.validTo) - Date.now() < 30 * DAY_MS) return undefined;
    if (!cert.checkIssued(rootCert) || !cert.verify(rootCert.publicKey)) return undefined;
    createPrivateKey(parsed.keyPem);
    return parsed;
  } catch {
    return undefined;
  }
}

async function createIssuingCa(root: { caPem: string; caKeyPem: string }, rootThumb: string): Promise<StoredIssuingCa> {
  x509.cryptoProvider.set(globalThis.crypto);
  const rootCert = new x509.X509Certificate(root.caPem);
  const rootKey = await crypto.subtle.importKey("pkcs8", pemBody(root.caKeyPem), { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  const keys = await crypto.subtle.generateKey(CA_ALGORITHM, true, ["sign", "verify"]);
  const now = Date.now();
  const notAfter = Math.min(now + 5 * 365 * DAY_MS, rootCert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: "CN=DPS Emulator Issuing CA, O=dps-device-runtime",
    issuer: rootCert.subject,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(notAfter),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" }, // the root's key is P-256
    publicKey: keys.publicKey,
    signingKey: rootKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootCert, false),
    ],
  });
  const der = Buffer.from(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return { version: VERSION, root: rootThumb, certPem: cert.toString("pem") + "\n", keyPem: toPem("PRIVATE KEY", der) };
}

/** Signs client certificates for CSRs that pass the checks. */
export class CertificateIssuer implements IssuingCa {
  readonly certPem: string;
  readonly cert: NodeX509;
  readonly #certDer: Buffer;
  readonly #peculiar: x509.X509Certificate;
  readonly #key: webcrypto.CryptoKey;

  constructor(certPem: string, key: webcrypto.CryptoKey) {
    this.certPem = certPem;
    this.cert = new NodeX509(certPem);
    this.#certDer = this.cert.raw;
    this.#peculiar = new x509.X509Certificate(certPem);
    this.#key = key;
  }

  /**
   * Checks a CSR (base64 DER PKCS#10) and signs a leaf for `registrationId` valid from a minute
   * before `nowMs` for `lifetimeSeconds`. Never throws: a request it cannot use is a RefusedCsr
   * whose problem says why (not base64, not a PKCS#10 request, a bad self-signature, a CN that is
   * not the registration id, a key that is not ECDSA P-256/P-384 or RSA 2048-4096).
   */
  async issue(csrBase64: string, registrationId: string, nowMs: number, lifetimeSeconds: number): Promise<IssuanceResult> {
    if (csrBase64.length === 0 || csrBase64.length > CSR_MAX_CHARS) return refuse(`csr must be 1 to ${CSR_MAX_CHARS} characters of base64`);
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(csrBase64) || csrBase64.length % 4 !== 0) return refuse("csr is not base64 (the DER of a PKCS#10 request, not PEM)");
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(Buffer.from(csrBase64, "base64"));
    } catch (error) {
      return refuse(`csr is not a PKCS#10 certificate request: ${(error as Error).message}`);
    }
    const keyProblem = checkKey(csr);
    if (keyProblem) return refuse(keyProblem);
    const names = csr.subjectName.getField("CN");
    if (names.length !== 1 || names[0] !== registrationId) {
      return refuse(`csr subject CN must be the registration id "${registrationId}", got ${names.length === 0 ? "no CN" : JSON.stringify(names.join(","))}`);
    }
    let signed: boolean;
    try {
      signed = await csr.verify();
    } catch (error) {
      return refuse(`csr signature cannot be checked: ${(error as Error).message}`);
    }
    if (!signed) return refuse("csr signature does not verify with the request's public key");
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: [{ CN: [registrationId] }],
      issuer: this.#peculiar.subject,
      notBefore: new Date(nowMs - 60_000),
      notAfter: new Date(nowMs + lifetimeSeconds * 1000),
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
      publicKey: csr.publicKey,
      signingKey: this.#key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
        await x509.AuthorityKeyIdentifierExtension.create(this.#peculiar, false),
        await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
      ],
    });
    const leaf = Buffer.from(cert.rawData);
    return { ok: true, chain: [leaf.toString("base64"), this.#certDer.toString("base64")], thumbprint: thumbprintOf(leaf), notAfter: cert.notAfter.toISOString() };
  }

  /**
   * Whether a client certificate (DER) was signed by this issuing CA and is valid at `nowMs`:
   * returns its SHA-256 thumbprint and subject CN, or a reason it is not.
   */
  check(der: Buffer, nowMs: number): { ok: true; thumbprint: string; commonName: string } | { ok: false; reason: string } {
    let cert: NodeX509;
    try {
      cert = new NodeX509(der);
    } catch {
      return { ok: false, reason: "not-a-certificate" };
    }
    if (!cert.checkIssued(this.cert) || !cert.verify(this.cert.publicKey)) return { ok: false, reason: "not-issued-by-emulator" };
    if (nowMs < Date.parse(cert.validFrom) || nowMs > Date.parse(cert.validTo)) return { ok: false, reason: "certificate-expired" };
    return { ok: true, thumbprint: thumbprintOf(der), commonName: commonNameOf(cert.subject) };
  }
}

function refuse(problem: string): RefusedCsr {
  return { ok: false, problem };
}

function checkKey(csr: x509.Pkcs10CertificateRequest): string | undefined {
  let key;
  try {
    key = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: "der", type: "spki" });
  } catch (error) {
    return `csr public key cannot be read: ${(error as Error).message}`;
  }
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "ec") {
    if (details.namedCurve === "prime256v1" || details.namedCurve === "secp384r1") return undefined;
    return `csr key must be ECDSA P-256 or P-384 (or RSA 2048), got curve ${details.namedCurve}`;
  }
  if (key.asymmetricKeyType === "rsa") {
    const bits = details.modulusLength ?? 0;
    if (bits >= 2048 && bits <= 4096) return undefined;
    return `csr RSA key must be 2048 to 4096 bits, got ${bits}`;
  }
  return `csr key must be ECDSA P-256 or P-384 or RSA 2048, got ${key.asymmetricKeyType}`;
}

/** The CN of a Node `subject` string ("O=x\nCN=dev-1"); "" when none. */
export function commonNameOf(subject: string): string {
  for (const line of subject.split("\n")) if (line.startsWith("CN=")) return line.slice(3);
  return "";
}

/** Upper-case hex SHA-256 of a certificate's DER. */
export function thumbprintOf(der: Buffer | Uint8Array): string {
  return createHash("sha256").update(der).digest("hex").toUpperCase();
}

/**
 * The `issuance` fault's broken chains: `truncated` (the leaf's DER cut in half), `wrong-types`
 * (the chain one string instead of an array), `bad-signature` (a byte of the leaf's signature
 * flipped: it parses but does not verify), `missing-issuer` (the leaf alone).
 */
export function breakChain(chain: string[], kind: MalformedKind): unknown {
  const leaf = Buffer.from(chain[0], "base64");
  switch (kind) {
    case "truncated":
      return [leaf.subarray(0, Math.floor(leaf.length / 2)).toString("base64"), ...chain.slice(1)];
    case "wrong-types":
      return chain.join(",");
    case "bad-signature": {
      const copy = Buffer.from(leaf);
      copy[copy.length - 1] ^= 0x01;
      return [copy.toString("base64"), ...chain.slice(1)];
    }
    case "missing-issuer":
      return [chain[0]];
    default:
      return chain;
  }
}

function serial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f;
  return Buffer.from(bytes).toString("hex");
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
}

function toPem(label: string, der: Buffer): string {
  const body = der.toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

// ---- X.509 attestation (certificates the device brings) ------------------------------------------

/** SHA-1 and SHA-256 thumbprints of a certificate, upper-case hex without separators. */
export function thumbprintsOf(der: Buffer | Uint8Array): [sha1: string, sha256: string] {
  return [createHash("sha1").update(der).digest("hex").toUpperCase(), thumbprintOf(der)];
}

/** A thumbprint as written in a config (hex, with or without colons or spaces, any case), normalised. */
export function normaliseThumbprint(text: string): string {
  return text.replace(/[\s:]/g, "").toUpperCase();
}

/**
 * Whether `leaf` chains to `anchor` through the `presented` certificates (those the device sent
 * after its leaf, in any order): each link issued by the next (names and signature), each issuer a
 * CA, every certificate valid at `nowMs`; at most 8 links. The anchor itself may be among the
 * presented ones or not.
 */
export function chainsTo(leaf: NodeX509, presented: readonly NodeX509[], anchor: NodeX509, nowMs: number): boolean {
  const valid = (c: NodeX509): boolean => nowMs >= Date.parse(c.validFrom) && nowMs <= Date.parse(c.validTo);
  if (!valid(anchor) || !anchor.ca) return false;
  let current = leaf;
  for (let depth = 0; depth < 8; depth++) {
    if (!valid(current)) return false;
    if (current.checkIssued(anchor) && current.verify(anchor.publicKey)) return true;
    const next = presented.find((c) => c !== current && c.ca && current.checkIssued(c) && current.verify(c.publicKey));
    if (!next) return false;
    current = next;
  }
  return false;
}
