/**
 * A live dashboard for a fleet run: a small HTTP server on loopback that serves the page
 * (simulator/dashboard/fleet.html) and one Server-Sent Events stream, fed by runFleet's callbacks.
 *
 *   const dashboard = await startFleetDashboard({ port: 8091 });
 *   console.log(`dashboard: ${dashboard.url}`);
 *   const summary = await runFleet({ ..., onEvent: dashboard.onEvent, onProgress: dashboard.onProgress });
 *   dashboard.finish(summary);      // the page keeps the final figures
 *   await dashboard.close();        // the stream ends with an `end` event, the server closes
 *
 * It shows the devices by state over time, the time-to-connected distribution, the retry
 * timeline (DPS retries per second by cause, hub reconnects) and the DPS answers the devices met.
 * Memory: per device, its state and time to connected (the fleet already holds far more per
 * device); the series are fixed-size rings; the stream is the emulator dashboard's (SseHub: a
 * client that does not keep up gets no ticks, then a snapshot, or is disconnected). Events carry
 * no keys or tokens, and only counts and identifiers leave this module.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { RuntimeEvent } from "../../modules/runtime.js";
import { describeEvent } from "../../modules/runtime.js";
import { SeriesRing, SseHub, serveDashboard, sseMessage } from "../../simulator/admin-server.js";
import type { FleetProgress, FleetSummary, Percentiles } from "./fleet.js";

export interface FleetDashboardOptions {
  /** 0 (the default) picks a free port. */
  readonly port?: number;
  /** Listen address, default 127.0.0.1: the page is not authenticated. */
  readonly host?: string;
  /** Shown in the page's header (a scenario's name). */
  readonly title?: string;
  /** The emulator's admin URL, when it has one, for a link to its own dashboard. */
  readonly emulatorUrl?: string;
  /** Sampling period (default 1000 ms). */
  readonly intervalMs?: number;
  /** Points kept per series (default 3600: an hour at 1 Hz). */
  readonly history?: number;
}

export interface FleetDashboard {
  /** Where the page is, e.g. http://127.0.0.1:8091/ */
  readonly url: string;
  /** Pass as runFleet's `onEvent` (bound: no `this` needed). */
  readonly onEvent: (index: number, registrationId: string, event: RuntimeEvent) => void;
  /** Pass as runFleet's `onProgress`. */
  readonly onProgress: (progress: FleetProgress) => void;
  /** A moment of the run (a timeline step), drawn as a line on the charts. */
  readonly mark: (name: string) => void;
  /** The run is over: the series stop, and the page shows the summary's figures when given. */
  readonly finish: (summary?: FleetSummary) => void;
  /** Ends the stream (an `end` event) and closes the server; idempotent. */
  readonly close: () => Promise<void>;
}

/** The states a device is counted in, in the order the page stacks them. */
export const FLEET_STATES = ["waiting to boot", "provisioning", "retrying", "connecting", "connected", "done", "backing off", "failed"] as const;
type StateIndex = number;
const NOT_BOOTED = 0;
const PROVISIONING = 1;
const RETRYING = 2;
const CONNECTING = 3;
const CONNECTED = 4;
const DONE = 5;
const BACKING_OFF = 6;
const FAILED = 7;

const MAX_CAUSES = 24;
const RECENT_PROBLEMS = 20;
const HISTOGRAM_BINS = 24;

/** Bins of equal width over [0, max] with a round width; at most `bins` of them. */
export function histogram(values: readonly number[], bins = HISTOGRAM_BINS): { x: number[]; y: number[]; width: number } {
  if (values.length === 0) return { x: [], y: [], width: 0 };
  let max = 0;
  for (const v of values) if (v > max) max = v;
  const raw = Math.max(1, max / bins);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const width = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((w) => w >= raw) ?? 10 * magnitude;
  const n = Math.max(1, Math.floor(max / width) + 1);
  const y = new Array<number>(n).fill(0);
  for (const v of values) y[Math.min(n - 1, Math.floor(v / width))]++;
  return { x: y.map((_, i) => i * width), y, width };
}

