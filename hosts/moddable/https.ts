/**
 * The HTTPS port over the SDK's `embedded:network/http/client`, for the registration status
 * lookup: one client (one TLS connection) per request, the body written through the request's
 * `onWritable`, the response read whole into a bounded buffer, exactly one callback.
 *
 *   const https = new ModdableHttpsPort({
 *     client: { io: HTTPClient, dns, socket: { io: TLSSocket, TCP: { io: TCP }, secure } },
 *   });
 */
import { check } from "../../modules/errors.js";
import type { HttpsPort, HttpsRequest, HttpsResponse, TransportFault } from "../../modules/ports.js";
import type { HttpClient, HttpClientClass, HttpRequestHandle } from "./sdk.js";
import { guardTlsSocket } from "./tls-guard.js";

export interface ModdableHttpsPortOptions {
  /** The client class in `io`; everything else (`dns`, `socket`) goes to its constructor. */
  readonly client: { readonly io: HttpClientClass; readonly [option: string]: unknown };
  /** Largest response body; a bigger one ends the request with fault "protocol". Default 4096. */
  readonly maxResponseBytes?: number;
}

export class ModdableHttpsPort implements HttpsPort {
  readonly #client: ModdableHttpsPortOptions["client"];
  readonly #max: number;

  /** @throws UsageError INVALID_ARGUMENT without a client class or with a bad limit. */
  constructor(options: ModdableHttpsPortOptions) {
    check(typeof options?.client?.io === "function", "client.io must be the HTTP client class (embedded:network/http/client)");
    this.#client = options.client;
    this.#max = options.maxResponseBytes ?? 4096;
    check(Number.isInteger(this.#max) && this.#max >= 0, "maxResponseBytes must be a non-negative integer");
  }

  /**
   * Sends `request`; calls one of `onResponse` and `onError` from the event loop, unless the
   * returned function aborts first. HTTP error statuses are responses, not faults.
   * @throws UsageError INVALID_ARGUMENT for a request that cannot be sent.
   */
  request(request: HttpsRequest, onResponse: (response: HttpsResponse) => void, onError: (fault: TransportFault) => void): () => void {
    check(typeof request.path === "string" && request.path.startsWith("/"), "path must start with /");
    const max = this.#max;
    let client: HttpClient | undefined;
    let settled = false;
    let status = 0;
    const headers: Record<string, string> = {};
    let body = new Uint8Array(0);
    let written = 0;
    const end = (): void => {
      settled = true;
      const c = client;
      client = undefined;
      c?.close();
    };
    const fail = (kind: TransportFault["kind"], message: string): void => {
      if (settled) return;
      end();
      onError({ kind, message });
    };

    const sent = new Map<string, string>();
    for (const name of Object.keys(request.headers)) {
      // The client writes its own `host` line.
      if (name.toLowerCase() !== "host") sent.set(name, request.headers[name]);
    }
    sent.set("content-length", String(request.body.length));

    const { io: Client, ...rest } = this.#client;
    try {
      const options: ConstructorParameters<HttpClientClass>[0] = { ...rest, host: request.host, port: request.port, onError: () => fail("closed", `HTTPS connection to ${request.host} failed`) };
      if (rest.socket) {
        const why = (error: unknown) => (error instanceof Error ? `: ${error.message}` : "");
        options.socket = guardTlsSocket(rest.socket as { readonly [option: string]: unknown }, (error) => fail("tls", `TLS with ${request.host} failed${why(error)}`));
      }
      client = new Client(options);
      client.request({
        method: request.method,
        path: request.path,
        headers: sent,
        onWritable(this: HttpRequestHandle, count: number) {
          if (settled || written >= request.body.length) return;
          const part = request.body.subarray(written, written + count);
          written += part.length;
          this.write(part.slice().buffer);
        },
        onHeaders(code: number, received: Map<string, string>) {
          status = code;
          received.forEach((value, name) => (headers[name.toLowerCase()] = value));
        },
        onReadable(this: HttpRequestHandle, count: number) {
          if (settled) return;
          if (body.length + count > max) return fail("protocol", `response body exceeds maxResponseBytes (${max})`);
          const chunk = this.read(count);
          if (!chunk) return;
          const next = new Uint8Array(body.length + chunk.byteLength);
          next.set(body);
          next.set(new Uint8Array(chunk), body.length);
          body = next;
        },
        onDone(error: unknown) {
          if (settled) return;
          if (error || status === 0) return fail("closed", `HTTPS request to ${request.host} ended without a complete response`);
          end();
          onResponse({ status, headers, body });
        },
      });
    } catch (error) {
      // Reported from the event loop, never inside this call: through the client's own error path when it exists.
      const message = `cannot start the HTTPS request: ${error instanceof Error ? error.message : String(error)}`;
      Promise.resolve().then(() => fail("refused", message));
    }
    return () => {
      if (!settled) end();
    };
  }
}
