// The DPS service REST API of the emulator, driven by the official provisioning service SDK
// (azure-iot-provisioning-service) over TLS on 127.0.0.1, and by raw HTTPS requests for what the
// SDK never sends (bad tokens, malformed and hostile bodies). A device then provisions with an
// enrollment the SDK created, through the official device client.
import test from "ava";
import { request as httpsRequest, Agent } from "node:https";
import { createRequire } from "node:module";
import { signSasToken } from "../../simulator/index.js";
import { admin, derive, keyFor, withEmulator } from "./helpers.js";
import { officialRegister } from "./interop.js";

const require = createRequire(import.meta.url);
const sdk = require("azure-iot-provisioning-service") as { ProvisioningServiceClient: any };
// The SDK's own copies of its HTTP layer (npm may nest them under the SDK's folder).
const sdkRequire = createRequire(require.resolve("azure-iot-provisioning-service"));
const httpBase = sdkRequire("azure-iot-http-base") as { Http: new () => { setOptions(o: unknown): void }; RestApiClient: new (config: unknown, userAgent: string, http: unknown) => unknown };
const common = sdkRequire("azure-iot-common") as { ConnectionString: { parse(s: string): Record<string, string> }; SharedAccessSignature: { create(host: string, name: string, key: string, expiry: number): unknown } };

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

/**
 * The recipe of docs/EMULATOR.md: the SDK's config as fromConnectionString builds it, and its
 * RestApiClient over an Http whose agent trusts the emulator's CA, dials 127.0.0.1 for the DPS
 * host name and uses the emulator's HTTPS port. TLS still checks the DPS host name.
 */
function serviceClient(connectionString: string): any {
  const agent = new Agent({
    ca: em.caPem,
    keepAlive: false,
    lookup: ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) =>
      options.all ? callback(null, [{ address: "127.0.0.1", family: 4 }]) : callback(null, "127.0.0.1", 4)) as never,
  });
  // https.request takes its port from the agent when the SDK names none.
  (agent as Agent & { defaultPort: number }).defaultPort = em.endpoints.https.port;
  const http = new httpBase.Http();
  http.setOptions({ http: { agent } });
  const cn = common.ConnectionString.parse(connectionString);
  const config = { host: cn.HostName, sharedAccessSignature: common.SharedAccessSignature.create(cn.HostName, cn.SharedAccessKeyName, cn.SharedAccessKey, Date.now()) };
  return new sdk.ProvisioningServiceClient(config, new httpBase.RestApiClient(config, "dps-emulator-tests", http));
}

