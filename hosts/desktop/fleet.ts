/**
 * Runs many devices in one process, each a full DeviceRuntime on its own flash, and summarises
 * what happened: time to connected (min, median, p99, max), attempts per device, the DPS answers
 * and faults met, the devices that ended in a terminal state and why, and how the fleet behaved
 * against the troubleshooting table: retries spread (no lockstep), retry-after honoured, the
 * cached hub retried at least 5 s apart, re-registrations only after the hub refused the identity.
 *
 *   const summary = await runFleet({ count: 1000, transport, configFor, staggerMs: 5000 });
 *   console.log(formatSummary(summary));
 *
 * Scale: every device shares the transport's one MQTT connector (one TLS context, one keepalive
 * sweep) and HTTPS port; per device there is a runtime, its flash, one socket while connected and
 * one timer while waiting. Progress counters are kept as events arrive, never by a scan of the
 * fleet. The fleet reads each DPS answer's `retry-after` off the wire (a thin wrapper over the
 * connector) to check it against when the device really retried.
 */
import type { HubFeature } from "../../modules/hub-session.js";
import type { FlashPort } from "../../modules/flash.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import type { MqttConnectOptions, MqttConnector, MqttSession, MqttSessionCallbacks, RandomSource } from "../../modules/ports.js";
import { DeviceRuntime, type RuntimeConfig, type RuntimeEvent } from "../../modules/runtime.js";
import { DESKTOP_FLASH_GEOMETRY, type DesktopTransport } from "./device.js";
import { NorFlashFile } from "./nor-flash-file.js";
import { mathRandom, nodeCrypto, nodeTimers, secureRandom, systemClock } from "./platform.js";

export interface FleetOptions {
  readonly count: number;
  readonly configFor: (index: number) => RuntimeConfig;
  readonly transport: DesktopTransport;
  /** Boots are spread uniformly at random over this window (default 0: all at once). */
  readonly staggerMs?: number;
  /**
   * Each device's boot, in ms after the start, instead of a draw from `random` over `staggerMs`:
   * a sharded fleet takes its devices' times from the whole fleet's schedule (scenario.ts).
   */
  readonly bootDelayFor?: (index: number) => number;
  /** Telemetry messages each device sends once connected (default 1). */
  readonly messages?: number;
  /** Give up on devices not settled after this long (default 120 s). */
  readonly timeoutMs?: number;
  /** A flash file's path, a FlashPort, or undefined for in-memory flash (two 4 KiB sectors). */
  readonly flashFor?: (index: number) => FlashPort | string | undefined;
  /** Jitter of the devices and of the boot times; seed it to replay a run. */
  readonly random?: RandomSource;
  /** Called about every `progressMs` with the running totals. */
  readonly onProgress?: (progress: FleetProgress) => void;
  readonly progressMs?: number;
  /** Every event of every device (for a verbose console). */
  readonly onEvent?: (index: number, registrationId: string, event: RuntimeEvent) => void;
  /**
   * Keeps the devices running after they settle, until the promise this returns resolves (a
   * scenario's timeline, a benchmark holding sessions open); then every device is stopped. Without
   * it the run ends when every device has settled, and each is stopped as it settles.
   */
  readonly hold?: (fleet: FleetControl) => Promise<unknown>;
  /**
   * At most this many MQTT connections between connect and CONNACK at once, the others waiting
   * their turn (see ConnectGate); default: no limit.
   */
  readonly maxConnecting?: number;
  /** Count MQTT round trips per device up to its first connection (default false). */
  readonly countRoundTrips?: boolean;
  /** Hub features of each device (modules/c2d.ts, methods.ts, twin.ts); default none. */
  readonly featuresFor?: (index: number) => readonly HubFeature[];
}

/** What a `hold` function can see of the running fleet. */
export interface FleetControl {
  /** Resolves when every device has settled (connected and delivered, or failed) or timed out. */
  readonly settled: Promise<void>;
  progress(): FleetProgress;
  /** Devices currently connected to their hub. */
  connectedNow(): number;
  /** Registration ids by index (for picking a wave). */
  readonly registrationIds: readonly string[];
  /** Marks a moment (e.g. "hub-up") from which recovery times are measured. */
  mark(name: string): void;
}

export interface FleetProgress {
  readonly elapsedMs: number;
  readonly booted: number;
  /** Connected to their hub now. */
  readonly connected: number;
  /** Connected at least once. */
  readonly everConnected: number;
  readonly done: number;
  /** Failed, or backing off in the long tail, now (a device that connects again leaves this count). */
  readonly failed: number;
  readonly total: number;
}

export interface Percentiles {
  readonly min: number;
  readonly median: number;
  readonly p99: number;
  readonly max: number;
}

