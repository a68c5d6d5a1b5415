// The official Node device client (azure-iot-device + azure-iot-device-mqtt) and the official
// service SDK (azure-iothub) against the emulator: C2D, direct methods, the twin both ways, and
// the service API's authorization. The service SDK dials https://{hub}:443; the emulator's
// serviceAgent() sends its requests to the listener with the emulator's CA (docs/EMULATOR.md).
import test from "ava";
import { request as httpsRequest } from "node:https";
import { createRequire } from "node:module";
import { signSasToken } from "../../simulator/index.js";
import { HUB_1, hubConnect, keyFor, provision, withEmulator } from "./helpers.js";
import { device, deviceMqtt } from "./interop.js";

const require = createRequire(import.meta.url);
const iothub = require("azure-iothub") as typeof import("azure-iothub");

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator();
});
test.after.always(async () => {
  await em?.dispose();
});

/** The service SDK's Registry and Client, pointed at the emulator (the one private field the recipe touches). */
function serviceClients(): { registry: InstanceType<typeof iothub.Registry>; client: InstanceType<typeof iothub.Client> } {
  const cs = em.hubServiceConnectionString(HUB_1);
  const registry = iothub.Registry.fromConnectionString(cs);
  const client = iothub.Client.fromConnectionString(cs);
  for (const x of [registry, client]) (x as unknown as { _restApiClient: { setOptions(o: object): void } })._restApiClient.setOptions({ http: { agent: em.serviceAgent() } });
  return { registry, client };
}

