/**
 * The JSON Schemas in schemas/ and the validator that checks files against them
 * (simulator/json-schema.ts): every shipped scenario and example config validates and points at its
 * schema with `$schema`; the validator's keywords and messages; a schema using a keyword it does
 * not support is refused; and the schemas agree with the code that reads the files: every key the
 * code's types declare is in the schema (objects typed `Required<...>` list them all), and the retry
 * policy's sections and settings are exactly the runtime's.
 */
import test from "ava";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { Scenario, ScenarioExpectations, TimelineStep } from "../hosts/desktop/scenario.js";
import { checkScenario } from "../hosts/desktop/scenario.js";
import { defaultRetryPolicy, retryPolicy } from "../modules/retry-policy.js";
import { checkConfig, type EmulatorConfig, type FaultRule, type GroupEnrollment, type HubConfig, type IndividualEnrollment, type TrustBundle, type TrustBundleMetadata } from "../simulator/config.js";
import { formatIssues, formatPath, loadSchema, nearest, SCHEMA_DIRECTORY, validate } from "../simulator/json-schema.js";
import { projectRoot } from "./support/xs.js";

const KEY = "ZGV2aWNlLTAwMS1wcmltYXJ5LWtleS0tLS0tLS0tLS0=";
/** A self-signed CA (P-256, valid to 2126): the x509 enrollments' certificate. */
const CA_PEM = `-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUP8og1LvZ4mqxg9HUHR/qjtFr830wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOc2NoZW1hLXRlc3QtY2EwIBcNMjYxMjAyMTUzNzQ4WhgPMjEy
NjExMDgxNTM3NDhaMBkxFzAVBgNVBAMMDnNjaGVtYS10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE5HEqG4veA+Pofv9q5yeXZcwcxTgEgwmMlmZ63zJs
wHoNwjxDCNpKGMUah1aInWQe3QDzojFoXC6vd6Q7WTAGT6NTMFEwHQYDVR0OBBYE
FNWwl3ozKSaU7giiE/sssCd1SnBXMB8GA1UdIwQYMBaAFNWwl3ozKSaU7giiE/ss
sCd1SnBXMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgYziEm4cG
pOxadjSkKRYtvJZz72hwKjmjl7JHongxasgCIQCsd+oxOC5FCQNgaYxC9s1q6zMx
E1hBb4smxQvObpU+ow==
-----END CERTIFICATE-----\n`;
const messages = (file: string, value: unknown, pointer = "") => validate(file, value, pointer).map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));

test("schemas: every shipped scenario and the example emulator config validate, and point at their schema with $schema", (t) => {
  const files: [string, string][] = [
    ...readdirSync(join(projectRoot, "hosts", "desktop", "scenarios")).map((f) => [join(projectRoot, "hosts", "desktop", "scenarios", f), "scenario.schema.json"] as [string, string]),
    [join(projectRoot, "simulator", "emulator.example.json"), "emulator-config.schema.json"],
  ];
  t.true(files.length >= 7);
  for (const [file, schema] of files) {
    const value = JSON.parse(readFileSync(file, "utf8")) as { $schema?: string };
    t.deepEqual(messages(schema, value), [], file);
    t.is(resolve(dirname(file), value.$schema ?? ""), join(SCHEMA_DIRECTORY, schema), `${file}: $schema points at schemas/${schema}`);
  }
  for (const schema of readdirSync(SCHEMA_DIRECTORY).filter((f) => f.endsWith(".schema.json"))) {
    const s = loadSchema(schema).root;
    t.is(s.$schema, "https://json-schema.org/draft/2020-12/schema", schema);
    t.is(typeof s.description, "string", `${schema} has a description`);
  }
});

test("schemas: additionalProperties is false on every object schema (but the free-form JSON: twin tags, desired properties, allocation payloads)", (t) => {
  const free = new Set(["tags", "desired", "allocationPayload"]);
  for (const schema of ["scenario.schema.json", "emulator-config.schema.json", "retry-policy.schema.json"]) {
    const walk = (s: unknown, at: string, name: string): void => {
      if (!s || typeof s !== "object") return;
      const o = s as Record<string, unknown>;
      if (o.type === "object" && !free.has(name) && !at.includes("/if")) t.is(o.additionalProperties, false, `${schema} ${at}`);
      for (const [k, v] of Object.entries(o)) {
        if (k === "properties" || k === "$defs" || k === "patternProperties") for (const [n, sub] of Object.entries(v as object)) walk(sub, `${at}/${k}/${n}`, n);
        else if (Array.isArray(v)) v.forEach((sub, i) => walk(sub, `${at}/${k}/${i}`, name));
        else if (typeof v === "object") walk(v, `${at}/${k}`, name);
      }
    };
    walk(loadSchema(schema).root, "", "");
  }
});