export interface RetryAnalysis {
  /** DPS retries scheduled (each "retrying" status). */
  readonly count: number;
  /** Why: "429", "503", "connack-3", "fault-closed"... */
  readonly causes: Record<string, number>;
  readonly delayMs?: Percentiles;
  /** Retries whose failing answer carried a retry-after, and the smallest (real wait − retry-after) among them. */
  readonly withRetryAfter: number;
  readonly retryAfterMarginMs?: number;
  /** Smallest (real wait − scheduled delay): below 0 would mean a retry came early. */
  readonly scheduleMarginMs?: number;
  /** Most retries falling due within one 100 ms window, over the whole run. */
  readonly peakPer100ms: number;
  /** Share of retries with a due time (to the millisecond) no other retry shares. */
  readonly distinctShare: number;
}

export interface HubAnalysis {
  /** Hub connections lost or refused (hub "retrying" statuses). */
  readonly retries: number;
  /** Smallest gap between two connection attempts of one device after a loss (Azure asks ≥ 5 s). */
  readonly minGapMs?: number;
  /** Scheduled hub retry delays. */
  readonly delayMs?: Percentiles;
  readonly peakPer100ms: number;
  /** DPS registrations started by devices that had already connected (a re-provisioning). */
  readonly reRegistrations: number;
  /** Hub refusals that led to re-provisioning (CONNACK 4/5, or the retry window passed). */
  readonly reprovisionOutcomes: number;
}

/** What happened between two marks of the timeline (a fault and its end), or from a mark to the end of the run. */
export interface FleetWindow {
  readonly from: string;
  readonly to: string;
  readonly ms: number;
  /** DPS register requests sent within the window: in all, per device, and how many devices sent each number. */
  readonly registrations: {
    readonly total: number;
    readonly perDevice: Percentiles;
    /** Registrations per device → devices, e.g. { "2": 870, "3": 130 }. */
    readonly distribution: Record<string, number>;
  };
}

export interface FleetSummary {
  readonly total: number;
  /** Connected at least once. */
  readonly connected: number;
  /** Connected at the end of the run. */
  readonly connectedAtEnd: number;
  /** Devices whose messages were all acknowledged. */
  readonly delivered: number;
  /** Devices failed, or backing off in the long tail, at the end of the run. */
  readonly failed: { readonly registrationId: string; readonly code: string; readonly message: string }[];
  /** Devices that backed off (or failed) at some point of the run, including those that connected again after. */
  readonly everBackedOff: number;
  /** Terminal states grouped: "REGISTRATION_FAILED: DPS answered that ..." → count. */
  readonly terminalReasons: Record<string, number>;
  readonly timedOut: string[];
  readonly timeToConnectedMs?: Percentiles;
  /** DPS retries per device. */
  readonly dpsAttempts: Percentiles;
  /** Register requests per device. */
  readonly registers: Percentiles;
  /** DPS answers and faults met, e.g. { "202": 1000, "429": 37, "connack-5": 2, "fault-closed": 1 }. */
  readonly statusCodes: Record<string, number>;
  readonly hubStates: Record<string, number>;
  readonly fromCache: number;
  readonly retries: RetryAnalysis;
  readonly hub: HubAnalysis;
  /** Per mark: how long after it the devices that had lost their hub were connected again. */
  readonly recoveries: Record<string, { readonly devices: number; readonly afterMs?: Percentiles }>;
  /** From each mark to the next, and from the last to the end of the run ("the end"). */
  readonly windows: readonly FleetWindow[];
  /** MQTT round trips up to the first connection (with countRoundTrips). */
  readonly roundTrips?: { readonly dps: Percentiles; readonly hub: Percentiles; readonly connections: Percentiles };
  readonly elapsedMs: number;
}

interface DeviceRecord {
  readonly index: number;
  readonly registrationId: string;
  runtime?: DeviceRuntime;
  bootedAt?: number;
  connectedAt?: number;
  lastConnectedAt?: number;
  lostHubAt?: number;
  isConnected: boolean;
  attempts: number;
  registers: number;
  /** When each register request was sent. */
  registerTimes: number[];
  /** Failed or backing off now; `everDown` once it has been. */
  down: boolean;
  everDown: boolean;
  acked: number;
  settled: boolean;
  fromCache: boolean;
  failure?: { code: string; message: string };
  /** retry-after (ms) of the last DPS answer of status ≥ 300, read off the wire. */
  wireRetryAfterMs?: number;
  /** A scheduled DPS retry waiting for the device's next step. */
  pendingRetry?: { at: number; delayMs: number; retryAfterMs?: number };
  lastHubAttemptAt?: number;
  hubLossSeen: boolean;
  rtDps: number;
  rtHub: number;
  connections: number;
}

export function percentiles(values: readonly number[]): Percentiles {
  const sorted = Float64Array.from(values).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
  return { min: sorted[0] ?? 0, median: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? 0 };
}

/** Most values within any window of `windowMs` (values are times in ms). */
export function peakInWindow(times: readonly number[], windowMs: number): number {
  const sorted = Float64Array.from(times).sort();
  let peak = 0;
  for (let lo = 0, hi = 0; hi < sorted.length; hi++) {
    while (sorted[hi] - sorted[lo] >= windowMs) lo++;
    peak = Math.max(peak, hi - lo + 1);
  }
  return peak;
}

