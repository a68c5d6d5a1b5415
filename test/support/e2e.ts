/**
 * End-to-end harness: the emulator over TLS on loopback and desktop devices against it, with every
 * runtime event recorded and waits bounded in time.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FlashPort } from "../../modules/flash.js";
import type { HubFeature } from "../../modules/hub-session.js";
import type { DeviceRuntime, RuntimeConfig, RuntimeEvent } from "../../modules/runtime.js";
import { createDesktopDevice, DESKTOP_FLASH_GEOMETRY, emulatorTransport, type DesktopTransport } from "../../hosts/desktop/device.js";
import { NorFlashFile } from "../../hosts/desktop/nor-flash-file.js";
import { nodeCrypto, secureRandom } from "../../hosts/desktop/platform.js";
import { CredentialCache, type CacheLoadResult } from "../../modules/credential-cache.js";
import { startEmulator, type Emulator, type EmulatorConfig } from "../../simulator/index.js";
import { projectRoot } from "./xs.js";

export const DPS_HOST = "global.azure-devices-provisioning.localhost";

/** A fast policy for tests: the same table, shorter waits (the table, not the numbers, is under test). */
export const fastRetries: RuntimeConfig["retryPolicy"] = {
  backoff: { initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.5 },
  retryAfter: { minMs: 0, maxMs: 3000 },
};

export interface World {
  readonly emulator: Emulator;
  readonly transport: DesktopTransport;
  readonly dir: string;
  /** Adds an individual enrollment with a fresh key and returns the key. */
  enroll(registrationId: string): string;
  stop(): Promise<void>;
}

export async function startWorld(config: Partial<EmulatorConfig> = {}, tls = true): Promise<World> {
  const emulator = await startEmulator({
    stateDir: join(projectRoot, ".cache", "emulator-tests"),
    seed: 7,
    config: { idScope: "0ne0000E2E0", hubs: [{ hostName: "hub-1.azure-devices.localhost" }, { hostName: "hub-2.azure-devices.localhost" }], retryAfterSeconds: 0, ...config },
  });
  const transport = emulatorTransport(emulator.endpoints, emulator.caPem, DPS_HOST, tls);
  const dir = mkdtempSync(join(tmpdir(), "dps-e2e-"));
  return {
    emulator,
    transport,
    dir,
    enroll(registrationId) {
      const key = newKey();
      emulator.addIndividualEnrollment({ registrationId, primaryKey: key });
      return key;
    },
    async stop() {
      await emulator.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function newKey(): string {
  return randomBytes(32).toString("base64");
}

/** Boots a device until it is connected, then stops it: a first boot that leaves a DPS record and a cached assignment. */
export async function bootUntilConnected(world: World, config: Partial<RuntimeConfig> & { registrationId: string }, flash?: string | FlashPort): Promise<TestDevice> {
  const device = new TestDevice(world, config, flash);
  device.runtime.start();
  await device.connected();
  device.runtime.stop();
  return device;
}

export class TestDevice {
  readonly events: RuntimeEvent[] = [];
  readonly runtime: DeviceRuntime;
  #waiters: { predicate: (e: RuntimeEvent) => boolean; resolve: (e: RuntimeEvent) => void }[] = [];

  constructor(world: World, config: Partial<RuntimeConfig> & { registrationId: string }, flash?: string | FlashPort, features?: readonly HubFeature[]) {
    this.runtime = createDesktopDevice({
      features,
      config: { idScope: world.emulator.idScope, globalEndpoint: DPS_HOST, retryPolicy: fastRetries, ...config } as RuntimeConfig,
      transport: world.transport,
      flash,
      listener: (e) => {
        this.events.push(e);
        this.#waiters = this.#waiters.filter((w) => {
          if (!w.predicate(e)) return true;
          w.resolve(e);
          return false;
        });
      },
    });
  }

  /** Resolves with the first event (already seen or to come) that matches; rejects after `ms`. */
  waitFor(predicate: (e: RuntimeEvent) => boolean, ms = 20_000, what = "an event"): Promise<RuntimeEvent> {
    const seen = this.events.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}; events:\n${this.describe()}`)), ms);
      this.#waiters.push({ predicate, resolve: (e) => (clearTimeout(timer), resolve(e)) });
    });
  }

  connected(ms?: number): Promise<RuntimeEvent> {
    return this.waitFor((e) => e.source === "runtime" && e.state === "connected", ms, "connected");
  }

  /** Resolves on connected, failed or backing-off (the long tail), whichever comes first. */
  settled(ms?: number): Promise<RuntimeEvent> {
    return this.waitFor((e) => e.source === "runtime" && (e.state === "connected" || e.state === "failed" || e.state === "backing-off"), ms, "connected, failed or backing-off");
  }

  acknowledged(id: number, ms?: number): Promise<RuntimeEvent> {
    return this.waitFor((e) => e.source === "telemetry" && e.id === id, ms, `telemetry ${id} acknowledged`);
  }

  dps(): Extract<RuntimeEvent, { source: "dps" }>["status"][] {
    return this.events.filter((e): e is Extract<RuntimeEvent, { source: "dps" }> => e.source === "dps").map((e) => e.status);
  }

  describe(): string {
    return this.events.map((e) => JSON.stringify(e, (_k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v))).join("\n");
  }
}

/** The newest valid cache record on a flash file, read through its own handle (the device may hold the file open). */
export function readCachedRecord(path: string, deviceKey: string, registrationId: string): CacheLoadResult {
  const flash = new NorFlashFile({ path, ...DESKTOP_FLASH_GEOMETRY });
  const cache = new CredentialCache({ flash, random: secureRandom, deviceKey, registrationId, crypto: nodeCrypto });
  try {
    return cache.load();
  } finally {
    cache.close();
    flash.close();
  }
}

/** How many of a device's events match. */
export function countEvents(device: TestDevice, predicate: (e: RuntimeEvent) => boolean): number {
  return device.events.filter(predicate).length;
}

/** The device's `backing-off` events (the long-tail waits it has entered). */
export function backoffs(device: TestDevice): Extract<RuntimeEvent, { source: "runtime" }>[] {
  return device.events.filter((e): e is Extract<RuntimeEvent, { source: "runtime" }> => e.source === "runtime" && e.state === "backing-off");
}

/** The DPS registrations the device sent (its `registering` statuses). */
export function registrationsSent(device: TestDevice): number {
  return device.dps().filter((s) => s.state === "registering").length;
}
