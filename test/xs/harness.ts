/**
 * A minimal test harness for the XS tier. Test files register cases with `test`, then call
 * `run()` once at the end. `xsnap -m` exits 0 even after an uncaught exception, so the runner on
 * Node (test/xs-tier.test.ts) trusts only what this prints: one line per failure, then a final
 * `XS-TIER-RESULT {json}` line, which a crash can never produce.
 */

declare const print: (...values: unknown[]) => void;

type Case = { name: string; fn: () => void | Promise<void> };
const cases: Case[] = [];

export function test(name: string, fn: () => void | Promise<void>): void {
  cases.push({ name, fn });
}

/** Lines that a test wants the Node side to compare (command logs, digests). */
export function emit(key: string, value: unknown): void {
  print("XS-TIER-EMIT " + JSON.stringify({ key, value }));
}

export class AssertionError extends Error {}

export function equal(actual: unknown, expected: unknown, label = "value"): void {
  if (!Object.is(actual, expected)) {
    throw new AssertionError(`${label}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

export function deepEqual(actual: unknown, expected: unknown, label = "value"): void {
  const a = JSON.stringify(actual);
  const b = JSON.stringify(expected);
  if (a !== b) throw new AssertionError(`${label}: expected ${b}, got ${a}`);
}

export function ok(condition: unknown, label = "condition"): void {
  if (!condition) throw new AssertionError(`${label} is not true`);
}

/** Expects `fn` to throw an error whose `code` is `code`; returns the error. */
export function throwsCode(fn: () => unknown, code: string, label = "call"): Error {
  try {
    fn();
  } catch (error) {
    const actual = (error as { code?: string }).code;
    if (actual !== code) throw new AssertionError(`${label}: expected error code ${code}, got ${actual} (${String(error)})`);
    return error as Error;
  }
  throw new AssertionError(`${label}: expected error code ${code}, but nothing was thrown`);
}

export async function run(suite: string): Promise<void> {
  let passed = 0;
  let failed = 0;
  for (const c of cases) {
    try {
      await c.fn();
      passed++;
    } catch (error) {
      failed++;
      const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      print("XS-TIER-FAIL " + JSON.stringify({ name: c.name, message }));
    }
  }
  print("XS-TIER-RESULT " + JSON.stringify({ suite, passed, failed }));
}