function distinctShare(times: readonly number[]): number {
  if (times.length === 0) return 1;
  const seen = new Map<number, number>();
  for (const t of times) seen.set(Math.round(t), (seen.get(Math.round(t)) ?? 0) + 1);
  let alone = 0;
  for (const n of seen.values()) if (n === 1) alone++;
  return alone / times.length;
}

/** A DPS answer's retry-after in ms from its topic, or undefined ("…/res/429/?$rid=3&retry-after=5"). */
function retryAfterOfTopic(topic: string): { status: number; retryAfterMs?: number } | undefined {
  if (!topic.startsWith("$dps/registrations/res/")) return undefined;
  const status = Number(topic.slice(23, 26));
  const m = /[?&]retry-after=([^&]*)/.exec(topic);
  const seconds = m ? Number(m[1]) : NaN;
  return { status, retryAfterMs: Number.isFinite(seconds) ? seconds * 1000 : undefined };
}

/**
 * Wraps the shared connector: reads each DPS answer's retry-after for its device and, when asked,
 * counts round trips (a write followed by an answer) per device until it first connects.
 */
class ObservedConnector implements MqttConnector {
  readonly #inner: MqttConnector;
  readonly #devices: Map<string, DeviceRecord>;
  readonly #countRoundTrips: boolean;

  constructor(inner: MqttConnector, devices: Map<string, DeviceRecord>, countRoundTrips: boolean) {
    this.#inner = inner;
    this.#devices = devices;
    this.#countRoundTrips = countRoundTrips;
  }

  connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession {
    const d = this.#devices.get(options.clientId);
    if (!d) return this.#inner.connect(options, callbacks);
    const dps = options.username.includes("/registrations/");
    const counting = this.#countRoundTrips && d.connectedAt === undefined;
    if (counting) d.connections++;
    // true while the device has written something it has not yet had an answer to
    let waiting = true;
    const heard = () => {
      if (!waiting || d.connectedAt !== undefined) return;
      waiting = false;
      if (dps) d.rtDps++;
      else d.rtHub++;
    };
    const session = this.#inner.connect(options, {
      onConnack: (code, present) => (counting && heard(), callbacks.onConnack(code, present)),
      onSuback: (id, granted) => (counting && heard(), callbacks.onSuback(id, granted)),
      onPuback: (id) => (counting && heard(), callbacks.onPuback(id)),
      onMessage: (topic, payload) => {
        if (counting) heard();
        if (dps) {
          const answer = retryAfterOfTopic(topic);
          if (answer && answer.status >= 300) d.wireRetryAfterMs = answer.retryAfterMs;
          else if (answer) d.wireRetryAfterMs = undefined;
        }
        callbacks.onMessage(topic, payload);
      },
      onClose: (fault) => callbacks.onClose(fault),
    });
    if (!counting) return session;
    return {
      subscribe: (topic, qos) => ((waiting = true), session.subscribe(topic, qos)),
      publish: (topic, payload, qos) => ((waiting = true), session.publish(topic, payload, qos)),
      close: () => session.close(),
    };
  }
}

/**
 * At most `limit` sessions between connect() and CONNACK (or their end) at once; the others wait
 * their turn, first come first served. On one machine a fleet's TLS handshakes share a core or
 * two: thousands started together are served together, slowly, and none finishes until nearly all
 * do; taken in turn, each is done in about the time it needs. The wait counts in the device's time
 * to connected and against its connect timeout, as a slow network's would.
 *
 * A session still waiting its turn keeps the SUBSCRIBE and PUBLISH calls it gets (the pipelined
 * register) and writes them, in order, once it is connected; such a PUBLISH returns packet id 0
 * (the runtime uses packet ids only on an open hub session).
 */
export class ConnectGate implements MqttConnector {
  readonly #inner: MqttConnector;
  readonly #limit: number;
  #active = 0;
  #queue: (() => void)[] = [];
  #head = 0;

  constructor(inner: MqttConnector, limit: number) {
    this.#inner = inner;
    this.#limit = limit;
  }

  #next(): void {
    while (this.#active < this.#limit && this.#head < this.#queue.length) {
      const open = this.#queue[this.#head];
      this.#queue[this.#head++] = noop;
      open();
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession {
    let session: MqttSession | undefined;
    let closed = false;
    let holding = false;
    let pending: ((s: MqttSession) => void)[] | undefined;
    const release = () => {
      if (!holding) return;
      holding = false;
      this.#active--;
      this.#next();
    };
    const open = () => {
      if (closed) return;
      holding = true;
      this.#active++;
      session = this.#inner.connect(options, {
        onConnack: (code, present) => (release(), callbacks.onConnack(code, present)),
        onSuback: (id, granted) => callbacks.onSuback(id, granted),
        onMessage: (topic, payload) => callbacks.onMessage(topic, payload),
        onPuback: (id) => callbacks.onPuback(id),
        onClose: (fault) => (release(), callbacks.onClose(fault)),
      });
      if (pending) for (const op of pending) op(session);
      pending = undefined;
    };
    if (this.#active < this.#limit && this.#head === this.#queue.length) open();
    else this.#queue.push(open);
    return {
      subscribe: (topic, qos) => {
        if (session) return session.subscribe(topic, qos);
        if (!closed) (pending ??= []).push((s) => s.subscribe(topic, qos));
        return 0;
      },
      publish: (topic, payload, qos) => {
        if (session) return session.publish(topic, payload, qos);
        if (!closed) (pending ??= []).push((s) => s.publish(topic, payload, qos));
        return 0;
      },
      close: () => {
        if (closed) return;
        closed = true;
        pending = undefined;
        session?.close();
        release();
      },
    };
  }
}

