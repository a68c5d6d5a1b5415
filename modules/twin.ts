/**
 * The device twin: an opt-in hub feature. It subscribes to `$iothub/twin/res/#` and
 * `$iothub/twin/PATCH/properties/desired/#`, and on every connection reads the whole twin, so
 * that no desired change made while the device was away is missed:
 *
 *   → $iothub/twin/GET/?$rid=1                                   (empty)
 *   ← $iothub/twin/res/200/?$rid=1                               {"desired":{"interval":10,"$version":4},"reported":{"$version":9}}
 *   ← $iothub/twin/PATCH/properties/desired/?$version=5          {"interval":30,"$version":5}
 *   → $iothub/twin/PATCH/properties/reported/?$rid=2             {"interval":{"value":30,"ac":200,"av":5}}
 *   ← $iothub/twin/res/204/?$rid=2&$version=10                   (empty)
 *
 * - A desired patch whose `$version` is not newer than what the device has is ignored. A patch
 *   that skips a version, or one that arrives while the whole twin is being read, leads to
 *   another read rather than a guess.
 * - Reported patches are merged while one is in flight or the device is offline, and go out as
 *   one. A 429 or a 5xx is retried after the retry table's backoff (one attempt per long-tail
 *   wait past `budget.maxAttempts`: never given up, never faster). A 400 drops the patch and is
 *   reported.
 * - Every request has a timeout (the retry table's `timeouts.responseMs`).
 * - The desired property `reprovision` (named by `reprovisionProperty`; false turns it off)
 *   makes the device provision with DPS again when its value differs from the reported one. The
 *   device first reports `{"reprovision":{"value":…,"ac":202,"av":…}}`. Once the hub has that,
 *   the device re-provisions. The twin moves with the device, so the new hub's copy already
 *   shows the request as done.
 *
 *   const twin = new DeviceTwin({ onDesired: (patch, version) => { if ("interval" in patch) twin.acknowledge("interval", patch.interval, version); } });
 *   const device = new DeviceRuntime(config, ports, listener, [twin]);
 */
import { utf8Encode } from "./encoding.js";
import { UsageError, excerpt } from "./errors.js";
import { featureSet, parseJsonValue, topicQuery } from "./hub-features.js";
import type { FeatureIo, HubFeature } from "./hub-session.js";
import { actionForStatus, retryDelayMs } from "./retry-policy.js";

/** IoT Hub's own limit for the desired or the reported properties of a twin. */
export const HUB_MAX_TWIN_BYTES = 32 * 1024;
const RES = "$iothub/twin/res/";
const DESIRED = "$iothub/twin/PATCH/properties/desired/";

export type TwinProperties = Record<string, unknown>;

export interface DeviceTwinOptions {
  /**
   * Called with the whole desired document after each read (`complete` true), then with each
   * patch (null values delete), outside the machine. `version` is the desired `$version`.
   */
  readonly onDesired?: (desired: TwinProperties, version: number, complete: boolean) => void;
  /** The largest twin document, desired patch or merged reported patch; default 8 KiB (IoT Hub: 32 KiB each side). */
  readonly maxDocumentBytes?: number;
  /** The desired property that asks for re-provisioning; default "reprovision"; false: none. */
  readonly reprovisionProperty?: string | false;
}

interface Request {
  readonly rid: string;
  readonly deadline: number;
}

export class DeviceTwin implements HubFeature {
  readonly name = "twin";
  readonly driver = featureSet;
  readonly maxIncomingBytes: number;
  #onDesired: DeviceTwinOptions["onDesired"];
  #reprovision: string | false;
  #call: ((fn: (io: FeatureIo) => void) => void) | undefined;
  #rid = 0;
  #ready = false;
  #desired: TwinProperties | undefined;
  #desiredVersion: number | undefined;
  #reported: TwinProperties = {};
  #reportedVersion: number | undefined;
  /** The highest desired `$version` seen while the whole twin was being read. */
  #seen = 0;
  #get: Request | undefined;
  #getWanted = false;
  #getAttempt = 0;
  #getRetryAt: number | undefined;
  #patch: Request | undefined;
  #inFlight: TwinProperties | undefined;
  #pending: TwinProperties | undefined;
  #patchAttempt = 0;
  #patchRetryAt: number | undefined;
  #reprovisionWanted: unknown;

