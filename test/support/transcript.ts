/**
 * Drives a RegistrationMachine through a scripted transcript on a virtual clock and writes down
 * every command it answers with, one line each. Portable: the Node tests and the XS tier run the
 * same transcripts through this same code, and their logs must be identical.
 */
import { portableCrypto } from "../../modules/sha256.js";
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import {
  RegistrationMachine,
  type RegistrationCommand,
  type RegistrationConfig,
  type RegistrationEvent,
} from "../../modules/registration.js";
import { retryPolicy, type RetryPolicy } from "../../modules/retry-policy.js";

/** 2026-01-01T00:00:00Z, the virtual clock's start. */
export const T0 = 1_767_225_600_000;

export type Step =
  /** Fire the armed timer: the clock moves to its deadline. */
  | { readonly timer: true }
  /** Let time pass, then deliver an event. */
  | { readonly after?: number; readonly event: RegistrationEvent };

export interface Transcript {
  readonly name: string;
  readonly config?: Partial<RegistrationConfig>;
  readonly policy?: Parameters<typeof retryPolicy>[0];
  /** Values the jitter source returns in turn (repeating); default [0.5]. */
  readonly random?: readonly number[];
  /** The clock at start (ms since 1970); default T0. */
  readonly startAt?: number;
  readonly steps: readonly Step[];
  /** The exact command log, when the transcript pins it. */
  readonly expect?: readonly string[];
  /** Substrings that must appear in the log, in this order. */
  readonly expectInOrder?: readonly string[];
  /** Substrings that must not appear anywhere in the log. */
  readonly expectNever?: readonly string[];
  /** The last line of the log. */
  readonly outcome: string;
}

export const baseConfig: RegistrationConfig = {
  idScope: "0ne00000001",
  registrationId: "dev-001",
  symmetricKey: "cGFzc3dvcmQ=",
  host: "dps.example",
  port: 8883,
  lookup: { host: "dps.example", port: 443 },
};

export interface TranscriptRun {
  readonly log: string[];
  readonly error?: string;
}

/** Runs one transcript; never throws (an error ends the log with `error ...`). */
export function runTranscript(t: Transcript): TranscriptRun {
  const log: string[] = [];
  const values = t.random ?? [0.5];
  let draws = 0;
  const policy: RetryPolicy = retryPolicy(t.policy ?? {});
  let now = t.startAt ?? T0;
  let timerDeadline: number | undefined;
  try {
    const machine = new RegistrationMachine(
      { ...baseConfig, ...t.config, policy },
      { crypto: portableCrypto, random: () => values[draws++ % values.length] },
    );
    const apply = (commands: RegistrationCommand[]): void => {
      for (const command of commands) {
        if (command.kind === "set-timer") timerDeadline = now + command.delayMs;
        if (command.kind === "clear-timer") timerDeadline = undefined;
        log.push(describe(command, now));
      }
    };
    apply(machine.handle({ kind: "start" }, now));
    for (const step of t.steps) {
      if ("timer" in step) {
        if (timerDeadline === undefined) throw new Error("the transcript fires a timer but none is set");
        now = timerDeadline;
        timerDeadline = undefined;
        log.push(`> timer +${now - T0}`);
        apply(machine.handle({ kind: "timer" }, now));
      } else {
        now += step.after ?? 0;
        log.push(`> ${describeEvent(step.event)}`);
        apply(machine.handle(step.event, now));
      }
    }
  } catch (error) {
    const e = error as { code?: string; message?: string };
    log.push(`error ${e.code ?? "?"} ${e.message ?? String(error)}`);
    return { log, error: String(error) };
  }
  return { log };
}

/** One line per command, secrets left out (the token is shown by its expiry only). */
export function describe(command: RegistrationCommand, now: number): string {
  switch (command.kind) {
    case "connect": {
      const o = command.options;
      const se = /[?&]?se=([0-9]+)/.exec(o.password);
      return `connect ${o.host}:${o.port} client=${o.clientId} user=${o.username} keepalive=${o.keepAliveSeconds}${o.maxPacketBytes ? ` max-packet=${o.maxPacketBytes}` : ""} token-expires=+${se ? Number(se[1]) - Math.floor(now / 1000) : "?"}s`;
    }
    case "subscribe":
      return `subscribe ${command.topic} qos=${command.qos}`;
    case "publish":
      return `publish ${command.topic} ${JSON.stringify(utf8Decode(command.payload))}`;
    case "close":
      return "close";
    case "set-timer":
      return `set-timer ${command.delayMs}`;
    case "clear-timer":
      return "clear-timer";
    case "lookup":
      return `lookup ${command.request.method} ${command.request.host}:${command.request.port}${command.request.path} ${utf8Decode(command.request.body)}`;
    case "cancel-lookup":
      return "cancel-lookup";
    case "status": {
      const s = command.status as unknown as Record<string, unknown>;
      let line = `status ${s.state} attempt=${s.attempt}`;
      for (const key of ["action", "delayMs", "httpStatus", "errorCode", "connack", "fault", "trackingId", "operationId", "assignedHub", "deviceId"]) {
        if (s[key] !== undefined) line += ` ${key}=${s[key]}`;
      }
      return line;
    }
    case "done": {
      const o = command.outcome;
      if (o.kind === "assigned") {
        const chain = o.registrationState.issuedCertificateChain;
        return `done assigned via=${o.via} hub=${o.registrationState.assignedHub} device=${o.registrationState.deviceId}${chain ? ` issued-chain=${chain.length}` : ""}`;
      }
      if (o.kind === "failed") return `done failed ${o.error.code}${o.recheck ? " recheck" : ""}` + (o.error.httpStatus ? ` http=${o.error.httpStatus}` : "") + (o.error.errorCode ? ` code=${o.error.errorCode}` : "") + (o.error.trackingId ? ` tracking=${o.error.trackingId}` : "");
      if (o.kind === "fallback") return `done fallback ${o.reason.code}` + (o.reason.httpStatus ? ` http=${o.reason.httpStatus}` : "");
      return "done stopped";
    }
  }
}

