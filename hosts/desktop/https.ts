/**
 * The HTTPS port over node:https, for the registration status lookup (docs/PROTOCOL.md): one request,
 * one response read whole into a bounded buffer, exactly one callback.
 *
 * Like the MQTT connector, it can send a service host name (`global.azure-devices-provisioning.net`)
 * somewhere else (`127.0.0.1`, an emulator's port) through `resolve`, while the TLS server name,
 * the certificate name check and the `Host` header keep the service's name.
 */
import { isIP } from "node:net";
import * as https from "node:https";
import type { ClientRequest, IncomingMessage } from "node:http";
import * as tls from "node:tls";
import { check } from "../../modules/errors.js";
import type { HttpsPort, HttpsRequest, HttpsResponse, TransportFault } from "../../modules/ports.js";
import { dialAddress, transportFaultOf, type AddressResolver } from "./mqtt.js";

export interface NodeHttpsPortOptions {
  /** PEM certificate(s) to trust; as with node:tls, replaces Node's default roots. Parsed once. */
  readonly ca?: string | Buffer;
  /** Verify the server certificate and its name. Default true. */
  readonly rejectUnauthorized?: boolean;
  /**
   * Maps the service address to where the socket really connects (see NodeMqttConnectorOptions);
   * a localhost name is then dialled at 127.0.0.1.
   */
  readonly resolve?: AddressResolver;
  /** For the whole exchange, from the request to the last byte of the body. Default 30000. */
  readonly timeoutMs?: number;
  /** Largest response body; a bigger one ends the request with fault "protocol". Default 64 KiB. */
  readonly maxResponseBytes?: number;
}

/**
 * HTTPS requests over node:https. HTTP error statuses (4xx, 5xx) are responses, not faults: only
 * a failure to get a complete response within the limits is a fault. Throws a UsageError for an
 * option out of range.
 */
export class NodeHttpsPort implements HttpsPort {
  readonly #secureContext: tls.SecureContext | undefined;
  readonly #rejectUnauthorized: boolean;
  readonly #resolve: AddressResolver | undefined;
  readonly #timeoutMs: number;
  readonly #maxResponseBytes: number;

  constructor(options: NodeHttpsPortOptions = {}) {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const maxResponseBytes = options.maxResponseBytes ?? 64 * 1024;
    check(Number.isFinite(timeoutMs) && timeoutMs > 0, "timeoutMs must be a positive number of milliseconds");
    check(Number.isInteger(maxResponseBytes) && maxResponseBytes >= 0, "maxResponseBytes must be a non-negative integer");
    this.#secureContext = options.ca !== undefined ? tls.createSecureContext({ ca: options.ca }) : undefined;
    this.#rejectUnauthorized = options.rejectUnauthorized ?? true;
    this.#resolve = options.resolve;
    this.#timeoutMs = timeoutMs;
    this.#maxResponseBytes = maxResponseBytes;
  }