  /** @throws UsageError INVALID_ARGUMENT for an option out of range. */
  constructor(options: DeviceTwinOptions = {}) {
    const max = options.maxDocumentBytes ?? 8 * 1024;
    if (!(Number.isInteger(max) && max >= 64 && max <= 2 * HUB_MAX_TWIN_BYTES)) throw new UsageError("INVALID_ARGUMENT", `maxDocumentBytes must be an integer in 64..${2 * HUB_MAX_TWIN_BYTES}`);
    if (options.onDesired !== undefined && typeof options.onDesired !== "function") throw new UsageError("INVALID_ARGUMENT", "onDesired must be a function");
    const r = options.reprovisionProperty ?? "reprovision";
    if (r !== false && !(typeof r === "string" && /^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(r))) throw new UsageError("INVALID_ARGUMENT", "reprovisionProperty must be a property name (letters, digits, _) or false");
    this.maxIncomingBytes = max;
    this.#onDesired = options.onDesired;
    this.#reprovision = r;
  }

  /** The desired properties as last read and patched (without `$version`), or undefined before the first read. */
  get desired(): Readonly<TwinProperties> | undefined {
    return this.#desired;
  }

  get desiredVersion(): number | undefined {
    return this.#desiredVersion;
  }

  /** The reported `$version` the hub gave last. */
  get reportedVersion(): number | undefined {
    return this.#reportedVersion;
  }

