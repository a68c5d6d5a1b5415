// Load generator for bench/emulator.ts, run as a child process so that its CPU is not the
// server's: lean MQTT clients (packets encoded by hand, replies framed with a few lines of code)
// that each run complete registrations (connect, subscribe, register, poll until 200,
// disconnect) one after the other, or open connections and leave them idle.
import { createHmac } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";

export interface LoadRequest {
  kind: "register" | "idle";
  host: string;
  port: number;
  tls: boolean;
  idScope: string;
  groupKey: string;
  /** register: registrations to complete; idle: connections to open. */
  count: number;
  concurrency: number;
  prefix: string;
}

export interface LoadResult {
  kind: LoadRequest["kind"];
  completed: number;
  failed: number;
  elapsedMs: number;
  firstError?: string;
}

function utf8(s: string): Buffer {
  return Buffer.from(s, "utf8");
}

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

function str(b: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

function connectPacket(clientId: string, username: string, password: string, keepalive: number): Buffer {
  const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0xc2, keepalive >> 8, keepalive & 255]);
  const payload = Buffer.concat([str(utf8(clientId)), str(utf8(username)), str(utf8(password))]);
  const body = Buffer.concat([variable, payload]);
  return Buffer.concat([Buffer.from([0x10, ...remainingLength(body.length)]), body]);
}

const SUBSCRIBE = (() => {
  const topic = str(utf8("$dps/registrations/res/#"));
  const body = Buffer.concat([Buffer.from([0x00, 0x01]), topic, Buffer.from([0x01])]);
  return Buffer.concat([Buffer.from([0x82, ...remainingLength(body.length)]), body]);
})();
const DISCONNECT = Buffer.from([0xe0, 0x00]);

function publishPacket(topic: string, payload: string, messageId: number): Buffer {
  const t = str(utf8(topic));
  const p = utf8(payload);
  const body = Buffer.concat([t, Buffer.from([messageId >> 8, messageId & 255]), p]);
  return Buffer.concat([Buffer.from([0x32, ...remainingLength(body.length)]), body]);
}

function puback(messageId: number): Buffer {
  return Buffer.from([0x40, 0x02, messageId >> 8, messageId & 255]);
}

