/**
 * `embedded:io/socket/tcp/tls`, which the SDK's own typings (8.2) leave undeclared. Only for the
 * mcconfig build: the manifest maps this file to the module's specifier so that its tsc finds a
 * declaration. (CI checks with ../moddable.d.ts instead.)
 */
export default class TLSSocket {
  constructor(options: { readonly address: string; readonly port: number; readonly host?: string; onReadable?(count: number): void; onWritable?(count: number): void; onError?(error?: unknown): void } & Record<string, unknown>);
  read(): ArrayBuffer | undefined;
  write(data: ArrayBuffer | Uint8Array): number;
  close(): void;
  format: "buffer" | "number";
}
