/**
 * The DPS registration state machine, sans-I/O. It owns no socket, timer or clock: a host feeds it
 * events with the time they happened (`handle(event, now)`) and performs the commands it answers
 * with (connect, subscribe, publish, close, set or clear its one timer, run an HTTPS lookup,
 * report a status, finish). The same transcript of events gives the same commands on any engine.
 *
 *   idle ──start──▶ connecting ──CONNACK 0──▶ subscribing ──SUBACK──▶ awaiting-response
 *   awaiting-response ──202──▶ waiting ──timer──▶ awaiting-response (poll) ──200 assigned──▶ assigned
 *   any failure ──retry policy──▶ waiting (retry, reauthenticate, recover) | looking-up | failed
 *
 * Every wait has a timeout; a response whose `$rid` is not the one in flight is ignored; every
 * retry counts against a budget, so no path loops forever without saying so.
 */
import type { CryptoPort } from "./crypto.js";
import { clause, copyDefined, DpsError, excerpt, PeerError, UsageError, type ErrorCode } from "./errors.js";
import { base64Decode } from "./encoding.js";
import {
  DPS_MQTT_PORT,
  dpsCredentials,
  lookupRequest,
  parseLookupResponse,
  readResponse,
  POLL_PAYLOAD,
  pollTopic,
  registerPayload,
  DPS_CSR_API_VERSION,
  registerTopic,
  SUBSCRIBE_TOPIC,
  type DpsAnswer,
  type DpsResponse,
  type ErrorBody,
  type LookupResult,
  type RegistrationState,
} from "./dps-protocol.js";
import type { HttpsRequest, HttpsResponse, MqttConnectOptions, RandomSource, TransportFault, TransportFaultKind } from "./ports.js";
import {
  actionForConnack,
  actionForFault,
  actionForStatus,
  connackMeaning,
  defaultRetryPolicy,
  pollDelayMs,
  retryDelayMs,
  type FaultKey,
  type RetryAction,
  type RetryPolicy,
} from "./retry-policy.js";
import { dpsSasToken, sasExpiry, type ResourceForm } from "./sas.js";

export interface RegistrationConfig {
  readonly idScope: string;
  readonly registrationId: string;
  /** The device's key (base64): individual, or already derived from the group key. */
  readonly symmetricKey: string;
  /** DPS MQTT endpoint; default global.azure-devices-provisioning.net:8883. */
  readonly host: string;
  readonly port?: number;
  /** HTTPS endpoint of the registration status lookup; no lookup when undefined. */
  readonly lookup?: { readonly host: string; readonly port?: number };
  /** Custom allocation data sent with the register request. */
  readonly payload?: unknown;
  /**
   * A certificate signing request (base64 DER, modules/csr.ts) for an operational certificate:
   * sent with the register request, under DPS API 2025-07-01-preview; the issued chain comes back
   * in the registration state (`issuedCertificateChain`).
   */
  readonly certificateSigningRequest?: string;
  /** Default 3600 s. */
  readonly tokenLifetimeSeconds?: number;
  readonly resourceForm?: ResourceForm;
  readonly apiVersion?: string;
  readonly userAgent?: string;
  /** MQTT keepalive toward DPS; default 60 s. */
  readonly keepAliveSeconds?: number;
  /**
   * Send SUBSCRIBE and the register PUBLISH right behind CONNECT instead of waiting for CONNACK and
   * SUBACK (MQTT 3.1.1 allows it; the broker handles packets in order). Saves two round trips.
   * Default true.
   */
  readonly pipeline?: boolean;
  /** True when the caller holds a cached assignment it can fall back to on a DPS 5xx. */
  readonly hasCachedAssignment?: boolean;
  readonly policy?: RetryPolicy;
  /** Retries in this run; default `policy.budget.maxAttempts` (the lifecycle's long tail gives 0). */
  readonly maxAttempts?: number;
  /** Registrations with a fresh token in this run; default `policy.budget.maxReauthentications`. */
  readonly maxReauthentications?: number;
  /** A hub that has just refused the device: a status lookup naming it is not trusted (register instead). */
  readonly distrustHub?: string;
  /** The largest DPS answer accepted, in bytes (`MqttConnectOptions.maxPacketBytes`); default 16 KiB. */
  readonly maxAnswerBytes?: number;
}

