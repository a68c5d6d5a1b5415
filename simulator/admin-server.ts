// The admin API: plain HTTP with JSON bodies, meant for loopback. It changes the emulator while it
// runs (enrollments, devices, hubs, faults) and reads what it saw (registrations, counters,
// telemetry). Routes are listed by `GET /`; docs/EMULATOR.md has the reference.
//
// It also serves the live dashboard (GET /dashboard): static files from simulator/dashboard/ and
// uPlot from node_modules, fed by one Server-Sent Events stream (GET /dashboard/events) that sends
// a snapshot, then a tick about every second (the new point of each time series and the sections
// that changed). Memory is bounded: fixed-size rings for the series, capped tables, at most
// MAX_STREAM_CLIENTS streams, and a client that does not keep up gets no more ticks (a snapshot
// when it has drained, the connection closed when it lags for too long). Sections are built field
// by field from what the emulator reports: keys and tokens are never in them.
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { readBody } from "./http-body.js";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FaultRule, GroupEnrollment, IndividualEnrollment } from "./config.js";
import { EmulatorError, HubServiceError } from "./errors.js";
import type { C2dRequest } from "./hub-features.js";
import type { Emulator } from "./index.js";

const MAX_BODY_BYTES = 1024 * 1024;

type Reply = { status: number; body?: unknown };
/** A route's answer, or a promise of it (a direct method waits for the device). */
type Handler = (ctx: { params: string[]; query: URLSearchParams; body: unknown }) => Reply | Promise<Reply>;
/** The admin API's request handler, and `close()` for the emulator to call as it stops. */
export interface AdminHandler {
  (req: IncomingMessage, res: ServerResponse): void;
  /** Ends the dashboard's streams (with an `end` event) and its sampler. */
  close(): void;
}

/**
 * True when a browser sent the request from a page of another origin: browsers add `Origin` to
 * cross-origin requests (and `Sec-Fetch-Site`), curl and Node's clients send neither.
 */
function crossSite(req: IncomingMessage): boolean {
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined) return site !== "same-origin" && site !== "none";
  const origin = req.headers.origin;
  return origin !== undefined && origin !== `http://${req.headers.host ?? ""}`;
}

interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
  doc: string;
}

