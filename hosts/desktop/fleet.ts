/**
 * Runs many devices in one process, each a full DeviceRuntime on its own flash, and summarises
 * what happened: time to connected (min, median, p99, max), attempts, DPS status codes met, and
 * the devices that ended in a terminal state with the reason.
 */
import type { FlashPort } from "../../modules/flash.js";
import type { DeviceRuntime, RuntimeConfig, RuntimeEvent } from "../../modules/runtime.js";
import { createDesktopDevice, type DesktopTransport } from "./device.js";
import type { RandomSource } from "../../modules/ports.js";

export interface FleetOptions {
  readonly count: number;
  readonly configFor: (index: number) => RuntimeConfig;
  readonly transport: DesktopTransport;
  /** Boots are spread uniformly over this window (default 0: all at once). */
  readonly staggerMs?: number;
  /** Telemetry messages each device sends once connected (default 1). */
  readonly messages?: number;
  /** Give up on devices not done after this long (default 120 s). */
  readonly timeoutMs?: number;
  readonly flashFor?: (index: number) => FlashPort | string | undefined;
  readonly random?: RandomSource;
  /** Called about every `progressMs` with the running totals. */
  readonly onProgress?: (progress: FleetProgress) => void;
  readonly progressMs?: number;
  /** Every event of every device (for a verbose console). */
  readonly onEvent?: (index: number, registrationId: string, event: RuntimeEvent) => void;
}

export interface FleetProgress {
  readonly elapsedMs: number;
  readonly booted: number;
  readonly connected: number;
  readonly done: number;
  readonly failed: number;
  readonly total: number;
}

export interface Percentiles {
  readonly min: number;
  readonly median: number;
  readonly p99: number;
  readonly max: number;
}

export interface FleetSummary {
  readonly total: number;
  readonly connected: number;
  /** Devices whose messages were all acknowledged. */
  readonly delivered: number;
  readonly failed: { readonly registrationId: string; readonly code: string; readonly message: string }[];
  readonly timedOut: string[];
  readonly timeToConnectedMs?: Percentiles;
  readonly dpsAttempts: Percentiles;
  /** DPS answers and faults met, e.g. { "202": 1000, "429": 37, "connack-5": 2, "fault-closed": 1 }. */
  readonly statusCodes: Record<string, number>;
  readonly hubStates: Record<string, number>;
  readonly fromCache: number;
  readonly elapsedMs: number;
}

interface DeviceRecord {
  readonly index: number;
  readonly registrationId: string;
  runtime?: DeviceRuntime;
  bootedAt?: number;
  connectedAt?: number;
  attempts: number;
  acked: number;
  done: boolean;
  fromCache: boolean;
  failure?: { code: string; message: string };
}

export function percentiles(values: number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
  return { min: sorted[0] ?? 0, median: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? 0 };
}

