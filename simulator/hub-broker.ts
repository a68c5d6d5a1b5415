// What the hub's service side does across connections: which session of a device is live, the
// direct methods waiting for an answer, C2D messages sent to a connected device, desired patches
// pushed to it, and the service's twin operations. The emulator's API and the service HTTPS API
// both call it; the MQTT sessions report to it (connected, subscribed, PUBACK, a method answer).
//
//   service  invoke "reboot" {"delay":1} on dev-1, responseTimeoutInSeconds 30
//   hub      PUBLISH $iothub/methods/POST/reboot/?$rid=1  {"delay":1}
//   device   PUBLISH $iothub/methods/res/200/?$rid=1      {"ok":true}
//   service  <- {"status":200,"payload":{"ok":true}}
import { randomUUID } from "node:crypto";
import { EmulatorError, HubServiceError, timestampUtc } from "./errors.js";
import {
  C2D_DEFAULT_TTL_SECONDS,
  C2D_MAX_BYTES,
  C2D_MAX_TTL_SECONDS,
  C2D_QUEUE_LIMIT,
  diffPatch,
  patchedSection,
  twinEtag,
  TWIN_LIMITS,
  type C2dMessage,
  type C2dRequest,
} from "./hub-features.js";
import { Counters, type Logger } from "./log.js";
import type { HubDevice, ProvisioningService } from "./service.js";
import { WindowLimit } from "./throttle.js";

/** What the broker needs of a hub session (HubSession implements it). */
export interface BrokerSession {
  readonly device: HubDevice | undefined;
  readonly connected: boolean;
  readonly closed: boolean;
  readonly subscribedC2d: boolean;
  readonly subscribedMethods: boolean;
  readonly subscribedDesired: boolean;
  deliverC2d(): void;
  sendMethod(methodName: string, rid: string, body: string): void;
  sendDesired(patch: Record<string, unknown>, version: number): void;
}

export interface MethodParams {
  methodName: string;
  payload?: unknown;
  /** 5 to 300 s, default 30. */
  responseTimeoutInSeconds?: number;
  /** 0 to 300 s, default 0: how long to wait for an offline device to connect and subscribe. */
  connectTimeoutInSeconds?: number;
}

export interface MethodResult {
  /** The status the device answered with. */
  status: number;
  /** The device's JSON answer (null when empty; the text itself when it is not JSON). */
  payload: unknown;
}

/** A direct method's request payload is limited to 128 KB by IoT Hub. */
export const METHOD_MAX_PAYLOAD_BYTES = 128 * 1024;

interface PendingMethod {
  readonly device: HubDevice;
  readonly resolve: (r: MethodResult) => void;
  readonly reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface WaitingMethod {
  readonly send: () => void;
}

export class HubBroker {
  readonly #service: ProvisioningService;
  readonly #counters: Counters;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #sessions = new Map<HubDevice, BrokerSession[]>();
  readonly #pending = new Map<string, PendingMethod>();
  readonly #waiting = new Map<HubDevice, Set<WaitingMethod>>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #twinLimits = new Map<string, WindowLimit>();
  #twinRate: number | undefined;
  #rid = 0;
  #closed = false;

  constructor(service: ProvisioningService, counters: Counters, log: Logger, now: () => number, twinOperationsPerSecond?: number) {
    this.#service = service;
    this.#counters = counters;
    this.#log = log;
    this.#now = now;
    this.#twinRate = twinOperationsPerSecond;
  }

  // ---- sessions -----------------------------------------------------------------------------------

  attach(session: BrokerSession): void {
    const device = session.device;
    if (!device) return;
    const list = this.#sessions.get(device) ?? [];
    list.push(session);
    this.#sessions.set(device, list);
  }

  detach(session: BrokerSession): void {
    const device = session.device;
    if (!device) return;
    const list = (this.#sessions.get(device) ?? []).filter((s) => s !== session);
    if (list.length === 0) this.#sessions.delete(device);
    else this.#sessions.set(device, list);
  }

  /** The newest open session of the device that matches. */
  #live(device: HubDevice, which: (s: BrokerSession) => boolean): BrokerSession | undefined {
    const list = this.#sessions.get(device);
    if (!list) return undefined;
    for (let i = list.length - 1; i >= 0; i--) if (list[i].connected && !list[i].closed && which(list[i])) return list[i];
    return undefined;
  }

  isConnected(device: HubDevice): boolean {
    return this.#live(device, () => true) !== undefined;
  }

  /** A session subscribed to methods: methods waiting for the device to connect go out now. */
  methodsSubscribed(device: HubDevice): void {
    const waiting = this.#waiting.get(device);
    if (!waiting) return;
    this.#waiting.delete(device);
    for (const w of waiting) w.send();
  }

