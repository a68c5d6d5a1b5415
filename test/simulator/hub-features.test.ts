// The emulated hub's C2D queue, direct methods and twins, driven by raw MQTT clients (exact
// packets, a PUBACK held back on purpose) and the emulator's API, on a clock the tests move.
import test from "ava";
import type { IPublishPacket } from "mqtt-packet";
import { HubServiceError, startEmulator } from "../../simulator/index.js";
import { admin, HUB_1, HUB_2, hubConnect, ID_SCOPE, keyFor, provision, tempStateDir, withEmulator, type RawClient } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;
let offsetMs = 0;

test.before(async () => {
  em = await withEmulator({ now: () => Date.now() + offsetMs });
});
test.after.always(async () => {
  await em?.dispose();
});

/** An individual enrollment on `hub`, provisioned; returns the device key. */
async function provisioned(id: string, hub = HUB_1): Promise<string> {
  em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id), iotHubHostName: hub });
  const answer = await provision(em, id, keyFor(id));
  if (answer.status !== 200) throw new Error(`provisioning ${id}: ${answer.status}`);
  return keyFor(id);
}

async function connected(id: string, key: string, hub = HUB_1, subscriptions: string[] = []): Promise<RawClient> {
  const { client, returnCode } = await hubConnect(em, hub, id, key);
  if (returnCode !== 0) throw new Error(`CONNACK ${returnCode}`);
  for (const s of subscriptions) await client.subscribe(s);
  return client;
}

/** The next PUBLISH without acknowledging it. */
async function nextPublishHeld(client: RawClient, timeoutMs = 3000): Promise<IPublishPacket> {
  for (;;) {
    const p = await client.next(timeoutMs);
    if (p.cmd === "publish") return p;
  }
}

function bag(topic: string): Map<string, string> {
  const last = topic.slice(topic.indexOf("/messages/devicebound/") + "/messages/devicebound/".length);
  return new Map(last.split("&").map((kv) => kv.split("=").map(decodeURIComponent) as [string, string]));
}

test("c2d: a message dropped before its PUBACK is delivered again on the next connection with the same $.mid; after the PUBACK it is gone", async (t) => {
  const key = await provisioned("c2d-redeliver");
  const filter = "devices/c2d-redeliver/messages/devicebound/#";
  const first = await connected("c2d-redeliver", key, HUB_1, [filter]);
  const messageId = em.sendC2D("c2d-redeliver", { body: "hello", properties: { alert: "high/low" }, contentType: "text/plain", messageId: "m-1" });
  t.is(messageId, "m-1");
  const p1 = await nextPublishHeld(first);
  t.is(p1.qos, 1);
  t.is(p1.payload.toString(), "hello");
  const props = bag(p1.topic);
  t.is(props.get("$.mid"), "m-1");
  t.is(props.get("$.to"), "/devices/c2d-redeliver/messages/deviceBound");
  t.is(props.get("$.ct"), "text/plain");
  t.is(props.get("alert"), "high/low");
  t.is(p1.topic.split("/").length, 5, "the property bag is one topic segment");
  first.end();
  await first.closed;
  t.is(em.pendingC2D("c2d-redeliver").length, 1);

  const second = await connected("c2d-redeliver", key, HUB_1, [filter]);
  const p2 = await nextPublishHeld(second);
  t.is(bag(p2.topic).get("$.mid"), "m-1");
  second.send({ cmd: "puback", messageId: p2.messageId ?? 0 });
  await second.publish("$iothub/twin/GET/?$rid=1", ""); // a round trip: the PUBACK has been read
  t.deepEqual(em.pendingC2D("c2d-redeliver"), []);
  second.end();
  const third = await connected("c2d-redeliver", key, HUB_1, [filter]);
  await t.throwsAsync(nextPublishHeld(third, 300));
  third.end();
  const c = em.counters().hub;
  t.true(c["c2d-sent"] >= 1 && c["c2d-redelivered"] >= 1 && c["c2d-acked"] >= 1);
});