  /**
   * Sends `request`; calls exactly one of `onResponse` and `onError`, always from the event loop,
   * unless the returned abort function is called first (then neither). Throws a UsageError for a
   * request that cannot be sent (empty host, port out of range, a path not starting with "/").
   */
  request(request: HttpsRequest, onResponse: (response: HttpsResponse) => void, onError: (fault: TransportFault) => void): () => void {
    check(typeof request.host === "string" && request.host.length > 0, "host must be a non-empty string");
    check(Number.isInteger(request.port) && request.port > 0 && request.port < 65536, "port must be an integer in 1..65535");
    check(typeof request.path === "string" && request.path.startsWith("/"), "path must start with /");
    const exchange = new Exchange(onResponse, onError, this.#maxResponseBytes, request.host);

    let target = { host: request.host, port: request.port };
    if (this.#resolve) {
      try {
        target = this.#resolve(request.host, request.port);
      } catch (error) {
        const message = `cannot resolve ${request.host}: ${(error as Error)?.message ?? String(error)}`;
        setImmediate(() => exchange.fail({ kind: "dns", message }));
        return exchange.abort;
      }
    }
    target = { host: dialAddress(target.host), port: target.port };

    const headers: Record<string, string> = {};
    for (const name of Object.keys(request.headers)) headers[name.toLowerCase()] = request.headers[name];
    headers.host ??= request.port === 443 ? request.host : `${request.host}:${request.port}`;
    const body = Buffer.from(request.body.buffer, request.body.byteOffset, request.body.byteLength);
    if (request.method !== "GET" || body.length > 0) headers["content-length"] = String(body.length);

    const serviceHost = request.host;
    // `secureContext` reaches tls.connect through the agent; @types/node leaves it out of RequestOptions.
    const options: https.RequestOptions & { secureContext?: tls.SecureContext } = {
      method: request.method,
      host: target.host,
      port: target.port,
      path: request.path,
      headers,
      agent: false,
      servername: isIP(serviceHost) === 0 ? serviceHost : undefined,
      secureContext: this.#secureContext,
      rejectUnauthorized: this.#rejectUnauthorized,
      checkServerIdentity: (_hostname: string, cert: tls.PeerCertificate) => tls.checkServerIdentity(serviceHost, cert),
    };
    const req = https.request(options);
    exchange.start(req, this.#timeoutMs);
    req.end(body);
    return exchange.abort;
  }
}

/** The state of one request: which callback has been called, the body read so far, the timer. */
class Exchange {
  readonly #onResponse: (response: HttpsResponse) => void;
  readonly #onError: (fault: TransportFault) => void;
  readonly #maxBytes: number;
  /** The service's host name (for fault messages). */
  readonly #host: string;
  #request: ClientRequest | undefined;
  #timer: NodeJS.Timeout | undefined;
  #settled = false;
  #secure = false;
  #chunks: Buffer[] = [];
  #received = 0;

  constructor(onResponse: (response: HttpsResponse) => void, onError: (fault: TransportFault) => void, maxBytes: number, host: string) {
    this.#host = host;
    this.#onResponse = onResponse;
    this.#onError = onError;
    this.#maxBytes = maxBytes;
  }

  start(req: ClientRequest, timeoutMs: number): void {
    this.#request = req;
    this.#timer = setTimeout(() => this.fail({ kind: "timeout", message: `no complete response within ${timeoutMs} ms` }), timeoutMs);
    req.on("socket", (socket) => {
      socket.once("secureConnect", () => {
        this.#secure = true;
      });
    });
    // Before the handshake finished, a reset or an unexplained error is the TLS negotiation failing.
    req.on("error", (error) => this.fail(transportFaultOf(error, !this.#secure, this.#host)));
    req.on("response", (res) => this.#onHead(res));
  }

  /** Aborts: no callback will follow. Idempotent. */
  readonly abort = (): void => {
    if (this.#settled) return;
    this.#settled = true;
    this.#cleanUp();
  };

  fail(fault: TransportFault): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#cleanUp();
    this.#onError(fault);
  }

  #cleanUp(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#chunks = [];
    this.#request?.destroy();
  }

  #onHead(res: IncomingMessage): void {
    if (this.#settled) return;
    const announced = Number(res.headers["content-length"]);
    if (Number.isFinite(announced) && announced > this.#maxBytes) {
      this.fail({ kind: "protocol", message: `response body of ${announced} bytes exceeds maxResponseBytes (${this.#maxBytes})` });
      return;
    }
    res.on("data", (chunk: Buffer) => {
      if (this.#settled) return;
      this.#received += chunk.length;
      if (this.#received > this.#maxBytes) {
        this.fail({ kind: "protocol", message: `response body exceeds maxResponseBytes (${this.#maxBytes})` });
        return;
      }
      this.#chunks.push(chunk);
    });
    res.on("error", (error) => this.fail(transportFaultOf(error, false, this.#host)));
    res.on("aborted", () => this.fail({ kind: "closed", message: "connection closed before the end of the response body" }));
    res.on("end", () => {
      if (this.#settled) return;
      if (!res.complete) {
        this.fail({ kind: "closed", message: "connection closed before the end of the response body" });
        return;
      }
      const body = Buffer.concat(this.#chunks, this.#received);
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(res.headers)) {
        if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value;
      }
      this.#settled = true;
      this.#cleanUp();
      this.#onResponse({ status: res.statusCode ?? 0, headers, body });
    });
  }
}