/** The default of `maxAnswerBytes`: room for a trust bundle of a few certificates. */
export const DPS_MAX_ANSWER_BYTES = 16 * 1024;

export interface RegistrationDeps {
  readonly crypto: CryptoPort;
  /** Jitter source, [0, 1). */
  readonly random: RandomSource;
}

export type RegistrationEvent =
  | { readonly kind: "start" }
  | { readonly kind: "connack"; readonly returnCode: number }
  | { readonly kind: "suback"; readonly granted: readonly number[] }
  /** `oversize`: the host skipped a body of that many bytes (over `maxAnswerBytes`). */
  | { readonly kind: "message"; readonly topic: string; readonly payload: Uint8Array; readonly oversize?: number }
  | { readonly kind: "closed"; readonly fault: TransportFault }
  | { readonly kind: "timer" }
  | { readonly kind: "lookup-response"; readonly response: HttpsResponse }
  | { readonly kind: "lookup-failed"; readonly fault: TransportFault }
  | { readonly kind: "stop" };

export type RegistrationPhase =
  | "idle"
  | "connecting"
  | "subscribing"
  | "awaiting-response"
  | "waiting"
  | "looking-up"
  | "assigned"
  | "failed"
  | "fallback"
  | "stopped";

/** What a status event says; hosts log it and firmware shows it. Never carries a secret. */
export interface RegistrationStatus {
  readonly state:
    | "connecting"
    | "registering"
    | "assigning"
    | "polling"
    | "retrying"
    | "looking-up"
    | "assigned"
    | "failed"
    | "fallback"
    | "stopped";
  /** Retries so far (0 on the first try). */
  readonly attempt: number;
  /** Wait before the next step, when one is scheduled. */
  readonly delayMs?: number;
  readonly httpStatus?: number;
  /** The six-digit DPS error code. */
  readonly errorCode?: number;
  readonly trackingId?: string;
  readonly message?: string;
  readonly connack?: number;
  readonly fault?: FaultKey;
  readonly operationId?: string;
  readonly assignedHub?: string;
  readonly deviceId?: string;
  /** The action the retry policy chose. */
  readonly action?: RetryAction;
}

export interface FailureDiagnostics {
  readonly code: ErrorCode;
  readonly message: string;
  readonly httpStatus?: number;
  readonly errorCode?: number;
  readonly trackingId?: string;
}

export type RegistrationOutcome =
  | { readonly kind: "assigned"; readonly registrationState: RegistrationState; readonly via: "register" | "lookup" }
  | { readonly kind: "fallback"; readonly reason: FailureDiagnostics }
  /** `recheck`: time can fix it (an exhausted budget, a refusal, a disabled enrollment); false for a wrong request. */
  | { readonly kind: "failed"; readonly error: FailureDiagnostics; readonly recheck: boolean }
  | { readonly kind: "stopped" };

export type RegistrationCommand =
  | { readonly kind: "connect"; readonly options: MqttConnectOptions }
  | { readonly kind: "subscribe"; readonly topic: string; readonly qos: 1 }
  | { readonly kind: "publish"; readonly topic: string; readonly payload: Uint8Array; readonly qos: 1 }
  | { readonly kind: "close" }
  | { readonly kind: "set-timer"; readonly delayMs: number }
  | { readonly kind: "clear-timer" }
  | { readonly kind: "lookup"; readonly request: HttpsRequest }
  | { readonly kind: "cancel-lookup" }
  | { readonly kind: "status"; readonly status: RegistrationStatus }
  | { readonly kind: "done"; readonly outcome: RegistrationOutcome };

type Step = "register" | "poll" | "lookup";