const noop = () => {};

/** Runs the fleet and summarises it (runFleetRaw, then summarizeFleet). */
export async function runFleet(options: FleetOptions): Promise<FleetSummary> {
  return summarizeFleet(await runFleetRaw(options));
}

/** Runs the fleet; returns what it saw, in a form that shards of one fleet can merge (mergeFleetRaw). */
export async function runFleetRaw(options: FleetOptions): Promise<FleetRaw> {
  const start = Date.now();
  const messages = options.messages ?? 1;
  const random = options.random ?? mathRandom;
  const statusCodes: Record<string, number> = {};
  const hubStates: Record<string, number> = {};
  const retryCauses: Record<string, number> = {};
  const devices: DeviceRecord[] = [];
  const byId = new Map<string, DeviceRecord>();
  const timers: NodeJS.Timeout[] = [];
  const marks: { name: string; at: number }[] = [];
  const retryDue: number[] = [];
  const retryDelays: number[] = [];
  const hubRetryDue: number[] = [];
  const hubDelays: number[] = [];
  let retryAfterMargin = Number.POSITIVE_INFINITY;
  let scheduleMargin = Number.POSITIVE_INFINITY;
  let withRetryAfter = 0;
  let hubMinGap = Number.POSITIVE_INFINITY;
  let reRegistrations = 0;
  let reprovisionOutcomes = 0;
  let booted = 0;
  let connectedNow = 0;
  let everConnected = 0;
  let settledCount = 0;
  let failedCount = 0;
  let resolveSettled!: () => void;
  const settled = new Promise<void>((resolve) => (resolveSettled = resolve));
  const count = (table: Record<string, number>, key: string) => (table[key] = (table[key] ?? 0) + 1);
  const inner = options.maxConnecting ? new ConnectGate(options.transport.connector, options.maxConnecting) : options.transport.connector;
  const connector = new ObservedConnector(inner, byId, options.countRoundTrips ?? false);
  const holding = options.hold !== undefined;

  const settle = (d: DeviceRecord) => {
    if (d.settled) return;
    d.settled = true;
    settledCount++;
    if (!holding) d.runtime?.stop();
    if (settledCount === options.count) resolveSettled();
  };

  const onDps = (d: DeviceRecord, s: Extract<RuntimeEvent, { source: "dps" }>["status"], now: number) => {
    if (s.httpStatus !== undefined && (s.state === "assigning" || s.state === "retrying" || s.state === "failed" || s.state === "fallback")) count(statusCodes, String(s.httpStatus));
    if (s.state === "assigned") count(statusCodes, "200");
    if (s.connack !== undefined) count(statusCodes, `connack-${s.connack}`);
    if (s.fault !== undefined) count(statusCodes, `fault-${s.fault}`);
    d.attempts = Math.max(d.attempts, s.attempt);
    if (s.state === "connecting" && s.attempt === 0 && d.connectedAt !== undefined) reRegistrations++;
    if (s.state === "registering") {
      d.registers++;
      d.registerTimes.push(now);
    }
    if (s.state === "retrying" && s.delayMs !== undefined) {
      count(retryCauses, s.httpStatus !== undefined ? String(s.httpStatus) : s.connack !== undefined ? `connack-${s.connack}` : `fault-${s.fault ?? "?"}`);
      retryDue.push(now + s.delayMs);
      retryDelays.push(s.delayMs);
      d.pendingRetry = { at: now, delayMs: s.delayMs, retryAfterMs: s.httpStatus !== undefined ? d.wireRetryAfterMs : undefined };
    } else if (d.pendingRetry && (s.state === "connecting" || s.state === "registering" || s.state === "polling" || s.state === "looking-up")) {
      const waited = now - d.pendingRetry.at;
      scheduleMargin = Math.min(scheduleMargin, waited - d.pendingRetry.delayMs);
      if (d.pendingRetry.retryAfterMs !== undefined) {
        withRetryAfter++;
        retryAfterMargin = Math.min(retryAfterMargin, waited - d.pendingRetry.retryAfterMs);
      }
      d.pendingRetry = undefined;
    }
  };

  const onHub = (d: DeviceRecord, s: Extract<RuntimeEvent, { source: "hub" }>["status"], now: number) => {
    count(hubStates, s.state);
    if (s.state === "connecting") {
      if (d.hubLossSeen && d.lastHubAttemptAt !== undefined) hubMinGap = Math.min(hubMinGap, now - d.lastHubAttemptAt);
      d.lastHubAttemptAt = now;
    } else if (s.state === "retrying") {
      d.hubLossSeen = true;
      if (d.lostHubAt === undefined) d.lostHubAt = now;
      if (s.delayMs !== undefined) {
        hubRetryDue.push(now + s.delayMs);
        hubDelays.push(s.delayMs);
      }
    } else if (s.state === "refused") {
      reprovisionOutcomes++;
      d.hubLossSeen = false;
      d.lastHubAttemptAt = undefined;
    } else if (s.state === "connected") {
      d.hubLossSeen = false;
    }
    if (d.isConnected && s.state !== "connected") {
      d.isConnected = false;
      connectedNow--;
    }
  };

  for (let i = 0; i < options.count; i++) {
    const config = options.configFor(i);
    const d: DeviceRecord = {
      index: i,
      registrationId: config.registrationId,
      isConnected: false,
      attempts: 0,
      registers: 0,
      registerTimes: [],
      down: false,
      everDown: false,
      acked: 0,
      settled: false,
      fromCache: false,
      hubLossSeen: false,
      rtDps: 0,
      rtHub: 0,
      connections: 0,
    };
    devices.push(d);
    byId.set(config.registrationId, d);
    const boot = () => {
      if (d.settled) return;
      d.bootedAt = Date.now();
      booted++;
      const flashOption = options.flashFor?.(i);
      const flash =
        typeof flashOption === "string" ? new NorFlashFile({ path: flashOption, ...DESKTOP_FLASH_GEOMETRY }) : (flashOption ?? new MemoryFlash(DESKTOP_FLASH_GEOMETRY));
      const listener = (event: RuntimeEvent) => {
        const now = Date.now();
        options.onEvent?.(i, d.registrationId, event);
        switch (event.source) {
          case "dps":
            onDps(d, event.status, now);
            break;
          case "hub":
            onHub(d, event.status, now);
            break;
          case "assignment":
            if (event.assignment.source === "cache") d.fromCache = true;
            break;
          case "runtime":
            if (event.state === "connected") {
              if (!d.isConnected) {
                d.isConnected = true;
                connectedNow++;
              }
              d.lastConnectedAt = now;
              d.lostHubAt = undefined;
              if (d.down) {
                // Back from the long tail (a hub that refused it accepts it again): no longer failed.
                d.down = false;
                d.failure = undefined;
                failedCount--;
              }
              if (d.connectedAt === undefined) {
                d.connectedAt = now;
                everConnected++;
                for (let m = 0; m < messages; m++) {
                  try {
                    d.runtime!.send({ device: d.registrationId, seq: m });
                  } catch (error) {
                    d.failure = { code: (error as { code?: string }).code ?? "ERROR", message: (error as Error).message };
                  }
                }
                if (messages === 0) settle(d);
              }
            } else if (event.state === "failed" || event.state === "backing-off") {
              // Final, or in the long tail (the next try is minutes away): either way settled for this run.
              if (d.isConnected) {
                d.isConnected = false;
                connectedNow--;
              }
              d.failure = event.error ?? { code: "FAILED", message: "failed" };
              if (!d.down) {
                d.down = true;
                d.everDown = true;
                failedCount++;
              }
              settle(d);
            }
            break;
          case "telemetry":
            if (event.state !== "sent") break;
            d.acked++;
            if (d.acked >= messages) settle(d);
            break;
        }
      };
      d.runtime = new DeviceRuntime(
        config,
        { mqtt: connector, https: options.transport.https, timers: nodeTimers, clock: systemClock, random, secureRandom, crypto: nodeCrypto, flash },
        listener,
        options.featuresFor?.(i),
      );
      d.runtime.start();
    };
    const delay = options.bootDelayFor ? options.bootDelayFor(i) : options.staggerMs ? random() * options.staggerMs : 0;
    if (delay > 0) timers.push(setTimeout(boot, delay));
    else boot();
  }

  const progressNow = (): FleetProgress => ({
    elapsedMs: Date.now() - start,
    booted,
    connected: connectedNow,
    everConnected,
    done: settledCount,
    failed: failedCount,
    total: options.count,
  });
  const progress = options.onProgress ? setInterval(() => options.onProgress!(progressNow()), options.progressMs ?? 1000) : undefined;
  if (options.count === 0) resolveSettled();
  let timeout: NodeJS.Timeout | undefined;
  const timedOutPromise = new Promise<void>((resolve) => (timeout = setTimeout(resolve, options.timeoutMs ?? 120_000)));
  const settledOrTimeout = Promise.race([settled, timedOutPromise]);
  if (options.hold) {
    const control: FleetControl = {
      settled: settledOrTimeout,
      progress: progressNow,
      connectedNow: () => connectedNow,
      registrationIds: devices.map((d) => d.registrationId),
      mark: (name) => marks.push({ name, at: Date.now() }),
    };
    await Promise.race([options.hold(control), timedOutPromise]);
  } else {
    await settledOrTimeout;
  }
  clearTimeout(timeout);
  if (progress) clearInterval(progress);
  for (const t of timers) clearTimeout(t);
  const end = Date.now();

  const timedOut: string[] = [];
  for (const d of devices) if (!d.settled) timedOut.push(d.registrationId);
  const connectedAtEnd = connectedNow;
  for (const d of devices) d.runtime?.stop();

  const reached = devices.filter((d) => d.connectedAt !== undefined);
  const recoveries: Record<string, number[]> = {};
  for (const m of marks) {
    recoveries[m.name] = devices.filter((d) => d.lastConnectedAt !== undefined && d.lastConnectedAt >= m.at && d.connectedAt! < m.at).map((d) => d.lastConnectedAt! - m.at);
  }
  const windows: FleetRaw["windows"][number][] = [];
  for (let m = 0; m < marks.length; m++) {
    const from = marks[m];
    const to = marks[m + 1] ?? { name: "the end", at: end };
    windows.push({ from: from.name, to: to.name, ms: to.at - from.at, perDevice: devices.map((d) => d.registerTimes.filter((t) => t >= from.at && t < to.at).length) });
  }
  return {
    total: options.count,
    messages,
    startedAt: start,
    endedAt: end,
    connectedAtEnd,
    delivered: devices.filter((d) => d.acked >= messages && d.connectedAt !== undefined).length,
    everBackedOff: devices.filter((d) => d.everDown).length,
    fromCache: devices.filter((d) => d.fromCache).length,
    failed: devices.filter((d) => d.failure).map((d) => ({ registrationId: d.registrationId, code: d.failure!.code, message: d.failure!.message })),
    timedOut,
    timeToConnectedMs: reached.map((d) => d.connectedAt! - d.bootedAt!),
    dpsAttempts: devices.map((d) => d.attempts),
    registers: devices.map((d) => d.registers),
    statusCodes,
    hubStates,
    retries: {
      due: retryDue,
      delays: retryDelays,
      causes: retryCauses,
      withRetryAfter,
      retryAfterMarginMs: withRetryAfter ? retryAfterMargin : undefined,
      scheduleMarginMs: Number.isFinite(scheduleMargin) ? scheduleMargin : undefined,
    },
    hub: { due: hubRetryDue, delays: hubDelays, minGapMs: Number.isFinite(hubMinGap) ? hubMinGap : undefined, reRegistrations, reprovisionOutcomes },
    marks,
    recoveries,
    windows,
    roundTrips: options.countRoundTrips && reached.length ? { dps: reached.map((d) => d.rtDps), hub: reached.map((d) => d.rtHub), connections: reached.map((d) => d.connections) } : undefined,
  };
}

