// The provisioning service without sockets: decisions DPS makes, driven with a fixed clock.
import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkConfig, loadConfigFile, type EmulatorConfig } from "../../simulator/config.js";
import { EmulatorError } from "../../simulator/errors.js";
import { FaultBook } from "../../simulator/faults.js";
import { Random } from "../../simulator/random.js";
import { parseSasToken } from "../../simulator/sas.js";
import { ProvisioningService } from "../../simulator/service.js";
import { SlidingKeyLimit, WindowLimit } from "../../simulator/throttle.js";
import { derive, dpsToken, HUB_1, HUB_2, ID_SCOPE, keyFor } from "./helpers.js";

const NOW = Date.UTC(2030, 0, 1);
const future = Math.floor(NOW / 1000) + 3600;

function service(extra: Partial<EmulatorConfig> = {}): ProvisioningService {
  const config = checkConfig({ idScope: ID_SCOPE, hubs: [{ hostName: HUB_1 }, { hostName: HUB_2 }], ...extra });
  return new ProvisioningService(config, new Random(42), 300);
}
const token = (id: string, key: string, expiry = future) => parseSasToken(dpsToken(id, key, { expiry }));
const body = (id: string, payload?: object) => JSON.stringify({ registrationId: id, payload });

function registerToEnd(s: ProvisioningService, id: string, key: string) {
  const first = s.register(id, token(id, key), body(id), NOW);
  if (first.status !== 202) return first;
  let answer = first;
  for (let i = 0; i < 10 && answer.status === 202; i++) answer = s.poll(id, token(id, key), first.body.operationId as string, NOW);
  return answer;
}

