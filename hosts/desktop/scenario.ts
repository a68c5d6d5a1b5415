/**
 * Fleet scenarios as files: a fleet, the emulator's settings, a timeline of things that happen to
 * the service (a hub goes away and comes back, a wave of devices is disabled), and what the
 * troubleshooting table expects to see. Reproducible from the seed: the same seed gives the same
 * boot times, the same jitter draws, the same wave of devices and the same emulator choices (the
 * order in which thousands of sockets are served still varies a little from run to run).
 *
 *   const scenario = loadScenario("hosts/desktop/scenarios/hub-outage.json");
 *   const report = await runScenario(scenario, { separateProcess: true });
 *   console.log(formatReport(report));        // summary, then one line per expectation
 *
 * The format is documented in docs/FLEET.md. Every field is checked when the file is loaded; an
 * error names the field.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { retryPolicy, type RetryPolicy } from "../../modules/retry-policy.js";
import type { RuntimeConfig } from "../../modules/runtime.js";
import type { EmulatorConfig, FaultRule } from "../../simulator/index.js";
import { recoveryBoundMs, registrationsBound } from "./bounds.js";
import { createTransport, loopbackResolver } from "./device.js";
import { launchEmulator, processUsage, type EmulatorHandle, type ProcessUsage } from "./fleet-emulator.js";
import { formatSummary, runFleet, type FleetControl, type FleetProgress, type FleetSummary } from "./fleet.js";
import { seededRandom } from "./platform.js";

export const SCENARIO_DPS_HOST = "global.azure-devices-provisioning.localhost";

/** Connections in their TLS handshake at once, by default (see ConnectGate in fleet.ts). */
export const DEFAULT_MAX_CONNECTING = 256;

export type TimelineAction = "hub-down" | "hub-up" | "disable" | "hub-disable" | "hub-enable" | "end";

const ACTIONS: readonly TimelineAction[] = ["hub-down", "hub-up", "disable", "hub-disable", "hub-enable", "end"];

export interface TimelineStep {
  /** "settled": first wait until every device has settled (connected and delivered, or failed). */
  readonly after?: "settled";
  /**
   * "reconnected": wait (at most waitMs) until every device is connected, but for those of the
   * `disable` wave(s), which must be failed or backing off.
   */
  readonly until?: "reconnected";
  /** Wait this long (after `after`), or at most this long for `until`. Default 0. */
  readonly waitMs?: number;
  readonly do: TimelineAction;
  /** hub-down / hub-up: one hub's host name (default: every hub). */
  readonly hub?: string;
  /**
   * disable: the share of the fleet to disable in DPS and on its hub (chosen from the seed).
   * hub-disable: the share to disable on its hub only, the enrollment left enabled, so that DPS
   * keeps assigning them to the hub that refuses them (default 1: every device). hub-enable
   * enables every device a hub-disable disabled.
   */
  readonly fraction?: number;
  /**
   * Names the moment this step is taken (just before its action): recovery times are measured
   * from it, and the summary counts DPS registrations from each mark to the next.
   */
  readonly mark?: string;
}

export interface ScenarioExpectations {
  /** Every device connects at least once (default: unless some are disabled). */
  readonly allConnected?: boolean;
  /** Every device that is not terminal is connected at the end. */
  readonly allConnectedAtEnd?: boolean;
  /** The scenario provoked at least this many DPS retries per device (so that the checks below mean something). */
  readonly minRetriesPerDevice?: number;
  /** No more than this share of DPS (and hub) retries fall due within one 100 ms window. */
  readonly maxPeakShare?: number;
  /** Every retry waited at least the retry-after of the answer that caused it, and its own delay. */
  readonly retryAfterHonoured?: boolean;
  /** Attempts of one device on its cached hub after a loss are at least this far apart. */
  readonly hubRetryMinGapMs?: number;
  /** The scenario provoked at least this many hub reconnects per device. */
  readonly minHubRetriesPerDevice?: number;
  /** Re-registrations with DPS by devices that had connected: at most this many ("wave": the wave's size). */
  readonly maxReRegistrations?: number | "wave";
  /** Devices ending in a terminal state: how many ("wave": the disabled wave) and with which code. */
  readonly terminal?: { readonly count: number | "wave"; readonly code?: string };
  /** The scenario provoked at least this many hub refusals (CONNACK 4/5) per device. */
  readonly minHubRefusalsPerDevice?: number;
  /**
   * Each device's DPS registrations between the two marks are at most registrationsBound(the
   * time between them, the devices' retry policy) (hosts/desktop/bounds.ts).
   */
  readonly registrationsBound?: { readonly from: string; readonly to: string };
  /**
   * Every device outside the disabled wave connected again after this mark, the last within
   * recoveryBoundMs(the devices' retry policy) of it.
   */
  readonly recoveryBound?: string;
}