/**
 * Everything a fleet run saw, per device and per event, before it is summarised: lists of values
 * (so that percentiles of merged shards are exact: they are the percentiles of the union), counters
 * (added), smallest margins (the smaller wins), and times since the epoch (so that "due in one
 * 100 ms window" holds across processes whose clocks agree). A shard's JSON report carries it.
 */
export interface FleetRaw {
  /** Devices run. */
  readonly total: number;
  readonly messages: number;
  /** Date.now() at the start and at the end of the run. */
  readonly startedAt: number;
  readonly endedAt: number;
  readonly connectedAtEnd: number;
  readonly delivered: number;
  readonly everBackedOff: number;
  readonly fromCache: number;
  readonly failed: readonly { readonly registrationId: string; readonly code: string; readonly message: string }[];
  readonly timedOut: readonly string[];
  /** Per device that connected: boot to first hub connection. */
  readonly timeToConnectedMs: readonly number[];
  /** Per device: DPS retries, register requests. */
  readonly dpsAttempts: readonly number[];
  readonly registers: readonly number[];
  readonly statusCodes: Record<string, number>;
  readonly hubStates: Record<string, number>;
  readonly retries: {
    /** When each DPS retry fell due (ms since the epoch), and its scheduled delay. */
    readonly due: readonly number[];
    readonly delays: readonly number[];
    readonly causes: Record<string, number>;
    readonly withRetryAfter: number;
    readonly retryAfterMarginMs?: number;
    readonly scheduleMarginMs?: number;
  };
  readonly hub: {
    readonly due: readonly number[];
    readonly delays: readonly number[];
    readonly minGapMs?: number;
    readonly reRegistrations: number;
    readonly reprovisionOutcomes: number;
  };
  /** The timeline's marks (ms since the epoch). */
  readonly marks: readonly { readonly name: string; readonly at: number }[];
  /** Per mark: for each device that had lost its hub, how long after the mark it was connected again. */
  readonly recoveries: Record<string, readonly number[]>;
  /** From each mark to the next (the last: to "the end"): the window's length and each device's DPS registrations in it. */
  readonly windows: readonly { readonly from: string; readonly to: string; readonly ms: number; readonly perDevice: readonly number[] }[];
  readonly roundTrips?: { readonly dps: readonly number[]; readonly hub: readonly number[]; readonly connections: readonly number[] };
}

