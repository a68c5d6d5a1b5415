// The Device Registration Status Lookup over HTTPS, as the troubleshooting table's answer to a 5xx:
//
//   POST /0ne00000001/registrations/dev-1?api-version=2021-10-01
//   Authorization: SharedAccessSignature sr=0ne00000001%2fregistrations%2fdev-1&sig=...&se=...
//   Content-Type: application/json
//   {"registrationId":"dev-1"}
//
// answered with the registration state (200) or the usual error body and `x-ms-error-code`.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { FaultRule } from "./config.js";
import { describeStatus } from "./errors.js";
import { readBody } from "./http-body.js";
import { Counters } from "./log.js";
import { describeRule, type SessionContext } from "./mqtt-session.js";
import { malform } from "./dps-session.js";
import { isServiceApiPath } from "./dps-service-api.js";
import { parseSasToken } from "./sas.js";
import type { Answer } from "./service.js";
import type { WindowLimit } from "./throttle.js";
import { parseQuery } from "./topics.js";

const MAX_BODY_BYTES = 96 * 1024;
const PATH = /^\/([^/]+)\/registrations\/([^/?]+)$/;

/**
 * The HTTPS listener's handler: the device-side status lookup (`/{idScope}/registrations/{id}`),
 * and, when given, the DPS service API for `/enrollments…`, `/enrollmentGroups…` and
 * `/registrations/…` (simulator/dps-service-api.ts).
 */
export function lookupHandler(
  ctx: SessionContext,
  operations: WindowLimit,
  serviceApi?: (req: IncomingMessage, res: ServerResponse) => void,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (serviceApi && isServiceApiPath(req.url ?? "/")) return serviceApi(req, res);
    readBody(req, res, MAX_BODY_BYTES, (body) => {
      try {
        handle(ctx, operations, req, res, body);
      } catch (error) {
        ctx.log.error("internal-error", { endpoint: "https", message: (error as Error).message });
        if (!res.headersSent) send(ctx, res, ctx.service.error(500, ctx.now(), "internal-error"));
      }
    });
  };
}

function handle(ctx: SessionContext, operations: WindowLimit, req: IncomingMessage, res: ServerResponse, body: string | undefined): void {
  const now = ctx.now();
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const match = PATH.exec(q < 0 ? url : url.slice(0, q));
  if (!match) return send(ctx, res, ctx.service.error(404, now, "unknown-path", 404001, "The resource was not found."));
  if (req.method !== "POST") return send(ctx, res, ctx.service.error(405, now, "method"));
  let idScope: string;
  let registrationId: string;
  try {
    idScope = decodeURIComponent(match[1]);
    registrationId = decodeURIComponent(match[2]);
  } catch {
    return send(ctx, res, ctx.service.error(400, now, "bad-path-escape"));
  }
  const apiVersion = parseQuery(q < 0 ? "" : url.slice(q + 1)).get("api-version");
  if (!apiVersion) return send(ctx, res, ctx.service.error(400, now, "no-api-version", 400001, "The api-version query parameter is required."));
  if (body === undefined) return send(ctx, res, ctx.service.error(400, now, "body-too-large"));
  const contentType = req.headers["content-type"] ?? "";
  if (body.length > 0 && !/^application\/json\b/i.test(contentType)) return send(ctx, res, ctx.service.error(415, now, "content-type"));
  const token = parseSasToken(req.headers.authorization);
  const subject = {
    registrationId,
    groupId: ctx.faults.wantsGroup("lookup") ? ctx.service.groupOf(registrationId, token, now) : undefined,
  };
  const rule = ctx.faults.match("lookup", subject);
  const proceed = (rule?: FaultRule): void => {
    if (rule?.drop) {
      ctx.log.info("connection-closed", { endpoint: "https", client: registrationId, reason: "fault-drop-at-lookup" });
      res.destroy();
      return;
    }
    if (rule?.status !== undefined) {
      const retryAfter = rule.retryAfter ?? (rule.status === 429 ? ctx.service.retryAfterSeconds : undefined);
      return send(ctx, res, ctx.service.error(rule.status, ctx.now(), "fault", rule.errorCode, undefined, retryAfter), rule.malformed);
    }
    const t = ctx.now();
    let parsed: unknown;
    try {
      parsed = body.length === 0 ? {} : JSON.parse(body);
    } catch {
      return send(ctx, res, ctx.service.error(400, t, "body-not-json"), rule?.malformed);
    }
    const claimed = (parsed as { registrationId?: unknown } | null)?.registrationId;
    if (typeof parsed !== "object" || parsed === null || (claimed !== undefined && claimed !== registrationId)) {
      return send(ctx, res, ctx.service.error(400, t, "body-registration-id-mismatch"), rule?.malformed);
    }
    const wait = operations.take(t);
    if (wait > 0) {
      ctx.counters.throttled++;
      return send(ctx, res, ctx.service.error(429, t, "throttled", 429001, undefined, wait), rule?.malformed);
    }
    send(ctx, res, ctx.service.lookup(registrationId, token, t, idScope), rule?.malformed);
  };
  if (!rule) return proceed();
  Counters.bump(ctx.counters.faults, "lookup");
  ctx.log.info("fault-injected", { step: "lookup", client: registrationId, ...describeRule(rule) });
  if (rule.delayMs) ctx.later(rule.delayMs, () => proceed(rule));
  else proceed(rule);
}

function send(ctx: SessionContext, res: ServerResponse, answer: Answer, malformed?: FaultRule["malformed"]): void {
  if (res.destroyed) return;
  Counters.bump(ctx.counters.https, answer.status);
  const text = malformed ? malform(answer.body, malformed) : JSON.stringify(answer.body);
  const headers: Record<string, string> = {
    "content-type": "application/json; charset=utf-8",
    "content-length": String(Buffer.byteLength(text)),
    "x-ms-request-id": typeof answer.body.trackingId === "string" ? answer.body.trackingId : "",
  };
  if (answer.status >= 300) {
    headers["x-ms-error-code"] = String(answer.body.errorCode ?? describeStatus(answer.status).errorCode);
    if (ctx.log.enabled("info")) ctx.log.info("lookup-error-answer", { status: answer.status, errorCode: answer.body.errorCode, reason: answer.reason });
  }
  if (answer.retryAfter !== undefined) headers["retry-after"] = String(answer.retryAfter);
  if (!headers["x-ms-request-id"]) delete headers["x-ms-request-id"];
  res.writeHead(answer.status, headers);
  res.end(text);
}
