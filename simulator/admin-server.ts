// The admin API: plain HTTP with JSON bodies, meant for loopback. It changes the emulator while it
// runs (enrollments, devices, hubs, faults) and reads what it saw (registrations, counters,
// telemetry). Routes are listed by `GET /`; docs/EMULATOR.md has the reference.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { FaultRule, GroupEnrollment, IndividualEnrollment } from "./config.js";
import { EmulatorError } from "./errors.js";
import type { Emulator } from "./index.js";

const MAX_BODY_BYTES = 1024 * 1024;

type Handler = (ctx: { params: string[]; query: URLSearchParams; body: unknown }) => { status: number; body?: unknown };
interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
  doc: string;
}

export function adminHandler(emulator: Emulator & { resetCounters(): void; clearTelemetry(): void; removeFault(id: number): boolean; faults(): unknown; enrollments(): unknown; devices(): unknown; hubs(): unknown; registration(id: string): unknown; deleteRegistration(id: string): boolean }): (req: IncomingMessage, res: ServerResponse) => void {
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

  add("GET", "/", "this list", () => ({ status: 200, body: { routes: routes.map((r) => r.doc) } }));
  add("GET", "/health", "liveness", () => ({ status: 200, body: { ok: true } }));
  add("GET", "/endpoints", "listening addresses, idScope and CA path", () => ({
    status: 200,
    body: { ...emulator.endpoints, idScope: emulator.idScope, caPath: emulator.caPath },
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
  add("GET", "/hubs", "hubs with weight, availability and device count", () => ({ status: 200, body: emulator.hubs() }));
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

  return (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("error", () => res.destroy());
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://admin.invalid");
      const reply = (status: number, body?: unknown): void => {
        const text = body === undefined ? "" : JSON.stringify(body, null, 2);
        res.writeHead(status, body === undefined ? {} : { "content-type": "application/json; charset=utf-8" });
        res.end(text);
      };
      if (size > MAX_BODY_BYTES) return reply(413, { error: { code: "TOO_LARGE", message: `body over ${MAX_BODY_BYTES} bytes` } });
      const candidates = routes.filter((r) => r.pattern.test(url.pathname));
      const route = candidates.find((r) => r.method === req.method);
      if (!route) {
        if (candidates.length > 0) return reply(405, { error: { code: "METHOD_NOT_ALLOWED", message: `${req.method} is not served on ${url.pathname}` } });
        return reply(404, { error: { code: "NO_ROUTE", message: `no route ${url.pathname}; GET / lists them` } });
      }
      let body: unknown;
      const text = Buffer.concat(chunks).toString("utf8");
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
        const result = route.handler({ params, query: url.searchParams, body });
        reply(result.status, result.body);
      } catch (error) {
        if (error instanceof EmulatorError) {
          const status = error.code === "NOT_FOUND" || error.code === "UNKNOWN_HUB" ? 404 : 400;
          return reply(status, { error: { code: error.code, message: error.message } });
        }
        reply(500, { error: { code: "INTERNAL", message: (error as Error).message } });
      }
    });
  };
}