export interface Scenario {
  readonly name: string;
  readonly description?: string;
  readonly seed: number;
  readonly devices: {
    readonly count: number;
    readonly staggerMs?: number;
    readonly messages?: number;
    readonly prefix?: string;
    /** "memory" (default) or "file": a NOR-flash file per device in a temporary directory. */
    readonly flash?: "memory" | "file";
    /** MQTT over TLS (default) or plain TCP. */
    readonly tls?: boolean;
  };
  readonly emulator?: {
    /** Number of hubs (default 2). */
    readonly hubs?: number;
    readonly retryAfterSeconds?: number;
    readonly assignAfterPolls?: number;
    readonly limits?: EmulatorConfig["limits"];
    readonly faults?: FaultRule[];
    /** Share of the group disabled in DPS from the start (chosen from the seed). */
    readonly disabledFraction?: number;
  };
  /** The desktop host that runs the fleet (not the devices' behaviour). */
  readonly host?: {
    /** Connections in their handshake at once; the others wait their turn (default 256, 0: no limit). */
    readonly maxConnecting?: number;
  };
  /** Overrides of the devices' retry table, DPS and hub (docs/RETRY-POLICY.md). */
  readonly retryPolicy?: RuntimeConfig["retryPolicy"];
  readonly timeline?: readonly TimelineStep[];
  /** Bound on the whole run (default 10 minutes). */
  readonly timeoutMs?: number;
  readonly expect?: ScenarioExpectations;
}

export interface ScenarioCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface ScenarioReport {
  readonly scenario: Scenario;
  readonly summary: FleetSummary;
  readonly checks: ScenarioCheck[];
  readonly emulatorCounters: { dps: Record<string, number>; hub: Record<string, number>; throttled: number; registrations: number };
  /** CPU and memory of the fleet's process, and of the emulator's (the same one when in-process). */
  readonly fleetUsage: ProcessUsage;
  readonly emulatorUsage: ProcessUsage;
  readonly separateProcess: boolean;
  /** Registration ids of the disabled wave(s). */
  readonly wave: readonly string[];
  /** Registration ids disabled on their hub only (hub-disable), and how many of them the emulator did not know. */
  readonly hubDisabled: readonly string[];
  readonly hubDisableMisses: number;
}

class ScenarioError extends Error {
  readonly code = "INVALID_SCENARIO";
}

function need(ok: boolean, message: string): void {
  if (!ok) throw new ScenarioError(message);
}

const isInt = (v: unknown, min = 0): v is number => typeof v === "number" && Number.isInteger(v) && v >= min;
const isFraction = (v: unknown): v is number => typeof v === "number" && v >= 0 && v <= 1;

