/**
 * Fleet scenarios, run small against the emulator over TLS: the same scenario files as the
 * 10,000-device runs in docs/PERFORMANCE.md, with fewer devices and shorter waits. Each asserts
 * the behaviour the troubleshooting table asks for from the runtime's own events and the
 * emulator's counters; none asserts a duration.
 */
import test from "ava";
import { join } from "node:path";
import {
  TIMER_RESOLUTION_MS,
  bootSchedule,
  evaluate,
  checkScenario,
  fleetIds,
  loadScenario,
  mergeReports,
  MergeError,
  formatReport,
  reportFile,
  runScenario,
  scenarioEmulatorConfig,
  shardIndices,
  type Scenario,
  type ScenarioReport,
} from "../hosts/desktop/scenario.js";
import { ConnectGate, mergeFleetRaw, peakInWindow, percentiles, summarizeFleet, type FleetRaw, type FleetSummary } from "../hosts/desktop/fleet.js";
import { startEmulator } from "../simulator/index.js";
import { recoveryBoundMs, registrationsBound } from "../hosts/desktop/bounds.js";
import { retryPolicy } from "../modules/retry-policy.js";
import type { MqttConnector, MqttSessionCallbacks } from "../modules/ports.js";
import { projectRoot } from "./support/xs.js";

const scenarios = join(projectRoot, "hosts", "desktop", "scenarios");
const stateDir = join(projectRoot, ".cache", "emulator-tests");
const load = (name: string) => loadScenario(join(scenarios, `${name}.json`));

test("fleet percentiles: nearest rank, empty input gives zeros", (t) => {
  t.deepEqual(percentiles([5, 1, 3, 2, 4]), { min: 1, median: 3, p99: 5, max: 5 });
  t.deepEqual(percentiles([]), { min: 0, median: 0, p99: 0, max: 0 });
});

test("fleet peakInWindow: counts the most times inside any window", (t) => {
  t.is(peakInWindow([0, 10, 20, 500, 505], 100), 3);
  t.is(peakInWindow([0, 100, 200], 100), 1);
  t.is(peakInWindow([7, 7, 7, 7], 100), 4, "lockstep: all at once");
  t.is(peakInWindow([], 100), 0);
});

test("scenario files: every shipped file loads and checks", (t) => {
  for (const name of ["mass-boot", "throttling-storm", "throttling-storm-fast", "hub-outage", "disabled-wave", "hub-refusal", "rollout-100k"]) {
    const s = load(name);
    t.is(s.name, name);
  }
});

test("scenario check: a misspelt key is an error naming the file, the key and the nearest valid one, in every section", (t) => {
  const base = { name: "x", seed: 1, devices: { count: 1 } };
  const cases: [Record<string, unknown>, string][] = [
    [{ ...base, expct: {} }, 'f.json: expct: unknown key "expct" (did you mean "expect"?)'],
    [{ ...base, devices: { count: 1, mesages: 2 } }, 'f.json: devices.mesages: unknown key "mesages" (did you mean "messages"?)'],
    [{ ...base, emulator: { retryAfterSecond: 1 } }, 'f.json: emulator.retryAfterSecond: unknown key "retryAfterSecond" (did you mean "retryAfterSeconds"?)'],
    [{ ...base, emulator: { limits: { registrationPerMinute: 5 } } }, 'f.json: emulator.limits.registrationPerMinute: unknown key "registrationPerMinute" (did you mean "registrationsPerMinute"?)'],
    [{ ...base, emulator: { faults: [{ step: "register", probabilty: 0.2 }] } }, 'f.json: emulator.faults[0].probabilty: unknown key "probabilty" (did you mean "probability"?)'],
    [{ ...base, host: { maxConnectng: 1 } }, 'f.json: host.maxConnectng: unknown key "maxConnectng" (did you mean "maxConnecting"?)'],
    [{ ...base, timeline: [{ do: "end", wait: 1 }] }, 'f.json: timeline[0].wait: unknown key "wait" (did you mean "waitMs"?)'],
    [{ ...base, expect: { terminal: { count: 0, cod: "X" } } }, 'f.json: expect.terminal.cod: unknown key "cod" (did you mean "code"?)'],
    [{ ...base, retryPolicy: { backof: {} } }, 'f.json: retryPolicy.backof: unknown key "backof" (did you mean "backoff"?)'],
    [{ ...base, retryPolicy: { hub: { intialMs: 6000 } } }, 'f.json: retryPolicy.hub.intialMs: unknown key "intialMs" (did you mean "initialMs"?)'],
    [{ ...base, retryPolicy: { fault: { timout: "retry" } } }, 'f.json: retryPolicy.fault.timout: unknown key "timout" (did you mean "timeout"?)'],
    [{ ...base, devices: { count: "abc" } }, 'f.json: devices.count: must be an integer from 1 to 1000000, got "abc"'],
  ];
  for (const [value, message] of cases) t.throws(() => checkScenario(value, "f.json"), { message }, message);
});

