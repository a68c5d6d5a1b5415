/**
 * The retry policy as data: one table, for DPS and for the hub alike, from what went wrong (a
 * status code, a CONNACK return code, a transport fault, a malformed answer) to what the device
 * does next, and the bounds of each tier. The defaults follow Azure's DPS troubleshooting table;
 * a firmware project overrides any row or number with `retryPolicy(overrides)`.
 * docs/RETRY-POLICY.md is this table with the meaning of each action at each scope.
 *
 *   429                           retry           backoff with jitter, never before retry-after
 *   5xx, drops, timeouts, garbage recover         the cached credentials (the hub), or find out
 *                                                 what became of the registration (poll, lookup)
 *   401 403 404, CONNACK 4 5      reauthenticate  DPS: register again with a fresh token;
 *                                                 hub: invalidate the cache and register again
 *   400 405 409 412 415, CONNACK 1 2, oversize  fail   retrying the same request cannot help
 *
 * Escalation: each scope retries fast within its budget (DPS: `budget.maxAttempts` retries; the
 * hub: `hub.windowMs`), then the lifecycle goes one level up (the hub → DPS) and, past that, into
 * the long tail: one attempt per `longTail` wait, minutes to an hour apart, forever.
 */
import { check } from "./errors.js";
import type { TransportFaultKind } from "./ports.js";

export type RetryAction =
  /** Do the same step again after a backoff delay. */
  | "retry"
  /** A server-side failure: use the cached credentials, or find out what became of the request. */
  | "recover"
  /** The credentials were refused: sign a fresh token and register again. */
  | "reauthenticate"
  /** Stop: retrying the same request cannot help. */
  | "fail";

export type FaultKey = TransportFaultKind | "malformed" | "subscribe-refused";

export interface Backoff {
  /** Delay of the first retry before jitter. */
  readonly initialMs: number;
  /** Cap of the exponential part; jitter is still added at the cap. */
  readonly maxMs: number;
  readonly multiplier: number;
  /** Up to this fraction of the delay is added at random: delays spread over [d, d × (1 + jitter)]. */
  readonly jitter: number;
}

export interface RetryPolicy {
  /** By status (DPS answers, the lookup): an exact code ("429"), a class ("4xx", "5xx"), or "default". */
  readonly status: Readonly<Record<string, RetryAction>>;
  /** By CONNACK return code ("1".."5"), or "default"; DPS and the hub alike. */
  readonly connack: Readonly<Record<string, RetryAction>>;
  /** By transport fault, a malformed answer, or a refused subscription. */
  readonly fault: Readonly<Record<FaultKey, RetryAction>>;
  /** DPS steps. */
  readonly backoff: Backoff;
  /** The hub: reconnects to the same hub, never less than 5 s apart (Azure's guidance). */
  readonly hub: Backoff & {
    /** How long to keep retrying the cached hub before asking DPS (keeping the cache). */
    readonly windowMs: number;
    /** A session counts as up once it has lasted this long or seen a PUBACK; a drop before is a failure. */
    readonly stableMs: number;
    /** A message that was the oldest unacknowledged one at this many link losses in a row is dropped. */
    readonly maxMessageAttempts: number;
  };
  /** Past every budget, for whatever time can fix: one attempt per wait, forever. */
  readonly longTail: Backoff;
  readonly retryAfter: {
    /** A retry-after below this is raised to it. */
    readonly minMs: number;
    /** A retry-after above this (a service glitch, or garbage) is cut to it. */
    readonly maxMs: number;
  };
  readonly poll: {
    /** Poll interval when a 202 carries no usable retry-after (the SDKs use 2 to 3 s). */
    readonly defaultMs: number;
    /** Bounds for the retry-after of a 202. 0 is allowed: poll at once. */
    readonly minMs: number;
    readonly maxMs: number;
    /** How many 202 "assigning" answers before the operation counts as a failed attempt. */
    readonly maxPolls: number;
  };
  readonly budget: {
    /** DPS retries of any kind (not counting ordinary polls) in one provisioning run. */
    readonly maxAttempts: number;
    /** Registrations again with a fresh token after 401/403/404 or CONNACK 4/5, in one run. */
    readonly maxReauthentications: number;
    /** Registration status lookups in one run. */
    readonly maxLookups: number;
  };
  readonly timeouts: {
    /** CONNECT to CONNACK (includes the TCP and TLS setup), DPS and the hub. */
    readonly connectMs: number;
    readonly subscribeMs: number;
    /** A register or poll without an answer: the registration may be in flight. */
    readonly responseMs: number;
    readonly lookupMs: number;
    /** PUBLISH to PUBACK at the hub; a late PUBACK means the link is dead. */
    readonly ackMs: number;
    /**
     * A DPS wait longer than this closes the connection first and opens a new one after it: an
     * idle TLS session costs a device tens of kilobytes of RAM.
     */
    readonly holdConnectionMs: number;
  };
}

