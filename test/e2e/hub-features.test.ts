/**
 * End to end over TLS: this project's desktop device with its hub features against the emulator's
 * hub, driven by what a backend would use: the official service SDK (azure-iothub: Client for
 * methods, Registry for twins) over the emulator's service API, and the admin API for C2D.
 */
import test from "ava";
import { createRequire } from "node:module";
import { CloudMessages, type CloudMessage } from "../../modules/c2d.js";
import { DirectMethods } from "../../modules/methods.js";
import { DeviceTwin } from "../../modules/twin.js";
import type { HubFeature } from "../../modules/hub-session.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import { DESKTOP_FLASH_GEOMETRY } from "../../hosts/desktop/device.js";
import { startWorld, TestDevice, type World } from "../support/e2e.js";

const require = createRequire(import.meta.url);
const iothub = require("azure-iothub") as typeof import("azure-iothub");
const HUB = "hub-1.azure-devices.localhost";

let world: World;
test.before(async () => {
  world = await startWorld({ hubs: [{ hostName: HUB }] });
});
test.after.always(async () => {
  await world?.stop();
});

/** The service SDK pointed at the emulator's service API (docs/EMULATOR.md, "Pointing a backend at the emulator"). */
function service(): { registry: InstanceType<typeof iothub.Registry>; client: InstanceType<typeof iothub.Client> } {
  const cs = world.emulator.hubServiceConnectionString(HUB);
  const registry = iothub.Registry.fromConnectionString(cs);
  const client = iothub.Client.fromConnectionString(cs);
  for (const x of [registry, client]) (x as unknown as { _restApiClient: { setOptions(o: object): void } })._restApiClient.setOptions({ http: { agent: world.emulator.serviceAgent() } });
  return { registry, client };
}

async function device(registrationId: string, features: HubFeature[], flash = new MemoryFlash(DESKTOP_FLASH_GEOMETRY), key?: string): Promise<{ device: TestDevice; key: string; flash: MemoryFlash }> {
  const k = key ?? world.enroll(registrationId);
  const d = new TestDevice(world, { registrationId, symmetricKey: k }, flash, features);
  d.runtime.start();
  await d.connected();
  return { device: d, key: k, flash };
}

/** Until the features' subscriptions are granted: the twin's first read, or a short wait without a twin. */
async function ready(d: TestDevice, twin: boolean): Promise<void> {
  if (twin) await d.waitFor((e) => e.source === "twin" && e.state === "synced", 10_000, "twin synced");
  else await new Promise((r) => setTimeout(r, 300));
}

test("e2e twin: the whole twin read on connecting, a reported patch acknowledged with its version", async (t) => {
  const whole: unknown[] = [];
  const twin = new DeviceTwin({ onDesired: (d, v, complete) => whole.push({ d, v, complete }) });
  const { device: d } = await device("e2e-twin", [twin]);
  t.teardown(() => d.runtime.stop());
  await ready(d, true);
  twin.report({ firmware: "1.0.3", nested: { a: 1 } });
  const reported = (await d.waitFor((e) => e.source === "twin" && e.state === "reported", 10_000, "reported")) as { version?: number };
  t.like(whole[0], { complete: true });
  t.true(typeof reported.version === "number");
  t.is(twin.reportedVersion, reported.version);
  t.like(world.emulator.twin("e2e-twin"), { properties: { reported: { firmware: "1.0.3", nested: { a: 1 } } } });
});

test("e2e methods, official service SDK: invokeDeviceMethod gets the device's answer; an unknown method 404, a slow handler 504 from the device", async (t) => {
  const methods = new DirectMethods({ timeoutMs: 1000 })
    .on("blink", (r) => ({ status: 200, payload: { blinked: (r.payload as { times: number }).times } }))
    .on("slow", () => new Promise(() => {}));
  const { device: d } = await device("e2e-methods", [methods]);
  t.teardown(() => d.runtime.stop());
  await ready(d, false);
  const { client } = service();
  const answer = (await client.invokeDeviceMethod("e2e-methods", { methodName: "blink", payload: { times: 3 }, responseTimeoutInSeconds: 10 })) as { result: unknown };
  t.deepEqual(answer.result, { status: 200, payload: { blinked: 3 } });
  const unknown = (await client.invokeDeviceMethod("e2e-methods", { methodName: "reboot", payload: null, responseTimeoutInSeconds: 10 })) as { result: { status: number; payload: { message: string } } };
  t.is(unknown.result.status, 404);
  t.regex(unknown.result.payload.message, /no method "reboot"/);
  const slow = (await client.invokeDeviceMethod("e2e-methods", { methodName: "slow", payload: null, responseTimeoutInSeconds: 10 })) as { result: { status: number } };
  t.is(slow.result.status, 504, "the device answers for a handler that does not, before the hub gives up");
  t.truthy(d.events.find((e) => e.source === "method" && e.name === "blink" && e.state === "answered" && e.status === 200));
  // The same through the admin API, as a person at a terminal would (curl).
  const admin = world.emulator.endpoints.admin.url;
  const viaAdmin = await fetch(`${admin}/devices/e2e-methods/methods`, { method: "POST", body: JSON.stringify({ methodName: "blink", payload: { times: 1 }, responseTimeoutInSeconds: 5 }) });
  t.is(viaAdmin.status, 200);
  t.deepEqual(await viaAdmin.json(), { status: 200, payload: { blinked: 1 } });
  const offline = await fetch(`${admin}/devices/nobody-here/methods`, { method: "POST", body: JSON.stringify({ methodName: "blink", responseTimeoutInSeconds: 5 }) });
  t.is(offline.status, 404);
});