  /**
   * Queues a reported patch (null deletes a property), merged with any not yet sent; it goes out
   * when the twin is ready, retried on 429 and 5xx.
   * @throws UsageError INVALID_ARGUMENT unless a JSON object; OVERSIZE when what is waiting would
   *   exceed `maxDocumentBytes`.
   */
  report(patch: TwinProperties): void {
    if (patch === null || typeof patch !== "object" || Array.isArray(patch)) throw new UsageError("INVALID_ARGUMENT", "a reported patch is a JSON object");
    let copy: TwinProperties;
    try {
      copy = JSON.parse(JSON.stringify(patch)) as TwinProperties;
    } catch (error) {
      throw new UsageError("INVALID_ARGUMENT", `the reported patch cannot be written as JSON: ${(error as Error).message}`);
    }
    // compose() copies: what would wait is measured without touching what waits now.
    const merged = compose(this.#inFlight ?? {}, compose(this.#pending ?? {}, copy));
    const size = utf8Encode(JSON.stringify(merged)).length;
    if (size > this.maxIncomingBytes) throw new UsageError("OVERSIZE", `the reported properties waiting to go out would be ${size} bytes; at most ${this.maxIncomingBytes} (maxDocumentBytes)`);
    this.#run((io) => {
      this.#pending = compose(this.#pending ?? {}, copy);
      this.#sendPatch(io);
    });
  }

  /**
   * Acknowledges a writable property as IoT Plug and Play asks: reports
   * `{ [name]: { value, ac: status, av: version, ad: description } }`.
   */
  acknowledge(name: string, value: unknown, version: number, status = 200, description?: string): void {
    const ack: TwinProperties = { value, ac: status, av: version };
    if (description !== undefined) ack.ad = description;
    this.report({ [name]: ack });
  }

  /** Reads the whole twin again (it is read on every connection anyway). */
  refresh(): void {
    this.#run((io) => this.#startGet(io));
  }

  // ---- HubFeature

  subscriptions(): readonly string[] {
    return [RES + "#", DESIRED + "#"];
  }

  ready(io: FeatureIo): void {
    this.#ready = true;
    this.#startGet(io);
    this.#sendPatch(io);
  }

  message(topic: string, payload: Uint8Array, oversize: number | undefined, io: FeatureIo): boolean {
    const isRes = topic.slice(0, RES.length) === RES;
    if (!isRes && topic.slice(0, DESIRED.length) !== DESIRED) return false;
    let query: Record<string, string>;
    try {
      query = topicQuery(topic);
    } catch (error) {
      io.report({ source: "twin", state: "failed", reason: `a twin topic that cannot be read: ${(error as Error).message}` });
      return true;
    }
    if (!isRes) {
      this.#onPatch(io, integer(query["$version"]), payload, oversize);
      return true;
    }
    const slash = topic.indexOf("/", RES.length);
    const status = integer(topic.slice(RES.length, slash < 0 ? topic.length : slash));
    const rid = query["$rid"];
    if (status === undefined) {
      io.report({ source: "twin", state: "failed", reason: `a twin answer without a status: "${excerpt(topic)}"` });
    } else if (this.#get && rid === this.#get.rid) {
      this.#get = undefined;
      this.#onGet(io, status, payload, oversize);
    } else if (this.#patch && rid === this.#patch.rid) {
      this.#patch = undefined;
      this.#onPatched(io, status, integer(query["$version"]));
    }
    // Any other rid answers a request of an earlier connection: nothing waits for it.
    return true;
  }

  lost(): void {
    this.#ready = false;
    this.#get = undefined;
    this.#getRetryAt = undefined;
    this.#patch = undefined;
    this.#patchRetryAt = undefined;
    this.#getAttempt = this.#patchAttempt = 0;
    // Not acknowledged: it goes out again, merged under what was queued after it.
    if (this.#inFlight) this.#pending = compose(this.#inFlight, this.#pending ?? {});
    this.#inFlight = undefined;
  }

  deadline(): number | undefined {
    let next: number | undefined;
    const times = [this.#get?.deadline, this.#getRetryAt, this.#patch?.deadline, this.#patchRetryAt];
    for (let i = 0; i < times.length; i++) {
      const t = times[i];
      if (t !== undefined && (next === undefined || t < next)) next = t;
    }
    return next;
  }

  timer(io: FeatureIo): void {
    const now = io.now;
    if (this.#get && now >= this.#get.deadline) {
      this.#get = undefined;
      this.#retryGet(io, "no answer to the twin read within the response timeout");
    }
    if (this.#patch && now >= this.#patch.deadline) {
      this.#patch = undefined;
      this.#retryPatch(io, "no answer to the reported patch within the response timeout");
    }
    if (this.#getRetryAt !== undefined && now >= this.#getRetryAt) {
      this.#getRetryAt = undefined;
      this.#startGet(io);
    }
    if (this.#patchRetryAt !== undefined && now >= this.#patchRetryAt) {
      this.#patchRetryAt = undefined;
      this.#sendPatch(io);
    }
  }

  attach(call: (fn: (io: FeatureIo) => void) => void): void {
    this.#call = call;
  }

  // ---- the whole twin

  #startGet(io: FeatureIo): void {
    if (!this.#ready || this.#get) {
      this.#getWanted = true;
      return;
    }
    this.#getWanted = false;
    this.#getRetryAt = undefined;
    const rid = String(++this.#rid);
    if (io.publish(`$iothub/twin/GET/?$rid=${rid}`, new Uint8Array(0))) this.#get = { rid, deadline: io.now + io.policy.timeouts.responseMs };
  }

  #onGet(io: FeatureIo, status: number, payload: Uint8Array, oversize: number | undefined): void {
    if (status !== 200) return this.#answerFailed(io, status, "the twin read", () => this.#retryGet(io, `the hub answered the twin read with ${status}`));
    let doc: unknown;
    try {
      if (oversize !== undefined) throw new UsageError("OVERSIZE", `the twin is ${oversize} bytes, over the ${this.maxIncomingBytes}-byte limit`);
      doc = parseJsonValue(payload, "twin document", this.maxIncomingBytes);
    } catch (error) {
      this.#getAttempt = 0;
      return io.report({ source: "twin", state: "failed", status, reason: `${(error as Error).message} (maxDocumentBytes); it is read again on the next connection` });
    }
    const desired = own(doc, "desired");
    const reported = own(doc, "reported");
    const version = integer(own(desired, "$version"));
    if (!isObject(desired) || version === undefined) {
      return io.report({ source: "twin", state: "failed", status, reason: "the twin has no desired properties with a $version" });
    }
    this.#getAttempt = 0;
    this.#desired = strip(desired);
    this.#desiredVersion = version;
    if (isObject(reported)) {
      this.#reported = strip(reported);
      this.#reportedVersion = integer(reported["$version"]);
    }
    io.report({ source: "twin", state: "synced", version });
    this.#deliver(io, this.#desired, version, true);
    // A patch came while the twin was read: if it was newer than this document, read again.
    if (this.#seen > version || this.#getWanted) this.#startGet(io);
    this.#seen = 0;
  }

  #retryGet(io: FeatureIo, reason: string): void {
    const delayMs = this.#delay(io, ++this.#getAttempt);
    this.#getRetryAt = io.now + delayMs;
    io.report({ source: "twin", state: "retrying", delayMs, reason });
  }

  // ---- desired patches

  #onPatch(io: FeatureIo, version: number | undefined, payload: Uint8Array, oversize: number | undefined): void {
    if (version === undefined) return io.report({ source: "twin", state: "failed", reason: "a desired patch without a $version" });
    if (this.#get || this.#desiredVersion === undefined) {
      // The read in flight may or may not hold it: decided when the document comes.
      if (version > this.#seen) this.#seen = version;
      return;
    }
    if (version <= this.#desiredVersion) return io.report({ source: "twin", state: "ignored", version, reason: `not newer than version ${this.#desiredVersion}` });
    let patch: unknown;
    try {
      if (oversize !== undefined) throw new UsageError("OVERSIZE", `the desired patch is ${oversize} bytes, over the ${this.maxIncomingBytes}-byte limit`);
      patch = parseJsonValue(payload, "desired patch", this.maxIncomingBytes);
    } catch (error) {
      io.report({ source: "twin", state: "failed", version, reason: `${(error as Error).message}; the twin is read again` });
      return this.#startGet(io);
    }
    if (!isObject(patch)) return io.report({ source: "twin", state: "failed", version, reason: "a desired patch that is not an object" });
    if (version > this.#desiredVersion + 1) {
      // A version went missing: the whole document says what it changed.
      io.report({ source: "twin", state: "ignored", version, reason: `version ${this.#desiredVersion + 1} was missed; the twin is read again` });
      return this.#startGet(io);
    }
    const changes = strip(patch);
    this.#desired = apply(this.#desired ?? {}, changes);
    this.#desiredVersion = version;
    io.report({ source: "twin", state: "desired", version });
    this.#deliver(io, changes, version, false);
  }

  #deliver(io: FeatureIo, desired: TwinProperties, version: number, complete: boolean): void {
    const name = this.#reprovision;
    if (name !== false && this.#desired && this.#desired[name] !== undefined && this.#desired[name] !== null) {
      const wanted = this.#desired[name];
      const done = own(this.#reported[name], "value");
      if (JSON.stringify(done) !== JSON.stringify(wanted)) {
        this.#reprovisionWanted = wanted;
        this.#pending = compose(this.#pending ?? {}, { [name]: { value: wanted, ac: 202, av: version, ad: "provisioning with DPS again" } });
        this.#sendPatch(io);
      }
    }
    const handler = this.#onDesired;
    if (handler) io.invoke(`twin desired ${version}${complete ? " (whole)" : ""}`, () => handler(desired, version, complete));
  }

  // ---- reported patches

  #sendPatch(io: FeatureIo): void {
    if (!this.#ready || this.#patch || this.#patchRetryAt !== undefined || !this.#pending) return;
    const rid = String(++this.#rid);
    const body = utf8Encode(JSON.stringify(this.#pending));
    if (!io.publish(`$iothub/twin/PATCH/properties/reported/?$rid=${rid}`, body)) return;
    this.#inFlight = this.#pending;
    this.#pending = undefined;
    this.#patch = { rid, deadline: io.now + io.policy.timeouts.responseMs };
  }

  #onPatched(io: FeatureIo, status: number, version: number | undefined): void {
    if (status < 200 || status > 299) {
      return this.#answerFailed(io, status, "the reported patch", () => this.#retryPatch(io, `the hub answered the reported patch with ${status}`), () => {
        this.#inFlight = undefined;
      });
    }
    this.#patchAttempt = 0;
    this.#reported = apply(this.#reported, this.#inFlight ?? {});
    this.#inFlight = undefined;
    if (version !== undefined) this.#reportedVersion = version;
    io.report({ source: "twin", state: "reported", version, status });
    const name = this.#reprovision;
    if (name !== false && this.#reprovisionWanted !== undefined && JSON.stringify(own(this.#reported[name], "value")) === JSON.stringify(this.#reprovisionWanted)) {
      this.#reprovisionWanted = undefined;
      io.reprovision(`the desired property ${name}`);
      return;
    }
    this.#sendPatch(io);
  }

  #retryPatch(io: FeatureIo, reason: string): void {
    if (this.#inFlight) this.#pending = compose(this.#inFlight, this.#pending ?? {});
    this.#inFlight = undefined;
    const delayMs = this.#delay(io, ++this.#patchAttempt);
    this.#patchRetryAt = io.now + delayMs;
    io.report({ source: "twin", state: "retrying", delayMs, reason });
  }

  /** By the retry table: 429 and 5xx retry; anything else is reported and not sent again. */
  #answerFailed(io: FeatureIo, status: number, what: string, retry: () => void, drop?: () => void): void {
    const action = actionForStatus(io.policy, status);
    if (action === "retry" || action === "recover") return retry();
    drop?.();
    io.report({ source: "twin", state: "failed", status, reason: `the hub refused ${what} with ${status}; it is not sent again` });
  }

  /** The retry table's backoff; past `budget.maxAttempts`, its long tail (one attempt per wait). */
  #delay(io: FeatureIo, attempt: number): number {
    const p = io.policy;
    return attempt > p.budget.maxAttempts ? retryDelayMs(p, attempt - p.budget.maxAttempts, io.random(), undefined, p.longTail) : retryDelayMs(p, attempt, io.random());
  }

  #run(fn: (io: FeatureIo) => void): void {
    if (this.#call) this.#call(fn);
    else throw new UsageError("ILLEGAL_EVENT", "the twin is not attached to a runtime yet: pass it to new DeviceRuntime(config, ports, listener, [twin])");
  }
}

