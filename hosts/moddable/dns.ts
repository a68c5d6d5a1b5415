/**
 * A resolver with the shape of the SDK's `embedded:network/dns/resolver/udp` that answers every
 * name with one address. For a simulator build talking to the emulator on this machine, whose
 * service names (`global.azure-devices-provisioning.localhost`, `hub-1.azure-devices.localhost`)
 * no DNS server knows: the names stay as they are for TLS and MQTT, only the address is fixed.
 *
 *   dns: { io: FixedAddressResolver, address: "127.0.0.1" }
 */
import { check } from "../../modules/errors.js";
import type { DnsResolver } from "./sdk.js";

export class FixedAddressResolver implements DnsResolver {
  readonly #address: string;

  /** @throws UsageError INVALID_ARGUMENT unless `address` is an IPv4 address. */
  constructor(options: { readonly address: string }) {
    check(/^\d{1,3}(\.\d{1,3}){3}$/.test(options?.address ?? ""), "FixedAddressResolver needs an IPv4 address");
    this.#address = options.address;
  }

  resolve(options: { readonly host: string; onResolved(host: string, address: string): void }): void {
    options.onResolved(options.host, this.#address);
  }

  close(): void {}
}
