/**
 * Throwaway certificates for tests: a CA and a server certificate it signed, made in memory with
 * @peculiar/x509 over Node's WebCrypto (ECDSA P-256, so generation takes milliseconds). The server
 * certificate names `localhost`, `127.0.0.1` and `::1`, plus any extra DNS names asked for (for
 * service names such as `hub-1.azure-devices.localhost` that a test maps to loopback).
 *
 * Everything is PEM text, ready for node:tls (`ca`, `cert`, `key`) or for files a broker reads
 * (the key is PKCS#8, which OpenSSL and so mosquitto read).
 */
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

export interface TestCertificates {
  /** The CA certificate: what a client trusts (`ca`). */
  readonly caCert: string;
  /** The CA private key, for a test that signs more certificates itself. */
  readonly caKey: string;
  /** The server certificate (leaf only), signed by the CA. */
  readonly serverCert: string;
  /** The server private key (PKCS#8 PEM). */
  readonly serverKey: string;
}

export interface TestCertificateOptions {
  /** Extra DNS names for the server certificate (wildcards allowed where TLS allows them). */
  readonly dnsNames?: readonly string[];
  /** Common name of the CA, so that two throwaway CAs are told apart in errors. */
  readonly caName?: string;
}

const algorithm: webcrypto.EcKeyGenParams & webcrypto.EcdsaParams = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const crypto = webcrypto;

function serial(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  bytes[0] &= 0x7f; // a positive INTEGER
  return Buffer.from(bytes).toString("hex");
}

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

/** Makes a fresh CA and a server certificate; both valid from an hour ago for a day. */
export async function createTestCertificates(options: TestCertificateOptions = {}): Promise<TestCertificates> {
  const notBefore = new Date(Date.now() - 3_600_000);
  const notAfter = new Date(Date.now() + 86_400_000);

  const caKeys = (await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name: `CN=${options.caName ?? "dps-device-runtime test CA"}`,
      notBefore,
      notAfter,
      signingAlgorithm: algorithm,
      keys: caKeys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey, false, crypto),
      ],
    },
    crypto,
  );

  const serverKeys = (await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const names: x509.JsonGeneralName[] = [
    { type: "dns", value: "localhost" },
    ...(options.dnsNames ?? []).map((value): x509.JsonGeneralName => ({ type: "dns", value })),
    { type: "ip", value: "127.0.0.1" },
    { type: "ip", value: "::1" },
  ];
  const server = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: "CN=localhost",
      issuer: ca.subject,
      notBefore,
      notAfter,
      signingAlgorithm: algorithm,
      publicKey: serverKeys.publicKey,
      signingKey: caKeys.privateKey,
      extensions: [
        new x509.SubjectAlternativeNameExtension(names),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey, false, crypto),
        await x509.SubjectKeyIdentifierExtension.create(serverKeys.publicKey, false, crypto),
      ],
    },
    crypto,
  );

  return {
    caCert: ca.toString("pem"),
    caKey: await privateKeyPem(caKeys.privateKey),
    serverCert: server.toString("pem"),
    serverKey: await privateKeyPem(serverKeys.privateKey),
  };
}
