/**
 * Direct methods: an opt-in hub feature. It subscribes to `$iothub/methods/POST/#`; a call
 * arrives as
 *
 *   $iothub/methods/POST/blink/?$rid=1        {"times":3}
 *
 * and is answered, always, on `$iothub/methods/res/{status}/?$rid={rid}` with a JSON body:
 *
 *   $iothub/methods/res/200/?$rid=1           {"blinked":3}
 *
 * The application's handler gives the status and the payload (or a promise of them). The device
 * answers for the application when the handler cannot:
 *
 *   no handler for the name                   404
 *   a request payload that is not JSON        400
 *   a request over `maxPayloadBytes`          413
 *   `maxPending` calls already in progress    503
 *   the handler throws, rejects, or returns something that is not `{ status, payload }`  500
 *   no answer within `timeoutMs`              504 (a later answer is dropped and reported "late")
 *
 * The method `reprovision` (the name is `reprovisionMethod`; false turns it off) answers 202 and
 * then provisions with DPS again, as Azure's guidance for fleets asks.
 *
 *   const methods = new DirectMethods().on("blink", (request) => ({ status: 200, payload: { blinked: request.payload.times } }));
 *   const device = new DeviceRuntime(config, ports, listener, [methods]);
 */
import { utf8Encode } from "./encoding.js";
import { DpsError, UsageError, excerpt } from "./errors.js";
import { featureSet, parseJsonValue, topicQuery } from "./hub-features.js";
import type { FeatureIo, HubFeature } from "./hub-session.js";

/** IoT Hub's own limit for a method payload, each way. */
export const HUB_MAX_METHOD_BYTES = 128 * 1024;
const PREFIX = "$iothub/methods/POST/";

export interface MethodRequest {
  readonly name: string;
  /** The hub's request id (answers are matched by it). */
  readonly rid: string;
  /** The JSON payload, parsed (null when there was none). */
  readonly payload: unknown;
}

export interface MethodResult {
  /** Any integer the backend understands; 200 for success by convention. */
  readonly status: number;
  /** Written as JSON; null when absent. */
  readonly payload?: unknown;
}

/** Returns the answer, a promise of it, or nothing (200 with a null payload). */
export type MethodHandler = (request: MethodRequest) => MethodResult | Promise<MethodResult> | void;

export interface DirectMethodsOptions {
  /** The largest request and answer payload; default 8 KiB (IoT Hub carries up to 128 KiB). */
  readonly maxPayloadBytes?: number;
  /** How long a handler has to answer before the device answers 504 for it; default 20 s. */
  readonly timeoutMs?: number;
  /** Calls in progress at once; more get 503; default 4. */
  readonly maxPending?: number;
  /** The method that makes the device provision with DPS again; default "reprovision"; false: none. */
  readonly reprovisionMethod?: string | false;
}

interface Pending {
  readonly name: string;
  readonly deadline: number;
}

export class DirectMethods implements HubFeature {
  readonly name = "methods";
  readonly driver = featureSet;
  readonly maxIncomingBytes: number;
  #handlers: Record<string, MethodHandler> = Object.create(null) as Record<string, MethodHandler>;
  #pending = new Map<string, Pending>();
  #timeoutMs: number;
  #maxPending: number;
  #reprovision: string | false;
  #call: ((fn: (io: FeatureIo) => void) => void) | undefined;

