/**
 * NodeHttpsPort (hosts/desktop/https.ts) against a local https server on loopback with a throwaway
 * certificate: responses, error statuses, faults, limits and abort. Every wait is bounded.
 */
import test from "ava";
import * as https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import * as net from "node:net";
import { NodeHttpsPort } from "../hosts/desktop/https.js";
import type { HttpsRequest, HttpsResponse, TransportFault } from "../modules/ports.js";
import { createTestCertificates } from "./support/certs.js";

const serviceHost = "global.azure-devices-provisioning.localhost";
const certs = await createTestCertificates({ dnsNames: [serviceHost] });
const stranger = await createTestCertificates({ caName: "an untrusted test CA" });

/** What the server saw, echoed back as JSON by the /registrations route. */
interface Echo {
  method: string;
  url: string;
  host: string;
  authorization: string;
  contentType: string;
  body: string;
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    const url = req.url ?? "";
    if (url.startsWith("/0neFEEDC0DE/registrations/")) {
      const echo: Echo = {
        method: req.method ?? "",
        url,
        host: req.headers.host ?? "",
        authorization: req.headers.authorization ?? "",
        contentType: req.headers["content-type"] ?? "",
        body: Buffer.concat(chunks).toString("utf8"),
      };
      res.writeHead(200, { "Content-Type": "application/json; charset=utf-8", "X-Ms-Request-Id": "req-1", "Set-Cookie": ["a=1", "b=2"] });
      res.end(JSON.stringify(echo));
    } else if (url === "/throttled") {
      res.writeHead(429, { "Content-Type": "application/json", "X-Ms-Error-Code": "429001", "Retry-After": "3" });
      res.end(JSON.stringify({ errorCode: 429001, trackingId: "t-1", message: "Operations are being throttled" }));
    } else if (url === "/big") {
      res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": String(100 * 1024) });
      res.end(Buffer.alloc(100 * 1024, 0x61));
    } else if (url === "/big-chunked") {
      res.writeHead(200, { "Content-Type": "application/octet-stream" });
      let sent = 0;
      const more = () => {
        if (res.destroyed || sent >= 100 * 1024) return void res.end();
        sent += 8192;
        res.write(Buffer.alloc(8192, 0x62), () => setImmediate(more));
      };
      more();
    } else if (url === "/later") {
      setTimeout(() => res.end("late"), 300);
    } else if (url === "/silent") {
      // never answers: the client's timeout must end it
    } else {
      res.writeHead(404).end();
    }
  });
}

const server = https.createServer({ cert: certs.serverCert, key: certs.serverKey }, handle);
await new Promise<void>((resolve, reject) => {
  server.once("error", reject);
  server.listen(0, "127.0.0.1", resolve);
});
const port = (server.address() as net.AddressInfo).port;

