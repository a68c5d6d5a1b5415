/**
 * A portable world for the lifecycle machine (modules/lifecycle.ts): a virtual clock, a DPS and an
 * IoT Hub that answer every command the machine gives after a virtual round trip, a credential
 * cache, an application that sends telemetry, and fault injection at every step. Each run writes
 * down every command (secrets left out) and checks the invariants the issue names after every
 * step: no exception, never stuck, no timer re-armed at the same instant over and over, no second
 * link beside a live one, the cache invalidated only after a hub refusal, and it counts DPS
 * registrations per day. The same runs give the same logs on Node and XS (test/xs/lifecycle.xs.ts).
 */
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import type { CryptoPort } from "../../modules/crypto.js";
import { LifecycleMachine, type LifecycleCommand, type LifecycleEvent, type RuntimeConfig, type RuntimeEvent } from "../../modules/lifecycle.js";
import { T0 } from "./transcript.js";

export type WorldStep = "dps-connect" | "subscribe" | "register" | "poll" | "lookup" | "cache-write" | "hub-connect" | "publish";

/** What goes wrong at a step. */
export type WorldCause =
  | { readonly status: number; readonly retryAfter?: string }
  | { readonly connack: number }
  | { readonly suback: number }
  /** The connection closes instead of an answer. */
  | { readonly drop: true }
  /** No answer at all. */
  | { readonly timeout: true }
  /** The flash write fails. */
  | { readonly fail: true }
  /** An answer of this many bytes (over the device's limit: the host reports "oversize"). */
  | { readonly oversize: number };

export interface WorldFault {
  readonly step: WorldStep;
  readonly cause: WorldCause;
  /** The first `times` occurrences of the step (default: every one until `untilMs`, or for ever). */
  readonly times?: number;
  /** Only until this much virtual time has passed since the start. */
  readonly untilMs?: number;
}

export interface WorldOptions {
  readonly config?: Partial<RuntimeConfig>;
  readonly faults?: readonly WorldFault[];
  /** What the flash holds at boot (default nothing). */
  readonly cached?: { readonly assignedHub: string; readonly deviceId: string; readonly idScope?: string };
  /** What DPS assigns (default hub-1.azure-devices.net, the registration id). */
  readonly assign?: { readonly assignedHub: string; readonly deviceId?: string };
  /** The application sends a message this often once started (default: never). */
  readonly sendEveryMs?: number;
  /** Messages the application sends at boot. */
  readonly sendAtBoot?: readonly string[];
  /** What the application does, and when (ms after the start). */
  readonly actions?: readonly { readonly atMs: number; readonly do: "reprovision" | "stop" | "restart" | { readonly send: string } }[];
  /** The status lookup answers "assigned" (to the world's hub) even for a register DPS never processed. */
  readonly lookupAssigned?: boolean;
  /** Jitter draws in turn (repeating); default [0.5]. */
  readonly random?: readonly number[];
  readonly durationMs: number;
  /** Keep the command log (transcripts); the fault matrix runs without it. */
  readonly log?: boolean;
  readonly crypto: CryptoPort;
  /** Stop after this many handled events (a livelock guard); default 200,000. */
  readonly maxSteps?: number;
}

export interface WorldResult {
  readonly log: string[];
  /** Invariant violations, in order; empty for a good run. */
  readonly problems: string[];
  /** Register publishes per day since the start (day 0 first). */
  readonly registrationsPerDay: number[];
  readonly registrations: number;
  readonly hubConnects: number;
  readonly cacheWrites: number;
  readonly cacheInvalidations: number;
  /** The runtime state at the end, and every state change with its time (ms since start). */
  readonly finalState: string;
  readonly states: readonly { readonly at: number; readonly state: string; readonly code?: string }[];
  /** Virtual ms from the last fault to the first `connected` after it (undefined if never). */
  readonly recoveryMs?: number;
  readonly lastFaultAt?: number;
  readonly telemetry: { readonly sent: number; readonly dropped: number; readonly acknowledged: number };
  /** A short hash of the log, for comparing long runs between engines. */
  readonly digest: string;
}

