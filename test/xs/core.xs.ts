// The portable crypto and encodings on XS: the same published vectors as test/crypto.test.ts.
import { emit, equal, ok, run, test, throwsCode } from "./harness.js";
import { base64Decode, base64Encode, urlEncode, utf8Decode, utf8Encode } from "../../modules/encoding.js";
import { hmacSha256, Sha256 } from "../../modules/sha256.js";
import { bytesToHex, hexToBytes, hmacVectors, sasVectors, sha256Vectors } from "../vectors/crypto.js";
import { portableCrypto } from "../../modules/sha256.js";
import { deriveDeviceKey, dpsSasToken, hubSasToken, sasSignature } from "../../modules/sas.js";
import { parseResponse } from "../../modules/dps-protocol.js";
import { parsingCases } from "../vectors/protocol.js";

for (const v of sha256Vectors) {
  test(`sha256 ${v.name}`, () => {
    const h = new Sha256();
    const chunk = v.hex !== undefined ? hexToBytes(v.hex) : utf8Encode(v.repeat ? v.text!.repeat(Math.min(v.repeat, 1000)) : v.text!);
    const rounds = v.repeat ? v.repeat / Math.min(v.repeat, 1000) : 1;
    for (let i = 0; i < rounds; i++) h.update(chunk);
    equal(bytesToHex(h.digest()), v.digest);
  });
}

for (const v of hmacVectors) {
  test(`hmac-sha256 ${v.name}`, () => {
    equal(bytesToHex(hmacSha256(hexToBytes(v.key), hexToBytes(v.data))).slice(0, v.mac.length), v.mac);
  });
}

test("utf8 round trip with astral and BMP characters", () => {
  const text = "aé€😀";
  equal(bytesToHex(utf8Encode(text)), "61c3a9e282acf09f9880");
  equal(utf8Decode(utf8Encode(text)), text);
});

test("utf8 rejects an overlong form", () => {
  throwsCode(() => utf8Decode(hexToBytes("c0af")), "MALFORMED_UTF8");
});

test("base64 round trip and strictness", () => {
  equal(base64Encode(utf8Encode("password")), "cGFzc3dvcmQ=");
  equal(utf8Decode(base64Decode("cGFzc3dvcmQ=")), "password");
  throwsCode(() => base64Decode("cGFzc3dvcmQ"), "MALFORMED_BASE64");
  throwsCode(() => base64Decode("cGFzc3dvcmR="), "MALFORMED_BASE64");
});

test("urlEncode matches encodeURIComponent", () => {
  const text = "a/b+c=d é!*'()~";
  equal(urlEncode(text), encodeURIComponent(text));
});

test("SAS: docs/PROTOCOL.md vectors (encoded and raw resource, derived key)", () => {
  const v = sasVectors;
  equal(sasSignature(portableCrypto, v.key, `${v.idScope}%2fregistrations%2f${v.registrationId}\n${v.expiry}`), v.signatureEncodedResource);
  equal(sasSignature(portableCrypto, v.key, `${v.idScope}/registrations/${v.registrationId}\n${v.expiry}`), v.signatureRawResource);
  equal(deriveDeviceKey(portableCrypto, v.key, v.registrationId), v.derivedKey);
});

test("SAS: token forms", () => {
  const v = sasVectors;
  const raw = dpsSasToken(portableCrypto, { idScope: v.idScope, registrationId: v.registrationId, symmetricKey: v.key, expiry: v.expiry });
  equal(raw, `SharedAccessSignature sr=${v.idScope}/registrations/${v.registrationId}&sig=${encodeURIComponent(v.signatureRawResource)}&se=${v.expiry}&skn=registration`);
  const encoded = dpsSasToken(portableCrypto, { idScope: v.idScope, registrationId: v.registrationId, symmetricKey: v.key, expiry: v.expiry, resourceForm: "encoded" });
  equal(encoded, `SharedAccessSignature sr=${v.idScope}%2fregistrations%2f${v.registrationId}&sig=${encodeURIComponent(v.signatureEncodedResource)}&se=${v.expiry}`);
  const hub = hubSasToken(portableCrypto, { hubHost: "h.azure-devices.net", deviceId: "d1", symmetricKey: v.key, expiry: v.expiry });
  ok(hub.startsWith("SharedAccessSignature sr=h.azure-devices.net%2Fdevices%2Fd1&sig="), "hub token sr");
});

for (const c of parsingCases) {
  test(`DPS parse: ${c.name}`, () => {
    if (c.error) {
      throwsCode(() => parseResponse(c.topic, c.payload), c.error);
    } else {
      const parsed = parseResponse(c.topic, c.payload);
      emit(`parse:${c.name}`, parsed === undefined ? null : parsed);
      equal(JSON.stringify(parsed === undefined ? null : parsed), JSON.stringify(c.expected));
    }
  });
}

await run("core");