interface Context {
  readonly config: RegistrationConfig;
  readonly deps: RegistrationDeps;
  readonly policy: RetryPolicy;
  readonly out: RegistrationCommand[];
  now: number;
  phase: RegistrationPhase;
  /** What to do when the connection is ready or the wait is over. */
  step: Step;
  /** A connect command was given and neither a close command nor a closed event followed. */
  linkOpen: boolean;
  connected: boolean;
  subscribed: boolean;
  /** SUBSCRIBE written on this connection (pipelined or not). */
  subscribeSent: boolean;
  /** The `$rid` of the register or poll awaiting its answer on this connection. */
  ridInFlight?: string;
  nextRid: number;
  operationId?: string;
  /** A register was sent and its fate is unknown (no answer, a 5xx, or the connection died). */
  registrationMaybeInFlight: boolean;
  attempt: number;
  reauthentications: number;
  lookups: number;
  polls: number;
  timerArmed: boolean;
  lastFailure?: FailureDiagnostics;
  /** SUBSCRIBE and the request go right behind CONNECT; off after a pipelined attempt got no answer. */
  pipeline: boolean;
  /** This connection was pipelined and no answer has come back on it yet. */
  unanswered: boolean;
}

type Handler = (c: Context, event: RegistrationEvent) => void;

/**
 * All transitions, one table: state × event → handler. An event missing from a state's row is
 * the host's mistake and raises ILLEGAL_EVENT naming both; what the peer may legitimately do out
 * of turn (a late answer, a drop while waiting) has a row that says what happens.
 */
const TRANSITIONS: { readonly [P in RegistrationPhase]: { readonly [E in RegistrationEvent["kind"]]?: Handler } } = {
  idle: { start: (c) => beginConnect(c), stop: stopMachine },
  connecting: {
    connack: onConnack,
    suback: (c) => transportFault(c, { kind: "protocol", message: "SUBACK before CONNACK" }),
    message: (c) => transportFault(c, { kind: "protocol", message: "PUBLISH before CONNACK" }),
    closed: onClosed,
    timer: (c) => timeout(c, "no CONNACK within the connect timeout"),
    stop: stopMachine,
  },
  subscribing: {
    connack: (c) => transportFault(c, { kind: "protocol", message: "second CONNACK" }),
    suback: onSuback,
    message: onMessage,
    closed: onClosed,
    timer: (c) => timeout(c, "no SUBACK within the subscribe timeout"),
    stop: stopMachine,
  },
  "awaiting-response": {
    connack: (c) => transportFault(c, { kind: "protocol", message: "CONNACK on an open session" }),
    suback: ignore,
    message: onMessage,
    closed: onClosed,
    timer: (c) => timeout(c, "no answer from DPS within the response timeout"),
    stop: stopMachine,
  },
  waiting: {
    connack: ignore,
    suback: ignore,
    message: ignore, // a late answer to a request already given up on
    closed: (c) => markDisconnected(c),
    timer: onWaitOver,
    stop: stopMachine,
  },
  "looking-up": {
    connack: ignore,
    suback: ignore,
    message: ignore,
    closed: (c) => markDisconnected(c),
    timer: (c) => {
      c.out.push({ kind: "cancel-lookup" });
      applyFault(c, "timeout", "no answer to the registration status lookup within its timeout");
    },
    "lookup-response": onLookupResponse,
    "lookup-failed": (c, e) => applyFault(c, (e as { fault: TransportFault }).fault.kind, `status lookup: ${(e as { fault: TransportFault }).fault.message}`),
    stop: stopMachine,
  },
  assigned: { closed: ignore, message: ignore, connack: ignore, suback: ignore, stop: ignore },
  failed: { closed: ignore, message: ignore, connack: ignore, suback: ignore, stop: ignore },
  fallback: { closed: ignore, message: ignore, connack: ignore, suback: ignore, stop: ignore },
  stopped: { closed: ignore, message: ignore, connack: ignore, suback: ignore, stop: ignore },
};

export class RegistrationMachine {
  #c: Context;

