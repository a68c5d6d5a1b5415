/**
 * The hub features in a small app: examples/minimal plus a direct method, a desired property and
 * cloud-to-device messages, each an opt-in module named in manifest.json.
 *
 *   method blink {"times":3}        answers 200 {"blinked":3} (and traces a line per blink)
 *   desired interval 30             sends telemetry every 30 s, acknowledged {"value":30,"ac":200,"av":…}
 *   a C2D message                   traced with its properties
 *   method or desired reprovision   answered 202, then the device provisions with DPS again
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
import { CloudMessages } from "dps-runtime/modules/c2d";
import { DirectMethods } from "dps-runtime/modules/methods";
import { DeviceTwin } from "dps-runtime/modules/twin";
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

// Telemetry every `interval` seconds; the backend changes it through the desired property.
let interval = 60;
let repeat: ReturnType<typeof Timer.repeat> | undefined;
let count = 0;
const send = (): void => {
  if (device.state === "connected") device.send({ count: ++count, interval });
};
const every = (seconds: number): void => {
  if (repeat !== undefined) Timer.clear(repeat);
  interval = seconds;
  repeat = Timer.repeat(send, seconds * 1000);
};

const methods = new DirectMethods().on("blink", (request) => {
  const times = (request.payload as { times?: unknown } | null)?.times;
  const n = typeof times === "number" && times >= 1 && times <= 10 ? Math.floor(times) : 1;
  for (let i = 1; i <= n; i++) trace(`hub-features: blink ${i}/${n}\n`);
  return { status: 200, payload: { blinked: n } };
});
const twin = new DeviceTwin({
  onDesired: (desired, version) => {
    const seconds = desired.interval;
    if (seconds === undefined) return;
    if (typeof seconds === "number" && seconds >= 5 && seconds <= 3600) {
      every(seconds);
      twin.acknowledge("interval", seconds, version, 200, "applied");
      trace(`hub-features: telemetry every ${seconds} s (desired version ${version})\n`);
    } else twin.acknowledge("interval", seconds, version, 400, "interval must be a number of seconds in 5..3600");
  },
});
const c2d = new CloudMessages({ onMessage: (m) => trace(`hub-features: message ${m.messageId ?? "?"}: ${m.text()} ${JSON.stringify(m.properties)}\n`) });

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
    flash: target.openCacheFlash({ cachePartition: "dpscache", cacheFile: setting("cacheFile") ?? "hub-features-cache.flash" }),
    log: traceLog((line) => trace(line), "info"),
  },
  (event) => {
    if (event.source === "telemetry") trace(`hub-features: message ${event.id} ${event.state === "sent" ? "acknowledged" : `dropped: ${event.reason}`}\n`);
    if (event.source === "runtime" && event.state === "connected") twin.report({ firmware: "hub-features 1.0" });
  },
  [methods, twin, c2d],
);

// A SAS token carries an expiry: on a device, set the clock before the first one is signed.
if (target.simulator) {
  device.start();
} else {
  // The SDK's NTP client constructs `new dns.io(dns)`: the resolver's own options ride along.
  const resolver = { io: Resolver, servers: ["1.1.1.1"], socket: { io: UDP } };
  setClockFromNtp(new NTP({ servers: ["pool.ntp.org"], socket: { io: UDP }, dns: resolver }), (s) => Time.set(s), (error) => {
    if (error) return trace(`hub-features: ${error}\n`);
    device.start();
  });
}
every(interval);
Timer.set(send, 5_000);
