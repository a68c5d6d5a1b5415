// The hubs' service-side REST API over HTTPS, what backends and the official service SDK call:
//
//   GET   /twins/dev-1?api-version=2021-04-12                      -> 200 the twin
//   PATCH /twins/dev-1   If-Match: "AAAAAAAAAAc="  {"properties":{"desired":{"interval":10}}}  -> 200 the twin (412 on a stale etag)
//   PUT   /twins/dev-1   {"tags":{...},"properties":{"desired":{...}}}  -> 200 the twin (tags and desired replaced)
//   POST  /twins/dev-1/methods  {"methodName":"reboot","payload":{},"responseTimeoutInSeconds":30}  -> 200 {"status":200,"payload":{...}}
//   GET   /devices/dev-1                                          -> 200 the device identity
//   Authorization: SharedAccessSignature sr=hub-1.azure-devices.localhost&sig=...&se=1700000000&skn=iothubowner
//
// One listener serves every emulated hub: the Host header names it (or, when the Host is an
// address, the token's `sr`). Errors carry IoT Hub's bodies and the `iothub-errorcode` header:
//
//   401 {"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized","ExceptionMessage":"Tracking ID:...-TimeStamp:..."}
//   404 {"Message":"{\"errorCode\":404103,\"trackingId\":\"...\",\"message\":\"Timed out waiting for device to connect.\",\"info\":{\"timeout\":\"00:00:00\"},\"timestampUtc\":\"...\"}","ExceptionMessage":""}
import type { IncomingMessage, ServerResponse } from "node:http";
import { readBody } from "./http-body.js";
import { HubServiceError, timestampUtc } from "./errors.js";
import type { HubBroker, MethodParams } from "./hub-broker.js";
import { serviceTwinDocument, twinEtag } from "./hub-features.js";
import { Counters } from "./log.js";
import type { SessionContext } from "./mqtt-session.js";
import { parseSasToken, signatureMatches } from "./sas.js";
import type { HubDevice, HubState } from "./service.js";
import { parseQuery } from "./topics.js";

const MAX_BODY_BYTES = 256 * 1024;
const TWIN_PATH = /^\/twins\/([^/]+)$/;
const METHOD_PATH = /^\/twins\/([^/]+)\/methods$/;
const DEVICE_PATH = /^\/devices\/([^/]+)$/;

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export function hubServiceHandler(ctx: SessionContext, broker: HubBroker): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    readBody(req, res, MAX_BODY_BYTES, (body) => {
      const done = (reply: Reply): void => send(ctx, res, reply);
      try {
        if (body === undefined) return done(legacyError(ctx, 413, "MessageTooLarge", `the body is over ${MAX_BODY_BYTES} bytes`));
        const result = handle(ctx, broker, req, body);
        if (result instanceof Promise) result.then(done, (error: Error) => done(errorReply(ctx, error)));
        else done(result);
      } catch (error) {
        done(errorReply(ctx, error as Error));
      }
    });
  };
}

function handle(ctx: SessionContext, broker: HubBroker, req: IncomingMessage, text: string): Reply | Promise<Reply> {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  const hub = authorize(ctx, req);
  if ("status" in hub) return hub;
  if (!parseQuery(q < 0 ? "" : url.slice(q + 1)).get("api-version")) {
    return legacyError(ctx, 400, "InvalidProtocolVersion", "The api-version query parameter is required.");
  }
  let match: RegExpExecArray | null;
  const id = (m: RegExpExecArray): string => {
    try {
      return decodeURIComponent(m[1]);
    } catch {
      throw new HubServiceError(400, 400004, "ArgumentInvalid", "the device id in the path has a broken %-escape");
    }
  };
  const body = (): unknown => {
    if (text.length === 0) throw new HubServiceError(400, 400004, "ArgumentInvalid", "the request needs a JSON body");
    try {
      return JSON.parse(text);
    } catch {
      throw new HubServiceError(400, 400004, "ArgumentInvalid", "the body is not JSON");
    }
  };
  const twinReply = (device: HubDevice): Reply => ({
    status: 200,
    body: serviceTwinDocument(device, broker.isConnected(device), timestampUtc(ctx.now())),
    headers: { etag: `"${twinEtag(device)}"` },
  });
  if ((match = METHOD_PATH.exec(path))) {
    if (req.method !== "POST") return legacyError(ctx, 405, "MethodNotAllowed", `${req.method} is not served on ${path}`);
    const device = broker.device(id(match), hub.hostName);
    const params = body() as MethodParams;
    return broker.invoke(device, params).then((r) => ({ status: 200, body: { status: r.status, payload: r.payload } }));
  }
  if ((match = TWIN_PATH.exec(path))) {
    const device = broker.device(id(match), hub.hostName);
    if (req.method === "GET") return twinReply(device);
    if (req.method === "PATCH" || req.method === "PUT") {
      const etag = headerValue(req.headers["if-match"]);
      broker.updateTwin(device, body(), { etag, replace: req.method === "PUT" });
      return twinReply(device);
    }
    return legacyError(ctx, 405, "MethodNotAllowed", `${req.method} is not served on ${path}`);
  }
  if ((match = DEVICE_PATH.exec(path))) {
    if (req.method !== "GET") return legacyError(ctx, 405, "MethodNotAllowed", `${req.method} is not served on ${path} (the emulator's devices come from DPS)`);
    const device = broker.device(id(match), hub.hostName);
    return { status: 200, body: deviceIdentity(device, broker.isConnected(device)), headers: { etag: `"${twinEtag(device)}"` } };
  }
  return legacyError(ctx, 404, "NotFound", `no resource ${path.slice(0, 100)}`);
}