  /** @throws UsageError INVALID_ARGUMENT for a bad configuration (checked here, before any I/O). */
  constructor(config: RegistrationConfig, deps: RegistrationDeps) {
    // Fail early on a configuration that could never work.
    registerPayload(config.registrationId, config.payload, config.certificateSigningRequest);
    dpsCredentials({ idScope: config.idScope, registrationId: config.registrationId, sasToken: "-" });
    if (typeof config.symmetricKey !== "string" || config.symmetricKey.length === 0) {
      throw new UsageError("INVALID_ARGUMENT", "symmetricKey is required (base64, from the enrollment or derived from the group key)");
    }
    base64Decode(config.symmetricKey, "symmetricKey").fill(0);
    this.#c = {
      config,
      deps,
      policy: config.policy ?? defaultRetryPolicy,
      out: [],
      now: 0,
      phase: "idle",
      step: "register",
      linkOpen: false,
      connected: false,
      subscribed: false,
      subscribeSent: false,
      nextRid: 1,
      registrationMaybeInFlight: false,
      attempt: 0,
      reauthentications: 0,
      lookups: 0,
      polls: 0,
      timerArmed: false,
      pipeline: config.pipeline ?? true,
      unanswered: false,
    };
  }

  get phase(): RegistrationPhase {
    return this.#c.phase;
  }

  get attempt(): number {
    return this.#c.attempt;
  }

  /** False once a pipelined attempt got no answer: later runs should not pipeline either. */
  get pipeline(): boolean {
    return this.#c.pipeline;
  }

  /**
   * Feeds one event that happened at `now` (ms since 1970) and returns the commands to perform,
   * in order.
   * @throws UsageError ILLEGAL_EVENT when the event cannot happen in the current phase (a host
   *   bug, e.g. a timer event with no timer set). The machine is unchanged then.
   */
  handle(event: RegistrationEvent, now: number): RegistrationCommand[] {
    const c = this.#c;
    const handler = TRANSITIONS[c.phase][event.kind];
    if (!handler) {
      throw new UsageError("ILLEGAL_EVENT", `registration: event "${event.kind}" cannot happen in phase "${c.phase}"`);
    }
    if (event.kind === "timer") {
      if (!c.timerArmed) throw new UsageError("ILLEGAL_EVENT", `registration: event "timer" in phase "${c.phase}" but no timer is set`);
      c.timerArmed = false;
    }
    c.now = now;
    c.out.length = 0;
    handler(c, event);
    return c.out.slice();
  }
}

// ---------------------------------------------------------------------------------------------
// Handlers

function ignore(): void {}

/**
 * A fresh DPS token signed at `now` (the MQTT password and the lookup's Authorization). An unset
 * clock or an unusable key ends the machine in `failed` and returns undefined.
 */
function signToken(c: Context): string | undefined {
  try {
    return dpsSasToken(c.deps.crypto, {
      idScope: c.config.idScope,
      registrationId: c.config.registrationId,
      symmetricKey: c.config.symmetricKey,
      expiry: sasExpiry(c.now, c.config.tokenLifetimeSeconds ?? 3600),
      resourceForm: c.config.resourceForm ?? "raw",
    });
  } catch (error) {
    if (error instanceof DpsError) {
      fail(c, { code: error.code, message: error.message }, error.code === "CLOCK_NOT_SET");
      return undefined;
    }
    throw error;
  }
}

function beginConnect(c: Context): void {
  const password = signToken(c);
  if (password === undefined) return;
  const credentials = dpsCredentials({
    idScope: c.config.idScope,
    registrationId: c.config.registrationId,
    sasToken: password,
    apiVersion: c.config.apiVersion ?? (c.config.certificateSigningRequest !== undefined ? DPS_CSR_API_VERSION : undefined),
    userAgent: c.config.userAgent,
  });
  c.phase = "connecting";
  c.connected = false;
  c.subscribed = false;
  c.subscribeSent = false;
  c.ridInFlight = undefined;
  status(c, { state: "connecting" });
  c.linkOpen = true;
  c.out.push({
    kind: "connect",
    options: {
      host: c.config.host,
      port: c.config.port ?? DPS_MQTT_PORT,
      clientId: credentials.clientId,
      username: credentials.username,
      password: credentials.password,
      keepAliveSeconds: c.config.keepAliveSeconds ?? 60,
      cleanSession: true,
      maxPacketBytes: c.config.maxAnswerBytes ?? DPS_MAX_ANSWER_BYTES,
    },
  });
  c.unanswered = c.pipeline;
  if (c.pipeline) {
    sendSubscribe(c);
    sendStep(c);
  }
  setTimer(c, c.policy.timeouts.connectMs);
}