async function deviceClient(id: string): Promise<InstanceType<typeof device.Client>> {
  em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id), iotHubHostName: HUB_1 });
  const answer = await provision(em, id, keyFor(id));
  if (answer.status !== 200) throw new Error(`provisioning ${id}: ${answer.status}`);
  const client = device.Client.fromConnectionString(`HostName=${HUB_1};DeviceId=${id};SharedAccessKey=${keyFor(id)};GatewayHostName=127.0.0.1:${em.endpoints.hub.tlsPort}`, deviceMqtt.Mqtt);
  await client.setOptions({ ca: em.caPem });
  await client.open();
  return client;
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([promise, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

test("service api: the official device client receives a C2D message with its properties decoded, and its PUBACK empties the queue", async (t) => {
  const client = await deviceClient("sdk-c2d");
  t.teardown(() => client.close());
  const received = new Promise<any>((resolve) => client.on("message", (msg: any) => resolve(msg)));
  await new Promise((r) => setTimeout(r, 200)); // the SUBSCRIBE goes out on the listener
  em.sendC2D("sdk-c2d", { body: JSON.stringify({ cmd: "blink" }), properties: { color: "red & blue" }, messageId: "c2d-1", contentType: "application/json", correlationId: "corr-7" });
  const msg = await within(received, 5000, "C2D");
  t.is(msg.messageId, "c2d-1");
  t.is(msg.contentType, "application/json");
  t.is(msg.correlationId, "corr-7");
  t.is(msg.to, "/devices/sdk-c2d/messages/deviceBound");
  t.is(msg.properties.getValue("color"), "red & blue");
  t.deepEqual(JSON.parse(msg.getBytes().toString()), { cmd: "blink" });
  await client.complete(msg);
  for (let i = 0; i < 20 && em.pendingC2D("sdk-c2d").length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(em.pendingC2D("sdk-c2d"), []);
});

test("service api: a method answered by the official device client, invoked with Emulator.invokeMethod and with the service SDK", async (t) => {
  const client = await deviceClient("sdk-method");
  t.teardown(() => client.close());
  client.onDeviceMethod("echo", (req: any, res: any) => res.send(200, { echoed: req.payload }, () => {}));
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(await em.invokeMethod("sdk-method", { methodName: "echo", payload: { n: 1 }, responseTimeoutInSeconds: 5 }), { status: 200, payload: { echoed: { n: 1 } } });
  const { client: service } = serviceClients();
  const result = (await service.invokeDeviceMethod("sdk-method", { methodName: "echo", payload: "hi", responseTimeoutInSeconds: 5 })) as any;
  t.deepEqual(result.result, { status: 200, payload: { echoed: "hi" } });
  t.true((em.counters().hubService["200"] ?? 0) >= 1);
});

test("service api: the service SDK sees 404 (404103) for an offline device and 504 (504101) for one that never answers", async (t) => {
  em.addIndividualEnrollment({ registrationId: "sdk-silent", primaryKey: keyFor("sdk-silent"), iotHubHostName: HUB_1 });
  t.is((await provision(em, "sdk-silent", keyFor("sdk-silent"))).status, 200);
  const { client: service } = serviceClients();
  const offline: any = await t.throwsAsync(service.invokeDeviceMethod("sdk-silent", { methodName: "x", responseTimeoutInSeconds: 5 }));
  t.is(offline.response.statusCode, 404);
  t.is(offline.response.headers["iothub-errorcode"], "DeviceNotOnline");
  t.is(JSON.parse(JSON.parse(offline.responseBody).Message).errorCode, 404103);
  const { client: raw } = await hubConnect(em, HUB_1, "sdk-silent", keyFor("sdk-silent"));
  t.teardown(() => raw.end());
  await raw.subscribe("$iothub/methods/POST/#");
  const timedOut: any = await t.throwsAsync(service.invokeDeviceMethod("sdk-silent", { methodName: "x", responseTimeoutInSeconds: 5 }));
  t.is(timedOut.response.statusCode, 504);
  t.is(timedOut.constructor.name, "GatewayTimeoutError");
  t.is(JSON.parse(JSON.parse(timedOut.responseBody).Message).errorCode, 504101);
});

test("service api: the device reads its twin and patches reported, gets a desired change made with the service SDK, a stale etag is 412, and after a reconnect the twin holds both", async (t) => {
  let client = await deviceClient("sdk-twin");
  t.teardown(() => client.close());
  const twin: any = await client.getTwin();
  await new Promise<void>((resolve, reject) => twin.properties.reported.update({ firmware: "2.0", battery: 90 }, (e: Error | undefined) => (e ? reject(e) : resolve())));
  const desired = new Promise<any>((resolve) => twin.on("properties.desired", (d: any) => d.interval === 15 && resolve(d)));
  const { registry } = serviceClients();
  const read = (await registry.getTwin("sdk-twin")).responseBody as any;
  t.is(read.properties.reported.firmware, "2.0");
  t.is(read.connectionState, "Connected");
  const updated = (await registry.updateTwin("sdk-twin", { tags: { site: "lab" }, properties: { desired: { interval: 15 } } }, read.etag)).responseBody as any;
  t.is(updated.tags.site, "lab");
  t.not(updated.etag, read.etag);
  const pushed = await within(desired, 5000, "desired patch");
  t.is(pushed.interval, 15);
  const stale: any = await t.throwsAsync(registry.updateTwin("sdk-twin", { tags: { site: "other" } }, read.etag));
  t.is(stale.response.statusCode, 412);
  t.is(stale.constructor.name, "InvalidEtagError");
  await client.close();
  client = await (async () => {
    const c = device.Client.fromConnectionString(`HostName=${HUB_1};DeviceId=sdk-twin;SharedAccessKey=${keyFor("sdk-twin")};GatewayHostName=127.0.0.1:${em.endpoints.hub.tlsPort}`, deviceMqtt.Mqtt);
    await c.setOptions({ ca: em.caPem });
    await c.open();
    return c;
  })();
  const again: any = await client.getTwin();
  t.is(again.properties.desired.interval, 15);
  t.is(again.properties.reported.firmware, "2.0");
  t.is(again.properties.reported.battery, 90);
});

/** A raw request to the service API (through the emulator's agent, Host = the hub). */
function call(method: string, path: string, authorization: string | undefined, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; json: any }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: HUB_1, path, method, agent: em.serviceAgent(), headers: { ...(authorization ? { authorization } : {}), "content-type": "application/json", ...headers } },
      (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, json: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

test("service api: a bad signature, an expired token, an unknown policy, a token for another hub or none at all is 401", async (t) => {
  const key = Buffer.from(/SharedAccessKey=([^;]+)/.exec(em.hubServiceConnectionString(HUB_1))![1], "base64");
  const se = Math.floor(Date.now() / 1000) + 3600;
  const good = signSasToken({ resource: HUB_1, key, expirySeconds: se, keyName: "iothubowner" });
  em.addIndividualEnrollment({ registrationId: "sdk-auth", primaryKey: keyFor("sdk-auth"), iotHubHostName: HUB_1 });
  t.is((await provision(em, "sdk-auth", keyFor("sdk-auth"))).status, 200);
  const path = "/twins/sdk-auth?api-version=2021-04-12";
  t.is((await call("GET", path, good)).status, 200);
  const refusals = [
    undefined,
    signSasToken({ resource: HUB_1, key: Buffer.from(keyFor("wrong"), "base64"), expirySeconds: se, keyName: "iothubowner" }),
    signSasToken({ resource: HUB_1, key, expirySeconds: Math.floor(Date.now() / 1000) - 3600, keyName: "iothubowner" }),
    signSasToken({ resource: HUB_1, key, expirySeconds: se, keyName: "registryRead" }),
    signSasToken({ resource: HUB_1, key, expirySeconds: se }),
    signSasToken({ resource: "hub-2.azure-devices.localhost", key, expirySeconds: se, keyName: "iothubowner" }),
    "Bearer abc",
  ];
  for (const token of refusals) {
    const r = await call("GET", path, token);
    t.is(r.status, 401, token?.slice(0, 60));
    t.is(r.headers["iothub-errorcode"], "IotHubUnauthorizedAccess");
    t.regex(r.json.Message, /^ErrorCode:IotHubUnauthorizedAccess;/);
  }
  t.is((await call("GET", "/twins/sdk-auth", good)).status, 400, "no api-version");
  t.is((await call("GET", "/twins/nobody?api-version=2021-04-12", good)).status, 404);
  const put = await call("PUT", path, good, JSON.stringify({ tags: { a: 1 }, properties: { desired: { b: 2 } } }), { "if-match": "*" });
  t.is(put.status, 200);
  t.deepEqual(put.json.tags, { a: 1 });
  const identity = await call("GET", "/devices/sdk-auth?api-version=2021-04-12", good);
  t.like(identity.json, { deviceId: "sdk-auth", status: "enabled", connectionState: "Disconnected" });
  t.true((em.counters().hubService["401"] ?? 0) >= refusals.length);
});