test("scenario check: a bad field is named", (t) => {
  const error = t.throws(() => checkScenario({ name: "x", seed: 1, devices: { count: 0 } }));
  t.regex(error!.message, /devices\.count/);
  const step = t.throws(() => checkScenario({ name: "x", seed: 1, devices: { count: 1 }, timeline: [{ do: "disable" }] }));
  t.regex(step!.message, /timeline\[0\]\.fraction/);
  const marks = [{ do: "hub-disable", mark: "a" }, { waitMs: 1, do: "hub-enable", mark: "b" }];
  const window = t.throws(() => checkScenario({ name: "x", seed: 1, devices: { count: 1 }, timeline: marks, expect: { registrationsBound: { from: "b", to: "a" } } }));
  t.regex(window!.message, /expect\.registrationsBound/);
  const recovery = t.throws(() => checkScenario({ name: "x", seed: 1, devices: { count: 1 }, timeline: marks, expect: { recoveryBound: "c" } }));
  t.regex(recovery!.message, /expect\.recoveryBound/);
  const policy = t.throws(() => checkScenario({ name: "x", seed: 1, devices: { count: 1 }, retryPolicy: { longTail: { initialMs: 10 } } }));
  t.regex(policy!.message, /retryPolicy/);
});

test("scenario expectations: registrations over the bound, and a device not back within the recovery bound, fail", (t) => {
  const policy = retryPolicy({ longTail: { initialMs: 1_000, maxMs: 4_000 } });
  const window = { from: "refused", to: "accepted", ms: 10_000, registrations: { total: 0, perDevice: percentiles([]), distribution: {} } };
  const bound = registrationsBound(10_000, policy);
  t.is(bound, 2 * 17 + 3, "1 + 2 + 4 s ≤ 10 s: three long-tail wakes");
  const summary = (max: number, recovered: number, lastMs: number) =>
    ({
      total: 10,
      connected: 10,
      connectedAtEnd: 10,
      failed: [],
      timedOut: [],
      retries: { count: 0, causes: {}, withRetryAfter: 0, peakPer100ms: 0, distinctShare: 1 },
      hub: { retries: 0, peakPer100ms: 0, reRegistrations: 0, reprovisionOutcomes: 20 },
      windows: [{ ...window, registrations: { ...window.registrations, perDevice: { min: 1, median: 2, p99: max, max } } }],
      recoveries: { accepted: { devices: recovered, afterMs: { min: 1, median: 2, p99: lastMs, max: lastMs } } },
    }) as unknown as FleetSummary;
  const expect = { registrationsBound: { from: "refused", to: "accepted" }, recoveryBound: "accepted" };
  const names = ["DPS registrations within the bound", "every device back within the recovery bound"];
  const ok = evaluate(expect, summary(bound, 10, recoveryBoundMs(policy)), 0, 10, policy);
  t.deepEqual(names.map((n) => ok.find((c) => c.name === n)!.ok), [true, true], JSON.stringify(ok));
  const over = evaluate(expect, summary(bound + 1, 9, recoveryBoundMs(policy)), 0, 10, policy);
  t.deepEqual(names.map((n) => over.find((c) => c.name === n)!.ok), [false, false]);
  const late = evaluate(expect, summary(2, 10, recoveryBoundMs(policy) + 1), 0, 10, policy);
  t.false(late.find((c) => c.name === names[1])!.ok);
});