test.after.always(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

type Outcome = { readonly response: HttpsResponse } | { readonly fault: TransportFault };

/** Sends a request; resolves with the first callback, and counts every callback in `calls`. */
function send(
  httpsPort: NodeHttpsPort,
  request: Partial<HttpsRequest> & { path: string },
  ms = 5000,
): { outcome: Promise<Outcome>; calls: () => number; abort: () => void; synchronous: boolean } {
  let calls = 0;
  let inside = true;
  let synchronous = false;
  let settle!: (outcome: Outcome) => void;
  const outcome = new Promise<Outcome>((resolve, reject) => {
    settle = resolve;
    setTimeout(() => reject(new Error(`no callback within ${ms} ms for ${request.path}`)), ms).unref();
  });
  const abort = httpsPort.request(
    { method: "POST", host: "localhost", port, headers: {}, body: new Uint8Array(0), ...request },
    (response) => {
      calls++;
      synchronous ||= inside;
      settle({ response });
    },
    (fault) => {
      calls++;
      synchronous ||= inside;
      settle({ fault });
    },
  );
  inside = false;
  return { outcome, calls: () => calls, abort, synchronous };
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const trusting = new NodeHttpsPort({ ca: certs.caCert });

function responseOf(t: { fail(message: string): void }, outcome: Outcome): HttpsResponse {
  if ("response" in outcome) return outcome.response;
  t.fail(`expected a response, got fault ${outcome.fault.kind}: ${outcome.fault.message}`);
  throw new Error("unreachable");
}

function faultOf(t: { fail(message: string): void }, outcome: Outcome): TransportFault {
  if ("fault" in outcome) return outcome.fault;
  t.fail(`expected a fault, got status ${outcome.response.status}`);
  throw new Error("unreachable");
}

test("NodeHttpsPort: 200 with a JSON body; header names lowercase; request body, headers and Host arrive", async (t) => {
  const body = new TextEncoder().encode(JSON.stringify({ registrationId: "dev-1" }));
  const exchange = send(trusting, {
    path: "/0neFEEDC0DE/registrations/dev-1?api-version=2021-10-01",
    headers: { "Content-Type": "application/json", Authorization: "SharedAccessSignature sr=x&sig=y&se=1" },
    body,
  });
  const response = responseOf(t, await exchange.outcome);
  t.is(response.status, 200);
  t.true(response.body instanceof Uint8Array);
  const echo = JSON.parse(Buffer.from(response.body).toString("utf8")) as Echo;
  t.deepEqual(echo, {
    method: "POST",
    url: "/0neFEEDC0DE/registrations/dev-1?api-version=2021-10-01",
    host: `localhost:${port}`,
    authorization: "SharedAccessSignature sr=x&sig=y&se=1",
    contentType: "application/json",
    body: JSON.stringify({ registrationId: "dev-1" }),
  });
  t.is(response.headers["content-type"], "application/json; charset=utf-8");
  t.is(response.headers["x-ms-request-id"], "req-1");
  t.is(response.headers["set-cookie"], "a=1, b=2");
  t.true(Object.keys(response.headers).every((name) => name === name.toLowerCase()));
  await delay(50);
  t.is(exchange.calls(), 1);
  t.false(exchange.synchronous);
});

test("NodeHttpsPort: an error status is a response, not a fault", async (t) => {
  const exchange = send(trusting, { path: "/throttled" });
  const response = responseOf(t, await exchange.outcome);
  t.is(response.status, 429);
  t.is(response.headers["x-ms-error-code"], "429001");
  t.is(response.headers["retry-after"], "3");
  t.is((JSON.parse(Buffer.from(response.body).toString("utf8")) as { errorCode: number }).errorCode, 429001);
  t.is(exchange.calls(), 1);
});

test("NodeHttpsPort resolve: a service name goes to loopback; Host, SNI and the certificate check keep the service name", async (t) => {
  const asked: string[] = [];
  const httpsPort = new NodeHttpsPort({
    ca: certs.caCert,
    resolve: (host, servicePort) => {
      asked.push(`${host}:${servicePort}`);
      return { host: "127.0.0.1", port };
    },
  });
  const good = send(httpsPort, { host: serviceHost, port: 443, path: "/0neFEEDC0DE/registrations/dev-2?api-version=2021-10-01" });
  const echo = JSON.parse(Buffer.from(responseOf(t, await good.outcome).body).toString("utf8")) as Echo;
  t.is(echo.host, serviceHost, "port 443 is left out of Host");
  const wrong = send(httpsPort, { host: "global.azure-devices-provisioning.example", port: 443, path: "/x" });
  t.is(faultOf(t, await wrong.outcome).kind, "tls");
  t.deepEqual(asked, [`${serviceHost}:443`, "global.azure-devices-provisioning.example:443"]);
});

test("NodeHttpsPort: a certificate from an untrusted CA is fault tls", async (t) => {
  const exchange = send(new NodeHttpsPort({ ca: stranger.caCert }), { path: "/throttled" });
  const fault = faultOf(t, await exchange.outcome);
  t.is(fault.kind, "tls", fault.message);
  await delay(50);
  t.is(exchange.calls(), 1);
});

test("NodeHttpsPort: no response within timeoutMs is fault timeout", async (t) => {
  const exchange = send(new NodeHttpsPort({ ca: certs.caCert, timeoutMs: 300 }), { path: "/silent" });
  const fault = faultOf(t, await exchange.outcome);
  t.is(fault.kind, "timeout", fault.message);
  await delay(100);
  t.is(exchange.calls(), 1, "the destroyed request adds no second callback");
});

test("NodeHttpsPort: a body over maxResponseBytes is fault protocol (announced, and streamed without a length)", async (t) => {
  const small = new NodeHttpsPort({ ca: certs.caCert, maxResponseBytes: 64 * 1024 });
  for (const path of ["/big", "/big-chunked"]) {
    const exchange = send(small, { path, method: "GET" });
    const fault = faultOf(t, await exchange.outcome);
    t.is(fault.kind, "protocol", `${path}: ${fault.message}`);
    t.regex(fault.message, /maxResponseBytes/);
    await delay(50);
    t.is(exchange.calls(), 1);
  }
  const roomy = new NodeHttpsPort({ ca: certs.caCert, maxResponseBytes: 128 * 1024 });
  const fits = responseOf(t, await send(roomy, { path: "/big", method: "GET" }).outcome);
  t.is(fits.body.length, 100 * 1024);
});

test("NodeHttpsPort abort: no callback follows, and abort is idempotent", async (t) => {
  const exchange = send(trusting, { path: "/later" });
  exchange.abort();
  exchange.abort();
  await delay(700);
  t.is(exchange.calls(), 0);
  // Aborting after the outcome changes nothing either.
  const done = send(trusting, { path: "/throttled" });
  await done.outcome;
  done.abort();
  await delay(50);
  t.is(done.calls(), 1);
});

test("NodeHttpsPort: a closed port is fault refused, an unknown name fault dns", async (t) => {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const closedPort = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const refused = faultOf(t, await send(trusting, { host: "127.0.0.1", port: closedPort, path: "/x" }).outcome);
  t.is(refused.kind, "refused", refused.message);
  const dns = faultOf(t, await send(trusting, { host: "nonexistent.invalid", port: 443, path: "/x" }, 15_000).outcome);
  t.is(dns.kind, "dns", dns.message);
});

test("NodeHttpsPort: a request that cannot be sent is the caller's mistake (UsageError)", (t) => {
  const noop = () => undefined;
  const base: HttpsRequest = { method: "GET", host: "localhost", port, path: "/", headers: {}, body: new Uint8Array(0) };
  t.throws(() => trusting.request({ ...base, host: "" }, noop, noop), { name: "UsageError" });
  t.throws(() => trusting.request({ ...base, path: "relative" }, noop, noop), { name: "UsageError" });
  t.throws(() => new NodeHttpsPort({ timeoutMs: 0 }), { name: "UsageError" });
});
