/**
 * Fleet scenarios as files: a fleet, the emulator's settings, a timeline of things that happen to
 * the service (a hub goes away and comes back, a wave of devices is disabled), and what the
 * troubleshooting table expects to see. Reproducible from the seed: the same seed gives the same
 * boot times, the same jitter draws, the same wave of devices and the same emulator choices (the
 * order in which thousands of sockets are served still varies a little from run to run).
 *
 *   const scenario = loadScenario("hosts/desktop/scenarios/hub-outage.json");
 *   const report = await runScenario(scenario, { separateProcess: true });
 *   console.log(formatReport(report));        // the run, the summary, then one line per expectation
 *
 * A file is checked against schemas/scenario.schema.json (simulator/json-schema.ts), then for what
 * a schema cannot say (marks named by the checks, hub names, the retry policy's own rules); an
 * error names the file, the field, and for an unknown key the nearest valid one.
 *
 * Shards: one fleet run by several processes or machines against one service (a shared emulator
 * or a real DPS). Device ids are `PREFIX` + index, the same in every shard; shard K of N runs the
 * indices i ≡ K−1 (mod N), each at its boot time in the whole fleet's schedule (drawn from the
 * seed for every index, whatever N), so the shards together are the fleet of one run. Each writes
 * a report (reportFile) that mergeReports folds into one, with the checks evaluated again on the
 * merged data. docs/FLEET.md, "Fleets larger than one process".
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { retryPolicy, type RetryPolicy } from "../../modules/retry-policy.js";
import type { RuntimeConfig, RuntimeEvent } from "../../modules/runtime.js";
import type { EmulatorConfig, FaultRule } from "../../simulator/index.js";
import { formatIssues, validate } from "../../simulator/json-schema.js";
import { recoveryBoundMs, registrationsBound } from "./bounds.js";
import { createTransport, loopbackResolver, serviceResolver, type DesktopTransport } from "./device.js";
import { launchEmulator, processUsage, type ProcessUsage } from "./fleet-emulator.js";
import { formatSummary, mergeFleetRaw, runFleetRaw, summarizeFleet, type FleetControl, type FleetProgress, type FleetRaw, type FleetSummary } from "./fleet.js";
import { seededRandom } from "./platform.js";

export const SCENARIO_DPS_HOST = "global.azure-devices-provisioning.localhost";

/** The id scope of the emulator a scenario starts (and of `dps-fleet emulator-config`). */
export const SCENARIO_ID_SCOPE = "0ne00F1EE70";

/** Connections in their TLS handshake at once, by default (see ConnectGate in fleet.ts). */
export const DEFAULT_MAX_CONNECTING = 256;

/** The schema of a scenario file, in schemas/. */
export const SCENARIO_SCHEMA = "scenario.schema.json";

/** The "format" of a JSON report (dps-fleet --json), which `dps-fleet merge` reads. */
export const REPORT_FORMAT = "dps-fleet-report/1";

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
  /** The schema the file follows, for editors (ignored). */
  readonly $schema?: string;
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

/** One shard of a fleet: `index` of `count` (1-based), as `--shard K/N` says. */
export interface Shard {
  readonly index: number;
  readonly count: number;
}

/**
 * The service the devices of a run provision with, when it is not an emulator the run starts:
 * - `emulator`: one started on its own (`dps-emulator --config FILE`, written by `dps-fleet
 *   emulator-config`), shared by every shard; its admin API says where it listens and takes the
 *   timeline's actions (hubs down and up, devices disabled) and gives the counters.
 * - `service`: a real DPS (or anything that speaks it) with a group enrollment whose key the
 *   devices derive theirs from; no admin API, so a timeline can only wait and end.
 */
export type ServiceTarget =
  | { readonly kind: "emulator"; readonly adminUrl: string; readonly caFile?: string }
  | {
      readonly kind: "service";
      readonly idScope: string;
      readonly endpoint: string;
      readonly dpsPort?: number;
      readonly hubPort?: number;
      readonly lookupPort?: number;
      readonly caFile?: string;
      readonly groupKey: string;
      /** The group enrollment's name, for the report (default: the scenario's NAME-group). */
      readonly groupId?: string;
    };

/** What a run was, so that it can be run again and its shards merged: every value it used, and where each came from. */
export interface RunInfo {
  readonly scenarioFile?: string;
  /** sha256 of the scenario's canonical JSON (keys sorted, `$schema` left out). */
  readonly scenarioHash: string;
  readonly name: string;
  /** The whole fleet (every shard). */
  readonly count: number;
  readonly seed: number;
  readonly staggerMs: number;
  readonly maxConnecting: number;
  readonly messages: number;
  readonly timeoutMs: number;
  readonly prefix: string;
  readonly shard: Shard;
  /** Devices this process ran. */
  readonly devices: number;
  readonly target:
    | { readonly kind: "own"; readonly separateProcess: boolean }
    | { readonly kind: "emulator"; readonly adminUrl: string; readonly caFile?: string }
    | { readonly kind: "service"; readonly idScope: string; readonly endpoint: string; readonly dpsPort?: number; readonly hubPort?: number; readonly lookupPort?: number; readonly caFile?: string };
  /** What the command line replaced of the scenario, by option name: `{ "count": 120, "stagger": 1000 }`. */
  readonly overrides: Readonly<Record<string, string | number | boolean>>;
  /** The command that runs this again, every effective value given (keys come from the environment, never from here). */
  readonly command: string;
  /** When the run started, and the moment it was told to wait for (`--start-at`). */
  readonly startedAt: string;
  readonly startAt?: string;
  readonly host: string;
  readonly node: string;
}

