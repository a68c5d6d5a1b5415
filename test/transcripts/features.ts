/**
 * Scripted transcripts of the hub features (c2d.ts, methods.ts, twin.ts) inside the hub session,
 * on a virtual clock, shared by the Node tests and the XS tier. The runner plays the driver: it
 * performs `invoke` commands after each event (the application's handlers log what they get), and
 * feeds the features' `call`s back as events, as DeviceRuntime does.
 */
import { portableCrypto } from "../../modules/sha256.js";
import { utf8Decode, utf8Encode } from "../../modules/encoding.js";
import { HubSession, type FeatureIo, type HubCommand, type HubEvent, type HubFeature } from "../../modules/hub-session.js";
import { CloudMessages } from "../../modules/c2d.js";
import { DirectMethods, type MethodResult } from "../../modules/methods.js";
import { DeviceTwin } from "../../modules/twin.js";
import { retryPolicy, type RetryPolicyOverrides } from "../../modules/retry-policy.js";
import { T0 } from "../support/transcript.js";
import { checkHubTranscript, hubConfig } from "./hub.js";

export interface Features {
  readonly list: HubFeature[];
  readonly c2d?: CloudMessages;
  readonly methods?: DirectMethods;
  readonly twin?: DeviceTwin;
  /** Settles the promise a handler returned, by method name. */
  readonly settle: Map<string, (result: MethodResult | Error) => void>;
}

export type FeatureStep =
  | { readonly timer: true }
  | { readonly after?: number; readonly event: HubEvent }
  | { readonly after?: number; readonly topic: string; readonly body?: string; readonly oversize?: number }
  | { readonly after?: number; readonly app: string; readonly run: (f: Features) => void }
  | { readonly after?: number; readonly settle: string; readonly result: MethodResult | Error };

export interface FeatureTranscript {
  readonly name: string;
  readonly make: (log: string[]) => Features;
  readonly policy?: RetryPolicyOverrides;
  readonly steps: readonly FeatureStep[];
  readonly expectInOrder: readonly string[];
  readonly expectNever?: readonly string[];
  readonly last: string;
}

export async function runFeatureTranscript(t: FeatureTranscript): Promise<string[]> {
  const log: string[] = [];
  let now = T0;
  let deadline: number | undefined;
  const calls: { feature: HubFeature; fn: (io: FeatureIo) => void }[] = [];
  const invokes: (() => void)[] = [];
  const apply = (commands: HubCommand[]) => {
    for (const c of commands) {
      if (c.kind === "set-timer") deadline = now + c.delayMs;
      if (c.kind === "clear-timer") deadline = undefined;
      if (c.kind === "invoke") invokes.push(c.run);
      log.push(describe(c));
    }
  };
  try {
    const f = t.make(log);
    const session = new HubSession({ ...hubConfig, features: f.list, policy: retryPolicy(t.policy) }, { crypto: portableCrypto, random: () => 0.5 });
    for (const feature of f.list) feature.attach((fn) => calls.push({ feature, fn }));
    // The driver's loop: handlers after the event, their calls as events, promises in between.
    const drain = async () => {
      for (let round = 0; round < 8; round++) {
        while (invokes.length > 0 || calls.length > 0) {
          const run = invokes.shift();
          if (run) {
            try {
              run();
            } catch (error) {
              log.push(`invoke threw ${(error as Error).message}`);
            }
            continue;
          }
          const call = calls.shift()!;
          apply(session.handle({ kind: "call", feature: call.feature, fn: call.fn }, now));
        }
        await Promise.resolve();
      }
    };
    apply(session.handle({ kind: "start", hubHost: "hub-1.azure-devices.net", deviceId: "dev-001" }, now));
    for (const step of t.steps) {
      if ("timer" in step) {
        if (deadline === undefined) throw new Error("no timer set");
        now = deadline;
        deadline = undefined;
        log.push(`> timer +${now - T0}`);
        apply(session.handle({ kind: "timer" }, now));
      } else {
        now += step.after ?? 0;
        if ("app" in step) {
          log.push(`> app ${step.app}`);
          try {
            step.run(f);
          } catch (error) {
            log.push(`app error ${(error as { code?: string }).code ?? "?"} ${(error as Error).message}`);
          }
        } else if ("settle" in step) {
          log.push(`> settle ${step.settle}`);
          f.settle.get(step.settle)!(step.result);
        } else if ("topic" in step) {
          log.push(`> message ${step.topic}${step.body ? ` ${step.body}` : ""}${step.oversize ? ` (oversize ${step.oversize})` : ""}`);
          apply(session.handle({ kind: "message", topic: step.topic, payload: utf8Encode(step.body ?? ""), oversize: step.oversize }, now));
        } else {
          const e = step.event;
          log.push(`> ${e.kind}${e.kind === "connack" ? ` ${e.returnCode}` : e.kind === "suback" ? ` ${e.granted.join(",")}` : e.kind === "closed" ? ` ${e.fault.kind}` : ""}`);
          apply(session.handle(e, now));
        }
      }
      await drain();
    }
  } catch (error) {
    log.push(`error ${(error as { code?: string }).code ?? "?"} ${(error as Error).message}`);
  }
  return log;
}