const tally = (values: readonly number[]): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const n of values) out[String(n)] = (out[String(n)] ?? 0) + 1;
  return out;
};
const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);

/** The summary of a run (or of merged shards): percentiles, peaks, grouped reasons. */
export function summarizeFleet(raw: FleetRaw): FleetSummary {
  const terminalReasons: Record<string, number> = {};
  // Tracking ids and operation ids make every message unique: group by the rest.
  for (const f of raw.failed) {
    const key = `${f.code}: ${f.message.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, "<id>")}`;
    terminalReasons[key] = (terminalReasons[key] ?? 0) + 1;
  }
  const recoveries: FleetSummary["recoveries"] = {};
  for (const [name, after] of Object.entries(raw.recoveries)) recoveries[name] = { devices: after.length, afterMs: after.length ? percentiles(after) : undefined };
  return {
    total: raw.total,
    connected: raw.timeToConnectedMs.length,
    connectedAtEnd: raw.connectedAtEnd,
    delivered: raw.delivered,
    failed: [...raw.failed],
    everBackedOff: raw.everBackedOff,
    terminalReasons,
    timedOut: [...raw.timedOut],
    timeToConnectedMs: raw.timeToConnectedMs.length ? percentiles(raw.timeToConnectedMs) : undefined,
    dpsAttempts: percentiles(raw.dpsAttempts),
    registers: percentiles(raw.registers),
    statusCodes: { ...raw.statusCodes },
    hubStates: { ...raw.hubStates },
    fromCache: raw.fromCache,
    retries: {
      count: raw.retries.due.length,
      causes: { ...raw.retries.causes },
      delayMs: raw.retries.delays.length ? percentiles(raw.retries.delays) : undefined,
      withRetryAfter: raw.retries.withRetryAfter,
      retryAfterMarginMs: raw.retries.retryAfterMarginMs,
      scheduleMarginMs: raw.retries.scheduleMarginMs,
      peakPer100ms: peakInWindow(raw.retries.due, 100),
      distinctShare: distinctShare(raw.retries.due),
    },
    hub: {
      retries: raw.hub.delays.length,
      minGapMs: raw.hub.minGapMs,
      delayMs: raw.hub.delays.length ? percentiles(raw.hub.delays) : undefined,
      peakPer100ms: peakInWindow(raw.hub.due, 100),
      reRegistrations: raw.hub.reRegistrations,
      reprovisionOutcomes: raw.hub.reprovisionOutcomes,
    },
    recoveries,
    windows: raw.windows.map((w) => ({ from: w.from, to: w.to, ms: w.ms, registrations: { total: sum(w.perDevice), perDevice: percentiles(w.perDevice), distribution: tally(w.perDevice) } })),
    roundTrips: raw.roundTrips ? { dps: percentiles(raw.roundTrips.dps), hub: percentiles(raw.roundTrips.hub), connections: percentiles(raw.roundTrips.connections) } : undefined,
    elapsedMs: raw.endedAt - raw.startedAt,
  };
}

