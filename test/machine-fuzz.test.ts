/**
 * The machines under random event sequences (test/support/machine-fuzz.ts): a bounded sample
 * with fixed seeds, every invariant checked after every step, zero failures allowed. Then the
 * proof that the checks can fail: recorded command streams with a second connect, a 0 ms timer
 * loop, a livelock, a publish without a link; and deliberately broken machines run through the
 * same worlds. `npm run fuzz` runs the large campaigns.
 */
import test from "ava";
import type { ExecutionContext } from "ava";
import { HubSession, type HubCommand, type HubEvent } from "../modules/hub-session.js";
import { LifecycleMachine, type LifecycleCommand, type LifecycleEvent } from "../modules/lifecycle.js";
import { RegistrationMachine, type RegistrationCommand, type RegistrationEvent } from "../modules/registration.js";
import {
  InvariantChecker,
  formatFailure,
  fuzzHubSequences,
  fuzzLifecycleSequences,
  fuzzRegistrationSequences,
  hubSequence,
  lifecycleSequence,
  registrationSequence,
  type HubLike,
  type HubSequenceOptions,
  type LifecycleLike,
  type LifecycleSequenceOptions,
  type RegistrationLike,
  type RegistrationSequenceOptions,
  type SequenceReport,
} from "./support/machine-fuzz.js";

const T = 1_767_225_600_000;

function noFailures(t: ExecutionContext, report: SequenceReport): void {
  t.is(report.failures, 0, report.failureList.map(formatFailure).join("\n\n"));
  t.true(report.steps > report.runs * 10, `${report.steps} steps in ${report.runs} sequences`);
  t.log(`${report.target}: ${report.runs} sequences, ${report.steps} events, ${report.failures} failures`);
}

function saw(t: ExecutionContext, report: SequenceReport, marks: readonly string[]): void {
  for (const mark of marks) t.true((report.outcomes[`saw: ${mark}`] ?? 0) > 0, `no sequence reached "${mark}"`);
}

// ---- the sample ------------------------------------------------------------------------------

test("machine fuzz: 2,000 random sequences against the registration machine, every invariant after every step", (t) => {
  const report = fuzzRegistrationSequences(2000, 1);
  noFailures(t, report);
  saw(t, report, ["done assigned", "done failed", "done fallback", "done stopped", "lookup", "polling", "retrying", "stale"]);
});

test("machine fuzz: 2,000 random sequences against the hub session", (t) => {
  const report = fuzzHubSequences(2000, 1);
  noFailures(t, report);
  saw(t, report, ["connected", "renewing", "retrying", "sent", "dropped", "stale", "done refused", "done unreachable", "done failed", "done stopped"]);
  for (const code of ["QUEUE_FULL", "OVERSIZE", "INVALID_ARGUMENT"]) t.true((report.documented[`send ${code}`] ?? 0) > 0, code);
});

test("machine fuzz: 2,000 random sequences against the lifecycle machine", (t) => {
  const report = fuzzLifecycleSequences(2000, 1);
  noFailures(t, report);
  saw(t, report, [
    "runtime connected",
    "runtime backing-off",
    "runtime failed",
    "runtime stopped",
    "assignment from cache",
    "assignment from dps",
    "cache saved",
    "cache invalidated",
    "cache unavailable",
    "dps looking-up",
    "dps fallback",
    "stale ignored",
    "telemetry sent",
    "telemetry dropped",
  ]);
  for (const doc of ["start ILLEGAL_EVENT", "send QUEUE_FULL", "send STOPPED", "send OVERSIZE", "send INVALID_ARGUMENT"]) t.true((report.documented[doc] ?? 0) > 0, doc);
});

test("machine fuzz: a sequence is rebuilt from (seed, index), trace and all", (t) => {
  for (const index of [0, 17, 999]) {
    t.deepEqual(registrationSequence(5, index), registrationSequence(5, index));
    t.deepEqual(hubSequence(5, index), hubSequence(5, index));
    t.deepEqual(lifecycleSequence(5, index), lifecycleSequence(5, index));
  }
  t.notDeepEqual(lifecycleSequence(5, 1).marks, lifecycleSequence(5, 2).marks.concat(["x"]));
});

// ---- the checks can fail: recorded streams ---------------------------------------------------------

