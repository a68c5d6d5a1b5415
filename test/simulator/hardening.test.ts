// The emulator's MQTT listeners under hostile clients: the connection cap, the per-connection packet
// budget, the deadline of a packet under way, the idle limit of keep-alive 0 and the TLS handshake
// deadline (simulator/limits.ts), each with real sockets on 127.0.0.1 and limits small enough that
// every scenario ends in a few seconds, and a device that is still served while a flood is on.
import test from "ava";
import { rmSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { generate } from "mqtt-packet";
import { startEmulator } from "../../simulator/index.js";
import { DEFAULT_LIMITS, PacketFrame } from "../../simulator/limits.js";
import { dpsToken, hubConnect, keyFor, provision, RawClient, sleep, tempStateDir, withEmulator, HUB_1 } from "./helpers.js";

type Em = Awaited<ReturnType<typeof withEmulator>>;
const stateDir = tempStateDir();
test.after.always(() => rmSync(stateDir, { recursive: true, force: true }));

/** Resolves true once `ready()` holds, false after `ms`. */
async function within(ms: number, ready: () => boolean): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (ready()) return true;
    await sleep(20);
  }
  return ready();
}

/** Whether `closed` settles within `ms`. */
function closesWithin(closed: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([closed.then(() => true), sleep(ms).then(() => false)]);
}

/** A plain socket to a port, with a promise of its close (errors swallowed: the server is expected to cut it). */
function rawSocket(port: number): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    const closed = new Promise<void>((r) => socket.once("close", () => r()));
    socket.on("error", () => {});
    socket.once("connect", () => resolve({ socket, closed }));
    closed.then(() => reject(new Error("closed before connecting")));
  });
}

/** MQTT's remaining length: 7 bits a byte, least significant first. */
function remainingLength(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

/** The first `sent` bytes of a QoS 0 PUBLISH whose body is `bodyBytes` long (the fixed header declares the whole). */
function partialPublish(topic: string, bodyBytes: number, sent: number): Buffer {
  const name = Buffer.from(topic);
  const header = Buffer.from([0x30, ...remainingLength(2 + name.length + bodyBytes), name.length >> 8, name.length & 0xff]);
  return Buffer.concat([header, name, Buffer.alloc(Math.max(0, sent - header.length - name.length), 0x61)]);
}

/** A DPS connection accepted with this keep-alive (DPS takes the CONNECT and checks the token on requests). */
async function dpsConnected(em: Em, id: string, options: { keepalive: number; tls?: boolean }): Promise<RawClient> {
  const client = options.tls ? await RawClient.open(em.endpoints.dps.tlsPort, { tls: { ca: em.caPem } }) : await RawClient.open(em.endpoints.dps.tcpPort);
  const connack = await client.connect({
    clientId: id,
    username: `${em.idScope}/registrations/${id}/api-version=2019-03-31`,
    password: dpsToken(id, keyFor(id), { idScope: em.idScope }),
    keepalive: options.keepalive,
  });
  if (connack.returnCode !== 0) throw new Error(`CONNACK ${connack.returnCode}`);
  return client;
}

/** Enrolls a device on HUB_1 and provisions it; returns its key. */
async function provisioned(em: Em, id: string): Promise<string> {
  em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id), iotHubHostName: HUB_1 });
  const answer = await provision(em, id, keyFor(id));
  if (answer.json?.status !== "assigned") throw new Error(`not assigned: ${answer.text}`);
  return keyFor(id);
}

test("hardening: PacketFrame finds the same boundaries whole and split byte by byte, and the declared size at the header", (t) => {
  const packets = [
    generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: "d", keepalive: 0 }),
    generate({ cmd: "publish", topic: "devices/d/messages/events/", payload: Buffer.alloc(20_000), qos: 1, messageId: 1, retain: false, dup: false }),
    generate({ cmd: "pingreq" }),
  ];
  const whole = new PacketFrame();
  t.is(whole.feed(Buffer.concat(packets)), 3);
  t.false(whole.pending);
  const split = new PacketFrame();
  let completed = 0;
  for (const byte of Buffer.concat([...packets, Buffer.from([0x30])])) completed += split.feed(Buffer.from([byte]));
  t.is(completed, 3);
  t.true(split.pending, "the trailing byte begins a fourth packet");
  const header = new PacketFrame();
  header.feed(partialPublish("t", 290 * 1024, 4));
  t.true(header.pending);
  t.is(header.packetBytes, 1 + 3 + 2 + 1 + 290 * 1024);
  const broken = new PacketFrame();
  broken.feed(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]));
  t.true(broken.broken);
});

