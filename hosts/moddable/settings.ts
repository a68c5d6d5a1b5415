/**
 * The demo app's settings: from stored preferences first (domain "dps", written once per device
 * at the factory or by a provisioning tool), then from the manifest's `config` (set on the
 * mcconfig command line: `mcconfig -m -p lin ./manifest.json idScope=0ne... registrationId=...
 * symmetricKey=...`). No key is ever in source. Every value arrives as a string or a number; this
 * file turns them into a RuntimeConfig and the host's own settings, and says what is wrong.
 */
import { base64Decode } from "../../modules/encoding.js";
import { UsageError } from "../../modules/errors.js";
import type { RuntimeConfig } from "../../modules/runtime.js";

/** The trust anchors the app can use for TLS. */
export type CaChoice = "digicert-g2" | "baltimore" | "microsoft-rsa-2017" | "custom";

/** The resource name of each built-in root (hosts/moddable/certs, listed in manifest.json). */
export const CA_RESOURCES: Readonly<Record<Exclude<CaChoice, "custom">, string>> = Object.freeze({
  "digicert-g2": "digicert-global-root-g2.der",
  baltimore: "baltimore-cybertrust-root.der",
  "microsoft-rsa-2017": "microsoft-rsa-root-2017.der",
});

/** The resource a firmware project adds for `ca=custom` (its own DER file). */
export const CUSTOM_CA_RESOURCE = "custom-ca.der";

export interface HostSettings {
  /** "tls" (the service; 8883) or "tcp" (an emulator's plain listener). */
  readonly transport: "tls" | "tcp";
  readonly ca: CaChoice;
  /** A PEM file to trust instead (simulators, which have the `file` module): the emulator's ca.pem. */
  readonly caFile?: string;
  /** Every host name resolves to this IPv4 address (an emulator on loopback); DNS otherwise. */
  readonly address?: string;
  readonly dnsServers: readonly string[];
  /** NTP servers; empty means "do not set the clock" (the simulators use the host's). */
  readonly ntpServers: readonly string[];
  /** Telemetry messages the demo sends once connected, and the pause between them. */
  readonly messages: number;
  readonly intervalMs: number;
  readonly logLevel: "debug" | "info" | "warn" | "error";
  /** ESP32: the data partition of the cache. Simulators: the file name under the file root. */
  readonly cachePartition: string;
  readonly cacheFile: string;
}

export interface Settings {
  readonly runtime: RuntimeConfig;
  readonly host: HostSettings;
}

/** Reads one setting: the stored preference, else the manifest config. */
export type SettingSource = (name: string) => unknown;

const CA_CHOICES: readonly string[] = ["digicert-g2", "baltimore", "microsoft-rsa-2017", "custom"];

/**
 * @param config the manifest's `config` object (`mc/config`)
 * @param preference the stored preference of that name, or undefined
 * @param simulator true on mac, lin, win: no NTP by default
 * @throws UsageError INVALID_ARGUMENT naming the setting that is missing or wrong.
 */
export function readSettings(config: Readonly<Record<string, unknown>>, preference: SettingSource, simulator: boolean): Settings {
  const get = (name: string): string | undefined => {
    const value = preference(name) ?? config[name];
    if (value === undefined || value === null || value === "") return undefined;
    return String(value);
  };
  const required = (name: string): string => {
    const value = get(name);
    if (value === undefined) {
      throw new UsageError("INVALID_ARGUMENT", `setting "${name}" is missing: store it as preference dps/${name}, or pass ${name}=... to mcconfig`);
    }
    return value;
  };
  const integer = (name: string, fallback: number | undefined, min: number, max: number): number | undefined => {
    const text = get(name);
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError("INVALID_ARGUMENT", `setting "${name}" must be an integer in ${min}..${max}, got "${text}"`);
    return n;
  };
  const list = (name: string, fallback: string): string[] => (get(name) ?? fallback).split(",").map((s) => s.trim()).filter((s) => s.length > 0);

  const transport = get("transport") ?? "tls";
  if (transport !== "tls" && transport !== "tcp") throw new UsageError("INVALID_ARGUMENT", `setting "transport" must be tls or tcp, got "${transport}"`);
  const ca = get("ca") ?? "digicert-g2";
  if (!CA_CHOICES.includes(ca)) throw new UsageError("INVALID_ARGUMENT", `setting "ca" must be one of ${CA_CHOICES.join(", ")}, got "${ca}"`);
  const symmetricKey = get("symmetricKey");
  const groupKey = get("groupKey");
  if ((symmetricKey === undefined) === (groupKey === undefined)) {
    throw new UsageError("INVALID_ARGUMENT", 'give exactly one of the settings "symmetricKey" (individual enrollment) and "groupKey" (group enrollment)');
  }
  const hubPort = integer("hubPort", undefined, 1, 65535);
  const runtime: RuntimeConfig = {
    idScope: required("idScope"),
    registrationId: required("registrationId"),
    symmetricKey,
    groupKey,
    globalEndpoint: get("globalEndpoint"),
    dpsPort: integer("dpsPort", undefined, 1, 65535),
    lookupPort: integer("lookupPort", undefined, 1, 65535),
    statusLookup: get("statusLookup") !== "false",
    modelId: get("modelId"),
    userAgent: get("userAgent") ?? "dps-device-runtime-moddable/0.1",
    hub: hubPort === undefined ? undefined : { port: hubPort },
  };
  const address = get("address");
  if (address !== undefined && !/^\d{1,3}(\.\d{1,3}){3}$/.test(address)) throw new UsageError("INVALID_ARGUMENT", `setting "address" must be an IPv4 address, got "${address}"`);
  const logLevel = get("logLevel") ?? "info";
  if (logLevel !== "debug" && logLevel !== "info" && logLevel !== "warn" && logLevel !== "error") throw new UsageError("INVALID_ARGUMENT", `setting "logLevel" must be debug, info, warn or error`);
  return {
    runtime,
    host: {
      transport,
      ca: ca as CaChoice,
      caFile: get("caFile"),
      address,
      dnsServers: list("dnsServers", "1.1.1.1,8.8.8.8"),
      ntpServers: list("ntpServers", simulator ? "" : "pool.ntp.org,time.google.com"),
      messages: integer("messages", 3, 0, 1_000_000)!,
      intervalMs: integer("interval", 5000, 0, 86_400_000)!,
      logLevel,
      cachePartition: get("cachePartition") ?? "dpscache",
      cacheFile: get("cacheFile") ?? "dps-cache.flash",
    },
  };
}

/**
 * The DER bytes of the first certificate in a PEM text (the emulator's ca.pem).
 * @throws UsageError INVALID_ARGUMENT when there is no certificate in it.
 */
export function pemToDer(pem: string): Uint8Array {
  const match = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  if (!match) throw new UsageError("INVALID_ARGUMENT", "the CA file holds no PEM certificate");
  return base64Decode(match[1].replace(/\s+/g, ""), "the CA certificate");
}