/** A raw HTTPS request to the service API; resolves with the status, headers and parsed body. */
function raw(method: string, path: string, options: { token?: string | null; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, unknown>; json: any }> {
  const policy = em.serviceApi.policies[0];
  const token =
    options.token === undefined
      ? signSasToken({ resource: em.serviceApi.hostName, key: Buffer.from(policy.primaryKey, "base64"), expirySeconds: Math.floor(Date.now() / 1000) + 3600, keyName: policy.name })
      : options.token;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (token !== null) headers.authorization = token;
    if (options.body !== undefined) headers["content-type"] ??= "application/json; charset=utf-8";
    const req = httpsRequest(
      { host: "127.0.0.1", port: em.endpoints.https.port, servername: em.serviceApi.hostName, ca: em.caPem, method, path, headers, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = text;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(options.body);
  });
}

test.before(async () => {
  em = await withEmulator();
});
test.after.always(async () => {
  await em?.dispose();
});

test.serial("service api: the admin API shows the host name, the default policy and a connection string", async (t) => {
  const { status, json } = await admin(em, "GET", "/service-api");
  t.is(status, 200);
  t.is(json.hostName, "dps-emulator.azure-devices-provisioning.localhost");
  t.is(json.port, em.endpoints.https.port);
  t.is(json.policies[0].name, "provisioningserviceowner");
  t.is(Buffer.from(json.policies[0].primaryKey, "base64").length, 32);
  t.is(json.policies[0].connectionString, em.dpsServiceConnectionString());
});

test.serial("service api: the official SDK creates, gets, updates with the etag and deletes an individual enrollment; stale etag 412, duplicate create 409", async (t) => {
  const client = serviceClient(em.dpsServiceConnectionString());
  const created = (await client.createOrUpdateIndividualEnrollment({
    registrationId: "api-device-1",
    deviceId: "api-boiler-1",
    attestation: { type: "symmetricKey" },
    provisioningStatus: "enabled",
    initialTwin: { tags: { site: "lab" }, properties: { desired: { interval: 30 } } },
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false },
  })).responseBody;
  t.like(created, { registrationId: "api-device-1", deviceId: "api-boiler-1", provisioningStatus: "enabled", attestation: { type: "symmetricKey" } });
  t.is(Buffer.from(created.attestation.symmetricKey.primaryKey, "base64").length, 64, "DPS generates 64-byte keys");
  t.truthy(created.attestation.symmetricKey.secondaryKey);
  t.deepEqual(created.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: false });
  t.regex(created.createdDateTimeUtc, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
  t.truthy(created.etag);
  t.like(em.enrollments().individual.find((e) => e.registrationId === "api-device-1"), { deviceId: "api-boiler-1", reprovisionPolicy: "reprovisionAndReset" });

  const got = (await client.getIndividualEnrollment("api-device-1")).responseBody;
  t.deepEqual(got, created);

  const duplicate = await t.throwsAsync<Error & { response?: { statusCode: number } }>(
    client.createOrUpdateIndividualEnrollment({ registrationId: "api-device-1", attestation: { type: "symmetricKey" } }),
  );
  t.is(duplicate?.response?.statusCode, 409);
  t.is(duplicate?.name, "DeviceAlreadyExistsError");

  const updated = (await client.createOrUpdateIndividualEnrollment({ ...got, provisioningStatus: "disabled" })).responseBody;
  t.is(updated.provisioningStatus, "disabled");
  t.not(updated.etag, got.etag);
  t.is(updated.createdDateTimeUtc, got.createdDateTimeUtc);
  t.is(updated.attestation.symmetricKey.primaryKey, got.attestation.symmetricKey.primaryKey, "the keys stay");
  t.false(em.enrollments().individual.find((e) => e.registrationId === "api-device-1")?.enabled);

  const stale = await t.throwsAsync<Error & { response?: { statusCode: number } }>(client.createOrUpdateIndividualEnrollment({ ...got, provisioningStatus: "enabled" }));
  t.is(stale?.response?.statusCode, 412);
  t.is(stale?.name, "InvalidEtagError");
  const staleDelete = await t.throwsAsync<Error & { response?: { statusCode: number } }>(client.deleteIndividualEnrollment("api-device-1", got.etag));
  t.is(staleDelete?.response?.statusCode, 412);

  await client.deleteIndividualEnrollment("api-device-1", updated.etag);
  const gone = await t.throwsAsync<Error & { response?: { statusCode: number } }>(client.getIndividualEnrollment("api-device-1"));
  t.is(gone?.response?.statusCode, 404);
  t.is(em.enrollments().individual.some((e) => e.registrationId === "api-device-1"), false);
});