test("hardening: startEmulator refuses a limit that is not a positive integer, naming it", async (t) => {
  for (const bad of [{ maxConnections: 0 }, { packetTimeoutMs: 1.5 }, { hubMaxPacketBytes: -1 }, { maxIdleMs: Number.NaN }]) {
    await t.throwsAsync(startEmulator({ stateDir, ...bad }), { message: new RegExp(`^${Object.keys(bad)[0]} must be a positive integer`) });
  }
  t.is(DEFAULT_LIMITS.maxIdleMs, 1_767_000);
});

test("hardening: over maxConnections a new socket is closed at once on TCP and TLS, counted, logged once per burst; one freed, a device is served", async (t) => {
  const logs: Record<string, unknown>[] = [];
  const em = await withEmulator({ stateDir, maxConnections: 6, connectTimeoutMs: 60_000, log: (e) => logs.push(e) });
  t.teardown(() => em.dispose());
  const held: RawClient[] = [];
  for (let i = 0; i < 3; i++) held.push(await RawClient.open(em.endpoints.dps.tcpPort), await RawClient.open(em.endpoints.hub.tcpPort));
  t.teardown(() => held.forEach((c) => c.end()));
  t.true(await within(2000, () => em.counters().connections === 6));

  const refused: Promise<boolean>[] = [];
  for (let i = 0; i < 4; i++) {
    const tcp = await rawSocket(em.endpoints.dps.tcpPort);
    refused.push(closesWithin(tcp.closed, 2000));
    refused.push(
      RawClient.open(em.endpoints.hub.tlsPort, { tls: { ca: em.caPem, servername: HUB_1 } }).then(
        (c) => (c.end(), false), // a handshake completed: the cap did not hold
        () => true,
      ),
    );
  }
  t.deepEqual(await Promise.all(refused), Array(8).fill(true));
  t.is(em.counters().dps["refused-connection-cap"], 4);
  t.is(em.counters().hub["refused-connection-cap"], 4);
  t.is(em.counters().connections, 6, "the held connections are untouched");
  t.is(logs.filter((e) => e.event === "connection-cap-reached").length, 1, "one line for the burst, not one per socket");
  t.true(await within(3000, () => logs.some((e) => e.event === "connection-cap-burst-ended")));
  t.like(logs.find((e) => e.event === "connection-cap-burst-ended"), { refused: 8, maxConnections: 6 });

  held.pop()!.end();
  t.true(await within(2000, () => em.counters().connections === 5));
  em.addIndividualEnrollment({ registrationId: "after-cap", primaryKey: keyFor("after-cap") });
  t.is((await provision(em, "after-cap", keyFor("after-cap"), { tls: true })).json.status, "assigned");
});

