// DPS over MQTT on the wire: CONNECT checks, tokens in both forms, the register/poll exchange,
// $rid and retry-after, throttling, and bad packets.
import test from "ava";
import { randomUUID } from "node:crypto";
import { derive, dpsAnswer, dpsDevice, dpsToken, keyFor, provision, RawClient, withEmulator, type DpsDevice } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
let em: Em;

test.before(async () => {
  em = await withEmulator({ seed: 1 });
  em.addGroupEnrollment({ groupId: "dps-group", primaryKey: keyFor("dps-group") });
});
test.after.always(async () => {
  await em?.dispose();
});

function enroll(id: string): string {
  em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id) });
  return keyFor(id);
}

async function registerWith(id: string, token: string): Promise<number> {
  const device = await dpsDevice(em, id, "", { token });
  try {
    return (await device.register()).status;
  } finally {
    device.client.end();
  }
}

test("dps: the Node form (raw sr, skn) and the Embedded C form (encoded sr, no skn) both register", async (t) => {
  const key = enroll("sr-forms");
  t.is(await registerWith("sr-forms", dpsToken("sr-forms", key, { idScope: em.idScope })), 202);
  t.is(await registerWith("sr-forms", dpsToken("sr-forms", key, { idScope: em.idScope, encoded: true })), 202);
  t.is(await registerWith("sr-forms", dpsToken("sr-forms", key, { idScope: em.idScope, encoded: true, skn: "registration" })), 202);
  t.is(await registerWith("sr-forms", dpsToken("sr-forms", key, { idScope: em.idScope, skn: null })), 202);
  t.is(await registerWith("sr-forms", dpsToken("sr-forms", key, { idScope: em.idScope, skn: "iothubowner" })), 401);
});

test("dps: tokens expired within the skew pass, beyond it get 401; a wrong key gets 401", async (t) => {
  const key = enroll("expiry");
  const now = Math.floor(Date.now() / 1000);
  t.is(await registerWith("expiry", dpsToken("expiry", key, { idScope: em.idScope, expiry: now - 200 })), 202);
  t.is(await registerWith("expiry", dpsToken("expiry", key, { idScope: em.idScope, expiry: now - 400 })), 401);
  t.is(await registerWith("expiry", dpsToken("expiry", keyFor("not-it"), { idScope: em.idScope })), 401);
});

test("dps: a group member registers with its derived key; with the group key itself it gets 401 and 401002", async (t) => {
  t.is(await registerWith("grp-member", dpsToken("grp-member", derive(keyFor("dps-group"), "grp-member"), { idScope: em.idScope })), 202);
  const device = await dpsDevice(em, "grp-member", keyFor("dps-group"));
  t.teardown(() => device.client.end());
  const answer = await device.register();
  t.is(answer.status, 401);
  t.is(answer.json.errorCode, 401002);
  t.regex(answer.json.trackingId, /^[0-9a-f-]{36}$/);
  t.regex(answer.json.timestampUtc, /Z$/);
});

test("dps: register -> 202 with operationId and retry-after -> poll -> 200 with the full registration state", async (t) => {
  const key = enroll("full-flow");
  const device = await dpsDevice(em, "full-flow", key);
  t.teardown(() => device.client.end());
  const accepted = await device.register("1");
  t.is(accepted.status, 202);
  t.is(accepted.rid, "1");
  t.is(accepted.retryAfter, "0");
  t.is(accepted.json.status, "assigning");
  const assigned = await device.poll(accepted.json.operationId, "2");
  t.is(assigned.status, 200);
  t.is(assigned.rid, "2");
  t.is(assigned.json.status, "assigned");
  t.is(assigned.json.operationId, accepted.json.operationId);
  t.like(assigned.json.registrationState, { registrationId: "full-flow", deviceId: "full-flow", status: "assigned", substatus: "initialAssignment" });
  t.regex(assigned.json.registrationState.assignedHub, /\.azure-devices\.localhost$/);
  t.truthy(assigned.json.registrationState.etag);
  t.true(em.registrations().some((r) => r.registrationId === "full-flow" && r.status === "assigned"));
});

