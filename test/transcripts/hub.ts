/**
 * Scripted transcripts of the hub session on a virtual clock, shared by the Node tests and the XS
 * tier: telemetry with PUBACK matching, the bounded queue, token renewal, and each hub refusal.
 */
import { portableCrypto } from "../../modules/sha256.js";
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import { HubSession, type HubCommand, type HubEvent, type HubSessionConfig } from "../../modules/hub-session.js";
import { retryPolicy, type RetryPolicyOverrides } from "../../modules/retry-policy.js";
import { T0 } from "../support/transcript.js";

export type HubStep =
  | { readonly timer: true }
  | { readonly after?: number; readonly event: HubEvent }
  | { readonly after?: number; readonly send: string; readonly properties?: Record<string, string> }
  /** Another run, after the last one's outcome. */
  | { readonly after?: number; readonly run: { readonly hubHost: string; readonly deviceId: string } };

export interface HubTranscript {
  readonly name: string;
  readonly config?: Partial<HubSessionConfig>;
  /** The run's hub and device (default hub-1.azure-devices.net, dev-001) and window. */
  readonly start?: { readonly hubHost?: string; readonly deviceId?: string; readonly windowMs?: number };
  readonly policy?: RetryPolicyOverrides;
  readonly steps: readonly HubStep[];
  readonly expectInOrder: readonly string[];
  readonly expectNever?: readonly string[];
  readonly last: string;
}

export const hubConfig: HubSessionConfig = { symmetricKey: "cGFzc3dvcmQ=" };

export function runHubTranscript(t: HubTranscript): string[] {
  const log: string[] = [];
  let now = T0;
  let deadline: number | undefined;
  const apply = (commands: HubCommand[]) => {
    for (const c of commands) {
      if (c.kind === "set-timer") deadline = now + c.delayMs;
      if (c.kind === "clear-timer") deadline = undefined;
      log.push(describeHub(c, now));
    }
  };
  try {
    const session = new HubSession({ ...hubConfig, ...t.config, policy: retryPolicy(t.policy) }, { crypto: portableCrypto, random: () => 0.5 });
    apply(session.handle({ kind: "start", hubHost: "hub-1.azure-devices.net", deviceId: "dev-001", ...t.start }, now));
    for (const step of t.steps) {
      if ("timer" in step) {
        if (deadline === undefined) throw new Error("no timer set");
        now = deadline;
        deadline = undefined;
        log.push(`> timer +${now - T0}`);
        apply(session.handle({ kind: "timer" }, now));
      } else if ("run" in step) {
        now += step.after ?? 0;
        log.push(`> start ${step.run.hubHost} ${step.run.deviceId}`);
        apply(session.handle({ kind: "start", ...step.run }, now));
      } else if ("send" in step) {
        now += step.after ?? 0;
        log.push(`> send ${step.send}`);
        const { tag, commands } = session.send(utf8Encode(step.send), step.properties, now);
        log.push(`tag ${tag}`);
        apply(commands);
      } else {
        now += step.after ?? 0;
        log.push(`> ${step.event.kind}${step.event.kind === "connack" ? ` ${step.event.returnCode}` : step.event.kind === "puback" ? ` ${step.event.tag}` : step.event.kind === "closed" ? ` ${step.event.fault.kind}` : ""}`);
        apply(session.handle(step.event, now));
      }
    }
  } catch (error) {
    log.push(`error ${(error as { code?: string }).code ?? "?"} ${(error as Error).message}`);
  }
  return log;
}

