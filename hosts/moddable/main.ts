/**
 * The demo firmware app: provisions the device through DPS (or warm-starts from the cached
 * assignment), connects to its hub and sends a few telemetry messages. It is also the one place
 * that imports the SDK's modules: every adapter gets the classes it wraps from here.
 *
 * Settings come from stored preferences (domain "dps") or the manifest's config, set on the
 * mcconfig command line; see settings.ts and docs/MODDABLE.md. No key is in source.
 */
import TCP from "embedded:io/socket/tcp";
import TLSSocket from "embedded:io/socket/tcp/tls";
import UDP from "embedded:io/socket/udp";
import Resolver from "embedded:network/dns/resolver/udp";
import HTTPClient from "embedded:network/http/client";
import NTP from "embedded:network/ntp/client";
import { Digest } from "crypt";
import Debug from "debug";
import Instrumentation from "instrumentation";
import config from "mc/config";
import Preference from "preference";
import Resource from "Resource";
import RNG from "rng";
import Time from "time";
import Timer from "timer";
import { DeviceRuntime, type RuntimeEvent } from "../../modules/runtime.js";
import type { FlashPort } from "../../modules/flash.js";
import { FixedAddressResolver } from "./dns.js";
import { ModdableHttpsPort } from "./https.js";
import { ModdableMqttConnector } from "./mqtt.js";
import { setClockFromNtp } from "./ntp.js";
import { digestCrypto, moddableTimers, rngSecureRandom, traceLog } from "./platform.js";
import { CA_RESOURCES, CUSTOM_CA_RESOURCE, pemToDer, readSettings, type Settings } from "./settings.js";
import { target } from "./target.js";

/** Time.ticks counts from boot on a device but from 1970 on the simulators: uptime counts from here. */
const startTicks = Time.ticks;

function say(line: string): void {
  trace(`${line}\n`);
}

/**
 * The XS heap in use after a garbage collection, from the SDK's instrumentation: what the app
 * holds at that moment. Undefined in builds without instrumentation (release).
 */
function heapInUse(): { chunks: number; slots: number } | undefined {
  const chunkIndex = Instrumentation.map("XS Chunk Heap Used");
  const slotIndex = Instrumentation.map("XS Slot Heap Used");
  // No forced collection where nothing would be reported.
  if (chunkIndex === undefined || slotIndex === undefined) return undefined;
  Debug.gc();
  const chunks = Instrumentation.get(chunkIndex);
  const slots = Instrumentation.get(slotIndex);
  return chunks === undefined || slots === undefined ? undefined : { chunks, slots };
}

function memoryLine(label: string, now: { chunks: number; slots: number }, before?: { chunks: number; slots: number }): string {
  const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
  const delta = before ? ` (+${kib(now.chunks - before.chunks)} chunks, +${kib(now.slots - before.slots)} slots since boot)` : "";
  return `dps: memory ${label}: ${kib(now.chunks)} chunks, ${kib(now.slots)} slots${delta}`;
}

const atBoot = heapInUse();

function start(settings: Settings): void {
  const { runtime: runtimeConfig, host } = settings;
  const log = traceLog((text) => trace(text), host.logLevel);
  const timers = moddableTimers(Timer);

  const dns = host.address ? { io: FixedAddressResolver, address: host.address } : { io: Resolver, servers: [...host.dnsServers], socket: { io: UDP } };
  const tls = host.transport === "tls";
  let secure: { certificate: unknown } | undefined;
  if (tls) {
    try {
      const certificate: unknown = host.caFile
        ? pemToDer(target.readText(host.caFile)).buffer
        : new Resource(host.ca === "custom" ? CUSTOM_CA_RESOURCE : CA_RESOURCES[host.ca]);
      secure = { certificate };
    } catch (error) {
      say(`dps: cannot load the CA certificate: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
  }
  const socket = tls ? { io: TLSSocket, TCP: { io: TCP }, secure } : { io: TCP };
  const mqtt = new ModdableMqttConnector({ socket, dns, timers, secure: tls });
  // The status lookup is HTTPS only; over plain TCP (an emulator) the runtime goes without it.
  const https = tls ? new ModdableHttpsPort({ client: { io: HTTPClient, dns, socket } }) : undefined;

  let flash: FlashPort | undefined;
  try {
    flash = target.openCacheFlash(host);
  } catch (error) {
    say(`dps: no credential cache (every boot provisions): ${error instanceof Error ? error.message : String(error)}`);
  }

  let sent = 0;
  let acknowledged = 0;
  let pacing: unknown;
  const device = new DeviceRuntime(
    runtimeConfig,
    {
      mqtt,
      https,
      timers,
      clock: () => Date.now(),
      random: () => Math.random(),
      secureRandom: rngSecureRandom(RNG),
      crypto: digestCrypto(Digest),
      flash,
      log,
    },
    (event: RuntimeEvent) => {
      if (event.source === "runtime" && event.state === "connected" && pacing === undefined && sent < host.messages) {
        const next = (): void => {
          pacing = undefined;
          sent++;
          device.send({ seq: sent, temperature: 20 + sent / 2, uptimeMs: Time.ticks - startTicks });
          if (sent < host.messages) pacing = Timer.set(next, host.intervalMs);
        };
        next();
      }
      if (event.source === "telemetry" && event.state === "sent" && ++acknowledged === host.messages) {
        say(`dps: done: ${acknowledged} message(s) acknowledged by ${device.assignment?.assignedHub}`);
        // Measured outside the runtime's callback, once its work for this event is over.
        Timer.set(() => {
          const connected = heapInUse();
          if (connected) say(memoryLine("while connected", connected, atBoot));
        }, 0);
      }
    },
  );
  if (atBoot) say(memoryLine("at boot", atBoot));
  say(`dps: starting ${runtimeConfig.registrationId} (scope ${runtimeConfig.idScope}, ${host.transport}${host.address ? ` via ${host.address}` : ""})`);
  device.start();
}

function boot(): void {
  let settings: Settings;
  try {
    settings = readSettings(config, (name) => Preference.get("dps", name), target.simulator);
  } catch (error) {
    say(`dps: cannot start: ${error instanceof Error ? error.message : String(error)}`);
    return;
  }
  const { ntpServers, dnsServers } = settings.host;
  if (ntpServers.length === 0) return start(settings);
  // SAS tokens carry an expiry: the clock must be right before the first one is signed.
  const setClock = (): void => {
    // The SDK's NTP client constructs `new dns.io(dns)`: the resolver's own options ride along.
    const resolver = { io: Resolver, servers: [...dnsServers], socket: { io: UDP } };
    const client = new NTP({ servers: [...ntpServers], socket: { io: UDP }, dns: resolver });
    setClockFromNtp(client, (seconds) => Time.set(seconds), (error) => {
      if (error === undefined) return start(settings);
      say(`dps: ${error}; trying again in 10 s`);
      Timer.set(setClock, 10_000);
    });
  };
  setClock();
}

boot();
