/**
 * Lifecycle transcripts: the whole device (cache, DPS, hub) in the lifecycle world on a virtual
 * clock, one per story the troubleshooting table and the issue tell. Each pins its command log
 * (test/transcripts/lifecycle.golden.json) and checks what matters in it; the same list runs on
 * Node (test/lifecycle.test.ts) and on XS (test/xs/lifecycle.xs.ts), with identical logs.
 */
import { runWorld, WORLD_HUB, type WorldOptions, type WorldResult } from "../support/lifecycle-world.js";
import { portableCrypto } from "../../modules/sha256.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const warm = { assignedHub: WORLD_HUB, deviceId: "dev-001", idScope: "0ne00000001" };

export interface LifecycleTranscript {
  readonly name: string;
  readonly world: Omit<WorldOptions, "crypto" | "log">;
  /** Checks on the result; each returns a problem or undefined. */
  readonly check: (r: WorldResult, log: string) => (string | false | undefined)[];
}

const has = (log: string, text: string) => (log.indexOf(text) >= 0 ? undefined : `the log has no "${text}"`);
const hasNot = (log: string, text: string) => (log.indexOf(text) < 0 ? undefined : `the log must not have "${text}"`);
const inOrder = (log: string, ...texts: string[]) => {
  let from = 0;
  for (const t of texts) {
    const i = log.indexOf(t, from);
    if (i < 0) return `"${t}" is missing after offset ${from}`;
    from = i + t.length;
  }
  return undefined;
};
const is = (what: string, actual: unknown, expected: unknown) => (actual === expected ? undefined : `${what}: expected ${String(expected)}, got ${String(actual)}`);

