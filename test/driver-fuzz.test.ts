/**
 * The DeviceRuntime driver under fuzzing ports (test/support/machine-fuzz.ts `fuzzDriver`), the
 * Moddable host's MQTT adapter under random and mutated frames (test/support/mqtt-fuzz.ts, also on
 * XS in test/xs/fuzz.xs.ts), and the desktop host's NodeMqttConnector against a local TCP peer
 * that writes random and mutated MQTT frames: no exception may escape a host callback.
 */
import test from "ava";
import type { ExecutionContext } from "ava";
import * as net from "node:net";
import mqttPacket from "mqtt-packet";
import type { Packet } from "mqtt-packet";
import { MemoryFlash } from "../modules/memory-flash.js";
import type { HttpsPort, MqttConnectOptions, MqttConnector, MqttSession, MqttSessionCallbacks, TimerPort } from "../modules/ports.js";
import { DeviceRuntime, type RuntimeConfig, type RuntimeEvent } from "../modules/runtime.js";
import { portableCrypto } from "../modules/sha256.js";
import { NodeMqttConnector } from "../hosts/desktop/mqtt.js";
import { createNodeTimers, nodeCrypto, secureRandom } from "../hosts/desktop/platform.js";
import { describeError, fuzzRandom } from "./support/fuzz.js";
import {
  DriverWorld,
  FuzzCloud,
  FuzzConnector,
  driverSequence,
  formatFailure,
  fuzzDriver,
  int,
  pick,
  type SequenceReport,
} from "./support/machine-fuzz.js";
import { fuzzModdable, portableEncoder, WireServer, type DevicePacket, type FrameEncoder, type WireAction } from "./support/mqtt-fuzz.js";
import { ScriptedCloud, VirtualClock, virtualConfig } from "./support/virtual-world.js";

function noFailures(t: ExecutionContext, report: SequenceReport): void {
  t.is(report.failures, 0, report.failureList.map(formatFailure).join("\n\n"));
  t.log(`${report.target}: ${report.runs} sequences, ${report.steps} callbacks, ${report.failures} failures`);
}

function saw(t: ExecutionContext, report: SequenceReport, marks: readonly string[]): void {
  for (const mark of marks) t.true((report.outcomes[`saw: ${mark}`] ?? 0) > 0, `no sequence reached "${mark}"`);
}


// ---- the driver on fuzzing ports ---------------------------------------------------------------------

test("driver fuzz: 1,500 DeviceRuntimes on ports that call back at random; nothing escapes a callback, one session at a time, no 0 ms loop", (t) => {
  const report = fuzzDriver(1500, 1);
  noFailures(t, report);
  saw(t, report, [
    "runtime connected",
    "runtime backing-off",
    "runtime failed",
    "cache saved",
    "cache loaded",
    "cache unavailable",
    "telemetry sent",
    "lookup",
    "callback after close",
    "callback twice",
    "sync callback",
    "re-entrant app call",
    "hub connect",
  ]);
  for (const doc of ["start ILLEGAL_EVENT", "send STOPPED", "send QUEUE_FULL", "reprovision ILLEGAL_EVENT"]) t.true((report.documented[doc] ?? 0) > 0, doc);
  t.deepEqual(driverSequence(1, 7), driverSequence(1, 7), "rebuilt from (seed, index)");
});