function describeHub(c: HubCommand, now: number): string {
  switch (c.kind) {
    case "connect": {
      const se = /se=([0-9]+)/.exec(c.options.password);
      return `connect ${c.options.host}:${c.options.port} client=${c.options.clientId} user=${c.options.username} keepalive=${c.options.keepAliveSeconds} token-expires=+${se ? Number(se[1]) - Math.floor(now / 1000) : "?"}s`;
    }
    case "publish":
      return `publish tag=${c.tag} ${c.topic} ${utf8Decode(c.payload)}`;
    case "status": {
      const s = c.status as unknown as Record<string, unknown>;
      let line = `status ${s.state} attempt=${s.attempt}`;
      for (const k of ["delayMs", "connack", "fault", "queued"]) if (s[k] !== undefined) line += ` ${k}=${s[k]}`;
      return line;
    }
    case "done":
      return `done ${c.outcome.kind}` + (c.outcome.kind === "stopped" ? ` queued=${c.outcome.queued}` : c.outcome.kind === "failed" ? ` ${c.outcome.error.code}` : ` ${c.outcome.reason.code} connack=${c.outcome.reason.connack ?? "-"}`);
    case "set-timer":
      return `set-timer ${c.delayMs}`;
    case "sent":
      return `sent ${c.tag}`;
    case "dropped":
      return `dropped ${c.tag}: ${c.reason}`;
    case "received":
      return `received ${c.topic}`;
    default:
      return c.kind;
  }
}

const connack0: HubStep = { event: { kind: "connack", returnCode: 0 } };
const closed: HubStep = { event: { kind: "closed", fault: { kind: "closed", message: "test" } } };