function describe(c: HubCommand): string {
  switch (c.kind) {
    case "connect":
      return `connect ${c.options.host} max-packet=${c.options.maxPacketBytes ?? "-"}`;
    case "subscribe":
      return `subscribe ${c.topic}`;
    case "publish":
      return `publish${c.tag !== undefined ? ` tag=${c.tag}` : ""} ${c.topic} ${utf8Decode(c.payload)}`;
    case "status":
      return `status ${c.status.state}`;
    case "set-timer":
      return `set-timer ${c.delayMs}`;
    case "feature":
      return `report ${JSON.stringify(c.event)}`;
    case "invoke":
      return `invoke ${c.what}`;
    case "reprovision":
      return `reprovision: ${c.reason}`;
    case "received":
      return `received ${c.topic}`;
    case "done":
      return `done ${c.outcome.kind}`;
    case "sent":
      return `sent ${c.tag}`;
    default:
      return c.kind;
  }
}

export function checkFeatureTranscript(t: FeatureTranscript, log: string[]): string[] {
  return checkHubTranscript(t, log);
}

// ---- the features, with handlers that log what they get

function withC2d(log: string[], maxBytes?: number): Features {
  const c2d = new CloudMessages({ maxBytes, onMessage: (m) => log.push(`app c2d ${m.messageId} ${m.text()} ${JSON.stringify(m.properties)} ${JSON.stringify(m.system)}`) });
  return { list: [c2d], c2d, settle: new Map() };
}

function withMethods(log: string[], options?: ConstructorParameters<typeof DirectMethods>[0]): Features {
  const settle = new Map<string, (result: MethodResult | Error) => void>();
  const methods = new DirectMethods(options)
    .on("blink", (r) => {
      log.push(`app blink ${JSON.stringify(r.payload)}`);
      return { status: 200, payload: { blinked: (r.payload as { times?: number } | null)?.times ?? 1 } };
    })
    .on("fail", () => {
      throw new Error("the LED driver is not ready");
    })
    .on("nothing", () => undefined)
    .on("bad", () => 42 as unknown as MethodResult)
    .on("slow", () =>
      new Promise<MethodResult>((resolve, reject) => {
        settle.set("slow", (result) => (result instanceof Error ? reject(result) : resolve(result)));
      }),
    );
  return { list: [methods], methods, settle };
}

function withTwin(log: string[], options?: ConstructorParameters<typeof DeviceTwin>[0]): Features {
  const twin = new DeviceTwin({ onDesired: (d, v, complete) => log.push(`app desired v${v}${complete ? " whole" : ""} ${JSON.stringify(d)}`), ...options });
  return { list: [twin], twin, settle: new Map() };
}

function withAll(log: string[]): Features {
  const a = withC2d(log);
  const b = withMethods(log);
  const c = withTwin(log);
  return { list: [...a.list, ...b.list, ...c.list], c2d: a.c2d, methods: b.methods, twin: c.twin, settle: b.settle };
}

const connack0: FeatureStep = { event: { kind: "connack", returnCode: 0 } };
const granted: FeatureStep = { event: { kind: "suback", granted: [1] } };
const closed: FeatureStep = { event: { kind: "closed", fault: { kind: "closed", message: "test" } } };
const twinUp: FeatureStep[] = [connack0, granted, granted];
const doc = (desired: object, dv: number, reported: object = {}, rv = 1) => JSON.stringify({ desired: { ...desired, $version: dv }, reported: { ...reported, $version: rv } });
const M = "$iothub/methods/POST/";
const R = "$iothub/twin/res/";
const D = "$iothub/twin/PATCH/properties/desired/";