test("driver fuzz: the driver's own checks can fail (an escaping exception, a second session, a 0 ms loop)", (t) => {
  const w = new DriverWorld(fuzzRandom(1), 0);
  w.invoke("onConnack 0", () => {
    throw new TypeError("x is undefined");
  });
  t.is(w.failure?.check, "exception");
  t.regex(w.failure!.message, /onConnack 0 threw into the host: TypeError/);

  const w2 = new DriverWorld(fuzzRandom(2), 0);
  const none = { throwConnect: 0, throwSubscribe: 0, throwPublish: 0, sync: 0, afterClose: 0, twice: 0, throwHttps: 0, listener: 0, reentrant: 0, flash: 0 };
  const connector = new FuzzConnector(w2, new FuzzCloud(fuzzRandom(3), "fast"), none);
  const callbacks: MqttSessionCallbacks = { onConnack() {}, onSuback() {}, onMessage() {}, onPuback() {}, onClose() {} };
  const options: MqttConnectOptions = { host: "dps.example", port: 8883, clientId: "c", username: "s/registrations/c/api-version=1", password: "p", keepAliveSeconds: 60, cleanSession: true };
  const first = connector.connect(options, callbacks);
  first.close();
  connector.connect(options, callbacks);
  t.is(w2.failure, undefined, "after close(), a new session is fine");
  connector.connect(options, callbacks);
  t.is(w2.failure?.check, "second-session");

  const w3 = new DriverWorld(fuzzRandom(4), 0);
  for (let i = 0; i < 4; i++) w3.loop.set(() => {}, 0);
  t.is(w3.failure?.check, "timer-loop");
});

// ---- two driver bugs the fuzz found, kept as regression tests ------------------------------------------

function virtualRuntime(listener: (runtime: DeviceRuntime, e: RuntimeEvent) => void, script: ConstructorParameters<typeof ScriptedCloud>[1] = {}, https?: HttpsPort) {
  const clock = new VirtualClock();
  const cloud = new ScriptedCloud(clock, script);
  const logs: string[] = [];
  const runtime: DeviceRuntime = new DeviceRuntime(
    virtualConfig,
    { mqtt: cloud, https, timers: clock, clock: () => clock.now, random: () => 0.5, secureRandom: (b) => b.fill(1), crypto: portableCrypto, log: (_l, m) => logs.push(m) },
    (e) => listener(runtime, e),
  );
  return { runtime, clock, logs };
}

test("driver: reprovision() from inside the listener after stop() is the app's ILLEGAL_EVENT, never an exception in the machine", (t) => {
  let once = false;
  const thrown: string[] = [];
  const { runtime, clock, logs } = virtualRuntime((rt, e) => {
    if (once || e.source !== "dps") return;
    once = true;
    rt.stop();
    try {
      rt.reprovision();
    } catch (error) {
      thrown.push(describeError(error));
    }
  });
  runtime.start();
  clock.run();
  // Either reprovision() throws ILLEGAL_EVENT to the app, or it is a no-op; never a machine exception.
  t.deepEqual(logs.filter((m) => m.startsWith("runtime: ")), []);
  t.is(runtime.state, "stopped");
  t.log(thrown);
});

test("driver: a lookup port that throws, while the listener re-provisions, does not feed lookup-failed to the new registration run", (t) => {
  const throwing: HttpsPort = {
    request() {
      throw new Error("no route to host");
    },
  };
  let once = false;
  const { runtime, clock, logs } = virtualRuntime(
    (rt, e) => {
      if (!once && e.source === "dps" && e.status.state === "looking-up") {
        once = true;
        rt.reprovision();
      }
    },
    { registerAnswers: [500, 202] },
    throwing,
  );
  runtime.start();
  clock.run(10_000, clock.now + 60_000);
  t.true(once, "the registration reached the status lookup");
  t.deepEqual(logs.filter((m) => m.startsWith("runtime: ")), []);
  runtime.stop();
});

// ---- the Moddable host's MQTT adapter, on Node (XS: test/xs/fuzz.xs.ts) -----------------------------

test("Moddable adapter fuzz on Node: 400 runtimes over ModdableMqttConnector on stand-in sockets fed random and mutated frames", (t) => {
  const report = fuzzModdable(400, 1);
  noFailures(t, report);
  saw(t, report, ["socket", "runtime connected", "runtime backing-off", "telemetry sent"]);
});

// ---- the desktop host's NodeMqttConnector against a TCP peer that writes random and mutated frames ----