export interface EmulatorCountersSnapshot {
  dps: Record<string, number>;
  hub: Record<string, number>;
  throttled: number;
  registrations: number;
}

export interface ScenarioReport {
  readonly run: RunInfo;
  readonly scenario: Scenario;
  readonly summary: FleetSummary;
  readonly checks: ScenarioCheck[];
  /** The emulator's counters at the end (none against a real service); a shared emulator's count every shard and whatever else it served. */
  readonly emulatorCounters?: EmulatorCountersSnapshot;
  readonly emulatorCountersScope?: "own" | "shared";
  /** CPU and memory of the fleet's process, and of the emulator's when the run started it (the same process when in-process). */
  readonly fleetUsage: ProcessUsage;
  readonly emulatorUsage?: ProcessUsage;
  readonly separateProcess: boolean;
  /** Registration ids of the disabled wave(s), of this run's devices. */
  readonly wave: readonly string[];
  /** Registration ids disabled on their hub only (hub-disable), of this run's devices, and how many of them the emulator did not know. */
  readonly hubDisabled: readonly string[];
  readonly hubDisableMisses: number;
  /** What the summary was computed from; what a merge needs. */
  readonly raw: FleetRaw;
  /** A merged report: the shards it was made of. */
  readonly shards?: readonly { readonly file: string; readonly index: number; readonly devices: number; readonly host: string; readonly command: string; readonly fleetUsage: ProcessUsage }[];
}

export class ScenarioError extends Error {
  readonly code = "INVALID_SCENARIO";
}

function need(ok: boolean, message: string): void {
  if (!ok) throw new ScenarioError(message);
}

/** The host names of a scenario's hubs. */
export function scenarioHubs(scenario: Scenario): string[] {
  return Array.from({ length: scenario.emulator?.hubs ?? 2 }, (_, i) => `hub-${i + 1}.azure-devices.localhost`);
}

/**
 * Checks a parsed scenario against schemas/scenario.schema.json, then what a schema cannot say;
 * throws an Error with code INVALID_SCENARIO, one line per problem, each `<where>: <field>: <what>`.
 */
export function checkScenario(value: unknown, where = "scenario"): Scenario {
  const issues = validate(SCENARIO_SCHEMA, value);
  if (issues.length > 0) throw new ScenarioError(formatIssues(where, issues));
  const s = value as Scenario;
  const timeline = s.timeline ?? [];
  const marks = timeline.map((step) => step.mark).filter((m) => m !== undefined);
  const hubs = scenarioHubs(s);
  timeline.forEach((step, i) => {
    const at = `${where}: timeline[${i}]`;
    need(step.mark === undefined || marks.indexOf(step.mark) === marks.lastIndexOf(step.mark), `${at}.mark: "${step.mark}" names two steps; a mark names one moment`);
    need(step.hub === undefined || hubs.includes(step.hub), `${at}.hub: must be one of the scenario's hubs (${hubs.join(", ")}), got "${step.hub}"`);
    need(step.hub === undefined || step.do === "hub-down" || step.do === "hub-up", `${at}.hub: applies only to hub-down and hub-up`);
    need(step.fraction === undefined || step.do === "disable" || step.do === "hub-disable", `${at}.fraction: applies only to disable and hub-disable`);
  });
  const x = s.expect ?? {};
  if (x.registrationsBound !== undefined) {
    const b = x.registrationsBound;
    const from = marks.indexOf(b.from);
    need(from >= 0 && marks[from + 1] === b.to, `${where}: expect.registrationsBound: must name two consecutive marks of the timeline, { "from": "...", "to": "..." } (marks: ${marks.join(", ") || "none"})`);
  }
  need(x.recoveryBound === undefined || marks.includes(x.recoveryBound), `${where}: expect.recoveryBound: must name a mark of the timeline (marks: ${marks.join(", ") || "none"})`);
  try {
    retryPolicy(s.retryPolicy ?? {});
  } catch (error) {
    throw new ScenarioError(`${where}: retryPolicy: ${(error as Error).message}`);
  }
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

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) if (key !== "$schema" && (value as Record<string, unknown>)[key] !== undefined) out[key] = canonical((value as Record<string, unknown>)[key]);
    return out;
  }
  return value;
}

/** sha256 (hex) of the scenario's canonical JSON: the same for the same content, however it is laid out. */
export function scenarioHash(scenario: Scenario): string {
  return createHash("sha256").update(JSON.stringify(canonical(scenario))).digest("hex");
}

