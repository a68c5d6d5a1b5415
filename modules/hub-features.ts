/**
 * The plumbing of the opt-in hub features (c2d.ts, methods.ts, twin.ts), outside the hub session
 * so that a firmware without features does not carry it: each feature module imports this one and
 * hands the session `FeatureSet` as its `driver`.
 *
 * After CONNACK 0 each feature's topics are subscribed to, in order. A feature is ready once all
 * of its SUBACKs grant them; a refusal (0x80) leaves that feature off until the next connection,
 * and the others work on. Messages are offered to the ready features in turn; deadlines and
 * timers are theirs while ready; the loss of the link is told to each.
 *
 * Also the parsers the features share: JSON of any kind with a size and depth bound, and the
 * hub's property bags and topic queries.
 */
import { utf8Decode, urlDecode } from "./encoding.js";
import { PeerError, excerpt } from "./errors.js";
import { MAX_JSON_DEPTH, nestsTooDeep } from "./dps-protocol.js";
import type { FeatureDriver, FeatureIo, HubFeature, SessionView } from "./hub-session.js";

export class FeatureSet implements FeatureDriver {
  readonly maxPacketBytes: number;
  #features: readonly HubFeature[];
  /** Per feature: subscriptions not yet granted on this connection (-1: refused or down; 0: ready). */
  #pending: number[] = [];
  /** The feature of each SUBSCRIBE awaiting its SUBACK, in order. */
  #order: number[] = [];
  #up = false;

  constructor(features: readonly HubFeature[]) {
    this.#features = features;
    let max = 0;
    for (let i = 0; i < features.length; i++) {
      this.#pending.push(-1);
      // A topic and property bag of up to 1 KiB ride on the largest body.
      max = Math.max(max, features[i].maxIncomingBytes + 1024);
    }
    this.maxPacketBytes = max;
  }

  up(view: SessionView): void {
    this.#up = true;
    this.#order = [];
    for (let i = 0; i < this.#features.length; i++) {
      const topics = this.#features[i].subscriptions(view.deviceId);
      this.#pending[i] = topics.length;
      for (let k = 0; k < topics.length; k++) {
        this.#order.push(i);
        view.out.push({ kind: "subscribe", topic: topics[k], qos: 1 });
      }
      if (topics.length === 0) this.#features[i].ready(this.#io(i, view));
    }
  }

  suback(granted: readonly number[], view: SessionView): void {
    const i = this.#order.shift();
    if (i === undefined || this.#pending[i] <= 0) return;
    const f = this.#features[i];
    if (!(granted[0] <= 1)) {
      this.#pending[i] = -1;
      view.out.push({ kind: "feature", event: { source: "feature", state: "unavailable", feature: f.name, reason: `the hub refused the subscription of ${f.name} (granted ${granted[0]}); it stays off until the next connection` } });
      return;
    }
    if (--this.#pending[i] === 0) f.ready(this.#io(i, view));
  }

  message(topic: string, payload: Uint8Array, oversize: number | undefined, view: SessionView): boolean {
    for (let i = 0; i < this.#features.length; i++) if (this.#pending[i] === 0 && this.#features[i].message(topic, payload, oversize, this.#io(i, view))) return true;
    return false;
  }

  down(view: SessionView): void {
    if (!this.#up) return;
    this.#up = false;
    this.#order = [];
    for (let i = 0; i < this.#features.length; i++) {
      this.#pending[i] = -1;
      this.#features[i].lost(this.#io(i, view));
    }
  }

  deadline(): number | undefined {
    let next: number | undefined;
    for (let i = 0; i < this.#features.length; i++) {
      const t = this.#pending[i] === 0 ? this.#features[i].deadline() : undefined;
      if (t !== undefined && (next === undefined || t < next)) next = t;
    }
    return next;
  }

  timer(view: SessionView): void {
    for (let i = 0; i < this.#features.length; i++) {
      const at = this.#pending[i] === 0 ? this.#features[i].deadline() : undefined;
      if (at !== undefined && view.now >= at) this.#features[i].timer(this.#io(i, view));
    }
  }

  call(feature: HubFeature, fn: (io: FeatureIo) => void, view: SessionView): void {
    const i = this.#features.indexOf(feature);
    if (i >= 0) fn(this.#io(i, view));
  }

  /** The I/O of the feature at `index` during one event; a feature keeps none of it across events. */
  #io(index: number, view: SessionView): FeatureIo {
    const out = view.out;
    const ready = view.connected && this.#pending[index] === 0;
    return {
      now: view.now,
      deviceId: view.deviceId,
      ready,
      random: view.random,
      policy: view.policy,
      publish: (topic, payload) => {
        if (ready) out.push({ kind: "publish", topic, payload, qos: 0 });
        return ready;
      },
      invoke: (what, run) => {
        out.push({ kind: "invoke", what, run });
      },
      report: (event) => {
        out.push({ kind: "feature", event });
      },
      reprovision: (reason) => {
        out.push({ kind: "reprovision", reason });
      },
    };
  }
}

/** The `driver` of every feature. */
export function featureSet(features: readonly HubFeature[]): FeatureDriver {
  return new FeatureSet(features);
}

/**
 * Parses any UTF-8 JSON value (a method payload, a twin document) of at most `maxBytes`; an empty
 * body is `null`.
 * @throws PeerError OVERSIZE, MALFORMED_UTF8, MALFORMED_JSON (also deeper than MAX_JSON_DEPTH).
 */
export function parseJsonValue(payload: Uint8Array, what: string, maxBytes: number): unknown {
  if (payload.length > maxBytes) throw new PeerError("OVERSIZE", `the ${what} is ${payload.length} bytes, over the ${maxBytes}-byte limit`);
  if (payload.length === 0) return null;
  if (nestsTooDeep(payload)) throw new PeerError("MALFORMED_JSON", `the ${what} nests arrays or objects deeper than ${MAX_JSON_DEPTH} levels`);
  const text = utf8Decode(payload);
  try {
    return JSON.parse(text);
  } catch {
    throw new PeerError("MALFORMED_JSON", `the ${what} is not JSON: "${excerpt(text)}"`);
  }
}

/**
 * A property bag or topic query as the hub writes it, `%24.mid=42&%24.to=%2Fdevices%2Fd1&color=red`
 * (or `$rid=7&$version=12` after a `?`), decoded into own properties of a prototype-less object;
 * a key given twice keeps its first value, a key without `=` has the value "".
 * @throws PeerError MALFORMED_TOPIC on a broken percent-escape; MALFORMED_UTF8.
 */
export function parsePropertyBag(bag: string): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (bag === "") return out;
  const pairs = bag.split("&");
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i];
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    const key = urlDecode(eq < 0 ? pair : pair.slice(0, eq));
    if (!(key in out)) out[key] = eq < 0 ? "" : urlDecode(pair.slice(eq + 1));
  }
  return out;
}

/** The query after the first `?` of a topic, parsed, or an empty bag when there is none. */
export function topicQuery(topic: string): Record<string, string> {
  const q = topic.indexOf("?");
  return parsePropertyBag(q < 0 ? "" : topic.slice(q + 1));
}
