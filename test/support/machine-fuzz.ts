/**
 * Random event sequences for the three machines (RegistrationMachine, HubSession,
 * LifecycleMachine) and for the DeviceRuntime driver on fuzzing ports, with the invariants the
 * issue names checked after every step. Portable: no host API, so the Node tests, `npm run fuzz`
 * and the XS tier (test/xs/fuzz.xs.ts) run this same file.
 *
 * Each sequence is a small world on a virtual clock: a cloud that answers the machine's commands
 * (CONNACK codes 0..255, SUBACKs, DPS answers realistic, from the corpus and mutated, PUBACKs for
 * the right and for random tags, closes with every TransportFault kind, silence), a cache, a
 * status lookup, and an application that sends, stops and re-provisions at random. Only events a
 * host may legitimately deliver are generated: a timer only when one is armed, link events for the
 * open link (and, where the machine documents that it ignores them, for links already closed),
 * cache results only after a cache command, lookup answers only after a lookup command and never
 * after its cancel-lookup. World delays are random and often 0, so the clock also stands still.
 *
 * After EVERY step (`InvariantChecker`):
 *   exception    nothing thrown but a documented UsageError of an app call that really is illegal
 *   second-link  no `connect` while a link is open (connect → open; close or closed → not open)
 *   closed-link  no subscribe/publish without an open link (lifecycle: on a link that is not the open one)
 *   timer-loop   no `set-timer 0` more than `zeroTimers` (3) times in a row at one instant
 *   livelock     no more than `eventsPerInstant` (200) events handled at one instant
 *   stuck        a timer armed, or an answer owed by the world, or a final state
 *   bad-timer    a set-timer delay is a finite number ≥ 0
 *   stale        (lifecycle) an event on a closed link gives no command at all
 *   after-done   (registration) nothing after `done`; (all) every telemetry tag reported at most once
 *
 * Every sequence draws from its own generator, seeded from (seed, index): `registrationSequence`,
 * `hubSequence`, `lifecycleSequence` and `driverSequence` rebuild any reported failure, with the
 * last steps in `trace`.
 */
import type { CryptoPort } from "../../modules/crypto.js";
import { CredentialCache } from "../../modules/credential-cache.js";
import { DpsError, PeerError, excerpt } from "../../modules/errors.js";
import { utf8Encode } from "../../modules/encoding.js";
import type { FlashPort } from "../../modules/flash.js";
import { HubSession, type HubCommand, type HubEvent, type HubSessionConfig } from "../../modules/hub-session.js";
import { deviceKeyOf, LifecycleMachine, type LifecycleCommand, type LifecycleEvent, type RuntimeConfig } from "../../modules/lifecycle.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import type {
  HttpsPort,
  HttpsRequest,
  HttpsResponse,
  MqttConnectOptions,
  MqttConnector,
  MqttSession,
  MqttSessionCallbacks,
  TimerPort,
  TransportFault,
  TransportFaultKind,
} from "../../modules/ports.js";
import { RegistrationMachine, type RegistrationCommand, type RegistrationConfig, type RegistrationEvent } from "../../modules/registration.js";
import { retryPolicy, type RetryPolicyOverrides } from "../../modules/retry-policy.js";
import { DeviceRuntime, type RuntimeEvent } from "../../modules/runtime.js";
import { portableCrypto } from "../../modules/sha256.js";
import { corpus, describeError, mutateAnswer, runRandom, type Random } from "./fuzz.js";
import { baseConfig, T0 } from "./transcript.js";

// ---------------------------------------------------------------------------------------------
// Small random helpers

export const pick = <T>(r: Random, list: readonly T[]): T => list[Math.floor(r() * list.length)];
export const int = (r: Random, below: number): number => Math.floor(r() * below);

/** How fast the world answers: `instant` (a loopback peer: every delay 0), `fast`, `mixed` (up to minutes). */
export type Pace = "instant" | "fast" | "mixed";

export function drawPace(r: Random): Pace {
  const x = r();
  return x < 0.2 ? "instant" : x < 0.5 ? "fast" : "mixed";
}

/** A world delay: 0 often, milliseconds usually, past the machines' timeouts sometimes. */
export function drawDelay(r: Random, pace: Pace): number {
  if (pace === "instant") return 0;
  const x = r();
  if (x < 0.3) return 0;
  if (pace === "fast" || x < 0.8) return 1 + int(r, 200);
  if (x < 0.95) return 200 + int(r, 10_000);
  return 10_000 + int(r, 120_000);
}

export const FAULT_KINDS: readonly TransportFaultKind[] = ["dns", "refused", "tls", "closed", "protocol", "oversize", "timeout"];
const FAULT_MESSAGES: readonly string[] = ["injected", "", "ECONNRESET: read ECONNRESET", "x".repeat(400), "\u0000é😀"];

export function drawFault(r: Random): TransportFault {
  return { kind: pick(r, FAULT_KINDS), message: pick(r, FAULT_MESSAGES) };
}

/** 0 mostly, the refusals 1..5, and codes MQTT 3.1.1 does not define (6..255). */
export function drawConnack(r: Random): number {
  const x = r();
  return x < 0.72 ? 0 : x < 0.93 ? 1 + int(r, 5) : 6 + int(r, 250);
}

const GRANTS: readonly (readonly number[])[] = [[0], [2], [0x80], [], [1, 1], [3], [255], [1, 0x80]];

export function drawGranted(r: Random): number[] {
  return r() < 0.85 ? [1] : pick(r, GRANTS).slice();
}

// ---------------------------------------------------------------------------------------------
// The cloud: what DPS, the hub and the status lookup answer

export const FUZZ_HUB = "hub-1.azure-devices.net";
export const FUZZ_DEVICE = "dev-001";
export const FUZZ_KEY = "cGFzc3dvcmQ=";

export type Reaction =
  | { readonly kind: "connack"; readonly code: number; readonly delay: number }
  | { readonly kind: "suback"; readonly id: number; readonly granted: readonly number[]; readonly delay: number }
  | { readonly kind: "message"; readonly topic: string; readonly payload: Uint8Array; readonly delay: number; readonly label: string }
  | { readonly kind: "puback"; readonly id: number; readonly delay: number }
  | { readonly kind: "close"; readonly fault: TransportFault; readonly delay: number };

export type LookupReply = { readonly response: HttpsResponse; readonly label: string } | { readonly fault: TransportFault } | undefined;

function assignedState(r: Random): Record<string, unknown> {
  const x = r();
  const hub = x < 0.85 ? FUZZ_HUB : x < 0.95 ? "hub-2.azure-devices.net" : pick(r, ["bad hub!", "", "h".repeat(300), "hub:8883"]);
  const deviceId = r() < 0.97 ? FUZZ_DEVICE : pick(r, ["bad#id", "", "a+b"]);
  return { registrationId: FUZZ_DEVICE, assignedHub: hub, deviceId, status: "assigned", substatus: "initialAssignment" };
}

const RETRY_AFTERS: readonly (string | undefined)[] = ["1", "1", "2", "3", "0", undefined, "", "soon", "1.5", "86400"];

/**
 * Generates the cloud's answers. One instance per sequence; it draws from the sequence's
 * generator, so a sequence is rebuilt from (seed, index).
 */
export class FuzzCloud {
  readonly #r: Random;
  readonly pace: Pace;
  #operations = 0;

  constructor(r: Random, pace: Pace) {
    this.#r = r;
    this.pace = pace;
  }