/** The registration ids of a fleet: PREFIX00001, PREFIX00002... (at least five digits). */
export function fleetIds(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(5, "0")}`);
}

/** The indices (0-based) of the whole fleet that shard K of N runs: i ≡ K−1 (mod N). */
export function shardIndices(count: number, shard: Shard): number[] {
  const out: number[] = [];
  for (let i = shard.index - 1; i < count; i += shard.count) out.push(i);
  return out;
}

/**
 * Each device's boot time (ms after the start) for the whole fleet, drawn from the seed in index
 * order: the same for every shard, whatever the number of shards.
 */
export function bootSchedule(seed: number, count: number, staggerMs: number): Float64Array {
  const out = new Float64Array(count);
  if (staggerMs <= 0) return out;
  const random = seededRandom((seed ^ 0xb0075eed) >>> 0);
  for (let i = 0; i < count; i++) out[i] = random() * staggerMs;
  return out;
}

/**
 * The group key a run's emulator enrolls (and every shard derives device keys from): a function of
 * the scenario and the seed, so that shards agree without talking. An emulator's, not a secret.
 */
export function scenarioGroupKey(hash: string, seed: number): string {
  return createHash("sha256").update(`dps-fleet group key\u0000${hash}\u0000${seed}`).digest("base64");
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

/** The devices disabled from the start (emulator.disabledFraction), of the whole fleet. */
function disabledAtStart(scenario: Scenario, ids: readonly string[], seed: number): string[] {
  return pickWave(ids, scenario.emulator?.disabledFraction ?? 0, seed ^ 0x5eed, new Set());
}

/**
 * The emulator a scenario runs against, as a config (what `dps-fleet emulator-config` prints for a
 * shared emulator): its hubs, retry-after, limits and faults, and the fleet's group enrollment.
 */
export function scenarioEmulatorConfig(scenario: Scenario, options: { seed?: number; count?: number } = {}): EmulatorConfig {
  const seed = options.seed ?? scenario.seed;
  const count = options.count ?? scenario.devices.count;
  const hash = scenarioHash(scenario);
  const ids = fleetIds(scenario.devices.prefix ?? `${scenario.name}-`, count);
  return {
    idScope: SCENARIO_ID_SCOPE,
    hubs: scenarioHubs(scenario).map((hostName) => ({ hostName })),
    retryAfterSeconds: scenario.emulator?.retryAfterSeconds ?? 1,
    assignAfterPolls: scenario.emulator?.assignAfterPolls,
    limits: scenario.emulator?.limits,
    faults: scenario.emulator?.faults,
    enrollments: { groups: [{ groupId: `${scenario.name}-group`, primaryKey: scenarioGroupKey(hash, seed), disabledRegistrations: disabledAtStart(scenario, ids, seed) }] },
  };
}

/**
 * Why the scenario cannot run against this target (undefined when it can): against a real DPS
 * there is no admin API, so a timeline can wait and end but not act, and MQTT is over TLS.
 */
export function targetProblem(scenario: Scenario, target: ServiceTarget | undefined): string | undefined {
  if (target?.kind !== "service") return undefined;
  const acting = (scenario.timeline ?? []).find((step) => step.do !== "end");
  if (acting) return `the timeline's "${acting.do}" step needs an emulator's admin API (--emulator-admin URL); against a DPS a timeline can only wait and end`;
  if ((scenario.emulator?.disabledFraction ?? 0) > 0) return "emulator.disabledFraction needs an emulator; against a DPS, disable devices in its enrollment list";
  if (scenario.devices.tls === false) return "devices.tls false (plain MQTT) needs an emulator; a DPS speaks MQTT over TLS only";
  return undefined;
}

/** A word as a shell reads it. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_\/.,:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
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
  /** Run only this shard of the fleet (default 1/1: all of it). More than one shard needs a `target`. */
  readonly shard?: Shard;
  /** A service every shard shares, instead of an emulator the run starts. */
  readonly target?: ServiceTarget;
  /** Boot the fleet at this moment (ms since the epoch) rather than at once: shards on several machines start together. */
  readonly startAt?: number;
  /** The scenario's file, for the report's command line. */
  readonly scenarioFile?: string;
  readonly onProgress?: (progress: FleetProgress) => void;
  /** Every event of every device (a dashboard's feed). */
  readonly onEvent?: (index: number, registrationId: string, event: RuntimeEvent) => void;
  readonly onStep?: (step: TimelineStep, atMs: number) => void;
  /** Where the emulator keeps its CA (default .cache/emulator under the cwd). */
  readonly stateDir?: string;
}

/** What a run needs of the service: its transport, and the timeline's actions. */
interface Service {
  readonly idScope: string;
  readonly globalEndpoint: string;
  readonly transport: DesktopTransport;
  readonly hubs: readonly string[];
  readonly countersScope?: "own" | "shared";
  setHubAvailable(hub: string, available: boolean): Promise<void>;
  /** The fleet's group enrollment, with these members disabled. */
  putGroup(disabled: readonly string[]): Promise<void>;
  /** Devices enabled or disabled on their hub; resolves with how many the hubs did not know. */
  setDevicesEnabled(ids: readonly string[], enabled: boolean): Promise<number>;
  counters(): Promise<EmulatorCountersSnapshot | undefined>;
  usage(): Promise<ProcessUsage | undefined>;
  stop(): Promise<void>;
}

async function ownEmulator(scenario: Scenario, config: EmulatorConfig, options: RunScenarioOptions, seed: number, groupId: string, groupKey: string, tls: boolean): Promise<Service> {
  const separateProcess = options.separateProcess ?? true;
  const emulator = await launchEmulator({ separateProcess, seed, stateDir: options.stateDir, config });
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
  return {
    idScope: emulator.idScope,
    globalEndpoint: SCENARIO_DPS_HOST,
    transport,
    hubs: scenarioHubs(scenario),
    countersScope: "own",
    setHubAvailable: async (hub, available) => void (await emulator.call("setHubAvailable", hub, available)),
    putGroup: async (disabled) => void (await emulator.call("addGroupEnrollment", { groupId, primaryKey: groupKey, disabledRegistrations: [...disabled] })),
    setDevicesEnabled: (ids, enabled) => emulator.callMany("setDeviceEnabled", ids.map((id) => [id, enabled] as [string, boolean])),
    counters: async () => {
      const c = await emulator.call("counters");
      return { dps: c.dps, hub: c.hub, throttled: c.throttled, registrations: c.registrations };
    },
    usage: () => emulator.usage(),
    stop: () => emulator.stop(),
  };
}

/** An emulator started on its own, through its admin API (simulator/admin-server.ts). */
async function sharedEmulator(target: Extract<ServiceTarget, { kind: "emulator" }>, groupId: string, groupKey: string, disabled: readonly string[], tls: boolean): Promise<Service> {
  const base = target.adminUrl.replace(/\/+$/, "");
  const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> => {
    let response: Response;
    try {
      response = await fetch(base + path, { method, headers: body === undefined ? undefined : { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      throw new Error(`the emulator's admin API at ${base} cannot be reached (${((error as Error).cause as Error | undefined)?.message ?? (error as Error).message}): start it first (dps-emulator --config FILE, see docs/FLEET.md)`);
    }
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = text;
    }
    return { status: response.status, json };
  };
  const get = async <T>(path: string): Promise<T> => {
    const r = await call("GET", path);
    if (r.status !== 200) throw new Error(`${base}${path} answered ${r.status}: is ${base} an emulator's admin API?`);
    return r.json as T;
  };
  const e = await get<{ idScope: string; caPath: string; dps: { tlsPort: number; tcpPort: number }; hub: { tlsPort: number; tcpPort: number }; https: { port: number } }>("/endpoints");
  const caFile = target.caFile ?? e.caPath;
  let caPem: string;
  try {
    caPem = readFileSync(caFile, "utf8");
  } catch (error) {
    throw new Error(`cannot read the emulator's CA ${caFile} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): on another machine, copy it and pass --ca FILE`);
  }
  const hubs = (await get<{ hostName: string }[]>("/hubs")).map((h) => h.hostName);
  const enrolled = await get<{ groups: { groupId: string }[] }>("/enrollments");
  if (!enrolled.groups.some((g) => g.groupId === groupId)) {
    const r = await call("POST", "/enrollments/groups", { groupId, primaryKey: groupKey, disabledRegistrations: [...disabled] });
    if (r.status >= 300) throw new Error(`the emulator refused the group enrollment ${groupId}: ${JSON.stringify(r.json)}`);
  }
  const hostname = new URL(base).hostname.replace(/^\[|\]$/g, "");
  const address = hostname === "localhost" ? "127.0.0.1" : hostname;
  const transport = createTransport({
    tls,
    ca: caPem,
    resolve: loopbackResolver({ dpsHost: SCENARIO_DPS_HOST, dpsPort: tls ? e.dps.tlsPort : e.dps.tcpPort, lookupPort: e.https.port, hubPort: tls ? e.hub.tlsPort : e.hub.tcpPort, address }),
  });
  const must = async (method: string, path: string, body?: unknown) => {
    const r = await call(method, path, body);
    if (r.status >= 300) throw new Error(`${method} ${base}${path}: ${r.status} ${JSON.stringify(r.json)}`);
  };
  return {
    idScope: e.idScope,
    globalEndpoint: SCENARIO_DPS_HOST,
    transport,
    hubs,
    countersScope: "shared",
    setHubAvailable: (hub, available) => must("PATCH", `/hubs/${encodeURIComponent(hub)}`, { available }),
    putGroup: (members) => must("POST", "/enrollments/groups", { groupId, primaryKey: groupKey, disabledRegistrations: [...members] }),
    setDevicesEnabled: async (ids, enabled) => {
      // A few requests at a time: the admin API is one HTTP server on the emulator's event loop.
      let next = 0;
      let misses = 0;
      const worker = async () => {
        while (next < ids.length) {
          const id = ids[next++];
          const r = await call("PATCH", `/devices/${encodeURIComponent(id)}`, { enabled });
          if (r.status >= 300) misses++;
        }
      };
      await Promise.all(Array.from({ length: Math.min(16, ids.length) }, worker));
      return misses;
    },
    counters: async () => {
      const c = await get<EmulatorCountersSnapshot>("/counters");
      return { dps: c.dps, hub: c.hub, throttled: c.throttled, registrations: c.registrations };
    },
    usage: async () => undefined,
    stop: async () => {},
  };
}