test.serial("service api: the official SDK creates, updates and deletes an enrollment group; stale etag 412, duplicate 409", async (t) => {
  const client = serviceClient(em.dpsServiceConnectionString());
  const key = keyFor("api-group");
  const created = (await client.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: "api-group",
    attestation: { type: "symmetricKey", symmetricKey: { primaryKey: key, secondaryKey: keyFor("api-group-2") } },
    iotHubs: ["hub-2.azure-devices.localhost"],
  })).responseBody;
  t.like(created, { enrollmentGroupId: "api-group", iotHubHostName: "hub-2.azure-devices.localhost", provisioningStatus: "enabled" });
  t.is(created.attestation.symmetricKey.primaryKey, key);
  const duplicate = await t.throwsAsync<Error & { response?: { statusCode: number } }>(client.createOrUpdateEnrollmentGroup({ enrollmentGroupId: "api-group", attestation: { type: "symmetricKey" } }));
  t.is(duplicate?.response?.statusCode, 409);
  const updated = (await client.createOrUpdateEnrollmentGroup({ ...created, initialTwin: { tags: { ring: "2" } } })).responseBody;
  t.deepEqual(updated.initialTwin, { tags: { ring: "2" }, properties: { desired: {} } });
  const stale = await t.throwsAsync<Error & { response?: { statusCode: number } }>(client.createOrUpdateEnrollmentGroup({ ...created }));
  t.is(stale?.response?.statusCode, 412);
  t.is((await client.getEnrollmentGroup("api-group")).responseBody.etag, updated.etag);

  // A member provisions with its derived key, on the group's hub.
  const state = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "api-member-1", derive(key, "api-member-1"), em.caPem);
  t.like(state, { registrationId: "api-member-1", status: "assigned", assignedHub: "hub-2.azure-devices.localhost" });
  const registration = (await client.getDeviceRegistrationState("api-member-1")).responseBody;
  t.like(registration, { registrationId: "api-member-1", status: "assigned", deviceId: "api-member-1" });
  const members = (await client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: "*" }, "api-group").next()).responseBody;
  t.deepEqual(members.map((m: { registrationId: string }) => m.registrationId), ["api-member-1"]);
  await client.deleteDeviceRegistrationState("api-member-1");
  t.is(em.registration("api-member-1"), undefined);

  await client.deleteEnrollmentGroup(updated);
  const gone = await t.throwsAsync<Error & { response?: { statusCode: number } }>(client.getEnrollmentGroup("api-group"));
  t.is(gone?.response?.statusCode, 404);
});

test.serial("service api: a device provisions with the individual enrollment and generated key the SDK created (either key)", async (t) => {
  const client = serviceClient(em.dpsServiceConnectionString());
  const created = (await client.createOrUpdateIndividualEnrollment({
    registrationId: "api-device-2",
    deviceId: "api-sensor-2",
    attestation: { type: "symmetricKey" },
    iotHubHostName: "hub-1.azure-devices.localhost",
    initialTwin: { properties: { desired: { interval: 15 } } },
  })).responseBody;
  const state = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "api-device-2", created.attestation.symmetricKey.primaryKey, em.caPem);
  t.like(state, { registrationId: "api-device-2", deviceId: "api-sensor-2", status: "assigned", assignedHub: "hub-1.azure-devices.localhost", substatus: "initialAssignment" });
  // The secondary key works too.
  const again = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "api-device-2", created.attestation.symmetricKey.secondaryKey, em.caPem);
  t.is(again.status, "assigned");
  const query = client.createIndividualEnrollmentQuery({ query: "*" }, 100);
  const page = (await query.next()).responseBody as { registrationId: string }[];
  t.true(page.some((e) => e.registrationId === "api-device-2"));
  t.false(query.hasMoreResults);
});

test.serial("service api: a query pages with x-ms-max-item-count and x-ms-continuation", async (t) => {
  for (const id of ["api-page-1", "api-page-2", "api-page-3"]) em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id) });
  const total = em.enrollments().individual.length;
  const seen: string[] = [];
  let continuation: string | undefined;
  for (let pages = 0; pages < 20; pages++) {
    const headers: Record<string, string> = { "x-ms-max-item-count": "2" };
    if (continuation) headers["x-ms-continuation"] = continuation;
    const res = await raw("POST", "/enrollments/query?api-version=2021-10-01", { body: '{"query":"*"}', headers });
    t.is(res.status, 200);
    seen.push(...res.json.map((e: { registrationId: string }) => e.registrationId));
    continuation = res.headers["x-ms-continuation"] as string | undefined;
    if (!continuation) break;
  }
  t.is(seen.length, total);
  t.true(seen.includes("api-page-3"));
});