test("service: register answers 202 assigning with an operation id, then a poll answers 200 with the full state", (t) => {
  const s = service();
  s.addIndividualEnrollment({ registrationId: "dev-a", primaryKey: keyFor("dev-a"), allocationPayload: { region: "eu" } });
  const first = s.register("dev-a", token("dev-a", keyFor("dev-a")), body("dev-a", { model: "x" }), NOW);
  t.is(first.status, 202);
  t.is(first.body.status, "assigning");
  t.regex(first.body.operationId as string, /^4\.[0-9a-f]{16}\.[0-9a-f-]{36}$/);
  const done = s.poll("dev-a", token("dev-a", keyFor("dev-a")), first.body.operationId as string, NOW);
  t.is(done.status, 200);
  t.is(done.body.status, "assigned");
  t.is(done.body.operationId, first.body.operationId);
  const state = done.body.registrationState as Record<string, unknown>;
  for (const field of ["registrationId", "createdDateTimeUtc", "assignedHub", "deviceId", "status", "substatus", "lastUpdatedDateTimeUtc", "etag"]) {
    t.true(field in state, field);
  }
  t.is(state.substatus, "initialAssignment");
  t.deepEqual(state.payload, { region: "eu" });
  t.regex(state.createdDateTimeUtc as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
  t.deepEqual(s.registration("dev-a")?.requestPayload, { model: "x" });
});

test("service: assignAfterPolls holds 'assigning' for that many polls; 0 assigns on the register answer", (t) => {
  const s = service({ assignAfterPolls: 3 });
  s.addIndividualEnrollment({ registrationId: "dev-b", primaryKey: keyFor("dev-b") });
  const first = s.register("dev-b", token("dev-b", keyFor("dev-b")), body("dev-b"), NOW);
  const statuses = [1, 2, 3].map(() => s.poll("dev-b", token("dev-b", keyFor("dev-b")), first.body.operationId as string, NOW).status);
  t.deepEqual(statuses, [202, 202, 200]);
  s.assignAfterPolls = 0;
  const immediate = s.register("dev-b", token("dev-b", keyFor("dev-b")), body("dev-b"), NOW);
  t.is(immediate.status, 200);
  t.is(immediate.body.status, "assigned");
});

test("service: wrong key, expired token, wrong scope and malformed token answer 401 with 401002", (t) => {
  const s = service();
  s.addIndividualEnrollment({ registrationId: "dev-c", primaryKey: keyFor("dev-c"), secondaryKey: keyFor("dev-c2") });
  t.is(s.register("dev-c", token("dev-c", keyFor("other")), body("dev-c"), NOW).status, 401);
  const expired = s.register("dev-c", token("dev-c", keyFor("dev-c"), Math.floor(NOW / 1000) - 301), body("dev-c"), NOW);
  t.is(expired.status, 401);
  t.is(expired.body.errorCode, 401002);
  t.is(expired.reason, "expired");
  t.is(s.register("dev-c", token("dev-c", keyFor("dev-c"), Math.floor(NOW / 1000) - 299), body("dev-c"), NOW).status, 202);
  t.is(s.register("dev-c", token("dev-c", keyFor("dev-c2")), body("dev-c"), NOW).status, 202, "secondary key");
  t.is(s.register("dev-c", token("dev-c", keyFor("dev-c")), body("dev-c"), NOW, "0neOTHER").reason, "wrong-scope");
  t.is(s.register("dev-c", "malformed-token", body("dev-c"), NOW).status, 401);
});

test("service: a group member authenticates with its derived key; the group key itself gets 401", (t) => {
  const s = service();
  const groupKey = keyFor("group-1");
  s.addGroupEnrollment({ groupId: "group-1", primaryKey: groupKey });
  t.is(s.register("member-1", token("member-1", derive(groupKey, "member-1")), body("member-1"), NOW).status, 202);
  const direct = s.register("member-1", token("member-1", groupKey), body("member-1"), NOW);
  t.is(direct.status, 401);
  t.is(direct.reason, "group-key-used-directly");
  t.is(s.register("member-1", token("member-1", derive(keyFor("other-group"), "member-1")), body("member-1"), NOW).status, 401);
  t.is(s.groupOf("member-1", token("member-1", derive(groupKey, "member-1")), NOW), "group-1");
});

test("service: an unknown registration gets 404201 when no group could vouch for it (401 when configured)", (t) => {
  const answer = service().register("ghost", token("ghost", keyFor("ghost")), body("ghost"), NOW);
  t.is(answer.status, 404);
  t.is(answer.body.errorCode, 404201);
  t.is(service({ unknownRegistrationStatus: 401 }).register("ghost", token("ghost", keyFor("ghost")), body("ghost"), NOW).status, 401);
});

test("service: bad bodies answer 400 and unknown operations 404", (t) => {
  const s = service();
  s.addIndividualEnrollment({ registrationId: "dev-d", primaryKey: keyFor("dev-d") });
  const tk = token("dev-d", keyFor("dev-d"));
  t.is(s.register("dev-d", tk, "{not json", NOW).status, 400);
  t.is(s.register("dev-d", tk, body("someone-else"), NOW).status, 400);
  t.is(s.poll("dev-d", tk, "4.0.nope", NOW).status, 404);
  t.is(s.poll("dev-d", tk, undefined, NOW).status, 400);
});

test("service: a disabled enrollment or a disabled group member ends with status 'disabled'", (t) => {
  const s = service();
  s.addIndividualEnrollment({ registrationId: "dev-e", primaryKey: keyFor("dev-e"), enabled: false });
  const answer = registerToEnd(s, "dev-e", keyFor("dev-e"));
  t.is(answer.status, 200);
  t.is(answer.body.status, "disabled");
  t.is((answer.body.registrationState as { status: string }).status, "disabled");
  t.false("assignedHub" in (answer.body.registrationState as object));
  s.addGroupEnrollment({ groupId: "g", primaryKey: keyFor("g"), disabledRegistrations: ["blocked"] });
  t.is(registerToEnd(s, "blocked", derive(keyFor("g"), "blocked")).body.status, "disabled");
  t.is(registerToEnd(s, "allowed", derive(keyFor("g"), "allowed")).body.status, "assigned");
  s.setEnrollmentEnabled({ groupId: "g" }, false);
  t.is(registerToEnd(s, "allowed", derive(keyFor("g"), "allowed")).body.status, "disabled");
  t.throws(() => s.setEnrollmentEnabled({ groupId: "nope" }, true), { instanceOf: EmulatorError });
});

test("service: re-provisioning reports the substatus of the enrollment's policy", (t) => {
  const s = service();
  const cases = [
    ["reprovisionAndMigrate", "deviceDataMigrated"],
    ["reprovisionAndReset", "deviceDataReset"],
    ["neverReprovision", "reprovisionedToInitialAssignment"],
  ] as const;
  for (const [policy, substatus] of cases) {
    const id = `re-${policy}`;
    s.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id), reprovisionPolicy: policy });
    const first = registerToEnd(s, id, keyFor(id));
    t.is((first.body.registrationState as { substatus: string }).substatus, "initialAssignment");
    const again = registerToEnd(s, id, keyFor(id));
    t.is((again.body.registrationState as { substatus: string }).substatus, substatus, policy);
  }
  s.deleteRegistration("re-neverReprovision");
  t.is((registerToEnd(s, "re-neverReprovision", keyFor("re-neverReprovision")).body.registrationState as { substatus: string }).substatus, "initialAssignment");
});