function realService(target: Extract<ServiceTarget, { kind: "service" }>): Service {
  const unsupported = async (): Promise<never> => {
    throw new Error("a DPS has no admin API: this step needs an emulator (--emulator-admin)");
  };
  return {
    idScope: target.idScope,
    globalEndpoint: target.endpoint,
    transport: createTransport({
      tls: true,
      ca: target.caFile === undefined ? undefined : readFileSync(target.caFile, "utf8"),
      resolve: serviceResolver({ dpsHost: target.endpoint, dpsPort: target.dpsPort, hubPort: target.hubPort, lookupPort: target.lookupPort }),
    }),
    hubs: [],
    setHubAvailable: unsupported,
    putGroup: unsupported,
    setDevicesEnabled: unsupported,
    counters: async () => undefined,
    usage: async () => undefined,
    stop: async () => {},
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The run's every value, where each came from, and the command line that runs it again. */
function runInfo(scenario: Scenario, options: RunScenarioOptions, devices: number): RunInfo {
  const count = options.count ?? scenario.devices.count;
  const seed = options.seed ?? scenario.seed;
  const staggerMs = options.staggerMs ?? scenario.devices.staggerMs ?? 0;
  const maxConnecting = options.maxConnecting ?? scenario.host?.maxConnecting ?? DEFAULT_MAX_CONNECTING;
  const shard = options.shard ?? { index: 1, count: 1 };
  const t = options.target;
  const target: RunInfo["target"] =
    t === undefined
      ? { kind: "own", separateProcess: options.separateProcess ?? true }
      : t.kind === "emulator"
        ? { kind: "emulator", adminUrl: t.adminUrl, caFile: t.caFile }
        : { kind: "service", idScope: t.idScope, endpoint: t.endpoint, dpsPort: t.dpsPort, hubPort: t.hubPort, lookupPort: t.lookupPort, caFile: t.caFile };
  const overrides: Record<string, string | number | boolean> = {};
  if (options.count !== undefined) overrides.count = options.count;
  if (options.seed !== undefined) overrides.seed = options.seed;
  if (options.staggerMs !== undefined) overrides.stagger = options.staggerMs;
  if (options.maxConnecting !== undefined) overrides["max-connecting"] = options.maxConnecting;
  if (options.shard !== undefined && options.shard.count > 1) overrides.shard = `${shard.index}/${shard.count}`;
  if (target.kind === "own" && !target.separateProcess) overrides["in-process"] = true;
  if (target.kind === "emulator") overrides["emulator-admin"] = target.adminUrl;
  if (target.kind === "service") overrides.endpoint = target.endpoint;
  if (options.startAt !== undefined) overrides["start-at"] = new Date(options.startAt).toISOString();
  const words = ["dps-fleet", "--scenario", options.scenarioFile ?? `${scenario.name}.json`, "--count", String(count), "--seed", String(seed), "--stagger", String(staggerMs), "--max-connecting", String(maxConnecting)];
  if (shard.count > 1) words.push("--shard", `${shard.index}/${shard.count}`);
  if (target.kind === "own" && !target.separateProcess) words.push("--in-process");
  if (target.kind === "emulator") words.push("--emulator-admin", target.adminUrl, ...(target.caFile ? ["--ca", target.caFile] : []));
  if (target.kind === "service") {
    words.push("--id-scope", target.idScope, "--endpoint", target.endpoint);
    if (target.dpsPort !== undefined) words.push("--dps-port", String(target.dpsPort));
    if (target.hubPort !== undefined) words.push("--hub-port", String(target.hubPort));
    if (target.lookupPort !== undefined) words.push("--lookup-port", String(target.lookupPort));
    if (target.caFile !== undefined) words.push("--ca", target.caFile);
  }
  return {
    scenarioFile: options.scenarioFile,
    scenarioHash: scenarioHash(scenario),
    name: scenario.name,
    count,
    seed,
    staggerMs,
    maxConnecting,
    messages: scenario.devices.messages ?? 1,
    timeoutMs: scenario.timeoutMs ?? 600_000,
    prefix: scenario.devices.prefix ?? `${scenario.name}-`,
    shard,
    devices,
    target,
    overrides,
    command: (target.kind === "service" ? "DPS_GROUP_KEY=… " : "") + words.map(shellWord).join(" "),
    startedAt: new Date().toISOString(),
    startAt: options.startAt === undefined ? undefined : new Date(options.startAt).toISOString(),
    host: hostname(),
    node: process.version,
  };
}

export async function runScenario(scenario: Scenario, options: RunScenarioOptions = {}): Promise<ScenarioReport> {
  const shard = options.shard ?? { index: 1, count: 1 };
  if (!(Number.isInteger(shard.index) && Number.isInteger(shard.count) && shard.index >= 1 && shard.index <= shard.count)) throw new ScenarioError(`shard ${shard.index}/${shard.count}: K/N needs 1 ≤ K ≤ N`);
  if (shard.count > 1 && options.target === undefined) throw new ScenarioError("the shards of one fleet run against one service: give a target (an emulator's admin URL, or a DPS)");
  const problem = targetProblem(scenario, options.target);
  if (problem) throw new ScenarioError(problem);
  const seed = options.seed ?? scenario.seed;
  const count = options.count ?? scenario.devices.count;
  const staggerMs = options.staggerMs ?? scenario.devices.staggerMs ?? 0;
  const tls = scenario.devices.tls ?? true;
  const ids = fleetIds(scenario.devices.prefix ?? `${scenario.name}-`, count);
  const mine = shardIndices(count, shard);
  const myIds = new Set(mine.map((i) => ids[i]));
  const run = runInfo(scenario, options, mine.length);
  const groupId = options.target?.kind === "service" ? (options.target.groupId ?? `${scenario.name}-group`) : `${scenario.name}-group`;
  const groupKey = options.target?.kind === "service" ? options.target.groupKey : scenarioGroupKey(run.scenarioHash, seed);
  // The waves are chosen over the whole fleet (every shard picks the same); each shard acts on its own devices.
  const wave: string[] = options.target?.kind === "service" ? [] : disabledAtStart(scenario, ids, seed);
  const myWave = wave.filter((id) => myIds.has(id));
  const hubDisabled: string[] = [];
  const myHubDisabled: string[] = [];
  let hubDisableMisses = 0;
  const policy = retryPolicy(scenario.retryPolicy ?? {});
  const service: Service =
    options.target === undefined
      ? await ownEmulator(scenario, { ...scenarioEmulatorConfig(scenario, { seed, count }) }, options, seed, groupId, groupKey, tls)
      : options.target.kind === "emulator"
        ? await sharedEmulator(options.target, groupId, groupKey, wave, tls)
        : realService(options.target);
  const flashDir = scenario.devices.flash === "file" ? join(process.cwd(), ".cache", "fleet", `${scenario.name}-${process.pid}`) : undefined;
  if (flashDir) mkdirSync(flashDir, { recursive: true });
  try {
    const unknownHub = (scenario.timeline ?? []).find((step) => step.hub !== undefined && !service.hubs.some((h) => h.toLowerCase() === step.hub!.toLowerCase()));
    if (unknownHub && options.target?.kind === "emulator") {
      throw new Error(`the timeline names ${unknownHub.hub}, a hub the emulator at ${options.target.adminUrl} does not have (${service.hubs.join(", ")}): start it with \`dps-fleet emulator-config\`'s config`);
    }
    if (options.startAt !== undefined) await sleep(Math.max(0, options.startAt - Date.now()));
    const boots = bootSchedule(seed, count, staggerMs);
    const timeline = scenario.timeline ?? [];
    const started = Date.now();
    // Actions on the whole service (a hub down or up) are the first shard's; each shard disables
    // and enables its own devices.
    const coordinator = shard.index === 1;
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
                const done = () => fleet.connectedNow() >= mine.length - myWave.length && fleet.progress().failed >= myWave.length;
                while (Date.now() < deadline && !done()) await sleep(100);
              } else if (step.waitMs) {
                await sleep(step.waitMs);
              }
              options.onStep?.(step, Date.now() - started);
              if (step.mark) fleet.mark(step.mark);
              switch (step.do) {
                case "hub-down":
                case "hub-up":
                  if (coordinator) for (const hub of step.hub ? [step.hub] : service.hubs) await service.setHubAvailable(hub, step.do === "hub-up");
                  break;
                case "disable": {
                  const chosen = pickWave(ids, step.fraction!, seed ^ (0x0d15ab1e + wave.length), new Set(wave));
                  wave.push(...chosen);
                  const own = chosen.filter((id) => myIds.has(id));
                  myWave.push(...own);
                  await service.putGroup(wave);
                  await service.setDevicesEnabled(own, false);
                  break;
                }
                case "hub-disable": {
                  // On the hub only: the enrollment stays enabled, DPS keeps assigning the device to
                  // the same hub (the allocation is a hash of the id), and the hub answers CONNACK 5.
                  const chosen = pickWave(ids, step.fraction ?? 1, seed ^ (0x4b0b + hubDisabled.length), new Set([...wave, ...hubDisabled]));
                  hubDisabled.push(...chosen);
                  const own = chosen.filter((id) => myIds.has(id));
                  myHubDisabled.push(...own);
                  hubDisableMisses += await service.setDevicesEnabled(own, false);
                  break;
                }
                case "hub-enable":
                  await service.setDevicesEnabled(myHubDisabled, true);
                  break;
                case "end":
                  return;
              }
            }
          };
    const raw = await runFleetRaw({
      count: mine.length,
      transport: service.transport,
      random: seededRandom(shard.count > 1 ? (seed ^ Math.imul(shard.index, 0x9e3779b9)) >>> 0 : seed),
      bootDelayFor: (j) => boots[mine[j]],
      messages: scenario.devices.messages ?? 1,
      timeoutMs: scenario.timeoutMs ?? 600_000,
      configFor: (j) => ({
        idScope: service.idScope,
        registrationId: ids[mine[j]],
        groupKey,
        globalEndpoint: service.globalEndpoint,
        retryPolicy: scenario.retryPolicy,
      }),
      flashFor: flashDir ? (j) => join(flashDir, `${ids[mine[j]]}.flash`) : undefined,
      onProgress: options.onProgress,
      onEvent: options.onEvent,
      maxConnecting: run.maxConnecting,
      hold,
    });
    const emulatorCounters = await service.counters();
    const emulatorUsage = await service.usage();
    const summary = summarizeFleet(raw);
    const checks: ScenarioCheck[] = [];
    if (hubDisableMisses > 0) checks.push(hubDisableCheck(hubDisableMisses, myHubDisabled.length));
    checks.push(...evaluate(scenario.expect ?? {}, summary, myWave.length, mine.length, policy));
    return {
      run,
      scenario,
      summary,
      checks,
      emulatorCounters,
      emulatorCountersScope: emulatorCounters ? service.countersScope : undefined,
      fleetUsage: processUsage(),
      emulatorUsage,
      separateProcess: options.target === undefined && (options.separateProcess ?? true),
      wave: myWave,
      hubDisabled: myHubDisabled,
      hubDisableMisses,
      raw,
    };
  } finally {
    await service.stop();
    if (flashDir) rmSync(flashDir, { recursive: true, force: true });
  }
}