test("validator: types, ranges, enums, const, anyOf, if/then, $ref across files; the messages name the path and what was given", (t) => {
  const scenario = { name: "x", seed: 1, devices: { count: 1 } };
  t.deepEqual(messages("scenario.schema.json", scenario), []);
  t.deepEqual(messages("scenario.schema.json", []), ["must be an object, got an array"]);
  t.deepEqual(messages("scenario.schema.json", { seed: -1, devices: {} }), ["name: is required", "seed: must be an integer from 0 to 4294967295, got -1", "devices.count: is required"]);
  t.deepEqual(messages("scenario.schema.json", { ...scenario, name: "has space" }), ["name: must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, got \"has space\""]);
  t.deepEqual(messages("scenario.schema.json", { ...scenario, devices: { count: 1.5, flash: "disk", tls: "yes" } }), [
    "devices.count: must be an integer from 1 to 1000000, got 1.5",
    'devices.flash: must be "memory" or "file", got "disk"',
    'devices.tls: must be true or false, got "yes"',
  ]);
  t.deepEqual(messages("scenario.schema.json", { ...scenario, expect: { maxReRegistrations: "waves", maxPeakShare: 2 } }), [
    'expect.maxReRegistrations: must be an integer ≥ 0 or "wave", got "waves"',
    "expect.maxPeakShare: must be a number from 0 to 1, got 2",
  ]);
  t.deepEqual(messages("scenario.schema.json", { ...scenario, timeline: [{ do: "disable" }, { after: "connected", do: "end" }] }), [
    'timeline[0].fraction: is required when do is "disable"',
    'timeline[1].after: must be "settled", got "connected"',
  ]);
  // $ref into the emulator's schema: the scenario's fault rules are the emulator's.
  t.deepEqual(messages("scenario.schema.json", { ...scenario, emulator: { faults: [{ step: "register", connack: 3 }, { step: "register", status: 200 }] } }), [
    'emulator.faults[0].step: must be "connect" or "hub-connect" when connack is given (connack applies only to those steps), got "register"',
    "emulator.faults[1].status: must be one of 400, 401, 403, 404, 405, 409, 412, 415, 429, 500, 503, got 200",
  ]);
  t.deepEqual(messages("retry-policy.schema.json", { status: { "42": "retry", "5xx": "wait" } }), [
    'status["42"]: unknown key "42" (keys match /^(?:[1-5][0-9]{2}|[1-5]xx|default)$/)',
    'status["5xx"]: must be one of "retry", "recover", "reauthenticate", "fail", got "wait"',
  ]);
  t.deepEqual(messages("emulator-config.schema.json", { idScope: "0ne00000001", hubs: [] }), ["hubs: must be an array of at least 1 item, got an array"]);
  t.deepEqual(messages("emulator-config.schema.json", { hostName: "bad_name" }, "#/$defs/hub"), ['hostName: must be a host name, got "bad_name"']);
  t.deepEqual(messages("emulator-config.schema.json", { step: "poll", retryAfter: true }, "#/$defs/faultRule"), ["retryAfter: must be a number or a string, got true"]);
  t.deepEqual(messages("scenario.schema.json", { ...scenario, description: undefined }), [], "a key set to undefined (an object built in code) is no key");
});