function token(idScope: string, registrationId: string, deviceKey: Buffer): string {
  const sr = `${idScope}/registrations/${registrationId}`;
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sig = createHmac("sha256", deviceKey).update(`${sr}\n${se}`).digest("base64");
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=registration`;
}

/** Splits a byte stream into MQTT packets: calls `onPacket(type, body)` for each. */
class Framer {
  #pending: Buffer | undefined;
  constructor(private readonly onPacket: (type: number, flags: number, body: Buffer) => void) {}
  push(chunk: Buffer): void {
    let buf = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
    let offset = 0;
    for (;;) {
      if (buf.length - offset < 2) break;
      let multiplier = 1;
      let length = 0;
      let i = offset + 1;
      let complete = false;
      for (; i < buf.length && i < offset + 5; i++) {
        length += (buf[i] & 127) * multiplier;
        multiplier *= 128;
        if ((buf[i] & 128) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete || buf.length - i < length) break;
      this.onPacket(buf[offset] >> 4, buf[offset] & 15, buf.subarray(i, i + length));
      offset = i + length;
    }
    this.#pending = offset < buf.length ? Buffer.from(buf.subarray(offset)) : undefined;
    buf = Buffer.alloc(0);
  }
}

function open(req: LoadRequest, localAddress: string | undefined): Socket {
  const socket = req.tls
    ? tlsConnect({ host: req.host, port: req.port, rejectUnauthorized: false, localAddress } as import("node:tls").ConnectionOptions)
    : netConnect({ host: req.host, port: req.port, localAddress });
  socket.setNoDelay(true);
  return socket;
}

/** One complete registration on a fresh connection; resolves when assigned. */
function registerOnce(req: LoadRequest, registrationId: string, localAddress: string | undefined): Promise<void> {
  const deviceKey = createHmac("sha256", Buffer.from(req.groupKey, "base64")).update(registrationId).digest();
  const username = `${req.idScope}/registrations/${registrationId}/api-version=2019-03-31`;
  return new Promise((resolve, reject) => {
    const socket = open(req, localAddress);
    let messageId = 0;
    let done = false;
    const fail = (why: string): void => {
      if (done) return;
      done = true;
      socket.destroy();
      reject(new Error(why));
    };
    const framer = new Framer((type, flags, body) => {
      if (type === 2) {
        if (body[1] !== 0) return fail(`CONNACK ${body[1]}`);
        socket.write(SUBSCRIBE);
      } else if (type === 9) {
        socket.write(publishPacket("$dps/registrations/PUT/iotdps-register/?$rid=1", `{"registrationId":"${registrationId}"}`, ++messageId));
      } else if (type === 3) {
        const topicLength = body.readUInt16BE(0);
        const topic = body.toString("latin1", 2, 2 + topicLength);
        const qos = (flags >> 1) & 3;
        const payloadStart = 2 + topicLength + (qos > 0 ? 2 : 0);
        const ack = qos > 0 ? puback(body.readUInt16BE(2 + topicLength)) : undefined;
        const status = topic.slice(23, 26); // $dps/registrations/res/NNN/
        const payload = body.toString("utf8", payloadStart);
        if (status === "200") {
          if (ack) socket.write(ack);
          // DISCONNECT, then let the server close first: its side keeps the TIME_WAIT, not ours.
          done = true;
          socket.write(DISCONNECT);
          socket.once("close", () => resolve());
        } else if (status === "202") {
          const m = /"operationId":"([^"]+)"/.exec(payload);
          if (!m) return fail("202 without operationId");
          socket.write(ack ? Buffer.concat([ack, publishPacket(`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=${m[1]}`, " ", ++messageId)]) : publishPacket(`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=${m[1]}`, " ", ++messageId));
        } else {
          fail(`status ${status}: ${payload.slice(0, 120)}`);
        }
      }
    });
    socket.on(req.tls ? "secureConnect" : "connect", () => socket.write(connectPacket(registrationId, username, token(req.idScope, registrationId, deviceKey), 60)));
    socket.on("data", (chunk: Buffer) => framer.push(chunk));
    socket.on("error", (e) => fail(e.message));
    socket.on("close", () => fail("closed early"));
  });
}

/** An idle connection: CONNECT + SUBSCRIBE, then nothing (keep-alive 0: no deadline). */
function idleOnce(req: LoadRequest, registrationId: string, localAddress: string | undefined, keep: Socket[]): Promise<void> {
  const deviceKey = createHmac("sha256", Buffer.from(req.groupKey, "base64")).update(registrationId).digest();
  const username = `${req.idScope}/registrations/${registrationId}/api-version=2019-03-31`;
  return new Promise((resolve, reject) => {
    const socket = open(req, localAddress);
    const framer = new Framer((type) => {
      if (type === 2) socket.write(SUBSCRIBE);
      else if (type === 9) {
        keep.push(socket);
        resolve();
      }
    });
    socket.on(req.tls ? "secureConnect" : "connect", () => socket.write(connectPacket(registrationId, username, token(req.idScope, registrationId, deviceKey), 0)));
    socket.on("data", (chunk: Buffer) => framer.push(chunk));
    socket.on("error", (e) => reject(e));
  });
}

async function run(req: LoadRequest, keep: Socket[]): Promise<LoadResult> {
  let next = 0;
  let completed = 0;
  let failed = 0;
  let firstError: string | undefined;
  // No bound local address: bind() before connect() would keep TIME_WAIT ports out of reuse.
  const addresses = [undefined];
  const started = performance.now();
  const worker = async (w: number): Promise<void> => {
    while (next < req.count) {
      const i = next++;
      const id = `${req.prefix}-${i}`;
      try {
        if (req.kind === "register") await registerOnce(req, id, addresses[(w + i) % addresses.length]);
        else await idleOnce(req, id, addresses[(w + i) % addresses.length], keep);
        completed++;
      } catch (error) {
        failed++;
        firstError ??= (error as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(req.concurrency, req.count) }, (_, w) => worker(w)));
  return { kind: req.kind, completed, failed, elapsedMs: performance.now() - started, firstError };
}

// As a child process: take requests over IPC, answer results; idle sockets stay open until "release".
if (process.send) {
  const idle: Socket[] = [];
  process.on("message", (message: { request?: LoadRequest; release?: boolean; exit?: boolean }) => {
    if (message.release) {
      for (const s of idle.splice(0)) s.destroy();
      process.send?.({ released: true });
    } else if (message.exit) {
      process.exit(0);
    } else if (message.request) {
      run(message.request, idle).then(
        (result) => process.send?.({ result }),
        (error: Error) => process.send?.({ result: { kind: message.request?.kind, completed: 0, failed: 1, elapsedMs: 0, firstError: error.message } }),
      );
    }
  });
}