test("dps: $rid is echoed unchanged (numbers, UUIDs, odd strings), whatever the order of query parameters", async (t) => {
  const key = enroll("rid-echo");
  const device = await dpsDevice(em, "rid-echo", key);
  t.teardown(() => device.client.end());
  for (const rid of ["7", "4294967296", randomUUID(), "abc-DEF_1.2"]) t.is((await device.register(rid)).rid, rid);
  const accepted = await device.register("x");
  await device.client.publish(`$dps/registrations/GET/iotdps-get-operationstatus/?operationId=${accepted.json.operationId}&$rid=reordered`, " ");
  const answer = dpsAnswer(await device.client.nextPublish());
  t.is(answer.rid, "reordered");
  t.is(answer.status, 200);
});

test("dps: a registration is 'assigning' for assignAfterPolls polls; retry-after carries the configured value", async (t) => {
  const slow = await withEmulator({ config: { idScope: "0ne0000slow", hubs: [{ hostName: "hub-1.azure-devices.localhost" }], assignAfterPolls: 3, retryAfterSeconds: 2 } });
  t.teardown(() => slow.dispose());
  slow.addIndividualEnrollment({ registrationId: "patient", primaryKey: keyFor("patient") });
  const device = await dpsDevice(slow, "patient", keyFor("patient"));
  t.teardown(() => device.client.end());
  const accepted = await device.register();
  t.is(accepted.retryAfter, "2");
  const polls = [];
  for (let i = 0; i < 3; i++) polls.push(await device.poll(accepted.json.operationId));
  t.deepEqual(polls.map((a) => a.status), [202, 202, 200]);
  t.deepEqual(polls.map((a) => a.retryAfter), ["2", "2", undefined]);
});

test("dps: throttling answers 429 with 429001 and retry-after, for registrations and for polls per device", async (t) => {
  const tight = await withEmulator({
    config: { idScope: "0ne0000thrt", hubs: [{ hostName: "hub-1.azure-devices.localhost" }], assignAfterPolls: 100, retryAfterSeconds: 0, limits: { registrationsPerMinute: 2, pollsPerDevicePer10s: 2 } },
  });
  t.teardown(() => tight.dispose());
  tight.addIndividualEnrollment({ registrationId: "busy", primaryKey: keyFor("busy") });
  const device = await dpsDevice(tight, "busy", keyFor("busy"));
  t.teardown(() => device.client.end());
  const first = await device.register();
  t.is((await device.register()).status, 202);
  const throttled = await device.register();
  t.is(throttled.status, 429);
  t.is(throttled.json.errorCode, 429001);
  t.true(Number(throttled.retryAfter) >= 1);
  t.is((await device.poll(first.json.operationId)).status, 202);
  t.is((await device.poll(first.json.operationId)).status, 202);
  const pollThrottled = await device.poll(first.json.operationId);
  t.is(pollThrottled.status, 429);
  t.true(Number(pollThrottled.retryAfter) >= 1 && Number(pollThrottled.retryAfter) <= 10);
  t.true(tight.counters().dps["429"] >= 2);
  t.true(tight.counters().throttled >= 2);
});

test("dps: CONNECT with a malformed user name or unsupported api-version gets 4, MQTT 5 gets 1, a mismatched client id gets 2", async (t) => {
  const key = enroll("conn-checks");
  const attempt = async (fields: { clientId: string; username?: string; protocolVersion?: 4 | 5 }) => {
    const client = await RawClient.open(em.endpoints.dps.tcpPort);
    t.teardown(() => client.end());
    const connack = await client.connect({ ...fields, password: dpsToken("conn-checks", key, { idScope: em.idScope }) });
    if (connack.returnCode !== 0) await client.closed; // a refusal closes the connection
    return connack.returnCode;
  };
  t.is(await attempt({ clientId: "conn-checks", username: `${em.idScope}/registrations/conn-checks` }), 4);
  t.is(await attempt({ clientId: "conn-checks", username: `${em.idScope}/registrations/conn-checks/api-version=1999-01-01` }), 4);
  t.is(await attempt({ clientId: "conn-checks", username: "conn-checks" }), 4);
  t.is(await attempt({ clientId: "someone-else", username: `${em.idScope}/registrations/conn-checks/api-version=2019-03-31` }), 2);
  t.is(await attempt({ clientId: "conn-checks", username: `${em.idScope}/registrations/conn-checks/api-version=2021-06-01&ClientVersion=x%2F1` }), 0);
  const v5 = await RawClient.open(em.endpoints.dps.tcpPort);
  t.teardown(() => v5.end());
  v5.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clean: true, clientId: "conn-checks", keepalive: 10 });
  const refused = await v5.next();
  t.is(refused.cmd, "connack");
  t.is(refused.cmd === "connack" ? refused.returnCode : undefined, 1);
  await v5.closed;
});