/** Frames from mqtt-packet's generate (what the brief asks for); what it refuses, from the portable encoder. */
const mqttPacketEncoder: FrameEncoder = {
  connack: (code, sessionPresent) => gen({ cmd: "connack", returnCode: code, sessionPresent }, () => portableEncoder.connack(code, sessionPresent)),
  suback: (id, granted) => gen({ cmd: "suback", messageId: id, granted: granted as number[] }, () => portableEncoder.suback(id, granted)),
  publish: (topic, payload, qos, id) => gen({ cmd: "publish", topic, payload: Buffer.from(payload), qos, messageId: id, dup: false, retain: false }, () => portableEncoder.publish(topic, payload, qos, id)),
  puback: (id) => gen({ cmd: "puback", messageId: id }, () => portableEncoder.puback(id)),
  pingresp: () => gen({ cmd: "pingresp" }, () => portableEncoder.pingresp()),
};

function gen(packet: object, fallback: () => Uint8Array): Uint8Array {
  try {
    return mqttPacket.generate(packet as Packet);
  } catch {
    return fallback();
  }
}

function devicePacket(p: Packet): DevicePacket {
  switch (p.cmd) {
    case "connect":
      return { type: "connect", username: p.username ?? "" };
    case "subscribe":
      return { type: "subscribe", id: p.messageId, topic: p.subscriptions[0]?.topic };
    case "publish":
      return { type: "publish", topic: p.topic, qos: p.qos, id: p.messageId };
    case "puback":
      return { type: "puback", id: p.messageId };
    case "pingreq":
      return { type: "pingreq" };
    case "disconnect":
      return { type: "disconnect" };
    default:
      return { type: "other" };
  }
}

const fastPolicy: RuntimeConfig["retryPolicy"] = {
  backoff: { initialMs: 5, maxMs: 40 },
  longTail: { initialMs: 1000, maxMs: 1000 },
  retryAfter: { minMs: 0, maxMs: 50 },
  poll: { defaultMs: 10, minMs: 0, maxMs: 50 },
  hub: { windowMs: 0, stableMs: 300 },
  timeouts: { connectMs: 400, subscribeMs: 300, responseMs: 300, lookupMs: 300, ackMs: 300, holdConnectionMs: 0 },
};