  /** @throws UsageError INVALID_ARGUMENT for an option out of range. */
  constructor(options: DirectMethodsOptions = {}) {
    const max = options.maxPayloadBytes ?? 8 * 1024;
    this.#timeoutMs = options.timeoutMs ?? 20_000;
    this.#maxPending = options.maxPending ?? 4;
    this.#reprovision = options.reprovisionMethod ?? "reprovision";
    check(Number.isInteger(max) && max >= 16 && max <= HUB_MAX_METHOD_BYTES, `maxPayloadBytes must be an integer in 16..${HUB_MAX_METHOD_BYTES}`);
    check(Number.isInteger(this.#timeoutMs) && this.#timeoutMs >= 100 && this.#timeoutMs <= 300_000, "timeoutMs must be an integer in 100..300000 (IoT Hub waits at most 300 s)");
    check(Number.isInteger(this.#maxPending) && this.#maxPending >= 1 && this.#maxPending <= 64, "maxPending must be an integer in 1..64");
    check(this.#reprovision === false || isMethodName(this.#reprovision), "reprovisionMethod must be a method name or false");
    this.maxIncomingBytes = max;
  }

  /**
   * Sets the handler of a method (replacing one set before); returns this, to chain.
   * @throws UsageError INVALID_ARGUMENT for a name that cannot be a topic level, or no function.
   */
  on(name: string, handler: MethodHandler): this {
    check(isMethodName(name), `the method name "${excerpt(String(name), 40)}" must be 1 to 128 characters without / + # or ?`);
    check(typeof handler === "function", `the handler of "${name}" must be a function`);
    this.#handlers[name] = handler;
    return this;
  }

  subscriptions(): readonly string[] {
    return [PREFIX + "#"];
  }

  ready(): void {}

  message(topic: string, payload: Uint8Array, oversize: number | undefined, io: FeatureIo): boolean {
    if (topic.slice(0, PREFIX.length) !== PREFIX) return false;
    const slash = topic.indexOf("/", PREFIX.length);
    const name = topic.slice(PREFIX.length, slash < 0 ? topic.length : slash);
    let rid: string | undefined;
    try {
      rid = topicQuery(topic)["$rid"];
    } catch {
      rid = undefined;
    }
    if (!rid) {
      // Nothing to answer to: the hub times the call out.
      io.report({ source: "method", state: "late", name, rid: "", status: 0, reason: "the call had no $rid to answer to" });
      return true;
    }
    const bytes = oversize ?? payload.length;
    if (oversize !== undefined || bytes > this.maxIncomingBytes) {
      return this.#answer(io, rid, name, 413, { message: `the request payload is ${bytes} bytes; this device takes at most ${this.maxIncomingBytes} (maxPayloadBytes)` }, "request too large");
    }
    let request: unknown;
    try {
      request = parseJsonValue(payload, "method payload", this.maxIncomingBytes);
    } catch (error) {
      return this.#answer(io, rid, name, 400, { message: (error as Error).message }, "request not JSON");
    }
    if (this.#pending.has(rid)) return true; // the same call again: the first is being answered
    if (name === this.#reprovision) {
      this.#answer(io, rid, name, 202, { message: "provisioning with DPS again" }, "re-provisioning");
      io.reprovision(`the ${name} method`);
      return true;
    }
    const handler = this.#handlers[name];
    if (!handler) return this.#answer(io, rid, name, 404, { message: `this device has no method "${name}"` }, "no handler");
    if (this.#pending.size >= this.#maxPending) {
      return this.#answer(io, rid, name, 503, { message: `${this.#maxPending} calls are in progress; call again later` }, "busy");
    }
    this.#pending.set(rid, { name, deadline: io.now + this.#timeoutMs });
    const call = this.#call;
    const settle = (status: number, result: unknown, reason?: string) => call?.((later) => this.#finish(later, rid!, name, status, result, reason));
    io.invoke(`method ${name} ${rid}`, () => {
      let result: unknown;
      try {
        result = handler({ name, rid: rid!, payload: request });
      } catch (error) {
        return settle(500, { message: `the handler of ${name} failed: ${describe(error)}` }, "handler threw");
      }
      const thenable = result as { then?: unknown } | undefined;
      if (thenable && typeof thenable.then === "function") {
        (result as Promise<unknown>).then(
          (value) => settle(-1, value),
          (error: unknown) => settle(500, { message: `the handler of ${name} failed: ${describe(error)}` }, "handler rejected"),
        );
      } else settle(-1, result);
    });
    return true;
  }

  lost(): void {
    // The calls of a connection end with it: the hub has answered them (504) by the next one.
    this.#pending.clear();
  }

  deadline(): number | undefined {
    let next: number | undefined;
    this.#pending.forEach((p) => {
      if (next === undefined || p.deadline < next) next = p.deadline;
    });
    return next;
  }

  timer(io: FeatureIo): void {
    const due: string[] = [];
    this.#pending.forEach((p, rid) => {
      if (io.now >= p.deadline) due.push(rid);
    });
    for (let i = 0; i < due.length; i++) {
      const name = this.#pending.get(due[i])!.name;
      this.#pending.delete(due[i]);
      this.#answer(io, due[i], name, 504, { message: `the handler of ${name} did not answer within ${this.#timeoutMs} ms` }, "handler timed out");
    }
  }

  attach(call: (fn: (io: FeatureIo) => void) => void): void {
    this.#call = call;
  }

  /** A handler's result (status -1: check what the handler returned). */
  #finish(io: FeatureIo, rid: string, name: string, status: number, result: unknown, reason?: string): void {
    if (!this.#pending.delete(rid)) {
      io.report({ source: "method", state: "late", name, rid, status: status < 0 ? 0 : status, reason: "the answer came after the device had answered 504, or after the connection it was called on" });
      return;
    }
    if (status >= 0) {
      this.#answer(io, rid, name, status, result, reason);
      return;
    }
    const r = result as MethodResult | undefined;
    if (r === undefined) return void this.#answer(io, rid, name, 200, null);
    if (r === null || typeof r !== "object" || !Number.isInteger(r.status)) {
      return void this.#answer(io, rid, name, 500, { message: `the handler of ${name} returned something that is not { status, payload }` }, "bad handler result");
    }
    this.#answer(io, rid, name, r.status, r.payload === undefined ? null : r.payload);
  }

  /** Publishes the answer; returns true (the message was this feature's). */
  #answer(io: FeatureIo, rid: string, name: string, status: number, payload: unknown, reason?: string): boolean {
    let body: Uint8Array | undefined;
    let why = reason;
    try {
      const text = JSON.stringify(payload);
      body = utf8Encode(text === undefined ? "null" : text);
    } catch (error) {
      why = `the answer cannot be written as JSON: ${describe(error)}`;
    }
    // The device's own answers are short; the limit is on what the application answers.
    if (body && reason === undefined && body.length > this.maxIncomingBytes) why = `the answer is ${body.length} bytes; at most ${this.maxIncomingBytes} go out (maxPayloadBytes)`;
    if (why !== reason) {
      status = 500;
      body = utf8Encode(JSON.stringify({ message: why }));
    }
    const sent = io.publish(`$iothub/methods/res/${status}/?$rid=${rid}`, body!);
    io.report(sent ? { source: "method", state: "answered", name, rid, status, reason: why } : { source: "method", state: "late", name, rid, status, reason: "the connection ended before the answer" });
    return true;
  }
}

function isMethodName(name: unknown): name is string {
  return typeof name === "string" && /^[^/+#?]{1,128}$/.test(name);
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new UsageError("INVALID_ARGUMENT", message);
}

function describe(error: unknown): string {
  if (error instanceof DpsError) return `${error.code}: ${error.message}`;
  return excerpt(error instanceof Error ? error.message : String(error), 120);
}