test("scenario expectations can fail: lockstep retries and an early retry are reported", (t) => {
  const summary = {
    total: 10,
    connected: 10,
    connectedAtEnd: 10,
    failed: [],
    timedOut: [],
    retries: { count: 10, causes: { "429": 10 }, withRetryAfter: 10, retryAfterMarginMs: -5, scheduleMarginMs: 0, peakPer100ms: 10, distinctShare: 0 },
    hub: { retries: 0, peakPer100ms: 0, reRegistrations: 0, reprovisionOutcomes: 0 },
  } as unknown as FleetSummary;
  const checks = evaluate({ maxPeakShare: 0.1, retryAfterHonoured: true }, summary, 0, 10);
  t.false(checks.find((c) => c.name === "no lockstep retries")!.ok);
  t.false(checks.find((c) => c.name === "retry-after and backoff honoured")!.ok);
});

const formatReportOf = (r: ScenarioReport) => formatReport(r);

function failures(report: Awaited<ReturnType<typeof runScenario>>): string {
  return report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join("\n");
}

test("fleet mass boot (emulator in a child process): every device provisions once, connects and delivers", async (t) => {
  const report = await runScenario(load("mass-boot"), { count: 120, staggerMs: 1000, stateDir, separateProcess: true });
  t.true(report.checks.every((c) => c.ok), failures(report));
  const s = report.summary;
  t.is(s.connected, 120);
  t.is(s.delivered, 120);
  t.is(s.registers.max, 1, "one register per device: no needless retry");
  t.is(report.emulatorCounters!.dps["202"], 120);
  t.is(report.emulatorCounters!.hub.telemetry, 120);
  t.truthy(s.timeToConnectedMs);
});

test("fleet throttling storm: every 429 retry waits for retry-after, and the retries are spread, not in lockstep", async (t) => {
  // The table, not the numbers, is under test: a shorter backoff cap keeps an unlucky device's
  // fifth 429 in a row from waiting half a minute. retry-after (2 s) still rules the first retries.
  // 30% of registers throttled, so that 100 devices meet enough 429s for the checks to mean something.
  const base = load("throttling-storm-fast");
  const scenario: Scenario = {
    ...base,
    emulator: { ...base.emulator, faults: [{ step: "register", probability: 0.3, status: 429, retryAfter: 2 }] },
    retryPolicy: { backoff: { initialMs: 1000, maxMs: 4000, multiplier: 2, jitter: 0.5 } },
    // A few dozen retries are too few for the 100 ms window share to be steady; the spread of
    // the delays themselves is asserted below.
    expect: { ...base.expect, maxPeakShare: 0.4 },
  };
  const report = await runScenario(scenario, { count: 100, stateDir, separateProcess: false });
  t.true(report.checks.every((c) => c.ok), failures(report));
  const r = report.summary.retries;
  const throttled = r.causes["429"] ?? 0;
  t.true(throttled >= 20, `${throttled} retries after a 429`);
  // On a loaded machine a connection may also time out or drop: those retries follow the backoff
  // rows of the table. Anything else (a 401, a refused CONNACK) would be a fault of the runtime's.
  const others = Object.keys(r.causes).filter((cause) => cause !== "429");
  t.true(others.every((cause) => cause.startsWith("fault-")), `retries by cause: ${JSON.stringify(r.causes)}`);
  t.is(r.withRetryAfter, throttled, "each retry after a 429 followed an answer that carried retry-after");
  t.true(r.retryAfterMarginMs! >= -TIMER_RESOLUTION_MS, "never before the service's retry-after");
  t.true(r.distinctShare > 0.9, `retry times are spread: ${r.distinctShare}`);
  t.true(r.delayMs!.max - r.delayMs!.min >= 0.3 * r.delayMs!.min, `delays spread by the jitter: ${JSON.stringify(r.delayMs)}`);
  // After a 429 the first retry waits the whole retry-after (2 s); after a fault, the backoff's
  // first step at the least (1 s less its jitter of 50 %).
  t.true(r.delayMs!.min >= (others.length === 0 ? 2000 : 500), `the shortest wait: ${r.delayMs!.min} ms`);
  t.is(report.summary.connected, 100);
  t.is(report.emulatorCounters!.dps["429"] ?? 0, throttled, "the emulator answered exactly the 429s the devices report");
});

