/**
 * A guard for the SDK's TLS socket. `embedded:io/socket/tcp/tls` runs its handshake and record
 * layer inside the callbacks of the TCP socket it opens, and lets their exceptions escape (a
 * certificate it rejects, a malformed record): nothing up the stack catches them, so XS aborts
 * the whole app. The guard hands the TLS socket a TCP class whose callbacks catch what is thrown
 * and pass it to `onThrow`, which ends the session as a fault the retry policy understands.
 *
 * Used by the MQTT and HTTPS adapters on the socket options the app gives them:
 *
 *   const { io, ...rest } = guardTlsSocket({ io: TLSSocket, TCP: { io: TCP }, secure }, onThrow);
 *
 * Options without a `TCP.io` class (plain TCP, or a stand-in) come back unchanged.
 */
import type { StreamSocket, StreamSocketClass, StreamSocketOptions } from "./sdk.js";

export function guardTlsSocket<T extends { readonly [option: string]: unknown }>(options: T, onThrow: (error: unknown) => void): T {
  const tcp = options.TCP as { readonly io?: unknown } | undefined;
  if (typeof tcp?.io !== "function") return options;
  return { ...options, TCP: { ...tcp, io: guardedStream(tcp.io as StreamSocketClass, onThrow) } };
}

type Callback = (count?: unknown) => void;

/**
 * `Inner` with every callback it calls guarded. TLSSocket keeps its byte counts in `readable` and
 * `writable` on the socket it owns, and reads into buffers it passes: both go through unchanged.
 */
function guardedStream(Inner: StreamSocketClass, onThrow: (error: unknown) => void): StreamSocketClass {
  const guard = (callback: Callback | undefined): Callback | undefined =>
    callback &&
    ((count?: unknown) => {
      try {
        callback(count);
      } catch (error) {
        onThrow(error);
      }
    });
  return class GuardedStream {
    readable = 0;
    writable = 0;
    readonly #socket: StreamSocket & { read(...args: unknown[]): ArrayBuffer | number | undefined };
    constructor(options: StreamSocketOptions & Record<string, unknown>) {
      const inner = new Inner({
        ...options,
        onReadable: guard(options.onReadable as Callback | undefined),
        onWritable: guard(options.onWritable as Callback | undefined),
        onError: guard(options.onError),
      });
      this.#socket = inner as StreamSocket & { read(...args: unknown[]): ArrayBuffer | number | undefined };
    }
    read(...args: unknown[]): ArrayBuffer | number | undefined {
      return this.#socket.read(...args);
    }
    write(data: ArrayBuffer | Uint8Array): number | void {
      return this.#socket.write(data);
    }
    close(): void {
      this.#socket.close();
    }
  };
}