test.serial("service api: a bad signature, an expired token, an unknown policy, another host or no token get 401", async (t) => {
  const policy = em.serviceApi.policies[0];
  const key = Buffer.from(policy.primaryKey, "base64");
  const later = Math.floor(Date.now() / 1000) + 3600;
  const path = "/enrollments/anything?api-version=2021-10-01";
  const tokens = {
    "bad signature": signSasToken({ resource: em.serviceApi.hostName, key: Buffer.from(keyFor("wrong"), "base64"), expirySeconds: later, keyName: policy.name }),
    expired: signSasToken({ resource: em.serviceApi.hostName, key, expirySeconds: Math.floor(Date.now() / 1000) - 3600, keyName: policy.name }),
    "unknown policy": signSasToken({ resource: em.serviceApi.hostName, key, expirySeconds: later, keyName: "registryReadWrite" }),
    "no policy": signSasToken({ resource: em.serviceApi.hostName, key, expirySeconds: later }),
    "another host": signSasToken({ resource: "other.azure-devices-provisioning.net", key, expirySeconds: later, keyName: policy.name }),
    garbage: "Bearer xyz",
  };
  for (const [what, token] of Object.entries(tokens)) {
    const res = await raw("GET", path, { token });
    t.is(res.status, 401, what);
    t.is(res.json.errorCode, 401002, what);
    t.regex(res.json.trackingId, /^[0-9a-f-]{36}$/, what);
    t.truthy(res.json.timestampUtc, what);
  }
  t.is((await raw("GET", path, { token: null })).status, 401, "no token");
  // Through the SDK: a connection string with a wrong key.
  const wrong = `HostName=${em.serviceApi.hostName};SharedAccessKeyName=${policy.name};SharedAccessKey=${keyFor("wrong")}`;
  const error = await t.throwsAsync<Error & { response?: { statusCode: number } }>(serviceClient(wrong).getIndividualEnrollment("x"));
  t.is(error?.response?.statusCode, 401);
  t.is(error?.name, "UnauthorizedError");
});

test.serial("service api: malformed bodies get 400 naming the field", async (t) => {
  const put = (body: unknown) => raw("PUT", "/enrollments/api-bad?api-version=2021-10-01", { body: typeof body === "string" ? body : JSON.stringify(body) });
  const cases: [unknown, RegExp][] = [
    ["{not json", /^body: is not JSON/],
    [[1, 2], /^body: must be a JSON object/],
    [{ attestation: { type: "symmetricKey" } }, /^registrationId: is required/],
    [{ registrationId: "other", attestation: { type: "symmetricKey" } }, /^registrationId: must equal the id in the path/],
    [{ registrationId: "api-bad" }, /^attestation: must be a JSON object/],
    [{ registrationId: "api-bad", attestation: { type: "tpm", tpm: { endorsementKey: "x" } } }, /^attestation\.type: must be "symmetricKey"/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey", symmetricKey: { primaryKey: "short" } } }, /^attestation\.symmetricKey\.primaryKey: must be base64/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey" }, provisioningStatus: "on" }, /^provisioningStatus: must be "enabled" or "disabled"/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey" }, iotHubHostName: "nowhere.azure-devices.net" }, /^iotHubHostName: nowhere\.azure-devices\.net is not one of/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey" }, iotHubs: "hub-1" }, /^iotHubs: must be an array/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey" }, initialTwin: { tags: [] } }, /^initialTwin\.tags: must be a JSON object/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey" }, reprovisionPolicy: { migrateDeviceData: "yes" } }, /^reprovisionPolicy\.migrateDeviceData: must be true or false/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey" }, deviceId: "a/b" }, /^deviceId: must be/],
    [{ registrationId: "api-bad", attestation: { type: "symmetricKey" }, allocationPolicy: "random" }, /^allocationPolicy: must be/],
  ];
  for (const [body, message] of cases) {
    const res = await put(body);
    t.is(res.status, 400, JSON.stringify(body));
    t.regex(res.json.message, message, JSON.stringify(body));
    t.is(res.headers["x-ms-error-code"], "400004");
  }
  t.is((await raw("PUT", "/enrollments/api-bad?api-version=2021-10-01", { body: "{}", headers: { "content-type": "text/plain" } })).status, 415);
  t.is((await raw("GET", "/enrollments/api-bad")).status, 400, "no api-version");
  t.is((await raw("PATCH", "/enrollments/api-bad?api-version=2021-10-01", { body: "{}" })).status, 405);
  t.is((await raw("GET", "/enrollments/%E0%A4%A?api-version=2021-10-01")).status, 400, "a bad %-escape");
  t.is(em.enrollments().individual.some((e) => e.registrationId === "api-bad"), false);
});