test("fleet hub outage: devices retry their cached hub at least 5 s apart, do not re-register, and all come back", async (t) => {
  const base = load("hub-outage");
  const scenario: Scenario = {
    ...base,
    retryPolicy: { hub: { maxMs: 5_000 } },
    timeline: [
      { after: "settled", waitMs: 500, do: "hub-down" },
      { waitMs: 6_000, do: "hub-up", mark: "hub-up" },
      { until: "reconnected", waitMs: 60_000, do: "end" },
    ],
  };
  const report = await runScenario(scenario, { count: 100, staggerMs: 500, stateDir, separateProcess: false });
  t.true(report.checks.every((c) => c.ok), failures(report));
  const h = report.summary.hub;
  t.true(h.retries >= 100, `every device lost its hub: ${h.retries} reconnects scheduled`);
  t.true(h.minGapMs! >= 5_000, `attempts ≥ 5 s apart: ${h.minGapMs}`);
  t.true(h.delayMs!.min >= 5_000);
  t.is(h.reRegistrations, 0, "no DPS registration within the retry window");
  t.is(report.summary.registers.max, 1);
  t.true((report.emulatorCounters!.hub["connack-3"] ?? 0) > 0, "some devices tried while the hub was away");
  t.is(report.summary.connectedAtEnd, 100);
  t.is(report.summary.recoveries["hub-up"]?.devices, 100);
});

test("fleet disabled wave: the disabled devices re-register once, back off with a clear reason; the others stay connected", async (t) => {
  const report = await runScenario(load("disabled-wave"), { count: 100, staggerMs: 500, stateDir, separateProcess: false });
  t.true(report.checks.every((c) => c.ok), failures(report));
  const s = report.summary;
  t.is(report.wave.length, 10);
  t.deepEqual(s.failed.map((f) => f.registrationId).sort(), [...report.wave].sort());
  for (const f of s.failed) {
    t.is(f.code, "REGISTRATION_FAILED");
    t.regex(f.message, /disabled/);
  }
  t.is(s.hub.reRegistrations, 10, "re-registration exactly where the hub refused the identity");
  t.is(report.emulatorCounters!.hub["connack-5"], 10);
  t.is(s.connectedAtEnd, 90);
});

