/**
 * The smallest app that uses the runtime: provision (or warm-start from the cache), connect to
 * the assigned hub, send one message a minute. Everything the runtime needs from the device is
 * passed in as ports built over the SDK's modules; the demo app (hosts/moddable/main.ts) does the
 * same with preferences, a choice of CA and a file CA for the emulator.
 */
import TCP from "embedded:io/socket/tcp";
import TLSSocket from "embedded:io/socket/tcp/tls";
import UDP from "embedded:io/socket/udp";
import Resolver from "embedded:network/dns/resolver/udp";
import HTTPClient from "embedded:network/http/client";
import NTP from "embedded:network/ntp/client";
import { Digest } from "crypt";
import config from "mc/config";
import Resource from "Resource";
import RNG from "rng";
import Time from "time";
import Timer from "timer";
import { DeviceRuntime } from "dps-runtime/modules/runtime";
import { FixedAddressResolver } from "dps-runtime/hosts/moddable/dns";
import { ModdableHttpsPort } from "dps-runtime/hosts/moddable/https";
import { ModdableMqttConnector } from "dps-runtime/hosts/moddable/mqtt";
import { setClockFromNtp } from "dps-runtime/hosts/moddable/ntp";
import { digestCrypto, moddableTimers, rngSecureRandom, traceLog } from "dps-runtime/hosts/moddable/platform";
import { target } from "dps-runtime/hosts/moddable/target";

// mcconfig's name=value settings arrive as strings: idScope, registrationId, symmetricKey,
// globalEndpoint, transport (tls or tcp), address, dpsPort, lookupPort, hubPort, cacheFile.
const setting = (name: string): string | undefined => (typeof config[name] === "string" ? (config[name] as string) : undefined);
const port = (name: string): number | undefined => (setting(name) ? Number(setting(name)) : undefined);

const tls = setting("transport") !== "tcp";
const address = setting("address");
const dns = address ? { io: FixedAddressResolver, address } : { io: Resolver, servers: ["1.1.1.1", "8.8.8.8"], socket: { io: UDP } };
const socket = tls ? { io: TLSSocket, TCP: { io: TCP }, secure: { certificate: new Resource("digicert-global-root-g2.der") } } : { io: TCP };
const timers = moddableTimers(Timer);

const device = new DeviceRuntime(
  {
    idScope: setting("idScope")!,
    registrationId: setting("registrationId")!,
    symmetricKey: setting("symmetricKey"),
    globalEndpoint: setting("globalEndpoint"),
    dpsPort: port("dpsPort"),
    lookupPort: port("lookupPort"),
    hub: { port: port("hubPort") },
  },
  {
    mqtt: new ModdableMqttConnector({ socket, dns, timers, secure: tls }),
    https: tls ? new ModdableHttpsPort({ client: { io: HTTPClient, dns, socket } }) : undefined,
    timers,
    clock: () => Date.now(),
    random: () => Math.random(),
    secureRandom: rngSecureRandom(RNG),
    crypto: digestCrypto(Digest),
    flash: target.openCacheFlash({ cachePartition: "dpscache", cacheFile: setting("cacheFile") ?? "minimal-cache.flash" }),
    log: traceLog((line) => trace(line), "info"),
  },
  (event) => {
    if (event.source === "telemetry") trace(`minimal: message ${event.id} ${event.state === "sent" ? "acknowledged" : `dropped: ${event.reason}`}\n`);
  },
);

let count = 0;
const send = (): void => {
  if (device.state === "connected") device.send({ count: ++count });
};

// A SAS token carries an expiry: on a device, set the clock before the first one is signed.
if (target.simulator) {
  device.start();
} else {
  // The SDK's NTP client constructs `new dns.io(dns)`: the resolver's own options ride along.
  const resolver = { io: Resolver, servers: ["1.1.1.1"], socket: { io: UDP } };
  setClockFromNtp(new NTP({ servers: ["pool.ntp.org"], socket: { io: UDP }, dns: resolver }), (s) => Time.set(s), (error) => {
    if (error) return trace(`minimal: ${error}\n`);
    device.start();
  });
}
Timer.repeat(send, 60_000);
Timer.set(send, 5_000);