const MINUTE = 60_000;

export const defaultRetryPolicy: RetryPolicy = deepFreeze({
  status: {
    "400": "fail",
    "401": "reauthenticate",
    "403": "reauthenticate",
    "404": "reauthenticate",
    "405": "fail",
    "409": "fail",
    "412": "fail",
    "415": "fail",
    "429": "retry",
    "4xx": "fail",
    "5xx": "recover",
    default: "recover",
  },
  connack: {
    "1": "fail", // unacceptable protocol version: the firmware speaks the wrong MQTT
    "2": "fail", // identifier rejected: the client id is not acceptable
    "3": "retry", // server unavailable
    "4": "reauthenticate", // bad user name or password
    "5": "reauthenticate", // not authorized: a wrong or expired token, a disabled enrollment or device
    default: "retry",
  },
  fault: {
    dns: "retry",
    refused: "retry",
    tls: "retry",
    closed: "recover",
    protocol: "recover",
    timeout: "recover",
    malformed: "recover",
    oversize: "fail",
    "subscribe-refused": "retry",
  },
  backoff: { initialMs: 2_000, maxMs: 5 * MINUTE, multiplier: 2, jitter: 0.5 },
  hub: { initialMs: 5_000, maxMs: 2 * MINUTE, multiplier: 2, jitter: 0.5, windowMs: 10 * MINUTE, stableMs: MINUTE, maxMessageAttempts: 3 },
  longTail: { initialMs: 10 * MINUTE, maxMs: 60 * MINUTE, multiplier: 2, jitter: 0.5 },
  retryAfter: { minMs: 1_000, maxMs: 10 * MINUTE },
  poll: { defaultMs: 3_000, minMs: 0, maxMs: MINUTE, maxPolls: 60 },
  budget: { maxAttempts: 16, maxReauthentications: 2, maxLookups: 4 },
  timeouts: { connectMs: 30_000, subscribeMs: 15_000, responseMs: 30_000, lookupMs: 30_000, ackMs: 30_000, holdConnectionMs: 30_000 },
});

/** Azure's floor between reconnects after a hub failure. */
export const HUB_MIN_RETRY_DELAY_MS = 5_000;

export type RetryPolicyOverrides = { readonly [K in keyof RetryPolicy]?: Partial<RetryPolicy[K]> };

const ACTIONS = ["retry", "recover", "reauthenticate", "fail"];

/**
 * The default policy with `overrides` laid over it, row by row, checked.
 * @throws UsageError INVALID_ARGUMENT naming the bad row, number or unknown key.
 */
export function retryPolicy(overrides: RetryPolicyOverrides = {}): RetryPolicy {
  check(typeof overrides === "object" && overrides !== null, "the retry policy overrides must be an object");
  // The common case, and a fleet's: no overrides share the one frozen default table.
  const given = Object.keys(overrides);
  if (given.length === 0) return defaultRetryPolicy;
  const merged: Record<string, unknown> = {};
  for (let i = 0; i < given.length; i++) check(given[i] in defaultRetryPolicy, `retry policy has no section "${given[i]}"`);
  const keys = Object.keys(defaultRetryPolicy);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    const base = (defaultRetryPolicy as unknown as Record<string, Record<string, unknown>>)[key];
    const over = (overrides as Record<string, Record<string, unknown> | undefined>)[key] ?? {};
    const names = Object.keys(over);
    const table = key === "status" || key === "connack" || key === "fault";
    for (let n = 0; n < names.length; n++) {
      const name = names[n];
      const value = over[name];
      if (table) {
        // A row that no cause can ever match would silently do nothing.
        check(key === "fault" ? name in base : (key === "status" ? /^([1-5]([0-9][0-9]|xx)|default)$/ : /^([0-9]{1,3}|default)$/).test(name), `retry policy ${key} has no row "${name}" (${key === "status" ? "a status such as 429, a class such as 5xx, or default" : key === "connack" ? "a CONNACK code such as 5, or default" : Object.keys(base).join(", ")})`);
        check(ACTIONS.indexOf(value as string) >= 0, `retry policy ${key}["${name}"] must be one of ${ACTIONS.join(", ")}`);
      }
      else {
        check(name in base, `retry policy ${key} has no setting "${name}"`);
        check(typeof value === "number" && value >= 0 && value < Infinity, `retry policy ${key}.${name} must be a number ≥ 0`);
      }
    }
    merged[key] = { ...base, ...over };
  }
  const p = merged as unknown as RetryPolicy;
  const ladders: [string, Backoff][] = [["backoff", p.backoff], ["hub", p.hub], ["longTail", p.longTail]];
  for (let i = 0; i < ladders.length; i++) {
    const [name, b] = ladders[i];
    check(b.maxMs >= b.initialMs && b.multiplier >= 1 && b.jitter <= 1, `retry policy ${name}: maxMs ≥ initialMs, multiplier ≥ 1 and jitter within 0..1`);
  }
  check(p.hub.initialMs >= HUB_MIN_RETRY_DELAY_MS, `retry policy hub.initialMs must be at least ${HUB_MIN_RETRY_DELAY_MS} ms (Azure's guidance)`);
  check(p.longTail.initialMs >= 1_000, "retry policy longTail.initialMs must be at least 1000 ms");
  check(p.retryAfter.maxMs >= p.retryAfter.minMs && p.poll.maxMs >= p.poll.minMs && p.poll.maxPolls >= 1, "retry policy: retryAfter and poll need maxMs ≥ minMs, poll.maxPolls ≥ 1");
  const t = p.timeouts as unknown as Record<string, number>;
  const names = Object.keys(t);
  for (let i = 0; i < names.length; i++) check(names[i] === "holdConnectionMs" || t[names[i]] >= 1, `retry policy timeouts.${names[i]} must be at least 1 ms`);
  return deepFreeze(p);
}

