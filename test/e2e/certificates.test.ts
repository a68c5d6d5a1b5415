/**
 * End to end over TLS, the first piece of the certificate path (issue 13): this project's desktop
 * device registers with a SAS token and a certificate signing request made with its own P-256 key;
 * the emulator's issuing CA signs it; the chain in the registration state is read by
 * modules/csr.ts and checked independently (node's X509Certificate, openssl verify).
 */
import test from "ava";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { certificateRequestBase64, readCertificate } from "../../modules/csr.js";
import { base64Decode } from "../../modules/encoding.js";
import type { RuntimeEvent } from "../../modules/runtime.js";
import { SoftwareKey } from "../../hosts/desktop/certificate-key.js";
import { startWorld, TestDevice, type World } from "../support/e2e.js";

let world: World;
test.before(async () => {
  world = await startWorld({ certificateIssuance: { lifetimeSeconds: 3600 } } as never);
});
test.after.always(async () => {
  await world?.stop();
});

test("e2e CSR: a device onboarded with SAS gets an operational certificate for its own key, chained to the emulator's CA", async (t) => {
  const registrationId = "e2e-csr-001";
  const key = world.enroll(registrationId);
  const deviceKey = new SoftwareKey();
  const device = new TestDevice(world, { registrationId, symmetricKey: key, certificateSigningRequest: certificateRequestBase64(registrationId, deviceKey) });
  device.runtime.start();
  const assigned = (await device.waitFor((e) => e.source === "assignment" && e.registrationState !== undefined, 20_000, "the assignment")) as Extract<RuntimeEvent, { source: "assignment" }>;
  await device.connected();
  device.runtime.stop();
  const chain = assigned.registrationState!.issuedCertificateChain!;
  t.true(Array.isArray(chain) && chain.length >= 2, "a leaf and its issuing CA");
  const leaf = base64Decode(chain[0]);
  const summary = readCertificate(leaf);
  t.is(summary.subjectCommonName, registrationId);
  t.true(summary.notAfter - summary.notBefore <= 3600_000 + 60_000, "the configured lifetime");
  const node = new X509Certificate(leaf);
  t.is(Date.parse(node.validTo), summary.notAfter);
  // The certificate is for the device's own key, and the issuing CA signed it.
  const leafKey = node.publicKey.export({ format: "der", type: "spki" });
  t.deepEqual(new Uint8Array(leafKey.subarray(leafKey.length - 65)), deviceKey.publicKey);
  const issuer = new X509Certificate(base64Decode(chain[1]));
  t.true(node.verify(issuer.publicKey), "signed by the issuing CA");
  const dir = mkdtempSync(join(tmpdir(), "csr-e2e-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "leaf.pem"), node.toString());
  writeFileSync(join(dir, "chain.pem"), issuer.toString() + world.emulator.caPem);
  const verify = spawnSync("openssl", ["verify", "-CAfile", join(dir, "chain.pem"), join(dir, "leaf.pem")], { encoding: "utf8" });
  t.regex(verify.stdout + verify.stderr, /leaf\.pem: OK/);
});

test("e2e CSR: with the key's TLS handle, the device then connects to its hub with the issued certificate and an empty password, and sends telemetry", async (t) => {
  const registrationId = "e2e-csr-002";
  const key = world.enroll(registrationId);
  const deviceKey = new SoftwareKey();
  const before = world.emulator.counters().hub["x509-connect"] ?? 0;
  const device = new TestDevice(world, { registrationId, symmetricKey: key, certificateSigningRequest: certificateRequestBase64(registrationId, deviceKey), certificateKey: deviceKey });
  device.runtime.start();
  await device.connected();
  const id = device.runtime.send({ over: "x509" });
  await device.acknowledged(id);
  device.runtime.stop();
  t.is((world.emulator.counters().hub["x509-connect"] ?? 0) - before, 1, "the hub accepted the issued certificate");
  t.is(world.emulator.telemetry(device.runtime.assignment!.deviceId).length, 1);
});

test("e2e CSR: a TLS key that does not match the issued certificate: the hub connection fails as a fault the retry table handles, and nothing escapes", async (t) => {
  const registrationId = "e2e-csr-003";
  const key = world.enroll(registrationId);
  const requestKey = new SoftwareKey();
  const otherKey = new SoftwareKey();
  // The TLS key does not match the issued certificate: node's TLS refuses to build the context,
  // which the runtime sees as a failed connect, not as a crash.
  const device = new TestDevice(world, { registrationId, symmetricKey: key, certificateSigningRequest: certificateRequestBase64(registrationId, requestKey), certificateKey: otherKey });
  device.runtime.start();
  const failed = (await device.waitFor((e) => e.source === "hub" && (e.status.state === "retrying" || e.status.state === "refused"), 20_000, "the hub connection failing")) as Extract<RuntimeEvent, { source: "hub" }>;
  device.runtime.stop();
  t.is(failed.status.state, "retrying");
  t.log(`the hub connection: ${failed.status.fault} — ${failed.status.message}`);
  t.false(device.events.some((e) => e.source === "runtime" && e.state === "connected"));
});