export function adminHandler(emulator: Emulator & { resetCounters(): void; clearTelemetry(): void; removeFault(id: number): boolean; faults(): unknown; enrollments(): unknown; devices(): unknown; hubs(): unknown; registration(id: string): unknown; deleteRegistration(id: string): boolean }): AdminHandler {
  const routes: Route[] = [];
  const add = (method: string, path: string, doc: string, handler: Handler): void => {
    const pattern = new RegExp("^" + path.replace(/:[a-z]+/g, "([^/]+)") + "$");
    routes.push({ method, pattern, handler, doc: `${method} ${path}  ${doc}` });
  };
  const enabledFlag = (body: unknown, field: string): boolean => {
    const value = (body as Record<string, unknown> | null)?.[field];
    if (typeof value !== "boolean") throw new EmulatorError("INVALID_ARGUMENT", `body must be {"${field}": true|false}`);
    return value;
  };

  // The dashboard's sampler runs while the emulator does; its streams end (with an `end` event)
  // when the emulator closes the handler, just before its sockets.
  const dashboard = new EmulatorDashboard(emulator);
  const dashboardDocs = [
    "GET /dashboard  the live dashboard (a page for a browser)",
    "GET /dashboard/events  its Server-Sent Events stream: a snapshot, then a tick about every second",
    "GET /dashboard/state  one snapshot as JSON",
  ];

  add("GET", "/", "this list", () => ({ status: 200, body: { routes: [...routes.map((r) => r.doc), ...dashboardDocs] } }));
  add("GET", "/health", "liveness", () => ({ status: 200, body: { ok: true } }));
  add("GET", "/endpoints", "listening addresses, idScope and CA path", () => ({
    status: 200,
    body: { ...emulator.endpoints, idScope: emulator.idScope, caPath: emulator.caPath },
  }));
  add("GET", "/service-api", "the DPS service API: host name, port, shared access policies with their keys, and connection strings", () => ({
    status: 200,
    body: {
      hostName: emulator.serviceApi.hostName,
      host: emulator.endpoints.https.host,
      port: emulator.endpoints.https.port,
      policies: emulator.serviceApi.policies.map((p) => ({ ...p, connectionString: emulator.dpsServiceConnectionString(p.name) })),
    },
  }));
  add("GET", "/enrollments", "individual and group enrollments (keys left out)", () => ({ status: 200, body: emulator.enrollments() }));
  add("POST", "/enrollments/individual", "add or replace an individual enrollment", ({ body }) => {
    emulator.addIndividualEnrollment(body as IndividualEnrollment);
    return { status: 201, body: { registrationId: (body as IndividualEnrollment).registrationId } };
  });
  add("POST", "/enrollments/groups", "add or replace a group enrollment", ({ body }) => {
    emulator.addGroupEnrollment(body as GroupEnrollment);
    return { status: 201, body: { groupId: (body as GroupEnrollment).groupId } };
  });
  add("PATCH", "/enrollments/individual/:id", 'body {"enabled": bool}', ({ params, body }) => {
    emulator.setEnrollmentEnabled({ registrationId: params[0] }, enabledFlag(body, "enabled"));
    return { status: 200, body: { registrationId: params[0], enabled: enabledFlag(body, "enabled") } };
  });
  add("PATCH", "/enrollments/groups/:id", 'body {"enabled": bool}', ({ params, body }) => {
    emulator.setEnrollmentEnabled({ groupId: params[0] }, enabledFlag(body, "enabled"));
    return { status: 200, body: { groupId: params[0], enabled: enabledFlag(body, "enabled") } };
  });
  add("DELETE", "/enrollments/individual/:id", "remove an individual enrollment", ({ params }) => {
    if (!emulator.removeEnrollment({ registrationId: params[0] })) throw new EmulatorError("NOT_FOUND", `no enrollment ${params[0]}`);
    return { status: 204 };
  });
  add("DELETE", "/enrollments/groups/:id", "remove a group enrollment", ({ params }) => {
    if (!emulator.removeEnrollment({ groupId: params[0] })) throw new EmulatorError("NOT_FOUND", `no group ${params[0]}`);
    return { status: 204 };
  });
  add("GET", "/registrations", "registration records", () => ({ status: 200, body: emulator.registrations() }));
  add("GET", "/registrations/:id", "one registration record", ({ params }) => {
    const record = emulator.registration(params[0]);
    if (!record) throw new EmulatorError("NOT_FOUND", `no registration ${params[0]}`);
    return { status: 200, body: record };
  });
  add("DELETE", "/registrations/:id", "forget a registration (next one is an initial assignment)", ({ params }) => {
    if (!emulator.deleteRegistration(params[0])) throw new EmulatorError("NOT_FOUND", `no registration ${params[0]}`);
    return { status: 204 };
  });
  add("GET", "/devices", "hub devices", () => ({ status: 200, body: emulator.devices() }));
  add("PATCH", "/devices/:id", 'body {"enabled": bool}; ?hub=host to pick one hub', ({ params, query, body }) => {
    emulator.setDeviceEnabled(params[0], enabledFlag(body, "enabled"), query.get("hub") ?? undefined);
    return { status: 200, body: { deviceId: params[0], enabled: enabledFlag(body, "enabled") } };
  });
  add("DELETE", "/devices/:id", "delete a hub device; ?hub=host to pick one hub", ({ params, query }) => {
    emulator.deleteDevice(params[0], query.get("hub") ?? undefined);
    return { status: 204 };
  });
  add("POST", "/devices/:id/messages", 'queue a C2D message: body {"body": text | "bodyBase64": b64, "properties": {k: v}, "messageId", "contentType", "contentEncoding", "correlationId", "ttlSeconds"}; ?hub=host', ({ params, query, body }) => {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b !== "object" || Array.isArray(b)) throw new EmulatorError("INVALID_ARGUMENT", "body must be a JSON object");
    const known = ["body", "bodyBase64", "properties", "messageId", "contentType", "contentEncoding", "correlationId", "ttlSeconds"];
    for (const k of Object.keys(b)) if (!known.includes(k)) throw new EmulatorError("INVALID_ARGUMENT", `${k} is not a C2D message field (${known.join(", ")})`);
    if ((b.body === undefined) === (b.bodyBase64 === undefined)) throw new EmulatorError("INVALID_ARGUMENT", 'give one of "body" (text) or "bodyBase64"');
    if (b.bodyBase64 !== undefined && (typeof b.bodyBase64 !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(b.bodyBase64))) throw new EmulatorError("INVALID_ARGUMENT", "bodyBase64 must be base64");
    const { bodyBase64, ...rest } = b;
    const message = { ...rest, body: bodyBase64 !== undefined ? Buffer.from(bodyBase64 as string, "base64") : b.body } as C2dRequest;
    const messageId = emulator.sendC2D(params[0], message, query.get("hub") ?? undefined);
    return { status: 201, body: { messageId } };
  });
  add("POST", "/devices/:id/methods", 'invoke a direct method: body {"methodName", "payload", "responseTimeoutInSeconds" (5..300, default 30), "connectTimeoutInSeconds"}; answers {status, payload}; 404 offline, 504 no answer; ?hub=host', ({ params, query, body }) => {
    const b = body as Record<string, unknown> | null;
    if (b === null || typeof b !== "object" || Array.isArray(b)) throw new EmulatorError("INVALID_ARGUMENT", 'body must be {"methodName": ..., "payload": ...}');
    return emulator.invokeMethod(params[0], b as unknown as Parameters<Emulator["invokeMethod"]>[1], query.get("hub") ?? undefined).then((r) => ({ status: 200, body: r }));
  });
  add("GET", "/devices/:id/messages", "C2D messages waiting for the device's PUBACK; ?hub=host", ({ params, query }) => ({ status: 200, body: emulator.pendingC2D(params[0], query.get("hub") ?? undefined) }));
  add("DELETE", "/devices/:id/messages", "forget the device's waiting C2D messages; ?hub=host", ({ params, query }) => ({ status: 200, body: { purged: emulator.purgeC2D(params[0], query.get("hub") ?? undefined) } }));
  add("GET", "/devices/:id/twin", "the device twin as the service API returns it; ?hub=host", ({ params, query }) => ({ status: 200, body: emulator.twin(params[0], query.get("hub") ?? undefined) }));
  add("PATCH", "/devices/:id/twin", 'patch tags and desired: body {"tags": {...}, "properties": {"desired": {...}}}; ?hub=host&etag=...', ({ params, query, body }) => ({
    status: 200,
    body: emulator.updateTwin(params[0], body as object, { hubHostName: query.get("hub") ?? undefined, etag: query.get("etag") ?? undefined }),
  }));
  add("GET", "/hubs", "hubs with weight, availability, device count, shared access policies and a service connection string", () => ({ status: 200, body: emulator.hubs() }));
  add("PATCH", "/hubs/:host", 'body {"available": bool, "maxMessageBytes": 1..262144} (either or both)', ({ params, body }) => {
    const fields = body as Record<string, unknown> | null;
    const keys = typeof fields === "object" && fields !== null && !Array.isArray(fields) ? Object.keys(fields) : [];
    const { available, maxMessageBytes } = (fields ?? {}) as { available?: unknown; maxMessageBytes?: unknown };
    if (keys.length === 0 || keys.some((k) => k !== "available" && k !== "maxMessageBytes") || (available !== undefined && typeof available !== "boolean")) {
      throw new EmulatorError("INVALID_ARGUMENT", 'body must be {"available": true|false, "maxMessageBytes": 1..262144}, either or both');
    }
    // maxMessageBytes first: it checks the hub and the value, so a bad body changes nothing.
    if (maxMessageBytes !== undefined) emulator.setHubMaxMessageBytes(params[0], maxMessageBytes as number);
    if (available !== undefined) emulator.setHubAvailable(params[0], available as boolean);
    const hub = (emulator.hubs() as { hostName: string; available: boolean; maxMessageBytes: number }[]).find((h) => h.hostName.toLowerCase() === params[0].toLowerCase());
    return { status: 200, body: { hostName: params[0], available: hub?.available, maxMessageBytes: hub?.maxMessageBytes } };
  });
  add("GET", "/faults", "fault rules with ids and match counts", () => ({ status: 200, body: emulator.faults() }));
  add("POST", "/faults", "add a rule (or an array of rules)", ({ body }) => {
    const rules = Array.isArray(body) ? (body as FaultRule[]) : [body as FaultRule];
    const ids = rules.map((rule) => emulator.addFault(rule) as unknown as number);
    return { status: 201, body: { ids } };
  });
  add("DELETE", "/faults", "remove every rule", () => {
    emulator.clearFaults();
    return { status: 204 };
  });
  add("DELETE", "/faults/:id", "remove one rule", ({ params }) => {
    if (!emulator.removeFault(Number(params[0]))) throw new EmulatorError("NOT_FOUND", `no fault rule ${params[0]}`);
    return { status: 204 };
  });
  add("GET", "/counters", "answers per status code and events", () => ({ status: 200, body: emulator.counters() }));
  add("DELETE", "/counters", "reset the counters", () => {
    emulator.resetCounters();
    return { status: 204 };
  });
  add("GET", "/telemetry", "stored messages; ?deviceId=...&limit=N (newest N)", ({ query }) => {
    let messages = emulator.telemetry(query.get("deviceId") ?? undefined);
    const limit = Number(query.get("limit") ?? "0");
    if (Number.isInteger(limit) && limit > 0) messages = messages.slice(-limit);
    return { status: 200, body: messages };
  });
  add("DELETE", "/telemetry", "forget stored messages", () => {
    emulator.clearTelemetry();
    return { status: 204 };
  });

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const pathname = new URL(req.url ?? "/", "http://admin.invalid").pathname;
    if (serveDashboard(req, res, pathname, { page: "index.html", hub: dashboard.hub, snapshot: () => dashboard.snapshot() })) {
      req.resume();
      return;
    }
    readBody(req, res, MAX_BODY_BYTES, (text) => {
      const url = new URL(req.url ?? "/", "http://admin.invalid");
      const reply = (status: number, body?: unknown): void => {
        const text = body === undefined ? "" : JSON.stringify(body, null, 2);
        res.writeHead(status, body === undefined ? {} : { "content-type": "application/json; charset=utf-8" });
        res.end(text);
      };
      // A web page elsewhere may send requests here (a browser adds its Origin); only the
      // dashboard's own page, curl and the tests may change anything.
      if (req.method !== "GET" && req.method !== "HEAD" && crossSite(req)) {
        return reply(403, { error: { code: "CROSS_SITE", message: `requests from ${String(req.headers.origin)} may not change the emulator; use its own dashboard, curl or the API` } });
      }
      if (text === undefined) return reply(413, { error: { code: "TOO_LARGE", message: `body over ${MAX_BODY_BYTES} bytes` } });
      const candidates = routes.filter((r) => r.pattern.test(url.pathname));
      const route = candidates.find((r) => r.method === req.method);
      if (!route) {
        if (candidates.length > 0) return reply(405, { error: { code: "METHOD_NOT_ALLOWED", message: `${req.method} is not served on ${url.pathname}` } });
        return reply(404, { error: { code: "NO_ROUTE", message: `no route ${url.pathname}; GET / lists them` } });
      }
      let body: unknown;
      if (text.length > 0) {
        try {
          body = JSON.parse(text);
        } catch {
          return reply(400, { error: { code: "INVALID_JSON", message: "the body is not JSON" } });
        }
      }
      try {
        let params: string[];
        try {
          params = (route.pattern.exec(url.pathname) ?? []).slice(1).map(decodeURIComponent);
        } catch {
          // A device id may hold '%': it must be sent as %25 (and ? # as %3F %23).
          return reply(400, { error: { code: "INVALID_PATH", message: `${url.pathname} has a broken %-escape; encode the id with encodeURIComponent` } });
        }
        const failed = (error: unknown): void => {
          if (error instanceof HubServiceError) {
            return reply(error.status, { error: { code: error.code, errorCode: error.errorCode, message: error.message } });
          }
          if (error instanceof EmulatorError) {
            const status = error.code === "NOT_FOUND" || error.code === "UNKNOWN_HUB" ? 404 : 400;
            return reply(status, { error: { code: error.code, message: error.message } });
          }
          reply(500, { error: { code: "INTERNAL", message: (error as Error).message } });
        };
        try {
          const result = route.handler({ params, query: url.searchParams, body });
          if (result instanceof Promise) result.then((r) => reply(r.status, r.body), failed);
          else reply(result.status, result.body);
        } catch (error) {
          failed(error);
        }
      } catch (error) {
        reply(500, { error: { code: "INTERNAL", message: (error as Error).message } });
      }
    });
  };
  return Object.assign(handle, { close: () => dashboard.close() });
}