test("c2d: an expired message is dropped and counted; the queue holds 50 and refuses the 51st with 403004", async (t) => {
  await provisioned("c2d-ttl");
  em.sendC2D("c2d-ttl", { body: "short", ttlSeconds: 5 });
  em.sendC2D("c2d-ttl", { body: "long", ttlSeconds: 3600 });
  const expiredBefore = em.counters().hub["c2d-expired"] ?? 0;
  offsetMs += 6000;
  try {
    t.deepEqual(em.pendingC2D("c2d-ttl").map((m) => m.body), ["long"]);
    t.is(em.counters().hub["c2d-expired"], expiredBefore + 1);
  } finally {
    offsetMs -= 6000;
  }
  await provisioned("c2d-full");
  for (let i = 0; i < 50; i++) em.sendC2D("c2d-full", { body: `m${i}` });
  const error = t.throws(() => em.sendC2D("c2d-full", { body: "one too many" }), { instanceOf: HubServiceError });
  t.is(error?.status, 403);
  t.is(error?.errorCode, 403004);
  const viaAdmin = await admin(em, "POST", "/devices/c2d-full/messages", { body: "again" });
  t.is(viaAdmin.status, 403);
  t.is(viaAdmin.json.error.errorCode, 403004);
  t.is((await admin(em, "DELETE", "/devices/c2d-full/messages")).json.purged, 50);
});

test("c2d: the admin API queues a message with properties and lists it until it is acknowledged", async (t) => {
  const key = await provisioned("c2d-admin");
  const sent = await admin(em, "POST", "/devices/c2d-admin/messages", { body: "via admin", properties: { a: "1" }, messageId: "adm-1", ttlSeconds: 60 });
  t.is(sent.status, 201);
  t.is(sent.json.messageId, "adm-1");
  const listed = await admin(em, "GET", "/devices/c2d-admin/messages");
  t.like(listed.json[0], { messageId: "adm-1", body: "via admin", properties: { a: "1" }, deliveries: 0 });
  t.is((await admin(em, "POST", "/devices/c2d-admin/messages", { text: "x" })).status, 400);
  t.is((await admin(em, "POST", "/devices/nobody/messages", { body: "x" })).status, 404);
  const client = await connected("c2d-admin", key, HUB_1, ["devices/c2d-admin/messages/devicebound/#"]);
  const p = await client.nextPublish(); // acknowledged
  t.is(p.payload.toString(), "via admin");
  await client.publish("$iothub/twin/GET/?$rid=1", "");
  t.deepEqual((await admin(em, "GET", "/devices/c2d-admin/messages")).json, []);
  client.end();
});

test("methods: a subscribed device gets the call and its answer resolves invokeMethod; offline is 404103 at once; silence is 504101 after the timeout", async (t) => {
  const key = await provisioned("m-raw");
  const offline = await t.throwsAsync(em.invokeMethod("m-raw", { methodName: "reboot" }), { instanceOf: HubServiceError });
  t.like(offline, { status: 404, errorCode: 404103, code: "DeviceNotOnline" });
  const client = await connected("m-raw", key, HUB_1, ["$iothub/methods/POST/#"]);
  const call = em.invokeMethod("m-raw", { methodName: "reboot", payload: { delay: 1 }, responseTimeoutInSeconds: 5 });
  const request = await client.nextPublish();
  const m = /^\$iothub\/methods\/POST\/reboot\/\?\$rid=(.+)$/.exec(request.topic);
  t.truthy(m);
  t.deepEqual(JSON.parse(request.payload.toString()), { delay: 1 });
  await client.publish(`$iothub/methods/res/201/?$rid=${m![1]}`, JSON.stringify({ ok: true }));
  t.deepEqual(await call, { status: 201, payload: { ok: true } });

  const started = Date.now();
  const silent = em.invokeMethod("m-raw", { methodName: "ignored", responseTimeoutInSeconds: 5 });
  await client.nextPublish();
  const timeout = await t.throwsAsync(silent, { instanceOf: HubServiceError });
  t.like(timeout, { status: 504, errorCode: 504101 });
  t.true(Date.now() - started >= 4900 && Date.now() - started < 8000);
  await t.throwsAsync(em.invokeMethod("m-raw", { methodName: "x", responseTimeoutInSeconds: 2 }), { instanceOf: HubServiceError, message: /responseTimeoutInSeconds/ });
  client.end();
});