test("e2e twin, official service SDK: a desired patch reaches the device, which acknowledges it (value, ac, av); a stale etag is 412", async (t) => {
  const twin = new DeviceTwin({
    onDesired: (desired, version) => {
      if (typeof desired.interval === "number") twin.acknowledge("interval", desired.interval, version, 200, "applied");
    },
  });
  const { device: d } = await device("e2e-desired", [twin]);
  t.teardown(() => d.runtime.stop());
  await ready(d, true);
  const { registry } = service();
  const before = (await registry.getTwin("e2e-desired")).responseBody;
  await registry.updateTwin("e2e-desired", { properties: { desired: { interval: 30 } } }, before.etag);
  const acked = await d.waitFor((e) => e.source === "twin" && e.state === "reported", 10_000, "the acknowledgement reported");
  t.truthy(acked);
  const after = (await registry.getTwin("e2e-desired")).responseBody as unknown as { properties: { desired: { $version: number }; reported: { interval: unknown } } };
  t.like(after.properties.reported.interval, { value: 30, ac: 200, av: after.properties.desired.$version, ad: "applied" });
  const stale = await registry.updateTwin("e2e-desired", { properties: { desired: { interval: 40 } } }, before.etag).then(
    () => undefined,
    (error: { responseBody?: string; response?: { statusCode?: number } }) => error,
  );
  t.is(stale?.response?.statusCode, 412);
});

test("e2e C2D through the admin API: handled with its properties, acknowledged after the handler, and redelivered to the next boot when the device dies before the PUBACK", async (t) => {
  const got: CloudMessage[] = [];
  let crash = true;
  let first: TestDevice | undefined;
  const c2d = () =>
    new CloudMessages({
      onMessage: (m) => {
        got.push(m);
        // The device "loses power" while it handles the first message: no PUBACK goes out.
        if (crash) {
          crash = false;
          first?.runtime.stop();
        }
      },
    });
  const one = await device("e2e-c2d", [c2d()]);
  first = one.device;
  await ready(one.device, false);
  const admin = world.emulator.endpoints.admin.url;
  const posted = await fetch(`${admin}/devices/e2e-c2d/messages`, { method: "POST", body: JSON.stringify({ body: "led on", properties: { color: "dark red" }, messageId: "m-1" }) });
  t.is(posted.status, 201);
  for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.is(got.length, 1);
  t.is(got[0].text(), "led on");
  t.deepEqual(got[0].properties, { color: "dark red" });
  t.is(got[0].messageId, "m-1");
  t.is(world.emulator.pendingC2D("e2e-c2d").length, 1, "not acknowledged: the device stopped inside the handler");

  const second = await device("e2e-c2d", [c2d()], one.flash, one.key);
  t.teardown(() => second.device.runtime.stop());
  for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
  t.is(got.length, 2, "redelivered");
  t.is(got[1].messageId, "m-1");
  for (let i = 0; i < 40 && world.emulator.pendingC2D("e2e-c2d").length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(world.emulator.pendingC2D("e2e-c2d"), [], "acknowledged once the handler returned");
  t.is(second.device.runtime.assignment?.source, "cache", "the second boot was warm");
});

test("e2e reprovision from the cloud: the reprovision method is answered 202, then the device registers with DPS again and reconnects", async (t) => {
  const { device: d } = await device("e2e-reprovision", [new DirectMethods()]);
  t.teardown(() => d.runtime.stop());
  await ready(d, false);
  const registers = () => d.events.filter((e) => e.source === "dps" && e.status.state === "registering").length;
  t.is(registers(), 1);
  const { client } = service();
  const answer = (await client.invokeDeviceMethod("e2e-reprovision", { methodName: "reprovision", payload: null, responseTimeoutInSeconds: 10 })) as { result: { status: number } };
  t.is(answer.result.status, 202);
  await d.waitFor(() => registers() === 2, 10_000, "a second registration");
  const connects = () => d.events.filter((e) => e.source === "runtime" && e.state === "connected").length;
  await d.waitFor(() => connects() >= 2, 10_000, "connected again");
  t.is(registers(), 2);
});