// ---- the dashboard ------------------------------------------------------------------------------

/** Seconds of 1 Hz history the emulator's dashboard keeps (and sends in its snapshot). */
export const DASHBOARD_HISTORY = 900;
/** Streams open at once; one more is answered 503. */
export const MAX_STREAM_CLIENTS = 16;
/** Rows of each table in a section (the totals count everything). */
const TABLE_ROWS = 100;
const TELEMETRY_ROWS = 25;
const PAYLOAD_CHARS = 160;

/**
 * Time series of a fixed length: a point every tick, each a value per named series (counts per
 * tick, or gauges). A series that appears later reads 0 before it did, and so does a series a
 * point leaves out; at most `maxSeries` names are kept (the rest ignored). Memory is
 * capacity × (series + 1) numbers, whatever the run's length.
 */
export class SeriesRing {
  readonly capacity: number;
  readonly maxSeries: number;
  readonly #t: Float64Array;
  readonly #series = new Map<string, Float64Array>();
  #next = 0;
  #size = 0;

  constructor(capacity: number, maxSeries = 48) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError("capacity must be a positive integer");
    this.capacity = capacity;
    this.maxSeries = maxSeries;
    this.#t = new Float64Array(capacity);
  }

  get size(): number {
    return this.#size;
  }

  /** `t` in seconds since the epoch; names not given this time read 0 at this point. */
  push(t: number, values: Record<string, number>): void {
    const at = this.#next;
    this.#t[at] = t;
    for (const column of this.#series.values()) column[at] = 0;
    for (const [name, value] of Object.entries(values)) {
      let column = this.#series.get(name);
      if (!column) {
        if (this.#series.size >= this.maxSeries) continue;
        column = new Float64Array(this.capacity);
        this.#series.set(name, column);
      }
      column[at] = Number.isFinite(value) ? value : 0;
    }
    this.#next = (at + 1) % this.capacity;
    this.#size = Math.min(this.capacity, this.#size + 1);
  }

  /** Oldest first, as uPlot wants them: times, and one array per series. */
  snapshot(): { capacity: number; t: number[]; series: Record<string, number[]> } {
    const start = (this.#next - this.#size + this.capacity) % this.capacity;
    const pick = (column: Float64Array) => {
      const out = new Array<number>(this.#size);
      for (let i = 0; i < this.#size; i++) out[i] = column[(start + i) % this.capacity];
      return out;
    };
    const series: Record<string, number[]> = {};
    for (const [name, column] of this.#series) series[name] = pick(column);
    return { capacity: this.capacity, t: pick(this.#t), series };
  }
}

/** One Server-Sent Events message (JSON.stringify writes no newline, so one data line). */
export function sseMessage(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** What SseHub needs of a response: ServerResponse has all of it. */
export interface SseResponse {
  readonly writableNeedDrain: boolean;
  readonly writableLength: number;
  write(chunk: string): boolean;
  end(): void;
  destroy(): void;
  once(event: "close", listener: () => void): unknown;
}

interface SseClient {
  readonly res: SseResponse;
  /** Ticks were skipped: the next message it gets is a snapshot. */
  stale: boolean;
  laggingSince?: number;
}

/**
 * The open streams of one dashboard. A message goes only to a client whose response has drained
 * (so Node holds at most one message beyond the socket's high-water mark per client); a client
 * that missed ticks gets a snapshot once it drains, and one still not drained after `maxLagMs` is
 * disconnected. At most `maxClients` streams.
 */
export class SseHub {
  readonly #clients = new Set<SseClient>();
  readonly #maxClients: number;
  readonly #maxLagMs: number;
  readonly #now: () => number;
  #closed = false;
  /** Clients disconnected for lagging, since the start. */
  dropped = 0;

  constructor(options: { maxClients?: number; maxLagMs?: number; now?: () => number } = {}) {
    this.#maxClients = options.maxClients ?? MAX_STREAM_CLIENTS;
    this.#maxLagMs = options.maxLagMs ?? 15_000;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#clients.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** No room for another client (or closed). */
  get full(): boolean {
    return this.#closed || this.#clients.size >= this.#maxClients;
  }

  /** Bytes Node holds for all clients now. */
  buffered(): number {
    let n = 0;
    for (const c of this.#clients) n += c.res.writableLength;
    return n;
  }

  /** Adds a client and writes `first` (the snapshot) to it; false (nothing written) when full or closed. */
  add(res: SseResponse, first: string): boolean {
    if (this.#closed || this.#clients.size >= this.#maxClients) return false;
    const client: SseClient = { res, stale: false };
    this.#clients.add(client);
    res.once("close", () => this.#clients.delete(client));
    res.write("retry: 3000\n\n" + first);
    return true;
  }

  /** Sends `message` to every client that keeps up; `snapshot` (built once, if needed) to those that fell behind. */
  send(message: string, snapshot: () => string): void {
    let full: string | undefined;
    const now = this.#now();
    for (const c of this.#clients) {
      if (c.res.writableNeedDrain) {
        c.stale = true;
        c.laggingSince ??= now;
        if (now - c.laggingSince > this.#maxLagMs) {
          this.#clients.delete(c);
          this.dropped++;
          c.res.destroy();
        }
        continue;
      }
      c.laggingSince = undefined;
      if (c.stale) {
        full ??= snapshot();
        c.res.write(full);
        c.stale = false;
      } else {
        c.res.write(message);
      }
    }
  }

  /** Writes `last` to each client that can take it, ends every stream, and takes no more. */
  close(last?: string): void {
    this.#closed = true;
    for (const c of this.#clients) {
      if (last !== undefined && !c.res.writableNeedDrain) c.res.write(last);
      c.res.end();
    }
    this.#clients.clear();
  }
}

// Static files: a fixed list, so no path from a request ever reaches the file system.
const here = fileURLToPath(new URL(".", import.meta.url));
/** simulator/dashboard/ in the source tree (the build runs from build/simulator/, the sources beside it). */
export const DASHBOARD_DIR = [join(here, "dashboard"), join(here, "..", "..", "simulator", "dashboard")].find((d) => existsSync(join(d, "index.html"))) ?? join(here, "dashboard");
const requireHere = createRequire(import.meta.url);
const uplotFile = (name: string) => () => requireHere.resolve(`uplot/dist/${name}`);
const ASSETS: Record<string, { file: () => string; type: string }> = {
  "index.html": { file: () => join(DASHBOARD_DIR, "index.html"), type: "text/html; charset=utf-8" },
  "fleet.html": { file: () => join(DASHBOARD_DIR, "fleet.html"), type: "text/html; charset=utf-8" },
  "app.js": { file: () => join(DASHBOARD_DIR, "app.js"), type: "text/javascript; charset=utf-8" },
  "fleet.js": { file: () => join(DASHBOARD_DIR, "fleet.js"), type: "text/javascript; charset=utf-8" },
  "common.js": { file: () => join(DASHBOARD_DIR, "common.js"), type: "text/javascript; charset=utf-8" },
  "style.css": { file: () => join(DASHBOARD_DIR, "style.css"), type: "text/css; charset=utf-8" },
  "uPlot.iife.min.js": { file: uplotFile("uPlot.iife.min.js"), type: "text/javascript; charset=utf-8" },
  "uPlot.min.css": { file: uplotFile("uPlot.min.css"), type: "text/css; charset=utf-8" },
};
const PAGE_HEADERS = {
  "cache-control": "no-cache",
  "x-content-type-options": "nosniff",
  "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

/** Answers a GET for one of the dashboard's files by name (index.html, app.js, uPlot.iife.min.js...). */
export async function serveDashboardAsset(res: ServerResponse, name: string): Promise<void> {
  const asset = ASSETS[name];
  if (!asset) {
    res.writeHead(404, { "content-type": "application/json; charset=utf-8" });
    res.end(JSON.stringify({ error: { code: "NO_ROUTE", message: `no dashboard file ${name}` } }));
    return;
  }
  try {
    const body = await readFile(asset.file());
    res.writeHead(200, { "content-type": asset.type, "content-length": body.length, ...PAGE_HEADERS });
    res.end(body);
  } catch (error) {
    res.writeHead(500, { "content-type": "application/json; charset=utf-8" });
    res.end(JSON.stringify({ error: { code: "INTERNAL", message: `dashboard file ${name} unreadable: ${(error as Error).message}` } }));
  }
}

/** Opens a stream on `res` (headers, then `first`); 503 when the hub is full or closed. */
export function openStream(hub: SseHub, req: IncomingMessage, res: ServerResponse, first: () => string): void {
  if (hub.full) {
    res.writeHead(503, { "content-type": "application/json; charset=utf-8", "retry-after": "5" });
    res.end(JSON.stringify({ error: { code: "UNAVAILABLE", message: hub.closed ? "the dashboard has stopped" : "too many streams open at once" } }));
    return;
  }
  req.socket.setNoDelay(true);
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", connection: "keep-alive", "x-accel-buffering": "no" });
  hub.add(res, first());
}

/**
 * Routes shared by both dashboards: the page, its files, the stream and one snapshot as JSON.
 * Answers true when it served the request.
 */
export function serveDashboard(
  req: IncomingMessage,
  res: ServerResponse,
  pathname: string,
  dashboard: { page: string; hub: SseHub; snapshot: () => unknown },
): boolean {
  const base = pathname === "/dashboard" || pathname === "/dashboard/";
  if (!base && !pathname.startsWith("/dashboard/")) return false;
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { "content-type": "application/json; charset=utf-8", allow: "GET" });
    res.end(JSON.stringify({ error: { code: "METHOD_NOT_ALLOWED", message: `${req.method} is not served on ${pathname}` } }));
    return true;
  }
  const rest = base ? "" : pathname.slice("/dashboard/".length);
  if (rest === "") void serveDashboardAsset(res, dashboard.page);
  else if (rest === "events" && req.method === "HEAD") {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store" });
    res.end();
  } else if (rest === "events") openStream(dashboard.hub, req, res, () => sseMessage("snapshot", dashboard.snapshot()));
  else if (rest === "state") {
    res.writeHead(200, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
    res.end(JSON.stringify(dashboard.snapshot()));
  } else void serveDashboardAsset(res, rest);
  return true;
}

type DashboardEmulator = Pick<Emulator, "endpoints" | "idScope" | "seed" | "counters" | "faults" | "hubs" | "devices" | "enrollments" | "registrations" | "telemetry">;

/** Keeps only the fields a rule is made of (and nothing a future field might carry). */
function faultView(f: { id: number; rule: FaultRule; remaining: number | undefined; matched: number }) {
  const r = f.rule;
  const rule: Record<string, unknown> = {};
  for (const key of ["step", "registrationId", "groupId", "probability", "times", "status", "errorCode", "retryAfter", "connack", "drop", "delayMs", "malformed"] as const) {
    if (r[key] !== undefined) rule[key] = r[key];
  }
  return { id: f.id, rule, remaining: f.remaining ?? null, matched: f.matched };
}

/** Positive growth of each counter since the last tick (a reset counts from zero). */
function deltas(now: Record<string, number>, before: Record<string, number>, prefix: string, into: Record<string, number>): void {
  for (const [k, v] of Object.entries(now)) {
    const prev = before[k] ?? 0;
    into[prefix + k] = v >= prev ? v - prev : v;
  }
  // A key that vanished (reset) reads 0, not null, for the rest of its line.
  for (const k of Object.keys(before)) if (!(k in now)) into[prefix + k] = 0;
}

/**
 * The emulator's dashboard: a 1 Hz sampler (counters into the series, always, so the history is
 * there when a page opens; the heavier tables only while a page is open) and the stream.
 */
export class EmulatorDashboard {
  readonly hub = new SseHub();
  readonly series = new SeriesRing(DASHBOARD_HISTORY);
  readonly intervalMs: number;
  readonly #emulator: DashboardEmulator;
  readonly #startedAt = Date.now();
  #timer: NodeJS.Timeout | undefined;
  #previous: ReturnType<Emulator["counters"]>;
  #last: Record<string, string> = {};
  #ticks = 0;

  constructor(emulator: DashboardEmulator, intervalMs = 1000) {
    this.#emulator = emulator;
    this.intervalMs = intervalMs;
    this.#previous = emulator.counters();
    this.#timer = setInterval(() => this.tick(), intervalMs);
    this.#timer.unref();
  }

  /** One sample: a point in every series, and a tick to the open streams. */
  tick(): void {
    const c = this.#emulator.counters();
    const p = this.#previous;
    this.#previous = c;
    const point: Record<string, number> = {};
    point.registrations = Math.max(0, c.registrations >= p.registrations ? c.registrations - p.registrations : c.registrations);
    point.throttled = c.throttled >= p.throttled ? c.throttled - p.throttled : c.throttled;
    deltas(c.dps, p.dps, "dps:", point);
    deltas(c.hub, p.hub, "hub:", point);
    deltas(c.https, p.https, "https:", point);
    deltas(c.faults, p.faults, "faults:", point);
    point.connections = c.connections;
    point.hubSessions = this.#emulator.devices().reduce((n, d) => n + d.connections, 0);
    const t = Math.round(Date.now()) / 1000;
    this.series.push(t, point);
    this.#ticks++;
    if (this.hub.size === 0) return;
    const sections = this.#sections(c, false);
    const changed: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(sections)) {
      const text = JSON.stringify(value);
      if (this.#last[name] !== text) {
        this.#last[name] = text;
        changed[name] = value;
      }
    }
    this.hub.send(sseMessage("tick", { t, point, sections: changed }), () => sseMessage("snapshot", this.snapshot()));
  }

  /** Everything the page shows, as one object (the stream's first message, and GET /dashboard/state). */
  snapshot(): Record<string, unknown> {
    const sections = this.#sections(this.#emulator.counters(), true);
    for (const [name, value] of Object.entries(sections)) this.#last[name] = JSON.stringify(value);
    return { kind: "emulator", version: 1, intervalMs: this.intervalMs, now: Date.now() / 1000, series: this.series.snapshot(), sections };
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.hub.close(sseMessage("end", { reason: "the emulator stopped" }));
  }

  #sections(c: ReturnType<Emulator["counters"]>, all: boolean): Record<string, unknown> {
    const e = this.#emulator;
    const devices = e.devices();
    const out: Record<string, unknown> = {
      overview: {
        idScope: e.idScope,
        seed: e.seed,
        startedAt: this.#startedAt / 1000,
        endpoints: {
          dps: { tlsPort: e.endpoints.dps.tlsPort, tcpPort: e.endpoints.dps.tcpPort },
          hub: { tlsPort: e.endpoints.hub.tlsPort, tcpPort: e.endpoints.hub.tcpPort },
          https: e.endpoints.https.port,
          admin: e.endpoints.admin.url,
        },
        stream: { clients: this.hub.size, dropped: this.hub.dropped },
      },
      totals: {
        registrations: c.registrations,
        registrationRecords: c.registrationRecords,
        connections: c.connections,
        hubSessions: devices.reduce((n, d) => n + d.connections, 0),
        throttled: c.throttled,
        badPackets: c.badPackets,
        dps: c.dps,
        hub: c.hub,
        https: c.https,
        faults: c.faults,
      },
      faults: e.faults().map(faultView),
      hubs: e.hubs().map((h) => ({
        hostName: h.hostName,
        allocationWeight: h.allocationWeight,
        available: h.available,
        maxMessageBytes: h.maxMessageBytes,
        devices: h.devices,
        sessions: devices.reduce((n, d) => (d.hubHostName === h.hostName ? n + d.connections : n), 0),
      })),
    };
    // Lists that grow with the fleet: every tick while small, every fifth past a few thousand.
    const heavy = all || devices.length < 2000 || this.#ticks % 5 === 0;
    if (heavy) {
      out.enrollments = this.#enrollments();
      out.devices = this.#devices(devices);
      out.telemetry = this.#telemetry(c.hub.telemetry ?? 0);
    }
    return out;
  }

  #enrollments() {
    const { individual, groups } = this.#emulator.enrollments();
    return {
      individualCount: individual.length,
      groupCount: groups.length,
      individual: individual.slice(0, TABLE_ROWS).map((x) => ({
        registrationId: x.registrationId,
        deviceId: x.deviceId ?? null,
        enabled: x.enabled !== false,
        iotHubHostName: x.iotHubHostName ?? null,
        reprovisionPolicy: x.reprovisionPolicy ?? null,
      })),
      groups: groups.slice(0, TABLE_ROWS).map((g) => ({
        groupId: g.groupId,
        enabled: g.enabled !== false,
        iotHubHostName: g.iotHubHostName ?? null,
        reprovisionPolicy: g.reprovisionPolicy ?? null,
        disabledRegistrations: g.disabledRegistrations?.length ?? 0,
      })),
    };
  }

  #devices(hubDevices: ReturnType<Emulator["devices"]>) {
    const records = this.#emulator.registrations();
    const byStatus: Record<string, number> = {};
    for (const r of records) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    const onHub = new Map<string, { enabled: boolean; connections: number }>();
    for (const d of hubDevices) onHub.set(`${d.hubHostName.toLowerCase()}\n${d.deviceId}`, d);
    records.sort((a, b) => (a.lastUpdatedDateTimeUtc < b.lastUpdatedDateTimeUtc ? 1 : a.lastUpdatedDateTimeUtc > b.lastUpdatedDateTimeUtc ? -1 : a.registrationId < b.registrationId ? -1 : 1));
    return {
      registrations: records.length,
      byStatus,
      hubDevices: hubDevices.length,
      connected: hubDevices.filter((d) => d.connections > 0).length,
      disabledOnHub: hubDevices.filter((d) => !d.enabled).length,
      rows: records.slice(0, TABLE_ROWS).map((r) => {
        const d = r.assignedHub && r.deviceId ? onHub.get(`${r.assignedHub.toLowerCase()}\n${r.deviceId}`) : undefined;
        return {
          registrationId: r.registrationId,
          deviceId: r.deviceId ?? null,
          status: r.status,
          substatus: r.substatus ?? null,
          hub: r.assignedHub ?? null,
          enrollment: r.enrollment.kind === "group" ? `group ${r.enrollment.groupId}` : "individual",
          hubEnabled: d ? d.enabled : null,
          connected: d ? d.connections > 0 : false,
          lastUpdated: r.lastUpdatedDateTimeUtc,
        };
      }),
    };
  }

  #telemetry(received: number) {
    // A device's payload is its own business, but a token pasted into one is not shown either.
    const shown = (text: string) => (/SharedAccessSignature|[?&]sig=/i.test(text) ? "[hidden: looks like a SAS token]" : text.length > PAYLOAD_CHARS ? text.slice(0, PAYLOAD_CHARS) + "…" : text);
    const messages = this.#emulator.telemetry();
    return {
      received,
      stored: messages.length,
      recent: messages
        .slice(-TELEMETRY_ROWS)
        .reverse()
        .map((m) => ({
          deviceId: m.deviceId,
          hubHostName: m.hubHostName,
          receivedAt: m.receivedAt / 1000,
          bytes: Buffer.byteLength(m.payload),
          payload: shown(m.payload),
        })),
    };
  }
}