function onConnack(c: Context, event: RegistrationEvent): void {
  const code = (event as { returnCode: number }).returnCode;
  if (code !== 0) {
    closeConnection(c);
    return applyAction(c, actionForConnack(c.policy, code), {
      code: "CONNACK_REFUSED",
      message: `DPS refused the MQTT connection with CONNACK ${code} (${connackMeaning(code)})`,
    }, { connack: code });
  }
  c.connected = true;
  // A register pipelined behind CONNECT is in the service's hands from now on.
  if (c.ridInFlight !== undefined && c.step === "register") c.registrationMaybeInFlight = true;
  c.phase = "subscribing";
  if (!c.subscribeSent) sendSubscribe(c);
  setTimer(c, c.policy.timeouts.subscribeMs);
}

function onSuback(c: Context, event: RegistrationEvent): void {
  const granted = (event as { granted: readonly number[] }).granted;
  if (granted.length !== 1 || granted[0] === 0x80 || granted[0] > 2) {
    closeConnection(c);
    return applyFault(c, "subscribe-refused", `DPS refused the subscription to ${SUBSCRIBE_TOPIC}`);
  }
  c.subscribed = true;
  if (c.ridInFlight === undefined) sendStep(c);
  c.phase = "awaiting-response";
  setTimer(c, c.policy.timeouts.responseMs);
}

function onMessage(c: Context, event: RegistrationEvent): void {
  const { topic, payload } = event as { topic: string; payload: Uint8Array };
  let response: DpsAnswer | undefined;
  try {
    response = readResponse(topic, payload);
  } catch (error) {
    // A broken topic (MALFORMED_TOPIC, the only error it throws) cannot be matched to a request.
    if (error instanceof PeerError) return;
    throw error;
  }
  if (!response || response.rid !== c.ridInFlight) return; // not the request in flight: ignore
  c.ridInFlight = undefined;
  c.unanswered = false;
  clearTimer(c);
  const oversize = (event as { oversize?: number }).oversize;
  if (oversize !== undefined) {
    // The host skipped the body: the same final answer as a link ended for its size.
    closeConnection(c);
    return applyFault(c, "oversize", `DPS sent an answer of ${oversize} bytes, larger than maxAnswerBytes (${c.config.maxAnswerBytes ?? DPS_MAX_ANSWER_BYTES} bytes); raise maxAnswerBytes to accept it`);
  }
  if (response.status >= 300) return onErrorAnswer(c, response);
  // Our answer, unreadable (or a status DPS does not use): a server fault, after its retry-after.
  if (response.problem) return applyFault(c, "malformed", `DPS sent an unreadable answer: ${response.problem.message}`, response.retryAfterSeconds);
  const operation = response.operation!;
  const state = operation.registrationState;
  if (operation.status === "assigned" && state && state.status === "assigned") {
    return finishAssigned(c, state, "register");
  }
  if (operation.status === "failed" || operation.status === "disabled" || state?.status === "failed" || state?.status === "disabled") {
    const disabled = operation.status === "disabled" || state?.status === "disabled";
    return fail(c, {
      code: "REGISTRATION_FAILED",
      message: disabled
        ? "DPS answered that this enrollment or registration is disabled: enable it in the DPS enrollment list"
        : `DPS could not assign the device${state?.errorCode ? ` (${state.errorCode})` : ""}: ${excerpt(state?.errorMessage ?? "no reason given", 200)}`,
      httpStatus: response.status,
      errorCode: state?.errorCode,
    }, true);
  }
  // Still assigning (202, or a 200 that says assigning/unassigned): poll the operation.
  const operationId = operation.operationId ?? c.operationId;
  if (!operationId) {
    return applyFault(c, "malformed", `DPS answered ${response.status} "${operation.status}" without an operationId`);
  }
  c.operationId = operationId;
  c.registrationMaybeInFlight = true;
  c.polls++;
  if (c.polls > c.policy.poll.maxPolls) {
    return fail(c, {
      code: "RETRY_BUDGET_EXHAUSTED",
      message: `DPS was still assigning after ${c.policy.poll.maxPolls} polls of operation ${excerpt(operationId, 80)}`,
    }, true);
  }
  c.step = "poll";
  const delayMs = pollDelayMs(c.policy, response.retryAfterSeconds);
  if (delayMs > c.policy.timeouts.holdConnectionMs) closeConnection(c);
  c.phase = "waiting";
  status(c, {
    state: "assigning",
    delayMs,
    httpStatus: response.status,
    operationId,
    message: response.retryAfterInvalid !== undefined ? `retry-after "${response.retryAfterInvalid}" is not a number of seconds: polling in ${delayMs} ms` : undefined,
  });
  setTimer(c, delayMs);
}