const RTT = 40;
export const WORLD_HUB = "hub-1.azure-devices.net";
export const worldConfig: RuntimeConfig = { idScope: "0ne00000001", registrationId: "dev-001", symmetricKey: "cGFzc3dvcmQ=", globalEndpoint: "dps.example" };

interface Item {
  readonly at: number;
  readonly seq: number;
  /** The link an answer belongs to (0: none; -1: an application action, which survives a reboot). */
  readonly link: number;
  /** The boot it belongs to: what was in flight dies with a reboot. */
  readonly boot: number;
  readonly run: () => void;
}

/** Runs one world; never throws (an exception is a problem in the result). */
export function runWorld(o: WorldOptions): WorldResult {
  const log: string[] = [];
  const problems: string[] = [];
  const queue: Item[] = [];
  let seq = 0;
  let now = T0;
  const end = T0 + o.durationMs;
  const draws = o.random ?? [0.5];
  let draw = 0;
  const faults = (o.faults ?? []).map((f) => ({ ...f, used: 0 }));
  let lastFaultAt: number | undefined;
  let connectedAfterFault: number | undefined;
  const perDay: number[] = [];
  let registrations = 0;
  let hubConnects = 0;
  let cacheWrites = 0;
  let cacheInvalidations = 0;
  let record = o.cached ? { ...o.cached } : undefined;
  let sequence = record ? 1 : 0;
  let openLink = 0;
  let linkKind: "dps" | "hub" = "dps";
  let registered = false;
  let timerItem: Item | undefined;
  let lastHubRefusal = false;
  let sameInstant = 0;
  let lastInstant = -1;
  let steps = 0;
  let state = "idle";
  const states: { at: number; state: string; code?: string }[] = [];
  const telemetry = { sent: 0, dropped: 0, acknowledged: 0 };
  const assign = { assignedHub: o.assign?.assignedHub ?? WORLD_HUB, deviceId: o.assign?.deviceId ?? (o.config?.registrationId ?? worldConfig.registrationId) };

  const say = (line: string) => {
    if (o.log) log.push(`${((now - T0) / 1000).toFixed(3)} ${line}`);
  };
  let boots = 0;
  const schedule = (delay: number, link: number, run: () => void): Item => {
    const item = { at: now + delay, seq: seq++, link, boot: boots, run };
    queue.push(item);
    return item;
  };
  /** The fault for this occurrence of a step, if any. */
  const faultAt = (step: WorldStep): WorldCause | undefined => {
    for (const f of faults) {
      if (f.step !== step) continue;
      if (f.untilMs !== undefined && now - T0 >= f.untilMs) continue;
      if (f.times !== undefined && f.used >= f.times) continue;
      f.used++;
      lastFaultAt = now;
      connectedAfterFault = undefined;
      say(`! fault ${step} ${JSON.stringify(f.cause)}`);
      return f.cause;
    }
    return undefined;
  };

  const boot = () => new LifecycleMachine({ ...worldConfig, ...o.config }, { crypto: o.crypto, random: () => draws[draw++ % draws.length] }, { cache: true, lookup: true });
  let machine = boot();

  const feed = (event: LifecycleEvent): void => {
    steps++;
    if (now === lastInstant) sameInstant++;
    else {
      lastInstant = now;
      sameInstant = 0;
    }
    if (sameInstant > 500) throw new Error(`livelock: more than 500 events at +${now - T0} ms`);
    perform(machine.handle(event, now));
  };
  const linkEvent = (link: number, event: LifecycleEvent) => {
    if (link === openLink) feed(event);
  };
  const closeFromPeer = (link: number, kind: "closed" | "oversize" | "timeout", message: string) => {
    if (link !== openLink) return;
    openLink = 0;
    say(`> closed#${link} ${kind}`);
    feed({ kind: "closed", link, fault: { kind, message } });
  };
  const answerDps = (link: number, status: number, rid: string, body: unknown, retryAfter?: string) => {
    schedule(RTT, link, () => {
      const topic = `$dps/registrations/res/${status}/?$rid=${rid}${retryAfter !== undefined ? `&retry-after=${retryAfter}` : ""}`;
      say(`> ${topic}`);
      linkEvent(link, { kind: "message", link, topic, payload: utf8Encode(JSON.stringify(body)) });
    });
  };
  const applyCause = (link: number, cause: WorldCause, answer: (status: number, body: unknown, retryAfter?: string) => void): boolean => {
    if ("drop" in cause) {
      schedule(RTT, link, () => closeFromPeer(link, "closed", "the peer closed the connection"));
      return true;
    }
    if ("timeout" in cause) return true;
    if ("oversize" in cause) {
      schedule(RTT, link, () => closeFromPeer(link, "oversize", `a ${cause.oversize}-byte packet`));
      return true;
    }
    if ("status" in cause) {
      answer(cause.status, { errorCode: cause.status * 1000 + 1, trackingId: `trk-${cause.status}`, message: `Injected ${cause.status}.` }, cause.retryAfter);
      return true;
    }
    return false;
  };
  const state200 = () => ({ registrationId: worldConfig.registrationId, assignedHub: assign.assignedHub, deviceId: assign.deviceId, status: "assigned", substatus: "initialAssignment" });

  const onConnect = (link: number, c: Extract<LifecycleCommand, { kind: "connect" }>) => {
    linkKind = c.options.username.indexOf("/registrations/") > 0 ? "dps" : "hub";
    const step: WorldStep = linkKind === "dps" ? "dps-connect" : "hub-connect";
    if (linkKind === "hub") hubConnects++;
    const cause = faultAt(step);
    if (cause && "connack" in cause) {
      if (linkKind === "hub") lastHubRefusal = cause.connack === 4 || cause.connack === 5;
      schedule(RTT, link, () => {
        say(`> connack#${link} ${cause.connack}`);
        linkEvent(link, { kind: "connack", link, returnCode: cause.connack });
      });
      return;
    }
    if (cause && applyCause(link, cause, () => undefined)) return;
    if (linkKind === "hub") lastHubRefusal = false;
    schedule(RTT, link, () => {
      say(`> connack#${link} 0`);
      linkEvent(link, { kind: "connack", link, returnCode: 0 });
    });
  };
  const onPublish = (c: Extract<LifecycleCommand, { kind: "publish" }>) => {
    const link = c.link;
    if (linkKind === "hub") {
      telemetry.sent++;
      const text = utf8Decode(c.payload);
      const cause = text.indexOf("poison") >= 0 ? ({ drop: true } as WorldCause) : faultAt("publish");
      if (cause && applyCause(link, cause, () => undefined)) return;
      schedule(RTT, link, () => {
        say(`> puback#${link} ${c.tag}`);
        linkEvent(link, { kind: "puback", link, tag: c.tag! });
      });
      return;
    }
    const rid = /\$rid=([^&]*)/.exec(c.topic)?.[1] ?? "";
    const answer = (status: number, body: unknown, retryAfter?: string) => answerDps(link, status, rid, body, retryAfter);
    if (c.topic.indexOf("iotdps-register") >= 0) {
      registrations++;
      const day = Math.floor((now - T0) / 86_400_000);
      while (perDay.length <= day) perDay.push(0);
      perDay[day]++;
      const cause = faultAt("register");
      if (cause && applyCause(link, cause, answer)) return;
      registered = true;
      answer(202, { operationId: "op-1", status: "assigning" }, "1");
    } else {
      const cause = faultAt("poll");
      if (cause && applyCause(link, cause, answer)) return;
      answer(200, { operationId: "op-1", status: "assigned", registrationState: state200() });
    }
  };

  const perform = (commands: LifecycleCommand[]): void => {
    for (const c of commands) {
      switch (c.kind) {
        case "connect":
          if (openLink !== 0) problems.push(`+${now - T0} ms: connect#${c.link} while link ${openLink} is open`);
          openLink = c.link;
          say(`connect#${c.link} ${c.options.host}:${c.options.port} client=${c.options.clientId} user=${c.options.username}`);
          onConnect(c.link, c);
          break;
        case "subscribe": {
          say(`subscribe#${c.link} ${c.topic}`);
          const link = c.link;
          const cause = faultAt("subscribe");
          if (cause && "suback" in cause) {
            schedule(RTT, link, () => linkEvent(link, { kind: "suback", link, granted: [cause.suback] }));
            break;
          }
          if (cause && applyCause(link, cause, () => undefined)) break;
          schedule(RTT, link, () => linkEvent(link, { kind: "suback", link, granted: [1] }));
          break;
        }
        case "publish":
          say(`publish#${c.link} ${c.topic}${c.tag !== undefined ? ` tag=${c.tag}` : ""} ${JSON.stringify(utf8Decode(c.payload))}`);
          onPublish(c);
          break;
        case "close":
          say(`close#${c.link}`);
          if (openLink === c.link) openLink = 0;
          break;
        case "set-timer":
          say(`set-timer ${c.delayMs}`);
          if (timerItem) queue.splice(queue.indexOf(timerItem), 1);
          timerItem = schedule(c.delayMs, 0, () => {
            timerItem = undefined;
            say("> timer");
            feed({ kind: "timer" });
          });
          break;
        case "clear-timer":
          say("clear-timer");
          if (timerItem) queue.splice(queue.indexOf(timerItem), 1);
          timerItem = undefined;
          break;
        case "lookup": {
          say(`lookup ${c.request.path}`);
          const cause = faultAt("lookup");
          schedule(RTT, 0, () => {
            if (cause && ("drop" in cause || "timeout" in cause)) {
              if ("drop" in cause) feed({ kind: "lookup-failed", fault: { kind: "closed", message: "injected" } });
              return;
            }
            const status = cause && "status" in cause ? cause.status : registered || o.lookupAssigned ? 200 : 404;
            const body = status === 200 ? state200() : { errorCode: status * 1000 + 1, trackingId: "trk", message: "lookup" };
            say(`> lookup ${status}`);
            feed({ kind: "lookup-response", response: { status, headers: {}, body: utf8Encode(JSON.stringify(body)) } });
          });
          break;
        }
        case "cancel-lookup":
          say("cancel-lookup");
          break;
        case "cache-load":
          say("cache-load");
          schedule(0, 0, () =>
            feed(record ? { kind: "cache-loaded", assignment: { ...record, registrationId: worldConfig.registrationId, writtenAt: T0 }, detail: `sequence ${sequence}` } : { kind: "cache-loaded", detail: "no valid record" }),
          );
          break;
        case "cache-save": {
          say(`cache-save ${c.assignment.assignedHub} ${c.assignment.deviceId}`);
          cacheWrites++;
          const cause = faultAt("cache-write");
          const a = c.assignment;
          schedule(0, 0, () => {
            if (cause) return feed({ kind: "cache-failed", detail: "STORAGE: injected" });
            record = { assignedHub: a.assignedHub, deviceId: a.deviceId, idScope: a.idScope };
            sequence++;
            feed({ kind: "cache-saved", detail: `sequence ${sequence}` });
          });
          break;
        }
        case "cache-invalidate":
          say("cache-invalidate");
          cacheInvalidations++;
          if (!lastHubRefusal && record && !problemCached) problems.push(`+${now - T0} ms: the cache was invalidated without a hub refusal`);
          schedule(0, 0, () => {
            record = undefined;
            feed({ kind: "cache-invalidated" });
          });
          break;
        case "report":
          onReport(c.event);
          break;
      }
    }
  };
  // A cached record the machine must reject (a bad hub name) may be invalidated without a refusal.
  const problemCached = o.cached !== undefined && !/^[A-Za-z0-9.-]+$/.test(o.cached.assignedHub);

  const onReport = (e: RuntimeEvent) => {
    switch (e.source) {
      case "runtime":
        state = e.state;
        states.push(e.error ? { at: now - T0, state: e.state, code: e.error.code } : { at: now - T0, state: e.state });
        say(`runtime ${e.state}${e.error ? ` ${e.error.code}: ${e.error.message}` : ""}`);
        if (e.state === "connected" && lastFaultAt !== undefined && connectedAfterFault === undefined) connectedAfterFault = now;
        break;
      case "dps": {
        const s = e.status;
        say(`dps ${s.state} attempt=${s.attempt}${s.action ? ` action=${s.action}` : ""}${s.delayMs !== undefined ? ` delay=${s.delayMs}` : ""}${s.httpStatus ? ` status=${s.httpStatus}` : ""}${s.connack ? ` connack=${s.connack}` : ""}${s.fault ? ` fault=${s.fault}` : ""}`);
        break;
      }
      case "hub": {
        const s = e.status;
        say(`hub ${s.state} attempt=${s.attempt}${s.delayMs !== undefined ? ` delay=${s.delayMs}` : ""}${s.connack ? ` connack=${s.connack}` : ""}${s.fault ? ` fault=${s.fault}` : ""}`);
        break;
      }
      case "cache":
        say(`cache ${e.state}${e.detail ? ` ${e.detail}` : ""}`);
        break;
      case "assignment":
        say(`assigned ${e.assignment.assignedHub} ${e.assignment.deviceId} from ${e.assignment.source}`);
        break;
      case "telemetry":
        if (e.state === "sent") telemetry.acknowledged++;
        else telemetry.dropped++;
        say(`telemetry ${e.id} ${e.state}${e.reason ? `: ${e.reason}` : ""}`);
        break;
      case "message":
        say(`message ${e.topic}`);
        break;
    }
  };

  const send = (text: string) => {
    try {
      const { id, commands } = machine.send(text, undefined, now);
      say(`send ${id} ${JSON.stringify(text)}`);
      perform(commands);
    } catch (error) {
      say(`send refused: ${(error as { code?: string }).code}`);
    }
  };

  try {
    say("start");
    feed({ kind: "start" });
    for (const text of o.sendAtBoot ?? []) send(text);
    for (const a of o.actions ?? []) {
      schedule(a.atMs, -1, () => {
        if (typeof a.do === "object") return send(a.do.send);
        say(a.do);
        if (a.do === "reprovision") return feed({ kind: "reprovision" });
        perform(machine.handle({ kind: "stop" }, now));
        if (a.do === "restart") {
          // A reboot: the links and the timer die with the old machine; the flash stays.
          openLink = 0;
          boots++;
          timerItem = undefined;
          machine = boot();
          feed({ kind: "start" });
        }
      });
    }
    let nextSend = o.sendEveryMs !== undefined ? now + o.sendEveryMs : Number.POSITIVE_INFINITY;
    let n = 0;
    const limit = o.maxSteps ?? 200_000;
    for (;;) {
      if (steps > limit) throw new Error(`more than ${limit} events: a loop`);
      queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = queue[0];
      const at = Math.min(next ? next.at : Number.POSITIVE_INFINITY, nextSend);
      if (at > end) break;
      if (at === Number.POSITIVE_INFINITY) {
        if (state !== "failed" && state !== "stopped") problems.push(`+${now - T0} ms: stuck in "${state}": no timer, no answer pending, not final`);
        break;
      }
      now = at;
      if (nextSend <= (next ? next.at : Number.POSITIVE_INFINITY)) {
        nextSend += o.sendEveryMs!;
        send(`m${++n}`);
        continue;
      }
      queue.shift();
      if (next!.boot === boots || next!.link === -1) next!.run();
    }
    if (state !== "failed" && state !== "stopped" && timerItem === undefined && queue.length === 0) problems.push(`stuck at the end in "${state}"`);
    say("stop");
    perform(machine.handle({ kind: "stop" }, now));
  } catch (error) {
    problems.push(`exception at +${now - T0} ms: ${(error as Error).name}: ${(error as Error).message}`);
  }
  return {
    log,
    problems,
    registrationsPerDay: perDay,
    registrations,
    hubConnects,
    cacheWrites,
    cacheInvalidations,
    finalState: state,
    states,
    recoveryMs: lastFaultAt !== undefined && connectedAfterFault !== undefined ? connectedAfterFault - lastFaultAt : undefined,
    lastFaultAt: lastFaultAt !== undefined ? lastFaultAt - T0 : undefined,
    telemetry,
    digest: digest(log),
  };
}

/** FNV-1a over the log, as 8 hex digits. */
export function digest(lines: readonly string[]): string {
  let h = 0x811c9dc5;
  for (const line of lines) {
    for (let i = 0; i < line.length; i++) {
      h ^= line.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    h ^= 10;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}