function percentilesOf(values: readonly number[]): Percentiles | null {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  return { min: sorted[0], median: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
}

export async function startFleetDashboard(options: FleetDashboardOptions = {}): Promise<FleetDashboard> {
  const intervalMs = options.intervalMs ?? 1000;
  const hub = new SseHub();
  const series = new SeriesRing(options.history ?? 3600, 64);
  const startedAt = Date.now();

  // Per device, by index: its state, when it was first seen (its boot), its time to connected.
  const state: StateIndex[] = [];
  const firstSeen: number[] = [];
  const connectedAfter: number[] = [];
  const counts = new Array<number>(FLEET_STATES.length).fill(0);
  let seen = 0;
  let total = 0;
  let progress: FleetProgress | undefined;
  const statusCodes: Record<string, number> = {};
  const retryCauses: Record<string, number> = {};
  let dpsRetries = 0;
  let hubRetries = 0;
  let registers = 0;
  // Counts since the last tick.
  let tickRetries: Record<string, number> = {};
  let tickHubRetries = 0;
  let tickRegisters = 0;
  let tickConnected = 0;
  let tickCodes: Record<string, number> = {};
  const marks: { t: number; name: string }[] = [];
  const problems: { t: number; registrationId: string; text: string }[] = [];
  let summary: Record<string, unknown> | undefined;
  let finished = false;
  const last: Record<string, string> = {};

  const bump = (table: Record<string, number>, key: string, by = 1) => {
    if (!(key in table) && Object.keys(table).length >= MAX_CAUSES) key = "other";
    table[key] = (table[key] ?? 0) + by;
  };
  const move = (index: number, to: StateIndex) => {
    const from = state[index];
    if (from === to) return;
    counts[from]--;
    counts[to]++;
    state[index] = to;
  };

  const onEvent = (index: number, registrationId: string, event: RuntimeEvent): void => {
    if (finished || !Number.isInteger(index) || index < 0 || index > 10_000_000) return;
    const now = Date.now();
    if (state[index] === undefined) {
      // Fill any hole so that the arrays stay dense (indexes arrive in boot order, not index order).
      for (let i = state.length; i <= index; i++) {
        if (state[i] === undefined) {
          state[i] = NOT_BOOTED;
          counts[NOT_BOOTED]++;
        }
      }
    }
    if (firstSeen[index] === undefined) {
      firstSeen[index] = now;
      seen++;
      move(index, PROVISIONING);
    }
    switch (event.source) {
      case "runtime":
        switch (event.state) {
          // A device waiting out a retry stays "retrying" until the retry starts (the DPS or hub
          // event that follows): the runtime reports "connecting" as soon as it loses its hub.
          case "idle":
          case "provisioning":
            if (state[index] !== RETRYING) move(index, PROVISIONING);
            break;
          case "connecting":
            if (state[index] !== RETRYING) move(index, CONNECTING);
            break;
          case "connected":
            move(index, CONNECTED);
            if (connectedAfter[index] === undefined) {
              connectedAfter[index] = now - firstSeen[index];
              tickConnected++;
            }
            break;
          case "backing-off":
            move(index, BACKING_OFF);
            remember(now, registrationId, event);
            break;
          case "failed":
            move(index, FAILED);
            remember(now, registrationId, event);
            break;
          case "stopped":
            // A device stopped after it failed or backed off ended the run that way.
            if (state[index] !== FAILED && state[index] !== BACKING_OFF) move(index, DONE);
            break;
        }
        break;
      case "dps": {
        const s = event.status;
        // The same tally as runFleet's statusCodes.
        if (s.httpStatus !== undefined && (s.state === "assigning" || s.state === "retrying" || s.state === "failed" || s.state === "fallback")) {
          bump(statusCodes, String(s.httpStatus));
          bump(tickCodes, String(s.httpStatus));
        }
        if (s.state === "assigned") {
          bump(statusCodes, "200");
          bump(tickCodes, "200");
        }
        if (s.connack !== undefined) bump(statusCodes, `connack-${s.connack}`);
        if (s.fault !== undefined) bump(statusCodes, `fault-${s.fault}`);
        if (s.state === "registering") {
          registers++;
          tickRegisters++;
        }
        if (s.state === "retrying" && s.delayMs !== undefined) {
          const cause = s.httpStatus !== undefined ? String(s.httpStatus) : s.connack !== undefined ? `connack-${s.connack}` : `fault-${s.fault ?? "?"}`;
          dpsRetries++;
          bump(retryCauses, cause);
          bump(tickRetries, cause);
          move(index, RETRYING);
        } else if (s.state === "connecting" || s.state === "registering" || s.state === "polling" || s.state === "assigning" || s.state === "looking-up") {
          if (state[index] === RETRYING || state[index] === NOT_BOOTED) move(index, PROVISIONING);
        }
        break;
      }
      case "hub":
        // Counted as runFleet counts them: a retry is a scheduled one (with its delay).
        if (event.status.state === "retrying" && event.status.delayMs !== undefined) {
          hubRetries++;
          tickHubRetries++;
          move(index, RETRYING);
        } else if (event.status.state === "connecting" && state[index] === RETRYING) {
          move(index, CONNECTING);
        }
        break;
    }
  };

  function remember(t: number, registrationId: string, event: RuntimeEvent): void {
    // describeEvent never carries a key or token.
    problems.unshift({ t: t / 1000, registrationId, text: describeEvent(event) });
    if (problems.length > RECENT_PROBLEMS) problems.length = RECENT_PROBLEMS;
  }

  const onProgress = (p: FleetProgress): void => {
    if (finished) return;
    progress = p;
    if (p.total > total) total = p.total;
  };

  const stateCounts = (): Record<string, number> => {
    const out: Record<string, number> = {};
    // Devices the page has not heard from yet wait to boot (the fleet's total comes with progress).
    const notSeen = Math.max(0, total - state.length);
    FLEET_STATES.forEach((name, i) => (out[name] = counts[i] + (i === NOT_BOOTED ? notSeen : 0)));
    return out;
  };

  const sections = (): Record<string, unknown> => {
    const ttc = connectedAfter.filter((v) => v !== undefined);
    return {
      overview: { title: options.title ?? "fleet run", startedAt: startedAt / 1000, emulatorUrl: options.emulatorUrl ?? null, finished, stream: { clients: hub.size, dropped: hub.dropped } },
      progress: progress ?? { elapsedMs: Date.now() - startedAt, booted: seen, connected: counts[CONNECTED], everConnected: ttc.length, done: 0, failed: counts[FAILED] + counts[BACKING_OFF], total: Math.max(total, state.length) },
      states: stateCounts(),
      timeToConnected: { devices: ttc.length, percentiles: percentilesOf(ttc), histogram: histogram(ttc) },
      retries: { dps: dpsRetries, hub: hubRetries, registers, causes: { ...retryCauses } },
      statusCodes: { ...statusCodes },
      marks: marks.slice(),
      problems: problems.slice(),
      summary: summary ?? null,
    };
  };

  const snapshot = () => {
    const s = sections();
    for (const [name, value] of Object.entries(s)) last[name] = JSON.stringify(value);
    return { kind: "fleet", version: 1, intervalMs, now: Date.now() / 1000, states: FLEET_STATES, series: series.snapshot(), sections: s };
  };

  const tick = () => {
    const t = Math.round(Date.now()) / 1000;
    const point: Record<string, number> = {};
    for (const [name, n] of Object.entries(stateCounts())) point[`state:${name}`] = n;
    for (const [cause, n] of Object.entries(tickRetries)) point[`retry:${cause}`] = n;
    for (const [code, n] of Object.entries(tickCodes)) point[`dps:${code}`] = n;
    point.hubRetries = tickHubRetries;
    point.registers = tickRegisters;
    point.firstConnections = tickConnected;
    tickRetries = {};
    tickCodes = {};
    tickHubRetries = tickRegisters = tickConnected = 0;
    series.push(t, point);
    if (hub.size === 0) return;
    const changed: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(sections())) {
      const text = JSON.stringify(value);
      if (last[name] !== text) {
        last[name] = text;
        changed[name] = value;
      }
    }
    hub.send(sseMessage("tick", { t, point, sections: changed }), () => sseMessage("snapshot", snapshot()));
  };
  let timer: NodeJS.Timeout | undefined = setInterval(tick, intervalMs);
  timer.unref();

  const server: Server = createServer((req, res) => {
    const pathname = new URL(req.url ?? "/", "http://dashboard.invalid").pathname;
    req.resume();
    if (pathname === "/") {
      res.writeHead(302, { location: "/dashboard" });
      res.end();
      return;
    }
    if (serveDashboard(req, res, pathname, { page: "fleet.html", hub, snapshot })) return;
    res.writeHead(404, { "content-type": "application/json; charset=utf-8" });
    res.end(JSON.stringify({ error: { code: "NO_ROUTE", message: `no route ${pathname}; the page is /dashboard` } }));
  });
  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: options.port ?? 0 }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/dashboard`;

  let closing: Promise<void> | undefined;
  return {
    url,
    onEvent,
    onProgress,
    mark: (name: string) => {
      marks.push({ t: Date.now() / 1000, name: String(name).slice(0, 60) });
      if (marks.length > 100) marks.shift();
    },
    finish: (s?: FleetSummary) => {
      if (finished) return;
      tick();
      finished = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      if (s) {
        summary = {
          total: s.total,
          connected: s.connected,
          connectedAtEnd: s.connectedAtEnd,
          delivered: s.delivered,
          failed: s.failed.length,
          everBackedOff: s.everBackedOff,
          timedOut: s.timedOut.length,
          fromCache: s.fromCache,
          elapsedMs: s.elapsedMs,
          timeToConnectedMs: s.timeToConnectedMs ?? null,
          dpsRetries: s.retries.count,
          hubRetries: s.hub.retries,
          reRegistrations: s.hub.reRegistrations,
          terminalReasons: s.terminalReasons,
        };
      }
      const changed = sections();
      for (const [name, value] of Object.entries(changed)) last[name] = JSON.stringify(value);
      hub.send(sseMessage("tick", { t: Date.now() / 1000, point: null, sections: changed }), () => sseMessage("snapshot", snapshot()));
    },
    close: () => {
      closing ??= (async () => {
        if (timer) clearInterval(timer);
        timer = undefined;
        hub.close(sseMessage("end", { reason: finished ? "the fleet run is over" : "the fleet dashboard stopped" }));
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      })();
      return closing;
    },
  };
}