export const lifecycleTranscripts: LifecycleTranscript[] = [
  {
    name: "cold boot: DPS assigns, the cache is written, the hub connects, telemetry is acknowledged",
    world: { durationMs: 2 * MIN, sendAtBoot: ["hello"] },
    check: (r, log) => [
      inOrder(log, "cache-load", "cache empty", "dps registering", "assigned hub-1.azure-devices.net dev-001 from dps", "cache-save", "cache saved", "connect#2 hub-1", "runtime connected", "telemetry 1 sent"),
      is("registrations", r.registrations, 1),
    ],
  },
  {
    name: "warm boot: the cached hub at once, no DPS traffic at all",
    world: { durationMs: 2 * MIN, cached: warm, sendAtBoot: ["hello"] },
    check: (r, log) => [inOrder(log, "cache loaded", "assigned hub-1.azure-devices.net dev-001 from cache", "connect#1 hub-1", "runtime connected", "telemetry 1 sent"), is("registrations", r.registrations, 0), hasNot(log, "cache-save")],
  },
  {
    name: "the hub refuses the cached identity once (CONNACK 5): invalidate, register at once, a new record, connected",
    world: { durationMs: 5 * MIN, cached: warm, faults: [{ step: "hub-connect", cause: { connack: 5 }, times: 1 }] },
    // DPS assigns the same hub: the record is written once that hub has accepted the device.
    check: (r, log) => [inOrder(log, "cache loaded", "> connack#1 5", "hub refused", "cache-invalidate", "cache invalidated", "dps registering", "runtime connected", "cache-save", "cache saved"), is("registrations", r.registrations, 1)],
  },
  {
    name: "the hub refuses for ever while DPS assigns it there: registrations back off to an hour, one invalidation, no cache churn",
    world: { durationMs: 24 * HOUR, cached: warm, faults: [{ step: "hub-connect", cause: { connack: 5 } }] },
    check: (r, log) => [
      inOrder(log, "cache-invalidate", "dps registering", "runtime backing-off HUB_REFUSED", "trying again in 13 min", "trying again in 25 min", "trying again in 50 min", "trying again in 75 min"),
      is("cache invalidations", r.cacheInvalidations, 1),
      is("cache writes", r.cacheWrites, 0),
      r.registrations <= 25 ? undefined : `${r.registrations} registrations in a day`,
      hasNot(log, "runtime failed"),
    ],
  },
  {
    name: "the hub unreachable past its window: DPS asked once keeping the cache; DPS down too: the cached hub again, in the long tail",
    world: {
      durationMs: 3 * HOUR,
      cached: warm,
      faults: [
        { step: "hub-connect", cause: { timeout: true }, untilMs: 2 * HOUR },
        { step: "dps-connect", cause: { drop: true }, untilMs: 2 * HOUR },
      ],
    },
    check: (r, log) => [
      inOrder(log, "hub retrying attempt=1", "hub unreachable", "dps connecting", "dps fallback", "runtime backing-off HUB_UNREACHABLE", "connect#", "runtime connected"),
      is("cache invalidations", r.cacheInvalidations, 0),
      is("cache writes", r.cacheWrites, 0),
      hasNot(log, "runtime failed"),
    ],
  },
  {
    name: "the hub unreachable past its window, DPS fine and assigning it again: no cache write, the long tail until the hub is back",
    world: { durationMs: 2 * HOUR, cached: warm, faults: [{ step: "hub-connect", cause: { connack: 3 }, untilMs: 40 * MIN }] },
    check: (r, log) => [inOrder(log, "hub unreachable", "dps assigned", "runtime backing-off HUB_UNREACHABLE", "runtime connected"), is("cache writes", r.cacheWrites, 0), is("cache invalidations", r.cacheInvalidations, 0)],
  },
  {
    name: "a message the hub closes the link on is dropped after three losses, reported, and the queue moves on",
    world: { durationMs: 5 * MIN, cached: warm, sendAtBoot: ["poison", "fine"] },
    check: (r, log) => [inOrder(log, "telemetry 1 dropped: the hub ended the connection 3 times in a row", "telemetry 2 sent"), is("registrations", r.registrations, 0), hasNot(log, "hub unreachable")],
  },
  {
    name: "DPS throttles (429) for two hours: fast retries with retry-after, then the long tail, then assigned",
    world: { durationMs: 4 * HOUR, faults: [{ step: "register", cause: { status: 429, retryAfter: "30" }, untilMs: 2 * HOUR }] },
    check: (r, log) => [inOrder(log, "dps retrying attempt=1 action=retry", "runtime backing-off RETRY_BUDGET_EXHAUSTED", "runtime connected"), hasNot(log, "runtime failed")],
  },
  {
    name: "401 for five hours: refused with fresh tokens, then re-checked slowly; the fixed enrollment brings the device back without a power cycle",
    world: { durationMs: 8 * HOUR, faults: [{ step: "register", cause: { status: 401 }, untilMs: 5 * HOUR }] },
    check: (r, log) => [inOrder(log, "dps retrying attempt=1 action=reauthenticate", "runtime backing-off AUTHENTICATION_FAILED", "check the symmetric key", "runtime connected"), hasNot(log, ".."), hasNot(log, ".;"), r.registrations <= 12 ? undefined : `${r.registrations} registrations`],
  },
  {
    name: "400: final, with the DPS error code, the tracking id and what to check",
    world: { durationMs: 1 * HOUR, faults: [{ step: "register", cause: { status: 400 } }] },
    // DPS's messages end in a period: no doubled one when the device's advice follows.
    check: (r, log) => [inOrder(log, "runtime failed DPS_ERROR: DPS answered 400 (400001): Injected 400. Retrying the same request cannot help", "tracking id trk-400"), hasNot(log, ".."), is("registrations", r.registrations, 1), is("final", r.finalState, "stopped")],
  },
  {
    name: "DPS assigns a hub the session cannot use (host:port): a typed error before anything is written, re-checked later",
    world: { durationMs: 30 * MIN, assign: { assignedHub: "hub-1.azure-devices.net:8883" } },
    check: (r, log) => [has(log, "runtime backing-off ASSIGNMENT_UNUSABLE"), hasNot(log, "cache-save"), hasNot(log, "connect#2 hub-1")],
  },
  {
    name: "DPS assigns a device id with + (valid in IoT Hub, forbidden in an MQTT topic): unusable, said so, nothing written",
    world: { durationMs: 5 * MIN, assign: { assignedHub: WORLD_HUB, deviceId: "dev+1" } },
    check: (r, log) => [has(log, "runtime backing-off ASSIGNMENT_UNUSABLE"), has(log, "cannot be used over MQTT"), hasNot(log, "cache-save"), hasNot(log, "connect#2")],
  },
  {
    name: "a cached record naming a hub the session cannot use is invalidated and reported, and DPS is asked",
    world: { durationMs: 2 * MIN, cached: { assignedHub: "hub-1.azure-devices.net:8883", deviceId: "dev-001" } },
    check: (r, log) => [inOrder(log, "cache empty the cached assignment is not usable", "cache-invalidate", "dps registering", "cache-save hub-1.azure-devices.net", "runtime connected")],
  },
  {
    name: "a cached record of another ID scope is not used; DPS is asked and the new record replaces it",
    world: { durationMs: 2 * MIN, cached: { ...warm, idScope: "0neOTHER001" } },
    check: (r, log) => [inOrder(log, "cache empty the cached assignment is not usable: it is for another ID scope", "dps registering", "cache-save"), hasNot(log, "cache-invalidate")],
  },
  {
    name: "a device id with a colon (sensor:01) goes into the user name and the telemetry topic as it is",
    world: { durationMs: 2 * MIN, config: { registrationId: "sensor:01" }, sendAtBoot: ["hi"] },
    check: (r, log) => [has(log, "user=hub-1.azure-devices.net/sensor:01/?api-version="), has(log, "publish#2 devices/sensor:01/messages/events/"), hasNot(log, "sensor%3A01")],
  },
  {
    name: "a pipelined attempt that got no answer is retried without pipelining",
    world: { durationMs: 2 * MIN, faults: [{ step: "register", cause: { drop: true }, times: 1 }] },
    check: (r, log) => [inOrder(log, "subscribe#1", "publish#1 $dps/registrations/PUT", "> closed#1 closed", "connect#2", "> connack#2 0", "subscribe#2", "runtime connected")],
  },
  {
    name: "after a hub refusal, a status lookup naming the refusing hub is not trusted: the device registers",
    world: { durationMs: 5 * MIN, cached: warm, lookupAssigned: true, faults: [{ step: "hub-connect", cause: { connack: 5 }, times: 1 }, { step: "register", cause: { status: 503 }, times: 1 }] },
    check: (r, log) => [inOrder(log, "hub refused", "dps registering", "status=503", "lookup /", "> lookup 200", "dps registering", "runtime connected"), is("registrations", r.registrations, 2)],
  },
  {
    name: "the cache write fails: the device goes on to its hub; a reboot provisions again",
    world: { durationMs: 10 * MIN, faults: [{ step: "cache-write", cause: { fail: true }, times: 1 }], actions: [{ atMs: 5 * MIN, do: "restart" }] },
    check: (r, log) => [inOrder(log, "cache-save", "cache unavailable STORAGE", "runtime connected", "restart", "cache empty", "dps registering", "cache saved"), is("registrations", r.registrations, 2)],
  },
  {
    name: "a DPS answer larger than maxAnswerBytes: final, naming the setting",
    world: { durationMs: 10 * MIN, faults: [{ step: "register", cause: { oversize: 40_000 } }] },
    check: (r, log) => [has(log, "runtime failed OVERSIZE: DPS sent an answer larger than maxAnswerBytes (16384 bytes)"), has(log, "raise maxAnswerBytes"), is("registrations", r.registrations, 1)],
  },
  {
    name: "reprovision() while connected with DPS down: the cached hub stays in use",
    world: { durationMs: 10 * MIN, cached: warm, faults: [{ step: "dps-connect", cause: { drop: true } }], actions: [{ atMs: 2 * MIN, do: "reprovision" }] },
    check: (r, log) => [inOrder(log, "runtime connected", "reprovision", "dps connecting", "dps fallback", "connect#", "runtime connected"), is("cache invalidations", r.cacheInvalidations, 0)],
  },
];

export function runLifecycleTranscript(t: LifecycleTranscript): { log: string[]; problems: string[] } {
  const r = runWorld({ ...t.world, crypto: portableCrypto, log: true });
  const text = r.log.join("\n");
  const problems = [...r.problems];
  for (const p of t.check(r, text)) if (p) problems.push(p);
  if (text.indexOf("cGFzc3dvcmQ=") >= 0 || /sig=|SharedAccessSignature/.test(text)) problems.push("the log carries the key or a token");
  return { log: r.log, problems };
}
