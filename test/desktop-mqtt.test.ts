/**
 * NodeMqttConnector (hosts/desktop/mqtt.ts) against a real broker, Debian's mosquitto 2.0, started
 * here on loopback with a plain and a TLS listener (throwaway certificates from support/certs.ts),
 * and against small fake servers for what a good broker never does (garbage, silence, oversize),
 * and FrameLimiter, the oversize-PUBLISH skipper ahead of mqtt-packet's parser, on its own.
 *
 * Without mosquitto the broker tests are skipped, or fail when CI=true. Every wait is bounded.
 */
import test from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqttPacket, { type Packet } from "mqtt-packet";
import { FrameLimiter, NodeMqttConnector, type FrameSink } from "../hosts/desktop/mqtt.js";
import type { MqttConnectOptions, MqttSession, MqttSessionCallbacks, TransportFault } from "../modules/ports.js";
import { createTestCertificates, type TestCertificates } from "./support/certs.js";

// ---------------------------------------------------------------------------------------------
// Helpers

type SessionEvent =
  | { readonly type: "connack"; readonly returnCode: number; readonly sessionPresent: boolean }
  | { readonly type: "suback"; readonly packetId: number; readonly granted: readonly number[] }
  | { readonly type: "message"; readonly topic: string; readonly payload: Buffer; readonly oversize?: number }
  | { readonly type: "puback"; readonly packetId: number }
  | { readonly type: "close"; readonly fault: TransportFault };

/** Records a session's callbacks; notes any callback made synchronously inside a session call. */
class Recorder implements MqttSessionCallbacks {
  readonly events: SessionEvent[] = [];
  /** Callbacks that arrived while the test was inside connect/subscribe/publish. */
  synchronous = 0;
  #inside = false;
  #waiters: { match: (e: SessionEvent) => boolean; resolve: (e: SessionEvent) => void }[] = [];

  /** Runs a session call, flagging any callback it makes before returning. */
  call<T>(action: () => T): T {
    this.#inside = true;
    try {
      return action();
    } finally {
      this.#inside = false;
    }
  }

  onConnack(returnCode: number, sessionPresent: boolean): void {
    this.#push({ type: "connack", returnCode, sessionPresent });
  }
  onSuback(packetId: number, granted: readonly number[]): void {
    this.#push({ type: "suback", packetId, granted: [...granted] });
  }
  /** Called at the end of each onMessage (after it is recorded), for tests that act inside it. */
  inMessage: ((topic: string) => void) | undefined;
  onMessage(topic: string, payload: Uint8Array, oversize?: number): void {
    this.#push(oversize === undefined ? { type: "message", topic, payload: Buffer.from(payload) } : { type: "message", topic, payload: Buffer.from(payload), oversize });
    this.inMessage?.(topic);
  }
  onPuback(packetId: number): void {
    this.#push({ type: "puback", packetId });
  }
  onClose(fault: TransportFault): void {
    this.#push({ type: "close", fault });
  }

