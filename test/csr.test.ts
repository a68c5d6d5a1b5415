/**
 * Certificate requests (modules/csr.ts) checked by independent implementations: a request signed
 * with a real P-256 key (the desktop host's SoftwareKey) verifies with openssl (`req -verify`) and
 * with @peculiar/x509 over node's WebCrypto; certificates made by @peculiar/x509 (UTCTime and
 * GeneralizedTime) read back as node's X509Certificate reads them. The portable cases run on XS too.
 */
import test from "ava";
import { spawnSync } from "node:child_process";
import { webcrypto, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { certificateRequest, certificateRequestBase64, readCertificate } from "../modules/csr.js";
import { SoftwareKey } from "../hosts/desktop/certificate-key.js";
import { csrCases } from "./support/csr-cases.js";

x509.cryptoProvider.set(globalThis.crypto);

for (const c of csrCases) test(`csr case: ${c.name}`, (t) => t.is(c.run(), undefined));

test("csr: a request signed by a real P-256 key verifies with openssl req -verify and with @peculiar/x509; the subject is the registration id", async (t) => {
  const key = new SoftwareKey();
  const der = certificateRequest("sensor:01", key);
  const dir = mkdtempSync(join(tmpdir(), "csr-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "req.der"), der);
  const out = openssl(join(dir, "req.der"));
  t.regex(out, /verify OK/, "openssl: the self-signature verifies");
  t.regex(out, /subject=CN\s*=\s*sensor:01/);
  const parsed = new x509.Pkcs10CertificateRequest(der);
  t.true(await parsed.verify(), "the self-signature verifies");
  t.is(parsed.subject, "CN=sensor:01");
  t.true(await new x509.Pkcs10CertificateRequest(Buffer.from(certificateRequestBase64("sensor:01", key), "base64")).verify(), "the base64 form is the same request");
  // The key survives its PKCS#8 round trip (what the sealed cache will store).
  const again = new SoftwareKey(key.pkcs8());
  t.deepEqual(again.publicKey, key.publicKey);
  t.true(await new x509.Pkcs10CertificateRequest(certificateRequest("sensor:01", again)).verify());
});

test("csr: a request whose signature is corrupted fails openssl's verification (the check above can fail)", (t) => {
  const der = certificateRequest("sensor-01", new SoftwareKey());
  der[der.length - 5] ^= 0xff;
  const dir = mkdtempSync(join(tmpdir(), "csr-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "req.der"), der);
  const out = openssl(join(dir, "req.der"));
  t.regex(out, /verify failure/);
  t.notRegex(out, /verify OK/);
});

/** `openssl req -verify` of a DER request: its stdout and stderr (it exits 0 either way and says the verdict on stderr). */
function openssl(file: string): string {
  const r = spawnSync("openssl", ["req", "-inform", "DER", "-in", file, "-verify", "-noout", "-subject"], { encoding: "utf8" });
  return `${r.stdout}${r.stderr}`;
}

test("certificate: readCertificate agrees with node's X509Certificate on certificates with UTCTime and GeneralizedTime validity", async (t) => {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  for (const [from, to] of [
    [new Date("2026-12-01T00:00:00Z"), new Date("2027-01-01T12:30:45Z")],
    [new Date("2049-06-01T00:00:00Z"), new Date("2060-02-29T23:59:59Z")],
  ]) {
    const cert = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: "01", name: "CN=issued-device, O=Example", notBefore: from, notAfter: to, signingAlgorithm: alg, keys: keys as never });
    const der = new Uint8Array(cert.rawData);
    const summary = readCertificate(der);
    const node = new X509Certificate(der);
    t.is(summary.subjectCommonName, "issued-device");
    t.is(summary.notBefore, Date.parse(node.validFrom));
    t.is(summary.notAfter, Date.parse(node.validTo));
    t.is(summary.notAfter, to.getTime());
  }
});