test("Node adapter fuzz: DeviceRuntimes on NodeMqttConnector against a local TCP peer writing random, mutated and split MQTT frames; nothing escapes", async (t) => {
  const LIMIT = 300;
  const DEADLINE_MS = 15_000;
  const r = fuzzRandom(20260101);
  const escapes: string[] = [];
  const onUncaught = (error: unknown) => escapes.push(`uncaughtException: ${describeError(error)}`);
  const onRejection = (error: unknown) => escapes.push(`unhandledRejection: ${describeError(error)}`);
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onRejection);
  const notHandled: string[] = [];
  const problems: string[] = [];
  const serverSockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let connections = 0;
  let frames = 0;
  let closes = 0;
  let parserErrors = 0;
  let accepting = true;

  const server = net.createServer((socket) => {
    connections++;
    serverSockets.add(socket);
    socket.on("close", () => serverSockets.delete(socket));
    socket.on("error", () => {});
    if (!accepting) return void socket.destroy();
    const cloud = new FuzzCloud(r, "fast");
    const wire = new WireServer(r, cloud, mqttPacketEncoder, pick(r, [0, 0.05, 0.2, 0.5]));
    let last = Date.now();
    const perform = (actions: readonly WireAction[]) => {
      for (const a of actions) {
        // In order on the connection; world delays cut to at most 40 ms of real time.
        const at = Math.max(Date.now() + Math.min(a.delay, 40), last);
        last = at;
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (socket.destroyed) return;
          if ("close" in a) {
            closes++;
            if (r() < 0.5) socket.destroy();
            else socket.end();
          } else {
            frames++;
            socket.write(a.bytes);
          }
        }, at - Date.now());
        timers.add(timer);
      }
    };
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on("packet", (p: Packet) => {
      perform(wire.onPacket(devicePacket(p)));
      if (r() < 0.05) perform(wire.noise());
    });
    parser.on("error", () => {
      parserErrors++;
      socket.destroy();
    });
    socket.on("data", (chunk: Buffer) => parser.parse(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;

  /** One device: boots a DeviceRuntime, lets it run a while, stops it, boots again (the flash stays). */
  const device = async (slot: number): Promise<void> => {
    const flash = new MemoryFlash({ sectorSize: 4096, sectorCount: 2 });
    const inner = new NodeMqttConnector({ tls: false, resolve: () => ({ host: "127.0.0.1", port }), connectTimeoutMs: 500, maxPacketBytes: pick(r, [256, 4096, 128 * 1024]) });
    const mqtt: MqttConnector = {
      connect(options: MqttConnectOptions, callbacks: MqttSessionCallbacks): MqttSession {
        if (inner.openSessions > 0) problems.push(`device ${slot}: connect while ${inner.openSessions} session(s) are open`);
        return inner.connect(options, callbacks);
      },
    };
    const deviceTimers: TimerPort = createNodeTimers();
    while (accepting) {
      const config: RuntimeConfig = { idScope: "0ne00000001", registrationId: `dev-${slot}`, symmetricKey: "cGFzc3dvcmQ=", globalEndpoint: "dps.example", dpsPort: 1883, hub: { port: 1883, keepAliveSeconds: pick(r, [0, 1, 60]), maxQueue: 4 }, retryPolicy: fastPolicy };
      const runtime = new DeviceRuntime(config, {
        mqtt,
        timers: deviceTimers,
        clock: () => Date.now(),
        random: r,
        secureRandom,
        crypto: nodeCrypto,
        flash,
        log: (_level, message) => {
          if (message.startsWith("runtime: ")) notHandled.push(message);
        },
      }, (e) => {
        if (r() < 0.02) throw new Error("fuzz: the listener broke");
        if (e.source === "runtime" && e.state === "connected" && r() < 0.5) {
          try {
            runtime.send({ t: 21.5 });
          } catch {
            // QUEUE_FULL: fine
          }
        }
      });
      runtime.start();
      const life = 200 + int(r, 1500);
      const started = Date.now();
      while (accepting && Date.now() - started < life) {
        await new Promise((resolve) => setTimeout(resolve, 20 + int(r, 100)));
        const x = r();
        try {
          if (x < 0.3) runtime.send(r() < 0.5 ? { n: x } : "x".repeat(int(r, 300)));
          else if (x < 0.33) runtime.reprovision();
        } catch (error) {
          const code = (error as { code?: string }).code;
          if (code !== "QUEUE_FULL" && code !== "ILLEGAL_EVENT") problems.push(`device ${slot}: app call threw ${describeError(error)}`);
        }
      }
      runtime.stop();
      if (inner.openSessions !== 0) problems.push(`device ${slot}: ${inner.openSessions} session(s) open after stop()`);
    }
  };

  const began = Date.now();
  const devices = Array.from({ length: 12 }, (_, i) => device(i));
  while (connections < LIMIT && Date.now() - began < DEADLINE_MS) await new Promise((resolve) => setTimeout(resolve, 50));
  accepting = false;
  await Promise.all(devices);
  // Let what is in flight land, then the server stops by itself.
  await new Promise((resolve) => setTimeout(resolve, 100));
  for (const timer of timers) clearTimeout(timer);
  for (const socket of serverSockets) socket.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await new Promise((resolve) => setTimeout(resolve, 50));
  process.off("uncaughtException", onUncaught);
  process.off("unhandledRejection", onRejection);

  t.log(`${connections} connections, ${frames} frames or parts written, ${closes} closes by the peer, in ${Date.now() - began} ms`);
  t.deepEqual(escapes, [], "exceptions that escaped a host callback");
  t.deepEqual(notHandled, [], "events the machine threw on");
  t.deepEqual(problems, []);
  t.is(parserErrors, 0, "the device only wrote valid MQTT");
  t.true(connections >= 100, `only ${connections} connections`);
  t.true(frames > connections, "frames were written");
});
