/** SAS tokens and group key derivation: docs/PROTOCOL.md's vectors, both DPS forms, the hub form, the clock. */
import test from "ava";
import { createHmac } from "node:crypto";
import type { CryptoPort } from "../modules/crypto.js";
import { portableCrypto } from "../modules/sha256.js";
import { deriveDeviceKey, dpsSasToken, hubSasToken, sasExpiry, sasSignature, checkRegistrationId } from "../modules/sas.js";
import { sasVectors as v } from "./vectors/crypto.js";

const nodeCrypto: CryptoPort = {
  hmacSha256: (key, message) => createHmac("sha256", key).update(message).digest(),
  sha256: () => new Uint8Array(32),
};

for (const [name, crypto] of [["portable", portableCrypto], ["node:crypto", nodeCrypto]] as const) {
  test(`sas (${name}): signature over the URL-encoded resource matches docs/PROTOCOL.md`, (t) => {
    t.is(sasSignature(crypto, v.key, `${v.idScope}%2fregistrations%2f${v.registrationId}\n${v.expiry}`), v.signatureEncodedResource);
  });
  test(`sas (${name}): signature over the raw resource matches docs/PROTOCOL.md`, (t) => {
    t.is(sasSignature(crypto, v.key, `${v.idScope}/registrations/${v.registrationId}\n${v.expiry}`), v.signatureRawResource);
  });
  test(`sas (${name}): group-enrollment device key matches docs/PROTOCOL.md`, (t) => {
    t.is(deriveDeviceKey(crypto, v.key, v.registrationId), v.derivedKey);
  });
}

test("sas: the raw DPS form (Node SDK) writes sr raw and adds skn=registration", (t) => {
  const token = dpsSasToken(portableCrypto, { idScope: v.idScope, registrationId: v.registrationId, symmetricKey: v.key, expiry: v.expiry });
  t.is(token, `SharedAccessSignature sr=0neFEEDC0DE/registrations/myRegistrationId&sig=${encodeURIComponent(v.signatureRawResource)}&se=1578941692&skn=registration`);
});

test("sas: the encoded DPS form (Embedded C SDK) writes lowercase %2f and no skn", (t) => {
  const token = dpsSasToken(portableCrypto, { idScope: v.idScope, registrationId: v.registrationId, symmetricKey: v.key, expiry: v.expiry, resourceForm: "encoded" });
  t.is(token, `SharedAccessSignature sr=0neFEEDC0DE%2fregistrations%2fmyRegistrationId&sig=${encodeURIComponent(v.signatureEncodedResource)}&se=1578941692`);
});

test("sas: the hub form URL-encodes sr, signs it as written and has no skn", (t) => {
  const token = hubSasToken(portableCrypto, { hubHost: "contoso.azure-devices.net", deviceId: "dev 1", symmetricKey: v.key, expiry: v.expiry });
  const sr = "contoso.azure-devices.net%2Fdevices%2Fdev%201";
  const sig = createHmac("sha256", Buffer.from(v.key, "base64")).update(`${sr}\n${v.expiry}`).digest("base64");
  t.is(token, `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${v.expiry}`);
});

test("sas: expiry is the clock plus the lifetime, in whole seconds", (t) => {
  t.is(sasExpiry(1_767_225_600_999, 3600), 1_767_225_600 + 3600);
});

test("sas: a clock before 2020 is CLOCK_NOT_SET, saying to sync the clock", (t) => {
  const error = t.throws(() => sasExpiry(0, 3600), { code: "CLOCK_NOT_SET" } as never);
  t.regex(error!.message, /NTP/);
  t.throws(() => sasExpiry(Number.NaN, 3600), { code: "CLOCK_NOT_SET" } as never);
  t.throws(() => sasExpiry(1_767_225_600_000, 10), { code: "INVALID_ARGUMENT" } as never);
});

test("sas: a key that is not base64 fails without echoing the key", (t) => {
  const error = t.throws(() => sasSignature(portableCrypto, "not base64!", "x"), { code: "MALFORMED_BASE64" } as never);
  t.false(error!.message.includes("not base64!"));
});

test("sas: registration ids follow Azure's rule", (t) => {
  for (const good of ["a", "dev-001", "my.device_1:x", "A1", "x".repeat(128)]) t.notThrows(() => checkRegistrationId(good), good);
  for (const bad of ["", "-dev", "dev-", "dev 1", "dev/1", "x".repeat(129), "dév"]) t.throws(() => checkRegistrationId(bad), { code: "INVALID_ARGUMENT" } as never, bad);
});

test("sas: the hub form writes sr as the official Node client does: strictly encoded, ! ' ( ) * escaped and * as lowercase %2a", (t) => {
  const token = hubSasToken(portableCrypto, { hubHost: "contoso.azure-devices.net", deviceId: "sensor:01*(a)!'", symmetricKey: v.key, expiry: v.expiry });
  const sr = "contoso.azure-devices.net%2Fdevices%2Fsensor%3A01%2a%28a%29%21%27";
  const sig = createHmac("sha256", Buffer.from(v.key, "base64")).update(`${sr}\n${v.expiry}`).digest("base64");
  t.is(token, `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${v.expiry}`);
});