function onErrorAnswer(c: Context, response: DpsResponse): void {
  const error: ErrorBody = response.error ?? {};
  const diagnostics: FailureDiagnostics = {
    code: "DPS_ERROR",
    message: `DPS answered ${response.status}${error.errorCode ? ` (${error.errorCode})` : ""}: ${clause(excerpt(error.message ?? "no message", 200))}`,
    httpStatus: response.status,
    errorCode: error.errorCode,
    trackingId: error.trackingId,
  };
  applyAction(c, actionForStatus(c.policy, response.status), diagnostics, {}, response.retryAfterSeconds);
}

function onClosed(c: Context, event: RegistrationEvent): void {
  const fault = (event as { fault: TransportFault }).fault;
  markDisconnected(c);
  applyFault(
    c,
    fault.kind,
    fault.kind === "oversize"
      ? `DPS sent an answer larger than maxAnswerBytes (${c.config.maxAnswerBytes ?? DPS_MAX_ANSWER_BYTES} bytes): ${excerpt(fault.message, 120)}; raise maxAnswerBytes to accept it`
      : `the DPS connection ended (${fault.kind}): ${excerpt(fault.message, 120)}`,
  );
}

function timeout(c: Context, message: string): void {
  closeConnection(c);
  applyFault(c, "timeout", message);
}

function transportFault(c: Context, fault: TransportFault): void {
  closeConnection(c);
  applyFault(c, fault.kind, `DPS broke the MQTT protocol: ${fault.message}`);
}

function onWaitOver(c: Context): void {
  if (c.step === "lookup") return beginLookup(c);
  if (c.connected && c.subscribed) {
    sendStep(c);
    c.phase = "awaiting-response";
    return setTimer(c, c.policy.timeouts.responseMs);
  }
  closeConnection(c);
  beginConnect(c);
}

function beginLookup(c: Context): void {
  const lookup = c.config.lookup!;
  const token = signToken(c);
  if (token === undefined) return;
  c.lookups++;
  c.phase = "looking-up";
  status(c, { state: "looking-up" });
  c.out.push({
    kind: "lookup",
    request: lookupRequest({
      host: lookup.host,
      port: lookup.port,
      idScope: c.config.idScope,
      registrationId: c.config.registrationId,
      sasToken: token,
      payload: c.config.payload,
      userAgent: c.config.userAgent,
    }),
  });
  setTimer(c, c.policy.timeouts.lookupMs);
}

