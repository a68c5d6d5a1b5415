/**
 * Fuzzes the hub features inside a hub session with what a hostile or broken hub could send: the
 * features' own topics with mutated levels and queries ($rid missing, doubled, percent-escapes
 * broken, huge versions), bodies of random bytes, deep nesting, prototype keys and oversize
 * markers, interleaved with drops, reconnects, timers and application calls. Nothing may escape
 * the session but UsageErrors from the application's own calls, and every method call seen must
 * be answered or reported. Portable: the Node tests and the XS tier import it.
 */
import { utf8Encode } from "../../modules/encoding.js";
import { DpsError } from "../../modules/errors.js";
import { HubSession, type FeatureIo, type HubCommand, type HubFeature } from "../../modules/hub-session.js";
import { CloudMessages } from "../../modules/c2d.js";
import { DirectMethods } from "../../modules/methods.js";
import { DeviceTwin } from "../../modules/twin.js";
import { retryPolicy } from "../../modules/retry-policy.js";
import { portableCrypto } from "../../modules/sha256.js";
import { runRandom, type Random } from "./fuzz.js";
import { T0 } from "./transcript.js";

const TOPICS = [
  "devices/dev-001/messages/devicebound/",
  "devices/dev-001/messages/devicebound/%24.mid=",
  "$iothub/methods/POST/",
  "$iothub/methods/POST/blink/?$rid=",
  "$iothub/methods/POST/reprovision/?$rid=",
  "$iothub/twin/res/200/?$rid=",
  "$iothub/twin/res/204/?$rid=",
  "$iothub/twin/res/429/?$rid=",
  "$iothub/twin/res/",
  "$iothub/twin/PATCH/properties/desired/?$version=",
];
const PIECES = ["", "1", "2", "99999999999999999999", "%", "%2", "%zz", "&$rid=1", "&$rid=", "?", "/", "&&", "=", "__proto__=1", "$version=3", "%E2%82", "-1", "1e3", "0x10", " "];
const BODIES = [
  "",
  "null",
  "{}",
  "[]",
  '{"times":3}',
  '{"desired":{"$version":1},"reported":{"$version":1}}',
  '{"desired":{"a":1,"$version":2},"reported":{"$version":"x"}}',
  '{"desired":{"__proto__":{"polluted":1},"$version":3}}',
  '{"desired":[],"reported":null}',
  '{"a":1,"$version":4}',
  '{"constructor":{"prototype":{"x":1}}}',
  "{not json",
  '"just a string"',
  "1e999",
];

function pick<T>(random: Random, list: readonly T[]): T {
  return list[Math.floor(random() * list.length)];
}

function body(random: Random): Uint8Array {
  const r = random();
  if (r < 0.6) return utf8Encode(pick(random, BODIES));
  if (r < 0.7) return utf8Encode("[".repeat(1 + Math.floor(random() * 3000)));
  if (r < 0.8) return utf8Encode(`{"a":"${"x".repeat(Math.floor(random() * 20_000))}"}`);
  const bytes = new Uint8Array(Math.floor(random() * 64));
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
  return bytes;
}

export interface FeatureFuzzSummary {
  readonly sequences: number;
  readonly events: number;
  readonly answers: number;
  readonly failures: readonly string[];
}

/** `count` sequences of `steps` events each; a failure names its (seed, index) to rebuild it. */
export function fuzzFeatures(count: number, seed: number, steps = 60): FeatureFuzzSummary {
  const failures: string[] = [];
  let events = 0;
  let answers = 0;
  for (let index = 0; index < count; index++) {
    const random = runRandom(seed, index);
    const calls: { feature: HubFeature; fn: (io: FeatureIo) => void }[] = [];
    const invokes: (() => void)[] = [];
    let now = T0;
    let timerAt: number | undefined;
    let methodCalls = 0;
    let methodEnds = 0;
    const apply = (commands: HubCommand[]) => {
      for (const c of commands) {
        if (c.kind === "set-timer") timerAt = now + c.delayMs;
        else if (c.kind === "clear-timer") timerAt = undefined;
        else if (c.kind === "invoke") invokes.push(c.run);
        else if (c.kind === "feature" && c.event.source === "method") methodEnds++;
        else if (c.kind === "publish" && c.topic.startsWith("$iothub/methods/res/")) answers++;
      }
    };
    try {
      const twin = new DeviceTwin({ maxDocumentBytes: 1024, onDesired: () => twin.report({ seen: Math.floor(random() * 9) }) });
      const features: HubFeature[] = [
        new CloudMessages({ maxBytes: 512, onMessage: (m) => void m.properties }),
        new DirectMethods({ maxPayloadBytes: 256, timeoutMs: 1000, maxPending: 2 }).on("blink", (r) => (random() < 0.3 ? Promise.resolve({ status: 200, payload: r.payload }) : random() < 0.5 ? undefined : { status: 201 })),
        twin,
      ];
      const session = new HubSession({ symmetricKey: "cGFzc3dvcmQ=", features, policy: retryPolicy({}) }, { crypto: portableCrypto, random });
      for (const f of features) f.attach((fn) => calls.push({ feature: f, fn }));
      const drain = () => {
        for (let guard = 0; guard < 100 && (invokes.length > 0 || calls.length > 0); guard++) {
          const run = invokes.shift();
          if (run) run();
          else {
            const c = calls.shift()!;
            apply(session.handle({ kind: "call", feature: c.feature, fn: c.fn }, now));
          }
        }
      };
      let linkUp = false;
      apply(session.handle({ kind: "start", hubHost: "hub-1.azure-devices.net", deviceId: "dev-001" }, now));
      for (let s = 0; s < steps; s++) {
        events++;
        const r = random();
        if (!linkUp || r < 0.05) {
          apply(session.handle({ kind: "connack", returnCode: 0 }, now));
          for (let k = 0; k < 4; k++) apply(session.handle({ kind: "suback", granted: [random() < 0.95 ? 1 : 128] }, now));
          linkUp = true;
        } else if (r < 0.1) {
          apply(session.handle({ kind: "closed", fault: { kind: "closed", message: "fuzz" } }, now));
          linkUp = false;
          if (timerAt !== undefined) {
            now = Math.max(now, timerAt);
            timerAt = undefined;
            apply(session.handle({ kind: "timer" }, now));
          }
        } else if (r < 0.2 && timerAt !== undefined) {
          now = Math.max(now, timerAt);
          timerAt = undefined;
          apply(session.handle({ kind: "timer" }, now));
        } else if (r < 0.25) {
          try {
            twin.report({ k: Math.floor(random() * 100), big: random() < 0.1 ? "y".repeat(2000) : null });
          } catch (error) {
            if (!(error instanceof DpsError)) throw error;
          }
        } else {
          const topic = pick(random, TOPICS) + pick(random, PIECES) + (random() < 0.5 ? pick(random, PIECES) : "");
          if (topic.startsWith("$iothub/methods/POST/")) methodCalls++;
          apply(session.handle({ kind: "message", topic, payload: body(random), oversize: random() < 0.05 ? 300_000 : undefined }, now));
        }
        drain();
        if (linkUp && session.phase !== "connected") linkUp = false;
      }
      // A call is reported at most twice: its answer, and a handler's answer that came too late.
      if (methodEnds > 2 * methodCalls) failures.push(`run ${seed}/${index}: ${methodEnds} method reports for ${methodCalls} calls`);
    } catch (error) {
      failures.push(`run ${seed}/${index}: ${error instanceof DpsError ? `${error.code} ` : ""}${(error as Error).message}`);
    }
  }
  return { sequences: count, events, answers, failures };
}
