// Every fault kind over the wire: injected statuses with realistic bodies, CONNACK refusals,
// dropped connections at each step, delays, malformed bodies, probability with a seed, matching
// by device and by group, and rules from a config file.
import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { derive, dpsDevice, dpsToken, hubConnect, keyFor, provision, RawClient, withEmulator, HUB_1, ID_SCOPE } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;
const STATUSES = [400, 401, 403, 404, 405, 409, 412, 415, 429, 500, 503];

test.before(async () => {
  em = await withEmulator({ seed: 3 });
  em.addGroupEnrollment({ groupId: "faulty-group", primaryKey: keyFor("faulty-group") });
});
test.after.always(async () => {
  await em?.dispose();
});

function enroll(id: string): string {
  em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id), iotHubHostName: HUB_1 });
  return keyFor(id);
}

test("faults: every status of the table (and 403, 503) reaches the device at register, with a realistic body", async (t) => {
  for (const status of STATUSES) {
    const id = `status-reg-${status}`;
    const key = enroll(id);
    em.addFault({ step: "register", registrationId: id, status, times: 1 });
    const device = await dpsDevice(em, id, key);
    const answer = await device.register();
    t.is(answer.status, status);
    t.is(Math.floor(answer.json.errorCode / 1000), status);
    t.regex(answer.json.trackingId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    t.is(typeof answer.json.message, "string");
    t.regex(answer.json.timestampUtc, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
    if (status === 429) t.is(answer.retryAfter, "0");
    else t.is(answer.retryAfter, undefined);
    t.is((await device.register()).status, 202, "the rule was spent after one match");
    device.client.end();
  }
});

test("faults: every status reaches the device at poll; errorCode and a garbage retry-after are passed through", async (t) => {
  for (const status of STATUSES) {
    const id = `status-poll-${status}`;
    const key = enroll(id);
    em.addFault({ step: "poll", registrationId: id, status, times: 1, ...(status === 503 ? { errorCode: 503123, retryAfter: "soon" } : {}) });
    const device = await dpsDevice(em, id, key);
    const accepted = await device.register();
    const answer = await device.poll(accepted.json.operationId);
    t.is(answer.status, status);
    if (status === 503) {
      t.is(answer.json.errorCode, 503123);
      t.is(answer.retryAfter, "soon");
    }
    t.is((await device.poll(accepted.json.operationId)).status, 200);
    device.client.end();
  }
});

test("faults: CONNACK refusals 1-5 at connect, and a status at connect mapped to its CONNACK", async (t) => {
  for (const code of [1, 2, 3, 4, 5]) {
    const id = `connack-${code}`;
    const key = enroll(id);
    em.addFault({ step: "connect", registrationId: id, connack: code });
    await t.throwsAsync(dpsDevice(em, id, key), { message: `CONNACK ${code}` });
  }
  const key = enroll("connect-503");
  em.addFault({ step: "connect", registrationId: "connect-503", status: 503 });
  await t.throwsAsync(dpsDevice(em, "connect-503", key), { message: "CONNACK 3" });
  t.true(em.counters().dps["connack-5"] >= 1);
});

test("faults: a dropped connection at connect, subscribe, register and poll closes without an answer", async (t) => {
  const kd = enroll("drop-connect");
  em.addFault({ step: "connect", registrationId: "drop-connect", drop: true });
  await t.throwsAsync(dpsDevice(em, "drop-connect", kd), { message: /closed/ });

  const ks = enroll("drop-subscribe");
  em.addFault({ step: "subscribe", registrationId: "drop-subscribe", drop: true });
  await t.throwsAsync(dpsDevice(em, "drop-subscribe", ks), { message: /closed/ });

  const kr = enroll("drop-register");
  em.addFault({ step: "register", registrationId: "drop-register", drop: true });
  const dr = await dpsDevice(em, "drop-register", kr);
  await t.throwsAsync(dr.register(), { message: /closed/ });

  const kp = enroll("drop-poll");
  em.addFault({ step: "poll", registrationId: "drop-poll", drop: true });
  const dp = await dpsDevice(em, "drop-poll", kp);
  const accepted = await dp.register();
  await t.throwsAsync(dp.poll(accepted.json.operationId), { message: /closed/ });
  t.true(em.counters().faults.poll >= 1);
});

test("faults: a status at subscribe refuses the subscription", async (t) => {
  const key = enroll("sub-refused");
  em.addFault({ step: "subscribe", registrationId: "sub-refused", status: 500 });
  const device = await dpsDevice(em, "sub-refused", key, { subscribe: false });
  t.teardown(() => device.client.end());
  t.deepEqual((await device.client.subscribe("$dps/registrations/res/#")).granted, [0x80]);
});

test("faults: a delay holds the answer back, then it arrives intact", async (t) => {
  const key = enroll("slowpoke");
  em.addFault({ step: "register", registrationId: "slowpoke", delayMs: 400, times: 1 });
  const device = await dpsDevice(em, "slowpoke", key);
  t.teardown(() => device.client.end());
  await device.client.publish("$dps/registrations/PUT/iotdps-register/?$rid=late", JSON.stringify({ registrationId: "slowpoke" }));
  await t.throwsAsync(device.client.next(150), { message: /no packet/ });
  const answer = await device.client.nextPublish(3000);
  t.regex(answer.topic, /res\/202\/\?\$rid=late/);
});

test("faults: each malformed kind corrupts the answer the way it says", async (t) => {
  const kinds = ["non-json", "missing-operation-id", "wrong-types", "truncated"] as const;
  for (const kind of kinds) {
    for (const step of ["register", "poll"] as const) {
      const id = `malformed-${kind}-${step}`;
      const key = enroll(id);
      em.addFault({ step, registrationId: id, malformed: kind, times: 1 });
      const device = await dpsDevice(em, id, key);
      let answer = await device.register();
      if (step === "poll") {
        t.is(answer.status, 202);
        answer = await device.poll(answer.json.operationId);
      }
      t.is(answer.status, step === "register" ? 202 : 200, `${kind} at ${step} keeps the status`);
      if (kind === "non-json" || kind === "truncated") t.is(answer.json, undefined, `${kind} at ${step} is not JSON`);
      if (kind === "missing-operation-id") {
        t.is(answer.json.operationId, undefined);
        t.truthy(answer.json.status);
      }
      if (kind === "wrong-types") {
        t.is(typeof answer.json.operationId, "number");
        t.is(typeof answer.json.status, "number");
      }
      device.client.end();
    }
  }
});

test("faults: a malformed error body combines with a status", async (t) => {
  const key = enroll("malformed-429");
  em.addFault({ step: "register", registrationId: "malformed-429", status: 429, malformed: "truncated", times: 1 });
  const device = await dpsDevice(em, "malformed-429", key);
  t.teardown(() => device.client.end());
  const answer = await device.register();
  t.is(answer.status, 429);
  t.is(answer.json, undefined);
  t.true(answer.text.startsWith('{"errorCode":4290'));
});

test("faults: a rule naming a group matches its members only", async (t) => {
  em.addFault({ step: "register", groupId: "faulty-group", status: 500 });
  const memberKey = derive(keyFor("faulty-group"), "group-kid");
  const member = await dpsDevice(em, "group-kid", memberKey);
  t.teardown(() => member.client.end());
  t.is((await member.register()).status, 500);
  const outsiderKey = enroll("not-in-group");
  const outsider = await dpsDevice(em, "not-in-group", outsiderKey);
  t.teardown(() => outsider.client.end());
  t.is((await outsider.register()).status, 202);
});

test("faults: probability faults replay the same way with the same seed", async (t) => {
  const run = async (seed: number): Promise<string> => {
    const local = await withEmulator({ seed });
    try {
      local.addIndividualEnrollment({ registrationId: "dice", primaryKey: keyFor("dice") });
      local.addFault({ step: "register", registrationId: "dice", probability: 0.5, status: 503 });
      const device = await dpsDevice(local, "dice", keyFor("dice"));
      let pattern = "";
      for (let i = 0; i < 24; i++) pattern += (await device.register()).status === 503 ? "x" : ".";
      device.client.end();
      return pattern;
    } finally {
      await local.dispose();
    }
  };
  const a = await run(99);
  t.is(await run(99), a);
  t.not(await run(100), a);
  t.true(a.includes("x") && a.includes("."));
});

test("faults: hub-connect refusals, drops and statuses; hub-publish drops and statuses close the connection", async (t) => {
  const key = enroll("hub-faults");
  t.is((await provision(em, "hub-faults", key)).json.registrationState.assignedHub, HUB_1);
  em.addFault({ step: "hub-connect", registrationId: "hub-faults", connack: 3, times: 1 });
  const refused = await hubConnect(em, HUB_1, "hub-faults", key);
  t.is(refused.returnCode, 3);
  await refused.client.closed;
  em.addFault({ step: "hub-connect", registrationId: "hub-faults", status: 401, times: 1 });
  t.is((await hubConnect(em, HUB_1, "hub-faults", key)).returnCode, 5);
  em.addFault({ step: "hub-connect", registrationId: "hub-faults", drop: true, times: 1 });
  await t.throwsAsync(hubConnect(em, HUB_1, "hub-faults", key), { message: /closed/ });

  em.addFault({ step: "hub-publish", registrationId: "hub-faults", drop: true, times: 1 });
  const a = await hubConnect(em, HUB_1, "hub-faults", key);
  t.is(a.returnCode, 0);
  await t.throwsAsync(a.client.publish("devices/hub-faults/messages/events/", "lost"), { message: /closed/ });
  em.addFault({ step: "hub-publish", registrationId: "hub-faults", status: 500, times: 1 });
  const b = await hubConnect(em, HUB_1, "hub-faults", key);
  await t.throwsAsync(b.client.publish("devices/hub-faults/messages/events/", "lost"), { message: /closed/ });
  em.addFault({ step: "hub-publish", registrationId: "hub-faults", delayMs: 200, times: 1 });
  const c = await hubConnect(em, HUB_1, "hub-faults", key);
  t.teardown(() => c.client.end());
  await c.client.publish("devices/hub-faults/messages/events/", "late but kept");
  t.deepEqual(em.telemetry("hub-faults").map((m) => m.payload), ["late but kept"]);
});

test("faults: rules load from the config file", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "emulator-faults-config-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "config.json");
  writeFileSync(
    path,
    JSON.stringify({
      idScope: ID_SCOPE,
      hubs: [{ hostName: HUB_1 }],
      retryAfterSeconds: 0,
      enrollments: { individual: [{ registrationId: "from-file", primaryKey: keyFor("from-file") }] },
      faults: [{ step: "register", registrationId: "from-file", status: 409, times: 1 }],
    }),
  );
  const local = await withEmulator({ config: path });
  t.teardown(() => local.dispose());
  const device = await dpsDevice(local, "from-file", keyFor("from-file"));
  t.teardown(() => device.client.end());
  t.is((await device.register()).status, 409);
  t.is((await device.register()).status, 202);
  t.is(local.faults()[0].matched, 1);
});

test("faults: a CONNECT-step fault does not need a valid token to apply (it comes before any check)", async (t) => {
  em.addFault({ step: "connect", registrationId: "no-such-device", connack: 5 });
  const client = await RawClient.open(em.endpoints.dps.tcpPort);
  t.teardown(() => client.end());
  const connack = await client.connect({
    clientId: "no-such-device",
    username: `${em.idScope}/registrations/no-such-device/api-version=2019-03-31`,
    password: dpsToken("no-such-device", keyFor("x"), { idScope: em.idScope }),
  });
  t.is(connack.returnCode, 5);
});
