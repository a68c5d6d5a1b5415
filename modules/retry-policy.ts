/**
 * The retry policy as data: one table from what went wrong (a DPS status code, a CONNACK return
 * code, a transport fault, a malformed answer) to what the device does next. The defaults follow
 * Azure's DPS troubleshooting table (shared/dps-troubleshooting.txt); a firmware project
 * overrides any row with `retryPolicy(overrides)`.
 *
 *   429              retry     exponential backoff with random jitter, never before retry-after
 *   5xx, malformed   recover   fall back to the cached hub when there is one; else poll the known
 *                              operation again, or look the registration up when a register was
 *                              in flight, instead of registering blindly again
 *   401, 403, 404    reauthenticate  register again with a fresh token, a bounded number of times,
 *                              then stop and say to check the key and the clock
 *   400 405 409 412 415, other 4xx   fail   the request itself is wrong: report the diagnostics
 */
import { check } from "./errors.js";
import type { TransportFaultKind } from "./ports.js";

export type RetryAction =
  /** Do the same step again after a backoff delay. */
  | "retry"
  /** A server-side failure: use the cache, or find out what became of the registration. */
  | "recover"
  /** The credentials were refused: reconnect with a fresh token and register again (bounded). */
  | "reauthenticate"
  /** Stop: retrying the same request cannot help. */
  | "fail";

export type FaultKey = TransportFaultKind | "malformed" | "subscribe-refused";

export interface RetryPolicy {
  /** By DPS status: an exact code ("429"), a class ("4xx", "5xx"), or "default". */
  readonly status: Readonly<Record<string, RetryAction>>;
  /** By CONNACK return code ("1".."5"), or "default". */
  readonly connack: Readonly<Record<string, RetryAction>>;
  /** By transport fault, a malformed DPS answer, or a refused subscription. */
  readonly fault: Readonly<Record<FaultKey, RetryAction>>;
  readonly backoff: {
    /** Delay of the first retry before jitter. */
    readonly initialMs: number;
    /** Cap of the exponential part; jitter is still added at the cap. */
    readonly maxMs: number;
    readonly multiplier: number;
    /** Up to this fraction of the delay is added at random: delays spread over [d, d × (1 + jitter)]. */
    readonly jitter: number;
  };
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
    /** How many 202 "assigning" answers before giving up on this operation. */
    readonly maxPolls: number;
  };
  readonly budget: {
    /** Retries of any kind (not counting ordinary polls) before RETRY_BUDGET_EXHAUSTED. */
    readonly maxAttempts: number;
    /** Registrations again with a fresh token after 401/403/404 or CONNACK 4/5. */
    readonly maxReauthentications: number;
    /** Registration status lookups per provisioning run. */
    readonly maxLookups: number;
  };
  readonly timeouts: {
    /** CONNECT to CONNACK (includes the TCP and TLS setup). */
    readonly connectMs: number;
    readonly subscribeMs: number;
    /** A register or poll without an answer: the registration may be in flight. */
    readonly responseMs: number;
    readonly lookupMs: number;
    /**
     * A wait longer than this closes the DPS connection first and opens a new one after it: an
     * idle TLS session costs a device tens of kilobytes of RAM.
     */
    readonly holdConnectionMs: number;
  };
}

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
    default: "fail",
  },
  connack: {
    "1": "fail", // unacceptable protocol version: the firmware speaks the wrong MQTT
    "2": "fail", // identifier rejected: the registration id is not acceptable
    "3": "retry", // server unavailable
    "4": "reauthenticate", // bad user name or password
    "5": "reauthenticate", // not authorized: expired or wrong token, disabled enrollment
    default: "fail",
  },
  fault: {
    dns: "retry",
    refused: "retry",
    tls: "retry",
    closed: "recover",
    protocol: "recover",
    timeout: "recover",
    malformed: "recover",
    "subscribe-refused": "retry",
  },
  backoff: { initialMs: 2_000, maxMs: 300_000, multiplier: 2, jitter: 0.5 },
  retryAfter: { minMs: 1_000, maxMs: 600_000 },
  poll: { defaultMs: 3_000, minMs: 0, maxMs: 60_000, maxPolls: 60 },
  budget: { maxAttempts: 16, maxReauthentications: 2, maxLookups: 4 },
  timeouts: { connectMs: 30_000, subscribeMs: 15_000, responseMs: 30_000, lookupMs: 30_000, holdConnectionMs: 30_000 },
});

type Overrides = { [K in keyof RetryPolicy]?: Partial<RetryPolicy[K]> };

/**
 * The default policy with `overrides` laid over it, row by row, checked.
 * @throws UsageError INVALID_ARGUMENT naming the bad row or number.
 */