function addCounts(into: Record<string, number>, from: Record<string, number>): Record<string, number> {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  return into;
}

function smallest(values: readonly (number | undefined)[]): number | undefined {
  const defined = values.filter((v): v is number => v !== undefined);
  return defined.length ? Math.min(...defined) : undefined;
}

/**
 * The runs of several shards of one fleet as one: lists joined, counters added, the smallest
 * margins and gaps kept, the run from the first start to the last end. Windows and recoveries are
 * joined by mark; a window's length is the shortest any shard measured (each shard marks the
 * moment on its own clock), so a bound computed from it is the strictest.
 */
export function mergeFleetRaw(raws: readonly FleetRaw[]): FleetRaw {
  if (raws.length === 0) throw new Error("nothing to merge");
  if (raws.length === 1) return raws[0];
  const concat = <T>(pick: (r: FleetRaw) => readonly T[]): T[] => raws.flatMap((r) => pick(r));
  const windows = raws[0].windows.map((w, i) => {
    const same = raws.map((r) => (r.windows[i]?.from === w.from && r.windows[i]?.to === w.to ? r.windows[i] : r.windows.find((x) => x.from === w.from && x.to === w.to)));
    return { from: w.from, to: w.to, ms: Math.min(...same.map((x) => x?.ms ?? w.ms)), perDevice: same.flatMap((x) => x?.perDevice ?? []) };
  });
  const recoveries: Record<string, number[]> = {};
  for (const r of raws) for (const [name, after] of Object.entries(r.recoveries)) (recoveries[name] ??= []).push(...after);
  const withRoundTrips = raws.filter((r) => r.roundTrips);
  return {
    total: sum(raws.map((r) => r.total)),
    messages: raws[0].messages,
    startedAt: Math.min(...raws.map((r) => r.startedAt)),
    endedAt: Math.max(...raws.map((r) => r.endedAt)),
    connectedAtEnd: sum(raws.map((r) => r.connectedAtEnd)),
    delivered: sum(raws.map((r) => r.delivered)),
    everBackedOff: sum(raws.map((r) => r.everBackedOff)),
    fromCache: sum(raws.map((r) => r.fromCache)),
    failed: concat((r) => r.failed),
    timedOut: concat((r) => r.timedOut),
    timeToConnectedMs: concat((r) => r.timeToConnectedMs),
    dpsAttempts: concat((r) => r.dpsAttempts),
    registers: concat((r) => r.registers),
    statusCodes: raws.reduce((acc, r) => addCounts(acc, r.statusCodes), {} as Record<string, number>),
    hubStates: raws.reduce((acc, r) => addCounts(acc, r.hubStates), {} as Record<string, number>),
    retries: {
      due: concat((r) => r.retries.due),
      delays: concat((r) => r.retries.delays),
      causes: raws.reduce((acc, r) => addCounts(acc, r.retries.causes), {} as Record<string, number>),
      withRetryAfter: sum(raws.map((r) => r.retries.withRetryAfter)),
      retryAfterMarginMs: smallest(raws.map((r) => r.retries.retryAfterMarginMs)),
      scheduleMarginMs: smallest(raws.map((r) => r.retries.scheduleMarginMs)),
    },
    hub: {
      due: concat((r) => r.hub.due),
      delays: concat((r) => r.hub.delays),
      minGapMs: smallest(raws.map((r) => r.hub.minGapMs)),
      reRegistrations: sum(raws.map((r) => r.hub.reRegistrations)),
      reprovisionOutcomes: sum(raws.map((r) => r.hub.reprovisionOutcomes)),
    },
    marks: raws[0].marks,
    recoveries,
    windows,
    roundTrips: withRoundTrips.length
      ? { dps: withRoundTrips.flatMap((r) => r.roundTrips!.dps), hub: withRoundTrips.flatMap((r) => r.roundTrips!.hub), connections: withRoundTrips.flatMap((r) => r.roundTrips!.connections) }
      : undefined,
  };
}