test("service: moving to another hub migrates the twin and removes the device from the old hub", (t) => {
  const s = service();
  s.addIndividualEnrollment({ registrationId: "mover", primaryKey: keyFor("mover"), iotHubHostName: HUB_1, initialTwin: { properties: { desired: { rate: 5 } } } });
  t.is((registerToEnd(s, "mover", keyFor("mover")).body.registrationState as { assignedHub: string }).assignedHub, HUB_1);
  t.deepEqual(s.hub(HUB_1)?.devices.get("mover")?.desired, { rate: 5 });
  s.addIndividualEnrollment({ registrationId: "mover", primaryKey: keyFor("mover"), iotHubHostName: HUB_2 });
  const moved = registerToEnd(s, "mover", keyFor("mover"));
  t.is((moved.body.registrationState as { assignedHub: string }).assignedHub, HUB_2);
  t.is((moved.body.registrationState as { substatus: string }).substatus, "deviceDataMigrated");
  t.deepEqual(s.hub(HUB_2)?.devices.get("mover")?.desired, { rate: 5 });
  t.is(s.hub(HUB_1)?.devices.get("mover"), undefined);
});

test("service: hashed allocation is stable and spreads by weight; static takes the first hub", (t) => {
  const s = service();
  s.addGroupEnrollment({ groupId: "fleet", primaryKey: keyFor("fleet") });
  const counts: Record<string, number> = { [HUB_1]: 0, [HUB_2]: 0 };
  for (let i = 0; i < 200; i++) {
    const id = `fleet-${i}`;
    counts[(registerToEnd(s, id, derive(keyFor("fleet"), id)).body.registrationState as { assignedHub: string }).assignedHub]++;
  }
  t.true(counts[HUB_1] > 60 && counts[HUB_2] > 60, JSON.stringify(counts));
  const again = registerToEnd(s, "fleet-7", derive(keyFor("fleet"), "fleet-7"));
  t.is((again.body.registrationState as { assignedHub?: string }).assignedHub, s.registration("fleet-7")?.assignedHub);

  const weighted = service({ hubs: [{ hostName: HUB_1, allocationWeight: 0 }, { hostName: HUB_2, allocationWeight: 1 }] });
  weighted.addGroupEnrollment({ groupId: "fleet", primaryKey: keyFor("fleet") });
  for (let i = 0; i < 20; i++) {
    t.is((registerToEnd(weighted, `w-${i}`, derive(keyFor("fleet"), `w-${i}`)).body.registrationState as { assignedHub: string }).assignedHub, HUB_2);
  }
  const fixed = service({ allocationPolicy: "static" });
  fixed.addGroupEnrollment({ groupId: "fleet", primaryKey: keyFor("fleet") });
  for (let i = 0; i < 20; i++) {
    t.is((registerToEnd(fixed, `s-${i}`, derive(keyFor("fleet"), `s-${i}`)).body.registrationState as { assignedHub: string }).assignedHub, HUB_1);
  }
});

test("service: the HTTPS lookup answers the state, 404202 before any registration, 401 for a bad token", (t) => {
  const s = service();
  s.addIndividualEnrollment({ registrationId: "dev-f", primaryKey: keyFor("dev-f") });
  const before = s.lookup("dev-f", token("dev-f", keyFor("dev-f")), NOW);
  t.is(before.status, 404);
  t.is(before.body.errorCode, 404202);
  registerToEnd(s, "dev-f", keyFor("dev-f"));
  const after = s.lookup("dev-f", token("dev-f", keyFor("dev-f")), NOW);
  t.is(after.status, 200);
  t.is(after.body.status, "assigned");
  t.is(s.lookup("dev-f", token("dev-f", keyFor("nope")), NOW).status, 401);
});

