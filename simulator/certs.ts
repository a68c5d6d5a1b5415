// The emulator's TLS identity: a private CA and a server certificate it signs, both ECDSA P-256
// (cheap handshakes), made at first start with @peculiar/x509 over WebCrypto and kept in the
// state directory so that devices and tests can trust `ca.pem` across runs.
//
// Several processes may start at once against the same directory (ava runs test files in
// parallel): the identity is written to a temporary file and hard-linked into place, so exactly one
// generation wins and every process then reads the winner's files.
import { X509Certificate as NodeX509, type webcrypto } from "node:crypto";
import { chmodSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";

export interface TlsIdentity {
  caPem: string;
  caPath: string;
  certPem: string;
  keyPem: string;
  /** The root CA's private key (PKCS#8 PEM): signs the issuing CA of simulator/issuance.ts. */
  caKeyPem: string;
}

const IDENTITY_FILE = "identity.json";
// 3: the root allows one CA below it (pathLenConstraint 1), for the issuing CA of simulator/issuance.ts.
const IDENTITY_VERSION = 3;
export const SERVER_NAMES = ["localhost", "*.azure-devices.localhost", "*.azure-devices-provisioning.localhost"];
export const SERVER_IPS = ["127.0.0.1", "::1"];

interface StoredIdentity {
  version: number;
  caPem: string;
  caKeyPem: string;
  certPem: string;
  keyPem: string;
}

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

/** Loads the identity from `stateDir`, creating it when absent, unreadable, or about to expire. */
export async function ensureTlsIdentity(stateDir: string): Promise<TlsIdentity> {
  mkdirSync(stateDir, { recursive: true });
  const path = join(stateDir, IDENTITY_FILE);
  let stored = readIdentity(path);
  if (!stored) {
    const fresh = await createIdentity();
    const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(temp, JSON.stringify(fresh), { mode: 0o600 });
    try {
      linkSync(temp, path); // fails with EEXIST when another process got there first
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      // Someone else's identity is in place; if it is unusable (stale or corrupt), replace it.
      if (!readIdentity(path)) renameSync(temp, path);
    } finally {
      rmSync(temp, { force: true });
    }
    stored = readIdentity(path) ?? fresh;
  }
  const caPath = join(stateDir, "ca.pem");
  let current: string | undefined;
  try {
    current = readFileSync(caPath, "utf8");
  } catch {
    current = undefined;
  }
  if (current !== stored.caPem) {
    const temp = `${caPath}.${process.pid}.tmp`;
    writeFileSync(temp, stored.caPem);
    renameSync(temp, caPath);
  }
  return { caPem: stored.caPem, caPath, certPem: stored.certPem, keyPem: stored.keyPem, caKeyPem: stored.caKeyPem };
}

function readIdentity(path: string): StoredIdentity | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as StoredIdentity;
    if (parsed.version !== IDENTITY_VERSION) return undefined;
    const cert = new NodeX509(parsed.certPem);
    const ca = new NodeX509(parsed.caPem);
    if (Date.parse(cert.validTo) - Date.now() < 7 * DAY_MS) return undefined;
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return undefined;
    return parsed;
  } catch {
    return undefined;
  }
}

async function createIdentity(): Promise<StoredIdentity> {
  x509.cryptoProvider.set(globalThis.crypto);
  const now = Date.now();
  const notBefore = new Date(now - DAY_MS); // tolerate a device clock a little behind
  const caKeys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: "CN=DPS Emulator Local CA, O=dps-device-runtime",
    notBefore,
    notAfter: new Date(now + 3650 * DAY_MS),
    signingAlgorithm: ALGORITHM,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
      // Self-referencing, as many public roots have it: the emulator sends the CA in its chain, and
      // some TLS stacks (the Moddable SDK's) read the AKI of every certificate they are sent.
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey, false),
    ],
  });
  const serverKeys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: "CN=localhost, O=dps-device-runtime emulator",
    issuer: ca.subject,
    notBefore,
    // Under 398 days: the longest lifetime some TLS clients accept for a server certificate.
    notAfter: new Date(now + 397 * DAY_MS),
    signingAlgorithm: ALGORITHM,
    publicKey: serverKeys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([
        ...SERVER_NAMES.map((value) => ({ type: "dns" as const, value })),
        ...SERVER_IPS.map((value) => ({ type: "ip" as const, value })),
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey, false),
      await x509.SubjectKeyIdentifierExtension.create(serverKeys.publicKey),
    ],
  });
  return {
    version: IDENTITY_VERSION,
    caPem: ca.toString("pem") + "\n",
    caKeyPem: await pkcs8Pem(caKeys.privateKey),
    certPem: server.toString("pem") + "\n",
    keyPem: await pkcs8Pem(serverKeys.privateKey),
  };
}

function serial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f; // a positive INTEGER
  return Buffer.from(bytes).toString("hex");
}

async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey("pkcs8", key));
  const body = der.toString("base64").replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`;
}

/** Restricts a file to its owner (best effort: not every file system has modes). */
export function restrict(path: string): void {
  try {
    chmodSync(path, 0o600);
  } catch {
    // A file system without POSIX modes: nothing more to do.
  }
}