const p = (x?: Percentiles, unit = " ms") => (x ? `min ${x.min}${unit}, median ${x.median}${unit}, p99 ${x.p99}${unit}, max ${x.max}${unit}` : "n/a");

/** The summary as a few readable lines. */
export function formatSummary(s: FleetSummary): string {
  const r = s.retries;
  const h = s.hub;
  const lines = [
    `fleet: ${s.connected}/${s.total} connected (${s.connectedAtEnd} at the end), ${s.delivered} delivered all telemetry, ${s.failed.length} failed or backing off (${s.everBackedOff} at some point), ${s.timedOut.length} timed out, ${s.fromCache} warm starts, in ${(s.elapsedMs / 1000).toFixed(1)} s`,
    `time to connected: ${p(s.timeToConnectedMs)}`,
    `DPS retries per device: ${p(s.dpsAttempts, "")}; register requests per device: ${p(s.registers, "")}`,
    `DPS answers and faults: ${Object.entries(s.statusCodes).sort().map(([k, v]) => `${k}×${v}`).join(", ") || "none"}`,
  ];
  if (r.count > 0) {
    lines.push(
      `DPS retries: ${r.count} (${Object.entries(r.causes).sort().map(([k, v]) => `${k}×${v}`).join(", ")}), delays ${p(r.delayMs)}`,
      `  no lockstep: at most ${r.peakPer100ms} retries due in any 100 ms (${((100 * r.peakPer100ms) / r.count).toFixed(1)}% of them); ${(100 * r.distinctShare).toFixed(1)}% at a millisecond of their own`,
      `  backoff respected: ${r.withRetryAfter} retries after a retry-after, ${r.retryAfterMarginMs !== undefined ? `the earliest ${r.retryAfterMarginMs} ms after it was due` : "n/a"}; every retry ≥ ${r.scheduleMarginMs ?? "n/a"} ms after its scheduled delay`,
    );
  }
  if (h.retries > 0 || h.reRegistrations > 0) {
    lines.push(
      `hub: ${h.retries} reconnects scheduled, delays ${p(h.delayMs)}, at most ${h.peakPer100ms} due in any 100 ms; attempts of one device ≥ ${h.minGapMs ?? "n/a"} ms apart`,
      `  re-registrations with DPS after connecting: ${h.reRegistrations} (after ${h.reprovisionOutcomes} hub refusals that call for it)`,
    );
  }
  for (const w of s.windows) {
    const r = w.registrations;
    const spread = Object.entries(r.distribution).sort((a, b) => Number(a[0]) - Number(b[0])).map(([n, devices]) => `${n}×${devices}`).join(", ");
    lines.push(`from ${w.from} to ${w.to} (${(w.ms / 60_000).toFixed(1)} min): ${r.total} DPS registrations, per device ${p(r.perDevice, "")}; registrations×devices ${spread}`);
  }
  for (const [name, rec] of Object.entries(s.recoveries)) lines.push(`after ${name}: ${rec.devices} devices connected again, ${p(rec.afterMs)}`);
  if (s.roundTrips) lines.push(`MQTT round trips to connected: DPS ${p(s.roundTrips.dps, "")}; hub ${p(s.roundTrips.hub, "")}; connections ${p(s.roundTrips.connections, "")}`);
  for (const [reason, n] of Object.entries(s.terminalReasons)) lines.push(`  ${n} device(s) ended with ${reason}`);
  if (s.timedOut.length) lines.push(`  timed out: ${s.timedOut.slice(0, 5).join(", ")}${s.timedOut.length > 5 ? ", …" : ""}`);
  return lines.join("\n");
}