function isObject(value: unknown): value is TwinProperties {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function own(value: unknown, key: string): unknown {
  return isObject(value) && Object.prototype.hasOwnProperty.call(value, key) ? value[key] : undefined;
}

function integer(value: unknown): number | undefined {
  const n = typeof value === "string" && /^[0-9]{1,15}$/.test(value) ? Number(value) : value;
  return typeof n === "number" && Number.isInteger(n) && n >= 0 ? n : undefined;
}

/** A copy without the `$`-prefixed metadata (`$version`, `$metadata`). */
function strip(props: TwinProperties): TwinProperties {
  const out: TwinProperties = {};
  const keys = Object.keys(props);
  for (let i = 0; i < keys.length; i++) if (keys[i][0] !== "$" && keys[i] !== "__proto__") out[keys[i]] = props[keys[i]];
  return out;
}

/** `patch` merged into a copy of `target` as JSON merge patch (RFC 7386): null deletes. */
function apply(target: TwinProperties, patch: TwinProperties): TwinProperties {
  return merge(target, patch, true);
}

/** Two patches as one (the later wins; nulls are kept, they delete at the hub). */
function compose(first: TwinProperties, later: TwinProperties): TwinProperties {
  return merge(first, later, false);
}

function merge(target: TwinProperties, patch: TwinProperties, deleteNulls: boolean): TwinProperties {
  const out: TwinProperties = {};
  let keys = Object.keys(target);
  for (let i = 0; i < keys.length; i++) if (keys[i] !== "__proto__") out[keys[i]] = target[keys[i]];
  keys = Object.keys(patch);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const v = patch[k];
    if (k === "__proto__") continue; // own in parsed JSON; assigning it would set the prototype
    if (v === null && deleteNulls) delete out[k];
    else if (isObject(v) && isObject(out[k])) out[k] = merge(out[k] as TwinProperties, v, deleteNulls);
    else out[k] = isObject(v) && deleteNulls ? merge({}, v, true) : v;
  }
  return out;
}