test("fleet hub refusal: the hub refuses every device (CONNACK 5) while DPS assigns it; registrations stay within the bound, all are back within the recovery bound", async (t) => {
  // The same checks as the 30-minute run (docs/FLEET.md), scaled down: a 25 s refusal and a long
  // tail of 1, 2, 4, 4 s... instead of 10, 20, 40, 60 min. The bounds come from this policy.
  const base = load("hub-refusal");
  const longTail = { initialMs: 1_000, maxMs: 4_000, multiplier: 2, jitter: 0.5 };
  // 25 s of refusal: the second refusal of a device comes after a hub retry (at least 5 s), a
  // registration and a new hub connection, later on a loaded machine; every device must get there.
  const scenario: Scenario = {
    ...base,
    retryPolicy: { longTail },
    timeline: [
      { after: "settled", waitMs: 500, do: "hub-disable", mark: "refused" },
      { waitMs: 25_000, do: "hub-enable", mark: "accepted" },
      { until: "reconnected", waitMs: 40_000, do: "end" },
    ],
    timeoutMs: 90_000,
  };
  const policy = retryPolicy({ longTail });
  const report = await runScenario(scenario, { count: 100, staggerMs: 500, stateDir, separateProcess: false });
  t.true(report.checks.every((c) => c.ok), failures(report));
  const s = report.summary;
  t.is(report.hubDisabled.length, 100, "every device disabled on its hub");
  t.is(report.wave.length, 0, "and none in DPS");
  t.is(s.everBackedOff, 100, "every device went into the long tail");
  t.is(s.failed.length, 0, "and came out of it");
  t.is(s.connectedAtEnd, 100);
  t.true(s.hub.reprovisionOutcomes >= 200, `two refusals per device at least: ${s.hub.reprovisionOutcomes}`);
  t.true((report.emulatorCounters!.hub["connack-5"] ?? 0) >= 200);
  t.true((s.statusCodes["200"] ?? 0) >= 200, `DPS kept assigning the devices (their enrollment stays enabled): ${JSON.stringify(s.statusCodes)}`);
  const w = s.windows.find((x) => x.from === "refused" && x.to === "accepted")!;
  t.truthy(w);
  t.true(w.registrations.perDevice.min >= 1, `every device registered again at once: ${JSON.stringify(w.registrations)}`);
  t.true(w.registrations.perDevice.max <= registrationsBound(w.ms, policy));
  t.is(Object.values(w.registrations.distribution).reduce((a, b) => a + b, 0), 100);
  const after = s.windows.find((x) => x.from === "accepted" && x.to === "the end")!;
  t.true(after.registrations.perDevice.max <= 1, `one registration at most per device to come back: ${JSON.stringify(after.registrations)}`);
  t.is(s.recoveries.accepted?.devices, 100);
  t.true(s.recoveries.accepted!.afterMs!.max <= recoveryBoundMs(policy));
});

test("fleet ConnectGate: at most `limit` connections before CONNACK, the rest in turn, pipelined packets kept in order, a closed waiter skipped", (t) => {
  const log: string[] = [];
  const opened: { id: string; callbacks: MqttSessionCallbacks }[] = [];
  const inner: MqttConnector = {
    connect(options, callbacks) {
      opened.push({ id: options.clientId, callbacks });
      log.push(`connect ${options.clientId}`);
      return {
        subscribe: (topic) => (log.push(`subscribe ${options.clientId} ${topic}`), 1),
        publish: (topic) => (log.push(`publish ${options.clientId} ${topic}`), 2),
        close: () => log.push(`close ${options.clientId}`),
      };
    },
  };
  const gate = new ConnectGate(inner, 2);
  const none: MqttSessionCallbacks = { onConnack() {}, onSuback() {}, onMessage() {}, onPuback() {}, onClose() {} };
  const connect = (id: string) => gate.connect({ host: "h", port: 1, clientId: id, username: "u", password: "p", keepAliveSeconds: 0, cleanSession: true }, none);
  connect("a");
  connect("b");
  const c = connect("c");
  c.subscribe("s", 1);
  t.is(c.publish("p", new Uint8Array(0), 1), 0, "a waiting session answers packet id 0");
  const d = connect("d");
  connect("e");
  t.deepEqual(opened.map((o) => o.id), ["a", "b"]);
  d.close();
  opened[0].callbacks.onConnack(0, false);
  t.deepEqual(opened.map((o) => o.id), ["a", "b", "c"]);
  t.deepEqual(log.slice(-3), ["connect c", "subscribe c s", "publish c p"], "pipelined packets replayed in order");
  opened[1].callbacks.onClose({ kind: "closed", message: "x" });
  t.deepEqual(opened.map((o) => o.id), ["a", "b", "c", "e"], "d was closed while waiting: skipped");
});

// ---- shards ------------------------------------------------------------------------------------