function onLookupResponse(c: Context, event: RegistrationEvent): void {
  clearTimer(c);
  let result: LookupResult;
  try {
    result = parseLookupResponse((event as { response: HttpsResponse }).response);
  } catch (error) {
    if (!(error instanceof PeerError)) throw error;
    return applyFault(c, "malformed", `the status lookup answer is unreadable: ${error.message}`);
  }
  const state = result.registrationState;
  if (result.status === 200 && state) {
    // An assignment to the hub that has just refused the device says nothing new: register.
    if (state.status === "assigned" && state.assignedHub !== c.config.distrustHub) return finishAssigned(c, state, "lookup");
    if (state.status === "failed" || state.status === "disabled") {
      return fail(c, {
        code: "REGISTRATION_FAILED",
        message: `the status lookup says the registration is ${state.status}${state.errorMessage ? `: ${excerpt(state.errorMessage, 200)}` : ""}`,
        httpStatus: 200,
        errorCode: state.errorCode,
      }, true);
    }
    // Assigning, unassigned, or assigned to the hub that refused: register (DPS returns the
    // operation in progress if there is one).
    c.registrationMaybeInFlight = false;
    c.step = "register";
    return onWaitOver(c);
  }
  if (result.status === 404) {
    // DPS has no record of the registration: the register never arrived. Send it now.
    c.registrationMaybeInFlight = false;
    c.step = "register";
    return onWaitOver(c);
  }
  const error = result.error ?? {};
  applyAction(
    c,
    actionForStatus(c.policy, result.status),
    {
      code: "DPS_ERROR",
      message: `the status lookup answered ${result.status}${error.errorCode ? ` (${error.errorCode})` : ""}: ${clause(excerpt(error.message ?? "no message", 200))}`,
      httpStatus: result.status,
      errorCode: error.errorCode,
      trackingId: error.trackingId,
    },
    {},
    result.retryAfterSeconds,
  );
}

// ---------------------------------------------------------------------------------------------
// The retry policy in action

function applyFault(c: Context, fault: FaultKey, message: string, retryAfterSeconds?: number): void {
  // A pipelined attempt that reached the broker but got no answer: maybe a broker or a middlebox
  // that mishandles packets sent before CONNACK. Retry the classic way.
  if (c.unanswered && (fault === "closed" || fault === "protocol" || fault === "timeout")) c.pipeline = false;
  c.unanswered = false;
  const code: ErrorCode = fault === "malformed" ? "MALFORMED_BODY" : fault === "timeout" ? "TIMEOUT" : fault === "oversize" ? "OVERSIZE" : "TRANSPORT";
  applyAction(c, actionForFault(c.policy, fault), { code, message }, { fault }, retryAfterSeconds);
}

function applyAction(
  c: Context,
  action: RetryAction,
  diagnostics: FailureDiagnostics,
  extra: { connack?: number; fault?: FaultKey },
  retryAfterSeconds?: number,
): void {
  c.lastFailure = diagnostics;
  if (action === "fail") {
    return fail(c, {
      ...diagnostics,
      message:
        clause(diagnostics.message) +
        (diagnostics.httpStatus !== undefined
          ? ". Retrying the same request cannot help: check the request, the enrollment and the ID scope" + (diagnostics.trackingId ? ` (give support tracking id ${diagnostics.trackingId})` : "")
          : ""),
    });
  }
  if (action === "reauthenticate") {
    c.reauthentications++;
    const most = c.config.maxReauthentications ?? c.policy.budget.maxReauthentications;
    if (c.reauthentications > most) {
      return fail(c, {
        ...diagnostics,
        code: "AUTHENTICATION_FAILED",
        message: `${clause(diagnostics.message)}. Refused with ${most + 1} fresh token(s): check the symmetric key (a group enrollment needs the derived device key), the registration id, the ID scope, the enrollment and the device clock`,
      }, true);
    }
    closeConnection(c);
    c.operationId = undefined;
    c.registrationMaybeInFlight = false;
    c.polls = 0;
    c.step = "register";
    return scheduleRetry(c, action, diagnostics, extra, retryAfterSeconds);
  }
  if (action === "recover") {
    if (c.config.hasCachedAssignment) {
      closeConnection(c);
      clearTimer(c);
      c.phase = "fallback";
      status(c, { state: "fallback", ...statusOf(diagnostics), ...extra, action });
      c.out.push({ kind: "done", outcome: { kind: "fallback", reason: diagnostics } });
      return;
    }
    if (c.operationId) c.step = "poll";
    else if (c.registrationMaybeInFlight && c.config.lookup && c.lookups < c.policy.budget.maxLookups) c.step = "lookup";
    else c.step = "register";
    return scheduleRetry(c, action, diagnostics, extra, retryAfterSeconds);
  }
  // retry: the same step again; a lookup that has used its budget gives way to a register.
  if (c.step === "lookup" && c.lookups >= c.policy.budget.maxLookups) c.step = "register";
  scheduleRetry(c, action, diagnostics, extra, retryAfterSeconds);
}

