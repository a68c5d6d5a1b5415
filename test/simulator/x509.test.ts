// Certificates at the emulator: a CSR in the register request (DPS API 2025-07-01-preview) gets a
// client certificate signed by the emulator's issuing CA, checked here independently of the
// emulator's code (node:crypto's X509Certificate and `openssl verify`); bad CSRs get 400; the
// lifetime setting and the `issuance` fault step; then the hub taking the issued certificate.
import test from "ava";
import { execFileSync } from "node:child_process";
import { webcrypto, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { dpsDevice, keyFor, RawClient, withEmulator, type DpsAnswer } from "./helpers.js";
import { officialRegisterX509 } from "./interop.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;
const API = "2025-07-01-preview";
const subtle = webcrypto.subtle;

test.before(async () => {
  em = await withEmulator({ seed: 7 });
  x509.cryptoProvider.set(webcrypto as never);
});
test.after.always(async () => {
  await em?.dispose();
});

type KeyKind = "P-256" | "P-384" | "RSA-2048";
const ALGORITHMS = {
  "P-256": { gen: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } },
  "P-384": { gen: { name: "ECDSA", namedCurve: "P-384" }, sign: { name: "ECDSA", hash: "SHA-384" } },
  "RSA-2048": {
    gen: { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    sign: { name: "RSASSA-PKCS1-v1_5" },
  },
} as const;

/** A CSR (base64 DER) for `cn`, and its private key as PKCS#8 PEM. */
async function makeCsr(cn: string, kind: KeyKind = "P-256"): Promise<{ csr: string; keyPem: string }> {
  const a = ALGORITHMS[kind];
  const keys = (await subtle.generateKey(a.gen as webcrypto.EcKeyGenParams, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const request = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${cn}`, keys: keys as never, signingAlgorithm: a.sign });
  const pkcs8 = Buffer.from(await subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
  return { csr: Buffer.from(request.rawData).toString("base64"), keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8.replace(/(.{64})/g, "$1\n")}\n-----END PRIVATE KEY-----\n` };
}

/** Enrols `id` (symmetric key), registers with a body carrying `csr` over API 2025-07-01-preview and polls to the end. */
async function registerWithCsr(id: string, body: Record<string, unknown>, apiVersion = API): Promise<DpsAnswer> {
  em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id) });
  const device = await dpsDevice(em, id, keyFor(id), { username: `${em.idScope}/registrations/${id}/api-version=${apiVersion}` });
  try {
    let answer = await device.register(undefined, JSON.stringify({ registrationId: id, ...body }));
    for (let i = 0; i < 10 && answer.status === 202; i++) answer = await device.poll(answer.json.operationId);
    return answer;
  } finally {
    device.client.end();
  }
}

function pem(base64: string): string {
  return `-----BEGIN CERTIFICATE-----\n${base64.replace(/(.{64})/g, "$1\n")}\n-----END CERTIFICATE-----\n`;
}