test("dps: only the response filter is granted; without the subscription no answer is delivered", async (t) => {
  const key = enroll("subs");
  const device = await dpsDevice(em, "subs", key, { subscribe: false });
  t.teardown(() => device.client.end());
  const suback = await device.client.subscribe("devices/subs/#");
  t.deepEqual(suback.granted, [0x80]);
  await device.client.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", JSON.stringify({ registrationId: "subs" }));
  await t.throwsAsync(device.client.next(300), { message: /no packet/ });
  t.deepEqual((await device.client.subscribe("$dps/registrations/res/#", 2)).granted, [1], "QoS 2 is downgraded to 1");
});

test("dps: a malformed packet closes that client only, with a log line; others carry on", async (t) => {
  const logs: Record<string, unknown>[] = [];
  const local = await withEmulator({ log: (e) => logs.push(e) });
  t.teardown(() => local.dispose());
  local.addIndividualEnrollment({ registrationId: "bystander", primaryKey: keyFor("bystander") });
  const bystander = await dpsDevice(local, "bystander", keyFor("bystander"));
  t.teardown(() => bystander.client.end());
  const first = await bystander.register();

  const garbage = await RawClient.open(local.endpoints.dps.tcpPort);
  garbage.sendRaw(Buffer.from([0xf0, 0x00])); // reserved packet type 15
  await garbage.closed;
  const early = await RawClient.open(local.endpoints.dps.tcpPort);
  early.send({ cmd: "pingreq" }); // before CONNECT
  await early.closed;
  const badFlags = await RawClient.open(local.endpoints.dps.tlsPort, { tls: { ca: local.caPem } });
  badFlags.sendRaw(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f])); // remaining length over 4 bytes
  await badFlags.closed;

  t.true(logs.filter((e) => e.event === "bad-packet").length >= 3);
  t.is((await bystander.poll(first.json.operationId)).status, 200);
  t.true(local.counters().badPackets >= 3);
});

test("dps: a publish to a topic DPS does not serve closes the connection", async (t) => {
  const key = enroll("wrong-topic");
  const device: DpsDevice = await dpsDevice(em, "wrong-topic", key);
  device.client.send({ cmd: "publish", topic: "devices/wrong-topic/messages/events/", payload: "x", qos: 0, retain: false, dup: false });
  await device.client.closed;
  t.true(device.client.isClosed);
});

test("dps: provisioning works over TLS against the written CA", async (t) => {
  const key = enroll("over-tls");
  const answer = await provision(em, "over-tls", key, { tls: true });
  t.is(answer.status, 200);
  t.is(answer.json.status, "assigned");
});

test("dps: a registration answered while no one listens does not break the next device", async (t) => {
  const key = enroll("quitter");
  const device = await dpsDevice(em, "quitter", key);
  device.client.send({ cmd: "publish", topic: "$dps/registrations/PUT/iotdps-register/?$rid=1", payload: JSON.stringify({ registrationId: "quitter" }), qos: 1, messageId: 9, retain: false, dup: false });
  device.client.end();
  const answer = await provision(em, "quitter", key);
  t.is(answer.status, 200);
});

test("dps: the emulator listens on ::1 and its certificate covers the IPv6 loopback address", async (t) => {
  const v6 = await withEmulator({ host: "::1" });
  t.teardown(() => v6.dispose());
  v6.addIndividualEnrollment({ registrationId: "over-ipv6", primaryKey: keyFor("over-ipv6") });
  const client = await RawClient.open(v6.endpoints.dps.tlsPort, { host: "::1", tls: { ca: v6.caPem } });
  t.teardown(() => client.end());
  const connack = await client.connect({
    clientId: "over-ipv6",
    username: `${v6.idScope}/registrations/over-ipv6/api-version=2021-06-01`,
    password: dpsToken("over-ipv6", keyFor("over-ipv6"), { idScope: v6.idScope }),
  });
  t.is(connack.returnCode, 0);
  t.is(v6.endpoints.admin.url, `http://[::1]:${v6.endpoints.admin.port}`);
});