test("hardening: a packet declaring more than its listener's budget closes the connection at its header, before CONNECT too; within the budget it is served", async (t) => {
  const em = await withEmulator({ stateDir, dpsMaxPacketBytes: 4096, hubMaxPacketBytes: 64 * 1024 });
  t.teardown(() => em.dispose());
  // Before CONNECT: a CONNECT that declares 256 MB.
  const huge = await rawSocket(em.endpoints.dps.tcpPort);
  huge.socket.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
  t.true(await closesWithin(huge.closed, 2000));

  // DPS: a 3 KB register body is answered; a PUBLISH declaring 5 KB is cut at its first bytes.
  em.addIndividualEnrollment({ registrationId: "budget-dps", primaryKey: keyFor("budget-dps") });
  const dps = await dpsConnected(em, "budget-dps", { keepalive: 0 });
  await dps.subscribe("$dps/registrations/res/#");
  await dps.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", JSON.stringify({ registrationId: "budget-dps", payload: { pad: "x".repeat(3000) } }));
  t.regex((await dps.nextPublish()).topic, /^\$dps\/registrations\/res\/20[02]\//);
  dps.sendRaw(partialPublish("$dps/registrations/PUT/iotdps-register/?$rid=2", 5000, 64));
  t.true(await closesWithin(dps.closed, 2000));

  // Hub: the same PUBLISH is within its budget; one declaring 290 KB is cut.
  const key = await provisioned(em, "budget-hub");
  const { client: hub } = await hubConnect(em, HUB_1, "budget-hub", key, { keepalive: 0 });
  await hub.publish("devices/budget-hub/messages/events/", Buffer.alloc(5000, 0x62));
  hub.sendRaw(partialPublish("devices/budget-hub/messages/events/", 290 * 1024, 16 * 1024));
  t.true(await closesWithin(hub.closed, 2000));
  t.is(em.telemetry("budget-hub").length, 1);
  t.is(em.counters().dps["closed-packet-budget"], 2);
  t.is(em.counters().hub["closed-packet-budget"], 1);
});

test("hardening: 200 connections with keep-alive 0 each holding a partial 290 KB PUBLISH (DPS and hub, TCP and TLS) are all closed; the open count returns to 0", async (t) => {
  t.timeout(60_000);
  const em = await withEmulator({ stateDir }); // the default budgets: 100 KiB for DPS, 260 KiB for the hub
  t.teardown(() => em.dispose());
  const key = await provisioned(em, "flood-hub");
  const clients: RawClient[] = [];
  t.teardown(() => clients.forEach((c) => c.end()));
  for (let i = 0; i < 50; i++) {
    const tls = i % 2 === 1;
    const dps = await dpsConnected(em, `flood-dps-${i}`, { keepalive: 0, tls });
    const hub = (await hubConnect(em, HUB_1, "flood-hub", key, { keepalive: 0, tls })).client;
    const dps2 = await dpsConnected(em, `flood-dps-b${i}`, { keepalive: 0, tls: !tls });
    const hub2 = (await hubConnect(em, HUB_1, "flood-hub", key, { keepalive: 0, tls: !tls })).client;
    clients.push(dps, hub, dps2, hub2);
  }
  t.is(em.counters().connections, 200);
  for (const [i, c] of clients.entries()) {
    const topic = i % 2 === 0 ? "$dps/registrations/PUT/iotdps-register/?$rid=1" : "devices/flood-hub/messages/events/";
    c.sendRaw(partialPublish(topic, 290 * 1024, 64 * 1024));
  }
  t.true(await within(10_000, () => em.counters().connections === 0), `${em.counters().connections} still open`);
  t.true(await within(2000, () => clients.every((c) => c.isClosed)));
  t.is(em.counters().dps["closed-packet-budget"], 100);
  t.is(em.counters().hub["closed-packet-budget"], 100);
});

test("hardening: a PUBLISH sent a byte at a time is closed after packetTimeoutMs whatever the keep-alive; a stream of packets split across chunks is not", async (t) => {
  const em = await withEmulator({ stateDir, packetTimeoutMs: 500 });
  t.teardown(() => em.dispose());
  const drip = await dpsConnected(em, "drip", { keepalive: 60 });
  const steady = await dpsConnected(em, "steady", { keepalive: 60 });
  t.teardown(() => (drip.end(), steady.end()));
  const bytes = generate({ cmd: "publish", topic: "$dps/registrations/PUT/iotdps-register/?$rid=1", payload: Buffer.alloc(40, 0x20), qos: 0, retain: false, dup: false });
  let at = 0;
  const dripper = setInterval(() => drip.socket.writable && drip.sendRaw(bytes.subarray(at, ++at)), 50);
  // Every chunk ends inside a PINGREQ: the second byte of one and the first of the next.
  steady.sendRaw(Buffer.from([0xc0]));
  const pinger = setInterval(() => steady.socket.writable && steady.sendRaw(Buffer.from([0x00, 0xc0])), 50);
  t.teardown(() => (clearInterval(dripper), clearInterval(pinger)));
  t.true(await closesWithin(drip.closed, 2000), "the drip is cut");
  t.true(at < bytes.length, "before its packet was complete");
  t.false(steady.isClosed, "the split stream is not");
  t.is((await steady.next()).cmd, "pingresp");
  t.is(em.counters().dps["closed-packet-timeout"], 1);
});

test("hardening: keep-alive 0, or one above the cap, is closed after maxIdleMs of silence; traffic keeps it open", async (t) => {
  const em = await withEmulator({ stateDir, maxIdleMs: 400 });
  t.teardown(() => em.dispose());
  const key = await provisioned(em, "idle-hub");
  const silentDps = await dpsConnected(em, "idle-dps", { keepalive: 0 });
  const silentHub = (await hubConnect(em, HUB_1, "idle-hub", key, { keepalive: 65535, tls: true })).client;
  const chatty = await dpsConnected(em, "idle-chatty", { keepalive: 0 });
  t.teardown(() => [silentDps, silentHub, chatty].forEach((c) => c.end()));
  const pinger = setInterval(() => chatty.send({ cmd: "pingreq" }), 100);
  t.teardown(() => clearInterval(pinger));
  t.true(await closesWithin(silentDps.closed, 2000), "keep-alive 0");
  t.true(await closesWithin(silentHub.closed, 2000), "keep-alive 65535 s, over the cap");
  t.false(chatty.isClosed);
  t.is(em.counters().dps["closed-idle-timeout"], 1);
  t.is(em.counters().hub["closed-idle-timeout"], 1);
});

test("hardening: a TLS handshake not done within tlsHandshakeTimeoutMs is destroyed, silent or dripping, on DPS and hub; a normal one is served", async (t) => {
  const em = await withEmulator({ stateDir, tlsHandshakeTimeoutMs: 400 });
  t.teardown(() => em.dispose());
  const silent = await rawSocket(em.endpoints.dps.tlsPort);
  const drip = await rawSocket(em.endpoints.hub.tlsPort);
  t.teardown(() => (silent.socket.destroy(), drip.socket.destroy()));
  const record = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]; // the start of a ClientHello record
  let at = 0;
  const dripper = setInterval(() => at < record.length && drip.socket.write(Buffer.from([record[at++]])), 100);
  t.teardown(() => clearInterval(dripper));
  const started = Date.now();
  t.true(await closesWithin(silent.closed, 2000), "silent");
  t.true(await closesWithin(drip.closed, 2000), "dripping");
  t.true(Date.now() - started >= 350, "not before the deadline");
  t.is(em.counters().dps["closed-tls-handshake-timeout"], 1);
  t.is(em.counters().hub["closed-tls-handshake-timeout"], 1);
  em.addIndividualEnrollment({ registrationId: "tls-ok", primaryKey: keyFor("tls-ok") });
  t.is((await provision(em, "tls-ok", keyFor("tls-ok"), { tls: true })).json.status, "assigned");
});