  /** Resolves with the first event (already recorded or to come) that matches; rejects after `ms`. */
  waitFor<E extends SessionEvent>(match: (e: SessionEvent) => e is E, ms: number, what: string): Promise<E>;
  waitFor(match: (e: SessionEvent) => boolean, ms: number, what: string): Promise<SessionEvent>;
  waitFor(match: (e: SessionEvent) => boolean, ms: number, what: string): Promise<SessionEvent> {
    const found = this.events.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve: (e: SessionEvent) => (clearTimeout(timer), resolve(e)) };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; events: ${describe(this.events)}`));
      }, ms);
      this.#waiters.push(waiter);
    });
  }

  connack(ms = 5000): Promise<Extract<SessionEvent, { type: "connack" }>> {
    return this.waitFor((e): e is Extract<SessionEvent, { type: "connack" }> => e.type === "connack", ms, "CONNACK");
  }

  closed(ms = 5000): Promise<Extract<SessionEvent, { type: "close" }>> {
    return this.waitFor((e): e is Extract<SessionEvent, { type: "close" }> => e.type === "close", ms, "onClose");
  }

  count(type: SessionEvent["type"]): number {
    return this.events.filter((e) => e.type === type).length;
  }

  #push(event: SessionEvent): void {
    if (this.#inside) this.synchronous++;
    this.events.push(event);
    for (const waiter of this.#waiters.filter((w) => w.match(event))) {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      waiter.resolve(event);
    }
  }
}

function describe(events: readonly SessionEvent[]): string {
  return JSON.stringify(events.map((e) => (e.type === "message" ? { ...e, payload: `<${e.payload.length} bytes>` } : e)));
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let clientCounter = 0;
function connectOptions(host: string, port: number, extra: Partial<MqttConnectOptions> = {}): MqttConnectOptions {
  return {
    host,
    port,
    clientId: `desktop-mqtt-test-${process.pid}-${++clientCounter}`,
    username: "test-user",
    password: "SharedAccessSignature sr=test&sig=not-a-real-signature&se=0",
    keepAliveSeconds: 30,
    cleanSession: true,
    ...extra,
  };
}

function open(connector: NodeMqttConnector, options: MqttConnectOptions): { session: MqttSession; recorder: Recorder } {
  const recorder = new Recorder();
  const session = recorder.call(() => connector.connect(options, recorder));
  return { session, recorder };
}

/** A port nothing listens on (taken from the OS, then released). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface FakeServer {
  readonly port: number;
  close(): Promise<void>;
}

/** A TCP server on loopback whose behaviour per connection is the test's; closes all its sockets. */
async function fakeServer(onConnection: (socket: net.Socket) => void): Promise<FakeServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy()); // the client under test resets it; nothing to learn
    onConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** CONNACK, accepted: 0x20, remaining length 2, flags 0, return code 0. */
const connackAccepted = Buffer.from([0x20, 0x02, 0x00, 0x00]);

// ---------------------------------------------------------------------------------------------
// The broker

function findMosquitto(): string | undefined {
  for (const candidate of ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/local/bin/mosquitto"]) {
    if (existsSync(candidate)) return candidate;
  }
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, "mosquitto"))) return join(dir, "mosquitto");
  }
  return undefined;
}

interface Broker {
  readonly port: number;
  readonly tlsPort: number;
  readonly process: ChildProcess;
  readonly dir: string;
  output: string;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => (socket.destroy(), resolve(false)));
  });
}

async function startBroker(binary: string, certs: TestCertificates): Promise<Broker> {
  const dir = mkdtempSync(join(tmpdir(), "dps-mosquitto-"));
  // mosquitto started as root drops to user `mosquitto`: everything it reads must be world-readable.
  chmodSync(dir, 0o755);
  const files = { ca: join(dir, "ca.pem"), cert: join(dir, "server.pem"), key: join(dir, "server-key.pem") };
  writeFileSync(files.ca, certs.caCert, { mode: 0o644 });
  writeFileSync(files.cert, certs.serverCert, { mode: 0o644 });
  writeFileSync(files.key, certs.serverKey, { mode: 0o644 });
  let lastOutput = "";
  for (let attempt = 0; attempt < 4; attempt++) {
    const port = await freePort();
    const tlsPort = await freePort();
    const config = join(dir, "mosquitto.conf");
    writeFileSync(
      config,
      [
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        `listener ${port} 127.0.0.1`,
        `listener ${tlsPort} 127.0.0.1`,
        `cafile ${files.ca}`,
        `certfile ${files.cert}`,
        `keyfile ${files.key}`,
        "",
      ].join("\n"),
      { mode: 0o644 },
    );
    const child = spawn(binary, ["-c", config], { stdio: ["ignore", "ignore", "pipe"] });
    const broker: Broker = { port, tlsPort, process: child, dir, output: "" };
    child.stderr?.on("data", (chunk: Buffer) => {
      if (broker.output.length < 20_000) broker.output += chunk.toString("utf8");
    });
    let exited = false;
    child.once("exit", () => (exited = true));
    child.once("error", (error) => ((exited = true), (broker.output += String(error))));
    const deadline = Date.now() + 5000;
    while (!exited && Date.now() < deadline) {
      if ((await canConnect(port)) && (await canConnect(tlsPort))) return broker;
      await delay(50);
    }
    lastOutput = broker.output;
    await stopBroker(broker, false);
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`mosquitto did not start (four attempts); its last output:\n${lastOutput}`);
}

async function stopBroker(broker: Broker, removeDir = true): Promise<void> {
  const child = broker.process;
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    process.kill(child.pid, "SIGTERM");
    await Promise.race([exited, delay(3000)]);
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGKILL");
  }
  if (removeDir) rmSync(broker.dir, { recursive: true, force: true });
}

const mosquitto = findMosquitto();
const brokerTest = mosquitto ? test : test.skip;
if (!mosquitto && process.env.CI === "true") {
  test("mosquitto is installed (the broker tests need it)", (t) => {
    t.fail("mosquitto was not found: `npm test` installs it as root (scripts/setup.mjs), or run apt-get install mosquitto");
  });
}

const certs = await createTestCertificates({ dnsNames: ["hub-1.azure-devices.localhost"] });
const stranger = await createTestCertificates({ caName: "an untrusted test CA" });
let broker: Broker | undefined;

test.before(async () => {
  if (mosquitto) broker = await startBroker(mosquitto, certs);
});

test.after.always(async () => {
  if (broker) await stopBroker(broker);
});

function theBroker(): Broker {
  if (!broker) throw new Error("the broker is not running");
  return broker;
}

const plain = new NodeMqttConnector({ tls: false });
const secure = new NodeMqttConnector({ ca: certs.caCert });

// ---------------------------------------------------------------------------------------------
// Tests

brokerTest("NodeMqttConnector TCP: CONNECT to mosquitto is accepted with CONNACK 0", async (t) => {
  const { session, recorder } = open(plain, connectOptions("127.0.0.1", theBroker().port));
  const connack = await recorder.connack();
  t.is(connack.returnCode, 0);
  t.false(connack.sessionPresent);
  session.close();
  t.is(recorder.synchronous, 0, "no callback inside connect()");
});

brokerTest("NodeMqttConnector TLS: CONNECT over TLS with the test CA trusted is accepted with CONNACK 0", async (t) => {
  const { session, recorder } = open(secure, connectOptions("localhost", theBroker().tlsPort));
  t.is((await recorder.connack()).returnCode, 0);
  session.close();
});

brokerTest("NodeMqttConnector TLS: a server certificate from an untrusted CA ends the session with fault tls", async (t) => {
  const connector = new NodeMqttConnector({ ca: stranger.caCert });
  const { recorder } = open(connector, connectOptions("localhost", theBroker().tlsPort));
  const closed = await recorder.closed();
  t.is(closed.fault.kind, "tls", closed.fault.message);
  t.is(recorder.count("connack"), 0);
  t.is(recorder.count("close"), 1);
  t.is(connector.openSessions, 0);
});

brokerTest("NodeMqttConnector TLS: TLS to the plain listener ends with fault tls", async (t) => {
  const { recorder } = open(secure, connectOptions("localhost", theBroker().port));
  const closed = await recorder.closed();
  t.is(closed.fault.kind, "tls", closed.fault.message);
});

brokerTest("NodeMqttConnector: subscribe and QoS 1 publish round trip; SUBACK and PUBACK carry the packet ids", async (t) => {
  const { session, recorder } = open(plain, connectOptions("127.0.0.1", theBroker().port));
  await recorder.connack();
  const topic = `test/${process.pid}/round-trip`;
  const subId = recorder.call(() => session.subscribe(topic, 1));
  const suback = await recorder.waitFor((e) => e.type === "suback", 5000, "SUBACK");
  t.deepEqual(suback, { type: "suback", packetId: subId, granted: [1] });
  const pubId = recorder.call(() => session.publish(topic, new TextEncoder().encode("hello"), 1));
  t.not(pubId, 0);
  t.not(pubId, subId);
  const puback = await recorder.waitFor((e) => e.type === "puback", 5000, "PUBACK");
  t.deepEqual(puback, { type: "puback", packetId: pubId });
  const message = await recorder.waitFor((e) => e.type === "message", 5000, "the message back");
  t.deepEqual(message, { type: "message", topic, payload: Buffer.from("hello") });
  t.is(recorder.call(() => session.publish(topic, new Uint8Array([1, 2, 3]), 0)), 0, "QoS 0 takes no packet id");
  await recorder.waitFor((e) => e.type === "message" && e.payload.length === 3, 5000, "the QoS 0 message back");
  session.close();
  t.is(recorder.synchronous, 0);
  t.is(recorder.count("close"), 0);
});

brokerTest("NodeMqttConnector: subscribe and publish issued before CONNACK are written after CONNECT, in order", async (t) => {
  for (const [connector, port, host] of [
    [plain, theBroker().port, "127.0.0.1"],
    [secure, theBroker().tlsPort, "localhost"],
  ] as const) {
    const { session, recorder } = open(connector, connectOptions(host, port));
    const topic = `test/${process.pid}/pipelined/${host}`;
    const subId = recorder.call(() => session.subscribe(topic, 1));
    const pubId = recorder.call(() => session.publish(topic, Buffer.from("early"), 1));
    t.deepEqual([subId, pubId], [1, 2], "packet ids start at 1");
    await recorder.waitFor((e) => e.type === "message", 5000, "the pipelined message");
    await recorder.waitFor((e) => e.type === "puback", 5000, "PUBACK of the pipelined publish");
    const types = recorder.events.map((e) => e.type);
    t.is(types[0], "connack");
    t.is(types[1], "suback", "the broker subscribed before it routed the publish");
    t.deepEqual(recorder.events.find((e) => e.type === "suback"), { type: "suback", packetId: subId, granted: [1] });
    t.deepEqual(recorder.events.find((e) => e.type === "puback"), { type: "puback", packetId: pubId });
    t.deepEqual(recorder.events.find((e) => e.type === "message"), { type: "message", topic, payload: Buffer.from("early") });
    t.is(recorder.synchronous, 0);
    session.close();
  }
});

test("NodeMqttConnector: a port nothing listens on ends with fault refused (TCP and TLS)", async (t) => {
  const port = await freePort();
  for (const connector of [plain, secure]) {
    const { recorder } = open(connector, connectOptions("127.0.0.1", port));
    const closed = await recorder.closed();
    t.is(closed.fault.kind, "refused", closed.fault.message);
    t.is(recorder.synchronous, 0, "the fault arrives from the event loop");
  }
});

test("NodeMqttConnector: a host name that does not resolve ends with fault dns", async (t) => {
  const { recorder } = open(plain, connectOptions("nonexistent.invalid", 1883));
  const closed = await recorder.closed(15_000);
  t.is(closed.fault.kind, "dns", closed.fault.message);
  t.is(recorder.count("close"), 1);
});

test("NodeMqttConnector: a resolver that throws ends with fault dns, from the event loop", async (t) => {
  const connector = new NodeMqttConnector({
    tls: false,
    resolve: (host) => {
      throw new Error(`no mapping for ${host}`);
    },
  });
  const { session, recorder } = open(connector, connectOptions("unknown.example", 8883));
  t.is(recorder.count("close"), 0);
  t.is(recorder.call(() => session.subscribe("a/b", 1)), 1, "a session not yet failed still takes calls");
  const closed = await recorder.closed();
  t.is(closed.fault.kind, "dns");
  t.regex(closed.fault.message, /unknown\.example/);
});

brokerTest("NodeMqttConnector resolve: a service name is mapped to loopback while TLS checks the service name", async (t) => {
  const asked: string[] = [];
  const connector = new NodeMqttConnector({
    ca: certs.caCert,
    resolve: (host, port) => {
      asked.push(`${host}:${port}`);
      return { host: "127.0.0.1", port: theBroker().tlsPort };
    },
  });
  const good = open(connector, connectOptions("hub-1.azure-devices.localhost", 8883));
  t.is((await good.recorder.connack()).returnCode, 0);
  good.session.close();
  // Same socket destination, but a service name the certificate does not carry: the name check
  // must use the service name, not the address the socket went to.
  const wrong = open(connector, connectOptions("hub-2.azure-devices.example", 8883));
  const closed = await wrong.recorder.closed();
  t.is(closed.fault.kind, "tls", closed.fault.message);
  t.deepEqual(asked, ["hub-1.azure-devices.localhost:8883", "hub-2.azure-devices.example:8883"]);
});

brokerTest("NodeMqttConnector close: idempotent, methods after it do nothing, and onClose never follows it", async (t) => {
  const connector = new NodeMqttConnector({ tls: false });
  const { session, recorder } = open(connector, connectOptions("127.0.0.1", theBroker().port));
  await recorder.connack();
  t.is(connector.openSessions, 1);
  session.close();
  session.close();
  t.is(connector.openSessions, 0);
  t.is(session.subscribe("a/b", 1), 0);
  t.is(session.publish("a/b", new Uint8Array(1), 1), 0);
  session.close();
  await delay(300);
  t.is(recorder.count("close"), 0);
  // Closing before the socket even connects is as quiet.
  const early = open(connector, connectOptions("127.0.0.1", theBroker().port));
  early.session.close();
  await delay(300);
  t.deepEqual(early.recorder.events, []);
});

brokerTest("NodeMqttConnector: the broker dropping the session (same client id taken over) gives onClose closed", async (t) => {
  const options = connectOptions("127.0.0.1", theBroker().port);
  const first = open(plain, options);
  await first.recorder.connack();
  const second = open(plain, options);
  await second.recorder.connack();
  const closed = await first.recorder.closed();
  t.is(closed.fault.kind, "closed", closed.fault.message);
  await delay(100);
  t.is(first.recorder.count("close"), 1, "onClose exactly once");
  t.is(second.recorder.count("close"), 0);
  second.session.close();
});

brokerTest("NodeMqttConnector keepalive: PINGREQ keeps an idle 1 s keepalive session open for 3 s", async (t) => {
  const { session, recorder } = open(plain, connectOptions("127.0.0.1", theBroker().port, { keepAliveSeconds: 1 }));
  await recorder.connack();
  // mosquitto drops a client silent for 1.5 keepalives; only PINGREQs can keep this one.
  await delay(3200);
  t.is(recorder.count("close"), 0, describe(recorder.events));
  const topic = `test/${process.pid}/keepalive`;
  session.subscribe(topic, 1);
  const pubId = session.publish(topic, Buffer.from("still here"), 1);
  await recorder.waitFor((e) => e.type === "puback" && e.packetId === pubId, 5000, "PUBACK after the idle time");
  session.close();
});

test("NodeMqttConnector keepalive: no PINGRESP within half a keepalive ends with fault timeout", async (t) => {
  let pings = 0;
  const server = await fakeServer((socket) => {
    socket.once("data", () => socket.write(connackAccepted));
    socket.on("data", (chunk) => {
      if (chunk[0] === 0xc0) pings++; // PINGREQ, never answered
    });
  });
  try {
    const { recorder } = open(plain, connectOptions("127.0.0.1", server.port, { keepAliveSeconds: 1 }));
    await recorder.connack();
    const closed = await recorder.closed(6000);
    t.is(closed.fault.kind, "timeout", closed.fault.message);
    t.true(pings >= 1, "a PINGREQ was sent");
  } finally {
    await server.close();
  }
});

test("NodeMqttConnector: no CONNACK within connectTimeoutMs ends with fault timeout", async (t) => {
  const server = await fakeServer(() => undefined);
  try {
    const connector = new NodeMqttConnector({ tls: false, connectTimeoutMs: 300 });
    const { recorder } = open(connector, connectOptions("127.0.0.1", server.port));
    const closed = await recorder.closed(5000);
    t.is(closed.fault.kind, "timeout", closed.fault.message);
  } finally {
    await server.close();
  }
});

brokerTest("NodeMqttConnector: a malformed packet from the server ends that session only, with fault protocol", async (t) => {
  // A CONNACK whose reserved flag bits are set ([MQTT-3.2.2-1]), then bytes that are not MQTT.
  const server = await fakeServer((socket) => socket.write(Buffer.from([0x20, 0x02, 0xfe, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff])));
  try {
    const healthy = open(plain, connectOptions("127.0.0.1", theBroker().port));
    await healthy.recorder.connack();
    const broken = open(plain, connectOptions("127.0.0.1", server.port));
    const closed = await broken.recorder.closed();
    t.is(closed.fault.kind, "protocol", closed.fault.message);
    t.is(broken.recorder.count("connack"), 0);
    const topic = `test/${process.pid}/healthy`;
    healthy.session.subscribe(topic, 1);
    const pubId = healthy.session.publish(topic, Buffer.from("fine"), 1);
    await healthy.recorder.waitFor((e) => e.type === "puback" && e.packetId === pubId, 5000, "PUBACK on the healthy session");
    t.is(healthy.recorder.count("close"), 0);
    healthy.session.close();
  } finally {
    await server.close();
  }
});

test("NodeMqttConnector: a packet other than CONNACK first ends with fault protocol", async (t) => {
  // SUBACK, packet id 1, granted QoS 1: well formed, but not allowed before CONNACK ([MQTT-3.2.0-1]).
  const server = await fakeServer((socket) => socket.write(Buffer.from([0x90, 0x03, 0x00, 0x01, 0x01])));
  try {
    const { recorder } = open(plain, connectOptions("127.0.0.1", server.port));
    const closed = await recorder.closed();
    t.is(closed.fault.kind, "protocol", closed.fault.message);
    t.is(recorder.count("suback"), 0);
  } finally {
    await server.close();
  }
});

brokerTest("NodeMqttConnector: a 64 KiB PUBLISH over the session's 8 KiB maxPacketBytes reaches onMessage as topic, empty payload and size; the session stays open, the next message arrives whole, both are PUBACKed", async (t) => {
  // The connector's own default is 128 KiB; the session asks for 8 KiB, as a hub session may.
  const topic = `test/${process.pid}/oversize`;
  const options = connectOptions("127.0.0.1", theBroker().port, { maxPacketBytes: 8192, cleanSession: false });
  const receiver = open(plain, options);
  await receiver.recorder.connack();
  const subId = receiver.session.subscribe(topic, 1);
  await receiver.recorder.waitFor((e) => e.type === "suback" && e.packetId === subId, 5000, "SUBACK");

  const sender = open(plain, connectOptions("127.0.0.1", theBroker().port));
  await sender.recorder.connack();
  const bigId = sender.session.publish(topic, Buffer.alloc(64 * 1024, 2), 1);
  const smallId = sender.session.publish(topic, Buffer.from("after"), 1);
  await receiver.recorder.waitFor((e) => e.type === "message" && e.payload.toString() === "after", 5000, "the small message after the big one");
  // What mosquitto sends: the same PUBLISH at QoS 1 with a packet id of its own.
  const size = mqttPacket.generate({ cmd: "publish", topic, payload: Buffer.alloc(64 * 1024), qos: 1, messageId: 1, dup: false, retain: false }).length;
  t.deepEqual(
    receiver.recorder.events.filter((e) => e.type === "message"),
    [
      { type: "message", topic, payload: Buffer.alloc(0), oversize: size },
      { type: "message", topic, payload: Buffer.from("after") },
    ],
  );
  t.is(size, 65_536 + topic.length + 8, "fixed header (4), topic length (2), topic, packet id (2), payload");
  await sender.recorder.waitFor((e) => e.type === "puback" && e.packetId === bigId, 5000, "PUBACK of the big one to the sender");
  await sender.recorder.waitFor((e) => e.type === "puback" && e.packetId === smallId, 5000, "PUBACK of the small one to the sender");
  t.is(receiver.recorder.count("close"), 0, "the session stayed open");
  t.is(sender.recorder.count("close"), 0);
  receiver.session.close();
  sender.session.close();

  // Both were PUBACKed: the stored session has nothing to redeliver.
  const again = open(plain, options);
  t.true((await again.recorder.connack()).sessionPresent);
  await delay(500);
  t.is(again.recorder.count("message"), 0, describe(again.recorder.events));
  again.session.close();
});

brokerTest("NodeMqttConnector: a QoS 1 message the core closes the session on inside onMessage is not PUBACKed: mosquitto redelivers it to the next session (cleanSession false)", async (t) => {
  const topic = `test/${process.pid}/redelivered`;
  const options = connectOptions("127.0.0.1", theBroker().port, { cleanSession: false });
  const first = open(plain, options);
  await first.recorder.connack();
  const subId = first.session.subscribe(topic, 1);
  await first.recorder.waitFor((e) => e.type === "suback" && e.packetId === subId, 5000, "SUBACK");
  first.recorder.inMessage = () => first.session.close();

  const sender = open(plain, connectOptions("127.0.0.1", theBroker().port));
  await sender.recorder.connack();
  sender.session.publish(topic, Buffer.from("deliver me twice"), 1);
  await first.recorder.waitFor((e) => e.type === "message", 5000, "the message, once");
  sender.session.close();

  const second = open(plain, options);
  t.true((await second.recorder.connack()).sessionPresent);
  const again = await second.recorder.waitFor((e) => e.type === "message", 5000, "the message redelivered");
  t.deepEqual(again, { type: "message", topic, payload: Buffer.from("deliver me twice") });
  t.is(first.recorder.count("close"), 0, "onClose never follows the core's own close()");
  second.session.close();
});

/** A fake broker: CONNACK to CONNECT, then `script` on each connection; records what the device sends. */
async function scriptedServer(script: (socket: net.Socket, connection: number) => void): Promise<FakeServer & { readonly received: Packet[][] }> {
  const received: Packet[][] = [];
  const server = await fakeServer((socket) => {
    const packets: Packet[] = [];
    const connection = received.push(packets) - 1;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on("packet", (packet: Packet) => {
      packets.push(packet);
      if (packet.cmd === "connect") {
        socket.write(connackAccepted);
        script(socket, connection);
      }
    });
    socket.on("data", (chunk: Buffer) => parser.parse(chunk));
  });
  return { ...server, received };
}

function publishPacket(topic: string, payload: Buffer, qos: 0 | 1, messageId = 0): Buffer {
  return mqttPacket.generate({ cmd: "publish", topic, payload, qos, messageId, dup: false, retain: false });
}

async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await delay(10);
  }
}

test("NodeMqttConnector: onMessage comes before the PUBACK: a session closed inside onMessage sends none, a throw inside it sends none and ends nothing, the next message is PUBACKed", async (t) => {
  const server = await scriptedServer((socket, connection) => {
    if (connection === 0) socket.write(publishPacket("down/close", Buffer.from("closed inside"), 1, 7));
    else socket.write(Buffer.concat([publishPacket("down/throw", Buffer.from("thrown on"), 1, 8), publishPacket("down/fine", Buffer.from("fine"), 1, 9)]));
  });
  try {
    const closing = open(plain, connectOptions("127.0.0.1", server.port));
    closing.recorder.inMessage = () => closing.session.close();
    await closing.recorder.waitFor((e) => e.type === "message", 5000, "the PUBLISH");
    await until(() => server.received[0]?.some((p) => p.cmd === "disconnect") === true, 5000, "DISCONNECT");
    t.deepEqual(server.received[0].map((p) => p.cmd), ["connect", "disconnect"], "no PUBACK for a message the core closed the session on");

    const throwing = open(plain, connectOptions("127.0.0.1", server.port));
    throwing.recorder.inMessage = (topic) => {
      if (topic === "down/throw") throw new Error("the core broke");
    };
    await throwing.recorder.waitFor((e) => e.type === "message" && e.topic === "down/fine", 5000, "the message after the throw");
    await until(() => server.received[1]?.some((p) => p.cmd === "puback") === true, 5000, "PUBACK");
    await delay(100);
    t.deepEqual(server.received[1].map((p) => [p.cmd, p.messageId]), [["connect", undefined], ["puback", 9]], "PUBACK for 9 only");
    t.is(throwing.recorder.count("close"), 0, "the session stayed open");
    throwing.session.close();
  } finally {
    await server.close();
  }
});

test("NodeMqttConnector: an oversize PUBLISH written in pieces between small ones: each arrives in order, the big one without payload, and all three are PUBACKed", async (t) => {
  const before = publishPacket("down/before", Buffer.from("one"), 1, 1);
  const big = publishPacket("down/big", Buffer.alloc(20_000, 0x5a), 1, 2);
  const after = publishPacket("down/after", Buffer.from("three"), 1, 3);
  const server = await scriptedServer((socket) => {
    // The small one and the big one's first bytes in one write, the rest in pieces, the last with the small one after.
    void (async () => {
      socket.write(Buffer.concat([before, big.subarray(0, 3)]));
      for (let at = 3; at < big.length - 10; at += 4096) {
        await delay(5);
        socket.write(big.subarray(at, Math.min(at + 4096, big.length - 10)));
      }
      await delay(5);
      socket.write(Buffer.concat([big.subarray(big.length - 10), after]));
    })();
  });
  try {
    const { session, recorder } = open(plain, connectOptions("127.0.0.1", server.port, { maxPacketBytes: 1024 }));
    await recorder.waitFor((e) => e.type === "message" && e.topic === "down/after", 5000, "the message after the big one");
    t.deepEqual(
      recorder.events.filter((e) => e.type === "message"),
      [
        { type: "message", topic: "down/before", payload: Buffer.from("one") },
        { type: "message", topic: "down/big", payload: Buffer.alloc(0), oversize: big.length },
        { type: "message", topic: "down/after", payload: Buffer.from("three") },
      ],
    );
    await until(() => server.received[0].filter((p) => p.cmd === "puback").length === 3, 5000, "three PUBACKs");
    t.deepEqual(server.received[0].filter((p) => p.cmd === "puback").map((p) => p.messageId), [1, 2, 3]);
    t.is(recorder.count("close"), 0);
    session.close();
  } finally {
    await server.close();
  }
});

test("NodeMqttConnector: an oversize packet that is not a PUBLISH (a SUBACK of 2,000 codes), or a PUBLISH whose topic alone is over maxPacketBytes, still ends with fault oversize", async (t) => {
  const suback = mqttPacket.generate({ cmd: "suback", messageId: 1, granted: new Array(2000).fill(1) });
  const longTopic = publishPacket("t/".repeat(600), Buffer.from("x"), 1, 4);
  const server = await scriptedServer((socket, connection) => socket.write(connection === 0 ? suback : longTopic));
  try {
    const first = open(plain, connectOptions("127.0.0.1", server.port, { maxPacketBytes: 1024 }));
    const closed = await first.recorder.closed();
    t.is(closed.fault.kind, "oversize", closed.fault.message);
    t.is(closed.fault.message, `an incoming packet of ${suback.length} bytes, over the 1024-byte limit`);
    const second = open(plain, connectOptions("127.0.0.1", server.port, { maxPacketBytes: 1024 }));
    const closedToo = await second.recorder.closed();
    t.is(closedToo.fault.kind, "oversize", closedToo.fault.message);
    t.is(closedToo.fault.message, `an incoming PUBLISH of ${longTopic.length} bytes whose topic alone takes ${longTopic.length - 1}, over the 1024-byte limit`);
    t.is(second.recorder.count("message"), 0);
  } finally {
    await server.close();
  }
});

// ---- FrameLimiter on its own -------------------------------------------------------------------

/** Runs `chunks` through a FrameLimiter and mqtt-packet's parser; returns what came out, in order. */
function limited(limit: number, chunks: readonly Buffer[]): string[] {
  const log: string[] = [];
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  parser.on("packet", (p: Packet) => {
    if (p.cmd === "publish") log.push(`publish ${p.topic} qos=${p.qos} id=${p.messageId ?? 0} ${Buffer.from(p.payload).toString()}`);
    else log.push(`${p.cmd}${"messageId" in p && p.messageId !== undefined ? ` id=${p.messageId}` : ""}`);
  });
  parser.on("error", (error: Error) => log.push(`parse error: ${error.message}`));
  const sink: FrameSink = {
    bytes: (bytes) => parser.parse(bytes),
    oversizePublish: (topic, qos, packetId, size) => log.push(`oversize ${topic} qos=${qos} id=${packetId} size=${size}`),
  };
  const limiter = new FrameLimiter(limit);
  for (const chunk of chunks) {
    const fault = limiter.push(chunk, sink);
    if (fault) {
      log.push(`fault ${fault.kind}: ${fault.message}`);
      break;
    }
  }
  return log;
}

test("FrameLimiter: oversize PUBLISHes among other packets, whole, byte by byte and split at every byte boundary: the others reach the parser intact and in order, the big ones as topic, QoS, id and size", (t) => {
  const bigQos1 = publishPacket("devices/d1/messages/devicebound/x", Buffer.alloc(300, 0x41), 1, 6);
  const bigQos0 = publishPacket("q", Buffer.alloc(100, 0x42), 0);
  const stream = Buffer.concat([
    publishPacket("t/a", Buffer.from("before"), 1, 5),
    Buffer.from([0xd0, 0x00]), // PINGRESP
    bigQos1,
    mqttPacket.generate({ cmd: "suback", messageId: 2, granted: [1] }),
    publishPacket("t/b", Buffer.from("after"), 0),
    bigQos0,
    Buffer.from([0xd0, 0x00]),
  ]);
  const expected = [
    "publish t/a qos=1 id=5 before",
    "pingresp",
    `oversize devices/d1/messages/devicebound/x qos=1 id=6 size=${bigQos1.length}`,
    "suback id=2",
    "publish t/b qos=0 id=0 after",
    `oversize q qos=0 id=0 size=${bigQos0.length}`,
    "pingresp",
  ];
  t.deepEqual(limited(64, [stream]), expected, "whole");
  t.deepEqual(limited(64, Array.from(stream, (b) => Buffer.from([b]))), expected, "byte by byte");
  for (let cut = 1; cut < stream.length; cut++) {
    const log = limited(64, [stream.subarray(0, cut), stream.subarray(cut)]);
    if (JSON.stringify(log) !== JSON.stringify(expected)) return void t.deepEqual(log, expected, `split at byte ${cut}`);
  }
  t.pass(`split at each of ${stream.length - 1} boundaries`);
});

test("FrameLimiter: a PUBLISH announcing the largest remaining length (268,435,455) is swallowed 1 MiB at a time, then parsing resumes", (t) => {
  const topic = Buffer.from("devices/d1/messages/devicebound/");
  // 0x32: PUBLISH QoS 1; ff ff ff 7f: remaining length 268,435,455 ([MQTT-2.2.3]).
  const head = Buffer.concat([Buffer.from([0x32, 0xff, 0xff, 0xff, 0x7f, 0x00, topic.length]), topic, Buffer.from([0x12, 0x34])]);
  let payload = 268_435_455 - (head.length - 5);
  const block = Buffer.alloc(1024 * 1024);
  const chunks: Buffer[] = [head];
  for (; payload > block.length; payload -= block.length) chunks.push(block);
  chunks.push(Buffer.concat([block.subarray(0, payload), Buffer.from([0xd0, 0x00])]));
  t.deepEqual(limited(8192, chunks), [`oversize ${topic} qos=1 id=${0x1234} size=268435460`, "pingresp"]);
});

test("FrameLimiter: refuses what it cannot skip: another type or a topic over the limit is oversize; a five-byte length, QoS 3, a topic not UTF-8 are protocol", (t) => {
  t.deepEqual(limited(16, [Buffer.concat([Buffer.from([0x90, 0x14, 0, 1]), Buffer.alloc(18, 1)])]), ["fault oversize: an incoming packet of 22 bytes, over the 16-byte limit"]);
  t.deepEqual(limited(16, [publishPacket("a/long/topic/name", Buffer.from("x"), 0)]), ["fault oversize: an incoming PUBLISH of 22 bytes whose topic alone takes 21, over the 16-byte limit"]);
  t.deepEqual(limited(16, [Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])]), ["fault protocol: malformed remaining length (more than four bytes) [MQTT-2.2.3]"]);
  t.deepEqual(limited(16, [Buffer.from([0x36, 0x20, 0x00, 0x01, 0x61])]), ["fault protocol: PUBLISH with QoS 3 [MQTT-3.3.1-4]"]);
  t.deepEqual(limited(16, [Buffer.from([0x30, 0x20, 0x00, 0x02, 0xc3, 0x28])]), ["fault protocol: PUBLISH topic is not valid UTF-8 [MQTT-1.5.3-1]"]);
  // Exactly at the limit is handed on whole.
  const exact = publishPacket("t", Buffer.alloc(11, 0x43), 0);
  t.is(exact.length, 16);
  t.deepEqual(limited(16, [exact]), [`publish t qos=0 id=0 ${"C".repeat(11)}`]);
});

test("NodeMqttConnector: CONNECT carries the options, an incoming QoS 1 PUBLISH is PUBACKed, close() sends DISCONNECT", async (t) => {
  const received: Packet[] = [];
  let ended!: () => void;
  const serverSawEnd = new Promise<void>((resolve) => (ended = resolve));
  const server = await fakeServer((socket) => {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on("packet", (packet: Packet) => {
      received.push(packet);
      if (packet.cmd === "connect") {
        socket.write(connackAccepted);
        socket.write(mqttPacket.generate({ cmd: "publish", topic: "down/1", payload: Buffer.from("to the device"), qos: 1, messageId: 7, dup: false, retain: false }));
      }
    });
    socket.on("data", (chunk: Buffer) => parser.parse(chunk));
    socket.on("end", () => ended());
  });
  try {
    const options = connectOptions("127.0.0.1", server.port, { keepAliveSeconds: 45, cleanSession: false });
    const { session, recorder } = open(plain, options);
    const message = await recorder.waitFor((e) => e.type === "message", 5000, "the PUBLISH from the server");
    t.deepEqual(message, { type: "message", topic: "down/1", payload: Buffer.from("to the device") });
    const deadline = Date.now() + 5000;
    while (!received.some((p) => p.cmd === "puback") && Date.now() < deadline) await delay(10);
    session.close();
    await Promise.race([serverSawEnd, delay(5000)]);
    const connect = received[0];
    t.is(connect?.cmd, "connect");
    if (connect?.cmd === "connect") {
      t.is(connect.protocolVersion, 4);
      t.is(connect.protocolId, "MQTT");
      t.is(connect.clientId, options.clientId);
      t.is(connect.username, options.username);
      t.is(connect.password?.toString("utf8"), options.password);
      t.is(connect.keepalive, 45);
      t.false(connect.clean);
    }
    t.deepEqual(
      received.slice(1).map((p) => [p.cmd, p.messageId]),
      [
        ["puback", 7],
        ["disconnect", undefined],
      ],
    );
    t.is(recorder.count("close"), 0);
  } finally {
    await server.close();
  }
});

test("NodeMqttConnector: packet ids run 1..65535 and wrap to 1, never 0", async (t) => {
  const server = await fakeServer((socket) => {
    socket.once("data", () => socket.write(connackAccepted));
    socket.resume();
  });
  try {
    const { session, recorder } = open(plain, connectOptions("127.0.0.1", server.port));
    await recorder.connack();
    const ids: number[] = [];
    const payload = new Uint8Array(0);
    for (let i = 0; i < 65_537; i++) {
      ids.push(session.publish("t", payload, 1));
      if (i % 4096 === 0) await delay(0); // let the socket drain
    }
    t.deepEqual(ids.slice(0, 2), [1, 2]);
    t.deepEqual(ids.slice(65_533), [65_534, 65_535, 1, 2]);
    t.true(ids.every((id, i) => id === (i % 65_535) + 1), "consecutive, wrapping after 65535, never 0");
    session.close();
  } finally {
    await server.close();
  }
});

test("NodeMqttConnector: invalid arguments are the caller's mistake (UsageError), not faults", (t) => {
  const recorder = new Recorder();
  t.throws(() => plain.connect(connectOptions("", 1883), recorder), { name: "UsageError" });
  t.throws(() => plain.connect(connectOptions("127.0.0.1", 0), recorder), { name: "UsageError" });
  t.throws(() => plain.connect(connectOptions("127.0.0.1", 1883, { keepAliveSeconds: 70_000 }), recorder), { name: "UsageError" });
  t.throws(() => new NodeMqttConnector({ maxPacketBytes: 0 }), { name: "UsageError" });
});
