// Structured logs: one object per event, `{ time, level, event, ...fields }`, handed to a sink
// (JSON lines on stderr in the CLI, silent by default in the API). Fields never carry keys,
// tokens or signatures: callers pass reasons and identifiers only.

export type LogLevel = "error" | "warn" | "info" | "debug";
export type LogSink = (entry: Record<string, unknown>) => void;

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };
export const LOG_LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug"];

export class Logger {
  readonly #sink: LogSink | undefined;
  readonly #rank: number;

  constructor(sink: LogSink | undefined, level: LogLevel = "info") {
    this.#sink = sink;
    this.#rank = sink ? RANK[level] : -1;
  }

  /** Cheap check for the hot path: build fields only when they will be written. */
  enabled(level: LogLevel): boolean {
    return RANK[level] <= this.#rank;
  }

  write(level: LogLevel, event: string, fields?: Record<string, unknown>): void {
    if (RANK[level] > this.#rank || !this.#sink) return;
    try {
      this.#sink({ time: new Date().toISOString(), level, event, ...fields });
    } catch {
      // A throwing sink must not take a connection down with it; there is nowhere left to report to.
    }
  }

  error(event: string, fields?: Record<string, unknown>): void {
    this.write("error", event, fields);
  }
  warn(event: string, fields?: Record<string, unknown>): void {
    this.write("warn", event, fields);
  }
  info(event: string, fields?: Record<string, unknown>): void {
    this.write("info", event, fields);
  }
  debug(event: string, fields?: Record<string, unknown>): void {
    this.write("debug", event, fields);
  }
}

/** Counts per status code and per event, as plain objects for the admin API and `counters()`. */
export class Counters {
  dps: Record<string, number> = {};
  hub: Record<string, number> = {};
  https: Record<string, number> = {};
  /** DPS service API answers per status code. */
  dpsService: Record<string, number> = {};
  /** The hubs' service REST API: answers per status code. */
  hubService: Record<string, number> = {};
  faults: Record<string, number> = {};
  assigned = 0;
  throttled = 0;
  badPackets = 0;

  static bump(table: Record<string, number>, key: string | number): void {
    table[key] = (table[key] ?? 0) + 1;
  }

  reset(): void {
    this.dps = {};
    this.hub = {};
    this.https = {};
    this.dpsService = {};
    this.hubService = {};
    this.faults = {};
    this.assigned = 0;
    this.throttled = 0;
    this.badPackets = 0;
  }
}