  delay(): number {
    return drawDelay(this.#r, this.pace);
  }

  /** After CONNECT: a CONNACK (then, after a refusal, often a close), a close, or silence (empty). */
  connect(): Reaction[] {
    const r = this.#r;
    const x = r();
    if (x < 0.82) {
      const code = drawConnack(r);
      const out: Reaction[] = [{ kind: "connack", code, delay: this.delay() }];
      if (code !== 0 && r() < 0.5) out.push({ kind: "close", fault: { kind: "closed", message: "the broker closed after refusing" }, delay: this.delay() });
      return out;
    }
    if (x < 0.93) return [{ kind: "close", fault: drawFault(r), delay: this.delay() }];
    return [];
  }

  subscribe(id: number): Reaction[] {
    const r = this.#r;
    const x = r();
    if (x < 0.9) return [{ kind: "suback", id, granted: drawGranted(r), delay: this.delay() }];
    if (x < 0.95) return [{ kind: "close", fault: drawFault(r), delay: this.delay() }];
    return [];
  }

  /** A DPS register or poll: realistic, from the corpus, mutated, for another `$rid`, or nothing. */
  dps(topic: string): Reaction[] {
    const r = this.#r;
    const match = /\$rid=([^&]*)/.exec(topic);
    const rid = match ? match[1] : "1";
    const poll = topic.indexOf("iotdps-get-operationstatus") >= 0;
    const x = r();
    const delay = this.delay();
    if (x < 0.05) return [];
    if (x < 0.09) return [{ kind: "close", fault: drawFault(r), delay }];
    if (x < 0.55 || x >= 0.95) {
      const answerRid = x >= 0.95 ? pick(r, [String(Number(rid) + 1), "0", "x", rid + rid]) : rid;
      if (poll ? r() < 0.7 : r() < 0.15) {
        const body = JSON.stringify({ operationId: `4.op${this.#operations}`, status: "assigned", registrationState: assignedState(r) });
        return [{ kind: "message", topic: `$dps/registrations/res/200/?$rid=${answerRid}`, payload: utf8Encode(body), delay, label: `200 assigned rid ${answerRid}` }];
      }
      const retry = pick(r, RETRY_AFTERS);
      const op = poll && r() < 0.9 ? `4.op${this.#operations}` : `4.op${++this.#operations}`;
      const body = JSON.stringify({ operationId: op, status: "assigning" });
      return [{ kind: "message", topic: `$dps/registrations/res/202/?$rid=${answerRid}${retry === undefined ? "" : `&retry-after=${retry}`}`, payload: utf8Encode(body), delay, label: `202 rid ${answerRid} retry-after ${retry}` }];
    }
    if (x < 0.7) {
      const entry = pick(r, corpus);
      const topic = `$dps/registrations/res/${entry.status}/?$rid=${rid}${entry.retryAfter !== undefined ? `&retry-after=${entry.retryAfter}` : ""}`;
      return [{ kind: "message", topic, payload: utf8Encode(entry.body), delay, label: `corpus ${entry.name}` }];
    }
    const m = mutateAnswer(r, rid);
    return [{ kind: "message", topic: m.topic, payload: m.payload, delay, label: `mutated ${excerpt(m.name, 60)}` }];
  }

  /** A hub telemetry PUBLISH: its PUBACK (mostly), one for another id, twice, nothing, or a close. */
  hub(id: number): Reaction[] {
    const r = this.#r;
    const x = r();
    const delay = this.delay();
    if (x < 0.8) return [{ kind: "puback", id, delay }];
    if (x < 0.85) return [{ kind: "puback", id: pick(r, [id + 1, id - 1, 0, 65535, 1 + int(r, 70000)]), delay }];
    if (x < 0.9) return [{ kind: "puback", id, delay }, { kind: "puback", id, delay: this.delay() }];
    if (x < 0.95) return [{ kind: "close", fault: drawFault(r), delay }];
    return [];
  }

  /** Something the peer does on its own: a message (C2D, a stray DPS answer), a PUBACK, a drop. */
  noise(isDps: boolean): Reaction {
    const r = this.#r;
    const x = r();
    const delay = this.delay();
    if (x < 0.4) {
      const m = mutateAnswer(r, pick(r, ["1", "2", "3", "9"]));
      return { kind: "message", topic: m.topic, payload: m.payload, delay, label: `stray ${excerpt(m.name, 40)}` };
    }
    if (x < 0.6) {
      const topic = pick(r, [`devices/${FUZZ_DEVICE}/messages/devicebound/%24.to=%2Fdevices&k=v`, `devices/${FUZZ_DEVICE}/messages/devicebound/`, "", "$iothub/twin/res/200/?$rid=1", "é/#"]);
      return { kind: "message", topic, payload: utf8Encode(pick(r, ["{}", "hello", "", "\u0000"])), delay, label: "c2d" };
    }
    if (x < 0.8 && !isDps) return { kind: "puback", id: 1 + int(r, 20), delay };
    return { kind: "close", fault: drawFault(r), delay };
  }

  /** The status lookup: an answer (realistic, from the corpus, mutated), a fault, or nothing. */
  lookup(): LookupReply {
    const r = this.#r;
    const x = r();
    const json = (status: number, body: unknown, headers: Record<string, string> = {}): HttpsResponse => ({ status, headers, body: utf8Encode(JSON.stringify(body)) });
    if (x < 0.3) return { response: json(200, assignedState(r)), label: "200 assigned" };
    if (x < 0.42) return { response: json(404, { errorCode: 404202, message: "not found" }, { "x-ms-error-code": "404202" }), label: "404" };
    if (x < 0.5) return { response: json(pick(r, [500, 503, 429]), { errorCode: 500000 }, { "retry-after": pick(r, ["1", "3", "soon"]) }), label: "5xx" };
    if (x < 0.55) return { response: json(200, { registrationId: FUZZ_DEVICE, status: pick(r, ["assigning", "failed", "disabled", "unassigned"]) }), label: "200 not assigned" };
    if (x < 0.75) {
      const m = mutateAnswer(r);
      return { response: m.lookup, label: `mutated ${excerpt(m.name, 40)}` };
    }
    if (x < 0.88) return { fault: drawFault(r) };
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The invariants

export interface CheckerLimits {
  /** `set-timer 0` commands in a row at one instant before it counts as a loop. */
  readonly zeroTimers: number;
  /** Events handled at one instant before it counts as a livelock. */
  readonly eventsPerInstant: number;
}

export const DEFAULT_LIMITS: CheckerLimits = { zeroTimers: 3, eventsPerInstant: 200 };

/** The shape of a command the checker reads: every machine's commands fit it. */
export interface CheckedCommand {
  readonly kind: string;
  readonly link?: number;
  readonly delayMs?: number;
}

export interface Problem {
  readonly check: string;
  readonly message: string;
}

/**
 * Follows a command stream and the events that close links, and records the first broken
 * invariant. Commands without a `link` (registration, hub) mean the one link of the machine.
 */
export class InvariantChecker {
  readonly limits: CheckerLimits;
  problem: Problem | undefined;
  #open: number[] = [];
  #implicit = 0;
  #timerAt: number | undefined;
  #zeroAt = Number.NaN;
  #zeros = 0;
  #instant = Number.NaN;
  #events = 0;

  constructor(limits: Partial<CheckerLimits> = {}) {
    this.limits = { zeroTimers: limits.zeroTimers ?? DEFAULT_LIMITS.zeroTimers, eventsPerInstant: limits.eventsPerInstant ?? DEFAULT_LIMITS.eventsPerInstant };
  }

  /** The deadline of the armed timer, if any. */
  get timerAt(): number | undefined {
    return this.#timerAt;
  }

  get openLinks(): readonly number[] {
    return this.#open;
  }

  isOpen(link: number): boolean {
    return this.#open.indexOf(link) >= 0;
  }

  fail(check: string, message: string): void {
    if (!this.problem) this.problem = { check, message };
  }

  /** An event is handled at `now`: counts events per instant. */
  event(now: number): void {
    if (now === this.#instant) this.#events++;
    else {
      this.#instant = now;
      this.#events = 1;
    }
    if (this.#events === this.limits.eventsPerInstant + 1) this.fail("livelock", `more than ${this.limits.eventsPerInstant} events handled at one instant`);
  }

  /** The armed timer fires (call before handing the machine its timer event). */
  timerFired(): void {
    this.#timerAt = undefined;
  }

  /** The world closed a link (a `closed` event); no link: the machine's one link. */
  closed(link?: number): void {
    if (link === undefined) this.#open = [];
    else this.#open = this.#open.filter((l) => l !== link);
  }

  /** The commands a machine answered with at `now`. */
  commands(now: number, commands: readonly CheckedCommand[]): void {
    for (let i = 0; i < commands.length; i++) this.command(now, commands[i]);
  }

  command(now: number, c: CheckedCommand): void {
    switch (c.kind) {
      case "connect": {
        const link = c.link ?? ++this.#implicit;
        if (this.#open.length > 0) this.fail("second-link", `connect${c.link !== undefined ? ` #${c.link}` : ""} while link ${this.#open.join(", ")} is open`);
        this.#open.push(link);
        break;
      }
      case "close":
        this.closed(c.link);
        break;
      case "subscribe":
      case "publish":
        if (c.link === undefined ? this.#open.length === 0 : !this.isOpen(c.link)) this.fail("closed-link", `${c.kind}${c.link !== undefined ? ` #${c.link}` : ""} without an open link${c.link !== undefined ? ` (open: ${this.#open.join(", ") || "none"})` : ""}`);
        break;
      case "set-timer": {
        const d = c.delayMs as number;
        if (typeof d !== "number" || !(d >= 0) || d === Number.POSITIVE_INFINITY) {
          this.fail("bad-timer", `set-timer ${d}`);
          break;
        }
        this.#timerAt = now + d;
        if (d === 0) {
          if (this.#zeroAt === now) this.#zeros++;
          else {
            this.#zeroAt = now;
            this.#zeros = 1;
          }
          if (this.#zeros === this.limits.zeroTimers + 1) this.fail("timer-loop", `set-timer 0 ${this.#zeros} times in a row at one instant`);
        } else {
          this.#zeros = 0;
          this.#zeroAt = Number.NaN;
        }
        break;
      }
      case "clear-timer":
        this.#timerAt = undefined;
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reports

export interface SequenceFailure {
  /** `<target>Sequence(seed, index)` rebuilds it. */
  readonly index: number;
  /** The step (event) at which the check failed. */
  readonly step: number;
  readonly check: string;
  readonly message: string;
  /** The last steps: `+seconds event → commands`. */
  readonly trace: readonly string[];
}

export interface SequenceResult {
  readonly steps: number;
  readonly failure?: SequenceFailure;
  /** The final phase or state. */
  readonly outcome: string;
  /** What the sequence reached (for coverage counts). */
  readonly marks: readonly string[];
  /** Documented UsageErrors of app calls that really were illegal, as "call CODE". */
  readonly documented: readonly string[];
}

export interface SequenceReport {
  readonly target: string;
  readonly runs: number;
  /** Events (and callbacks) handled in all. */
  readonly steps: number;
  readonly failures: number;
  /** The first few failures. */
  readonly failureList: SequenceFailure[];
  /** Final phase counts ("final: ...") and coverage counts ("saw: ..."). */
  readonly outcomes: Record<string, number>;
  /** Documented UsageErrors by "call CODE". */
  readonly documented: Record<string, number>;
}

const KEPT = 10;
const TRACE = 30;

function sortedCounts(counts: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  const keys = Object.keys(counts).sort();
  for (let i = 0; i < keys.length; i++) out[keys[i]] = counts[keys[i]];
  return out;
}

/** Runs `count` sequences of one target and tallies them. */
export function campaign(target: string, count: number, one: (index: number) => SequenceResult): SequenceReport {
  let steps = 0;
  let failures = 0;
  const failureList: SequenceFailure[] = [];
  const outcomes: Record<string, number> = Object.create(null);
  const documented: Record<string, number> = Object.create(null);
  const add = (into: Record<string, number>, key: string) => (into[key] = (into[key] ?? 0) + 1);
  for (let index = 0; index < count; index++) {
    let result: SequenceResult;
    try {
      result = one(index);
    } catch (error) {
      // The harness itself broke: that is a failure too.
      result = { steps: 0, outcome: "harness error", marks: [], documented: [], failure: { index, step: 0, check: "harness", message: describeError(error), trace: [] } };
    }
    steps += result.steps;
    add(outcomes, `final: ${result.outcome}`);
    for (let i = 0; i < result.marks.length; i++) add(outcomes, `saw: ${result.marks[i]}`);
    for (let i = 0; i < result.documented.length; i++) add(documented, result.documented[i]);
    if (result.failure) {
      failures++;
      if (failureList.length < KEPT) failureList.push(result.failure);
    }
  }
  return { target, runs: count, steps, failures, failureList, outcomes: sortedCounts(outcomes), documented: sortedCounts(documented) };
}

// ---------------------------------------------------------------------------------------------
// The engine every machine world shares: a virtual clock, a queue of what the world owes, FIFO per
// source (bytes on one connection stay in order), the checker and a trace.

interface Item {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
  /** True while delivering it would reach the machine (an answer it may be waiting for). */
  readonly owed: () => boolean;
}

class World {
  readonly r: Random;
  readonly checker: InvariantChecker;
  readonly trace: string[] = [];
  readonly marks: string[] = [];
  readonly documented: string[] = [];
  /** The world's time: timers and answers. */
  now: number;
  /** What the device's wall clock is off by (a clock never set, NTP corrections). */
  skew = 0;
  steps = 0;
  failure: SequenceFailure | undefined;
  readonly index: number;
  #queue: Item[] = [];
  #seq = 0;
  #fifo: Record<string, number> = Object.create(null);

  constructor(r: Random, index: number, limits?: Partial<CheckerLimits>) {
    this.r = r;
    this.index = index;
    this.checker = new InvariantChecker(limits);
    this.now = T0 + int(r, 1_000_000);
  }

  mark(name: string): void {
    if (this.marks.indexOf(name) < 0) this.marks.push(name);
  }

  /** The device's wall clock, which machines are given. */
  clock(): number {
    return this.now + this.skew;
  }

  /**
   * Maybe moves the device's wall clock: some sequences start with a clock never set (1970),
   * set later (NTP); now and then it is corrected back or forward.
   */
  jolt(): void {
    const r = this.r;
    if (this.skew < -1e12) {
      if (r() < 0.02) {
        this.skew = 0;
        this.mark("clock set");
        this.say("(the wall clock is set)");
      }
    } else if (r() < 0.004) {
      this.skew += r() < 0.6 ? -int(r, 3_600_000) : int(r, 86_400_000);
      this.mark("clock jump");
      this.say(`(the wall clock jumps to skew ${this.skew} ms)`);
    }
  }

  /** A clock never set at boot, for some sequences. */
  unsetClock(p: number): void {
    if (this.r() < p) {
      this.skew = -this.now + int(this.r, 100_000);
      this.mark("clock not set");
    }
  }

  say(line: string): void {
    this.trace.push(`+${((this.now - T0) / 1000).toFixed(3)}${this.skew ? ` (clock ${this.skew > 0 ? "+" : ""}${this.skew})` : ""} ${line}`);
    if (this.trace.length > TRACE) this.trace.shift();
  }

  fail(check: string, message: string): void {
    if (this.failure) return;
    this.checker.fail(check, message);
    this.settle();
  }

  /** Turns the checker's first problem into the sequence's failure. */
  settle(): void {
    const p = this.checker.problem;
    if (p && !this.failure) {
      this.say(`!! ${p.check}: ${p.message}`);
      this.failure = { index: this.index, step: this.steps, check: p.check, message: p.message, trace: this.trace.slice() };
    }
  }

  /** Something the world does `delay` ms from now, after what is already queued on `fifo`. */
  schedule(delay: number, fifo: string | undefined, run: () => void, owed: () => boolean): void {
    let at = this.now + delay;
    if (fifo !== undefined) {
      const last = this.#fifo[fifo];
      if (last !== undefined && last > at) at = last;
      this.#fifo[fifo] = at;
    }
    this.#queue.push({ at, seq: this.#seq++, run, owed });
  }

  /** The deadline of the next world item. */
  nextAt(): number | undefined {
    let at: number | undefined;
    for (let i = 0; i < this.#queue.length; i++) if (at === undefined || this.#queue[i].at < at) at = this.#queue[i].at;
    return at;
  }

  /** Takes the earliest world item (ties in order of scheduling) and moves the clock to it. */
  take(): Item | undefined {
    let best = -1;
    for (let i = 0; i < this.#queue.length; i++) {
      const q = this.#queue[i];
      if (best < 0 || q.at < this.#queue[best].at || (q.at === this.#queue[best].at && q.seq < this.#queue[best].seq)) best = i;
    }
    if (best < 0) return undefined;
    const item = this.#queue.splice(best, 1)[0];
    if (item.at > this.now) this.now = item.at;
    return item;
  }

  /** Something owed that the machine may be waiting for. */
  owes(): boolean {
    for (let i = 0; i < this.#queue.length; i++) if (this.#queue[i].owed()) return true;
    return false;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /**
   * One step of time: the timer or the next world item, whichever is due first (a tie either
   * way). Returns false when there is nothing left to happen.
   */
  advance(fireTimer: () => void): boolean {
    const itemAt = this.nextAt();
    const timerAt = this.checker.timerAt;
    if (itemAt === undefined && timerAt === undefined) return false;
    // A host's timer may run late: what arrives a little after the deadline may come first.
    const late = timerAt !== undefined && itemAt !== undefined && itemAt - timerAt <= 100 && this.r() < 0.15;
    if (timerAt !== undefined && !late && (itemAt === undefined || timerAt < itemAt || (timerAt === itemAt && this.r() < 0.5))) {
      if (timerAt > this.now) this.now = timerAt;
      this.checker.timerFired();
      fireTimer();
    } else this.take()!.run();
    return true;
  }

  /** The stuck check, after a step. */
  stuckCheck(final: boolean, where: string): void {
    if (!final && this.checker.timerAt === undefined && !this.owes()) this.fail("stuck", `no timer armed, no answer owed, and not final (${where})`);
  }

  result(outcome: string): SequenceResult {
    this.settle();
    return { steps: this.steps, failure: this.failure, outcome, marks: this.marks, documented: this.documented };
  }
}

function label(c: { readonly kind: string } & Record<string, unknown>): string {
  switch (c.kind) {
    case "connect":
      return `connect${c.link !== undefined ? `#${c.link}` : ""}`;
    case "subscribe":
      return `subscribe${c.link !== undefined ? `#${c.link}` : ""}`;
    case "publish":
      return `publish${c.link !== undefined ? `#${c.link}` : ""} ${excerpt(String(c.topic).split("?")[0], 50)}${c.tag !== undefined ? ` tag ${c.tag}` : ""}`;
    case "close":
      return `close${c.link !== undefined ? `#${c.link}` : ""}`;
    case "set-timer":
      return `set-timer ${c.delayMs}`;
    case "status":
      return `status ${(c.status as { state: string }).state}`;
    case "done":
      return `done ${(c.outcome as { kind: string }).kind}`;
    case "sent":
    case "dropped":
      return `${c.kind} ${c.tag}`;
    case "report": {
      const e = c.event as RuntimeEvent;
      if (e.source === "runtime") return `report runtime ${e.state}${e.error ? ` ${e.error.code}` : ""}`;
      if (e.source === "dps" || e.source === "hub") return `report ${e.source} ${e.status.state}`;
      if (e.source === "telemetry") return `report telemetry ${e.state} ${e.id}`;
      if (e.source === "cache") return `report cache ${e.state}`;
      return `report ${e.source}`;
    }
    default:
      return c.kind;
  }
}

function labels(commands: readonly { readonly kind: string }[]): string {
  if (commands.length === 0) return "(nothing)";
  let out = "";
  for (let i = 0; i < commands.length; i++) out += (i ? ", " : "") + label(commands[i] as { kind: string } & Record<string, unknown>);
  return out;
}

function eventLabel(e: { readonly kind: string } & Record<string, unknown>): string {
  switch (e.kind) {
    case "connack":
      return `connack${e.link !== undefined ? `#${e.link}` : ""} ${e.returnCode}`;
    case "suback":
      return `suback${e.link !== undefined ? `#${e.link}` : ""} [${(e.granted as number[]).join(",")}]`;
    case "message":
      return `message${e.link !== undefined ? `#${e.link}` : ""} ${excerpt(String(e.topic), 60)}`;
    case "puback":
      return `puback${e.link !== undefined ? `#${e.link}` : ""} tag ${e.tag}`;
    case "closed":
      return `closed${e.link !== undefined ? `#${e.link}` : ""} ${(e.fault as TransportFault).kind}`;
    case "lookup-response":
      return `lookup-response ${(e.response as HttpsResponse).status}`;
    case "lookup-failed":
      return `lookup-failed ${(e.fault as TransportFault).kind}`;
    case "start":
      return e.hubHost !== undefined ? `start ${e.hubHost} window ${e.windowMs}` : "start";
    default:
      return e.kind;
  }
}

/** Tags handed out by `send` and reported `sent`/`dropped` at most once each. */
class Tags {
  #issued: number[] = [];
  #done: number[] = [];
  issue(tag: number, world: World): void {
    if (this.#issued.indexOf(tag) >= 0) world.fail("telemetry", `send gave out tag ${tag} twice`);
    this.#issued.push(tag);
  }
  publish(tag: number | undefined, world: World): void {
    if (tag === undefined || this.#issued.indexOf(tag) < 0 || this.#done.indexOf(tag) >= 0) world.fail("telemetry", `publish of tag ${tag}, which is not a message waiting to go out`);
  }
  finish(tag: number, how: string, world: World): void {
    if (this.#issued.indexOf(tag) < 0) world.fail("telemetry", `${how} for tag ${tag}, never given out`);
    else if (this.#done.indexOf(tag) >= 0) world.fail("telemetry", `${how} for tag ${tag}, already reported`);
    this.#done.push(tag);
  }
}

/** A telemetry body: small mostly, sometimes over the limit; properties, sometimes invalid ones. */
function drawMessage(r: Random, maxBytes: number): { body: Uint8Array; properties?: Record<string, string> } {
  const x = r();
  const size = x < 0.85 ? int(r, 64) : x < 0.95 ? int(r, maxBytes + 1) : maxBytes + 1 + int(r, 100);
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i++) body[i] = 0x61 + (i % 26);
  const y = r();
  if (y < 0.7) return { body };
  if (y < 0.95) return { body, properties: { k: "v", "$.ct": "text/plain", "é k": "ü/&=" } };
  return { body, properties: { n: 1 as unknown as string } };
}

export interface SequenceOptions {
  /** HMAC for SAS tokens; default the portable one (Node tests may pass node:crypto's). */
  readonly crypto?: CryptoPort;
  /** Events per sequence at most; default a random 20..400. */
  readonly maxSteps?: number;
  readonly limits?: Partial<CheckerLimits>;
}

function allowed(error: unknown, codes: readonly string[]): string | undefined {
  return error instanceof DpsError && error.side === "usage" && codes.indexOf(error.code) >= 0 ? error.code : undefined;
}

// ---------------------------------------------------------------------------------------------
// RegistrationMachine

/** The subset of a registration machine the world drives (the negative tests pass broken ones). */
export interface RegistrationLike {
  readonly phase: string;
  handle(event: RegistrationEvent, now: number): readonly RegistrationCommand[];
}

export interface RegistrationSequenceOptions extends SequenceOptions {
  readonly create?: (config: RegistrationConfig, deps: { crypto: CryptoPort; random: Random }) => RegistrationLike;
}

const REG_FINAL = ["assigned", "failed", "fallback", "stopped"];

function registrationConfig(r: Random): RegistrationConfig {
  const policy: Record<string, Record<string, number>> = {};
  if (r() < 0.3) policy.budget = { maxAttempts: int(r, 5), maxReauthentications: int(r, 3), maxLookups: int(r, 3) };
  if (r() < 0.3) policy.poll = { maxPolls: 1 + int(r, 5) };
  if (r() < 0.2) policy.timeouts = { connectMs: 1 + int(r, 5000), subscribeMs: 1 + int(r, 5000), responseMs: 1 + int(r, 5000), lookupMs: 1 + int(r, 5000), holdConnectionMs: int(r, 60_000) };
  return {
    ...baseConfig,
    pipeline: r() < 0.6,
    lookup: r() < 0.8 ? baseConfig.lookup : undefined,
    hasCachedAssignment: r() < 0.25,
    payload: r() < 0.2 ? { site: "lab" } : undefined,
    policy: retryPolicy(policy as RetryPolicyOverrides),
  };
}

/** One random sequence against a RegistrationMachine; `(seed, index)` rebuilds it. */
export function registrationSequence(seed: number, index: number, options: RegistrationSequenceOptions = {}): SequenceResult {
  const r = runRandom(seed ^ 0x5eed0001, index);
  const w = new World(r, index, options.limits);
  const cloud = new FuzzCloud(r, drawPace(r));
  const deps = { crypto: options.crypto ?? portableCrypto, random: r };
  const config = registrationConfig(r);
  const create = (): RegistrationLike => (options.create ? options.create(config, deps) : new RegistrationMachine(config, deps));
  let machine = create();
  let machines = 1;
  const maxSteps = options.maxSteps ?? 20 + int(r, 380);
  let link: { gen: number; dead: boolean; connacked: boolean } | undefined;
  let gens = 0;
  let lookupSerial = 0;
  let done = false;

  const deliver = (event: RegistrationEvent): void => {
    w.steps++;
    w.checker.event(w.now);
    let commands: readonly RegistrationCommand[];
    try {
      commands = machine.handle(event, w.clock());
    } catch (error) {
      w.say(`${eventLabel(event as never)} → threw`);
      return w.fail("exception", `${eventLabel(event as never)} in phase ${machine.phase}: ${describeError(error)}`);
    }
    w.say(`${eventLabel(event as never)} → ${labels(commands)}`);
    w.checker.commands(w.now, commands);
    react(commands);
    w.settle();
    const final = REG_FINAL.indexOf(machine.phase) >= 0;
    if (final !== done) w.fail("after-done", done ? `phase ${machine.phase} after done` : `final phase ${machine.phase} without done`);
    w.stuckCheck(done, `phase ${machine.phase}`);
  };

  const onLink = (gen: number, reactions: readonly Reaction[]): void => {
    for (let i = 0; i < reactions.length; i++) {
      const x = reactions[i];
      if (!link || link.gen !== gen || link.dead) return;
      if (x.kind === "puback") continue; // DPS publishes are not acknowledged to the machine
      if (x.kind === "close") link.dead = true;
      const event: RegistrationEvent =
        x.kind === "connack" ? { kind: "connack", returnCode: x.code } : x.kind === "suback" ? { kind: "suback", granted: x.granted } : x.kind === "message" ? { kind: "message", topic: x.topic, payload: x.payload } : { kind: "closed", fault: x.fault };
      const live = () => link !== undefined && link.gen === gen;
      w.schedule(x.delay, `link${gen}`, () => {
        if (!live()) return; // the host drops what comes after its link closed
        if (event.kind === "closed") {
          link = undefined;
          w.checker.closed();
        }
        if (event.kind === "connack") link!.connacked = true;
        deliver(event);
      }, live);
    }
  };

  const react = (commands: readonly RegistrationCommand[]): void => {
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      if (done && c.kind !== "status") w.fail("after-done", `${c.kind} after done`);
      switch (c.kind) {
        case "connect": {
          const gen = ++gens;
          link = { gen, dead: false, connacked: false };
          const reactions = cloud.connect();
          if (reactions.length === 0) link.dead = true;
          onLink(gen, reactions);
          break;
        }
        case "subscribe":
          if (link) onLink(link.gen, cloud.subscribe(1));
          break;
        case "publish":
          if (link) onLink(link.gen, cloud.dps(c.topic));
          break;
        case "close":
          link = undefined;
          break;
        case "lookup": {
          w.mark("lookup");
          const serial = ++lookupSerial;
          const reply = cloud.lookup();
          if (reply) {
            const live = () => serial === lookupSerial;
            w.schedule(cloud.delay(), "lookup", () => {
              if (!live()) return;
              lookupSerial++;
              deliver("response" in reply ? { kind: "lookup-response", response: reply.response } : { kind: "lookup-failed", fault: reply.fault });
            }, live);
          }
          break;
        }
        case "cancel-lookup":
          lookupSerial++;
          break;
        case "done":
          done = true;
          w.mark(`done ${c.outcome.kind}`);
          break;
        case "status":
          if (c.status.state === "fallback" || c.status.state === "polling" || c.status.state === "retrying") w.mark(c.status.state);
          break;
      }
    }
  };

  w.unsetClock(0.05);
  deliver({ kind: "start" });
  while (!w.failure && w.steps < maxSteps) {
    w.jolt();
    const x = r();
    if (x < 0.006 && !done) {
      deliver({ kind: "stop" });
      continue;
    }
    if (x < 0.05) {
      // The peer on its own: on the open link, or a late packet of a closed one where the table has a row for it.
      if (link && !link.dead) {
        if (!link.connacked && r() < 0.9) onLink(link.gen, [{ kind: "close", fault: drawFault(r), delay: cloud.delay() }]);
        else onLink(link.gen, [cloud.noise(true)]);
      } else if (!link && machine.phase !== "idle" && (machine.phase === "waiting" || machine.phase === "looking-up" || done)) {
        const n = cloud.noise(true);
        w.mark("stale");
        deliver(n.kind === "message" ? { kind: "message", topic: n.topic, payload: n.payload } : n.kind === "close" ? { kind: "closed", fault: n.fault } : { kind: "connack", returnCode: drawConnack(r) });
      }
      continue;
    }
    if (done && w.checker.timerAt === undefined && !w.owes()) {
      // A machine runs once: the lifecycle makes a new one for the next provisioning run.
      if (machines < 6 && r() < 0.8) {
        machines++;
        machine = create();
        done = false;
        lookupSerial++;
        w.now += cloud.delay();
        w.say("(a new machine)");
        deliver({ kind: "start" });
        continue;
      }
      if (w.queued === 0) break;
    }
    if (!w.advance(() => deliver({ kind: "timer" }))) break;
  }
  if (machines > 1) w.mark("several runs");
  return w.result(machine.phase);
}

export function fuzzRegistrationSequences(count: number, seed: number, options: RegistrationSequenceOptions = {}): SequenceReport {
  return campaign("registration machine", count, (index) => registrationSequence(seed, index, options));
}

// ---------------------------------------------------------------------------------------------
// HubSession

export interface HubLike {
  readonly phase: string;
  readonly queued: number;
  handle(event: HubEvent, now: number): readonly HubCommand[];
  send(body: Uint8Array, properties: Record<string, string> | undefined, now: number): { tag: number; commands: readonly HubCommand[] };
}

export interface HubSequenceOptions extends SequenceOptions {
  readonly create?: (config: HubSessionConfig, deps: { crypto: CryptoPort; random: Random }) => HubLike;
}

function hubConfig(r: Random): HubSessionConfig {
  const maxQueue = 1 + int(r, 8);
  const policy: Record<string, Record<string, number>> = {};
  if (r() < 0.3) policy.hub = { stableMs: int(r, 120_000), windowMs: int(r, 20 * 60_000), maxMessageAttempts: 1 + int(r, 4) };
  if (r() < 0.2) policy.timeouts = { connectMs: 1 + int(r, 5000), ackMs: 1 + int(r, 5000) };
  return {
    symmetricKey: FUZZ_KEY,
    maxQueue,
    maxInFlight: r() < 0.5 ? 1 + int(r, maxQueue) : undefined,
    maxMessageBytes: 16 + int(r, 2048),
    tokenLifetimeSeconds: r() < 0.4 ? 60 + int(r, 600) : undefined,
    renewBeforeSeconds: r() < 0.1 ? int(r, 60) : undefined,
    modelId: r() < 0.2 ? "dtmi:com:example:Thermostat;1" : undefined,
    policy: retryPolicy(policy as RetryPolicyOverrides),
  };
}

/** One random sequence against a HubSession: runs started, messages sent, the hub answering at random. */
export function hubSequence(seed: number, index: number, options: HubSequenceOptions = {}): SequenceResult {
  const r = runRandom(seed ^ 0x5eed0002, index);
  const w = new World(r, index, options.limits);
  const cloud = new FuzzCloud(r, drawPace(r));
  const deps = { crypto: options.crypto ?? portableCrypto, random: r };
  const config = hubConfig(r);
  const hub: HubLike = options.create ? options.create(config, deps) : new HubSession(config, deps);
  const maxSteps = options.maxSteps ?? 20 + int(r, 380);
  const tags = new Tags();
  let link: { gen: number; dead: boolean } | undefined;
  let gens = 0;
  let runs = 0;

  const after = (commands: readonly HubCommand[], what: string): void => {
    w.say(`${what} → ${labels(commands)}`);
    w.checker.commands(w.now, commands);
    react(commands);
    w.settle();
    w.stuckCheck(hub.phase === "idle", `phase ${hub.phase}`);
  };
  const deliver = (event: HubEvent): void => {
    w.steps++;
    w.checker.event(w.now);
    let commands: readonly HubCommand[];
    try {
      commands = hub.handle(event, w.clock());
    } catch (error) {
      w.say(`${eventLabel(event as never)} → threw`);
      return w.fail("exception", `${eventLabel(event as never)} in phase ${hub.phase}: ${describeError(error)}`);
    }
    after(commands, eventLabel(event as never));
  };
  const send = (): void => {
    w.steps++;
    w.checker.event(w.now);
    const m = drawMessage(r, config.maxMessageBytes ?? 16384);
    let sent: { tag: number; commands: readonly HubCommand[] };
    try {
      sent = hub.send(m.body, m.properties, w.clock());
    } catch (error) {
      const code = allowed(error, ["QUEUE_FULL", "OVERSIZE", "INVALID_ARGUMENT"]);
      if (code === undefined) return w.fail("exception", `send of ${m.body.length} bytes: ${describeError(error)}`);
      w.documented.push(`send ${code}`);
      w.say(`send ${m.body.length} bytes → ${code}`);
      return;
    }
    tags.issue(sent.tag, w);
    after(sent.commands, `send ${m.body.length} bytes tag ${sent.tag}`);
  };
  const start = (): void => {
    runs++;
    deliver({ kind: "start", hubHost: r() < 0.8 ? FUZZ_HUB : "hub-2.azure-devices.net", deviceId: FUZZ_DEVICE, windowMs: r() < 0.5 ? undefined : r() < 0.3 ? 0 : int(r, 20 * 60_000) });
  };

  const onLink = (gen: number, reactions: readonly Reaction[]): void => {
    for (let i = 0; i < reactions.length; i++) {
      const x = reactions[i];
      if (!link || link.gen !== gen || link.dead) return;
      if (x.kind === "suback") continue; // the hub session never subscribes
      if (x.kind === "close") link.dead = true;
      const event: HubEvent =
        x.kind === "connack" ? { kind: "connack", returnCode: x.code } : x.kind === "puback" ? { kind: "puback", tag: x.id } : x.kind === "message" ? { kind: "message", topic: x.topic, payload: x.payload } : { kind: "closed", fault: x.fault };
      const live = () => link !== undefined && link.gen === gen;
      w.schedule(x.delay, `link${gen}`, () => {
        if (!live()) return;
        if (event.kind === "closed") {
          link = undefined;
          w.checker.closed();
        }
        deliver(event);
      }, live);
    }
  };

  const react = (commands: readonly HubCommand[]): void => {
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      switch (c.kind) {
        case "connect": {
          const gen = ++gens;
          link = { gen, dead: false };
          const reactions = cloud.connect();
          if (reactions.length === 0) link.dead = true;
          onLink(gen, reactions);
          break;
        }
        case "publish":
          if (c.tag === undefined) break;
          tags.publish(c.tag, w);
          if (link) onLink(link.gen, cloud.hub(c.tag));
          break;
        case "close":
          link = undefined;
          break;
        case "sent":
          w.mark("sent");
          tags.finish(c.tag, "sent", w);
          break;
        case "dropped":
          w.mark("dropped");
          tags.finish(c.tag, "dropped", w);
          break;
        case "done":
          w.mark(`done ${c.outcome.kind}`);
          break;
        case "status":
          if (c.status.state === "connected" || c.status.state === "renewing" || c.status.state === "retrying") w.mark(c.status.state);
          break;
      }
    }
  };

  w.unsetClock(0.05);
  start();
  while (!w.failure && w.steps < maxSteps) {
    w.jolt();
    const x = r();
    if (x < 0.1) {
      send();
      continue;
    }
    if (x < 0.107) {
      deliver({ kind: "stop" });
      continue;
    }
    if (x < 0.14) {
      if (link && !link.dead) onLink(link.gen, [cloud.noise(false)]);
      else if (!link && hub.phase !== "idle") {
        // The session documents that a link it has closed is not news: late packets of it.
        const n = cloud.noise(false);
        w.mark("stale");
        deliver(n.kind === "message" ? { kind: "message", topic: n.topic, payload: n.payload } : n.kind === "close" ? { kind: "closed", fault: n.fault } : n.kind === "puback" ? { kind: "puback", tag: n.id } : { kind: "connack", returnCode: drawConnack(r) });
      }
      continue;
    }
    if (hub.phase === "idle" && w.checker.timerAt === undefined && !w.owes()) {
      // Between runs: the lifecycle starts the next one (or the sequence ends).
      if (runs < 4 && r() < 0.7) {
        w.now += cloud.delay();
        start();
        continue;
      }
      if (w.queued === 0) break;
    }
    if (!w.advance(() => deliver({ kind: "timer" }))) break;
  }
  return w.result(hub.phase);
}

export function fuzzHubSequences(count: number, seed: number, options: HubSequenceOptions = {}): SequenceReport {
  return campaign("hub session", count, (index) => hubSequence(seed, index, options));
}

// ---------------------------------------------------------------------------------------------
// LifecycleMachine

export interface LifecycleLike {
  readonly phase: string;
  handle(event: LifecycleEvent, now: number): readonly LifecycleCommand[];
  send(message: Uint8Array | string | object, properties: Record<string, string> | undefined, now: number): { id: number; commands: readonly LifecycleCommand[] };
}

export interface LifecycleSequenceOptions extends SequenceOptions {
  readonly create?: (config: RuntimeConfig, deps: { crypto: CryptoPort; random: Random }, has: { readonly cache: boolean; readonly lookup: boolean }) => LifecycleLike;
}

const LIFE_FINAL = ["failed", "stopped"];

export function fuzzRuntimeConfig(r: Random): RuntimeConfig {
  const policy: Record<string, Record<string, number>> = {};
  if (r() < 0.3) policy.budget = { maxAttempts: int(r, 5), maxReauthentications: int(r, 3), maxLookups: int(r, 3) };
  if (r() < 0.25) policy.poll = { maxPolls: 1 + int(r, 4) };
  if (r() < 0.3) {
    const initialMs = 1000 + int(r, 60_000);
    policy.longTail = { initialMs, maxMs: initialMs + int(r, 600_000) };
  }
  if (r() < 0.3) policy.hub = { windowMs: int(r, 120_000), stableMs: int(r, 120_000), maxMessageAttempts: 1 + int(r, 4) };
  if (r() < 0.2) policy.timeouts = { connectMs: 1 + int(r, 5000), subscribeMs: 1 + int(r, 5000), responseMs: 1 + int(r, 5000), ackMs: 1 + int(r, 5000), holdConnectionMs: int(r, 60_000) };
  const maxQueue = 1 + int(r, 6);
  return {
    idScope: "0ne00000001",
    registrationId: FUZZ_DEVICE,
    ...(r() < 0.2 ? { groupKey: FUZZ_KEY } : { symmetricKey: FUZZ_KEY }),
    globalEndpoint: "dps.example",
    statusLookup: r() < 0.8,
    pipeline: r() < 0.6,
    tokenLifetimeSeconds: r() < 0.3 ? 60 + int(r, 600) : undefined,
    modelId: r() < 0.1 ? "dtmi:com:example:Thermostat;1" : undefined,
    hub: { maxQueue, maxInFlight: r() < 0.5 ? 1 + int(r, maxQueue) : undefined, maxMessageBytes: 16 + int(r, 2048) },
    retryPolicy: policy as RetryPolicyOverrides,
  };
}

type CacheRecord = { assignedHub: string; deviceId: string; idScope?: string } | undefined;

function drawRecord(r: Random): CacheRecord {
  const x = r();
  if (x < 0.45) return undefined;
  if (x < 0.8) return { assignedHub: FUZZ_HUB, deviceId: FUZZ_DEVICE, idScope: r() < 0.8 ? "0ne00000001" : undefined };
  if (x < 0.88) return { assignedHub: "hub-2.azure-devices.net", deviceId: FUZZ_DEVICE, idScope: "0ne00000001" };
  if (x < 0.94) return { assignedHub: FUZZ_HUB, deviceId: FUZZ_DEVICE, idScope: "0ne00000002" };
  return { assignedHub: pick(r, ["bad hub!", "", "hub:1"]), deviceId: pick(r, [FUZZ_DEVICE, "a#b"]) };
}

/** One random sequence against a LifecycleMachine: every link, timer, cache and lookup event at random. */
export function lifecycleSequence(seed: number, index: number, options: LifecycleSequenceOptions = {}): SequenceResult {
  const r = runRandom(seed ^ 0x5eed0003, index);
  const w = new World(r, index, options.limits);
  const cloud = new FuzzCloud(r, drawPace(r));
  const deps = { crypto: options.crypto ?? portableCrypto, random: r };
  const config = fuzzRuntimeConfig(r);
  const has = { cache: r() < 0.8, lookup: r() < 0.85 };
  const machine: LifecycleLike = options.create ? options.create(config, deps, has) : new LifecycleMachine(config, deps, has);
  const maxSteps = options.maxSteps ?? 20 + int(r, 380);
  const maxBytes = config.hub?.maxMessageBytes ?? 16384;
  const tags = new Tags();
  let record = drawRecord(r);
  /** The world's links: kind and whether the peer still talks on it. */
  const links: { [id: number]: { dps: boolean; dead: boolean; connacked: boolean } } = {};
  const closedLinks: number[] = [];
  let lookupSerial = 0;
  let stopped = false;

  const final = () => LIFE_FINAL.indexOf(machine.phase) >= 0;
  const after = (commands: readonly LifecycleCommand[], what: string, stale: boolean): void => {
    w.say(`${what} → ${labels(commands)}`);
    if (stale && commands.length > 0) w.fail("stale", `${what} on a closed link gave ${labels(commands)}`);
    w.checker.commands(w.now, commands);
    react(commands);
    w.settle();
    w.stuckCheck(final(), `phase ${machine.phase}`);
  };
  const deliver = (event: LifecycleEvent, documented: readonly string[] = []): void => {
    w.steps++;
    w.checker.event(w.now);
    const link = (event as { link?: number }).link;
    const stale = link !== undefined && !w.checker.isOpen(link);
    if (stale) w.mark("stale ignored");
    if (event.kind === "closed" && !stale) w.checker.closed(link);
    let commands: readonly LifecycleCommand[];
    try {
      commands = machine.handle(event, w.clock());
    } catch (error) {
      const code = allowed(error, documented);
      if (code !== undefined) {
        w.documented.push(`${event.kind} ${code}`);
        w.say(`${eventLabel(event as never)} → ${code}`);
        return;
      }
      w.say(`${eventLabel(event as never)} → threw`);
      return w.fail("exception", `${eventLabel(event as never)} in phase ${machine.phase}: ${describeError(error)}`);
    }
    after(commands, eventLabel(event as never), stale);
  };

  const onLink = (id: number, reactions: readonly Reaction[]): void => {
    const l = links[id];
    for (let i = 0; i < reactions.length; i++) {
      const x = reactions[i];
      if (!l || l.dead) return;
      if (x.kind === "close") l.dead = true;
      let event: LifecycleEvent;
      if (x.kind === "connack") event = { kind: "connack", link: id, returnCode: x.code };
      else if (x.kind === "suback") event = { kind: "suback", link: id, granted: x.granted };
      else if (x.kind === "message") event = { kind: "message", link: id, topic: x.topic, payload: x.payload };
      else if (x.kind === "puback") {
        // The driver turns a PUBACK into an event only for a tagged (hub) publish.
        if (l.dps) continue;
        event = { kind: "puback", link: id, tag: x.id };
      } else event = { kind: "closed", link: id, fault: x.fault };
      const e = event;
      w.schedule(x.delay, `link${id}`, () => {
        // Late packets of a closed link: the driver drops them, the machine must ignore them; half are delivered.
        if (!w.checker.isOpen(id) && r() < 0.5) return;
        if (e.kind === "connack") l.connacked = true;
        deliver(e);
      }, () => w.checker.isOpen(id));
    }
  };

  const cache = (run: () => LifecycleEvent): void => {
    // The result of a cache command, maybe behind other events; always delivered.
    w.schedule(r() < 0.6 ? 0 : cloud.delay(), "cache", () => deliver(run()), () => true);
  };

  const react = (commands: readonly LifecycleCommand[]): void => {
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i];
      switch (c.kind) {
        case "connect": {
          const dps = c.options.username.indexOf("/registrations/") > 0;
          links[c.link] = { dps, dead: false, connacked: false };
          const reactions = cloud.connect();
          if (reactions.length === 0) links[c.link].dead = true;
          onLink(c.link, reactions);
          break;
        }
        case "subscribe":
          onLink(c.link, cloud.subscribe(1));
          break;
        case "publish":
          if (links[c.link]?.dps) onLink(c.link, cloud.dps(c.topic));
          else {
            tags.publish(c.tag, w);
            onLink(c.link, cloud.hub(c.tag ?? 0));
          }
          break;
        case "close":
          closedLinks.push(c.link);
          break;
        case "lookup": {
          w.mark("lookup");
          const serial = ++lookupSerial;
          const reply = cloud.lookup();
          if (reply) {
            const live = () => serial === lookupSerial;
            w.schedule(cloud.delay(), "lookup", () => {
              if (!live()) return;
              lookupSerial++;
              deliver("response" in reply ? { kind: "lookup-response", response: reply.response } : { kind: "lookup-failed", fault: reply.fault });
            }, live);
          }
          break;
        }
        case "cancel-lookup":
          lookupSerial++;
          break;
        case "cache-load":
          cache(() => {
            const a = record;
            if (r() < 0.05) return { kind: "cache-failed", detail: "STORAGE: injected" };
            return a
              ? { kind: "cache-loaded", assignment: { ...a, registrationId: FUZZ_DEVICE, writtenAt: T0 }, detail: "slot 0", rejected: r() < 0.2 ? ["slot 1: torn (injected)"] : [] }
              : { kind: "cache-loaded", detail: "no valid record" };
          });
          break;
        case "cache-save": {
          const a = c.assignment;
          cache(() => {
            if (r() < 0.1) return { kind: "cache-failed", detail: "STORAGE: injected" };
            record = { assignedHub: a.assignedHub, deviceId: a.deviceId, idScope: a.idScope };
            return { kind: "cache-saved", detail: "slot 1" };
          });
          break;
        }
        case "cache-invalidate":
          cache(() => {
            if (r() < 0.1) return { kind: "cache-failed", detail: "STORAGE: injected" };
            record = undefined;
            return { kind: "cache-invalidated" };
          });
          break;
        case "report": {
          const e = c.event;
          if (e.source === "runtime") w.mark(`runtime ${e.state}`);
          else if (e.source === "telemetry") {
            w.mark(`telemetry ${e.state}`);
            tags.finish(e.id, `telemetry ${e.state}`, w);
          } else if (e.source === "assignment") w.mark(`assignment from ${e.assignment.source}`);
          else if (e.source === "cache") w.mark(`cache ${e.state}`);
          else if (e.source === "dps" && (e.status.state === "looking-up" || e.status.state === "fallback")) w.mark(`dps ${e.status.state}`);
          break;
        }
      }
    }
  };

  const send = (): void => {
    w.steps++;
    w.checker.event(w.now);
    const m = drawMessage(r, maxBytes);
    const x = r();
    let message: Uint8Array | string | object = m.body;
    if (x < 0.2) message = { t: 21.5, n: w.steps };
    else if (x < 0.3) message = "text";
    else if (x < 0.32) {
      const loop: Record<string, unknown> = {};
      loop.self = loop;
      message = loop;
    }
    let sent: { id: number; commands: readonly LifecycleCommand[] };
    try {
      sent = machine.send(message, m.properties, w.clock());
    } catch (error) {
      const code = allowed(error, stopped ? ["STOPPED", "QUEUE_FULL", "OVERSIZE", "INVALID_ARGUMENT"] : ["QUEUE_FULL", "OVERSIZE", "INVALID_ARGUMENT"]);
      if (code === undefined) return w.fail("exception", `send in phase ${machine.phase}: ${describeError(error)}`);
      w.documented.push(`send ${code}`);
      w.say(`send → ${code}`);
      return;
    }
    tags.issue(sent.id, w);
    after(sent.commands, `send id ${sent.id}`, false);
  };

  w.unsetClock(0.1);
  deliver({ kind: "start" });
  while (!w.failure && w.steps < maxSteps) {
    w.jolt();
    const x = r();
    if (x < 0.06) {
      send();
      continue;
    }
    if (x < 0.075) {
      const phase = machine.phase;
      deliver({ kind: "reprovision" }, phase === "idle" || phase === "stopped" ? ["ILLEGAL_EVENT"] : []);
      continue;
    }
    if (x < 0.079) {
      stopped = true;
      deliver({ kind: "stop" });
      continue;
    }
    if (x < 0.081) {
      deliver({ kind: "start" }, ["ILLEGAL_EVENT"]);
      continue;
    }
    if (x < 0.12) {
      // The peer on its own on the open link, or a late packet of a link already closed.
      const open = w.checker.openLinks;
      if (open.length > 0 && links[open[0]] && !links[open[0]].dead && r() < 0.6) {
        const l = links[open[0]];
        onLink(open[0], [!l.connacked && r() < 0.9 ? { kind: "close", fault: drawFault(r), delay: cloud.delay() } : cloud.noise(l.dps)]);
      } else if (closedLinks.length > 0) {
        const id = pick(r, closedLinks);
        const n = cloud.noise(false);
        const y = r();
        deliver(
          y < 0.15
            ? { kind: "connack", link: id, returnCode: drawConnack(r) }
            : y < 0.3
              ? { kind: "suback", link: id, granted: drawGranted(r) }
              : n.kind === "message"
                ? { kind: "message", link: id, topic: n.topic, payload: n.payload }
                : n.kind === "puback"
                  ? { kind: "puback", link: id, tag: n.id }
                  : { kind: "closed", link: id, fault: drawFault(r) },
        );
      }
      continue;
    }
    if (final() && w.checker.timerAt === undefined && !w.owes()) {
      // Failed for good: the app may ask for a new registration, or the sequence ends.
      if (machine.phase === "failed" && r() < 0.3) {
        w.now += cloud.delay();
        deliver({ kind: "reprovision" });
        continue;
      }
      if (w.queued === 0) break;
    }
    if (!w.advance(() => deliver({ kind: "timer" }))) break;
  }
  return w.result(machine.phase);
}

export function fuzzLifecycleSequences(count: number, seed: number, options: LifecycleSequenceOptions = {}): SequenceReport {
  return campaign("lifecycle machine", count, (index) => lifecycleSequence(seed, index, options));
}

// ---------------------------------------------------------------------------------------------
// The DeviceRuntime driver on fuzzing ports

/** A virtual event loop: tasks in time order, each owned by a timer, a session, a request or the app. */
export class FuzzLoop implements TimerPort {
  now: number;
  #tasks: { at: number; seq: number; fn: () => void; live: boolean; owner: string; owed: () => boolean }[] = [];
  #seq = 0;
  readonly #onSet: (delayMs: number) => void;

  readonly #lateness: () => number;

  /** `lateness`: how late a timer fires (ms), drawn for each; default never. */
  constructor(now: number, onSet: (delayMs: number) => void = () => {}, lateness: () => number = () => 0) {
    this.now = now;
    this.#onSet = onSet;
    this.#lateness = lateness;
  }

  /** TimerPort.set, for the runtime (owner "timer"). */
  set(callback: () => void, delayMs: number): unknown {
    this.#onSet(delayMs);
    return this.add(delayMs + this.#lateness(), "timer", callback, () => true);
  }

  clear(handle: unknown): void {
    if (handle && typeof handle === "object" && "live" in handle) (handle as { live: boolean }).live = false;
  }

  add(delayMs: number, owner: string, fn: () => void, owed: () => boolean): { live: boolean } {
    const task = { at: this.now + (delayMs > 0 ? delayMs : 0), seq: this.#seq++, fn, live: true, owner, owed };
    this.#tasks.push(task);
    return task;
  }

  /** Runs the next live task; false when none is left. */
  step(): boolean {
    let best = -1;
    for (let i = 0; i < this.#tasks.length; i++) {
      const t = this.#tasks[i];
      if (!t.live) continue;
      if (best < 0 || t.at < this.#tasks[best].at || (t.at === this.#tasks[best].at && t.seq < this.#tasks[best].seq)) best = i;
    }
    if (best < 0) {
      this.#tasks = [];
      return false;
    }
    const task = this.#tasks[best];
    task.live = false;
    if (this.#tasks.length > 64) this.#tasks = this.#tasks.filter((t) => t.live);
    if (task.at > this.now) this.now = task.at;
    task.fn();
    return true;
  }

  /** A live task of `owner` (a prefix) that is owed. */
  owes(owner: string): boolean {
    for (let i = 0; i < this.#tasks.length; i++) {
      const t = this.#tasks[i];
      if (t.live && t.owner.indexOf(owner) === 0 && t.owed()) return true;
    }
    return false;
  }
}

/** FlashPort over MemoryFlash whose calls throw now and then (a STORAGE error or a plain Error). */
export class FaultyFlash implements FlashPort {
  readonly #inner: MemoryFlash;
  readonly #r: Random;
  readonly #p: number;
  constructor(inner: MemoryFlash, r: Random, p: number) {
    this.#inner = inner;
    this.#r = r;
    this.#p = p;
  }
  get sectorSize(): number {
    return this.#inner.sectorSize;
  }
  get sectorCount(): number {
    return this.#inner.sectorCount;
  }
  #maybe(what: string): void {
    if (this.#p > 0 && this.#r() < this.#p) {
      if (this.#r() < 0.7) throw new PeerError("STORAGE", `fuzz: ${what} failed`);
      throw new Error(`fuzz: ${what} broke`);
    }
  }
  read(offset: number, length: number): Uint8Array {
    this.#maybe("read");
    return this.#inner.read(offset, length);
  }
  write(offset: number, bytes: Uint8Array): void {
    this.#maybe("write");
    this.#inner.write(offset, bytes);
  }
  erase(sector: number): void {
    this.#maybe("erase");
    this.#inner.erase(sector);
  }
}

/** What the fuzzing ports do wrong, and how often (per sequence). */
export interface Misbehaviour {
  throwConnect: number;
  throwSubscribe: number;
  throwPublish: number;
  /** A callback called inside connect/subscribe/publish. */
  sync: number;
  /** A callback after the core's close() (or after onClose). */
  afterClose: number;
  /** A reaction delivered twice. */
  twice: number;
  throwHttps: number;
  listener: number;
  /** The listener calls back into the runtime (send, stop, reprovision). */
  reentrant: number;
  flash: number;
}

function drawMisbehaviour(r: Random): Misbehaviour {
  const p = (most: number) => (r() < 0.5 ? 0 : r() * most);
  return { throwConnect: p(0.1), throwSubscribe: p(0.05), throwPublish: p(0.05), sync: p(0.08), afterClose: p(0.1), twice: p(0.1), throwHttps: p(0.2), listener: p(0.2), reentrant: p(0.05), flash: p(0.3) };
}

/** Runs an app call: a documented UsageError is fine (counted), anything else is a failure. */
function appCall(w: { fail(check: string, message: string): void; documented: string[] }, name: string, codes: readonly string[], f: () => void): void {
  try {
    f();
  } catch (error) {
    const code = allowed(error, codes);
    if (code === undefined) w.fail("exception", `the app's ${name}() threw ${describeError(error)}`);
    else w.documented.push(`${name} ${code}`);
  }
}

/** Shared state of one driver sequence: failures, counts, trace. */
export class DriverWorld {
  readonly r: Random;
  readonly loop: FuzzLoop;
  readonly trace: string[] = [];
  readonly marks: string[] = [];
  readonly documented: string[] = [];
  readonly index: number;
  readonly limits: CheckerLimits;
  failure: SequenceFailure | undefined;
  steps = 0;
  /** The session open as far as the connector knows (not closed by the core, no onClose delivered). */
  openSession: object | undefined;
  #zeros = 0;
  #zeroAt = Number.NaN;
  #instant = Number.NaN;
  #events = 0;

  constructor(r: Random, index: number, limits: Partial<CheckerLimits> = {}) {
    this.r = r;
    this.index = index;
    this.limits = { zeroTimers: limits.zeroTimers ?? DEFAULT_LIMITS.zeroTimers, eventsPerInstant: limits.eventsPerInstant ?? DEFAULT_LIMITS.eventsPerInstant };
    this.loop = new FuzzLoop(T0 + int(r, 1_000_000), (delayMs) => this.#timerSet(delayMs), () => (r() < 0.1 ? int(r, 60) : 0));
  }

  mark(name: string): void {
    if (this.marks.indexOf(name) < 0) this.marks.push(name);
  }

  say(line: string): void {
    this.trace.push(`+${((this.loop.now - T0) / 1000).toFixed(3)} ${line}`);
    if (this.trace.length > TRACE) this.trace.shift();
  }

  fail(check: string, message: string): void {
    if (this.failure) return;
    this.say(`!! ${check}: ${message}`);
    this.failure = { index: this.index, step: this.steps, check, message, trace: this.trace.slice() };
  }

  #timerSet(delayMs: number): void {
    if (typeof delayMs !== "number" || !(delayMs >= 0) || delayMs === Number.POSITIVE_INFINITY) return this.fail("bad-timer", `timers.set(…, ${delayMs})`);
    if (delayMs === 0) {
      if (this.#zeroAt === this.loop.now) this.#zeros++;
      else {
        this.#zeroAt = this.loop.now;
        this.#zeros = 1;
      }
      if (this.#zeros === this.limits.zeroTimers + 1) this.fail("timer-loop", `timers.set(…, 0) ${this.#zeros} times in a row at one instant`);
    } else {
      this.#zeros = 0;
      this.#zeroAt = Number.NaN;
    }
  }

  /** A call from a port into the runtime: nothing may escape it. */
  invoke(name: string, f: () => void): void {
    this.steps++;
    if (this.loop.now === this.#instant) this.#events++;
    else {
      this.#instant = this.loop.now;
      this.#events = 1;
    }
    if (this.#events === this.limits.eventsPerInstant + 1) this.fail("livelock", `more than ${this.limits.eventsPerInstant} callbacks at one instant`);
    this.say(name);
    try {
      f();
    } catch (error) {
      this.fail("exception", `${name} threw into the host: ${describeError(error)}`);
    }
  }
}

let sessionSerial = 0;

/** An MqttConnector whose sessions call back at random, sometimes out of contract. */
export class FuzzConnector implements MqttConnector {
  readonly #w: DriverWorld;
  readonly #cloud: FuzzCloud;
  readonly #m: Misbehaviour;
  connects = 0;

  constructor(w: DriverWorld, cloud: FuzzCloud, m: Misbehaviour) {
    this.#w = w;
    this.#cloud = cloud;
    this.#m = m;
  }

  connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession {
    const w = this.#w;
    const r = w.r;
    const cloud = this.#cloud;
    const m = this.#m;
    this.connects++;
    if (w.openSession) w.fail("second-session", `connect to ${options.host} while another session is open`);
    if (r() < m.throwConnect) {
      w.say(`connect ${options.host} → throws`);
      throw new Error("fuzz: connect failed synchronously");
    }
    const isDps = options.username.indexOf("/registrations/") > 0;
    const id = ++sessionSerial;
    const owner = `session${id}`;
    let closedByCore = false;
    let closedByPeer = false;
    let connacked = false;
    let packetId = 0;
    const session: MqttSession = {
      subscribe: (topic) => {
        if (closedByCore || closedByPeer) return 0;
        if (r() < m.throwSubscribe) throw new Error("fuzz: subscribe failed");
        const pid = (packetId = packetId >= 0xffff ? 1 : packetId + 1);
        react(cloud.subscribe(pid));
        maybeSync();
        return pid;
      },
      publish: (topic, payload, qos) => {
        if (closedByCore || closedByPeer) return 0;
        if (r() < m.throwPublish) throw new Error("fuzz: publish failed");
        const pid = qos ? (packetId = packetId >= 0xffff ? 1 : packetId + 1) : 0;
        react(isDps ? cloud.dps(topic) : cloud.hub(pid));
        maybeSync(pid);
        return pid;
      },
      close: () => {
        if (closedByCore) return;
        closedByCore = true;
        if (w.openSession === session) w.openSession = undefined;
        if (r() < m.afterClose) {
          // Out of contract: a callback after close().
          const x = cloud.noise(isDps);
          deliver(x, true);
        }
      },
    };
    const live = () => !closedByCore && !closedByPeer;
    const call = (x: Reaction): void => {
      const name = `${owner} ${x.kind === "connack" ? `onConnack ${x.code}` : x.kind === "suback" ? `onSuback ${x.id} [${x.granted.join(",")}]` : x.kind === "message" ? `onMessage ${excerpt(x.topic, 50)}` : x.kind === "puback" ? `onPuback ${x.id}` : `onClose ${x.fault.kind}`}`;
      if (x.kind === "close") {
        closedByPeer = true;
        if (w.openSession === session) w.openSession = undefined;
      }
      if (x.kind === "connack") connacked = true;
      w.invoke(name, () => {
        if (x.kind === "connack") callbacks.onConnack(x.code, false);
        else if (x.kind === "suback") callbacks.onSuback(x.id, x.granted);
        else if (x.kind === "message") callbacks.onMessage(x.topic, x.payload);
        else if (x.kind === "puback") callbacks.onPuback(x.id);
        else callbacks.onClose(x.fault);
      });
    };
    const deliver = (x: Reaction, outOfContract: boolean): void => {
      w.loop.add(x.delay, owner, () => {
        if (!live() && !outOfContract) return;
        if (outOfContract) w.mark("callback after close");
        call(x);
      }, () => live() && !outOfContract);
    };
    let last = 0;
    const react = (reactions: readonly Reaction[]): void => {
      for (let i = 0; i < reactions.length; i++) {
        // In order on the connection: never before what was scheduled earlier.
        const at = Math.max(w.loop.now + reactions[i].delay, last);
        last = at;
        const x = { ...reactions[i], delay: at - w.loop.now } as Reaction;
        deliver(x, false);
        if (r() < m.twice) {
          w.mark("callback twice");
          deliver({ ...x, delay: x.delay + drawDelay(r, cloud.pace) } as Reaction, false);
        }
      }
    };
    const maybeSync = (pid?: number): void => {
      if (!(r() < m.sync) || !live()) return;
      // Out of contract: a callback inside connect/subscribe/publish.
      w.mark("sync callback");
      const x = r();
      if (x < 0.4) call({ kind: "close", fault: drawFault(r), delay: 0 });
      else if (x < 0.7 && !connacked) call({ kind: "connack", code: drawConnack(r), delay: 0 });
      else if (pid) call({ kind: "puback", id: pid, delay: 0 });
      else call(cloud.noise(isDps));
    };
    w.say(`connect ${isDps ? "dps" : "hub"} ${options.host} → ${owner}`);
    w.openSession = session;
    w.mark(isDps ? "dps connect" : "hub connect");
    react(cloud.connect());
    maybeSync();
    return session;
  }
}

/** An HttpsPort that answers at random, throws, or answers twice or after the abort. */
export class FuzzHttps implements HttpsPort {
  readonly #w: DriverWorld;
  readonly #cloud: FuzzCloud;
  readonly #m: Misbehaviour;
  #serial = 0;
  constructor(w: DriverWorld, cloud: FuzzCloud, m: Misbehaviour) {
    this.#w = w;
    this.#cloud = cloud;
    this.#m = m;
  }
  request(_request: HttpsRequest, onResponse: (response: HttpsResponse) => void, onError: (fault: TransportFault) => void): () => void {
    const w = this.#w;
    const r = w.r;
    w.mark("lookup");
    if (r() < this.#m.throwHttps) throw new Error("fuzz: https request failed synchronously");
    const owner = `https${++this.#serial}`;
    let aborted = false;
    let answered = false;
    const reply = this.#cloud.lookup();
    const deliver = (late: boolean) => {
      w.loop.add(this.#cloud.delay(), owner, () => {
        if ((aborted || answered) && !late) return;
        if (!reply) return;
        answered = true;
        if ("response" in reply) w.invoke(`${owner} onResponse ${reply.response.status}`, () => onResponse(reply.response));
        else w.invoke(`${owner} onError ${reply.fault.kind}`, () => onError(reply.fault));
      }, () => !aborted && !answered && reply !== undefined);
    };
    deliver(false);
    if (r() < this.#m.twice) deliver(true);
    return () => {
      aborted = true;
      if (r() < this.#m.afterClose) deliver(true);
    };
  }
}

export interface DriverSequenceOptions {
  readonly crypto?: CryptoPort;
  /** Callbacks per sequence at most; default a random 20..400. */
  readonly maxSteps?: number;
  readonly limits?: Partial<CheckerLimits>;
  /** What the listener may call back into the runtime (default send, send, reprovision, stop). */
  readonly reentrant?: readonly string[];
}

/**
 * One random sequence of a DeviceRuntime on fuzzing ports: an MqttConnector whose sessions call
 * back at random (and sometimes inside connect/publish/subscribe, after close, twice, or throw),
 * an HttpsPort that answers at random or throws, timers on a virtual clock, flash that sometimes
 * throws, a listener that sometimes throws or calls back into the runtime, and the app calling
 * send, reprovision, stop and start at random. Checks: nothing escapes a callback into the
 * runtime; app calls throw only documented UsageErrors; never two sessions open; no 0 ms timer
 * loop; no "runtime: ... was not handled" log; never stuck; after stop() no session, timer or
 * lookup left.
 */
export function driverSequence(seed: number, index: number, options: DriverSequenceOptions = {}): SequenceResult {
  const r = runRandom(seed ^ 0x5eed0004, index);
  const w = new DriverWorld(r, index, options.limits);
  const cloud = new FuzzCloud(r, drawPace(r));
  const m = drawMisbehaviour(r);
  const crypto = options.crypto ?? portableCrypto;
  const config = fuzzRuntimeConfig(r);
  const mqtt = new FuzzConnector(w, cloud, m);
  const https = r() < 0.85 ? new FuzzHttps(w, cloud, m) : undefined;
  let flash: FlashPort | undefined;
  if (r() < 0.8) {
    const memory = new MemoryFlash({ sectorSize: 4096, sectorCount: 2 });
    if (r() < 0.5) {
      // A record from an earlier boot: a warm start.
      const record = drawRecord(r);
      if (record && record.assignedHub !== "" && /^[a-z0-9.-]+$/.test(record.assignedHub) && record.deviceId === FUZZ_DEVICE) {
        const c = new CredentialCache({ flash: memory, random: (b) => b.fill(7), deviceKey: deviceKeyOf(config, crypto), registrationId: FUZZ_DEVICE, crypto, clock: () => T0 });
        c.save({ ...record, registrationId: FUZZ_DEVICE });
        c.close();
      }
    }
    flash = new FaultyFlash(memory, r, m.flash);
  }
  const maxSteps = options.maxSteps ?? 20 + int(r, 380);
  // The device's wall clock: sometimes never set at boot (then set by "NTP"), sometimes corrected.
  let skew = r() < 0.08 ? -w.loop.now + int(r, 100_000) : 0;
  if (skew) w.mark("clock not set");
  if (r() < 0.3) {
    w.loop.add(drawDelay(r, "mixed") * (1 + int(r, 20)), "app", () => {
      skew = skew < -1e12 ? 0 : skew + (r() < 0.6 ? -int(r, 3_600_000) : int(r, 86_400_000));
      w.mark("clock moved");
      w.say(`(the wall clock moves: skew ${skew})`);
    }, () => false);
  }
  let runtime: DeviceRuntime | undefined;
  let started = false;
  let stopped = false;
  let timerHandle: { live: boolean } | undefined;
  const timers: TimerPort = {
    set: (callback, delayMs) => {
      const handle = w.loop.set(() => w.invoke("timer", callback), delayMs) as { live: boolean };
      timerHandle = handle;
      return handle;
    },
    clear: (handle) => w.loop.clear(handle),
  };
  const app = (name: string): void => {
    const rt = runtime!;
    if (name === "send") {
      const x = r();
      const message = x < 0.4 ? { t: 21.5 } : x < 0.6 ? "text" : drawMessage(r, config.hub?.maxMessageBytes ?? 16384).body;
      appCall(w, "send", stopped ? ["STOPPED", "QUEUE_FULL", "OVERSIZE"] : ["QUEUE_FULL", "OVERSIZE"], () => rt.send(message));
    } else if (name === "reprovision") {
      const state = rt.state;
      // Illegal before start, and once stop() was called (its event may still be queued).
      appCall(w, "reprovision", state === "idle" || stopped ? ["ILLEGAL_EVENT"] : [], () => rt.reprovision());
    } else if (name === "stop") {
      stopped = true; // before the call: the listener may send from inside it
      appCall(w, "stop", [], () => rt.stop());
    } else {
      appCall(w, "start", started || stopped ? ["ILLEGAL_EVENT"] : [], () => rt.start());
      started = true;
    }
  };
  const listener = (e: RuntimeEvent): void => {
    if (e.source === "runtime") w.mark(`runtime ${e.state}`);
    else if (e.source === "telemetry") w.mark(`telemetry ${e.state}`);
    else if (e.source === "cache") w.mark(`cache ${e.state}`);
    if (r() < m.reentrant) {
      w.mark("re-entrant app call");
      const name = pick(r, options.reentrant ?? ["send", "send", "reprovision", "stop"]);
      w.say(`  listener on ${e.source}${e.source === "runtime" ? ` ${e.state}` : ""} calls ${name}()`);
      app(name);
    }
    if (r() < m.listener) throw new Error("fuzz: the listener broke");
  };
  try {
    runtime = new DeviceRuntime(
      config,
      {
        mqtt,
        https,
        timers,
        clock: () => w.loop.now + skew,
        random: r,
        secureRandom: (bytes) => {
          for (let i = 0; i < bytes.length; i++) bytes[i] = int(r, 256);
        },
        crypto,
        flash,
        log: (_level, message) => {
          if (message.indexOf("runtime: ") === 0) w.fail("not-handled", message);
        },
      },
      listener,
    );
  } catch (error) {
    w.fail("exception", `new DeviceRuntime: ${describeError(error)}`);
    return { steps: 0, failure: w.failure, outcome: "not constructed", marks: w.marks, documented: w.documented };
  }
  const rt = runtime;
  const stuck = (): void => {
    const state = rt.state;
    if (state === "failed" || state === "stopped" || state === "idle") return;
    if (timerHandle?.live || w.loop.owes("session") || w.loop.owes("https")) return;
    w.fail("stuck", `state ${state}: no timer armed and no callback owed`);
  };
  app("start");
  stuck();
  // The app, at random times.
  for (let i = 0, n = int(r, 12); i < n; i++) {
    const name = pick(r, ["send", "send", "send", "send", "reprovision", "stop", "start"]);
    w.loop.add(int(r, 10) === 0 ? 0 : drawDelay(r, "mixed") * (1 + int(r, 5)), "app", () => w.invoke(`app ${name}`, () => app(name)), () => false);
  }
  while (!w.failure && w.steps < maxSteps && w.loop.step()) stuck();
  // The end: stop, let late callbacks come, then nothing may be left open.
  if (!w.failure) {
    w.say("app stop (end)");
    app("stop");
    for (let i = 0; i < 200 && w.loop.step(); i++);
    if (rt.state !== "stopped") w.fail("stop", `state ${rt.state} after stop()`);
    if (w.openSession) w.fail("stop", "a session is still open after stop()");
    if (timerHandle?.live) w.fail("stop", "a timer is still armed after stop()");
    if (w.loop.owes("https")) w.fail("stop", "a lookup is still in flight after stop()");
  }
  return { steps: w.steps, failure: w.failure, outcome: rt.state, marks: w.marks, documented: w.documented };
}

export function fuzzDriver(count: number, seed: number, options: DriverSequenceOptions = {}): SequenceReport {
  return campaign("runtime driver", count, (index) => driverSequence(seed, index, options));
}

/** One line per failure: index, check, message, then the trace indented. */
export function formatFailure(f: SequenceFailure): string {
  return `#${f.index} step ${f.step} ${f.check}: ${f.message}\n${f.trace.map((l) => `      ${l}`).join("\n")}`;
}
