/**
 * The bounds the retry table promises, computed from a policy, for whatever checks a run against
 * them: the fault matrix (test/support/fault-matrix.ts), the fleet summary (fleet.ts), and
 * docs/RETRY-POLICY.md, which derives them.
 */
import { defaultRetryPolicy, type RetryPolicy } from "../../modules/retry-policy.js";

const DAY = 86_400_000;

/**
 * The most DPS registrations one device makes within `windowMs` of the start of any persistent
 * fault: two fast provisioning runs (at boot or when the fault starts, and after the first hub
 * refusal), each at most 1 + `budget.maxAttempts` registers, then one register per long-tail
 * wait, the waits counted at their shortest (no jitter).
 */
export function registrationsBound(windowMs: number, policy: RetryPolicy = defaultRetryPolicy): number {
  let wakes = 0;
  let t = 0;
  for (let k = 1; ; k++) {
    t += Math.min(policy.longTail.maxMs, policy.longTail.initialMs * Math.pow(policy.longTail.multiplier, k - 1));
    if (t > windowMs) break;
    wakes++;
  }
  return 2 * (1 + policy.budget.maxAttempts) + wakes;
}

/** Per day: the first day of a fault, and each later one (only the long tail is left). */
export function registrationsPerDayBound(policy: RetryPolicy = defaultRetryPolicy): { firstDay: number; laterDays: number } {
  return { firstDay: registrationsBound(DAY, policy), laterDays: Math.floor(DAY / policy.longTail.maxMs) + 1 };
}

/** Once the cause clears, connected again within the longest long-tail wait and one more cycle. */
export function recoveryBoundMs(policy: RetryPolicy = defaultRetryPolicy): number {
  return Math.ceil(policy.longTail.maxMs * (1 + policy.longTail.jitter)) + 5 * 60_000;
}