/** Checks a parsed scenario; throws an Error with code INVALID_SCENARIO naming the first bad field. */
export function checkScenario(value: unknown, where = "scenario"): Scenario {
  const s = value as Scenario;
  need(!!s && typeof s === "object", `${where} must be a JSON object`);
  need(typeof s.name === "string" && s.name.length > 0, `${where}.name must be a non-empty string`);
  need(isInt(s.seed), `${where}.seed must be an integer ≥ 0`);
  need(!!s.devices && typeof s.devices === "object", `${where}.devices must be an object`);
  need(isInt(s.devices.count, 1), `${where}.devices.count must be an integer ≥ 1`);
  need(s.devices.staggerMs === undefined || isInt(s.devices.staggerMs), `${where}.devices.staggerMs must be an integer ≥ 0`);
  need(s.devices.messages === undefined || isInt(s.devices.messages), `${where}.devices.messages must be an integer ≥ 0`);
  need(s.devices.flash === undefined || s.devices.flash === "memory" || s.devices.flash === "file", `${where}.devices.flash must be "memory" or "file"`);
  const e = s.emulator ?? {};
  need(e.hubs === undefined || isInt(e.hubs, 1), `${where}.emulator.hubs must be an integer ≥ 1`);
  need(e.retryAfterSeconds === undefined || isInt(e.retryAfterSeconds), `${where}.emulator.retryAfterSeconds must be an integer ≥ 0`);
  need(e.disabledFraction === undefined || isFraction(e.disabledFraction), `${where}.emulator.disabledFraction must be within 0..1`);
  (s.timeline ?? []).forEach((step, i) => {
    const at = `${where}.timeline[${i}]`;
    need(ACTIONS.includes(step.do), `${at}.do must be one of ${ACTIONS.join(", ")}`);
    need(step.after === undefined || step.after === "settled", `${at}.after must be "settled"`);
    need(step.until === undefined || step.until === "reconnected", `${at}.until must be "reconnected"`);
    need(step.waitMs === undefined || isInt(step.waitMs), `${at}.waitMs must be an integer ≥ 0`);
    need(step.do !== "disable" || isFraction(step.fraction), `${at}.fraction must be within 0..1 for "disable"`);
    need(step.fraction === undefined || isFraction(step.fraction), `${at}.fraction must be within 0..1`);
    need(step.mark === undefined || (typeof step.mark === "string" && step.mark.length > 0), `${at}.mark must be a non-empty string`);
  });
  const marks = (s.timeline ?? []).map((step) => step.mark).filter((m) => m !== undefined);
  const x = s.expect ?? {};
  need(x.minHubRefusalsPerDevice === undefined || (typeof x.minHubRefusalsPerDevice === "number" && x.minHubRefusalsPerDevice >= 0), `${where}.expect.minHubRefusalsPerDevice must be a number ≥ 0`);
  if (x.registrationsBound !== undefined) {
    const b = x.registrationsBound;
    const from = marks.indexOf(b?.from);
    need(from >= 0 && marks[from + 1] === b.to, `${where}.expect.registrationsBound must name two consecutive marks of the timeline, { "from": "...", "to": "..." }`);
  }
  need(x.recoveryBound === undefined || marks.includes(x.recoveryBound), `${where}.expect.recoveryBound must name a mark of the timeline`);
  try {
    retryPolicy(s.retryPolicy ?? {});
  } catch (error) {
    throw new ScenarioError(`${where}.retryPolicy: ${(error as Error).message}`);
  }
  need(s.host?.maxConnecting === undefined || isInt(s.host.maxConnecting), `${where}.host.maxConnecting must be an integer ≥ 0`);
  need(s.timeoutMs === undefined || isInt(s.timeoutMs, 1), `${where}.timeoutMs must be an integer ≥ 1`);
  return s;
}

/** Reads and checks a scenario file. Throws for a missing file, bad JSON or a bad field. */
export function loadScenario(path: string): Scenario {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new ScenarioError(`${path}: ${(error as Error).message}`);
  }
  return checkScenario(parsed, path);
}

export interface RunScenarioOptions {
  /** Run the emulator in a child process (default true: honest figures on few cores). */
  readonly separateProcess?: boolean;
  /** Replace the fleet's size (tests run the same file small). */
  readonly count?: number;
  readonly seed?: number;
  /** Replace the scenario's host.maxConnecting (0: no limit). */
  readonly maxConnecting?: number;
  /** Replace the window over which the devices boot. */
  readonly staggerMs?: number;
  readonly onProgress?: (progress: FleetProgress) => void;
  readonly onStep?: (step: TimelineStep, atMs: number) => void;
  /** Where the emulator keeps its CA (default .cache/emulator under the cwd). */
  readonly stateDir?: string;
}