export function retryPolicy(overrides: Overrides = {}): RetryPolicy {
  // The common case, and a fleet's: no overrides share the one frozen default table.
  if (Object.keys(overrides).length === 0) return defaultRetryPolicy;
  const merged = {} as Record<string, unknown>;
  const keys = Object.keys(defaultRetryPolicy) as (keyof RetryPolicy)[];
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    merged[key] = { ...defaultRetryPolicy[key], ...(overrides[key] ?? {}) };
  }
  const policy = merged as unknown as RetryPolicy;
  const tables = ["status", "connack", "fault"] as const;
  for (let t = 0; t < tables.length; t++) {
    const table = tables[t];
    const rows = Object.keys(policy[table]);
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r];
      const action = (policy[table] as Record<string, unknown>)[row];
      check(
        action === "retry" || action === "recover" || action === "reauthenticate" || action === "fail",
        `retry policy ${table}["${row}"] must be retry, recover, reauthenticate or fail, got "${String(action)}"`,
      );
    }
  }
  const numbers: [string, number, number][] = [
    ["backoff.initialMs", policy.backoff.initialMs, 0],
    ["backoff.maxMs", policy.backoff.maxMs, policy.backoff.initialMs],
    ["backoff.multiplier", policy.backoff.multiplier, 1],
    ["retryAfter.minMs", policy.retryAfter.minMs, 0],
    ["retryAfter.maxMs", policy.retryAfter.maxMs, policy.retryAfter.minMs],
    ["poll.minMs", policy.poll.minMs, 0],
    ["poll.maxMs", policy.poll.maxMs, policy.poll.minMs],
    ["poll.defaultMs", policy.poll.defaultMs, 0],
    ["poll.maxPolls", policy.poll.maxPolls, 1],
    ["budget.maxAttempts", policy.budget.maxAttempts, 0],
    ["budget.maxReauthentications", policy.budget.maxReauthentications, 0],
    ["budget.maxLookups", policy.budget.maxLookups, 0],
    ["timeouts.connectMs", policy.timeouts.connectMs, 1],
    ["timeouts.subscribeMs", policy.timeouts.subscribeMs, 1],
    ["timeouts.responseMs", policy.timeouts.responseMs, 1],
    ["timeouts.lookupMs", policy.timeouts.lookupMs, 1],
    ["timeouts.holdConnectionMs", policy.timeouts.holdConnectionMs, 0],
  ];
  for (let i = 0; i < numbers.length; i++) {
    const [name, value, min] = numbers[i];
    check(typeof value === "number" && Number.isFinite(value) && value >= min, `retry policy ${name} must be a number ≥ ${min}, got ${String(value)}`);
  }
  check(policy.backoff.jitter >= 0 && policy.backoff.jitter <= 1, `retry policy backoff.jitter must be within 0..1, got ${policy.backoff.jitter}`);
  return deepFreeze(policy);
}

/** The action for a DPS status: the exact row, then its class ("5xx"), then "default". */
export function actionForStatus(policy: RetryPolicy, status: number): RetryAction {
  return policy.status[String(status)] ?? policy.status[`${Math.floor(status / 100)}xx`] ?? policy.status.default ?? "fail";
}

export function actionForConnack(policy: RetryPolicy, returnCode: number): RetryAction {
  return policy.connack[String(returnCode)] ?? policy.connack.default ?? "fail";
}

export function actionForFault(policy: RetryPolicy, fault: FaultKey): RetryAction {
  return policy.fault[fault] ?? "retry";
}

/**
 * The delay before retry number `attempt` (1 for the first retry): the larger of the
 * exponential backoff and the clamped retry-after, plus random jitter of up to `jitter` times
 * that. Never earlier than the service asked; never in lockstep, even at the cap.
 * @param random a uniform number in [0, 1) from the host's random source.
 */
export function retryDelayMs(policy: RetryPolicy, attempt: number, random: number, retryAfterSeconds?: number): number {
  const { initialMs, maxMs, multiplier, jitter } = policy.backoff;
  const exponent = Math.max(0, Math.min(attempt - 1, 64));
  const exponential = Math.min(maxMs, initialMs * Math.pow(multiplier, exponent));
  const base = retryAfterSeconds === undefined ? exponential : Math.max(exponential, clampRetryAfterMs(policy, retryAfterSeconds));
  const r = random >= 0 && random < 1 ? random : 0;
  // Rounded up: a retry must never come a fraction of a millisecond before retry-after.
  return Math.ceil(base + base * jitter * r);
}

/** A retry-after in seconds as milliseconds within the policy's bounds. */
export function clampRetryAfterMs(policy: RetryPolicy, retryAfterSeconds: number): number {
  const ms = Number.isFinite(retryAfterSeconds) && retryAfterSeconds >= 0 ? retryAfterSeconds * 1000 : policy.retryAfter.maxMs;
  return Math.min(policy.retryAfter.maxMs, Math.max(policy.retryAfter.minMs, ms));
}

/** The wait before polling an operation that is still assigning. */
export function pollDelayMs(policy: RetryPolicy, retryAfterSeconds?: number): number {
  if (retryAfterSeconds === undefined || !Number.isFinite(retryAfterSeconds) || retryAfterSeconds < 0) return policy.poll.defaultMs;
  return Math.min(policy.poll.maxMs, Math.max(policy.poll.minMs, Math.round(retryAfterSeconds * 1000)));
}

/** The largest delay `retryDelayMs` can return under `policy`, for bounds checks. */
export function maxRetryDelayMs(policy: RetryPolicy): number {
  const base = Math.max(policy.backoff.maxMs, policy.retryAfter.maxMs);
  return Math.ceil(base * (1 + policy.backoff.jitter));
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    const keys = Object.keys(value as object);
    for (let i = 0; i < keys.length; i++) deepFreeze((value as Record<string, unknown>)[keys[i]]);
  }
  return value;
}
