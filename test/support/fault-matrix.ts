/**
 * The fault matrix: every cause the troubleshooting table names (each status, 403 and 503, each
 * CONNACK code, drops and timeouts) at every step of a device's life, once, three times, for six
 * hours and for ever, each run for seven simulated days in the lifecycle world. Portable, so that
 * the XS tier can run a sample of the same cells and compare the logs.
 */
import type { CryptoPort } from "../../modules/crypto.js";
import { recoveryBoundMs, registrationsPerDayBound } from "../../hosts/desktop/bounds.js";
import { runWorld, type WorldCause, type WorldFault, type WorldResult, type WorldStep } from "./lifecycle-world.js";

const DAY = 86_400_000;
export { recoveryBoundMs, registrationsPerDayBound };
const STATUSES = [400, 401, 403, 404, 405, 409, 412, 415, 429, 500, 503];
const TERMINAL_STATUSES = [400, 405, 409, 412, 415];

function statusCauses(): [string, WorldCause][] {
  const out: [string, WorldCause][] = [];
  for (const s of STATUSES) out.push([String(s), s === 429 ? { status: s, retryAfter: "30" } : { status: s }]);
  return out;
}
const CONNACKS: [string, WorldCause][] = [1, 2, 3, 4, 5].map((c) => [`connack-${c}`, { connack: c }]);
const DROP: [string, WorldCause] = ["drop", { drop: true }];
const TIMEOUT: [string, WorldCause] = ["timeout", { timeout: true }];

export const MATRIX_CAUSES: Readonly<Record<WorldStep, readonly [string, WorldCause][]>> = {
  "dps-connect": [...CONNACKS, DROP, TIMEOUT],
  subscribe: [["suback-refused", { suback: 0x80 }], DROP, TIMEOUT],
  register: [...statusCauses(), DROP, TIMEOUT],
  poll: [...statusCauses(), DROP, TIMEOUT],
  lookup: [...statusCauses(), DROP, TIMEOUT],
  "cache-write": [["storage", { fail: true }]],
  "hub-connect": [...CONNACKS, DROP, TIMEOUT],
  publish: [DROP, TIMEOUT],
};

export const MATRIX_DURATIONS: readonly { readonly name: string; readonly times?: number; readonly untilMs?: number }[] = [
  { name: "once", times: 1 },
  { name: "3 times", times: 3 },
  { name: "for 6 hours", untilMs: 6 * 3_600_000 },
  { name: "for ever" },
];

export interface MatrixCell {
  readonly name: string;
  readonly step: WorldStep;
  readonly cause: string;
  readonly duration: string;
  readonly faults: readonly WorldFault[];
  /** Retrying cannot fix it: the device must end in `failed`. */
  readonly terminal: boolean;
  /** A hub refusal: the only cause that may invalidate the cache. */
  readonly refusal: boolean;
}

export function matrixCells(): MatrixCell[] {
  const cells: MatrixCell[] = [];
  const steps = Object.keys(MATRIX_CAUSES) as WorldStep[];
  for (const step of steps) {
    for (const [cause, c] of MATRIX_CAUSES[step]) {
      for (const d of MATRIX_DURATIONS) {
        const fault: WorldFault = { step, cause: c, times: d.times, untilMs: d.untilMs };
        // A lookup only follows a register that failed on DPS's side: one 503 opens the way.
        const faults = step === "lookup" ? [{ step: "register" as const, cause: { status: 503 }, times: 1 }, fault] : [fault];
        const terminal = ("status" in c && TERMINAL_STATUSES.indexOf(c.status) >= 0) || ("connack" in c && (c.connack === 1 || c.connack === 2));
        const refusal = step === "hub-connect" && "connack" in c && (c.connack === 4 || c.connack === 5);
        cells.push({ name: `${step} ${cause} ${d.name}`, step, cause, duration: d.name, faults, terminal, refusal });
      }
    }
  }
  return cells;
}

/** The cells the XS tier runs too (its logs must be the same as on Node, digest for digest). */
export const XS_MATRIX_SAMPLE: readonly string[] = [
  "dps-connect connack-5 for ever",
  "register 429 for 6 hours",
  "register 503 3 times",
  "poll timeout once",
  "lookup 500 for ever",
  "hub-connect connack-5 for ever",
  "hub-connect timeout for 6 hours",
  "publish drop for ever",
  "cache-write storage for ever",
  "register 400 once",
];

export interface CellReport {
  readonly cell: MatrixCell;
  readonly result: WorldResult;
  readonly problems: string[];
}

/** Runs one cell and checks every invariant; `days` defaults to 7. */
export function runCell(cell: MatrixCell, crypto: CryptoPort, days = 7, log = false): CellReport {
  const result = runWorld({ crypto, durationMs: days * DAY, faults: cell.faults, sendEveryMs: 15 * 60_000, random: [0.5, 0.1, 0.9, 0.3, 0.7], log });
  const problems = [...result.problems];
  const bound = registrationsPerDayBound();
  for (let d = 0; d < result.registrationsPerDay.length; d++) {
    const most = d === 0 ? bound.firstDay : bound.laterDays;
    if (result.registrationsPerDay[d] > most) problems.push(`day ${d}: ${result.registrationsPerDay[d]} DPS registrations, over the bound of ${most}`);
  }
  const finals = result.states.filter((s) => s.state === "failed");
  if (cell.terminal && result.finalState !== "stopped") problems.push("the run did not end");
  if (cell.terminal && finals.length === 0) problems.push(`a cause retrying cannot fix never ended in "failed"`);
  if (!cell.terminal && finals.length > 0) problems.push(`"failed" (${finals[0].code}) for a cause that time can fix`);
  if (!cell.refusal && result.cacheInvalidations > 0) problems.push(`the cache was invalidated ${result.cacheInvalidations} time(s) for a cause that keeps it`);
  if (!cell.terminal && cell.duration !== "for ever") {
    if (result.recoveryMs === undefined) problems.push("never connected again after the cause cleared");
    else if (result.recoveryMs > recoveryBoundMs()) problems.push(`connected again ${Math.round(result.recoveryMs / 60_000)} min after the last fault, over the bound of ${Math.round(recoveryBoundMs() / 60_000)} min`);
  }
  return { cell, result, problems };
}