test("validator: paths, the nearest key, and the lines of a report", (t) => {
  t.is(formatPath(["timeline", 0, "do"]), "timeline[0].do");
  t.is(formatPath(["retryPolicy", "status", "429"]), 'retryPolicy.status["429"]');
  t.is(formatPath(["fault", "subscribe-refused"]), 'fault["subscribe-refused"]');
  t.is(nearest("expct", ["expect", "timeline"]), "expect");
  t.is(nearest("retryAfterSecond", ["retryAfterSeconds", "hubs"]), "retryAfterSeconds");
  t.is(nearest("mesages", ["messages", "count"]), "messages");
  t.is(nearest("STAGGERMS", ["staggerMs"]), "staggerMs");
  t.is(nearest("jitetr", ["jitter", "initialMs"]), "jitter", "a swap is one edit");
  t.is(nearest("zzzzzz", ["count", "prefix"]), undefined);
  const issues = [{ path: "a", message: "x" }, { path: "", message: "y" }, { path: "[0].b", message: "z" }];
  t.is(formatIssues("f.json", issues), "f.json: a: x\nf.json: y\nf.json: [0].b: z");
  t.is(formatIssues("f.json", issues, 1), "f.json: a: x\nf.json: and 2 more");
  t.is(formatIssues("", issues, 10, "--fault #1"), "--fault #1.a: x\n--fault #1: y\n--fault #1[0].b: z");
});