test("checker: a second connect beside a live link is flagged; after a close or a closed event it is not", (t) => {
  const ok = new InvariantChecker();
  ok.commands(T, [{ kind: "connect", link: 1 }, { kind: "subscribe", link: 1 }, { kind: "close", link: 1 }, { kind: "connect", link: 2 }]);
  ok.closed(2);
  ok.commands(T + 5, [{ kind: "connect", link: 3 }]);
  t.is(ok.problem, undefined);

  const bad = new InvariantChecker();
  bad.commands(T, [{ kind: "connect", link: 1 }, { kind: "set-timer", delayMs: 30_000 }]);
  bad.commands(T + 10, [{ kind: "connect", link: 2 }]);
  t.is(bad.problem?.check, "second-link");
  t.regex(bad.problem!.message, /connect #2 while link 1 is open/);

  // Single-link machines (no link ids) too.
  const single = new InvariantChecker();
  single.commands(T, [{ kind: "connect" }, { kind: "set-timer", delayMs: 5 }, { kind: "connect" }]);
  t.is(single.problem?.check, "second-link");
});

test("checker: set-timer 0 four times in a row at one instant is a loop; three, or four across instants, is not", (t) => {
  const loop = new InvariantChecker();
  for (let i = 0; i < 4; i++) {
    loop.timerFired();
    loop.commands(T, [{ kind: "set-timer", delayMs: 0 }]);
  }
  t.is(loop.problem?.check, "timer-loop");

  const three = new InvariantChecker();
  for (let i = 0; i < 3; i++) three.commands(T, [{ kind: "set-timer", delayMs: 0 }]);
  three.commands(T, [{ kind: "set-timer", delayMs: 10 }, { kind: "set-timer", delayMs: 0 }, { kind: "set-timer", delayMs: 0 }]);
  for (let i = 0; i < 4; i++) three.commands(T + 1 + i, [{ kind: "set-timer", delayMs: 0 }]);
  t.is(three.problem, undefined);

  const nan = new InvariantChecker();
  nan.commands(T, [{ kind: "set-timer", delayMs: Number.NaN }]);
  t.is(nan.problem?.check, "bad-timer");
});

test("checker: more than 200 events at one instant is a livelock; publishing without a link is flagged", (t) => {
  const busy = new InvariantChecker();
  for (let i = 0; i < 200; i++) busy.event(T);
  t.is(busy.problem, undefined);
  busy.event(T);
  t.is(busy.problem?.check, "livelock");

  const orphan = new InvariantChecker();
  orphan.commands(T, [{ kind: "connect", link: 4 }, { kind: "close", link: 4 }, { kind: "publish", link: 4 }]);
  t.is(orphan.problem?.check, "closed-link");
});

// ---- the checks can fail: broken machines in the same worlds -------------------------------------------

/** Arms its timers at 0 ms and, once one fires, re-arms it at the same instant for ever. */
class LoopingRegistration implements RegistrationLike {
  #inner: RegistrationMachine;
  #own = false;
  constructor(inner: RegistrationMachine) {
    this.#inner = inner;
  }
  get phase(): string {
    return this.#inner.phase;
  }
  handle(event: RegistrationEvent, now: number): RegistrationCommand[] {
    if (event.kind === "timer" && this.#own) return [{ kind: "set-timer", delayMs: 0 }];
    const out = this.#inner.handle(event, now);
    if (out.some((c) => c.kind === "set-timer") && this.#inner.phase === "waiting") {
      this.#own = true;
      return [...out, { kind: "set-timer", delayMs: 0 }];
    }
    return out;
  }
}

/** Connects again on CONNACK 0, beside the live link. */
class DoubleConnectRegistration implements RegistrationLike {
  #inner: RegistrationMachine;
  constructor(inner: RegistrationMachine) {
    this.#inner = inner;
  }
  get phase(): string {
    return this.#inner.phase;
  }
  handle(event: RegistrationEvent, now: number): RegistrationCommand[] {
    const out = this.#inner.handle(event, now);
    if (event.kind !== "connack" || event.returnCode !== 0) return out;
    return [...out, { kind: "connect", options: { host: "dps.example", port: 8883, clientId: "c", username: "u", password: "p", keepAliveSeconds: 60, cleanSession: true } }];
  }
}

/** Forgets every timer: a silent peer leaves it waiting for ever. */
class ForgetfulRegistration implements RegistrationLike {
  #inner: RegistrationMachine;
  constructor(inner: RegistrationMachine) {
    this.#inner = inner;
  }
  get phase(): string {
    return this.#inner.phase;
  }
  handle(event: RegistrationEvent, now: number): RegistrationCommand[] {
    return this.#inner.handle(event, now).filter((c) => c.kind !== "set-timer");
  }
}

/** Throws a TypeError on a PUBACK it did not expect. */
class ThrowingHub implements HubLike {
  #inner: HubSession;
  constructor(inner: HubSession) {
    this.#inner = inner;
  }
  get phase(): string {
    return this.#inner.phase;
  }
  get queued(): number {
    return this.#inner.queued;
  }
  handle(event: HubEvent, now: number): HubCommand[] {
    if (event.kind === "puback" && this.#inner.queued === 0) throw new TypeError("cannot read properties of undefined (reading 'tag')");
    return this.#inner.handle(event, now);
  }
  send(body: Uint8Array, properties: Record<string, string> | undefined, now: number): { tag: number; commands: HubCommand[] } {
    return this.#inner.send(body, properties, now);
  }
}

/** Acts on late events of closed links (answers them with a reconnect). */
class StaleListeningLifecycle implements LifecycleLike {
  #inner: LifecycleMachine;
  #open = 0;
  constructor(inner: LifecycleMachine) {
    this.#inner = inner;
  }
  get phase(): string {
    return this.#inner.phase;
  }
  #track(out: LifecycleCommand[]): LifecycleCommand[] {
    for (const c of out) {
      if (c.kind === "connect") this.#open = c.link;
      if (c.kind === "close" && c.link === this.#open) this.#open = 0;
    }
    return out;
  }
  handle(event: LifecycleEvent, now: number): LifecycleCommand[] {
    const link = (event as { link?: number }).link;
    if (event.kind === "closed" && link === this.#open) this.#open = 0;
    if (link !== undefined && link !== this.#open) return [{ kind: "set-timer", delayMs: 1000 }];
    return this.#track(this.#inner.handle(event, now));
  }
  send(message: Uint8Array | string | object, properties: Record<string, string> | undefined, now: number): { id: number; commands: LifecycleCommand[] } {
    const sent = this.#inner.send(message, properties, now);
    return { id: sent.id, commands: this.#track(sent.commands) };
  }
}

function flagged(t: ExecutionContext, report: SequenceReport, check: string, rebuild: (index: number) => string | undefined): void {
  const hits = report.failureList.filter((f) => f.check === check);
  t.true(hits.length > 0, `no "${check}" failure in ${report.runs} sequences: ${JSON.stringify(report.failureList.map((f) => f.check))}`);
  // The reported index rebuilds the same failure.
  t.is(rebuild(hits[0].index), check);
  t.true(hits[0].trace.length > 0);
}

test("broken machines are caught: a 0 ms timer loop, a second link, a machine left with no timer", (t) => {
  const looping: RegistrationSequenceOptions = { create: (c, d) => new LoopingRegistration(new RegistrationMachine(c, d)) };
  flagged(t, fuzzRegistrationSequences(300, 1, looping), "timer-loop", (i) => registrationSequence(1, i, looping).failure?.check);
  const double: RegistrationSequenceOptions = { create: (c, d) => new DoubleConnectRegistration(new RegistrationMachine(c, d)) };
  flagged(t, fuzzRegistrationSequences(300, 1, double), "second-link", (i) => registrationSequence(1, i, double).failure?.check);
  const forgetful: RegistrationSequenceOptions = { create: (c, d) => new ForgetfulRegistration(new RegistrationMachine(c, d)) };
  flagged(t, fuzzRegistrationSequences(300, 1, forgetful), "stuck", (i) => registrationSequence(1, i, forgetful).failure?.check);
});

test("broken machines are caught: an exception from a hub session, a lifecycle that acts on closed links", (t) => {
  const throwing: HubSequenceOptions = { create: (c, d) => new ThrowingHub(new HubSession(c, d)) };
  const report = fuzzHubSequences(300, 1, throwing);
  flagged(t, report, "exception", (i) => hubSequence(1, i, throwing).failure?.check);
  t.regex(report.failureList.find((f) => f.check === "exception")!.message, /TypeError/);
  const stale: LifecycleSequenceOptions = { create: (c, d, h) => new StaleListeningLifecycle(new LifecycleMachine(c, d, h)) };
  flagged(t, fuzzLifecycleSequences(300, 1, stale), "stale", (i) => lifecycleSequence(1, i, stale).failure?.check);
});