test("hardening: devices register and send telemetry while a flood of partial packets, drips and silent handshakes is on", async (t) => {
  t.timeout(60_000);
  const em = await withEmulator({ stateDir, packetTimeoutMs: 600, tlsHandshakeTimeoutMs: 600, maxIdleMs: 600 });
  t.teardown(() => em.dispose());
  const key = await provisioned(em, "flood-good-hub");
  let flooding = true;
  const hostile: { destroy(): void }[] = [];
  t.teardown(() => hostile.forEach((s) => s.destroy()));
  const flood = (async () => {
    for (let wave = 0; flooding; wave++) {
      for (let i = 0; i < 10; i++) {
        const partial = await rawSocket(em.endpoints.hub.tcpPort);
        partial.socket.write(partialPublish("devices/x/messages/events/", 290 * 1024, 32 * 1024)); // before CONNECT
        const silentTls = await rawSocket(wave % 2 ? em.endpoints.dps.tlsPort : em.endpoints.hub.tlsPort);
        const idle = await dpsConnected(em, `flood-idle-${wave}-${i}`, { keepalive: 0 });
        idle.sendRaw(Buffer.from([0x30, 0x10])); // a PUBLISH that never finishes
        hostile.push(partial.socket, silentTls.socket, idle.socket);
      }
      await sleep(20);
    }
  })();
  try {
    for (let i = 0; i < 5; i++) {
      const id = `flood-good-${i}`;
      em.addIndividualEnrollment({ registrationId: id, primaryKey: keyFor(id) });
      t.is((await provision(em, id, keyFor(id), { tls: i % 2 === 0 })).json.status, "assigned", id);
      const { client, returnCode } = await hubConnect(em, HUB_1, "flood-good-hub", key, { tls: i % 2 === 1 });
      t.is(returnCode, 0);
      await client.publish("devices/flood-good-hub/messages/events/", Buffer.alloc(200 * 1024, 0x63));
      client.end();
      await sleep(100);
    }
  } finally {
    flooding = false;
    await flood;
  }
  t.is(em.telemetry("flood-good-hub").length, 5);
  t.true(hostile.length >= 30);
  t.true(await within(5000, () => em.counters().connections === 0), `${em.counters().connections} still open`);
  const { hub, dps } = em.counters();
  t.true(hub["closed-packet-budget"] > 0 && (dps["closed-packet-timeout"] ?? 0) > 0, JSON.stringify({ hub, dps }));
});