function describeEvent(e: RegistrationEvent): string {
  switch (e.kind) {
    case "message":
      return `message ${e.topic} ${JSON.stringify(safeText(e.payload))}`;
    case "connack":
      return `connack ${e.returnCode}`;
    case "suback":
      return `suback ${e.granted.join(",")}`;
    case "closed":
    case "lookup-failed":
      return `${e.kind} ${e.fault.kind}`;
    case "lookup-response":
      return `lookup-response ${e.response.status} ${JSON.stringify(safeText(e.response.body))}`;
    default:
      return e.kind;
  }
}

function safeText(bytes: Uint8Array): string {
  try {
    return utf8Decode(bytes);
  } catch {
    return `<${bytes.length} bytes, not UTF-8>`;
  }
}

// Event builders for transcripts.

export function connack(returnCode = 0): Step {
  return { event: { kind: "connack", returnCode } };
}

export function suback(granted = 1): Step {
  return { event: { kind: "suback", granted: [granted] } };
}

export function closed(kind: "dns" | "refused" | "tls" | "closed" | "protocol" | "oversize" | "timeout" = "closed"): Step {
  return { event: { kind: "closed", fault: { kind, message: `test ${kind}` } } };
}

export function timer(): Step {
  return { timer: true };
}

/** A DPS answer on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after=..]` (optionally reordered). */
export function answer(status: number, rid: string | number, body: unknown, options: { retryAfter?: string; retryFirst?: boolean; after?: number } = {}): Step {
  let query = `$rid=${rid}`;
  if (options.retryAfter !== undefined) query = options.retryFirst ? `retry-after=${options.retryAfter}&${query}` : `${query}&retry-after=${options.retryAfter}`;
  const payload = typeof body === "string" ? utf8Encode(body) : utf8Encode(JSON.stringify(body));
  return { after: options.after ?? 0, event: { kind: "message", topic: `$dps/registrations/res/${status}/?${query}`, payload } };
}

export function lookupAnswer(status: number, body: unknown, headers: Record<string, string> = {}): Step {
  const payload = typeof body === "string" ? utf8Encode(body) : utf8Encode(JSON.stringify(body));
  return { event: { kind: "lookup-response", response: { status, headers, body: payload } } };
}

export const assignedState = {
  registrationId: "dev-001",
  createdDateTimeUtc: "2026-01-01T00:00:01.000Z",
  assignedHub: "hub-1.azure-devices.net",
  deviceId: "dev-001",
  status: "assigned",
  substatus: "initialAssignment",
  lastUpdatedDateTimeUtc: "2026-01-01T00:00:02.000Z",
  etag: "IjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMCI=",
};

export const assigning = { operationId: "4.d0d2e1f1.op-1", status: "assigning" };
export const assignedBody = { operationId: "4.d0d2e1f1.op-1", status: "assigned", registrationState: assignedState };

export function errorBody(errorCode: number, message = "test error"): Record<string, unknown> {
  return { errorCode, trackingId: `trk-${errorCode}`, message, timestampUtc: "2026-01-01T00:00:00.000Z" };
}

/** Checks a run against its transcript's expectations; returns the problems found. */
export function checkTranscript(t: Transcript, run: TranscriptRun): string[] {
  const problems: string[] = [];
  const log = run.log;
  if (t.expect) {
    const want = t.expect.join("\n");
    const got = log.join("\n");
    if (want !== got) problems.push(`log differs:\n--- expected\n${want}\n--- got\n${got}`);
  }
  const text = log.join("\n");
  let from = 0;
  for (const needle of t.expectInOrder ?? []) {
    const index = text.indexOf(needle, from);
    if (index < 0) problems.push(`expected "${needle}" after offset ${from} of:\n${text}`);
    else from = index + needle.length;
  }
  for (const needle of t.expectNever ?? []) {
    const line = log.find((l) => l.includes(needle));
    if (line) problems.push(`"${needle}" must not appear, but found "${line}"`);
  }
  const last = log[log.length - 1] ?? "";
  if (!last.startsWith(t.outcome)) problems.push(`outcome: expected "${t.outcome}", last line is "${last}"\n${log.join("\n")}`);
  return problems;
}