/** The action for a status: the exact row, then its class ("5xx"), then "default". */
export function actionForStatus(policy: RetryPolicy, status: number): RetryAction {
  return policy.status[String(status)] ?? policy.status[`${Math.floor(status / 100)}xx`] ?? policy.status.default ?? "fail";
}

export function actionForConnack(policy: RetryPolicy, returnCode: number): RetryAction {
  return policy.connack[String(returnCode)] ?? policy.connack.default ?? "retry";
}

export function actionForFault(policy: RetryPolicy, fault: FaultKey): RetryAction {
  return policy.fault[fault] ?? "retry";
}

/**
 * The delay before retry number `attempt` (1 for the first) on a ladder: the larger of the
 * exponential backoff and the clamped retry-after, plus random jitter of up to `jitter` times
 * that. Never earlier than the service asked; never in lockstep, even at the cap.
 * @param random a uniform number in [0, 1) from the host's random source.
 */
export function retryDelayMs(policy: RetryPolicy, attempt: number, random: number, retryAfterSeconds?: number, ladder: Backoff = policy.backoff): number {
  const { initialMs, maxMs, multiplier, jitter } = ladder;
  const exponent = Math.max(0, Math.min(attempt - 1, 64));
  const exponential = Math.min(maxMs, initialMs * Math.pow(multiplier, exponent));
  const base = retryAfterSeconds === undefined ? exponential : Math.max(exponential, clampRetryAfterMs(policy, retryAfterSeconds));
  const r = random >= 0 && random < 1 ? random : 0;
  // Rounded up: a retry must never come a fraction of a millisecond before retry-after.
  return Math.ceil(base + base * jitter * r);
}

/** A retry-after in seconds as milliseconds within the policy's bounds. */
export function clampRetryAfterMs(policy: RetryPolicy, retryAfterSeconds: number): number {
  const ms = retryAfterSeconds >= 0 ? retryAfterSeconds * 1000 : policy.retryAfter.maxMs;
  return Math.min(policy.retryAfter.maxMs, Math.max(policy.retryAfter.minMs, ms));
}

/** The wait before polling an operation that is still assigning. */
export function pollDelayMs(policy: RetryPolicy, retryAfterSeconds?: number): number {
  if (retryAfterSeconds === undefined || !(retryAfterSeconds >= 0)) return policy.poll.defaultMs;
  return Math.min(policy.poll.maxMs, Math.max(policy.poll.minMs, Math.round(retryAfterSeconds * 1000)));
}

/** The largest delay `retryDelayMs` can return on a ladder, for bounds checks. */
export function maxRetryDelayMs(policy: RetryPolicy, ladder: Backoff = policy.backoff): number {
  const base = Math.max(ladder.maxMs, ladder === policy.backoff ? policy.retryAfter.maxMs : 0);
  return Math.ceil(base * (1 + ladder.jitter));
}

/** MQTT 3.1.1 §3.2.2.3, for messages. */
export function connackMeaning(code: number): string {
  return ["accepted", "unacceptable protocol version", "identifier rejected", "server unavailable", "bad user name or password", "not authorized"][code] ?? "unknown return code";
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    const keys = Object.keys(value as object);
    for (let i = 0; i < keys.length; i++) deepFreeze((value as Record<string, unknown>)[keys[i]]);
  }
  return value;
}