export const featureTranscripts: FeatureTranscript[] = [
  {
    name: "all three: each subscribes after CONNACK 0 and the packet limit follows the largest body",
    make: withAll,
    steps: [connack0, granted, granted, granted, granted],
    expectInOrder: [
      "connect hub-1.azure-devices.net max-packet=9216",
      "status connected",
      "subscribe devices/dev-001/messages/devicebound/#",
      "subscribe $iothub/methods/POST/#",
      "subscribe $iothub/twin/res/#",
      "subscribe $iothub/twin/PATCH/properties/desired/#",
      "> suback 1",
      "> suback 1",
      "> suback 1",
      "> suback 1",
      "publish $iothub/twin/GET/?$rid=1 ",
    ],
    last: "set-timer",
  },
  {
    name: "c2d: body and decoded properties handed to the application, system ones apart",
    make: (log) => withC2d(log),
    steps: [connack0, granted, { topic: "devices/dev-001/messages/devicebound/%24.mid=m-1&%24.to=%2Fdevices%2Fdev-001%2Fmessages%2FdeviceBound&color=dark%20red", body: "hello" }],
    expectInOrder: ['report {"source":"c2d","state":"received","messageId":"m-1","bytes":5}', "invoke c2d m-1", 'app c2d m-1 hello {"color":"dark red"} {"$.mid":"m-1","$.to":"/devices/dev-001/messages/deviceBound"}'],
    last: "app c2d",
  },
  {
    name: "c2d: a message over maxBytes (or skipped by the host as oversize) is rejected with its size, not handed on",
    make: (log) => withC2d(log, 16),
    steps: [connack0, granted, { topic: "devices/dev-001/messages/devicebound/%24.mid=big", body: "x".repeat(17) }, { topic: "devices/dev-001/messages/devicebound/%24.mid=huge", oversize: 70000 }],
    expectInOrder: ['"state":"rejected","messageId":"big","bytes":17', "over the 16-byte limit", '"state":"rejected","messageId":"huge","bytes":70000'],
    expectNever: ["app c2d", "invoke"],
    last: "report",
  },
  {
    name: "c2d: a topic of another device or feature is not claimed",
    make: (log) => withC2d(log),
    steps: [connack0, granted, { topic: "devices/dev-002/messages/devicebound/x", body: "b" }],
    expectInOrder: ["received devices/dev-002/messages/devicebound/x"],
    expectNever: ["app c2d"],
    last: "received",
  },
  {
    name: "methods: a call is handed to its handler and answered with its status and payload",
    make: (log) => withMethods(log),
    steps: [connack0, granted, { topic: `${M}blink/?$rid=7`, body: '{"times":3}' }],
    expectInOrder: ["invoke method blink 7", 'app blink {"times":3}', 'publish $iothub/methods/res/200/?$rid=7 {"blinked":3}', '"state":"answered","name":"blink","rid":"7","status":200'],
    last: "set-timer 60000",
  },
  {
    name: "methods: unknown 404, not JSON 400, throwing 500, nothing 200 null, not a result 500",
    make: (log) => withMethods(log),
    steps: [
      connack0,
      granted,
      { topic: `${M}reboot/?$rid=1`, body: "{}" },
      { topic: `${M}blink/?$rid=2`, body: "{not json" },
      { topic: `${M}fail/?$rid=3`, body: "" },
      { topic: `${M}nothing/?$rid=4`, body: "" },
      { topic: `${M}bad/?$rid=5`, body: "" },
    ],
    expectInOrder: [
      'publish $iothub/methods/res/404/?$rid=1 {"message":"this device has no method \\"reboot\\""}',
      "publish $iothub/methods/res/400/?$rid=2",
      "is not JSON",
      'publish $iothub/methods/res/500/?$rid=3 {"message":"the handler of fail failed: the LED driver is not ready"}',
      "publish $iothub/methods/res/200/?$rid=4 null",
      "publish $iothub/methods/res/500/?$rid=5",
      "not { status, payload }",
    ],
    last: "set-timer 60000",
  },
  {
    name: "methods: a handler that takes too long gets 504 from the device; its late answer is dropped and reported",
    make: (log) => withMethods(log, { timeoutMs: 5000 }),
    steps: [connack0, granted, { topic: `${M}slow/?$rid=9`, body: "" }, { timer: true }, { after: 10, settle: "slow", result: { status: 200, payload: "done" } }],
    expectInOrder: ["invoke method slow 9", "set-timer 5000", "> timer +5000", 'publish $iothub/methods/res/504/?$rid=9 {"message":"the handler of slow did not answer within 5000 ms"}', "> settle slow", '"state":"late","name":"slow","rid":"9"'],
    expectNever: ["res/200/?$rid=9"],
    last: "report",
  },
  {
    name: "methods: an asynchronous handler answers when its promise settles; a rejection is 500",
    make: (log) => withMethods(log),
    steps: [connack0, granted, { topic: `${M}slow/?$rid=1`, body: "" }, { after: 100, settle: "slow", result: { status: 201, payload: { ok: true } } }, { topic: `${M}slow/?$rid=2`, body: "" }, { settle: "slow", result: new Error("flash busy") }],
    expectInOrder: ['publish $iothub/methods/res/201/?$rid=1 {"ok":true}', 'publish $iothub/methods/res/500/?$rid=2 {"message":"the handler of slow failed: flash busy"}'],
    last: "set-timer 59900",
  },
  {
    name: "methods: a request over maxPayloadBytes gets 413, and more than maxPending at once 503",
    make: (log) => withMethods(log, { maxPayloadBytes: 32, maxPending: 1 }),
    steps: [connack0, granted, { topic: `${M}blink/?$rid=1`, body: `"${"x".repeat(40)}"` }, { topic: `${M}blink/?$rid=2`, oversize: 200000 }, { topic: `${M}slow/?$rid=3`, body: "" }, { topic: `${M}blink/?$rid=4`, body: "" }],
    expectInOrder: ["publish $iothub/methods/res/413/?$rid=1", "42 bytes", "publish $iothub/methods/res/413/?$rid=2", "200000 bytes", "invoke method slow 3", "publish $iothub/methods/res/503/?$rid=4"],
    last: "report",
  },
  {
    name: "methods: reprovision answers 202, then the session asks for DPS",
    make: (log) => withMethods(log),
    steps: [connack0, granted, { topic: `${M}reprovision/?$rid=1`, body: "" }],
    expectInOrder: ['publish $iothub/methods/res/202/?$rid=1 {"message":"provisioning with DPS again"}', "reprovision: the reprovision method"],
    last: "reprovision",
  },
  {
    name: "methods: a call on a dropped connection is forgotten; its answer is reported late, never sent on the next one",
    make: (log) => withMethods(log),
    steps: [connack0, granted, { topic: `${M}slow/?$rid=1`, body: "" }, closed, { timer: true }, connack0, granted, { settle: "slow", result: { status: 200 } }],
    expectInOrder: ["invoke method slow 1", "> closed closed", "> connack 0", "> settle slow", '"state":"late","name":"slow","rid":"1"'],
    expectNever: ["res/200/?$rid=1"],
    last: "report",
  },
  {
    name: "twin: the whole document on connecting, handed over complete; desired patches after it",
    make: (log) => withTwin(log),
    steps: [...twinUp, { topic: `${R}200/?$rid=1`, body: doc({ interval: 10 }, 4) }, { topic: `${D}?$version=5`, body: '{"interval":30,"$version":5}' }],
    expectInOrder: ["publish $iothub/twin/GET/?$rid=1 ", '"state":"synced","version":4', 'app desired v4 whole {"interval":10}', '"state":"desired","version":5', 'app desired v5 {"interval":30}'],
    last: "app desired v5",
  },
  {
    name: "twin: a desired patch whose $version is not newer is ignored",
    make: (log) => withTwin(log),
    steps: [...twinUp, { topic: `${R}200/?$rid=1`, body: doc({ interval: 10 }, 4) }, { topic: `${D}?$version=4`, body: '{"interval":99,"$version":4}' }, { topic: `${D}?$version=3`, body: '{"interval":98,"$version":3}' }],
    expectInOrder: ['"state":"ignored","version":4,"reason":"not newer than version 4"', '"state":"ignored","version":3'],
    expectNever: ["app desired v4 {", "app desired v3"],
    last: "report",
  },
  {
    name: "twin: a patch that skips a version means the twin is read again",
    make: (log) => withTwin(log),
    steps: [...twinUp, { topic: `${R}200/?$rid=1`, body: doc({ a: 1 }, 4) }, { topic: `${D}?$version=6`, body: '{"a":3,"$version":6}' }, { topic: `${R}200/?$rid=2`, body: doc({ a: 3, b: 2 }, 6) }],
    expectInOrder: ["version 5 was missed; the twin is read again", "publish $iothub/twin/GET/?$rid=2", 'app desired v6 whole {"a":3,"b":2}'],
    last: "app desired v6 whole",
  },
  {
    name: "twin: a newer patch during the read leads to a second read",
    make: (log) => withTwin(log),
    steps: [...twinUp, { topic: `${D}?$version=8`, body: '{"a":8,"$version":8}' }, { topic: `${R}200/?$rid=1`, body: doc({ a: 7 }, 7) }, { topic: `${R}200/?$rid=2`, body: doc({ a: 8 }, 8) }],
    expectInOrder: ['"state":"synced","version":7', "publish $iothub/twin/GET/?$rid=2", 'app desired v7 whole {"a":7}', 'app desired v8 whole {"a":8}'],
    last: "app desired v8 whole",
  },
  {
    name: "twin: a reconnect in the middle of the read reads again on the new connection; the old answer is ignored",
    make: (log) => withTwin(log),
    steps: [...twinUp, closed, { timer: true }, ...twinUp, { topic: `${R}200/?$rid=1`, body: doc({ a: "old" }, 1) }, { topic: `${R}200/?$rid=2`, body: doc({ a: "new" }, 2) }],
    expectInOrder: ["publish $iothub/twin/GET/?$rid=1", "> closed closed", "publish $iothub/twin/GET/?$rid=2", "> message $iothub/twin/res/200/?$rid=1", '"state":"synced","version":2', 'app desired v2 whole {"a":"new"}'],
    expectNever: ['{"a":"old"}'],
    last: "app desired v2 whole",
  },
  {
    name: "twin: reported patches made offline are merged and go out as one after the read starts",
    make: (log) => withTwin(log),
    steps: [
      { app: "report a", run: (f) => f.twin!.report({ a: 1, nested: { x: 1 } }) },
      { app: "report b", run: (f) => f.twin!.report({ b: 2, nested: { y: 2 }, a: null }) },
      ...twinUp,
      { topic: `${R}204/?$rid=2&$version=7`, body: "" },
    ],
    expectInOrder: ["publish $iothub/twin/GET/?$rid=1", 'publish $iothub/twin/PATCH/properties/reported/?$rid=2 {"a":null,"nested":{"x":1,"y":2},"b":2}', '"state":"reported","version":7,"status":204'],
    expectNever: ["reported/?$rid=3"],
    last: "report",
  },
  {
    name: "twin: 429 on a reported patch is retried after the backoff, merged with what came since",
    make: (log) => withTwin(log),
    steps: [...twinUp, { app: "report a", run: (f) => f.twin!.report({ a: 1 }) }, { topic: `${R}429/?$rid=2`, body: "" }, { app: "report b", run: (f) => f.twin!.report({ b: 2 }) }, { timer: true }, { topic: `${R}204/?$rid=3&$version=2`, body: "" }],
    expectInOrder: ['reported/?$rid=2 {"a":1}', '"state":"retrying","delayMs":2500,"reason":"the hub answered the reported patch with 429"', "> app report b", "> timer +2500", 'publish $iothub/twin/PATCH/properties/reported/?$rid=3 {"a":1,"b":2}', '"state":"reported","version":2'],
    last: "report",
  },
  {
    name: "twin: 400 on a reported patch drops it and says so; the next one goes out",
    make: (log) => withTwin(log),
    steps: [...twinUp, { app: "report a", run: (f) => f.twin!.report({ a: 1 }) }, { topic: `${R}400/?$rid=2`, body: "" }, { app: "report b", run: (f) => f.twin!.report({ b: 2 }) }],
    expectInOrder: ['"state":"failed","status":400,"reason":"the hub refused the reported patch with 400; it is not sent again"', 'reported/?$rid=3 {"b":2}'],
    last: "publish",
  },
  {
    name: "twin: a read answered 503 or not at all is retried by the table",
    make: (log) => withTwin(log),
    steps: [...twinUp, { topic: `${R}503/?$rid=1`, body: "" }, { timer: true }, { timer: true }, { timer: true }, { topic: `${R}200/?$rid=3`, body: doc({}, 1) }],
    expectInOrder: ['"state":"retrying","delayMs":2500', "publish $iothub/twin/GET/?$rid=2", "> timer +32500", '"delayMs":5000,"reason":"no answer to the twin read within the response timeout"', "publish $iothub/twin/GET/?$rid=3", '"state":"synced","version":1'],
    last: "app desired v1 whole",
  },
  {
    name: "twin: an oversize document or patch is reported, and nothing is handed on",
    make: (log) => withTwin(log, { maxDocumentBytes: 64 }),
    steps: [...twinUp, { topic: `${R}200/?$rid=1`, body: doc({ a: "x".repeat(80) }, 1) }, { app: "report big", run: (f) => f.twin!.report({ big: "y".repeat(100) }) }],
    expectInOrder: ['"state":"failed","status":200,"reason":"the twin document is', "over the 64-byte limit", "app error OVERSIZE the reported properties waiting to go out would be"],
    expectNever: ["app desired"],
    last: "app error OVERSIZE",
  },
  {
    name: "twin: a writable property acknowledged as Plug and Play asks (value, ac, av, ad)",
    make: (log) => withTwin(log),
    steps: [...twinUp, { topic: `${R}200/?$rid=1`, body: doc({ interval: 30 }, 3) }, { app: "acknowledge interval", run: (f) => f.twin!.acknowledge("interval", 30, 3, 200, "applied") }],
    expectInOrder: ['publish $iothub/twin/PATCH/properties/reported/?$rid=2 {"interval":{"value":30,"ac":200,"av":3,"ad":"applied"}}'],
    last: "set-timer",
  },
  {
    name: "twin: the desired property reprovision is acknowledged first, then the session asks for DPS; once done it is not asked again",
    make: (log) => withTwin(log),
    steps: [
      ...twinUp,
      { topic: `${R}200/?$rid=1`, body: doc({ reprovision: "2026-12-02" }, 2) },
      { topic: `${R}204/?$rid=2&$version=5`, body: "" },
      closed,
      { timer: true },
      ...twinUp,
      { topic: `${R}200/?$rid=3`, body: doc({ reprovision: "2026-12-02" }, 2, { reprovision: { value: "2026-12-02", ac: 202, av: 2 } }, 5) },
    ],
    expectInOrder: ['reported/?$rid=2 {"reprovision":{"value":"2026-12-02","ac":202,"av":2,"ad":"provisioning with DPS again"}}', '"state":"reported","version":5', "reprovision: the desired property reprovision", "publish $iothub/twin/GET/?$rid=3", 'app desired v2 whole {"reprovision":"2026-12-02"}'],
    expectNever: ["reported/?$rid=4"],
    last: "app desired v2 whole",
  },
  {
    name: "twin: read again after the token renewal reconnects",
    make: (log) => withTwin(log),
    steps: [...twinUp, { topic: `${R}200/?$rid=1`, body: doc({}, 1) }, { timer: true }, { timer: true }, ...twinUp],
    expectInOrder: ['"state":"synced","version":1', "status renewing", "status connected", "publish $iothub/twin/GET/?$rid=2"],
    last: "set-timer",
  },
  {
    name: "a refused subscription leaves that feature off and says so; the others work",
    make: withAll,
    steps: [connack0, granted, { event: { kind: "suback", granted: [128] } }, granted, granted, { topic: `${M}blink/?$rid=1`, body: "" }],
    expectInOrder: ['"source":"feature","state":"unavailable","feature":"methods"', "publish $iothub/twin/GET/?$rid=1", "received $iothub/methods/POST/blink/?$rid=1"],
    expectNever: ["res/200/?$rid=1", "app blink"],
    last: "received",
  },
  {
    name: "twin: report() before the twin is attached to a runtime is a usage error",
    make: (log) => {
      const twin = new DeviceTwin();
      log.push("unattached");
      try {
        twin.report({ a: 1 });
      } catch (error) {
        log.push(`error ${(error as { code?: string }).code}`);
      }
      return { list: [], settle: new Map() };
    },
    steps: [],
    expectInOrder: ["unattached", "error ILLEGAL_EVENT"],
    last: "set-timer",
  },
];
