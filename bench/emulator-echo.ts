// The ceiling for bench/emulator.ts: a trivial MQTT server on the same building blocks as the
// emulator (node:net/tls, mqtt-packet), answering the registration exchange with canned replies
// and no checks at all (no token, no JSON, no state). Emulator / echo is the emulator's share of
// what the wire itself allows on this machine.
import { constants } from "node:crypto";
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { generate, parser as createParser, type Packet } from "mqtt-packet";

const ACCEPTED = '{"operationId":"4.0000000000000000.00000000-0000-4000-8000-000000000000","status":"assigning"}';
const ASSIGNED =
  '{"operationId":"4.0000000000000000.00000000-0000-4000-8000-000000000000","status":"assigned","registrationState":{"registrationId":"x","assignedHub":"hub-1.azure-devices.localhost","deviceId":"x","status":"assigned","substatus":"initialAssignment"}}';

function serve(socket: Socket): void {
  socket.setNoDelay(true);
  const parser = createParser({ protocolVersion: 4 });
  let id = 0;
  parser.on("packet", (p: Packet) => {
    switch (p.cmd) {
      case "connect":
        socket.write(generate({ cmd: "connack", returnCode: 0, sessionPresent: false }));
        break;
      case "subscribe":
        socket.write(generate({ cmd: "suback", messageId: p.messageId ?? 0, granted: [1] }));
        break;
      case "publish": {
        const rid = /\$rid=([^&]*)/.exec(p.topic)?.[1] ?? "";
        const register = p.topic.includes("iotdps-register");
        socket.cork();
        socket.write(generate({ cmd: "puback", messageId: p.messageId ?? 0 }));
        id = (id % 65535) + 1;
        socket.write(
          generate({
            cmd: "publish",
            topic: `$dps/registrations/res/${register ? 202 : 200}/?$rid=${rid}${register ? "&retry-after=0" : ""}`,
            payload: register ? ACCEPTED : ASSIGNED,
            qos: 1,
            messageId: id,
            retain: false,
            dup: false,
          }),
        );
        socket.uncork();
        break;
      }
      case "disconnect":
        socket.destroy();
        break;
      default:
        break;
    }
  });
  parser.on("error", () => socket.destroy());
  socket.on("data", (chunk: Buffer) => parser.parse(chunk));
  socket.on("error", () => {});
}

/** `tls` takes the emulator's certificate and TLS settings, so that the two handshakes cost the same. */
export async function startEcho(host: string, tls?: { cert: string; key: string; maxVersion: "TLSv1.2" | "TLSv1.3" }): Promise<{ port: number; server: Server; stop(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  };
  const server: Server = tls
    ? createTlsServer({ cert: tls.cert, key: tls.key, minVersion: "TLSv1.2", maxVersion: tls.maxVersion, secureOptions: constants.SSL_OP_NO_TICKET, noDelay: true }, (s) => {
        track(s);
        serve(s);
      })
    : createTcpServer({ noDelay: true }, (s) => {
        track(s);
        serve(s);
      });
  await new Promise<void>((resolve) => server.listen({ host, port: 0 }, () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    stop: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
