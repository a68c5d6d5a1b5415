/**
 * The emulator's config file against schemas/emulator-config.schema.json: a file is checked by the
 * schema first (every mistake named with the file, the path and, for an unknown key, the nearest
 * valid one), then by checkConfig; an object from code goes through checkConfig, whose own checks
 * come first, then the same schema (which finds a key misspelt inside an enrollment).
 */
import test from "ava";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkConfig, loadConfigFile } from "../../simulator/config.js";
import { EmulatorError } from "../../simulator/errors.js";
import { projectRoot } from "../support/xs.js";

const KEY = "ZGV2aWNlLTAwMS1wcmltYXJ5LWtleS0tLS0tLS0tLS0=";
const base = { idScope: "0ne00000001", hubs: [{ hostName: "hub-1.azure-devices.localhost" }] };

function file(t: { teardown(f: () => void): void }, value: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), "config-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "emulator.json");
  writeFileSync(path, JSON.stringify(value));
  return path;
}

test("config file: the example loads, its $schema key accepted", (t) => {
  const config = loadConfigFile(join(projectRoot, "simulator", "emulator.example.json"));
  t.is(config.idScope, "0ne00000001");
  t.is(config.$schema, "../schemas/emulator-config.schema.json");
});

test("config file: each mistake is named with the file, the path and the nearest valid key, in every section", (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ ...base, retryAfterSecond: 1 }, 'retryAfterSecond: unknown key "retryAfterSecond" (did you mean "retryAfterSeconds"?)'],
    [{ ...base, hubs: [{ hostName: "hub-1.azure-devices.localhost", alocationWeight: 1 }] }, 'hubs[0].alocationWeight: unknown key "alocationWeight" (did you mean "allocationWeight"?)'],
    [{ ...base, limits: { operationPerMinute: 1 } }, 'limits.operationPerMinute: unknown key "operationPerMinute" (did you mean "operationsPerMinute"?)'],
    [{ ...base, enrollments: { group: [] } }, 'enrollments.group: unknown key "group" (did you mean "groups"?)'],
    [{ ...base, enrollments: { individual: [{ registrationId: "a", primaryKey: KEY, enabeld: false }] } }, 'enrollments.individual[0].enabeld: unknown key "enabeld" (did you mean "enabled"?)'],
    [{ ...base, enrollments: { groups: [{ groupId: "g", primaryKey: KEY, disabledRegistration: [] }] } }, 'enrollments.groups[0].disabledRegistration: unknown key "disabledRegistration" (did you mean "disabledRegistrations"?)'],
    [{ ...base, enrollments: { groups: [{ groupId: "g", primaryKey: KEY, initialTwin: { properties: { desird: {} } } }] } }, 'enrollments.groups[0].initialTwin.properties.desird: unknown key "desird" (did you mean "desired"?)'],
    [{ ...base, faults: [{ step: "register", retryAftr: 2 }] }, 'faults[0].retryAftr: unknown key "retryAftr" (did you mean "retryAfter"?)'],
    [{ ...base, limits: { registrationsPerMinute: "many" } }, 'limits.registrationsPerMinute: must be an integer ≥ 1, got "many"'],
  ];
  for (const [value, message] of cases) {
    const path = file(t, value);
    t.throws(() => loadConfigFile(path), { instanceOf: EmulatorError, message: `${path}: ${message}` }, message);
  }
});

test("config file: several mistakes are listed, one a line", (t) => {
  const path = file(t, { ...base, retryAfterSecond: 1, telemetryLimit: -1 });
  const error = t.throws(() => loadConfigFile(path), { instanceOf: EmulatorError });
  t.is(error!.message, `${path}: retryAfterSecond: unknown key "retryAfterSecond" (did you mean "retryAfterSeconds"?)\n${path}: telemetryLimit: must be an integer ≥ 0, got -1`);
  t.is((error as EmulatorError).code, "INVALID_CONFIG");
});

test("checkConfig: an object from code keeps the checks' own messages, and the schema finds the rest", (t) => {
  t.throws(() => checkConfig({ ...base, retryAfterSecond: 1 } as never), { message: /^retryAfterSecond: is not a known field/ });
  t.throws(() => checkConfig({ ...base, enrollments: { individual: [{ registrationId: "a", primaryKey: KEY, enabeld: false }] } } as never), {
    instanceOf: EmulatorError,
    message: 'enrollments.individual[0].enabeld: unknown key "enabeld" (did you mean "enabled"?)',
  });
  t.notThrows(() => checkConfig({ ...base, $schema: "x", assignAfterPolls: undefined, limits: undefined }), "keys set to undefined are no keys");
});