test.serial("service api: hostile bodies (deep nesting, huge) get 400 and 413, and the emulator keeps serving", async (t) => {
  const deep = "[".repeat(50_000) + "]".repeat(50_000); // under the size limit: the parser and the depth check meet it
  const res = await raw("PUT", "/enrollments/api-hostile?api-version=2021-10-01", { body: `{"registrationId":"api-hostile","attestation":{"type":"symmetricKey"},"initialTwin":{"tags":{"x":${deep}}}}` });
  t.true(res.status === 400 || res.status === 413, String(res.status));
  const nested = `{"registrationId":"api-hostile","attestation":{"type":"symmetricKey"},"initialTwin":{"tags":${'{"a":'.repeat(40)}1${"}".repeat(40)}}}`;
  const nestedRes = await raw("PUT", "/enrollments/api-hostile?api-version=2021-10-01", { body: nested });
  t.is(nestedRes.status, 400);
  t.regex(nestedRes.json.message, /^body: nests deeper than 32 levels/);
  const huge = await raw("PUT", "/enrollments/api-hostile?api-version=2021-10-01", { body: Buffer.alloc(1024 * 1024, 0x20) });
  t.is(huge.status, 413);
  t.is(huge.json.errorCode, 413001);
  // Still serving, device side included.
  t.is((await raw("GET", "/enrollments/api-hostile?api-version=2021-10-01")).status, 404);
  em.addIndividualEnrollment({ registrationId: "api-after-hostile", primaryKey: keyFor("api-after-hostile") });
  const state = await officialRegister(`127.0.0.1:${em.endpoints.dps.tlsPort}`, em.idScope, "api-after-hostile", keyFor("api-after-hostile"), em.caPem);
  t.is(state.status, "assigned");
});

test.serial("service api: an If-Match on an enrollment that does not exist is 412; If-Match * replaces whatever is there", async (t) => {
  const body = JSON.stringify({ registrationId: "api-star", attestation: { type: "symmetricKey" } });
  t.is((await raw("PUT", "/enrollments/api-star?api-version=2021-10-01", { body, headers: { "if-match": '"nope"' } })).status, 412);
  t.is((await raw("PUT", "/enrollments/api-star?api-version=2021-10-01", { body })).status, 200);
  const replaced = await raw("PUT", "/enrollments/api-star?api-version=2021-10-01", { body, headers: { "if-match": "*" } });
  t.is(replaced.status, 200);
  t.is(replaced.headers.etag, replaced.json.etag);
  t.is((await raw("DELETE", "/enrollments/api-star?api-version=2021-10-01")).status, 204);
  t.is((await raw("DELETE", "/enrollments/api-star?api-version=2021-10-01")).status, 404);
});

test.serial("service api: the device-side status lookup on the same port still answers as before", async (t) => {
  const res = await raw("POST", `/${em.idScope}/registrations/api-nobody?api-version=2021-10-01`, { body: '{"registrationId":"api-nobody"}', token: "SharedAccessSignature sr=x&sig=y&se=1" });
  t.is(res.status, 401);
  t.is(res.json.errorCode, 401002);
  t.true((em.counters().https["401"] ?? 0) >= 1, "counted as a lookup answer");
  t.true((em.counters().dpsService["200"] ?? 0) >= 1, "the service API has its own counters");
});
