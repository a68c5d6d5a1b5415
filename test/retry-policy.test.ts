/** The retry policy: table lookups, overrides, and by property the delays' bounds and their spread over a fleet. */
import test from "ava";
import fc from "fast-check";
import {
  actionForConnack,
  actionForFault,
  actionForStatus,
  clampRetryAfterMs,
  defaultRetryPolicy,
  maxRetryDelayMs,
  pollDelayMs,
  retryDelayMs,
  retryPolicy,
} from "../modules/retry-policy.js";

test("retry policy: the defaults follow the troubleshooting table", (t) => {
  const p = defaultRetryPolicy;
  for (const s of [400, 405, 409, 412, 415]) t.is(actionForStatus(p, s), "fail", String(s));
  for (const s of [401, 403, 404]) t.is(actionForStatus(p, s), "reauthenticate", String(s));
  t.is(actionForStatus(p, 429), "retry");
  for (const s of [500, 502, 503, 504]) t.is(actionForStatus(p, s), "recover", String(s));
  t.is(actionForStatus(p, 418), "fail");
  // A status DPS does not use is a glitch on its side, like a garbled answer: recover.
  t.is(actionForStatus(p, 302), "recover");
  // One CONNACK table for DPS and the hub; a code MQTT 3.1.1 does not define is retried.
  t.deepEqual([1, 2, 3, 4, 5, 6].map((c) => actionForConnack(p, c)), ["fail", "fail", "retry", "reauthenticate", "reauthenticate", "retry"]);
  t.is(actionForFault(p, "closed"), "recover");
  t.is(actionForFault(p, "dns"), "retry");
  t.is(actionForFault(p, "tls"), "retry");
  t.is(actionForFault(p, "oversize"), "fail", "an answer over the configured size is a setting to change, not a flaky network");
});

test("retry policy: overrides replace rows and keep the rest; bad rows are UsageErrors", (t) => {
  const p = retryPolicy({ status: { "409": "retry" }, backoff: { initialMs: 500 } });
  t.is(actionForStatus(p, 409), "retry");
  t.is(actionForStatus(p, 400), "fail");
  t.is(p.backoff.initialMs, 500);
  t.is(p.backoff.maxMs, defaultRetryPolicy.backoff.maxMs);
  t.true(Object.isFrozen(p.status));
  t.throws(() => retryPolicy({ status: { "500": "explode" as never } }), { code: "INVALID_ARGUMENT" } as never);
  t.throws(() => retryPolicy({ backoff: { jitter: 2 } }), { code: "INVALID_ARGUMENT" } as never);
  t.throws(() => retryPolicy({ backoff: { maxMs: 1 } }), { code: "INVALID_ARGUMENT" } as never);
});

test("retry policy: one table for both scopes; a misspelt section or setting, or a hub retry under 5 s, is a UsageError naming it", (t) => {
  const p = retryPolicy({ hub: { windowMs: 60_000 }, longTail: { maxMs: 7_200_000 } });
  t.is(p.hub.windowMs, 60_000);
  t.is(p.hub.initialMs, 5_000);
  t.is(p.longTail.maxMs, 7_200_000);
  t.throws(() => retryPolicy({ hbu: {} } as never), { message: /no section "hbu"/ });
  t.throws(() => retryPolicy({ hub: { windowMS: 1 } as never }), { message: /hub has no setting "windowMS"/ });
  t.throws(() => retryPolicy({ hub: { initialMs: 1000 } }), { message: /at least 5000 ms/ });
  t.throws(() => retryPolicy({ timeouts: { connectMs: 0 } }), { message: /timeouts.connectMs/ });
  t.throws(() => retryPolicy({ backoff: { initialMs: -1 } }), { message: /backoff.initialMs must be a number/ });
  t.throws(() => retryPolicy({ backoff: { initialMs: Number.NaN } }), { message: /backoff.initialMs must be a number/ });
  // Rows no cause can match are refused rather than silently ignored.
  t.throws(() => retryPolicy({ status: { "5XX": "fail" } }), { message: /status has no row "5XX"/ });
  t.throws(() => retryPolicy({ status: { "42": "fail" } }), { message: /status has no row "42"/ });
  t.throws(() => retryPolicy({ connack: { "4xx": "fail" } }), { message: /connack has no row "4xx"/ });
  t.throws(() => retryPolicy({ fault: { timeuot: "fail" } as never }), { message: /fault has no row "timeuot" \(dns, refused/ });
  t.is(actionForStatus(retryPolicy({ status: { "503": "retry", "4xx": "recover", default: "fail" } }), 503), "retry");
  t.is(actionForConnack(retryPolicy({ connack: { "3": "fail", default: "recover" } }), 3), "fail");
});

test("retry policy: for any attempt, random draw and retry-after, the delay stays within bounds and never precedes retry-after", (t) => {
  const p = defaultRetryPolicy;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 10_000 }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      fc.option(fc.oneof(fc.double({ min: 0, max: 1e12, noNaN: true }), fc.constantFrom(Number.POSITIVE_INFINITY, -1, Number.NaN)), { nil: undefined }),
      (attempt, random, retryAfter) => {
        const d = retryDelayMs(p, attempt, random, retryAfter);
        if (!Number.isFinite(d) || d < p.backoff.initialMs || d > maxRetryDelayMs(p)) return false;
        if (retryAfter !== undefined && d < clampRetryAfterMs(p, retryAfter)) return false;
        return true;
      },
    ),
    { numRuns: 5000 },
  );
  t.pass();
});

test("retry policy: the exponential part doubles until the cap, and jitter still applies at the cap", (t) => {
  const p = defaultRetryPolicy;
  t.deepEqual([1, 2, 3, 4].map((a) => retryDelayMs(p, a, 0)), [2000, 4000, 8000, 16000]);
  t.is(retryDelayMs(p, 100, 0), 300_000);
  t.true(retryDelayMs(p, 100, 0.99) > 300_000 * 1.45);
});

test("retry policy: a thousand devices hit by the same 429 spread their retries over the window", (t) => {
  // Each device draws its own jitter (here from a seeded generator, as independent devices would).
  let seed = 12345;
  const random = () => {
    seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
    return seed / 2 ** 32;
  };
  for (const attempt of [1, 5, 50]) {
    const delays = Array.from({ length: 1000 }, () => retryDelayMs(defaultRetryPolicy, attempt, random(), 10));
    const min = Math.min(...delays);
    const max = Math.max(...delays);
    const base = Math.max(10_000, Math.min(300_000, 2000 * 2 ** (attempt - 1)));
    t.true(min >= base, "nobody retries before retry-after");
    t.true(max - min >= base * 0.45, `attempt ${attempt}: the retries cover the jitter window`);
    // Ten equal buckets over the window: none holds more than a fifth of the fleet.
    const buckets = new Array(10).fill(0);
    for (const d of delays) buckets[Math.min(9, Math.floor(((d - base) / (base * 0.5)) * 10))]++;
    t.true(Math.max(...buckets) < 200, `attempt ${attempt}: buckets ${buckets.join(",")}`);
    t.true(new Set(delays).size > 900, "hardly two devices pick the same millisecond");
  }
});

test("retry policy: poll delays honour retry-after within 0..60 s, default 3 s", (t) => {
  const p = defaultRetryPolicy;
  t.is(pollDelayMs(p), 3000);
  t.is(pollDelayMs(p, 0), 0);
  t.is(pollDelayMs(p, 2.5), 2500);
  t.is(pollDelayMs(p, 1e9), 60_000);
  t.is(pollDelayMs(p, -1), 3000);
  t.is(pollDelayMs(p, Number.NaN), 3000);
});
