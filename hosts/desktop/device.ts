/**
 * The desktop simulator host: a DeviceRuntime over Node's sockets, TLS, timers, node:crypto and a
 * file that behaves like NOR flash. One device, or thousands sharing one connector and one
 * HTTPS port in a single process.
 */
import type { FlashPort } from "../../modules/flash.js";
import { MemoryFlash } from "../../modules/memory-flash.js";
import type { Clock, LogPort, RandomSource } from "../../modules/ports.js";
import type { HubFeature } from "../../modules/hub-session.js";
import { DeviceRuntime, type RuntimeConfig, type RuntimeListener } from "../../modules/runtime.js";
import { NodeHttpsPort } from "./https.js";
import { NodeMqttConnector, type AddressResolver } from "./mqtt.js";
import { NorFlashFile } from "./nor-flash-file.js";
import { mathRandom, nodeCrypto, nodeTimers, secureRandom, systemClock } from "./platform.js";

export interface DesktopTransport {
  readonly connector: NodeMqttConnector;
  readonly https: NodeHttpsPort;
}

export interface DesktopTransportOptions {
  /** TLS (default) or plain TCP for MQTT; the status lookup is always HTTPS. */
  readonly tls?: boolean;
  /** PEM to trust, e.g. the emulator's CA (replaces Node's default roots, as node:tls does). */
  readonly ca?: string;
  /**
   * Where service host names really go (see serviceResolver, loopbackResolver). Whatever it
   * answers, a localhost name (`localhost`, `*.localhost`, RFC 6761) is dialled at 127.0.0.1.
   */
  readonly resolve?: AddressResolver;
}

/** The MQTT connector and the HTTPS port, to share between the devices of a fleet. */
export function createTransport(options: DesktopTransportOptions = {}): DesktopTransport {
  return {
    connector: new NodeMqttConnector({ tls: options.tls ?? true, ca: options.ca, resolve: options.resolve }),
    https: new NodeHttpsPort({ ca: options.ca, resolve: options.resolve }),
  };
}

export interface ServicePorts {
  /** The DPS host name the devices are configured with (their `globalEndpoint`). */
  readonly dpsHost: string;
  /** Where DPS over MQTT really listens (the devices dial 8883). */
  readonly dpsPort?: number;
  /** Where the registration status lookup really listens (the devices dial 443 at dpsHost). */
  readonly lookupPort?: number;
  /** Where every hub really listens (the devices dial 8883 at the assigned hub). */
  readonly hubPort?: number;
}

/**
 * A resolver for a DPS (or an emulator started on its own) that listens on other ports than the
 * service's: host names stay as they are (a localhost name is then dialled at 127.0.0.1), the
 * ports given replace the ones the devices dial; the TLS name and the MQTT names stay the service's.
 */
export function serviceResolver(e: ServicePorts): AddressResolver {
  const dpsHost = e.dpsHost.toLowerCase();
  return (host, port) => {
    if (host.toLowerCase() === dpsHost) return { host, port: port === 443 ? (e.lookupPort ?? port) : (e.dpsPort ?? port) };
    return { host, port: e.hubPort ?? port };
  };
}

export interface LoopbackEndpoints {
  /** The DPS host name the devices are configured with (their `globalEndpoint`). */
  readonly dpsHost: string;
  readonly dpsPort: number;
  readonly lookupPort: number;
  /** Every other host (the assigned hubs) goes here. */
  readonly hubPort: number;
  readonly address?: string;
}

/**
 * A resolver for a DPS + IoT Hub emulator on this machine: the DPS host name goes to its MQTT port
 * (443 to its HTTPS lookup port), every hub host name to the hub port. Names stay as they are for
 * TLS and MQTT, exactly as against the real service.
 */
export function loopbackResolver(e: LoopbackEndpoints): AddressResolver {
  const address = e.address ?? "127.0.0.1";
  return (host, port) => {
    if (host === e.dpsHost) return { host: address, port: port === 443 ? e.lookupPort : e.dpsPort };
    return { host: address, port: e.hubPort };
  };
}

/** The listening ports of a DPS + IoT Hub emulator, as `startEmulator` reports them. */
export interface EmulatorEndpoints {
  readonly dps: { readonly tlsPort: number; readonly tcpPort: number };
  readonly hub: { readonly tlsPort: number; readonly tcpPort: number };
  readonly https: { readonly port: number };
}

/**
 * A transport whose devices reach an emulator on this machine: `dpsHost` (the devices'
 * globalEndpoint) goes to its DPS port, 443 to its HTTPS lookup, every hub name to its hub port;
 * TLS (default) trusts the emulator's CA.
 */
export function emulatorTransport(endpoints: EmulatorEndpoints, caPem: string, dpsHost: string, tls = true): DesktopTransport {
  return createTransport({
    tls,
    ca: caPem,
    resolve: loopbackResolver({
      dpsHost,
      dpsPort: tls ? endpoints.dps.tlsPort : endpoints.dps.tcpPort,
      lookupPort: endpoints.https.port,
      hubPort: tls ? endpoints.hub.tlsPort : endpoints.hub.tcpPort,
    }),
  });
}

export interface DesktopDeviceOptions {
  readonly config: RuntimeConfig;
  readonly transport: DesktopTransport;
  /** A flash file's path (created when missing), a FlashPort, or nothing for in-memory flash. */
  readonly flash?: string | FlashPort;
  readonly random?: RandomSource;
  readonly clock?: Clock;
  readonly log?: LogPort;
  readonly listener?: RuntimeListener;
  /** Hub features: `new CloudMessages(...)`, `new DirectMethods()`, `new DeviceTwin(...)` (modules/c2d.ts, methods.ts, twin.ts). */
  readonly features?: readonly HubFeature[];
}

/** Two 4 KiB sectors, like a small partition on an ESP32. */
export const DESKTOP_FLASH_GEOMETRY = { sectorSize: 4096, sectorCount: 2 } as const;

export function createDesktopDevice(options: DesktopDeviceOptions): DeviceRuntime {
  let flash: FlashPort;
  if (typeof options.flash === "string") flash = new NorFlashFile({ path: options.flash, ...DESKTOP_FLASH_GEOMETRY });
  else flash = options.flash ?? new MemoryFlash(DESKTOP_FLASH_GEOMETRY);
  return new DeviceRuntime(
    options.config,
    {
      mqtt: options.transport.connector,
      https: options.transport.https,
      timers: nodeTimers,
      clock: options.clock ?? systemClock,
      random: options.random ?? mathRandom,
      secureRandom,
      crypto: nodeCrypto,
      flash,
      log: options.log,
    },
    options.listener,
    options.features,
  );
}
