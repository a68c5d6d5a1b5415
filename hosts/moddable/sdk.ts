/**
 * The shapes of the Moddable SDK classes that the adapters in this folder use, written as
 * structural types. The adapters never import an SDK module: main.ts imports the real ones and
 * passes them in, and the XS test tier passes stand-ins of the same shape. tsc checks, through
 * main.ts and types/moddable.d.ts, that the SDK's classes fit these shapes.
 *
 * Written from the SDK documentation (documentation/io/io.md, the ECMA-419 examples) and from
 * what the SDK's implementations were seen to do; see docs/MODDABLE.md.
 */

/** A buffer an ECMA-419 `write` accepts. */
export type BufferSource = ArrayBuffer | ArrayBufferView;

/**
 * ECMA-419 stream socket (`embedded:io/socket/tcp`, or `embedded:io/socket/tcp/tls` over it) in
 * "buffer" format. Callbacks are called with the socket as `this`; `onError` means the connection
 * is over (the SDK passes no reason, or an Error).
 */
export interface StreamSocket {
  /**
   * All the bytes waiting (TCP), or the rest of the current TLS record; undefined when none. (A
   * number only in "number" format, which the adapters never set.)
   */
  read(): ArrayBuffer | number | undefined;
  /**
   * Queues bytes; returns how many more can be written now (the SDK's implementations do; its
   * typings say void, so a caller must cope with both). Throws when they do not fit.
   */
  write(data: ArrayBuffer | Uint8Array): number | void;
  close(): void;
}

export interface StreamSocketOptions {
  /** IP address to connect to. */
  readonly address: string;
  readonly port: number;
  /** TLS only: the server name (SNI and certificate name check). */
  readonly host?: string;
  onReadable?(count: number): void;
  onWritable?(count: number): void;
  onError?(error?: unknown): void;
}

export interface StreamSocketClass {
  new (options: StreamSocketOptions & Record<string, unknown>): StreamSocket;
}

/** `embedded:network/dns/resolver/udp`: one lookup per call, result through the callbacks. */
export interface DnsResolver {
  resolve(options: { readonly host: string; onResolved(host: string, address: string): void; onError(error?: unknown): void }): void;
  close(): void;
}

/** The SDK's `crypt` Digest: `new Digest("SHA256")`, `write`, `close()` gives the hash. */
export interface Digest {
  /** The SDK takes any buffer; its typings say ArrayBuffer, which is what the callers pass. */
  write(data: ArrayBuffer): void;
  close(): ArrayBuffer;
  reset(): void;
}

export interface DigestClass {
  new (algorithm: "SHA256"): Digest;
}

/** The SDK's `timer` module (the parts used here). */
export interface TimerModule {
  set(callback: () => void, delayMs?: number): unknown;
  clear(handle: unknown): void;
}

/** `embedded:storage/flash` on the ESP32: an open partition. */
export interface FlashPartition {
  read(byteLength: number, byteOffset: number): ArrayBuffer;
  write(data: ArrayBuffer, byteOffset: number): void;
  /** Erases blocks `start` up to (not including) `end`; one block when `end` is absent. */
  eraseBlock(start: number, end?: number): void;
  status(): { readonly size: number; readonly blockLength: number; readonly blocks: number };
  close(): void;
}

/** The `file` module's File (on lin, mac and win): `new File(path, true)` opens read/write, creating. */
export interface FileHandle {
  read(type: typeof ArrayBuffer, count: number): ArrayBuffer;
  write(data: ArrayBuffer): void;
  close(): void;
  position: number;
  readonly length: number;
}

export interface FileClass {
  new (path: string, write?: boolean): FileHandle;
}

/** One HTTP request of `embedded:network/http/client`. */
export interface HttpRequestHandle {
  read(count?: number): ArrayBuffer | undefined;
  write(data: ArrayBuffer): unknown;
}

export interface HttpRequestOptions {
  readonly method: string;
  readonly path: string;
  readonly headers: Map<string, string>;
  onHeaders?(this: HttpRequestHandle, status: number, headers: Map<string, string>): void;
  onWritable?(this: HttpRequestHandle, count: number): void;
  onReadable?(this: HttpRequestHandle, count: number): void;
  onDone?(this: HttpRequestHandle, error: unknown): void;
}

export interface HttpClient {
  request(options: HttpRequestOptions): HttpRequestHandle;
  close(): void;
}

export interface HttpClientClass {
  new (options: { readonly host: string; readonly port: number; onError?(error?: unknown): void } & Record<string, unknown>): HttpClient;
}

/** `embedded:network/ntp/client`: `getTime((error, ms) => ...)`. */
export interface NtpClient {
  getTime(callback: (error: unknown, time?: number) => void): void;
  close(): void;
}
