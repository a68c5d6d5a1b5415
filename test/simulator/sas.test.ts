import test from "ava";
import { checkSasClaims, deriveDeviceKey, parseSasToken, signatureMatches, signSasToken } from "../../simulator/sas.js";

// Vectors from docs/PROTOCOL.md: key "password", scope 0neFEEDC0DE, registration myRegistrationId, se 1578941692.
const KEY = Buffer.from("cGFzc3dvcmQ=", "base64");
const RESOURCE = "0neFEEDC0DE/registrations/myRegistrationId";
const NOW = 1578941692 * 1000 - 60_000;

test("sas: encoded sr form verifies with the published signature", (t) => {
  const token = parseSasToken(
    `SharedAccessSignature sr=0neFEEDC0DE%2fregistrations%2fmyRegistrationId&sig=${encodeURIComponent("RhG6DlNDE8RoBLI4NnGGKNctS/8IYC339eQ3prAWc3Y=")}&se=1578941692`,
  );
  if (typeof token === "string") return t.fail(token);
  t.is(token.resource, RESOURCE);
  t.true(signatureMatches(token, KEY));
  t.is(checkSasClaims(token, { resource: RESOURCE, keyName: "registration", nowMs: NOW, skewSeconds: 0 }), undefined);
});

test("sas: raw sr form with skn verifies with the published signature, fields in any order", (t) => {
  const token = parseSasToken(
    `SharedAccessSignature sr=${RESOURCE}&sig=${encodeURIComponent("M4+pq5ITdNx//L956Jl30+OqL3j3M+UjOkdaKUn3hpA=")}&skn=registration&se=1578941692`,
  );
  if (typeof token === "string") return t.fail(token);
  t.true(signatureMatches(token, KEY));
  t.is(token.skn, "registration");
});

test("sas: a signature over the other sr form does not verify (HMAC is over sr as written)", (t) => {
  const token = parseSasToken(
    `SharedAccessSignature sr=${RESOURCE}&sig=${encodeURIComponent("RhG6DlNDE8RoBLI4NnGGKNctS/8IYC339eQ3prAWc3Y=")}&se=1578941692`,
  );
  if (typeof token === "string") return t.fail(token);
  t.false(signatureMatches(token, KEY));
});

test("sas: group key derivation matches the published device key", (t) => {
  t.is(deriveDeviceKey(KEY, "myRegistrationId").toString("base64"), "EmETEWdwqAe/mz3WJdmjOEmq5G2ID39kzC7SFMnR/uo=");
});

test("sas: expiry honours the skew on both sides of it", (t) => {
  const token = parseSasToken(signSasToken({ resource: RESOURCE, key: KEY, expirySeconds: 1000 }));
  if (typeof token === "string") return t.fail(token);
  const expect = { resource: RESOURCE, nowMs: (1000 + 299) * 1000, skewSeconds: 300 };
  t.is(checkSasClaims(token, expect), undefined);
  t.is(checkSasClaims(token, { ...expect, nowMs: (1000 + 301) * 1000 }), "expired");
});

test("sas: wrong resource, wrong key name and absent-required key name are reported", (t) => {
  const token = parseSasToken(signSasToken({ resource: RESOURCE, key: KEY, expirySeconds: 2e9, keyName: "device" }));
  if (typeof token === "string") return t.fail(token);
  t.is(checkSasClaims(token, { resource: "0neFEEDC0DE/registrations/other", nowMs: NOW, skewSeconds: 0 }), "wrong-resource");
  t.is(checkSasClaims(token, { resource: RESOURCE, keyName: "registration", nowMs: NOW, skewSeconds: 0 }), "wrong-key-name");
  t.is(checkSasClaims(token, { resource: RESOURCE, keyName: null, nowMs: NOW, skewSeconds: 0 }), "wrong-key-name");
});

test("sas: malformed tokens are reasons, not exceptions", (t) => {
  t.is(parseSasToken(undefined), "missing-token");
  t.is(parseSasToken(""), "missing-token");
  t.is(parseSasToken("Bearer abc"), "malformed-token");
  t.is(parseSasToken("SharedAccessSignature sr=a&se=1"), "malformed-token");
  t.is(parseSasToken("SharedAccessSignature sr=a&sig=%E0%A4%A&se=1"), "malformed-token");
  t.is(parseSasToken("SharedAccessSignature sr=a&sig=abc&se=1"), "malformed-token"); // not 32 bytes
  t.is(parseSasToken("SharedAccessSignature sr=a&sig=x&se=1&foo=2"), "malformed-token");
  t.is(parseSasToken(`SharedAccessSignature sr=a&sig=${"A".repeat(43)}%3D&se=soon`), "malformed-token");
});