export async function runFleet(options: FleetOptions): Promise<FleetSummary> {
  const start = Date.now();
  const messages = options.messages ?? 1;
  const random = options.random ?? Math.random;
  const statusCodes: Record<string, number> = {};
  const hubStates: Record<string, number> = {};
  const devices: DeviceRecord[] = [];
  const timers: NodeJS.Timeout[] = [];
  let finished = 0;
  let resolveAll!: () => void;
  const allDone = new Promise<void>((resolve) => (resolveAll = resolve));
  const count = (table: Record<string, number>, key: string) => (table[key] = (table[key] ?? 0) + 1);

  const finish = (d: DeviceRecord) => {
    if (d.done) return;
    d.done = true;
    finished++;
    d.runtime?.stop();
    if (finished === options.count) resolveAll();
  };

  for (let i = 0; i < options.count; i++) {
    const config = options.configFor(i);
    const d: DeviceRecord = { index: i, registrationId: config.registrationId, attempts: 0, acked: 0, done: false, fromCache: false };
    devices.push(d);
    const boot = () => {
      d.bootedAt = Date.now();
      d.runtime = createDesktopDevice({
        config,
        transport: options.transport,
        flash: options.flashFor?.(i),
        random,
        listener: (event) => {
          options.onEvent?.(i, d.registrationId, event);
          if (event.source === "dps") {
            const s = event.status;
            if (s.httpStatus !== undefined && (s.state === "assigning" || s.state === "retrying" || s.state === "failed" || s.state === "fallback")) count(statusCodes, String(s.httpStatus));
            if (s.state === "assigned") count(statusCodes, "200");
            if (s.connack !== undefined) count(statusCodes, `connack-${s.connack}`);
            if (s.fault !== undefined) count(statusCodes, `fault-${s.fault}`);
            d.attempts = Math.max(d.attempts, s.attempt);
          } else if (event.source === "hub") {
            count(hubStates, event.status.state);
          } else if (event.source === "assignment") {
            if (event.assignment.source === "cache") d.fromCache = true;
          } else if (event.source === "runtime") {
            if (event.state === "connected" && d.connectedAt === undefined) {
              d.connectedAt = Date.now();
              for (let m = 0; m < messages; m++) {
                try {
                  d.runtime!.send({ device: d.registrationId, seq: m, at: new Date().toISOString() });
                } catch (error) {
                  d.failure = { code: (error as { code?: string }).code ?? "ERROR", message: (error as Error).message };
                }
              }
              if (messages === 0) finish(d);
            } else if (event.state === "failed") {
              d.failure = event.error ?? { code: "FAILED", message: "failed" };
              finish(d);
            }
          } else if (event.source === "telemetry") {
            d.acked++;
            if (d.acked >= messages) finish(d);
          }
        },
      });
      d.runtime.start();
    };
    const delay = options.staggerMs ? random() * options.staggerMs : 0;
    if (delay > 0) timers.push(setTimeout(boot, delay));
    else boot();
  }

  const progress = options.onProgress
    ? setInterval(() => {
        options.onProgress!({
          elapsedMs: Date.now() - start,
          booted: devices.filter((d) => d.bootedAt !== undefined).length,
          connected: devices.filter((d) => d.connectedAt !== undefined).length,
          done: finished,
          failed: devices.filter((d) => d.failure).length,
          total: options.count,
        });
      }, options.progressMs ?? 1000)
    : undefined;
  const timeout = setTimeout(resolveAll, options.timeoutMs ?? 120_000);
  if (options.count === 0) resolveAll();
  await allDone;
  clearTimeout(timeout);
  if (progress) clearInterval(progress);
  for (const t of timers) clearTimeout(t);
  const timedOut: string[] = [];
  for (const d of devices) {
    if (!d.done) {
      timedOut.push(d.registrationId);
      d.runtime?.stop();
    }
  }
  const times = devices.filter((d) => d.connectedAt !== undefined).map((d) => d.connectedAt! - d.bootedAt!);
  return {
    total: options.count,
    connected: times.length,
    delivered: devices.filter((d) => d.acked >= messages).length,
    failed: devices.filter((d) => d.failure).map((d) => ({ registrationId: d.registrationId, code: d.failure!.code, message: d.failure!.message })),
    timedOut,
    timeToConnectedMs: times.length ? percentiles(times) : undefined,
    dpsAttempts: percentiles(devices.map((d) => d.attempts)),
    statusCodes,
    hubStates,
    fromCache: devices.filter((d) => d.fromCache).length,
    elapsedMs: Date.now() - start,
  };
}

/** The summary as a few readable lines. */
export function formatSummary(s: FleetSummary): string {
  const p = (x?: Percentiles) => (x ? `min ${x.min} ms, median ${x.median} ms, p99 ${x.p99} ms, max ${x.max} ms` : "n/a");
  const lines = [
    `fleet: ${s.connected}/${s.total} connected, ${s.delivered} delivered all telemetry, ${s.failed.length} failed, ${s.timedOut.length} timed out, ${s.fromCache} warm starts, in ${(s.elapsedMs / 1000).toFixed(1)} s`,
    `time to connected: ${p(s.timeToConnectedMs)}`,
    `DPS retries per device: min ${s.dpsAttempts.min}, median ${s.dpsAttempts.median}, p99 ${s.dpsAttempts.p99}, max ${s.dpsAttempts.max}`,
    `DPS answers and faults: ${Object.entries(s.statusCodes).sort().map(([k, v]) => `${k}×${v}`).join(", ") || "none"}`,
  ];
  const reasons: Record<string, number> = {};
  for (const f of s.failed) reasons[`${f.code}: ${f.message}`] = (reasons[`${f.code}: ${f.message}`] ?? 0) + 1;
  for (const [reason, n] of Object.entries(reasons)) lines.push(`  ${n} device(s) ended with ${reason}`);
  return lines.join("\n");
}