  /** 0 when a twin request of this hub may go ahead, else the seconds to wait (429). */
  twinThrottle(hubHostName: string): number {
    if (this.#twinRate === undefined) return 0;
    const key = hubHostName.toLowerCase();
    let limit = this.#twinLimits.get(key);
    if (!limit) {
      limit = new WindowLimit(this.#twinRate, 1000);
      this.#twinLimits.set(key, limit);
    }
    return limit.take(this.#now());
  }

  set twinOperationsPerSecond(value: number | undefined) {
    this.#twinRate = value;
    this.#twinLimits.clear();
  }

  // ---- lookup -------------------------------------------------------------------------------------

  /** The device named (on one hub when given). Throws HubServiceError 404 (404001 DeviceNotFound). */
  device(deviceId: string, hubHostName?: string): HubDevice {
    const found = this.#service.findDevices(deviceId, hubHostName);
    if (found.length === 0) throw new HubServiceError(404, 404001, "DeviceNotFound", `Device ${deviceId} not found${hubHostName ? ` on ${hubHostName}` : ""}.`);
    return found[0];
  }

  // ---- C2D ----------------------------------------------------------------------------------------

  /**
   * Queues a message; delivers it at once when the device is connected and subscribed. Returns
   * the message id. Throws HubServiceError 403004 (DeviceMaximumQueueDepthExceeded) when 50 are
   * waiting, 400 for a bad request, 404 for an unknown device.
   */
  sendC2d(device: HubDevice, request: C2dRequest): string {
    if (typeof request !== "object" || request === null) throw new HubServiceError(400, 400004, "ArgumentInvalid", "the message must be an object with a body");
    const body = typeof request.body === "string" ? Buffer.from(request.body, "utf8") : request.body instanceof Uint8Array ? Buffer.from(request.body) : undefined;
    if (!body) throw new HubServiceError(400, 400004, "ArgumentInvalid", "body must be a string or bytes");
    if (body.length > C2D_MAX_BYTES) throw new HubServiceError(400, 400004, "ArgumentInvalid", `body of ${body.length} bytes is over IoT Hub's ${C2D_MAX_BYTES}`);
    const ttl = request.ttlSeconds ?? C2D_DEFAULT_TTL_SECONDS;
    if (!(Number.isFinite(ttl) && ttl > 0 && ttl <= C2D_MAX_TTL_SECONDS)) throw new HubServiceError(400, 400004, "ArgumentInvalid", `ttlSeconds must be more than 0 and at most ${C2D_MAX_TTL_SECONDS}`);
    const properties: [string, string][] = [];
    for (const [k, v] of Object.entries(request.properties ?? {})) {
      if (typeof v !== "string" || k.length === 0 || k.startsWith("$")) throw new HubServiceError(400, 400004, "ArgumentInvalid", `property ${k}: names must not be empty or start with $, values must be strings`);
      properties.push([k, v]);
    }
    for (const field of ["messageId", "contentType", "contentEncoding", "correlationId"] as const) {
      if (request[field] !== undefined && typeof request[field] !== "string") throw new HubServiceError(400, 400004, "ArgumentInvalid", `${field} must be a string`);
    }
    const now = this.#now();
    this.dropExpired(device, now);
    if (device.c2d.length >= C2D_QUEUE_LIMIT) {
      Counters.bump(this.#counters.hub, "c2d-queue-full");
      throw new HubServiceError(403, 403004, "DeviceMaximumQueueDepthExceeded", `The device ${device.deviceId} already has ${C2D_QUEUE_LIMIT} messages waiting.`);
    }
    const message: C2dMessage = {
      messageId: request.messageId ?? randomUUID(),
      body,
      properties,
      contentType: request.contentType,
      contentEncoding: request.contentEncoding,
      correlationId: request.correlationId,
      enqueuedAt: now,
      expiresAt: now + ttl * 1000,
      deliveries: 0,
    };
    device.c2d.push(message);
    Counters.bump(this.#counters.hub, "c2d-queued");
    this.#live(device, (s) => s.subscribedC2d)?.deliverC2d();
    return message.messageId;
  }

  /** Drops a device's expired messages, counted as "c2d-expired". */
  dropExpired(device: HubDevice, nowMs = this.#now()): void {
    const before = device.c2d.length;
    if (before === 0) return;
    device.c2d = device.c2d.filter((m) => m.expiresAt > nowMs);
    const dropped = before - device.c2d.length;
    for (let i = 0; i < dropped; i++) Counters.bump(this.#counters.hub, "c2d-expired");
  }

  /** Expired messages of every device with a queue (the emulator's sweep calls it). */
  sweep(): void {
    const now = this.#now();
    for (const d of this.#service.devicesWithC2d()) this.dropExpired(d, now);
  }

  // ---- direct methods -----------------------------------------------------------------------------

  /**
   * Invokes a method and resolves with the device's status and payload. Rejects with
   * HubServiceError: 400 (400004) bad parameters, 404 (404001) unknown device, 404 (404103) the
   * device is not connected and subscribed within connectTimeoutInSeconds, 504 (504101) no answer
   * within responseTimeoutInSeconds.
   */
  invoke(device: HubDevice, params: MethodParams): Promise<MethodResult> {
    const problem = methodParamsProblem(params);
    if (problem) return Promise.reject(new HubServiceError(400, 400004, "ArgumentInvalid", problem));
    const responseTimeout = params.responseTimeoutInSeconds ?? 30;
    const connectTimeout = params.connectTimeoutInSeconds ?? 0;
    const body = JSON.stringify(params.payload ?? null);
    return new Promise<MethodResult>((resolve, reject) => {
      const send = (): void => {
        const session = this.#live(device, (s) => s.subscribedMethods);
        if (!session) return offline();
        const rid = String(++this.#rid);
        const timer = this.#timer(responseTimeout * 1000, () => {
          this.#pending.delete(rid);
          Counters.bump(this.#counters.hub, "method-timeout");
          reject(new HubServiceError(504, 504101, "GatewayTimeout", "Timed out waiting for the response from device.", { timeout: hms(responseTimeout) }));
        });
        this.#pending.set(rid, { device, resolve, reject, timer });
        Counters.bump(this.#counters.hub, "method-sent");
        session.sendMethod(params.methodName, rid, body);
      };
      const offline = (): void => {
        Counters.bump(this.#counters.hub, "method-device-not-online");
        reject(new HubServiceError(404, 404103, "DeviceNotOnline", "Timed out waiting for device to connect.", { timeout: hms(connectTimeout) }));
      };
      if (this.#closed) return reject(new EmulatorError("STOPPED", "the emulator has stopped"));
      if (this.#live(device, (s) => s.subscribedMethods) || connectTimeout === 0) return send();
      // Wait for the device to connect and subscribe, at most connectTimeoutInSeconds.
      const set = this.#waiting.get(device) ?? new Set<WaitingMethod>();
      this.#waiting.set(device, set);
      const waiting: WaitingMethod = {
        send: () => {
          clearTimeout(timer);
          this.#timers.delete(timer);
          send();
        },
      };
      const timer = this.#timer(connectTimeout * 1000, () => {
        set.delete(waiting);
        if (set.size === 0 && this.#waiting.get(device) === set) this.#waiting.delete(device);
        offline();
      });
      set.add(waiting);
    });
  }

  /** A device's answer on `$iothub/methods/res/{status}/?$rid=`; one for no pending call is ignored (late, or another device's). */
  methodAnswered(device: HubDevice, rid: string | undefined, status: number, bodyText: string): void {
    const pending = rid === undefined ? undefined : this.#pending.get(rid);
    if (!pending || pending.device !== device) {
      Counters.bump(this.#counters.hub, "method-late-answer");
      return;
    }
    this.#pending.delete(rid as string);
    clearTimeout(pending.timer);
    this.#timers.delete(pending.timer);
    Counters.bump(this.#counters.hub, `method-${status}`);
    let payload: unknown = null;
    if (bodyText.trim().length > 0) {
      try {
        payload = JSON.parse(bodyText);
      } catch {
        payload = bodyText;
      }
    }
    pending.resolve({ status, payload });
  }

  // ---- twins (service side) -----------------------------------------------------------------------

  /**
   * Updates tags and desired properties (`{"tags":{...},"properties":{"desired":{...}}}`), as a
   * merge patch or (`replace`) as the whole document. `etag` other than undefined or `*` must be
   * the twin's (else 412, 412002 PreconditionFailed). Desired changes go to the connected
   * device. Throws HubServiceError 400 for a bad document or one over the limits.
   */
  updateTwin(device: HubDevice, patch: unknown, options: { etag?: string; replace?: boolean } = {}): void {
    if (options.etag !== undefined && options.etag !== "*" && unquote(options.etag) !== twinEtag(device)) {
      Counters.bump(this.#counters.hub, "twin-service-412");
      throw new HubServiceError(412, 412002, "PreconditionFailed", "The etag in the If-Match header does not match the twin's.");
    }
    if (typeof patch !== "object" || patch === null || Array.isArray(patch)) throw new HubServiceError(400, 400004, "ArgumentInvalid", "the twin patch must be a JSON object");
    const p = patch as { tags?: unknown; properties?: { desired?: unknown; reported?: unknown } };
    for (const key of Object.keys(p)) {
      if (!["tags", "properties", "deviceId", "etag", "version"].includes(key)) throw new HubServiceError(400, 400004, "ArgumentInvalid", `${key} cannot be changed through the twin`);
    }
    if (p.properties !== undefined && (typeof p.properties !== "object" || p.properties === null)) throw new HubServiceError(400, 400004, "ArgumentInvalid", "properties must be an object");
    if (p.properties?.reported !== undefined) throw new HubServiceError(400, 400004, "ArgumentInvalid", "reported properties are written by the device only");
    const isObject = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);
    if (p.tags !== undefined && !isObject(p.tags)) throw new HubServiceError(400, 400004, "ArgumentInvalid", "tags must be an object");
    if (p.properties?.desired !== undefined && !isObject(p.properties.desired)) throw new HubServiceError(400, 400004, "ArgumentInvalid", "properties.desired must be an object");
    const tagsIn = (p.tags as Record<string, unknown> | undefined) ?? (options.replace ? {} : undefined);
    const desiredIn = stripMeta(p.properties?.desired as Record<string, unknown> | undefined) ?? (options.replace ? {} : undefined);
    const tagsPatch = tagsIn === undefined ? undefined : options.replace ? diffPatch(device.tags, tagsIn) : tagsIn;
    const desiredPatch = desiredIn === undefined ? undefined : options.replace ? diffPatch(device.desired, desiredIn) : desiredIn;
    const tags = tagsPatch === undefined ? undefined : patchedSection(device.tags, tagsPatch, TWIN_LIMITS.tagsBytes, "tags");
    if (tags && !tags.ok) throw new HubServiceError(400, 400004, "ArgumentInvalid", tags.problem.message);
    const desired = desiredPatch === undefined ? undefined : patchedSection(device.desired, desiredPatch, TWIN_LIMITS.sectionBytes, "properties.desired");
    if (desired && !desired.ok) throw new HubServiceError(400, 400004, "ArgumentInvalid", desired.problem.message);
    let changed = false;
    if (tags?.ok && Object.keys(tagsPatch as object).length > 0) {
      device.tags = tags.value;
      changed = true;
    }
    if (desired?.ok && Object.keys(desiredPatch as object).length > 0) {
      device.desired = desired.value;
      device.desiredVersion++;
      changed = true;
      Counters.bump(this.#counters.hub, "twin-desired-changed");
      const list = this.#sessions.get(device) ?? [];
      for (const s of list) {
        if (s.connected && !s.closed && s.subscribedDesired) {
          s.sendDesired(desiredPatch as Record<string, unknown>, device.desiredVersion);
          Counters.bump(this.#counters.hub, "twin-desired-pushed");
        }
      }
    }
    if (changed) {
      device.twinVersion++;
      device.twinUpdated = timestampUtc(this.#now());
    }
    Counters.bump(this.#counters.hub, "twin-service-update");
  }

  #timer(ms: number, fn: () => void): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  /** Rejects every pending call and stops the timers; idempotent. */
  close(): void {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    const stopped = new EmulatorError("STOPPED", "the emulator has stopped");
    for (const p of this.#pending.values()) p.reject(stopped);
    this.#pending.clear();
    this.#waiting.clear();
    if (this.#log.enabled("debug")) this.#log.debug("hub-broker-closed", {});
  }
}

function unquote(etag: string): string {
  return etag.length >= 2 && etag.startsWith('"') && etag.endsWith('"') ? etag.slice(1, -1) : etag;
}

function stripMeta(section: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (section === undefined) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(section)) if (k !== "$metadata" && k !== "$version") out[k] = v;
  return out;
}

/** `00:00:30`, the form IoT Hub writes timeouts in (`"info":{"timeout":"00:00:30"}`). */
function hms(seconds: number): string {
  const s = Math.floor(seconds);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

/** What is wrong with a method call's parameters, or undefined. */
export function methodParamsProblem(params: MethodParams): string | undefined {
  if (typeof params !== "object" || params === null) return "the method parameters must be an object";
  if (typeof params.methodName !== "string" || !/^[^/#+?\s]{1,100}$/.test(params.methodName)) return "methodName must be 1-100 characters without / # + ? or spaces";
  const r = params.responseTimeoutInSeconds;
  if (r !== undefined && !(Number.isInteger(r) && r >= 5 && r <= 300)) return "responseTimeoutInSeconds must be an integer from 5 to 300";
  const c = params.connectTimeoutInSeconds;
  if (c !== undefined && !(Number.isInteger(c) && c >= 0 && c <= 300)) return "connectTimeoutInSeconds must be an integer from 0 to 300";
  if (Buffer.byteLength(JSON.stringify(params.payload ?? null)) > METHOD_MAX_PAYLOAD_BYTES) return `the payload is over IoT Hub's ${METHOD_MAX_PAYLOAD_BYTES} bytes`;
  return undefined;
}