test("issuance: a P-256 CSR gets a leaf for the registration id, signed by the issuing CA, that node:crypto and openssl verify as a client certificate", async (t) => {
  const { csr } = await makeCsr("csr-dev-1");
  const answer = await registerWithCsr("csr-dev-1", { csr, payload: { model: "m1" } });
  t.is(answer.status, 200);
  t.is(answer.json.status, "assigned");
  const chain = answer.json.registrationState.issuedCertificateChain as string[];
  t.is(chain.length, 2);
  const leaf = new X509Certificate(Buffer.from(chain[0], "base64"));
  const issuing = new X509Certificate(Buffer.from(chain[1], "base64"));
  const root = new X509Certificate(em.caPem);
  t.is(issuing.toString(), new X509Certificate(em.issuingCaPem).toString());
  t.true(leaf.verify(issuing.publicKey));
  t.true(issuing.verify(root.publicKey));
  t.true(leaf.checkIssued(issuing));
  t.is(leaf.subject, "CN=csr-dev-1");
  t.false(leaf.ca);
  t.deepEqual(leaf.keyUsage, ["1.3.6.1.5.5.7.3.2"]); // Node's keyUsage is the extended key usage: clientAuth
  t.true(issuing.ca);
  t.is(issuing.publicKey.asymmetricKeyDetails?.namedCurve, "secp384r1");
  const lifetime = Date.parse(leaf.validTo) - Date.parse(leaf.validFrom);
  t.true(Math.abs(lifetime - (7 * 86_400_000 + 60_000)) <= 1000, `lifetime ${lifetime} ms`);
  t.true(Date.parse(leaf.validFrom) <= Date.now());
  // openssl, with only the root trusted: the issuing CA comes from the chain.
  const dir = mkdtempSync(join(tmpdir(), "x509-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "root.pem"), em.caPem);
  writeFileSync(join(dir, "issuing.pem"), pem(chain[1]));
  writeFileSync(join(dir, "leaf.pem"), pem(chain[0]));
  const out = execFileSync("/usr/bin/openssl", ["verify", "-CAfile", join(dir, "root.pem"), "-untrusted", join(dir, "issuing.pem"), "-purpose", "sslclient", join(dir, "leaf.pem")], { encoding: "utf8" });
  t.regex(out, /leaf\.pem: OK/);
  const text = execFileSync("/usr/bin/openssl", ["x509", "-in", join(dir, "leaf.pem"), "-noout", "-text"], { encoding: "utf8" });
  t.regex(text, /CA:FALSE/);
  t.regex(text, /Digital Signature/);
  t.regex(text, /TLS Web Client Authentication/);
  // Recorded on the hub device and the registration; the payload is kept as sent.
  const record = em.registration("csr-dev-1");
  t.is(record?.issuedCertificate?.thumbprint, leaf.fingerprint256.replaceAll(":", ""));
  t.deepEqual(record?.requestPayload, { model: "m1" });
  t.true((em.counters().dps["csr-issued"] ?? 0) >= 1);
});

test("issuance: P-384 and RSA 2048 CSRs are accepted too", async (t) => {
  for (const kind of ["P-384", "RSA-2048"] as const) {
    const id = `csr-${kind.toLowerCase()}`;
    const { csr } = await makeCsr(id, kind);
    const answer = await registerWithCsr(id, { csr });
    t.is(answer.status, 200, kind);
    const leaf = new X509Certificate(Buffer.from(answer.json.registrationState.issuedCertificateChain[0], "base64"));
    t.is(leaf.subject, `CN=${id}`);
    t.is(leaf.publicKey.asymmetricKeyType, kind === "RSA-2048" ? "rsa" : "ec");
  }
});

test("issuance: a CSR whose CN is not the registration id, one with a broken signature, and one that is not a CSR get 400 (400004) saying what is wrong", async (t) => {
  const wrongCn = await registerWithCsr("csr-wrong-cn", { csr: (await makeCsr("someone-else")).csr });
  t.is(wrongCn.status, 400);
  t.is(wrongCn.json.errorCode, 400004);
  t.regex(wrongCn.json.message, /CN must be the registration id "csr-wrong-cn", got "someone-else"/);
  const der = Buffer.from((await makeCsr("csr-bad-sig")).csr, "base64");
  der[der.length - 1] ^= 0x01; // the last byte of the ECDSA signature
  const badSig = await registerWithCsr("csr-bad-sig", { csr: der.toString("base64") });
  t.is(badSig.status, 400);
  t.regex(badSig.json.message, /signature/);
  const junk = await registerWithCsr("csr-junk", { csr: Buffer.from("not a certificate request").toString("base64") });
  t.is(junk.status, 400);
  t.regex(junk.json.message, /not a PKCS#10/);
  const pemText = await registerWithCsr("csr-pem", { csr: "-----BEGIN CERTIFICATE REQUEST-----" });
  t.is(pemText.status, 400);
  t.regex(pemText.json.message, /not base64/);
  t.is(em.registration("csr-wrong-cn"), undefined);
});

test("issuance: an older api-version ignores the csr (no chain in the answer)", async (t) => {
  const { csr } = await makeCsr("csr-old-api");
  const answer = await registerWithCsr("csr-old-api", { csr }, "2021-06-01");
  t.is(answer.status, 200);
  t.is(answer.json.registrationState.issuedCertificateChain, undefined);
});

test("issuance: certificateIssuance.lifetimeSeconds sets the leaf's lifetime; enabled false refuses CSRs with 400", async (t) => {
  const short = await withEmulator({ config: { idScope: "0ne0000life", hubs: [{ hostName: "hub-1.azure-devices.localhost" }], retryAfterSeconds: 0, certificateIssuance: { lifetimeSeconds: 30 } } });
  t.teardown(() => short.dispose());
  short.addIndividualEnrollment({ registrationId: "short-lived", primaryKey: keyFor("short-lived") });
  const device = await dpsDevice(short, "short-lived", keyFor("short-lived"), { username: `${short.idScope}/registrations/short-lived/api-version=${API}` });
  t.teardown(() => device.client.end());
  const accepted = await device.register(undefined, JSON.stringify({ registrationId: "short-lived", csr: (await makeCsr("short-lived")).csr }));
  const answer = await device.poll(accepted.json.operationId);
  const leaf = new X509Certificate(Buffer.from(answer.json.registrationState.issuedCertificateChain[0], "base64"));
  t.is(Date.parse(leaf.validTo) - Date.parse(leaf.validFrom), 90_000); // a minute back for clock skew, 30 s ahead
  t.true(Math.abs(Date.parse(leaf.validTo) - (Date.now() + 30_000)) < 3000);

  const off = await withEmulator({ config: { idScope: "0ne00000off", hubs: [{ hostName: "hub-1.azure-devices.localhost" }], certificateIssuance: { enabled: false } } });
  t.teardown(() => off.dispose());
  off.addIndividualEnrollment({ registrationId: "no-issuance", primaryKey: keyFor("no-issuance") });
  const d2 = await dpsDevice(off, "no-issuance", keyFor("no-issuance"), { username: `${off.idScope}/registrations/no-issuance/api-version=${API}` });
  t.teardown(() => d2.client.end());
  const refused = await d2.register(undefined, JSON.stringify({ registrationId: "no-issuance", csr: (await makeCsr("no-issuance")).csr }));
  t.is(refused.status, 400);
  t.regex(refused.json.message, /not enabled/);
});

test("issuance fault: status refuses the CSR with that status; malformed breaks the chain of an assigned answer", async (t) => {
  const refusedRule = em.addFault({ step: "issuance", registrationId: "csr-fault-status", status: 503, times: 1 });
  const refused = await registerWithCsr("csr-fault-status", { csr: (await makeCsr("csr-fault-status")).csr });
  t.is(refused.status, 503);
  t.is(refused.json.errorCode, 503001);
  em.removeFault(refusedRule);
  const kinds = ["truncated", "wrong-types", "bad-signature", "missing-issuer"] as const;
  for (const kind of kinds) {
    const id = `csr-fault-${kind}`;
    em.addFault({ step: "issuance", registrationId: id, malformed: kind, times: 1 });
    const answer = await registerWithCsr(id, { csr: (await makeCsr(id)).csr });
    t.is(answer.status, 200, kind);
    t.is(answer.json.status, "assigned", kind);
    const chain = answer.json.registrationState.issuedCertificateChain;
    if (kind === "wrong-types") {
      t.is(typeof chain, "string");
      continue;
    }
    if (kind === "missing-issuer") {
      t.is(chain.length, 1);
      continue;
    }
    const issuing = new X509Certificate(em.issuingCaPem);
    if (kind === "truncated") t.throws(() => new X509Certificate(Buffer.from(chain[0], "base64")));
    else t.false(new X509Certificate(Buffer.from(chain[0], "base64")).verify(issuing.publicKey));
  }
  t.true((em.counters().faults.issuance ?? 0) >= 5);
  t.throws(() => em.addFault({ step: "register", malformed: "bad-signature" }), { message: /at step register must be one of/ });
  t.throws(() => em.addFault({ step: "issuance", malformed: "non-json" }), { message: /at step issuance must be one of/ });
});

/** A TLS MQTT connection to the hub with a client certificate and an empty password; returns the client and the CONNACK code. */
async function hubWithCertificate(hub: string, deviceId: string, cert: string, key: string): Promise<{ client: RawClient; returnCode: number }> {
  const client = await RawClient.open(em.endpoints.hub.tlsPort, { tls: { ca: em.caPem, servername: hub, cert, key } });
  const connack = await client.connect({ clientId: deviceId, username: `${hub}/${deviceId}/?api-version=2021-04-12` });
  return { client, returnCode: connack.returnCode ?? -1 };
}

test("hub x509: a device connects with the certificate DPS issued it (empty password) and sends telemetry; a certificate from another CA, or issued to another device, gets CONNACK 5", async (t) => {
  const { csr, keyPem } = await makeCsr("x509-hub-dev");
  const answer = await registerWithCsr("x509-hub-dev", { csr });
  const state = answer.json.registrationState;
  const chainPem = (state.issuedCertificateChain as string[]).map(pem).join("");
  const ok = await hubWithCertificate(state.assignedHub, state.deviceId, chainPem, keyPem);
  t.teardown(() => ok.client.end());
  t.is(ok.returnCode, 0);
  await ok.client.publish(`devices/${state.deviceId}/messages/events/`, JSON.stringify({ t: 21.5 }));
  t.true(em.telemetry(state.deviceId).some((m) => JSON.stringify(m).includes("21.5")));

  // Self-signed, same CN and key type: not from the emulator's issuing CA.
  const keys = (await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const foreign = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: `CN=${state.deviceId}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    keys: keys as never,
    extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])],
  });
  const foreignKey = Buffer.from(await subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
  const refused = await hubWithCertificate(state.assignedHub, state.deviceId, foreign.toString("pem"), `-----BEGIN PRIVATE KEY-----\n${foreignKey}\n-----END PRIVATE KEY-----\n`);
  t.teardown(() => refused.client.end());
  t.is(refused.returnCode, 5);

  // Another device's issued certificate, presented for this device.
  const other = await makeCsr("x509-hub-other");
  const otherAnswer = await registerWithCsr("x509-hub-other", { csr: other.csr });
  const otherPem = (otherAnswer.json.registrationState.issuedCertificateChain as string[]).map(pem).join("");
  const wrongDevice = await hubWithCertificate(state.assignedHub, state.deviceId, otherPem, other.keyPem);
  t.teardown(() => wrongDevice.client.end());
  t.is(wrongDevice.returnCode, 5);

  // Without a certificate, an empty password is refused as before.
  const none = await RawClient.open(em.endpoints.hub.tlsPort, { tls: { ca: em.caPem, servername: state.assignedHub } });
  t.teardown(() => none.end());
  t.is((await none.connect({ clientId: state.deviceId, username: `${state.assignedHub}/${state.deviceId}/?api-version=2021-04-12` })).returnCode, 5);
});

/** A certificate for `cn` signed by `issuer` (self-signed when absent); CA when `ca`. PEMs of the certificate and its key. */
async function makeCert(cn: string, options: { issuer?: { certPem: string; keys: webcrypto.CryptoKeyPair }; ca?: boolean; notAfter?: Date } = {}): Promise<{ certPem: string; keyPem: string; keys: webcrypto.CryptoKeyPair }> {
  const keys = (await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const extensions = options.ca
    ? [new x509.BasicConstraintsExtension(true, 1, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature, true)]
    : [new x509.BasicConstraintsExtension(false, undefined, true), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])];
  const common = {
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString("hex").replace(/^[89a-f]/, "1"),
    notBefore: new Date(Date.now() - 60_000),
    notAfter: options.notAfter ?? new Date(Date.now() + 86_400_000),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions,
  };
  const cert = options.issuer
    ? await x509.X509CertificateGenerator.create({
        ...common,
        subject: `CN=${cn}`,
        issuer: new x509.X509Certificate(options.issuer.certPem).subject,
        publicKey: keys.publicKey as never,
        signingKey: options.issuer.keys.privateKey as never,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ ...common, name: `CN=${cn}`, keys: keys as never });
  const pkcs8 = Buffer.from(await subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
  return { certPem: cert.toString("pem") + "\n", keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`, keys };
}

test("x509 attestation: the official client (X509Security) provisions an individual enrollment by certificate and one by thumbprint, then connects to the hub with the same certificate", async (t) => {
  const host = `127.0.0.1:${em.endpoints.dps.tlsPort}`;
  const byCert = await makeCert("x509-individual");
  em.addIndividualEnrollment({ registrationId: "x509-individual", x509: { certificate: byCert.certPem } });
  const state = await officialRegisterX509(host, em.idScope, "x509-individual", byCert.certPem, byCert.keyPem, em.caPem);
  t.like(state, { registrationId: "x509-individual", deviceId: "x509-individual", status: "assigned" });

  const byThumb = await makeCert("x509-thumb");
  const sha1 = new X509Certificate(byThumb.certPem).fingerprint; // AB:CD:... form
  em.addIndividualEnrollment({ registrationId: "x509-thumb", x509: { thumbprint: sha1 } });
  t.like(await officialRegisterX509(host, em.idScope, "x509-thumb", byThumb.certPem, byThumb.keyPem, em.caPem), { status: "assigned" });

  const hub = await hubWithCertificate(state.assignedHub, "x509-individual", byCert.certPem, byCert.keyPem);
  t.teardown(() => hub.client.end());
  t.is(hub.returnCode, 0);
});

test("x509 attestation: a group member whose certificate chains to the group's CA through an intermediate it sends provisions; a certificate from another CA, or with a CN that is not the registration id, gets 401", async (t) => {
  const host = `127.0.0.1:${em.endpoints.dps.tlsPort}`;
  const root = await makeCert("x509 group root", { ca: true });
  const intermediate = await makeCert("x509 group intermediate", { ca: true, issuer: { certPem: root.certPem, keys: root.keys } });
  em.addGroupEnrollment({ groupId: "x509-group", x509: { caCertificate: root.certPem } });
  const member = await makeCert("x509-member-1", { issuer: { certPem: intermediate.certPem, keys: intermediate.keys } });
  const state = await officialRegisterX509(host, em.idScope, "x509-member-1", member.certPem + intermediate.certPem, member.keyPem, em.caPem);
  t.like(state, { registrationId: "x509-member-1", status: "assigned" });
  t.is(em.registration("x509-member-1")?.enrollment.kind, "group");

  const stranger = await makeCert("x509-stranger");
  const refused = await officialRegisterX509(host, em.idScope, "x509-stranger", stranger.certPem, stranger.keyPem, em.caPem).catch((e: unknown) => e);
  t.true(refused instanceof Error);
  t.regex(String((refused as { name?: string }).name), /Unauthorized/);

  // Raw: the registration id differs from the certificate's CN, and the password is empty.
  const wrongCn = await makeCert("x509-member-2", { issuer: { certPem: intermediate.certPem, keys: intermediate.keys } });
  const client = await RawClient.open(em.endpoints.dps.tlsPort, { tls: { ca: em.caPem, cert: wrongCn.certPem + intermediate.certPem, key: wrongCn.keyPem } });
  t.teardown(() => client.end());
  t.is((await client.connect({ clientId: "x509-member-3", username: `${em.idScope}/registrations/x509-member-3/api-version=2021-06-01` })).returnCode, 0);
  await client.subscribe("$dps/registrations/res/#");
  await client.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", JSON.stringify({ registrationId: "x509-member-3" }));
  const answer = JSON.parse((await client.nextPublish()).payload.toString());
  t.is(answer.errorCode, 401002);
});

test("trust bundle: an enrollment's trustBundle comes back in the assigned registration state, metadata computed from each certificate unless given", async (t) => {
  const rootA = await makeCert("Trust Root A", { ca: true });
  const rootB = await makeCert("Trust Root B", { ca: true });
  em.addIndividualEnrollment({
    registrationId: "tb-dev",
    primaryKey: keyFor("tb-dev"),
    trustBundle: { id: "tb-1", etag: "etag-1", certificates: [{ certificate: rootA.certPem }, { certificate: rootB.certPem, metadata: { subjectName: "Given Name" } }] },
  });
  const device = await dpsDevice(em, "tb-dev", keyFor("tb-dev"));
  t.teardown(() => device.client.end());
  const accepted = await device.register();
  const state = (await device.poll(accepted.json.operationId)).json.registrationState;
  t.is(state.trustBundle.id, "tb-1");
  t.is(state.trustBundle.etag, "etag-1");
  t.is(state.trustBundle.certificates.length, 2);
  const a = new X509Certificate(rootA.certPem);
  t.is(state.trustBundle.certificates[0].certificate, rootA.certPem);
  t.like(state.trustBundle.certificates[0].metadata, {
    subjectName: "CN=Trust Root A",
    sha1Thumbprint: a.fingerprint.replaceAll(":", ""),
    sha256Thumbprint: a.fingerprint256.replaceAll(":", ""),
    notAfterUtc: new Date(a.validTo).toISOString(),
    version: 3,
  });
  t.is(state.trustBundle.certificates[1].metadata.subjectName, "Given Name");
  t.throws(() => em.addIndividualEnrollment({ registrationId: "tb-bad", primaryKey: keyFor("tb-bad"), trustBundle: { id: "x", certificates: [{ certificate: "nope" }] } }), { message: /trustBundle.certificates\[0\].certificate: is not a certificate/ });
});

test("requestClientCertificates false: the listeners ask for no certificate, so a certificate-only CONNECT gets CONNACK 5 while SAS devices are unaffected", async (t) => {
  const plain = await withEmulator({ requestClientCertificates: false });
  t.teardown(() => plain.dispose());
  const device = await makeCert("no-request");
  plain.addIndividualEnrollment({ registrationId: "no-request", x509: { certificate: device.certPem } });
  const client = await RawClient.open(plain.endpoints.dps.tlsPort, { tls: { ca: plain.caPem, cert: device.certPem, key: device.keyPem } });
  t.teardown(() => client.end());
  t.is((await client.connect({ clientId: "no-request", username: `${plain.idScope}/registrations/no-request/api-version=2021-06-01` })).returnCode, 0);
  await client.subscribe("$dps/registrations/res/#");
  await client.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", JSON.stringify({ registrationId: "no-request" }));
  t.is(JSON.parse((await client.nextPublish()).payload.toString()).errorCode, 401002);
  plain.addIndividualEnrollment({ registrationId: "sas-still", primaryKey: keyFor("sas-still") });
  const sas = await dpsDevice(plain, "sas-still", keyFor("sas-still"), { tls: true });
  t.teardown(() => sas.client.end());
  t.is((await sas.register()).status, 202);
});