/** `count` registration ids of the group, chosen from the seed, in a stable order. */
function pickWave(ids: readonly string[], fraction: number, seed: number, exclude: ReadonlySet<string>): string[] {
  const random = seededRandom(seed);
  const candidates = ids.filter((id) => !exclude.has(id));
  const n = Math.round(fraction * ids.length);
  // A partial Fisher–Yates shuffle: the first n of a seeded permutation.
  for (let i = 0; i < Math.min(n, candidates.length); i++) {
    const j = i + Math.floor(random() * (candidates.length - i));
    [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
  }
  return candidates.slice(0, n);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function runScenario(scenario: Scenario, options: RunScenarioOptions = {}): Promise<ScenarioReport> {
  const seed = options.seed ?? scenario.seed;
  const count = options.count ?? scenario.devices.count;
  const prefix = scenario.devices.prefix ?? `${scenario.name}-`;
  const tls = scenario.devices.tls ?? true;
  const separateProcess = options.separateProcess ?? true;
  const hubs = Array.from({ length: scenario.emulator?.hubs ?? 2 }, (_, i) => ({ hostName: `hub-${i + 1}.azure-devices.localhost` }));
  const ids = Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(5, "0")}`);
  const groupKey = randomBytes(32).toString("base64");
  const groupId = `${scenario.name}-group`;
  const disabledAtStart = new Set(pickWave(ids, scenario.emulator?.disabledFraction ?? 0, seed ^ 0x5eed, new Set()));
  const wave: string[] = [...disabledAtStart];
  const hubDisabled: string[] = [];
  let hubDisableMisses = 0;
  const policy = retryPolicy(scenario.retryPolicy ?? {});
  const emulator: EmulatorHandle = await launchEmulator({
    separateProcess,
    seed,
    stateDir: options.stateDir,
    config: {
      idScope: "0ne00F1EE70",
      hubs,
      retryAfterSeconds: scenario.emulator?.retryAfterSeconds ?? 1,
      assignAfterPolls: scenario.emulator?.assignAfterPolls,
      limits: scenario.emulator?.limits,
      faults: scenario.emulator?.faults,
      enrollments: { groups: [{ groupId, primaryKey: groupKey, disabledRegistrations: [...disabledAtStart] }] },
    },
  });
  const flashDir = scenario.devices.flash === "file" ? join(process.cwd(), ".cache", "fleet", `${scenario.name}-${process.pid}`) : undefined;
  if (flashDir) mkdirSync(flashDir, { recursive: true });
  try {
    const transport = createTransport({
      tls,
      ca: emulator.caPem,
      resolve: loopbackResolver({
        dpsHost: SCENARIO_DPS_HOST,
        dpsPort: tls ? emulator.endpoints.dps.tlsPort : emulator.endpoints.dps.tcpPort,
        lookupPort: emulator.endpoints.https.port,
        hubPort: tls ? emulator.endpoints.hub.tlsPort : emulator.endpoints.hub.tcpPort,
      }),
    });
    const timeline = scenario.timeline ?? [];
    const started = Date.now();
    const hold =
      timeline.length === 0
        ? undefined
        : async (fleet: FleetControl) => {
            for (const step of timeline) {
              if (step.after === "settled") await fleet.settled;
              if (step.until === "reconnected") {
                const deadline = Date.now() + (step.waitMs ?? 60_000);
                // The wave's devices count once they are terminal or backing off: until then they are
                // on their way there. Every other device must be connected (one backing off after a
                // refusal that has ended has not recovered yet).
                const done = () => fleet.connectedNow() >= count - wave.length && fleet.progress().failed >= wave.length;
                while (Date.now() < deadline && !done()) await sleep(100);
              } else if (step.waitMs) {
                await sleep(step.waitMs);
              }
              options.onStep?.(step, Date.now() - started);
              if (step.mark) fleet.mark(step.mark);
              const targets = step.hub ? [step.hub] : hubs.map((h) => h.hostName);
              switch (step.do) {
                case "hub-down":
                case "hub-up":
                  for (const hub of targets) await emulator.call("setHubAvailable", hub, step.do === "hub-up");
                  break;
                case "disable": {
                  const chosen = pickWave(ids, step.fraction!, seed ^ (0x0d15ab1e + wave.length), new Set(wave));
                  wave.push(...chosen);
                  await emulator.call("addGroupEnrollment", { groupId, primaryKey: groupKey, disabledRegistrations: [...wave] });
                  await emulator.callMany("setDeviceEnabled", chosen.map((id) => [id, false] as [string, boolean]));
                  break;
                }
                case "hub-disable": {
                  // On the hub only: the enrollment stays enabled, DPS keeps assigning the device to
                  // the same hub (the allocation is a hash of the id), and the hub answers CONNACK 5.
                  const already = new Set(hubDisabled);
                  const chosen = pickWave(ids, step.fraction ?? 1, seed ^ (0x4b0b + hubDisabled.length), new Set([...wave, ...already]));
                  hubDisabled.push(...chosen);
                  hubDisableMisses += await emulator.callMany("setDeviceEnabled", chosen.map((id) => [id, false] as [string, boolean]));
                  break;
                }
                case "hub-enable":
                  await emulator.callMany("setDeviceEnabled", hubDisabled.map((id) => [id, true] as [string, boolean]));
                  break;
                case "end":
                  return;
              }
            }
          };
    const summary = await runFleet({
      count,
      transport,
      random: seededRandom(seed),
      staggerMs: options.staggerMs ?? scenario.devices.staggerMs ?? 0,
      messages: scenario.devices.messages ?? 1,
      timeoutMs: scenario.timeoutMs ?? 600_000,
      configFor: (i) => ({
        idScope: emulator.idScope,
        registrationId: ids[i],
        groupKey,
        globalEndpoint: SCENARIO_DPS_HOST,
        retryPolicy: scenario.retryPolicy,
      }),
      flashFor: flashDir ? (i) => join(flashDir, `${ids[i]}.flash`) : undefined,
      onProgress: options.onProgress,
      maxConnecting: options.maxConnecting ?? scenario.host?.maxConnecting ?? DEFAULT_MAX_CONNECTING,
      hold,
    });
    const counters = await emulator.call("counters");
    const emulatorUsage = await emulator.usage();
    const report = {
      scenario,
      summary,
      checks: [] as ScenarioCheck[],
      emulatorCounters: { dps: counters.dps, hub: counters.hub, throttled: counters.throttled, registrations: counters.registrations },
      fleetUsage: processUsage(),
      emulatorUsage,
      separateProcess,
      wave,
      hubDisabled,
      hubDisableMisses,
    };
    if (hubDisableMisses > 0) report.checks.push({ name: "hub-disable reached every device", ok: false, detail: `${hubDisableMisses} of ${hubDisabled.length} devices were not on any hub yet` });
    report.checks.push(...evaluate(scenario.expect ?? {}, report.summary, wave.length, count, policy));
    return report;
  } finally {
    await emulator.stop();
    if (flashDir) rmSync(flashDir, { recursive: true, force: true });
  }
}

/**
 * Node's setTimeout and Date.now() round differently: a timer may be seen to fire up to about a
 * millisecond before its delay by Date.now(). Margins are judged with that tolerance.
 */
export const TIMER_RESOLUTION_MS = 2;

/** The expectations against a summary: one check per expectation, each saying what it saw. */
export function evaluate(expect: ScenarioExpectations, s: FleetSummary, waveSize: number, count: number, policy: RetryPolicy = retryPolicy()): ScenarioCheck[] {
  const checks: ScenarioCheck[] = [];
  const add = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  const allConnected = expect.allConnected ?? waveSize === 0;
  if (allConnected) add("every device connected", s.connected === count, `${s.connected}/${count} connected`);
  else add("every device outside the wave connected", s.connected >= count - waveSize, `${s.connected}/${count} connected, ${waveSize} in the wave`);
  if (expect.allConnectedAtEnd) {
    add("every device not failed or backing off is connected at the end", s.connectedAtEnd === count - s.failed.length, `${s.connectedAtEnd} connected at the end, ${s.failed.length} failed or backing off`);
  }
  add("no device timed out", s.timedOut.length === 0, `${s.timedOut.length} timed out`);
  if (expect.minRetriesPerDevice !== undefined) {
    const want = Math.ceil(expect.minRetriesPerDevice * count);
    add("the scenario provoked DPS retries", s.retries.count >= want, `${s.retries.count} retries (want ≥ ${want})`);
  }
  if (expect.maxPeakShare !== undefined) {
    const dpsShare = s.retries.count ? s.retries.peakPer100ms / s.retries.count : 0;
    const hubShare = s.hub.retries ? s.hub.peakPer100ms / s.hub.retries : 0;
    add(
      "no lockstep retries",
      dpsShare <= expect.maxPeakShare && hubShare <= expect.maxPeakShare,
      `at most ${s.retries.peakPer100ms} of ${s.retries.count} DPS retries and ${s.hub.peakPer100ms} of ${s.hub.retries} hub reconnects due in one 100 ms window (want ≤ ${(100 * expect.maxPeakShare).toFixed(0)}%)`,
    );
  }
  if (expect.retryAfterHonoured) {
    const r = s.retries;
    add(
      "retry-after and backoff honoured",
      (r.retryAfterMarginMs ?? 0) >= -TIMER_RESOLUTION_MS &&
        (r.scheduleMarginMs ?? 0) >= -TIMER_RESOLUTION_MS &&
        (r.count === 0 || r.withRetryAfter > 0 || r.causes["429"] === undefined),
      `${r.withRetryAfter} retries after a retry-after, the earliest ${r.retryAfterMarginMs ?? "n/a"} ms after it; every retry ≥ ${r.scheduleMarginMs ?? "n/a"} ms after its own delay (Node's timers and Date.now() agree to ±${TIMER_RESOLUTION_MS} ms)`,
    );
  }
  if (expect.hubRetryMinGapMs !== undefined) {
    add(
      "the cached hub retried far enough apart",
      s.hub.minGapMs === undefined || s.hub.minGapMs >= expect.hubRetryMinGapMs,
      `attempts of one device ≥ ${s.hub.minGapMs ?? "n/a"} ms apart (want ≥ ${expect.hubRetryMinGapMs})`,
    );
  }
  if (expect.minHubRetriesPerDevice !== undefined) {
    const want = Math.ceil(expect.minHubRetriesPerDevice * count);
    add("the scenario provoked hub reconnects", s.hub.retries >= want, `${s.hub.retries} reconnects (want ≥ ${want})`);
  }
  if (expect.maxReRegistrations !== undefined) {
    const max = expect.maxReRegistrations === "wave" ? waveSize : expect.maxReRegistrations;
    add("re-registration only where the table says", s.hub.reRegistrations <= max, `${s.hub.reRegistrations} re-registrations after connecting (want ≤ ${max}), ${s.hub.reprovisionOutcomes} hub refusals calling for one`);
  }
  if (expect.minHubRefusalsPerDevice !== undefined) {
    const want = Math.ceil(expect.minHubRefusalsPerDevice * count);
    add("the scenario provoked hub refusals", s.hub.reprovisionOutcomes >= want, `${s.hub.reprovisionOutcomes} hub refusals (want ≥ ${want})`);
  }
  if (expect.registrationsBound) {
    const { from, to } = expect.registrationsBound;
    const w = s.windows.find((x) => x.from === from && x.to === to);
    if (!w) add("DPS registrations within the bound", false, `the run has no window from ${from} to ${to} (did it time out?)`);
    else {
      const bound = registrationsBound(w.ms, policy);
      const fast = 2 * (1 + policy.budget.maxAttempts);
      add(
        "DPS registrations within the bound",
        w.registrations.perDevice.max <= bound,
        `at most ${w.registrations.perDevice.max} per device in the ${(w.ms / 60_000).toFixed(1)} min from ${from} to ${to} (bound ${bound} = 2×(1 + ${policy.budget.maxAttempts}) + ${bound - fast} long-tail wakes)`,
      );
    }
  }
  if (expect.recoveryBound !== undefined) {
    const rec = s.recoveries[expect.recoveryBound];
    const bound = recoveryBoundMs(policy);
    const want = count - waveSize;
    const last = rec?.afterMs?.max;
    add(
      "every device back within the recovery bound",
      rec !== undefined && rec.devices >= want && last !== undefined && last <= bound,
      `${rec?.devices ?? 0}/${want} connected again after ${expect.recoveryBound}, the last after ${last ?? "n/a"} ms (bound ${bound} ms)`,
    );
  }
  if (expect.terminal) {
    const want = expect.terminal.count === "wave" ? waveSize : expect.terminal.count;
    const codes = new Set(s.failed.map((f) => f.code));
    const codeOk = expect.terminal.code === undefined || s.failed.every((f) => f.code === expect.terminal!.code);
    add(
      "terminal devices: the expected ones, with a clear reason",
      s.failed.length === want && codeOk && s.failed.every((f) => f.message.length > 20),
      `${s.failed.length} terminal (want ${want}), codes ${[...codes].join(", ") || "none"}`,
    );
  }
  return checks;
}