test("methods: with connectTimeoutInSeconds the call waits for the device to connect and subscribe", async (t) => {
  const key = await provisioned("m-late");
  const call = em.invokeMethod("m-late", { methodName: "hello", connectTimeoutInSeconds: 10, responseTimeoutInSeconds: 5 });
  const client = await connected("m-late", key, HUB_1, ["$iothub/methods/POST/#"]);
  const request = await client.nextPublish();
  const rid = /\$rid=(.+)$/.exec(request.topic)![1];
  await client.publish(`$iothub/methods/res/200/?$rid=${rid}`, "");
  t.deepEqual(await call, { status: 200, payload: null });
  client.end();
});

test("twin: reported patches merge (null deletes), bad and oversize ones get 400, desired changes are pushed with $version", async (t) => {
  const key = await provisioned("twin-raw");
  const client = await connected("twin-raw", key, HUB_1, ["$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"]);
  const patch = async (rid: string, body: string) => {
    await client.publish(`$iothub/twin/PATCH/properties/reported/?$rid=${rid}`, body);
    return await client.nextPublish();
  };
  t.regex((await patch("1", JSON.stringify({ a: 1, b: { c: 2, d: 3 } }))).topic, /^\$iothub\/twin\/res\/204\/\?\$rid=1&\$version=\d+$/);
  t.regex((await patch("2", JSON.stringify({ b: { c: null } }))).topic, /res\/204\//);
  t.regex((await patch("3", "not json")).topic, /^\$iothub\/twin\/res\/400\/\?\$rid=3$/);
  t.regex((await patch("4", "[1,2]")).topic, /res\/400\//);
  t.regex((await patch("5", JSON.stringify({ big: "x".repeat(4097) }))).topic, /res\/400\//, "a string value over 4 KB");
  const deep: Record<string, unknown> = {};
  let at = deep;
  for (let i = 0; i < 10; i++) at = at.n = {} as Record<string, unknown>;
  t.regex((await patch("6", JSON.stringify(deep))).topic, /res\/400\//, "nesting over 10");
  const many = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, "y".repeat(4000)]));
  const over = await patch("7", JSON.stringify(many));
  t.regex(over.topic, /res\/400\//, "over 32 KB in all");
  t.like(JSON.parse(over.payload.toString()), { errorCode: 400004 });
  await client.publish("$iothub/twin/GET/?$rid=8", "");
  const doc = JSON.parse((await client.nextPublish()).payload.toString());
  t.deepEqual({ ...doc.reported, $version: 0 }, { a: 1, b: { d: 3 }, $version: 0 });

  em.updateTwin("twin-raw", { properties: { desired: { interval: 10 } }, tags: { site: "lab" } });
  const pushed = await client.nextPublish();
  const version = Number(/\$version=(\d+)$/.exec(pushed.topic)![1]);
  t.deepEqual(JSON.parse(pushed.payload.toString()), { interval: 10, $version: version });
  const twin = em.twin("twin-raw") as any;
  t.is(twin.properties.desired.$version, version);
  t.deepEqual(twin.tags, { site: "lab" });
  const stale = t.throws(() => em.updateTwin("twin-raw", { tags: { x: 1 } }, { etag: "AAAAAAAAAAE=" }), { instanceOf: HubServiceError });
  t.is(stale?.status, 412);
  client.end();
});

test("twin: an injected 429 and a drop at twin-patch, a 503 at twin-get, a delay, then the twin answers again", async (t) => {
  const key = await provisioned("twin-faults");
  const client = await connected("twin-faults", key, HUB_1, ["$iothub/twin/res/#"]);
  em.addFault({ step: "twin-patch", registrationId: "twin-faults", status: 429, times: 1 });
  await client.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", "{}");
  const throttled = await client.nextPublish();
  t.is(throttled.topic, "$iothub/twin/res/429/?$rid=1");
  t.like(JSON.parse(throttled.payload.toString()), { errorCode: 429001 });
  em.addFault({ step: "twin-get", registrationId: "twin-faults", status: 503, times: 1 });
  await client.publish("$iothub/twin/GET/?$rid=2", "");
  t.is((await client.nextPublish()).topic, "$iothub/twin/res/503/?$rid=2");
  em.addFault({ step: "twin-get", registrationId: "twin-faults", delayMs: 300, times: 1 });
  const started = Date.now();
  await client.publish("$iothub/twin/GET/?$rid=3", ""); // PUBACK at once, the answer late
  t.is((await client.nextPublish()).topic, "$iothub/twin/res/200/?$rid=3");
  t.true(Date.now() - started >= 280);
  em.addFault({ step: "twin-patch", registrationId: "twin-faults", drop: true, times: 1 });
  client.send({ cmd: "publish", topic: "$iothub/twin/PATCH/properties/reported/?$rid=4", payload: "{}", qos: 1, messageId: client.nextMessageId(), retain: false, dup: false });
  await client.closed; // no answer, no PUBACK
  t.true((em.counters().faults["twin-patch"] ?? 0) >= 2);
});

test("twin: limits.twinOperationsPerSecond answers 429 over the rate", async (t) => {
  const stateDir = tempStateDir();
  const own = await startEmulator({
    stateDir,
    config: { idScope: ID_SCOPE, hubs: [{ hostName: HUB_1 }], retryAfterSeconds: 0, limits: { twinOperationsPerSecond: 2 } },
  });
  t.teardown(() => own.stop());
  own.addIndividualEnrollment({ registrationId: "twin-rate", primaryKey: keyFor("twin-rate") });
  t.is((await provision(own, "twin-rate", keyFor("twin-rate"))).status, 200);
  const { client } = await hubConnect(own, HUB_1, "twin-rate", keyFor("twin-rate"));
  await client.subscribe("$iothub/twin/res/#");
  const statuses: string[] = [];
  for (let i = 1; i <= 4; i++) {
    await client.publish(`$iothub/twin/GET/?$rid=${i}`, "");
    statuses.push(/res\/(\d+)\//.exec((await client.nextPublish()).topic)![1]);
  }
  t.true(statuses.includes("429"), statuses.join(","));
  t.is(statuses[0], "200");
  client.end();
});

test("twin: it moves with the device when DPS re-provisions it to another hub (reported, desired, tags and versions)", async (t) => {
  const key = await provisioned("twin-move", HUB_1);
  const client = await connected("twin-move", key, HUB_1, ["$iothub/twin/res/#"]);
  await client.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", JSON.stringify({ fw: "1.0" }));
  await client.nextPublish();
  client.end();
  em.updateTwin("twin-move", { tags: { site: "a" }, properties: { desired: { rate: 5 } } });
  const before = em.twin("twin-move", HUB_1) as any;
  em.addIndividualEnrollment({ registrationId: "twin-move", primaryKey: key, iotHubHostName: HUB_2 });
  const answer = await provision(em, "twin-move", key);
  t.is(answer.json.registrationState.assignedHub, HUB_2);
  t.is(answer.json.registrationState.substatus, "deviceDataMigrated");
  const after = em.twin("twin-move", HUB_2) as any;
  t.deepEqual(after.tags, { site: "a" });
  t.is(after.properties.desired.rate, 5);
  t.is(after.properties.reported.fw, "1.0");
  t.true(after.properties.desired.$version >= before.properties.desired.$version);
  t.throws(() => em.twin("twin-move", HUB_1), { instanceOf: HubServiceError });
  const moved = await connected("twin-move", key, HUB_2, ["$iothub/twin/res/#"]);
  await moved.publish("$iothub/twin/GET/?$rid=1", "");
  t.like(JSON.parse((await moved.nextPublish()).payload.toString()), { desired: { rate: 5 }, reported: { fw: "1.0" } });
  moved.end();
});