function hubDisableCheck(misses: number, of: number): ScenarioCheck {
  return { name: "hub-disable reached every device", ok: false, detail: `${misses} of ${of} devices were not on any hub yet` };
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

/** "count 120 (--count), seed 1 (the scenario's)...": each value the run used and where it came from. */
function effectiveLine(run: RunInfo, scenario: Scenario): string {
  const o = run.overrides;
  const from = (option: string, field: string, given: unknown) => (o[option] !== undefined ? `--${option}` : given !== undefined ? `the scenario's ${field}` : "the default");
  const parts = [
    `count ${run.count} (${from("count", "devices.count", scenario.devices.count)})`,
    `seed ${run.seed} (${from("seed", "seed", scenario.seed)})`,
    `stagger ${run.staggerMs} ms (${from("stagger", "devices.staggerMs", scenario.devices.staggerMs)})`,
    `max-connecting ${run.maxConnecting} (${from("max-connecting", "host.maxConnecting", scenario.host?.maxConnecting)})`,
    `messages ${run.messages}`,
    `timeout ${run.timeoutMs} ms`,
    run.shard.index === 0 ? `${run.shard.count} shards merged` : `shard ${run.shard.index}/${run.shard.count} (${run.devices} devices here)`,
  ];
  if (run.startAt) parts.push(`start at ${run.startAt}`);
  return `run: ${parts.join(", ")}; scenario sha256 ${run.scenarioHash.slice(0, 16)}`;
}

function targetText(r: ScenarioReport): string {
  const t = r.run.target;
  if (t.kind === "own") return t.separateProcess ? "emulator in a child process" : "emulator in this process";
  if (t.kind === "emulator") return `the shared emulator at ${t.adminUrl}`;
  return `DPS ${t.endpoint}${t.dpsPort ? `:${t.dpsPort}` : ""} (id scope ${t.idScope})`;
}

export function formatReport(r: ScenarioReport): string {
  const lines: string[] = [];
  if (r.shards) {
    lines.push(`merged ${r.shards.length} shards of scenario ${r.scenario.name}: ${r.summary.total} devices, seed ${r.run.seed}, against ${targetText(r)}`);
    lines.push(effectiveLine(r.run, r.scenario));
    for (const s of r.shards) lines.push(`shard ${s.index}/${r.run.shard.count} (${s.devices} devices, ${s.host}, ${s.file}): ${s.command}`);
  } else {
    lines.push(`scenario ${r.scenario.name}: ${r.summary.total} devices, seed ${r.run.seed}, against ${targetText(r)}`);
    lines.push(effectiveLine(r.run, r.scenario));
    lines.push(`reproduce: ${r.run.command}`);
  }
  lines.push(formatSummary(r.summary));
  const c = r.emulatorCounters;
  if (c) {
    const who = r.emulatorCountersScope === "shared" ? "the shared emulator saw (every shard, since it started)" : "emulator saw";
    lines.push(`${who}: DPS ${Object.entries(c.dps).sort().map(([k, v]) => `${k}×${v}`).join(", ")}; hub ${Object.entries(c.hub).sort().map(([k, v]) => `${k}×${v}`).join(", ")}; throttled ${c.throttled}`);
  }
  if (r.shards) {
    const largest = Math.max(...r.shards.map((s) => s.fleetUsage.maxRssBytes));
    lines.push(`cost: ${r.shards.length} fleet processes, ${(r.fleetUsage.cpuMs / 1000).toFixed(1)} s CPU in all, peak RSS ${mb(largest)} in the largest (${(largest / 1024 / Math.max(1, Math.max(...r.shards.map((s) => s.devices)))).toFixed(0)} KiB per device)`);
  } else {
    lines.push(
      `cost: fleet process ${(r.fleetUsage.cpuMs / 1000).toFixed(1)} s CPU, peak RSS ${mb(r.fleetUsage.maxRssBytes)}` +
        (r.separateProcess && r.emulatorUsage ? `; emulator process ${(r.emulatorUsage.cpuMs / 1000).toFixed(1)} s CPU, peak RSS ${mb(r.emulatorUsage.maxRssBytes)}` : ""),
    );
  }
  for (const check of r.checks) lines.push(`${check.ok ? "PASS" : "FAIL"} ${check.name}: ${check.detail}`);
  return lines.join("\n");
}

// ---- reports as files, and merging them --------------------------------------------------------

/** A report as `dps-fleet --json` writes it: the report, with the summary's failed list cut to 100 (raw.failed has them all). */
export function reportFile(r: ScenarioReport): Record<string, unknown> {
  const { raw, ...rest } = r;
  return { format: REPORT_FORMAT, ...rest, summary: { ...r.summary, failed: r.summary.failed.slice(0, 100), failedCount: r.summary.failed.length }, raw };
}

/** A usage problem with the reports given to merge (exit 2): not reports, or not the shards of one run. */
export class MergeError extends Error {
  readonly code = "INVALID_MERGE";
}

interface LoadedReport {
  readonly file: string;
  readonly report: ScenarioReport;
}

/** Checks that a parsed JSON file is a report `mergeReports` can use. */
function asReport(file: string, value: unknown): LoadedReport {
  const v = value as Partial<ScenarioReport> & { format?: unknown };
  if (!v || typeof v !== "object" || v.format !== REPORT_FORMAT) throw new MergeError(`${file}: not a dps-fleet report (no "format": "${REPORT_FORMAT}"); write one with dps-fleet --json FILE`);
  if (!v.run || !v.raw || !v.scenario || typeof v.run.scenarioHash !== "string" || !v.run.shard) throw new MergeError(`${file}: a dps-fleet report without its run, scenario or raw data`);
  let scenario: Scenario;
  try {
    scenario = checkScenario(v.scenario, `${file}: scenario`);
  } catch (error) {
    throw new MergeError((error as Error).message);
  }
  if (scenarioHash(scenario) !== v.run.scenarioHash) throw new MergeError(`${file}: its scenario does not match its own hash (edited by hand?)`);
  return { file, report: v as ScenarioReport };
}

/**
 * Folds the reports of the shards of one run into one report: the checks are evaluated again on
 * the merged data.
 * @throws MergeError when a file is not a report, or the files are not the N distinct shards of one
 *   run (the same scenario, seed, fleet size, stagger and N).
 */
export function mergeReports(files: readonly { readonly file: string; readonly report: unknown }[]): ScenarioReport {
  if (files.length === 0) throw new MergeError("no reports to merge");
  const loaded = files.map((f) => asReport(f.file, f.report));
  const first = loaded[0];
  const r0 = first.report.run;
  for (const { file, report } of loaded.slice(1)) {
    const r = report.run;
    const differs = (what: string, a: unknown, b: unknown) => {
      if (a !== b) throw new MergeError(`${file} is not a shard of the same run as ${first.file}: ${what} ${String(a)}, not ${String(b)}`);
    };
    differs("scenario", `${r.name} (sha256 ${r.scenarioHash.slice(0, 16)})`, `${r0.name} (sha256 ${r0.scenarioHash.slice(0, 16)})`);
    differs("seed", r.seed, r0.seed);
    differs("fleet size (--count)", r.count, r0.count);
    differs("stagger", r.staggerMs, r0.staggerMs);
    differs("number of shards", r.shard.count, r0.shard.count);
  }
  const n = r0.shard.count;
  const byIndex = new Map<number, LoadedReport>();
  for (const l of loaded) {
    const k = l.report.run.shard.index;
    const seen = byIndex.get(k);
    if (seen) throw new MergeError(`${seen.file} and ${l.file} are both shard ${k}/${n}`);
    byIndex.set(k, l);
  }
  const missing = Array.from({ length: n }, (_, i) => i + 1).filter((k) => !byIndex.has(k));
  if (missing.length) throw new MergeError(`shard${missing.length > 1 ? "s" : ""} ${missing.map((k) => `${k}/${n}`).join(", ")} missing: give all ${n} reports of the run (have ${[...byIndex.keys()].sort((a, b) => a - b).map((k) => `${k}/${n}`).join(", ")})`);
  const ordered = [...byIndex.entries()].sort((a, b) => a[0] - b[0]).map(([, l]) => l);
  const raw = mergeFleetRaw(ordered.map((l) => l.report.raw));
  const summary = summarizeFleet(raw);
  const scenario = first.report.scenario;
  const waveSize = ordered.reduce((a, l) => a + l.report.wave.length, 0);
  const hubDisabled = ordered.flatMap((l) => l.report.hubDisabled);
  const misses = ordered.reduce((a, l) => a + l.report.hubDisableMisses, 0);
  const checks: ScenarioCheck[] = [];
  if (misses > 0) checks.push(hubDisableCheck(misses, hubDisabled.length));
  checks.push(...evaluate(scenario.expect ?? {}, summary, waveSize, raw.total, retryPolicy(scenario.retryPolicy ?? {})));
  const last = ordered.reduce((a, b) => (b.report.raw.endedAt > a.report.raw.endedAt ? b : a));
  return {
    run: { ...r0, shard: { index: 0, count: n }, devices: raw.total, command: `dps-fleet merge ${ordered.map((l) => shellWord(l.file)).join(" ")}`, startedAt: new Date(raw.startedAt).toISOString(), host: hostname() },
    scenario,
    summary,
    checks,
    emulatorCounters: last.report.emulatorCounters,
    emulatorCountersScope: last.report.emulatorCountersScope,
    fleetUsage: {
      cpuMs: ordered.reduce((a, l) => a + l.report.fleetUsage.cpuMs, 0),
      maxRssBytes: Math.max(...ordered.map((l) => l.report.fleetUsage.maxRssBytes)),
      rssBytes: Math.max(...ordered.map((l) => l.report.fleetUsage.rssBytes)),
    },
    separateProcess: false,
    wave: ordered.flatMap((l) => l.report.wave),
    hubDisabled,
    hubDisableMisses: misses,
    raw,
    shards: ordered.map((l) => ({ file: l.file, index: l.report.run.shard.index, devices: l.report.run.devices, host: l.report.run.host, command: l.report.run.command, fleetUsage: l.report.fleetUsage })),
  };
}

/** Reads the reports of `files` and merges them (mergeReports). */
export function mergeReportFiles(paths: readonly string[]): ScenarioReport {
  return mergeReports(
    paths.map((file) => {
      let report: unknown;
      try {
        report = JSON.parse(readFileSync(file, "utf8"));
      } catch (error) {
        throw new MergeError(`${file}: ${(error as Error).message}`);
      }
      return { file, report };
    }),
  );
}