const mb = (bytes: number) => `${(bytes / 1048576).toFixed(0)} MB`;

export function formatReport(r: ScenarioReport): string {
  const lines = [`scenario ${r.scenario.name}: ${r.summary.total} devices, seed ${r.scenario.seed}, emulator ${r.separateProcess ? "in a child process" : "in this process"}`];
  lines.push(formatSummary(r.summary));
  const c = r.emulatorCounters;
  lines.push(`emulator saw: DPS ${Object.entries(c.dps).sort().map(([k, v]) => `${k}×${v}`).join(", ")}; hub ${Object.entries(c.hub).sort().map(([k, v]) => `${k}×${v}`).join(", ")}; throttled ${c.throttled}`);
  lines.push(
    `cost: fleet process ${(r.fleetUsage.cpuMs / 1000).toFixed(1)} s CPU, peak RSS ${mb(r.fleetUsage.maxRssBytes)}` +
      (r.separateProcess ? `; emulator process ${(r.emulatorUsage.cpuMs / 1000).toFixed(1)} s CPU, peak RSS ${mb(r.emulatorUsage.maxRssBytes)}` : ""),
  );
  for (const check of r.checks) lines.push(`${check.ok ? "PASS" : "FAIL"} ${check.name}: ${check.detail}`);
  return lines.join("\n");
}