test("shards: shard K of N takes the indices i ≡ K−1 (mod N); together they are the fleet, each device at its one boot time", (t) => {
  for (const n of [1, 2, 3, 7]) {
    const all = Array.from({ length: n }, (_, k) => shardIndices(100, { index: k + 1, count: n })).flat().sort((a, b) => a - b);
    t.deepEqual(all, Array.from({ length: 100 }, (_, i) => i), `${n} shards`);
  }
  t.deepEqual(shardIndices(10, { index: 2, count: 4 }), [1, 5, 9]);
  const whole = bootSchedule(7, 100, 60_000);
  t.deepEqual(bootSchedule(7, 100, 60_000), whole, "a function of the seed and the index");
  t.true([...whole].every((ms) => ms >= 0 && ms < 60_000));
  t.notDeepEqual(bootSchedule(8, 100, 60_000), whole);
  t.deepEqual(fleetIds("p-", 3), ["p-00001", "p-00002", "p-00003"]);
  t.is(fleetIds("p-", 100_000)[99_999], "p-100000");
});

test("mergeFleetRaw: lists joined (percentiles of the union), counters added, the smallest margins kept", (t) => {
  const raw = (times: number[], due: number[], margin: number, codes: Record<string, number>): FleetRaw => ({
    total: times.length,
    messages: 1,
    startedAt: 1000,
    endedAt: 2000 + times.length,
    connectedAtEnd: times.length,
    delivered: times.length,
    everBackedOff: 0,
    fromCache: 0,
    failed: [],
    timedOut: [],
    timeToConnectedMs: times,
    dpsAttempts: times.map(() => 1),
    registers: times.map(() => 1),
    statusCodes: codes,
    hubStates: {},
    retries: { due, delays: due.map(() => 10), causes: { "429": due.length }, withRetryAfter: due.length, retryAfterMarginMs: margin, scheduleMarginMs: margin },
    hub: { due: [], delays: [], reRegistrations: 0, reprovisionOutcomes: 0 },
    marks: [{ name: "m", at: 1500 }],
    recoveries: { m: times.slice(0, 1) },
    windows: [{ from: "m", to: "the end", ms: 500 + times.length, perDevice: times.map(() => 1) }],
  });
  const a = raw([1, 5, 9], [10_000, 10_050], 3, { "200": 3 });
  const b = raw([2, 4, 6, 8], [10_020, 20_000], 1, { "200": 4, "429": 2 });
  const merged = summarizeFleet(mergeFleetRaw([a, b]));
  t.deepEqual(merged.timeToConnectedMs, percentiles([1, 5, 9, 2, 4, 6, 8]));
  t.is(merged.total, 7);
  t.deepEqual(merged.statusCodes, { "200": 7, "429": 2 });
  t.is(merged.retries.count, 4);
  t.is(merged.retries.peakPer100ms, 3, "retries of both shards due in one 100 ms window count together");
  t.is(merged.retries.retryAfterMarginMs, 1);
  t.is(merged.recoveries.m.devices, 2);
  t.is(merged.windows[0].ms, 503, "a window lasts what the shortest shard measured");
  t.is(merged.windows[0].registrations.total, 7);
  t.is(merged.elapsedMs, 1004);
});

/** Two shards of the disabled wave against one emulator started on its own, and the whole fleet in one run: once for the tests below. */
let shardRuns: Promise<{ shards: ScenarioReport[]; whole: ScenarioReport; registered: string[]; ids: string[] }> | undefined;
function runShards() {
  shardRuns ??= (async () => {
    const scenario = load("disabled-wave");
    const count = 80;
    const emulator = await startEmulator({ config: scenarioEmulatorConfig(scenario, { count }), stateDir, seed: 5 });
    try {
      const target = { kind: "emulator", adminUrl: emulator.endpoints.admin.url } as const;
      const options = { count, staggerMs: 500, stateDir, target };
      const [one, two, whole] = await Promise.all([
        runScenario(scenario, { ...options, shard: { index: 1, count: 2 } }),
        runScenario(scenario, { ...options, shard: { index: 2, count: 2 } }),
        runScenario(scenario, { count, staggerMs: 500, stateDir, separateProcess: false }),
      ]);
      const registered = emulator.registrations().map((r: { registrationId: string }) => r.registrationId).sort();
      return { shards: [one, two], whole, registered, ids: fleetIds("disabled-wave-", count) };
    } finally {
      await emulator.stop();
    }
  })();
  return shardRuns;
}