test("validator: a schema that uses a keyword it does not support, or a $ref that does not resolve, is refused when loaded", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "schemas-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "a.schema.json"), JSON.stringify({ type: "object", properties: { n: { type: "integer", multipleOf: 2 } } }));
  t.throws(() => loadSchema("a.schema.json", dir), { message: 'schema a.schema.json: /properties/n/multipleOf: keyword "multipleOf" is not supported by simulator/json-schema.ts' });
  writeFileSync(join(dir, "b.schema.json"), JSON.stringify({ $ref: "#/$defs/missing" }));
  t.throws(() => loadSchema("b.schema.json", dir), { message: /\$ref #\/\$defs\/missing does not resolve/ });
  writeFileSync(join(dir, "c.schema.json"), JSON.stringify({ type: "obj" }));
  t.throws(() => loadSchema("c.schema.json", dir), { message: /unknown type "obj"/ });
});

// ---- the schemas agree with the code that reads the files ----------------------------------------

// Typed `Required<...>`: TypeScript fails the build when the code's types gain a key these objects
// lack, and the test fails when the schema does not take it.
const step: Required<TimelineStep> = { after: "settled", until: "reconnected", waitMs: 1, do: "hub-down", hub: "hub-1.azure-devices.localhost", fraction: 0.5, mark: "m" };
const expectations: Required<ScenarioExpectations> = {
  allConnected: true,
  allConnectedAtEnd: true,
  minRetriesPerDevice: 0,
  maxPeakShare: 0.5,
  retryAfterHonoured: true,
  hubRetryMinGapMs: 5000,
  minHubRetriesPerDevice: 0,
  maxReRegistrations: "wave",
  terminal: { count: 0, code: "X" } satisfies Required<ScenarioExpectations["terminal"] & object>,
  minHubRefusalsPerDevice: 0,
  registrationsBound: { from: "m", to: "n" },
  recoveryBound: "m",
};
const fault: Required<FaultRule> = { step: "connect", registrationId: "r", groupId: "g", probability: 0.5, times: 1, status: 503, errorCode: 503001, retryAfter: 2, connack: 3, drop: false, delayMs: 0, malformed: "truncated" };
const scenarioWithEverything: Required<Scenario> = {
  $schema: "../../../schemas/scenario.schema.json",
  name: "everything",
  description: "d",
  seed: 1,
  devices: { count: 1, staggerMs: 0, messages: 1, prefix: "p-", flash: "memory", tls: true } satisfies Required<Scenario["devices"]>,
  emulator: {
    hubs: 2,
    retryAfterSeconds: 1,
    assignAfterPolls: 1,
    limits: { registrationsPerMinute: 1, operationsPerMinute: 1, pollsPerDevicePer10s: 1, twinOperationsPerSecond: 1 } satisfies Required<NonNullable<EmulatorConfig["limits"]>>,
    faults: [{ ...fault, step: "register", connack: undefined, malformed: undefined }, { ...fault, malformed: undefined }],
    disabledFraction: 0,
  } satisfies Required<NonNullable<Scenario["emulator"]>>,
  host: { maxConnecting: 1 } satisfies Required<NonNullable<Scenario["host"]>>,
  retryPolicy: {},
  timeline: [{ ...step, fraction: undefined }, { do: "hub-disable", mark: "n", fraction: 1 }],
  timeoutMs: 1,
  expect: expectations,
};

test("agreement: a scenario with every key the code's types declare validates and passes checkScenario", (t) => {
  t.deepEqual(messages("scenario.schema.json", scenarioWithEverything), []);
  t.notThrows(() => checkScenario(scenarioWithEverything));
});

test("agreement: an emulator config with every key the code's types declare validates and passes checkConfig", (t) => {
  const hub: Required<HubConfig> = { hostName: "hub-1.azure-devices.localhost", allocationWeight: 1, maxMessageBytes: 1024, sharedAccessPolicies: [{ keyName: "iothubowner", primaryKey: KEY, secondaryKey: KEY }] };
  const twin = { tags: { a: 1 }, properties: { desired: { b: 2 } } };
  const metadata: Required<TrustBundleMetadata> = { subjectName: "CN=a", sha1Thumbprint: "A", sha256Thumbprint: "B", issuerName: "CN=a", notBeforeUtc: "2026-01-01T00:00:00Z", notAfterUtc: "2036-01-01T00:00:00Z", serialNumber: "01", version: 3 };
  const trustBundle: Required<TrustBundle> = { id: "tb-1", etag: "e", certificates: [{ certificate: CA_PEM, metadata }] };
  // Keys and x509 exclude each other: every key of the type is covered by two enrollments.
  const individual: Required<Omit<IndividualEnrollment, "x509">> = {
    registrationId: "d1",
    primaryKey: KEY,
    secondaryKey: KEY,
    enabled: true,
    iotHubHostName: hub.hostName,
    initialTwin: twin,
    allocationPayload: { c: 3 },
    deviceId: "d1",
    reprovisionPolicy: "reprovisionAndReset",
    trustBundle,
  };
  const individualX509: Required<Omit<IndividualEnrollment, "primaryKey" | "secondaryKey">> = {
    ...individual,
    registrationId: "d2",
    deviceId: "d2",
    x509: { certificate: CA_PEM, thumbprint: "AB".repeat(32) } satisfies Required<NonNullable<IndividualEnrollment["x509"]>>,
  };
  const { primaryKey: _p, secondaryKey: _s, ...individualX509Only } = individualX509 as IndividualEnrollment;
  const group: Required<Omit<GroupEnrollment, "x509">> = { groupId: "g", primaryKey: KEY, secondaryKey: KEY, enabled: true, iotHubHostName: hub.hostName, initialTwin: twin, allocationPayload: {}, disabledRegistrations: ["x"], reprovisionPolicy: "neverReprovision", trustBundle };
  const config: Required<EmulatorConfig> = {
    $schema: "../schemas/emulator-config.schema.json",
    idScope: "0ne00000001",
    hubs: [hub],
    allocationPolicy: "static",
    assignAfterPolls: 0,
    retryAfterSeconds: 0,
    enrollments: {
      individual: [individual, individualX509Only],
      groups: [group, { groupId: "g-x509", x509: { caCertificate: CA_PEM } satisfies Required<NonNullable<GroupEnrollment["x509"]>> }],
    },
    limits: { registrationsPerMinute: 1, operationsPerMinute: 1, pollsPerDevicePer10s: 1, twinOperationsPerSecond: 1 },
    faults: [{ ...fault, malformed: undefined }, { ...fault, step: "lookup", connack: undefined }, { ...fault, step: "twin-patch", connack: undefined, malformed: undefined }],
    reprovisionPolicy: "reprovisionAndMigrate",
    unknownRegistrationStatus: 401,
    telemetryLimit: 0,
    serviceApi: { hostName: "dps-1.azure-devices-provisioning.localhost", policies: [{ name: "provisioningserviceowner", primaryKey: KEY, secondaryKey: KEY }] },
    certificateIssuance: { enabled: true, lifetimeSeconds: 30 } satisfies Required<NonNullable<EmulatorConfig["certificateIssuance"]>>,
  };
  t.deepEqual(messages("emulator-config.schema.json", config), []);
  t.notThrows(() => checkConfig(config));
});

test("agreement: the retry policy's sections and settings are exactly the runtime's; an unknown section or setting is refused by both", (t) => {
  const schema = loadSchema("retry-policy.schema.json").root as { properties: Record<string, { properties?: Record<string, unknown> }> };
  t.deepEqual(Object.keys(schema.properties).sort(), Object.keys(defaultRetryPolicy).sort(), "the sections");
  const everything: Record<string, Record<string, unknown>> = {};
  for (const [section, settings] of Object.entries(defaultRetryPolicy)) {
    everything[section] = { ...(settings as object) };
    if (section !== "status" && section !== "connack") t.deepEqual(Object.keys(schema.properties[section].properties ?? {}).sort(), Object.keys(settings as object).sort(), `the settings of ${section}`);
  }
  t.deepEqual(messages("retry-policy.schema.json", everything), [], "every default, given as an override, validates");
  t.notThrows(() => retryPolicy(everything));
  for (const [bad, schemaMessage, runtimeMessage] of [
    [{ backof: {} }, 'backof: unknown key "backof" (did you mean "backoff"?)', /retry policy has no section "backof"/],
    [{ hub: { maxMS: 1 } }, 'hub.maxMS: unknown key "maxMS" (did you mean "maxMs"?)', /retry policy hub has no setting "maxMS"/],
    [{ budget: { maxAttempts: -1 } }, "budget.maxAttempts: must be an integer ≥ 0, got -1", /budget\.maxAttempts must be a number ≥ 0/],
    [{ hub: { initialMs: 1000 } }, "hub.initialMs: must be a number ≥ 5000, got 1000", /hub\.initialMs must be at least 5000/],
    [{ longTail: { initialMs: 10 } }, "longTail.initialMs: must be a number ≥ 1000, got 10", /longTail\.initialMs must be at least 1000/],
    [{ backoff: { jitter: 2 } }, "backoff.jitter: must be a number from 0 to 1, got 2", /jitter within 0\.\.1/],
    [{ status: { "429": "later" } }, 'status["429"]: must be one of "retry", "recover", "reauthenticate", "fail", got "later"', /status\["429"\] must be one of/],
  ] as const) {
    t.deepEqual(messages("retry-policy.schema.json", bad), [schemaMessage]);
    t.throws(() => retryPolicy(bad as never), { message: runtimeMessage });
  }
  // A row no cause can match (a status "42") is a typo for both, not a setting.
  t.throws(() => retryPolicy({ status: { "42": "retry" } }), { message: /status has no row "42"/ });
  t.is(messages("retry-policy.schema.json", { status: { "42": "retry" } }).length, 1);
});

test("agreement: the emulator's own checks and the schema refuse the same mistakes", (t) => {
  const base = { idScope: "0ne00000001", hubs: [{ hostName: "hub-1.azure-devices.localhost" }] };
  const bad: Record<string, unknown>[] = [
    { ...base, retryAfterSecond: 1 },
    { ...base, hubs: [{ hostName: "hub-1.azure-devices.localhost", maxMessageByte: 1 }] },
    { ...base, hubs: [{ hostName: "hub-1.azure-devices.localhost", maxMessageBytes: 300000 }] },
    { ...base, limits: { registrationPerMinute: 1 } },
    { ...base, limits: { registrationsPerMinute: 0 } },
    { ...base, enrollments: { individuals: [] } },
    { ...base, enrollments: { individual: [{ registrationId: "a b", primaryKey: KEY }] } },
    { ...base, enrollments: { individual: [{ registrationId: "a", primaryKey: "short" }] } },
    { ...base, enrollments: { individual: [{ registrationId: "a", primaryKey: KEY, enabeld: false }] } },
    { ...base, enrollments: { groups: [{ groupId: "g", primaryKey: KEY, initialTwin: { tag: {} } }] } },
    { ...base, faults: [{ step: "register", status: 200 }] },
    { ...base, faults: [{ step: "register", connack: 3 }] },
    { ...base, faults: [{ step: "connect", malformed: "truncated" }] },
    { ...base, faults: [{ step: "register", probabilty: 0.1 }] },
    { ...base, allocationPolicy: "random" },
    { ...base, unknownRegistrationStatus: 403 },
    { ...base, idScope: "0ne-1" },
  ];
  for (const config of bad) {
    const text = JSON.stringify(config);
    t.true(messages("emulator-config.schema.json", config).length > 0, `the schema refuses ${text}`);
    t.throws(() => checkConfig(config as never), undefined, `checkConfig refuses ${text}`);
  }
});