export const hubTranscripts: HubTranscript[] = [
  {
    name: "connects with a hub token and sends telemetry; PUBACK matched by tag",
    steps: [connack0, { send: "m1" }, { send: "m2", properties: { "$.ct": "application/json", level: "a b" } }, { event: { kind: "puback", tag: 2 } }, { event: { kind: "puback", tag: 1 } }],
    expectInOrder: [
      "status connecting attempt=0 queued=0",
      "connect hub-1.azure-devices.net:8883 client=dev-001 user=hub-1.azure-devices.net/dev-001/?api-version=2021-04-12 keepalive=60 token-expires=+3600s",
      "set-timer 30000",
      "status connected attempt=0 queued=0",
      "set-timer 60000",
      "publish tag=1 devices/dev-001/messages/events/ m1",
      "publish tag=2 devices/dev-001/messages/events/%24.ct=application%2Fjson&level=a%20b m2",
      "> puback 2",
      "sent 2",
      "> puback 1",
      "sent 1",
    ],
    last: "set-timer 3240000",
  },
  {
    name: "messages queued before CONNACK go out after it",
    steps: [{ send: "early" }, connack0],
    expectInOrder: ["tag 1", "> connack 0", "status connected", "publish tag=1 devices/dev-001/messages/events/ early"],
    last: "publish tag=1",
  },
  {
    name: "the queue is bounded: QUEUE_FULL says what to do",
    config: { maxQueue: 2 },
    steps: [{ send: "a" }, { send: "b" }, { send: "c" }],
    expectInOrder: ["tag 1", "tag 2", "error QUEUE_FULL"],
    last: "error QUEUE_FULL the outgoing queue is full: 2 messages",
  },
  {
    name: "at most maxInFlight publishes await PUBACK; the next goes out when one is acknowledged",
    config: { maxInFlight: 1 },
    steps: [connack0, { send: "a" }, { send: "b" }, { event: { kind: "puback", tag: 1 } }],
    expectInOrder: ["publish tag=1", "> send b", "tag 2", "> puback 1", "sent 1", "publish tag=2"],
    last: "publish tag=2",
  },
  {
    name: "the token is renewed before it expires by reconnecting; unacknowledged messages go out again",
    config: { tokenLifetimeSeconds: 120 },
    policy: { timeouts: { ackMs: 100_000 } },
    steps: [connack0, { send: "a" }, { event: { kind: "puback", tag: 99 } }, { timer: true }, connack0],
    expectInOrder: ["set-timer 60000", "publish tag=1", "> puback 99", "> timer +60000", "close", "status renewing attempt=0 queued=1", "token-expires=+120s", "> connack 0", "publish tag=1"],
    last: "set-timer",
  },
  {
    name: "renewal at 90% of the token lifetime",
    steps: [connack0, { timer: true }, { timer: true }, connack0],
    expectInOrder: ["> timer +60000", "set-timer 3180000", "> timer +3240000", "close", "status renewing", "connect hub-1.azure-devices.net:8883", "token-expires=+3600s", "status connected"],
    last: "set-timer",
  },
  {
    name: "CONNACK 5 (disabled, deleted or bad token): refused, the cached identity is no longer good",
    steps: [{ event: { kind: "connack", returnCode: 5 } }],
    expectInOrder: ["close", "status refused attempt=0 connack=5", "done refused HUB_REFUSED connack=5"],
    last: "done refused",
  },
  {
    name: "CONNACK 4: refused",
    steps: [{ event: { kind: "connack", returnCode: 4 } }],
    expectInOrder: ["done refused HUB_REFUSED connack=4"],
    last: "done refused",
  },
  {
    name: "CONNACK 3: retry the same hub at least 5 s later, then connect",
    steps: [{ event: { kind: "connack", returnCode: 3 } }, { timer: true }, connack0],
    expectInOrder: ["status retrying attempt=1 delayMs=6250 connack=3", "set-timer 6250", "> timer +6250", "connect hub-1", "status connected attempt=1"],
    expectNever: ["reprovision"],
    last: "set-timer",
  },
  {
    name: "CONNACK 1 and 2 are terminal",
    steps: [{ event: { kind: "connack", returnCode: 2 } }],
    expectInOrder: ["done failed HUB_REFUSED"],
    last: "done failed",
  },
  {
    name: "a dropped connection: the unacknowledged message is resent after the reconnect",
    steps: [connack0, { send: "a" }, closed, { timer: true }, connack0],
    expectInOrder: ["publish tag=1", "> closed closed", "status retrying attempt=1 delayMs=6250 fault=closed queued=1", "> timer", "connect", "status connected", "publish tag=1"],
    last: "publish tag=1",
  },
  {
    name: "no CONNACK within the connect timeout: close and retry",
    steps: [{ timer: true }],
    expectInOrder: ["> timer +30000", "close", "status retrying attempt=1 delayMs=6250 fault=timeout"],
    last: "set-timer 6250",
  },
  {
    name: "no PUBACK within the ack timeout: the link is dead, reconnect",
    steps: [connack0, { send: "a" }, { timer: true }],
    expectInOrder: ["publish tag=1", "> timer +30000", "close", "fault=timeout queued=1"],
    last: "set-timer",
  },
  {
    name: "the hub unreachable for the whole retry window: unreachable (the lifecycle asks DPS)",
    policy: { hub: { windowMs: 20_000 } },
    steps: [{ event: { kind: "connack", returnCode: 3 } }, { timer: true }, { event: { kind: "connack", returnCode: 3 } }, { timer: true }, { event: { kind: "connack", returnCode: 3 } }, { timer: true }, { event: { kind: "connack", returnCode: 3 } }],
    expectInOrder: ["attempt=1", "attempt=2", "attempt=3", "status unreachable", "done unreachable HUB_UNREACHABLE connack=3"],
    last: "done unreachable",
  },
  {
    name: "a session that drops before it is stable is a failure: the backoff goes on instead of starting over",
    steps: [connack0, closed, { timer: true }, connack0, closed, { timer: true }, connack0, { timer: true }, closed],
    expectInOrder: [
      "status retrying attempt=1 delayMs=6250 fault=closed",
      "status connected attempt=1",
      "status retrying attempt=2 delayMs=12500 fault=closed",
      "status connected attempt=2",
      "> timer",
      "> closed closed",
      "status retrying attempt=1 delayMs=6250 fault=closed",
    ],
    last: "set-timer 6250",
  },
  {
    name: "a message the hub keeps closing the link on is dropped after 3 losses, and the queue moves on",
    steps: [
      connack0,
      { send: "poison" },
      { send: "fine" },
      closed,
      { timer: true },
      connack0,
      closed,
      { timer: true },
      connack0,
      closed,
      { timer: true },
      connack0,
      { event: { kind: "puback", tag: 2 } },
    ],
    expectInOrder: [
      "publish tag=1 devices/dev-001/messages/events/ poison",
      "publish tag=2 devices/dev-001/messages/events/ fine",
      "> closed closed",
      "status retrying attempt=1",
      "publish tag=1",
      "> closed closed",
      "status retrying attempt=2",
      "publish tag=1",
      "> closed closed",
      "dropped 1: the hub ended the connection 3 times in a row",
      "status retrying attempt=3",
      "status connected",
      "publish tag=2 devices/dev-001/messages/events/ fine",
      "> puback 2",
      "sent 2",
    ],
    expectNever: ["sent 1"],
    last: "set-timer",
  },
  {
    name: "a short token and a slow CONNACK: renewal waits for the session instead of a 0 ms timer loop",
    config: { tokenLifetimeSeconds: 60 },
    steps: [{ after: 2_000, event: { kind: "connack", returnCode: 0 } }, { timer: true }, { after: 2_000, event: { kind: "connack", returnCode: 0 } }, { timer: true }],
    expectInOrder: ["token-expires=+60s", "set-timer 30000", "> connack 0", "status connected", "> timer +30000", "close", "status renewing", "token-expires=+60s", "> connack 0", "status connected", "> timer +60000", "status renewing"],
    expectNever: ["set-timer 0", "retrying"],
    last: "set-timer 30000",
  },
  {
    name: "a CONNACK on an open session closes that link before anything reconnects",
    steps: [connack0, connack0, { timer: true }],
    expectInOrder: ["status connected", "> connack 0", "close", "status retrying attempt=1 delayMs=6250 fault=protocol", "> timer", "status connecting attempt=1", "connect hub-1"],
    last: "set-timer 30000",
  },
  {
    name: "one queue across runs: a message sent after a refusal keeps its tag and goes out in the next run, on that run's device id",
    steps: [{ event: { kind: "connack", returnCode: 5 } }, { send: "waiting" }, { run: { hubHost: "hub-2.azure-devices.net", deviceId: "dev:2" } }, connack0],
    expectInOrder: ["done refused", "> send waiting", "tag 1", "> start hub-2.azure-devices.net dev:2", "connect hub-2.azure-devices.net:8883 client=dev:2 user=hub-2.azure-devices.net/dev:2/", "status connected", "publish tag=1 devices/dev:2/messages/events/ waiting"],
    last: "publish tag=1",
  },
  {
    name: "a run to a hub the session cannot use is refused before anything is sent",
    start: { hubHost: "hub-1.azure-devices.net:8883" },
    steps: [],
    expectInOrder: ["error INVALID_ARGUMENT the assigned hub"],
    last: "error INVALID_ARGUMENT",
  },
  {
    name: "stop ends the run and says how much is still queued (kept for the next run)",
    steps: [{ send: "a" }, { send: "b" }, { event: { kind: "stop" } }],
    expectInOrder: ["close", "clear-timer", "status stopped", "done stopped queued=2"],
    last: "done stopped queued=2",
  },
  {
    name: "an oversize message is refused before it is queued",
    config: { maxMessageBytes: 4 },
    steps: [{ send: "12345" }],
    expectInOrder: ["error OVERSIZE"],
    last: "error OVERSIZE",
  },
];

/** Checks a log against a transcript's expectations (the feature transcripts use it too). */
export function checkHubTranscript(t: Pick<HubTranscript, "expectInOrder" | "expectNever" | "last">, log: string[]): string[] {
  const problems: string[] = [];
  const text = log.join("\n");
  let from = 0;
  for (const needle of t.expectInOrder) {
    const i = text.indexOf(needle, from);
    if (i < 0) problems.push(`expected "${needle}" after offset ${from} in:\n${text}`);
    else from = i + needle.length;
  }
  for (const needle of t.expectNever ?? []) if (text.includes(needle)) problems.push(`"${needle}" must not appear in:\n${text}`);
  if (!(log[log.length - 1] ?? "").startsWith(t.last)) problems.push(`last line should start with "${t.last}":\n${text}`);
  return problems;
}
