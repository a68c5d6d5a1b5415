/**
 * The project's own declarations of the Moddable SDK modules that hosts/moddable imports, written
 * from the SDK's documentation and its observed behaviour (not copied from the SDK's typings), so
 * that `tsc -p hosts/moddable/tsconfig.json` checks the Moddable host without the SDK. Only what
 * the host uses is declared. The shapes the adapters rely on are in ../sdk.ts; these classes are
 * checked against them where the app passes them in.
 */

/** The SDK's console output (xsbug, serial, or the simulator's stdout). */
declare function trace(...values: unknown[]): void;

declare module "embedded:io/socket/tcp" {
  export default class TCP {
    constructor(options: { readonly address: string; readonly port: number; readonly host?: string; onReadable?(count: number): void; onWritable?(count: number): void; onError?(error?: unknown): void } & Record<string, unknown>);
    read(): ArrayBuffer | undefined;
    write(data: ArrayBuffer | ArrayBufferView): number;
    close(): void;
    format: "buffer" | "number";
  }
}

declare module "embedded:io/socket/tcp/tls" {
  /** TLS 1.2 over a TCP socket given as `TCP: { io: TCP }`; `secure.certificate` adds a trust anchor. */
  export default class TLSSocket {
    constructor(options: { readonly address: string; readonly port: number; readonly host?: string; onReadable?(count: number): void; onWritable?(count: number): void; onError?(error?: unknown): void } & Record<string, unknown>);
    read(): ArrayBuffer | undefined;
    write(data: ArrayBuffer | ArrayBufferView): number;
    close(): void;
    format: "buffer" | "number";
  }
}

declare module "embedded:io/socket/udp" {
  export default class UDP {
    constructor(options: Record<string, unknown>);
    read(): ArrayBuffer | undefined;
    write(data: ArrayBuffer | ArrayBufferView, address: string, port: number): void;
    close(): void;
  }
}

declare module "embedded:network/dns/resolver/udp" {
  export default class Resolver {
    constructor(options: { readonly servers: readonly string[]; readonly socket: { readonly io: unknown } });
    resolve(options: { readonly host: string; onResolved(host: string, address: string): void; onError(error?: unknown): void }): void;
    close(): void;
  }
}

declare module "embedded:network/http/client" {
  export interface HTTPRequest {
    read(count?: number): ArrayBuffer | undefined;
    write(data: ArrayBuffer): void;
  }
  export default class HTTPClient {
    constructor(options: { readonly host: string; readonly port: number; onError?(error?: unknown): void } & Record<string, unknown>);
    request(options: {
      readonly method?: string;
      readonly path: string;
      readonly headers?: Map<string, string>;
      onHeaders?(this: HTTPRequest, status: number, headers: Map<string, string>): void;
      onWritable?(this: HTTPRequest, count: number): void;
      onReadable?(this: HTTPRequest, count: number): void;
      onDone?(this: HTTPRequest, error: unknown): void;
    }): HTTPRequest;
    close(): void;
  }
}

declare module "embedded:network/ntp/client" {
  // As strict as the SDK's own typings (`dns: { io }`), which mcconfig compiles against: the resolver's
  // other options ride along in a variable; an object literal with them fails there.
  export default class NTP {
    constructor(options: { readonly servers: readonly string[]; readonly socket: { readonly io: unknown }; readonly dns: { readonly io: unknown } });
    getTime(callback: (error: unknown, time?: number) => void): void;
    close(): void;
  }
}

declare module "embedded:storage/flash" {
  export interface FlashPartition {
    read(byteLength: number, byteOffset: number): ArrayBuffer;
    write(data: ArrayBuffer | ArrayBufferView, byteOffset: number): void;
    eraseBlock(start: number, end?: number): void;
    status(): { readonly size: number; readonly blockLength: number; readonly blocks: number };
    close(): void;
  }
  const flash: { open(options: { readonly path: string; readonly mode?: "r" | "r+" }): FlashPartition };
  export default flash;
}

declare module "crypt" {
  export class Digest {
    constructor(algorithm: "SHA256" | "SHA1" | "MD5" | "SHA224" | "SHA384" | "SHA512");
    write(data: ArrayBuffer | ArrayBufferView): void;
    close(): ArrayBuffer;
    reset(): void;
  }
}

declare module "rng" {
  const RNG: { get(count: number): ArrayBuffer };
  export default RNG;
}

declare module "timer" {
  const Timer: {
    set(callback: () => void, delayMs?: number, repeatMs?: number): unknown;
    repeat(callback: () => void, intervalMs: number): unknown;
    clear(handle: unknown): void;
  };
  export default Timer;
}

declare module "time" {
  const Time: { set(secondsSince1970: number): void; readonly ticks: number };
  export default Time;
}

declare module "preference" {
  const Preference: {
    get(domain: string, key: string): string | number | boolean | ArrayBuffer | undefined;
    set(domain: string, key: string, value: string | number | boolean | ArrayBuffer): void;
    delete(domain: string, key: string): void;
    keys(domain: string): string[];
  };
  export default Preference;
}

declare module "Resource" {
  export default class Resource extends ArrayBuffer {
    constructor(name: string);
    static exists(name: string): boolean;
  }
}

declare module "file" {
  export class File {
    constructor(path: string, write?: boolean);
    read(type: typeof ArrayBuffer, count: number): ArrayBuffer;
    read(type: typeof String, count?: number): string;
    write(data: ArrayBuffer | string): void;
    close(): void;
    position: number;
    readonly length: number;
    static exists(path: string): boolean;
    static delete(path: string): boolean;
  }
}

declare module "mc/config" {
  const config: Readonly<Record<string, unknown>> & { readonly file?: { readonly root: string } };
  export default config;
}

declare module "instrumentation" {
  /** The SDK's counters; `get` gives undefined where the build has no instrumentation (release). */
  const Instrumentation: {
    map(name: string): number | undefined;
    get(what: number | undefined): number | undefined;
  };
  export default Instrumentation;
}

declare module "debug" {
  const Debug: {
    /** Without an argument: collects garbage now. */
    gc(enable?: boolean): void;
  };
  export default Debug;
}