function scheduleRetry(
  c: Context,
  action: RetryAction,
  diagnostics: FailureDiagnostics,
  extra: { connack?: number; fault?: FaultKey },
  retryAfterSeconds?: number,
): void {
  c.attempt++;
  const most = c.config.maxAttempts ?? c.policy.budget.maxAttempts;
  if (c.attempt > most) {
    return fail(c, {
      ...diagnostics,
      code: "RETRY_BUDGET_EXHAUSTED",
      message: `no answer that could be used after ${most + 1} attempt(s); the last failure: ${diagnostics.message}`,
    }, true);
  }
  const delayMs = retryDelayMs(c.policy, c.attempt, c.deps.random(), retryAfterSeconds);
  if (delayMs > c.policy.timeouts.holdConnectionMs) closeConnection(c);
  c.phase = "waiting";
  status(c, { state: "retrying", delayMs, ...statusOf(diagnostics), ...extra, action });
  setTimer(c, delayMs);
}

function finishAssigned(c: Context, state: RegistrationState, via: "register" | "lookup"): void {
  closeConnection(c);
  clearTimer(c);
  c.phase = "assigned";
  status(c, { state: "assigned", assignedHub: state.assignedHub, deviceId: state.deviceId, operationId: c.operationId });
  c.out.push({ kind: "done", outcome: { kind: "assigned", registrationState: state, via } });
}

function fail(c: Context, error: FailureDiagnostics, recheck = false): void {
  closeConnection(c);
  clearTimer(c);
  c.phase = "failed";
  status(c, { state: "failed", ...statusOf(error) });
  c.out.push({ kind: "done", outcome: { kind: "failed", error, recheck } });
}

function stopMachine(c: Context): void {
  if (c.phase === "looking-up") c.out.push({ kind: "cancel-lookup" });
  closeConnection(c);
  clearTimer(c);
  c.phase = "stopped";
  status(c, { state: "stopped" });
  c.out.push({ kind: "done", outcome: { kind: "stopped" } });
}

// ---------------------------------------------------------------------------------------------
// Small steps

function sendSubscribe(c: Context): void {
  c.subscribeSent = true;
  c.out.push({ kind: "subscribe", topic: SUBSCRIBE_TOPIC, qos: 1 });
}

function sendStep(c: Context): void {
  const rid = String(c.nextRid++);
  c.ridInFlight = rid;
  if (c.step === "poll" && c.operationId) {
    status(c, { state: "polling", operationId: c.operationId });
    c.out.push({ kind: "publish", topic: pollTopic(rid, c.operationId), payload: POLL_PAYLOAD, qos: 1 });
  } else {
    c.step = "register";
    if (c.connected) c.registrationMaybeInFlight = true;
    status(c, { state: "registering" });
    c.out.push({ kind: "publish", topic: registerTopic(rid), payload: registerPayload(c.config.registrationId, c.config.payload, c.config.certificateSigningRequest), qos: 1 });
  }
}

function markDisconnected(c: Context): void {
  c.linkOpen = false;
  c.connected = false;
  c.subscribed = false;
  c.subscribeSent = false;
  c.ridInFlight = undefined;
}

function closeConnection(c: Context): void {
  if (c.linkOpen) c.out.push({ kind: "close" });
  markDisconnected(c);
}

function setTimer(c: Context, delayMs: number): void {
  c.timerArmed = true;
  c.out.push({ kind: "set-timer", delayMs });
}

function clearTimer(c: Context): void {
  if (!c.timerArmed) return;
  c.timerArmed = false;
  c.out.push({ kind: "clear-timer" });
}

function status(c: Context, fields: Omit<RegistrationStatus, "attempt">): void {
  const s: Record<string, unknown> = { state: fields.state, attempt: c.attempt };
  copyDefined(s, fields);
  c.out.push({ kind: "status", status: s as unknown as RegistrationStatus });
}

function statusOf(d: FailureDiagnostics): Partial<RegistrationStatus> {
  return { httpStatus: d.httpStatus, errorCode: d.errorCode, trackingId: d.trackingId, message: d.message };
}

export type { TransportFaultKind };