test("service: telemetry keeps only the newest messages, oldest first", (t) => {
  const s = service({ telemetryLimit: 3 });
  for (let i = 0; i < 5; i++) s.addTelemetry({ deviceId: i % 2 ? "odd" : "even", hubHostName: HUB_1, topic: "t", payload: String(i), receivedAt: i });
  t.deepEqual(s.telemetry().map((m) => m.payload), ["2", "3", "4"]);
  t.deepEqual(s.telemetry("odd").map((m) => m.payload), ["3"]);
});

test("throttle: a window admits its limit then answers the seconds to wait; sliding per-key limit frees over time", (t) => {
  const w = new WindowLimit(2);
  t.is(w.take(60_000), 0);
  t.is(w.take(60_500), 0);
  t.is(w.take(61_000), 59);
  t.is(w.take(120_000), 0);
  const k = new SlidingKeyLimit(2, 10_000);
  t.is(k.take("a", 0), 0);
  t.is(k.take("a", 1000), 0);
  t.is(k.take("a", 2000), 8);
  t.is(k.take("b", 2000), 0);
  t.is(k.take("a", 10_001), 0);
});

test("faults: probability draws replay with the same seed, differ with another; times spends a rule", (t) => {
  const draws = (seed: number) => {
    const book = new FaultBook(new Random(seed));
    book.add({ step: "register", probability: 0.5, status: 500 });
    return Array.from({ length: 64 }, () => (book.match("register", { registrationId: "x" }) ? 1 : 0)).join("");
  };
  t.is(draws(7), draws(7));
  t.not(draws(7), draws(8));
  const ones = draws(7).split("").filter((c) => c === "1").length;
  t.true(ones > 16 && ones < 48);
  const book = new FaultBook(new Random(1));
  book.add({ step: "poll", registrationId: "d1", times: 2, status: 503 });
  book.add({ step: "poll", groupId: "g1", status: 500 });
  t.is(book.match("poll", { registrationId: "d2" }), undefined);
  t.is(book.match("poll", { registrationId: "d1" })?.status, 503);
  t.is(book.match("poll", { registrationId: "d1" })?.status, 503);
  t.is(book.match("poll", { registrationId: "d1" }), undefined);
  t.is(book.match("poll", { registrationId: "d3", groupId: "g1" })?.status, 500);
  t.throws(() => book.add({ step: "poll", status: 302 }), { instanceOf: EmulatorError });
  t.throws(() => book.add({ step: "register", connack: 5 }), { instanceOf: EmulatorError });
  t.throws(() => book.add({ step: "nowhere" } as never), { instanceOf: EmulatorError });
});

test("config: a file loads with defaults filled in; mistakes name the file and the field", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "emulator-config-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const good = join(dir, "good.json");
  writeFileSync(good, JSON.stringify({ idScope: "0ne00000042", hubs: [{ hostName: HUB_1 }], enrollments: { individual: [{ registrationId: "a", primaryKey: keyFor("a") }] } }));
  const config = loadConfigFile(good);
  t.is(config.assignAfterPolls, 1);
  t.is(config.retryAfterSeconds, 3);
  t.deepEqual(config.limits, { registrationsPerMinute: 1000, operationsPerMinute: 1000, pollsPerDevicePer10s: 5 });
  const bad = join(dir, "bad.json");
  writeFileSync(bad, JSON.stringify({ idScope: "0ne00000042", hubs: [{ hostName: HUB_1 }], enrollments: { individual: [{ registrationId: "a", primaryKey: "not base64!" }] } }));
  const error = t.throws(() => loadConfigFile(bad), { instanceOf: EmulatorError });
  t.regex(error?.message ?? "", /bad\.json: enrollments\.individual\[0\]/);
  writeFileSync(bad, "{");
  t.throws(() => loadConfigFile(bad), { message: /not JSON/ });
  t.throws(() => checkConfig({ idScope: "x", hubs: [] }), { message: /hubs/ });
  t.throws(() => checkConfig({ idScope: "x", hubs: [{ hostName: HUB_1 }], faults: [{ step: "poll", status: 200 }] }), { message: /faults\[0\]\.status/ });
  t.throws(() => service().addIndividualEnrollment({ registrationId: "a", primaryKey: keyFor("a"), iotHubHostName: "nowhere.example" }), { message: /not one of the configured hubs/ });
});