/** The hub the request is for, when its token is good; else the 401 to send. Keys and tokens are never logged. */
function authorize(ctx: SessionContext, req: IncomingMessage): HubState | Reply {
  const token = parseSasToken(headerValue(req.headers.authorization));
  const refuse = (reason: string): Reply => {
    ctx.log.info("hub-service-unauthorized", { host: hostOf(req), reason });
    return legacyError(ctx, 401, "IotHubUnauthorizedAccess", "Unauthorized");
  };
  if (typeof token === "string") return refuse(token);
  const host = hostOf(req);
  const hub = (host !== undefined ? ctx.service.hub(host) : undefined) ?? ctx.service.hub(token.resource);
  if (!hub) return refuse("unknown-hub");
  if (token.resource.toLowerCase() !== hub.hostName.toLowerCase()) return refuse("wrong-resource");
  if (token.skn === undefined) return refuse("no-key-name");
  const policy = hub.policies.get(token.skn);
  if (!policy) return refuse("unknown-policy");
  if ((token.se + ctx.service.skewSeconds) * 1000 < ctx.now()) return refuse("expired");
  if (!policy.keys.some((k) => signatureMatches(token, k))) return refuse("bad-signature");
  return hub;
}

function hostOf(req: IncomingMessage): string | undefined {
  const host = headerValue(req.headers.host);
  if (!host) return undefined;
  return host.startsWith("[") ? host.slice(1, host.indexOf("]")) : host.replace(/:\d+$/, "");
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function deviceIdentity(device: HubDevice, connected: boolean): Record<string, unknown> {
  return {
    deviceId: device.deviceId,
    generationId: device.registrationId,
    etag: twinEtag(device),
    connectionState: connected ? "Connected" : "Disconnected",
    status: device.enabled ? "enabled" : "disabled",
    statusReason: null,
    connectionStateUpdatedTime: device.lastActivity ?? "0001-01-01T00:00:00Z",
    statusUpdatedTime: "0001-01-01T00:00:00Z",
    lastActivityTime: device.lastActivity ?? "0001-01-01T00:00:00Z",
    cloudToDeviceMessageCount: device.c2d.length,
    authentication: {
      symmetricKey: { primaryKey: device.keys[0]?.toString("base64") ?? null, secondaryKey: device.keys[1]?.toString("base64") ?? null },
      x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
      type: "sas",
    },
    capabilities: { iotEdge: false },
  };
}

/** IoT Hub's older error shape, still what it answers for authorization and registry errors. */
function legacyError(ctx: SessionContext, status: number, name: string, message: string): Reply {
  const tracking = ctx.service.error(status, ctx.now()).body.trackingId as string;
  return {
    status,
    body: { Message: `ErrorCode:${name};${message}`, ExceptionMessage: `Tracking ID:${tracking.replace(/-/g, "")}-TimeStamp:${timestampUtc(ctx.now())}` },
    headers: { "iothub-errorcode": name },
  };
}

function errorReply(ctx: SessionContext, error: Error): Reply {
  if (error instanceof HubServiceError) {
    if (error.status === 404 && error.errorCode === 404103 || error.status === 504) {
      // Direct methods answer with the six-digit code as JSON inside Message (seen since 2018).
      const inner = { errorCode: error.errorCode, trackingId: ctx.service.error(error.status, ctx.now()).body.trackingId, message: error.message, info: error.info ?? {}, timestampUtc: timestampUtc(ctx.now()) };
      return { status: error.status, body: { Message: JSON.stringify(inner), ExceptionMessage: "" }, headers: { "iothub-errorcode": error.code } };
    }
    return legacyError(ctx, error.status, error.code, error.message);
  }
  ctx.log.error("internal-error", { endpoint: "hub-service", message: error.message });
  return legacyError(ctx, 500, "ServerError", "An internal error occurred.");
}

function send(ctx: SessionContext, res: ServerResponse, reply: Reply): void {
  if (res.destroyed) return;
  Counters.bump(ctx.counters.hubService, reply.status);
  const text = reply.body === undefined ? "" : JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": String(Buffer.byteLength(text)),
    ...reply.headers,
  });
  res.end(text);
}