/** A report as it goes through a file. */
const asFile = (file: string, r: ScenarioReport) => ({ file, report: JSON.parse(JSON.stringify(reportFile(r))) as unknown });

test("shards: two shards against one emulator, merged, are the fleet of one run of the whole: the same devices, counts that add up, the same checks passing", async (t) => {
  const { shards, whole, registered, ids } = await runShards();
  for (const r of shards) t.true(r.checks.every((c) => c.ok), failures(r));
  t.true(whole.checks.every((c) => c.ok), failures(whole));
  t.deepEqual(shards.map((r) => r.summary.total), [40, 40]);
  t.deepEqual(registered, ids, "the shared emulator registered exactly the fleet's devices, once each");
  t.deepEqual([...shards[0].wave, ...shards[1].wave].sort(), [...whole.wave].sort(), "the same disabled wave as one run, split between the shards");
  t.is(shards[0].run.scenarioHash, whole.run.scenarioHash);
  t.regex(shards[1].run.command, /--shard 2\/2 --emulator-admin http:\/\/127\.0\.0\.1:\d+$/);

  const merged = mergeReports([asFile("r1.json", shards[0]), asFile("r2.json", shards[1])]);
  const m = merged.summary;
  const w = whole.summary;
  t.is(m.total, w.total);
  t.is(m.connected, w.connected);
  t.is(m.connectedAtEnd, w.connectedAtEnd);
  t.is(m.failed.length, w.failed.length);
  t.is(m.hub.reRegistrations, w.hub.reRegistrations);
  t.deepEqual(m.registers, w.registers);
  t.deepEqual(merged.checks.map((c) => [c.name, c.ok]), whole.checks.map((c) => [c.name, c.ok]), "the same checks, passing alike");
  t.deepEqual(m.timeToConnectedMs, percentiles([...shards[0].raw.timeToConnectedMs, ...shards[1].raw.timeToConnectedMs]), "percentiles of the union of the shards' times");
  t.is(m.connected, shards[0].summary.connected + shards[1].summary.connected);
  t.deepEqual(m.statusCodes, Object.fromEntries(Object.keys({ ...shards[0].summary.statusCodes, ...shards[1].summary.statusCodes }).map((k) => [k, (shards[0].summary.statusCodes[k] ?? 0) + (shards[1].summary.statusCodes[k] ?? 0)])));
  t.is(merged.shards?.length, 2);
  t.regex(formatReportOf(merged), /^merged 2 shards of scenario disabled-wave: 80 devices/);
});

test("shards: merge refuses reports that are not the shards of one run, saying why", async (t) => {
  const { shards, whole } = await runShards();
  const [one, two] = [asFile("r1.json", shards[0]), asFile("r2.json", shards[1])];
  const edit = (f: { file: string; report: unknown }, change: (r: Record<string, any>) => void) => {
    const copy = JSON.parse(JSON.stringify(f.report)) as Record<string, any>;
    change(copy);
    return { file: f.file, report: copy as unknown };
  };
  const refuses = (files: { file: string; report: unknown }[], message: RegExp) => t.throws(() => mergeReports(files), { instanceOf: MergeError, message });
  refuses([one, edit(two, (r) => (r.run.seed = 6))], /^r2\.json is not a shard of the same run as r1\.json: seed 6, not 5$/);
  refuses([one, edit(two, (r) => (r.run.count = 81))], /fleet size \(--count\) 81, not 80/);
  refuses([one, asFile("whole.json", whole)], /^whole\.json is not a shard of the same run as r1\.json: number of shards 1, not 2$/);
  refuses([one, one], /^r1\.json and r1\.json are both shard 1\/2$/);
  refuses([one], /^shard 2\/2 missing: give all 2 reports of the run \(have 1\/2\)$/);
  refuses([one, { file: "x.json", report: { hello: 1 } }], /^x\.json: not a dps-fleet report/);
  refuses([one, edit(two, (r) => (r.scenario.devices.count = 3))], /^r2\.json: its scenario does not match its own hash/);
});
